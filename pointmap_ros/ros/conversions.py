"""ROS messages <-> NumPy: every message this package builds or decodes with rclpy's classes.

The node, the synthetic camera, ``pointmap-replay``, ``pointmap-demo`` and the tests all
build their messages here. (data/bag.py writes the same layouts with rosbags' own classes,
because writing a bag must work without ROS 2 installed.)

Dimension letters: H, W image rows/cols; N points.

Image decoding follows cv_bridge's semantics without needing cv_bridge: rows are read with
``step`` (so padded rows work), ``is_bigendian`` is honoured for multi-byte encodings, and a
buffer whose size disagrees with ``step * height`` is rejected. Every rejection raises
:class:`~pointmap_ros.errors.InputError` / :class:`~pointmap_ros.errors.CalibrationError`
whose ``reason`` key is what diagnostics count.

Outgoing clouds are built from one NumPy structured array and a single ``tobytes()`` passed to
the message constructor (setting ``.data`` afterwards is orders of magnitude slower,
ros2/common_interfaces#177).
"""

from __future__ import annotations

import sys

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Pose, Quaternion, Transform, TransformStamped, Vector3
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField

from pointmap_ros.errors import CalibrationError, InputError
from pointmap_ros.geometry.camera import intrinsics_from_camera_info
from pointmap_ros.geometry.transforms import quat_xyzw_to_rotmat, rotmat_to_quat_xyzw

__all__ = [
    'COLOR_ENCODINGS', 'DEPTH_ENCODINGS', 'INSTANCE_ENCODING',
    'stamp_to_ns', 'ns_to_stamp', 'image_to_rgb', 'image_to_depth', 'camera_info_to_K',
    'rgb_to_image', 'depth_to_image', 'K_to_camera_info',
    'points_to_cloud', 'flow_to_cloud', 'cloud_to_array', 'pack_rgb', 'unpack_rgb',
    'mask_to_image', 'instance_ids_to_image', 'image_to_array',
    'matrix_to_pose', 'matrix_to_transform', 'transform_to_matrix', 'objects_to_msg',
]

# encoding -> (numpy dtype of one channel, channels)
COLOR_ENCODINGS = {
    'rgb8': (np.uint8, 3), 'bgr8': (np.uint8, 3), 'rgba8': (np.uint8, 4),
    'bgra8': (np.uint8, 4), 'mono8': (np.uint8, 1), 'mono16': (np.uint16, 1),
}
DEPTH_ENCODINGS = {'16UC1': (np.uint16, 1), '32FC1': (np.float32, 1), 'mono16': (np.uint16, 1)}
#: Instance-id images are 32-bit signed (ids are never reused, so they can exceed 65535).
INSTANCE_ENCODING = '32SC1'
_ALL_ENCODINGS = {**COLOR_ENCODINGS, **DEPTH_ENCODINGS, INSTANCE_ENCODING: (np.int32, 1)}

_POINTFIELD_DTYPES = {
    PointField.INT8: np.int8, PointField.UINT8: np.uint8, PointField.INT16: np.int16,
    PointField.UINT16: np.uint16, PointField.INT32: np.int32, PointField.UINT32: np.uint32,
    PointField.FLOAT32: np.float32, PointField.FLOAT64: np.float64,
}


