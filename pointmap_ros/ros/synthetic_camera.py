"""``synthetic_camera_node``: plays a generated dynamic scene live, like a camera driver.

Publishes ``<namespace>/image_raw`` (rgb8 or bgr8), ``<namespace>/camera_info`` and optionally
``<namespace>/depth`` (32FC1 metres), all with the same header, plus the ground
truth on ``/tf``: ``world -> <frame_id>`` (the true camera pose) and ``world -> gt_object_<k>``.

Stamps (``stamp_source``): ``clock`` (default) stamps each frame with this node's clock at
publication, i.e. ROS time, which is simulated time under ``use_sim_time``; ``scene`` stamps
frame t with ``t / fps`` seconds, what ``backend:=oracle`` keys its ground truth on. Frames are
sent at ``rate_hz`` (default: the scene's fps, i.e. real time); ``loop`` replays the scene
forever (stamps keep increasing). With ``publish_clock`` the node also drives ``/clock``.

Start (why: a camera that plays before the consumer listens loses its frames, and a
consumer that needs seconds to load a model misses a short clip entirely): with
``wait_for_ready`` set to a latched ``std_msgs/Bool`` topic (the launch demo uses
``/dynamic_recon_node/ready``) the camera waits for ``true`` on it; with
``wait_for_subscribers`` it waits until each of its publishers has a matched subscription;
then it waits ``start_delay_s`` more (lets the subscriber's side of discovery settle) and
plays. Timers run on the steady clock, so waiting and pacing work without ``/clock``.
"""

from __future__ import annotations

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Bool, Header

from pointmap_ros.errors import ConfigError
from pointmap_ros.ros.conversions import matrix_to_transform
from pointmap_ros.ros.outputs import world_rotation
from pointmap_ros.ros.qos import QOS_CHOICES, latched_qos, make_qos
from pointmap_ros.ros.runner import node_arg_parser, run_node
from pointmap_ros.ros.tf import TfPublisher

__all__ = ['SyntheticCameraNode', 'scene_config', 'camera_info_msg', 'rgb_msg', 'depth_msg',
           'ns_to_time', 'main', 'CAMERA_PARAMS']

# name -> (default, description, range or choices). Declared with descriptors (ros2 param
# describe /synthetic_camera_node <name>); all read at start-up.
CAMERA_PARAMS = {
    'namespace': ('/camera', 'Camera namespace the topics are published under.', None),
    'image_topic': ('image_raw', 'Image topic relative to namespace.', None),
    'camera_info_topic': ('camera_info', 'CameraInfo topic relative to namespace.', None),
    'depth_topic': ('depth', 'Depth topic relative to namespace (32FC1 metres).', None),
    'publish_depth': (False, 'Also publish the depth image.', None),
    'publish_tf': (True, 'Publish ground truth on /tf (world -> frame_id, gt_object_<k>).',
                   None),
    'publish_clock': (False, 'Publish each frame stamp on /clock (drives use_sim_time graphs).',
                      None),
    'frame_id': ('camera_optical_frame', 'header.frame_id of the images (optical frame).', None),
    'world_frame': ('world', 'Parent frame of the ground-truth TF.', None),
    'world_frame_convention': ('rep103', "Axes of world_frame, origin at the first camera pose "
                               "(as dynamic_recon_node's parameter of that name, so both "
                               "agree): 'rep103' (x forward, y left, z up) or 'optical'.",
                               ('rep103', 'optical')),
    'scene': ('demo', "Scene preset.", ('demo', 'random')),
    'seed': (0, 'Scene seed.', (0, 2**31 - 1)),
    'height': (224, 'Image rows (px).', (8, 4096)),
    'width': (224, 'Image columns (px).', (8, 4096)),
    'frames': (30, 'Scene length (frames).', (5, 100000)),
    'fps': (10.0, 'Scene frame rate (Hz); frame t is at t / fps in the scene.', (0.1, 1000.0)),
    'rate_hz': (0.0, 'Publication rate (Hz); 0 = fps (real time).', (0.0, 1000.0)),
    'encoding': ('rgb8', 'Image encoding.', ('rgb8', 'bgr8')),
    'stamp_source': ('clock', "Header stamps: 'clock' = this node's ROS clock at publication "
                     "(sim time under use_sim_time); 'scene' = t / fps (backend oracle).",
                     ('clock', 'scene')),
    'loop': (False, 'Replay the scene forever (stamps keep increasing).', None),
    'wait_for_ready': ('', "Latched std_msgs/Bool topic to wait for true on before playing "
                       "(e.g. /dynamic_recon_node/ready); '' = do not wait.", None),
    'wait_for_subscribers': (False, 'Play only once every publisher of the camera has a matched '
                             'subscription.', None),
    'start_delay_s': (1.0, 'Extra wait after the conditions above hold (s).', (0.0, 3600.0)),
    'qos': ('reliable', 'Reliability of the image/camera_info/depth publishers.', QOS_CHOICES),
    'shutdown_when_done': (False, 'Exit after the last frame (ignored with loop).', None),
}


