"""``synthetic_camera_node``: plays a generated dynamic scene live, like a camera driver.

Publishes ``<namespace>/image_raw`` (rgb8 or bgr8), ``<namespace>/camera_info`` and optionally
``<namespace>/depth`` (32FC1 metres or 16UC1 millimetres), all with the same header, plus the
ground truth on ``/tf``: ``world -> <frame_id>`` (the true camera pose) and
``world -> gt_object_<k>``.

Robot sensors (data/sensor_rig.py), so that consumers get the priors a robot gives them:
``depth_noise`` > 0 turns the exact rendered depth into an RGB-D sensor's (noise, holes,
flying pixels, range), and ``publish_odometry`` adds the camera pose as odometry reports it,
drifting: ``odom -> <frame_id>``. A TF frame has one parent, so with odometry the ground
truth of the camera becomes ``world -> odom``, the correction a perfect localiser would
publish (REP-105's ``map -> odom``): ``world -> odom -> <frame_id>`` is still the true pose,
and every consumer that looks up ``world -> <frame_id>`` (RViz, the tests) still gets it.
The sensors read the frames in the order played: with ``loop`` the odometry keeps
integrating (the jump from the last frame back to the first counts as motion, like a robot
driving back to its start) and depth noise never repeats.

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
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Bool, Header

from pointmap_ros.data.depth_sensor import DepthSensorModel
from pointmap_ros.data.odometry import OdometryModel
from pointmap_ros.data.scenes import live_scene_config
from pointmap_ros.data.sensor_rig import SensorReading, SensorRig, world_to_odom
from pointmap_ros.errors import ConfigError
from pointmap_ros.frames import GROUND_TRUTH_OBJECT_PREFIX, object_frame
from pointmap_ros.ros.conversions import (K_to_camera_info, depth_to_image, matrix_to_transform,
                                          ns_to_stamp, rgb_to_image)
from pointmap_ros.ros.outputs import world_rotation
from pointmap_ros.ros.params import CAMERA_PARAMS, declare_parameters, validate_camera
from pointmap_ros.ros.qos import latched_qos, make_qos
from pointmap_ros.ros.runner import node_arg_parser, run_node
from pointmap_ros.ros.tf import TfPublisher

__all__ = ['SyntheticCameraNode', 'main', 'CAMERA_PARAMS', 'sensor_rig', 'frame_transforms']


def sensor_rig(values: dict) -> SensorRig:
    """The simulated sensors the camera parameters ``values`` describe."""
    odometry = (OdometryModel(values['odometry_drift'], values['odometry_jitter_m'],
                              values['odometry_jitter_deg'])
                if values['publish_odometry'] else None)
    depth = (DepthSensorModel(
        noise_rel=values['depth_noise'], dropout=values['depth_dropout'],
        edge_hole_prob=values['depth_edge_hole_prob'], flying_prob=values['depth_flying_prob'],
        min_m=values['depth_min_m'], max_m=values['depth_max_m'])
        if values['publish_depth'] and values['depth_noise'] > 0 else None)
    return SensorRig(odometry=odometry, depth=depth, seed=values['noise_seed'])


def frame_transforms(frame, reading: SensorReading, stamp, values: dict) -> list:
    """TransformStamped list of one played frame: the ground truth (``publish_tf``) and the
    odometry (``publish_odometry``), each frame with exactly one parent."""
    camera, odom = values['frame_id'], values['odom_frame']
    transforms = []
    if values['publish_tf']:
        # The scene's world is the first camera's optical frame; re-express it in the
        # published convention (the reconstruction node does the same with its world).
        T_published_world = np.eye(4)
        T_published_world[:3, :3] = world_rotation(values['world_frame_convention'])
        world = values['world_frame']
        T_world_cam = T_published_world @ frame.T_world_cam
        if reading.T_odom_cam is None:
            transforms.append(matrix_to_transform(T_world_cam, stamp, world, camera))
        else:  # the camera's one parent is odom: the ground truth places odom instead
            transforms.append(matrix_to_transform(
                world_to_odom(T_world_cam, reading.T_odom_cam), stamp, world, odom))
        transforms += [matrix_to_transform(
            T_published_world @ T_world_object, stamp, world,
            object_frame(GROUND_TRUTH_OBJECT_PREFIX, object_id))
            for object_id, T_world_object in sorted(frame.object_poses.items())]
    if reading.T_odom_cam is not None:
        transforms.append(matrix_to_transform(reading.T_odom_cam, stamp, odom, camera))
    return transforms


class SyntheticCameraNode(Node):
    """Publishes one generated frame per timer tick once the start conditions hold."""

    def __init__(self, **kwargs):
        super().__init__('synthetic_camera_node', **kwargs)
        values = declare_parameters(self, CAMERA_PARAMS)
        if (reason := validate_camera(values)) is not None:
            raise ConfigError(reason)
        from pointmap_ros.data.scenes import SceneGenerator
        self._scene = SceneGenerator(
            live_scene_config(values['scene'], values['height'], values['width'],
                              values['frames'], values['fps']), seed=values['seed'])
        self._values = values
        qos = make_qos(values['qos'], 5)
        namespace = values['namespace'].rstrip('/')
        self._pub_image = self.create_publisher(
            Image, f"{namespace}/{values['image_topic']}", qos)
        self._pub_info = self.create_publisher(
            CameraInfo, f"{namespace}/{values['camera_info_topic']}", qos)
        self._pub_depth = (self.create_publisher(
            Image, f"{namespace}/{values['depth_topic']}", qos)
            if values['publish_depth'] else None)
        self._pub_clock = (self.create_publisher(ClockMsg, '/clock', 10)
                           if values['publish_clock'] else None)
        self._tf = (TfPublisher(self) if values['publish_tf'] or values['publish_odometry']
                    else None)
        self._sensors = sensor_rig(values).start()
        self._consumer_ready = not values['wait_for_ready']
        if values['wait_for_ready']:
            self.create_subscription(Bool, values['wait_for_ready'], self._on_ready, latched_qos())
        self._sent = 0  # frames published (scene frame = sent % frames when looping)
        self._last_stamp_ns = -1
        self._waiting_for_clock = False
        self._conditions_met_s: float | None = None
        self.done = False
        rate = values['rate_hz'] if values['rate_hz'] > 0 else values['fps']
        # Steady timers: under use_sim_time, ROS-time timers would not fire without /clock.
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._gate = self.create_timer(0.05, self._check_start, clock=self._steady)
        self._period = 1.0 / rate
        self._timer = None
        self.get_logger().info(_describe(values, namespace, rate, self._sensors.rig))

    def _on_ready(self, msg: Bool) -> None:
        if bool(msg.data) != self._consumer_ready:
            self.get_logger().info(f"{self._values['wait_for_ready']}: {bool(msg.data)}")
        self._consumer_ready = bool(msg.data)

    def _camera_publishers(self) -> list:
        return [p for p in (self._pub_image, self._pub_info, self._pub_depth) if p is not None]

    def _check_start(self) -> None:
        """Gate timer: start playing once the consumer is ready and matched, plus the delay."""
        matched = (not self._values['wait_for_subscribers']
                   or all(p.get_subscription_count() > 0 for p in self._camera_publishers()))
        now_s = self._steady.now().nanoseconds * 1e-9
        if not (self._consumer_ready and matched):
            self._conditions_met_s = None
            return
        if self._conditions_met_s is None:
            self._conditions_met_s = now_s
        if now_s - self._conditions_met_s < self._values['start_delay_s']:
            return
        self._gate.cancel()
        self.get_logger().info('start conditions met: playing')
        self._timer = self.create_timer(self._period, self._tick, clock=self._steady)

    def _tick(self) -> None:
        frames = self._scene.num_frames
        if self._sent >= frames and not self._values['loop']:
            self._timer.cancel()
            self.done = True
            self.get_logger().info(f'scene finished after {self._sent} frames')
            if self._values['shutdown_when_done']:
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
        if self._values['stamp_source'] == 'scene':
            return int(round(self._sent * 1e9 / self._values['fps']))
        now_ns = self.get_clock().now().nanoseconds
        if now_ns == 0:  # use_sim_time and no /clock received yet
            if not self._waiting_for_clock:
                self.get_logger().info('use_sim_time: waiting for /clock before publishing')
                self._waiting_for_clock = True
            return None
        return now_ns if now_ns > self._last_stamp_ns else None

    def publish_frame(self, t: int, stamp_ns: int | None = None) -> None:
        """Publish scene frame ``t`` (image, camera_info, depth, /tf, /clock), stamped
        ``stamp_ns`` (default: the scene time t / fps). Each call is the sensors' next
        reading (odometry integrates the frames in the order they are published)."""
        values = self._values
        frame = self._scene.render(t)
        reading = self._sensors.read(frame)
        if stamp_ns is None:
            stamp_ns = int(round(t * 1e9 / values['fps']))
        stamp = ns_to_stamp(stamp_ns)
        if self._pub_clock is not None:
            self._pub_clock.publish(ClockMsg(clock=stamp))
        header = Header(stamp=stamp, frame_id=values['frame_id'])
        if self._tf is not None:
            self._tf.send(frame_transforms(frame, reading, stamp, values))
        self._pub_info.publish(K_to_camera_info(frame.K, values['height'], values['width'],
                                                header))
        if self._pub_depth is not None:
            self._pub_depth.publish(depth_to_image(reading.depth, header,
                                                   values['depth_encoding']))
        self._pub_image.publish(rgb_to_image(frame.rgb, header, values['encoding']))


def _describe(values: dict, namespace: str, rate: float, rig: SensorRig) -> str:
    """The start-up log line: what is played, how, with which sensors, and when."""
    waits = [f"true on {values['wait_for_ready']}"] * bool(values['wait_for_ready'])
    waits += ['matched subscribers'] * bool(values['wait_for_subscribers'])
    waits.append(f"{values['start_delay_s']} s")
    looping = ', looping' if values['loop'] else ''
    sensors = []
    if rig.odometry is not None:
        sensors.append(f"odometry {values['odom_frame']} -> {values['frame_id']} (drift "
                       f"{rig.odometry.drift_rel})")
    if values['publish_depth']:
        sensors.append(f"depth {values['depth_encoding']} "
                       + ('exact' if rig.depth is None else f'noise {rig.depth.noise_rel}'))
    with_sensors = f"; {', '.join(sensors)} (noise seed {rig.seed})" if sensors else ''
    return (f"scene '{values['scene']}' (seed {values['seed']}, {values['frames']} frames "
            f"{values['height']}x{values['width']} at {values['fps']} fps{looping}) on "
            f"{namespace} at {rate} Hz, stamps from {values['stamp_source']}{with_sensors}; "
            f"starting after {' and '.join(waits)}")

def main(args: list[str] | None = None) -> int:
    """Console entry point ``synthetic_camera_node``."""
    return run_node('synthetic_camera_node', SyntheticCameraNode, args,
                    parser=node_arg_parser('synthetic_camera_node', __doc__))