def stamp_to_ns(stamp) -> int:
    """``builtin_interfaces/Time`` -> integer nanoseconds (exact; floats lose precision)."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(stamp_ns: int) -> Time:
    """Integer nanoseconds -> ``builtin_interfaces/Time`` (inverse of :func:`stamp_to_ns`)."""
    return Time(sec=int(stamp_ns // 1_000_000_000), nanosec=int(stamp_ns % 1_000_000_000))


def rgb_to_image(rgb: np.ndarray, header, encoding: str = 'rgb8') -> Image:
    """``[H, W, 3]`` uint8 RGB -> Image in ``rgb8`` or ``bgr8``."""
    if encoding not in ('rgb8', 'bgr8'):
        raise ValueError(f"encoding must be 'rgb8' or 'bgr8', got {encoding!r}")
    pixels = np.ascontiguousarray(rgb if encoding == 'rgb8' else rgb[:, :, ::-1])
    return Image(header=header, height=pixels.shape[0], width=pixels.shape[1],
                 encoding=encoding, is_bigendian=False, step=pixels.shape[1] * 3,
                 data=pixels.tobytes())


def depth_to_image(depth: np.ndarray, header, encoding: str = '32FC1') -> Image:
    """``[H, W]`` metres (0 = none) -> depth Image, as drivers send it: ``32FC1`` metres with
    NaN where there is no depth, or ``16UC1`` whole millimetres with 0 there (REP-118; depth
    beyond 65.535 m does not fit and reads as none)."""
    depth = np.asarray(depth)
    if encoding == '32FC1':  # values as given (tests send inf on purpose), no data -> NaN
        pixels = np.where(depth > 0, depth, np.nan).astype('<f4')
    elif encoding == '16UC1':
        has_data = np.isfinite(depth) & (depth > 0)
        millimetres = np.round(np.where(has_data, depth, 0.0).astype(np.float64) * 1000.0)
        pixels = np.where(millimetres <= np.iinfo(np.uint16).max, millimetres, 0).astype('<u2')
    else:
        raise ValueError(f"depth encoding must be '32FC1' or '16UC1', got {encoding!r}")
    return Image(header=header, height=pixels.shape[0], width=pixels.shape[1],
                 encoding=encoding, is_bigendian=False, step=pixels.shape[1] * pixels.itemsize,
                 data=pixels.tobytes())


def K_to_camera_info(K: np.ndarray, height: int, width: int, header) -> CameraInfo:
    """Pinhole CameraInfo without distortion for intrinsics ``K`` ``[3, 3]``."""
    projection = np.zeros((3, 4))
    projection[:, :3] = K
    return CameraInfo(header=header, height=int(height), width=int(width),
                      distortion_model='plumb_bob', d=[0.0] * 5,
                      k=[float(v) for v in np.ravel(K)],
                      r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                      p=[float(v) for v in projection.ravel()])


def image_to_array(msg: Image) -> np.ndarray:
    """Raw pixels of an Image as ``[H, W]`` or ``[H, W, C]`` in native byte order.

    Raises:
        InputError: ``encoding`` (unsupported), ``empty`` (zero size), ``step`` (step shorter
            than a row) or ``size`` (buffer length != step * height).
    """
    if msg.encoding not in _ALL_ENCODINGS:
        raise InputError(f'unsupported image encoding {msg.encoding!r}; supported: '
                         f'{sorted(_ALL_ENCODINGS)}', 'encoding', actual=msg.encoding,
                         expected=sorted(_ALL_ENCODINGS))
    dtype, channels = _ALL_ENCODINGS[msg.encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height == 0 or width == 0:
        raise InputError(f'empty image ({height}x{width})', 'empty', actual=(height, width))
    row_bytes = width * channels * np.dtype(dtype).itemsize
    if step < row_bytes:
        raise InputError(f'image step {step} is shorter than one {msg.encoding} row of width '
                         f'{width} ({row_bytes} bytes)', 'step', actual=step, expected=row_bytes)
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    if buf.size != step * height:
        raise InputError(f'image data has {buf.size} bytes, expected step*height = '
                         f'{step}*{height} = {step * height}', 'size', actual=buf.size,
                         expected=step * height)
    # Drop row padding, then reinterpret the bytes of each row as pixels.
    rows = buf.reshape(height, step)[:, :row_bytes]
    wire = np.dtype(dtype).newbyteorder('>' if msg.is_bigendian else '<')
    pixels = np.ascontiguousarray(rows).view(wire).astype(dtype, copy=False)
    return pixels.reshape(height, width, channels) if channels > 1 else pixels.reshape(
        height, width)


def image_to_rgb(msg: Image) -> np.ndarray:
    """Colour or mono Image -> ``[H, W, 3]`` uint8 RGB (owned copy).

    mono16 keeps the 8 most significant bits, as cv_bridge's ``rgb8`` conversion does.
    """
    if msg.encoding not in COLOR_ENCODINGS:
        raise InputError(f'image encoding {msg.encoding!r} is not a colour/mono encoding; '
                         f'supported: {sorted(COLOR_ENCODINGS)}', 'encoding',
                         actual=msg.encoding, expected=sorted(COLOR_ENCODINGS))
    pixels = image_to_array(msg)
    if msg.encoding == 'mono16':
        pixels = (pixels >> 8).astype(np.uint8)
    if pixels.ndim == 2:
        return np.repeat(pixels[:, :, None], 3, axis=2)
    if msg.encoding.startswith('bgr'):
        return np.ascontiguousarray(pixels[:, :, 2::-1])
    return np.ascontiguousarray(pixels[:, :, :3])


def image_to_depth(msg: Image) -> np.ndarray:
    """Depth Image -> ``[H, W]`` float32 metres (z), NaN where there is no measurement.

    ``16UC1``/``mono16`` are millimetres with 0 = no measurement (REP-118); ``32FC1`` is metres
    with NaN/inf/<= 0 = no measurement.

    Raises:
        InputError: ``encoding``, ``empty``, ``step``, ``size`` as :func:`image_to_array`;
            ``depth_invalid`` when not a single pixel holds a finite positive depth.
    """
    if msg.encoding not in DEPTH_ENCODINGS:
        raise InputError(f'depth encoding {msg.encoding!r} not supported; supported: '
                         f'{sorted(DEPTH_ENCODINGS)}', 'encoding', actual=msg.encoding,
                         expected=sorted(DEPTH_ENCODINGS))
    raw = image_to_array(msg)
    depth = raw.astype(np.float32) * (1e-3 if raw.dtype == np.uint16 else 1.0)
    depth[~(np.isfinite(depth) & (depth > 0))] = np.nan
    if not np.isfinite(depth).any():
        raise InputError('depth image has no finite positive pixel (all NaN/inf/zero)',
                         'depth_invalid')
    return depth


def camera_info_to_K(msg: CameraInfo, image_shape: tuple[int, int] | None = None) -> np.ndarray:
    """CameraInfo -> ``[3, 3]`` float64 intrinsics K (pixels, pixel centres at integers).

    Args:
        msg: the CameraInfo paired with an image.
        image_shape: ``(H, W)`` of that image; when the CameraInfo states a non-zero size it
            must match (a mismatch means K belongs to another resolution), and the principal
            point must lie inside it.

    Raises:
        CalibrationError: ``calibration_size`` for the size mismatch, else the reasons of
            :func:`~pointmap_ros.geometry.camera.intrinsics_from_camera_info` (the one
            validation of K), e.g. ``calibration_zero`` for an uncalibrated driver.
    """
    if image_shape is not None and msg.width and msg.height and (
            (int(msg.height), int(msg.width)) != tuple(image_shape)):
        raise CalibrationError(f'CameraInfo is for {msg.height}x{msg.width} (HxW) but the image '
                               f'is {image_shape[0]}x{image_shape[1]}', 'calibration_size')
    height, width = image_shape if image_shape is not None else (None, None)
    return intrinsics_from_camera_info(msg.k, width, height)


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """``[..., 3]`` uint8 RGB -> ``[...]`` float32 holding 0x00RRGGBB (PCL/RViz ``rgb``)."""
    rgb = rgb.astype(np.uint32)
    packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    return packed.astype(np.uint32).view(np.float32)


def unpack_rgb(packed: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_rgb`: ``[...]`` float32 -> ``[..., 3]`` uint8."""
    bits = np.ascontiguousarray(packed, dtype=np.float32).view(np.uint32)
    return np.stack([(bits >> 16) & 255, (bits >> 8) & 255, bits & 255], -1).astype(np.uint8)