def _descriptor(name: str, description: str, limits) -> ParameterDescriptor:
    descriptor = ParameterDescriptor(name=name, description=description, read_only=True)
    if isinstance(limits, tuple) and limits and isinstance(limits[0], str):
        descriptor.description += f' One of {list(limits)}.'
    elif isinstance(limits, tuple) and isinstance(limits[0], float):
        descriptor.floating_point_range = [FloatingPointRange(
            from_value=limits[0], to_value=limits[1], step=0.0)]
    elif isinstance(limits, tuple):
        descriptor.integer_range = [IntegerRange(from_value=limits[0], to_value=limits[1],
                                                 step=1)]
    return descriptor


def scene_config(scene: str, height: int, width: int, frames: int, fps: float):
    """The SceneConfig both this node and ``backend:=oracle`` build from the same values."""
    from pointmap_ros.data.scenes import SceneConfig
    return SceneConfig(preset=scene, height=int(height), width=int(width),
                       num_frames=int(frames), fps=float(fps)).validate()


def ns_to_time(stamp_ns: int) -> Time:
    return Time(sec=int(stamp_ns // 1_000_000_000), nanosec=int(stamp_ns % 1_000_000_000))


def rgb_msg(rgb: np.ndarray, header: Header, encoding: str = 'rgb8') -> Image:
    """``[H, W, 3]`` uint8 RGB -> Image in ``rgb8`` or ``bgr8``."""
    pixels = np.ascontiguousarray(rgb if encoding == 'rgb8' else rgb[:, :, ::-1])
    return Image(header=header, height=pixels.shape[0], width=pixels.shape[1],
                 encoding=encoding, is_bigendian=False, step=pixels.shape[1] * 3,
                 data=pixels.tobytes())


def depth_msg(depth: np.ndarray, header: Header) -> Image:
    """``[H, W]`` metres (0 = none) -> ``32FC1`` Image with NaN where there is no depth."""
    d = np.where(depth > 0, depth, np.nan).astype('<f4')
    return Image(header=header, height=d.shape[0], width=d.shape[1], encoding='32FC1',
                 is_bigendian=False, step=d.shape[1] * 4, data=d.tobytes())


def camera_info_msg(K: np.ndarray, height: int, width: int, header: Header) -> CameraInfo:
    """Pinhole CameraInfo without distortion for intrinsics ``K`` ``[3, 3]``."""
    P = np.zeros((3, 4))
    P[:, :3] = K
    return CameraInfo(header=header, height=int(height), width=int(width),
                      distortion_model='plumb_bob', d=[0.0] * 5,
                      k=[float(v) for v in np.ravel(K)],
                      r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                      p=[float(v) for v in P.ravel()])


class SyntheticCameraNode(Node):
    """Publishes one generated frame per timer tick once the start conditions hold."""

    def __init__(self, **kwargs):
        super().__init__('synthetic_camera_node', **kwargs)
        v = {name: self.declare_parameter(name, default,
                                          _descriptor(name, text, limits)).value
             for name, (default, text, limits) in CAMERA_PARAMS.items()}
        for name, (_, _, limits) in CAMERA_PARAMS.items():
            if isinstance(limits, tuple) and limits and isinstance(limits[0], str) \
                    and v[name] not in limits:
                raise ConfigError(f'{name} must be one of {list(limits)}, got {v[name]!r}',
                                  name=name, value=v[name])
        from pointmap_ros.data.scenes import SceneGenerator
        self._scene = SceneGenerator(
            scene_config(v['scene'], v['height'], v['width'], v['frames'], v['fps']),
            seed=v['seed'])
        self._v = v
        qos = make_qos(v['qos'], 5)
        ns = v['namespace'].rstrip('/')
        self._pub_image = self.create_publisher(Image, f"{ns}/{v['image_topic']}", qos)
        self._pub_info = self.create_publisher(CameraInfo, f"{ns}/{v['camera_info_topic']}", qos)
        self._pub_depth = (self.create_publisher(Image, f"{ns}/{v['depth_topic']}", qos)
                           if v['publish_depth'] else None)
        self._pub_clock = (self.create_publisher(ClockMsg, '/clock', 10)
                           if v['publish_clock'] else None)
        self._tf = TfPublisher(self) if v['publish_tf'] else None
        self._consumer_ready = not v['wait_for_ready']
        if v['wait_for_ready']:
            self.create_subscription(Bool, v['wait_for_ready'], self._on_ready, latched_qos())
        self._sent = 0  # frames published (scene frame = sent % frames when looping)
        self._last_stamp_ns = -1
        self._waiting_for_clock = False
        self._conditions_met_s: float | None = None
        self.done = False
        rate = v['rate_hz'] if v['rate_hz'] > 0 else v['fps']
        # Steady timers: under use_sim_time, ROS-time timers would not fire without /clock.
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._gate = self.create_timer(0.05, self._check_start, clock=self._steady)
        self._period = 1.0 / rate
        self._timer = None
        waits = [f"true on {v['wait_for_ready']}"] * bool(v['wait_for_ready'])
        waits += ['matched subscribers'] * bool(v['wait_for_subscribers'])
        waits.append(f"{v['start_delay_s']} s")
        looping = ', looping' if v['loop'] else ''
        self.get_logger().info(
            f"scene '{v['scene']}' (seed {v['seed']}, {v['frames']} frames "
            f"{v['height']}x{v['width']} at {v['fps']} fps{looping}) on {ns} at {rate} Hz, "
            f"stamps from {v['stamp_source']}; starting after {' and '.join(waits)}")

    def _on_ready(self, msg: Bool) -> None:
        if bool(msg.data) != self._consumer_ready:
            self.get_logger().info(f"{self._v['wait_for_ready']}: {bool(msg.data)}")
        self._consumer_ready = bool(msg.data)

    def _camera_publishers(self) -> list:
        return [p for p in (self._pub_image, self._pub_info, self._pub_depth) if p is not None]

    def _check_start(self) -> None:
        """Gate timer: start playing once the consumer is ready and matched, plus the delay."""
        matched = (not self._v['wait_for_subscribers']
                   or all(p.get_subscription_count() > 0 for p in self._camera_publishers()))
        now_s = self._steady.now().nanoseconds * 1e-9
        if not (self._consumer_ready and matched):
            self._conditions_met_s = None
            return
        if self._conditions_met_s is None:
            self._conditions_met_s = now_s
        if now_s - self._conditions_met_s < self._v['start_delay_s']:
            return
        self._gate.cancel()
        self.get_logger().info('start conditions met: playing')
        self._timer = self.create_timer(self._period, self._tick, clock=self._steady)

    def _tick(self) -> None:
        frames = self._scene.num_frames
        if self._sent >= frames and not self._v['loop']:
            self._timer.cancel()
            self.done = True
            self.get_logger().info(f'scene finished after {self._sent} frames')
            if self._v['shutdown_when_done']:
                rclpy.try_shutdown()
            return
        if self._sent == frames:
            self.get_logger().info(f'scene finished after {frames} frames; looping')
        stamp_ns = self._stamp_ns()
        if stamp_ns is None:
            return
        self.publish_frame(self._sent % frames, stamp_ns)
        self._last_stamp_ns = stamp_ns
        self._sent += 1

    def _stamp_ns(self) -> int | None:
        """Stamp of the next frame, or None to skip this tick (no /clock yet, or sim time
        paused: a repeated stamp would be dropped downstream as a duplicate)."""
        if self._v['stamp_source'] == 'scene':
            return int(round(self._sent * 1e9 / self._v['fps']))
        now_ns = self.get_clock().now().nanoseconds
        if now_ns == 0:  # use_sim_time and no /clock received yet
            if not self._waiting_for_clock:
                self.get_logger().info('use_sim_time: waiting for /clock before publishing')
                self._waiting_for_clock = True
            return None
        return now_ns if now_ns > self._last_stamp_ns else None

    def publish_frame(self, t: int, stamp_ns: int | None = None) -> None:
        """Publish scene frame ``t`` (image, camera_info, depth, /tf, /clock), stamped
        ``stamp_ns`` (default: the scene time t / fps)."""
        v = self._v
        frame = self._scene.render(t)
        if stamp_ns is None:
            stamp_ns = int(round(t * 1e9 / v['fps']))
        stamp = ns_to_time(stamp_ns)
        if self._pub_clock is not None:
            self._pub_clock.publish(ClockMsg(clock=stamp))
        header = Header(stamp=stamp, frame_id=v['frame_id'])
        if self._tf is not None:
            # The scene's world is the first camera's optical frame; re-express it in the
            # published convention (the reconstruction node does the same with its world).
            R = np.eye(4)
            R[:3, :3] = world_rotation(v['world_frame_convention'])
            transforms = [matrix_to_transform(R @ frame.T_world_cam, stamp, v['world_frame'],
                                              v['frame_id'])]
            transforms += [matrix_to_transform(R @ T, stamp, v['world_frame'], f'gt_object_{k}')
                           for k, T in sorted(frame.object_poses.items())]
            self._tf.send(transforms)
        self._pub_info.publish(camera_info_msg(frame.K, v['height'], v['width'], header))
        if self._pub_depth is not None:
            self._pub_depth.publish(depth_msg(frame.depth, header))
        self._pub_image.publish(rgb_msg(frame.rgb, header, v['encoding']))


def main(args: list[str] | None = None) -> int:
    """Console entry point ``synthetic_camera_node``."""
    return run_node('synthetic_camera_node', SyntheticCameraNode, args,
                    parser=node_arg_parser('synthetic_camera_node', __doc__))
