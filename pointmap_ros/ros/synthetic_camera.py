"""``synthetic_camera_node``: plays a generated dynamic scene live, like a camera driver.

Publishes ``<namespace>/image_raw`` (rgb8 or bgr8), ``<namespace>/camera_info`` and optionally
``<namespace>/depth`` (32FC1 metres), all with the same header, plus the ground
truth on ``/tf``: ``world -> <frame_id>`` (the true camera pose) and ``world -> gt_object_<k>``.
Frame t carries the stamp ``t / fps`` seconds, which is what ``backend:=oracle`` keys its
ground truth on, and is sent at ``rate_hz`` (default: the scene's fps, i.e. real time).
With ``publish_clock`` the node also drives ``/clock`` so ``use_sim_time`` graphs follow it.
"""

from __future__ import annotations

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from rclpy.node import Node
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from pointmap_ros.errors import ConfigError
from pointmap_ros.ros.conversions import matrix_to_transform
from pointmap_ros.ros.qos import make_qos
from pointmap_ros.ros.runner import node_arg_parser, run_node
from pointmap_ros.ros.tf import TfPublisher

__all__ = ['SyntheticCameraNode', 'scene_config', 'camera_info_msg', 'rgb_msg', 'depth_msg',
           'ns_to_time', 'main']

_PARAMS = {
    'namespace': '/camera', 'image_topic': 'image_raw', 'camera_info_topic': 'camera_info',
    'depth_topic': 'depth', 'publish_depth': False, 'publish_tf': True,
    'publish_clock': False, 'frame_id': 'camera_optical_frame', 'world_frame': 'world',
    'scene': 'demo', 'seed': 0, 'height': 224, 'width': 224, 'frames': 30, 'fps': 10.0,
    'rate_hz': 0.0, 'encoding': 'rgb8', 'start_delay_s': 1.0, 'qos': 'reliable',
    'shutdown_when_done': False,
}


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
    """Publishes one generated frame per timer tick until the scene ends."""

    def __init__(self, **kwargs):
        super().__init__('synthetic_camera_node', **kwargs)
        v = {name: self.declare_parameter(name, default).value
             for name, default in _PARAMS.items()}
        if v['encoding'] not in ('rgb8', 'bgr8'):
            raise ConfigError(f"encoding must be 'rgb8' or 'bgr8', got {v['encoding']!r}",
                              name='encoding', value=v['encoding'])
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
        self._t = 0
        self.done = False
        rate = v['rate_hz'] if v['rate_hz'] > 0 else v['fps']
        self._start = self.create_timer(max(v['start_delay_s'], 1e-3), self._begin)
        self._period = 1.0 / rate
        self._timer = None
        self.get_logger().info(
            f"playing scene '{v['scene']}' (seed {v['seed']}, {v['frames']} frames "
            f"{v['height']}x{v['width']} at {v['fps']} fps) on {ns} at {rate} Hz")

    def _begin(self) -> None:
        self._start.cancel()
        self._timer = self.create_timer(self._period, self._tick)

    def _tick(self) -> None:
        if self._t >= self._scene.num_frames:
            self._timer.cancel()
            self.done = True
            self.get_logger().info(f'scene finished after {self._t} frames')
            if self._v['shutdown_when_done']:
                rclpy.try_shutdown()
            return
        self.publish_frame(self._t)
        self._t += 1

    def publish_frame(self, t: int) -> None:
        """Publish frame ``t`` of the scene (image, camera_info, depth, /tf, /clock)."""
        v = self._v
        frame = self._scene.render(t)
        stamp = ns_to_time(int(round(t * 1e9 / v['fps'])))
        if self._pub_clock is not None:
            self._pub_clock.publish(ClockMsg(clock=stamp))
        header = Header(stamp=stamp, frame_id=v['frame_id'])
        if self._tf is not None:
            transforms = [matrix_to_transform(frame.T_world_cam, stamp, v['world_frame'],
                                              v['frame_id'])]
            transforms += [matrix_to_transform(T, stamp, v['world_frame'], f'gt_object_{k}')
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