def _structured_to_cloud(arr: np.ndarray, header) -> PointCloud2:
    """``[H, W]`` structured float32 array -> organized, little-endian PointCloud2."""
    fields = [PointField(name=name, offset=arr.dtype.fields[name][1],
                         datatype=PointField.FLOAT32, count=1) for name in arr.dtype.names]
    height, width = arr.shape
    # No copy on little-endian hosts (the common case); tobytes() below is the one copy.
    little = np.ascontiguousarray(arr.astype(arr.dtype.newbyteorder('<'), copy=False))
    return PointCloud2(header=header, height=height, width=width, fields=fields,
                       is_bigendian=False, point_step=arr.dtype.itemsize,
                       row_step=arr.dtype.itemsize * width, data=little.tobytes(),
                       is_dense=False)


def _strided(stride: int, *arrays: np.ndarray) -> list[np.ndarray]:
    return [a[::stride, ::stride] for a in arrays]


def points_to_cloud(points: np.ndarray, rgb: np.ndarray, confidence: np.ndarray,
                    valid: np.ndarray, header, stride: int = 1) -> PointCloud2:
    """Organized ``x y z rgb confidence`` cloud (all FLOAT32, offsets 0/4/8/12/16).

    Args:
        points: ``[H, W, 3]`` float, in the frame named by ``header.frame_id``.
        rgb: ``[H, W, 3]`` uint8 colours of the same pixels.
        confidence: ``[H, W]`` float model confidence (>= 1 for DUSt3R-family models).
        valid: ``[H, W]`` bool; invalid pixels get NaN x/y/z (``is_dense`` is False).
        header: copied verbatim (stamp of the source image).
        stride: keep every ``stride``-th row and column (cloud stays organized).
    """
    points, rgb, confidence, valid = _strided(stride, points, rgb, confidence, valid)
    arr = np.empty(valid.shape, dtype=[('x', 'f4'), ('y', 'f4'), ('z', 'f4'), ('rgb', 'f4'),
                                       ('confidence', 'f4')])
    xyz = np.where(valid[..., None], points, np.nan).astype(np.float32, copy=False)
    arr['x'], arr['y'], arr['z'] = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    arr['rgb'] = pack_rgb(rgb)
    arr['confidence'] = confidence
    return _structured_to_cloud(arr, header)


