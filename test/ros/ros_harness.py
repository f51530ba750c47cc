"""Harness of the ROS tests: real rclpy, the node in a separate process, no mocks.

``recon_process(args)`` starts ``dynamic_recon_node`` exactly as installed (the launcher
script in scripts/nodes/, i.e. ``pointmap_ros.ros.node:main``). The ``ros_node`` fixture
(conftest.py) is this test process's rclpy node; :class:`Collector` subscribes to every
output; :class:`ScenePublisher` plays a generated scene (the same one ``backend:=oracle``
serves) frame by frame, with hooks to corrupt single messages. Every test module starts its
own node process and reuses it.
Tests needing our generated messages (pointmap_ros.msg, tf2_msgs) skip with the reason when
the colcon overlay is missing (run scripts/setup.sh, then `source scripts/env.sh`).
"""

import collections
import time

import numpy as np

import helpers

try:
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
except ImportError:  # the pure-Python tests of this folder still run
    rclpy = None

REPO = helpers.FIXTURES.parent.parent
NODE_SCRIPT = REPO / 'scripts' / 'nodes' / 'dynamic_recon_node'
PARAMS_FILE = REPO / 'config' / 'dynamic_recon.yaml'
NODE = '/dynamic_recon_node'
OUTPUTS = ('points', 'scene_flow', 'dynamic_points', 'motion_mask', 'instance_ids', 'objects',
           'markers')
# Small scene so the whole ROS suite stays well under its time budget on two cores.
SCENE = {'scene': 'demo', 'seed': 0, 'height': 96, 'width': 128, 'frames': 40, 'fps': 10.0}


def overlay_missing() -> str | None:
    if rclpy is None:
        return 'rclpy not installed (ROS 2 wheels missing)'
    try:
        import pointmap_ros.msg  # noqa: F401
        import tf2_msgs.msg  # noqa: F401
    except ImportError as exc:
        return (f'colcon overlay not importable ({exc}); run scripts/setup.sh and '
                '`source scripts/env.sh`')
    return None


def oracle_args(**extra) -> list[str]:
    """``--ros-args`` for an oracle node over :data:`SCENE` plus ``extra`` parameters."""
    params = {'backend': 'oracle', 'oracle_scene': SCENE['scene'], 'oracle_seed': SCENE['seed'],
              'oracle_height': SCENE['height'], 'oracle_width': SCENE['width'],
              'oracle_frames': SCENE['frames'], 'oracle_fps': SCENE['fps'],
              'max_rate_hz': 0.0, 'no_input_warn_s': 0.0, **extra}
    args = ['--ros-args', '--params-file', str(PARAMS_FILE)]
    for name, value in params.items():
        args += ['-p', f'{name}:={value}']
    return args


def recon_process(args, name='dynamic_recon_node') -> helpers.PythonProcess:
    return helpers.PythonProcess(script=NODE_SCRIPT, args=args, name=name)


def spin_until(node, predicate, timeout, what, proc=None):
    """Spin ``node`` until ``predicate()`` is truthy (helpers.wait_for with spinning)."""
    def step():
        rclpy.spin_once(node, timeout_sec=0.02)
        return predicate()
    return helpers.wait_for(step, timeout=timeout, interval=0.0, what=what,
                            on_timeout=proc.output if proc is not None else None)


