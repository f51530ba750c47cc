"""ROS 2 bags of generated sequences (MCAP storage) and a reader for MCAP / sqlite3 bags.

Uses the pure-Python ``rosbags`` library with the ROS 2 Kilted type store, so neither rclpy
nor a ROS installation is needed to write or read. Layout of a written bag (one message per
topic and frame, header stamp = bag log time = ``base_time + t / fps``):

- ``/camera/image_raw`` (sensor_msgs/msg/Image): ``rgb8``, frame ``camera_optical_frame``;
- ``/camera/camera_info`` (sensor_msgs/msg/CameraInfo): plumb_bob, zero distortion, K, R, P;
- ``/camera/depth`` (sensor_msgs/msg/Image, optional): ``32FC1`` metres, 0 = invalid;
  the exact rendered depth, or an RGB-D sensor's (noise, holes) with a depth model;
- ``/tf`` (tf2_msgs/msg/TFMessage): ground truth ``world`` -> ``camera_optical_frame`` and
  ``world`` -> ``gt_object_<id>``. With odometry, ``odom`` -> ``camera_optical_frame`` is
  the drifting odometry and the ground truth places ``odom`` instead (``world`` -> ``odom``,
  what a perfect localiser publishes), so every frame keeps one parent and
  ``world`` -> ``odom`` -> ``camera_optical_frame`` is the true camera pose.

The ``world`` frame is the generator's world (camera 0's optical frame at t = 0). Odometry
and depth errors come from a :class:`~pointmap_ros.data.sensor_rig.SensorRig`, the one the
synthetic camera node uses, so a bag and a live camera with the same settings agree.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from pointmap_ros.data.sensor_rig import SensorReading, SensorRig, world_to_odom
from pointmap_ros.errors import ConfigError, InputError
from pointmap_ros.frames import (CAMERA_OPTICAL_FRAME, GROUND_TRUTH_OBJECT_PREFIX, ODOM_FRAME,
                                 WORLD_FRAME, object_frame)
from pointmap_ros.geometry.transforms import rotmat_to_quat_xyzw

__all__ = ['TOPIC_IMAGE', 'TOPIC_CAMERA_INFO', 'TOPIC_DEPTH', 'TOPIC_TF', 'WORLD_FRAME',
           'ODOM_FRAME', 'CAMERA_FRAME', 'DEFAULT_BASE_TIME_NS', 'BagMessage', 'BagSummary',
           'write_bag', 'read_bag', 'typestore', 'prepare_bag_dir', 'BAG_VERSION']

logger = logging.getLogger(__name__)

TOPIC_IMAGE = '/camera/image_raw'
TOPIC_CAMERA_INFO = '/camera/camera_info'
TOPIC_DEPTH = '/camera/depth'
TOPIC_TF = '/tf'
CAMERA_FRAME = CAMERA_OPTICAL_FRAME
# A fixed, recognisable base time (2023-11-14T22:13:20Z) instead of wall time: bags written
# from the same seed are byte-identical.
DEFAULT_BASE_TIME_NS = 1_700_000_000 * 10**9
BAG_VERSION = 8  # metadata version read by Jazzy and Kilted


@dataclass(frozen=True)
class BagMessage:
    """One deserialised message: ``topic``, ``stamp_ns`` (bag log time) and ``msg``."""

    topic: str
    stamp_ns: int
    msg: object


@dataclass(frozen=True)
class BagSummary:
    """What :func:`write_bag` wrote: the bag directory, frame count and topic -> count."""

    path: Path
    num_frames: int
    topics: dict


def typestore():
    """The rosbags type store of ROS 2 Kilted (message layouts identical to Jazzy's)."""
    from rosbags.typesys import Stores, get_typestore
    return get_typestore(Stores.ROS2_KILTED)


def prepare_bag_dir(path, overwrite: bool, *, name: str = 'path',
                    how: str = 'pass overwrite=True') -> Path:
    """Make ``path`` free for a new bag directory: removes an existing *bag* if allowed.

    Args:
        path: the bag directory to be written.
        overwrite: replace an existing bag there.
        name: the setting that gave ``path`` (for the error); ``how``: how to allow it.

    Raises:
        ConfigError: ``path`` exists and ``overwrite`` is off, or it exists but is not a bag
            directory (no ``metadata.yaml``; never deleted).
    """
    path = Path(path)
    if path.exists():
        if not overwrite:
            raise ConfigError(f'{path} already exists; {how} to replace it', name=name,
                              value=str(path))
        if not (path / 'metadata.yaml').is_file():
            raise ConfigError(f'refusing to overwrite {path}: not a bag directory (no '
                              'metadata.yaml)', name=name, value=str(path))
        shutil.rmtree(path)
    return path


class _Messages:
    """Builds the bag's message objects from numpy data, with rosbags' classes.

    The layouts are those of ros/conversions.py (``rgb_to_image``, ``K_to_camera_info``,
    ``matrix_to_transform``), which build rclpy's classes; this module cannot use them
    because writing a bag must work where ROS 2 (and its message wheels) is not installed.
    """

    def __init__(self, store):
        self.t = store.types
        self.store = store

    def header(self, stamp_ns: int, frame_id: str):
        time = self.t['builtin_interfaces/msg/Time'](sec=stamp_ns // 10**9,
                                                      nanosec=stamp_ns % 10**9)
        return self.t['std_msgs/msg/Header'](stamp=time, frame_id=frame_id)

    def image(self, stamp_ns: int, array: np.ndarray, encoding: str):
        height, width = array.shape[:2]
        data = np.ascontiguousarray(array).view(np.uint8).reshape(-1)
        return self.t['sensor_msgs/msg/Image'](
            header=self.header(stamp_ns, CAMERA_FRAME), height=height, width=width,
            encoding=encoding, is_bigendian=0, step=data.size // height, data=data)

    def camera_info(self, stamp_ns: int, K: np.ndarray, height: int, width: int):
        roi = self.t['sensor_msgs/msg/RegionOfInterest'](x_offset=0, y_offset=0, height=0,
                                                         width=0, do_rectify=False)
        projection = np.hstack([K, np.zeros((3, 1))])
        return self.t['sensor_msgs/msg/CameraInfo'](
            header=self.header(stamp_ns, CAMERA_FRAME), height=height, width=width,
            distortion_model='plumb_bob', d=np.zeros(5), k=K.reshape(-1).astype(np.float64),
            r=np.eye(3).reshape(-1), p=projection.reshape(-1), binning_x=0, binning_y=0, roi=roi)

    def transform(self, stamp_ns: int, child: str, pose: np.ndarray, parent: str = WORLD_FRAME):
        q = rotmat_to_quat_xyzw(pose[:3, :3])
        t = self.t
        transform = t['geometry_msgs/msg/Transform'](
            translation=t['geometry_msgs/msg/Vector3'](*map(float, pose[:3, 3])),
            rotation=t['geometry_msgs/msg/Quaternion'](*map(float, q)))
        return t['geometry_msgs/msg/TransformStamped'](
            header=self.header(stamp_ns, parent), child_frame_id=child, transform=transform)

    def frame_messages(self, stamp_ns: int, frame, reading: SensorReading,
                       include_depth: bool) -> list[tuple[str, object]]:
        """``(topic, message)`` of one frame: image, camera info, depth, /tf."""
        height, width = frame.depth.shape
        messages = [(TOPIC_IMAGE, self.image(stamp_ns, frame.rgb, 'rgb8')),
                    (TOPIC_CAMERA_INFO, self.camera_info(stamp_ns, frame.K, height, width))]
        if include_depth:
            messages.append((TOPIC_DEPTH, self.image(stamp_ns, reading.depth, '32FC1')))
        messages.append((TOPIC_TF, self.frame_tf(stamp_ns, frame, reading)))
        return messages

    def frame_tf(self, stamp_ns: int, frame, reading: SensorReading):
        """The /tf message of one frame: ground truth, and the odometry if there is one
        (then the ground truth places ``odom``: the camera frame has one parent)."""
        if reading.T_odom_cam is None:
            transforms = [self.transform(stamp_ns, CAMERA_FRAME, frame.T_world_cam)]
        else:
            transforms = [
                self.transform(stamp_ns, ODOM_FRAME,
                               world_to_odom(frame.T_world_cam, reading.T_odom_cam)),
                self.transform(stamp_ns, CAMERA_FRAME, reading.T_odom_cam, ODOM_FRAME)]
        transforms += [
            self.transform(stamp_ns, object_frame(GROUND_TRUTH_OBJECT_PREFIX, object_id), pose)
            for object_id, pose in sorted(frame.object_poses.items())]
        return self.tf(transforms)

    def tf(self, transforms: list):
        return self.t['tf2_msgs/msg/TFMessage'](transforms=transforms)


def write_bag(generator, path, *, include_depth: bool = False, sensors: SensorRig = SensorRig(),
              overwrite: bool = False, base_time_ns: int = DEFAULT_BASE_TIME_NS,
              frames: Iterable[int] | None = None,
              on_frame: Callable[[int], None] | None = None) -> BagSummary:
    """Write a generated sequence as a ROS 2 bag directory with MCAP storage.

    Args:
        generator: a :class:`~pointmap_ros.data.scenes.SceneGenerator`.
        path: bag directory to create (rosbag2 layout: ``metadata.yaml`` + ``*.mcap``).
        include_depth: also write ``/camera/depth`` (32FC1 metres).
        sensors: the robot sensors: odometry on ``/tf`` (``odom`` -> camera) and the depth
            camera's errors (needs ``include_depth``); default: exact depth, no odometry.
        overwrite: replace an existing bag directory at ``path``.
        base_time_ns: stamp of frame 0; frame t is at ``base_time_ns + t / fps``.
        frames: frame indices to write (default: all, in order); the sensors read them in
            this order (odometry integrates them as a robot would).
        on_frame: called with each frame index after it is written (progress bars).

    Raises:
        ConfigError: ``path`` exists and ``overwrite`` is off, or exists but is not a bag;
            a depth model without ``include_depth``.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer

    if sensors.depth is not None and not include_depth:
        raise ConfigError('a depth sensor model needs include_depth (it degrades /camera/depth)',
                          name='sensors')
    path = prepare_bag_dir(path, overwrite)
    store = typestore()
    build = _Messages(store)
    frames = list(range(generator.num_frames)) if frames is None else list(frames)
    topics = {TOPIC_IMAGE: 'sensor_msgs/msg/Image',
              TOPIC_CAMERA_INFO: 'sensor_msgs/msg/CameraInfo',
              TOPIC_TF: 'tf2_msgs/msg/TFMessage'}
    if include_depth:
        topics[TOPIC_DEPTH] = 'sensor_msgs/msg/Image'
    counts = dict.fromkeys(topics, 0)
    run = sensors.start()
    with Writer(path, version=BAG_VERSION, storage_plugin=StoragePlugin.MCAP) as writer:
        conns = {topic: writer.add_connection(topic, msgtype, typestore=store)
                 for topic, msgtype in topics.items()}

        def put(topic, stamp_ns, msg):
            writer.write(conns[topic], stamp_ns, store.serialize_cdr(msg, topics[topic]))
            counts[topic] += 1

        for t in frames:
            f = generator.render(t)
            stamp_ns = base_time_ns + int(round(f.stamp * 1e9))
            for topic, msg in build.frame_messages(stamp_ns, f, run.read(f), include_depth):
                put(topic, stamp_ns, msg)
            if on_frame is not None:
                on_frame(t)
    logger.info('wrote %d frames to %s', len(frames), path)
    return BagSummary(path=path, num_frames=len(frames), topics=counts)


def read_bag(path, topics: Iterable[str] | None = None) -> Iterator[BagMessage]:
    """Iterate a ROS 2 bag (MCAP or sqlite3 storage) in log-time order.

    Args:
        path: the bag directory (with ``metadata.yaml``).
        topics: only these topics (default: all).

    Raises:
        InputError: ``path`` is not a readable ROS 2 bag (reason ``'bag'``).
    """
    from rosbags.rosbag2 import Reader, ReaderError

    path = Path(path)
    store = typestore()
    try:
        reader = Reader(path)
        reader.open()
    except (ReaderError, FileNotFoundError, NotADirectoryError) as exc:
        raise InputError(f'cannot open ROS 2 bag {path}: {exc}', 'bag', actual=str(path)) from exc
    try:
        wanted = None if topics is None else set(topics)
        conns = [c for c in reader.connections if wanted is None or c.topic in wanted]
        for conn, stamp_ns, raw in reader.messages(connections=conns):
            yield BagMessage(conn.topic, stamp_ns, store.deserialize_cdr(raw, conn.msgtype))
    finally:
        reader.close()