def flow_to_cloud(points: np.ndarray, flow: np.ndarray, valid: np.ndarray, header,
                  stride: int = 1) -> PointCloud2:
    """Organized ``x y z vx vy vz`` cloud (FLOAT32, offsets 0..20); NaN where invalid.

    ``flow`` is ``[H, W, 3]`` in the header frame; its unit is the caller's (see
    docs/ros_interface.md: m/s, or model units per frame gap when not metric/timed).
    """
    points, flow, valid = _strided(stride, points, flow, valid)
    arr = np.empty(valid.shape, dtype=[(n, 'f4') for n in ('x', 'y', 'z', 'vx', 'vy', 'vz')])
    xyz = np.where(valid[..., None], points, np.nan)
    vel = np.where(valid[..., None], flow, np.nan)
    for k, name in enumerate('xyz'):
        arr[name] = xyz[..., k]
        arr[f'v{name}'] = vel[..., k]
    return _structured_to_cloud(arr, header)


def cloud_to_array(msg: PointCloud2) -> np.ndarray:
    """Decode a PointCloud2 by its declared fields and offsets -> ``[height, width]`` record
    array (native byte order). Works for any field layout, padding and row padding."""
    byte_order = '>' if msg.is_bigendian else '<'
    names, formats, offsets = [], [], []
    for f in msg.fields:
        base = np.dtype(_POINTFIELD_DTYPES[f.datatype]).newbyteorder(byte_order)
        names.append(f.name)
        formats.append(base if f.count == 1 else (base, (f.count,)))
        offsets.append(f.offset)
    dtype = np.dtype({'names': names, 'formats': formats, 'offsets': offsets,
                      'itemsize': msg.point_step})
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    rows = buf[:msg.row_step * msg.height].reshape(msg.height, msg.row_step)
    rows = np.ascontiguousarray(rows[:, :msg.point_step * msg.width])
    out = rows.view(dtype).reshape(msg.height, msg.width)
    return out.astype(out.dtype.newbyteorder('='))