class Collector:
    """Keeps every message of every output topic, /tf and /diagnostics."""

    def __init__(self, node, prefix: str = NODE):
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import Image, PointCloud2
        from tf2_msgs.msg import TFMessage
        from visualization_msgs.msg import MarkerArray

        from pointmap_ros.msg import TrackedObjectArray
        types = {'points': PointCloud2, 'scene_flow': PointCloud2,
                 'dynamic_points': PointCloud2, 'motion_mask': Image, 'instance_ids': Image,
                 'objects': TrackedObjectArray, 'markers': MarkerArray}
        self.msgs = collections.defaultdict(list)
        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        for key, msg_type in types.items():
            node.create_subscription(msg_type, f'{prefix}/{key}',
                                     lambda m, k=key: self.msgs[k].append(m), qos)
        node.create_subscription(TFMessage, '/tf', lambda m: self.msgs['tf'].append(m), qos)
        node.create_subscription(DiagnosticArray, '/diagnostics',
                                 lambda m: self.msgs['diagnostics'].append(m), qos)

    def stamps(self, key: str) -> list[int]:
        from pointmap_ros.ros.conversions import stamp_to_ns
        return [stamp_to_ns(m.header.stamp) for m in self.msgs[key]]

    def diagnostics(self) -> dict[str, str]:
        """Key/values of the latest /diagnostics, flattened as '<status>/<key>'."""
        if not self.msgs['diagnostics']:
            return {}
        return {f'{s.name.split(": ")[-1]}/{kv.key}': kv.value
                for s in self.msgs['diagnostics'][-1].status for kv in s.values}


class ScenePublisher:
    """Publishes frames of :data:`SCENE` as a camera driver would (reliable publishers)."""

    def __init__(self, node, namespace='/camera', depth=False):
        from sensor_msgs.msg import CameraInfo, Image

        from pointmap_ros.data.scenes import SceneGenerator, live_scene_config
        self.scene = SceneGenerator(live_scene_config(SCENE['scene'], SCENE['height'],
                                                      SCENE['width'], SCENE['frames'],
                                                      SCENE['fps']), seed=SCENE['seed'])
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.image = node.create_publisher(Image, f'{namespace}/image_raw', qos)
        self.info = node.create_publisher(CameraInfo, f'{namespace}/camera_info', qos)
        self.depth = node.create_publisher(Image, f'{namespace}/depth', qos) \
            if depth else None

    def stamp_ns(self, t: int) -> int:
        return int(round(t * 1e9 / SCENE['fps']))

    def messages(self, t: int, frame_id='camera_optical_frame'):
        """(image, camera_info, depth) messages of frame t, for tests to corrupt."""
        from std_msgs.msg import Header

        from pointmap_ros.ros.conversions import (K_to_camera_info, depth_to_image, ns_to_stamp,
                                                  rgb_to_image)
        frame = self.scene.render(t)
        header = Header(stamp=ns_to_stamp(self.stamp_ns(t)), frame_id=frame_id)
        return (rgb_to_image(frame.rgb, header),
                K_to_camera_info(frame.K, SCENE['height'], SCENE['width'], header),
                depth_to_image(frame.depth, header))

    def publish(self, image=None, info=None, depth=None) -> None:
        # camera_info and depth first, the image last, as drivers usually do.
        if info is not None:
            self.info.publish(info)
        if depth is not None and self.depth is not None:
            self.depth.publish(depth)
        if image is not None:
            self.image.publish(image)

    def publish_frame(self, t: int) -> int:
        image, info, depth = self.messages(t)
        self.publish(image, info, depth)
        return self.stamp_ns(t)


def wait_for_node(node, proc, publisher=None, timeout=60.0, points=f'{NODE}/points'):
    """Wait until the node under test advertises its outputs and, given a ScenePublisher, has
    *matched* its inputs (graph presence alone is not enough: the first frame would be lost)."""
    pubs = [] if publisher is None else [p for p in (publisher.image, publisher.info,
                                                     publisher.depth) if p is not None]

    def ready():
        if not proc.running:
            raise AssertionError(f'node exited early:\n{proc.output()}')
        return (node.count_publishers(points) > 0
                and all(p.get_subscription_count() > 0 for p in pubs))
    spin_until(node, ready, timeout, 'dynamic_recon_node ready', proc)
    # Our side matching first does not mean the node's side has: give discovery a moment,
    # or the first (best-effort) frame can be lost.
    settle = time.monotonic() + 1.0
    spin_until(node, lambda: time.monotonic() > settle, 5, 'discovery settling')


def decode_points(msg) -> np.ndarray:
    """``[H, W, 3]`` x/y/z of a cloud decoded by its declared fields and offsets."""
    from pointmap_ros.ros.conversions import cloud_to_array
    arr = cloud_to_array(msg)
    return np.stack([arr['x'], arr['y'], arr['z']], axis=-1)