def _array_to_image(pixels: np.ndarray, encoding: str, header) -> Image:
    pixels = np.ascontiguousarray(pixels)
    height, width = pixels.shape[:2]
    return Image(header=header, height=height, width=width, encoding=encoding,
                 is_bigendian=sys.byteorder == 'big', step=pixels.strides[0],
                 data=pixels.tobytes())


def mask_to_image(mask: np.ndarray, header) -> Image:
    """``[H, W]`` bool -> ``mono8`` Image, 255 = dynamic, 0 = static or invalid."""
    return _array_to_image(np.where(mask, 255, 0).astype(np.uint8), 'mono8', header)


def instance_ids_to_image(ids: np.ndarray, header) -> Image:
    """``[H, W]`` int track ids -> ``32SC1`` Image (0 = static, k = TrackedObject.id)."""
    return _array_to_image(ids.astype(np.int32), INSTANCE_ENCODING, header)


def _quaternion(R: np.ndarray) -> Quaternion:
    x, y, z, w = rotmat_to_quat_xyzw(np.asarray(R, dtype=np.float64))
    return Quaternion(x=float(x), y=float(y), z=float(z), w=float(w))


def matrix_to_pose(T: np.ndarray) -> Pose:
    """``[4, 4]`` rigid transform -> Pose (quaternion x, y, z, w)."""
    pose = Pose()
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in T[:3, 3])
    pose.orientation = _quaternion(T[:3, :3])
    return pose


def matrix_to_transform(T_parent_child: np.ndarray, stamp, parent: str,
                        child: str) -> TransformStamped:
    """``T_parent_child`` ``[4, 4]`` (maps child-frame points into parent) -> TransformStamped."""
    msg = TransformStamped()
    msg.header.stamp = stamp
    msg.header.frame_id = parent
    msg.child_frame_id = child
    t = T_parent_child[:3, 3]
    msg.transform = Transform(translation=Vector3(x=float(t[0]), y=float(t[1]), z=float(t[2])),
                              rotation=_quaternion(T_parent_child[:3, :3]))
    return msg


def transform_to_matrix(transform: Transform) -> np.ndarray:
    """Transform -> ``[4, 4]`` float64 (inverse of :func:`matrix_to_transform`'s payload)."""
    q = transform.rotation
    T = np.eye(4)
    T[:3, :3] = quat_xyzw_to_rotmat(np.array([q.x, q.y, q.z, q.w]))
    T[:3, 3] = [transform.translation.x, transform.translation.y, transform.translation.z]
    return T


def objects_to_msg(objects, header, metric_scale: bool):
    """Tracked objects (``tracking.tracker.TrackedObject``) -> ``TrackedObjectArray``.

    Poses and twists are in ``header.frame_id`` (the world frame). The message classes come
    from the colcon overlay (``msg/``), imported here so the rest of this module works
    without it.
    """
    from pointmap_ros.msg import TrackedObject, TrackedObjectArray
    items = []
    for obj in objects:
        item = TrackedObject(id=int(obj.track_id), pose=matrix_to_pose(obj.T_world_obj),
                             point_count=int(obj.point_count), confidence=float(obj.confidence),
                             is_rigid=bool(obj.is_rigid),
                             rigid_residual=float(obj.rigid_residual),
                             metric_scale=bool(metric_scale), age=int(obj.age))
        item.twist.linear = Vector3(**dict(zip('xyz', map(float, obj.linear_velocity))))
        item.twist.angular = Vector3(**dict(zip('xyz', map(float, obj.angular_velocity))))
        item.extent = Vector3(**dict(zip('xyz', map(float, obj.extent))))
        items.append(item)
    return TrackedObjectArray(header=header, metric_scale=bool(metric_scale), objects=items)
