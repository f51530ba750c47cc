"""One pipeline result -> every output message, shared by the node and ``pointmap-replay``.

Nothing here publishes: :func:`build_outputs` returns the messages keyed by output name
(:func:`output_types`) plus the TF transforms, so the live node and the offline bag writer
emit byte-identical messages. Every header carries the *source image's* stamp.

Also here: :func:`convert_synced`, the decode/validate step of a synchronized input set, and
:func:`output_topic`, the topic naming rule (``~/<key>`` for one camera,
``~/<camera>/<key>`` for several).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
from sensor_msgs.msg import Image, PointCloud2
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from pointmap_ros.errors import InputError
from pointmap_ros.ros import conversions as conv
from pointmap_ros.ros.markers import objects_to_markers
from pointmap_ros.ros.sync import SyncedInput
from pointmap_ros.ros.tf import output_transforms

__all__ = ['OutputState', 'output_types', 'output_topic', 'camera_name',
           'camera_prefix', 'flow_units', 'convert_synced', 'build_outputs',
           'WORLD_CONVENTIONS', 'world_rotation', 'world_up']

#: Axes of the published world frame (parameter ``world_frame_convention``). Both put the
#: origin at the first processed frame's camera. ``rep103``: x forward, y left, z up (REP-103
#: body axes of that camera, so RViz's grid is the floor for a level camera); ``optical``:
#: the camera's optical axes (x right, y down, z forward), the pipeline's own world frame.
WORLD_CONVENTIONS = ('rep103', 'optical')
# Optical (x right, y down, z forward) -> REP-103 (x forward, y left, z up).
_R_REP103_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def world_rotation(convention: str) -> np.ndarray:
    """``[3, 3]`` rotation from the pipeline's (optical) world axes to the published ones."""
    if convention not in WORLD_CONVENTIONS:
        raise ValueError(f'world_frame_convention must be one of {WORLD_CONVENTIONS}, '
                         f'got {convention!r}')
    return _R_REP103_OPTICAL.copy() if convention == 'rep103' else np.eye(3)


def world_up(convention: str) -> tuple[float, float, float]:
    """The published world frame's "up" direction (where marker labels go)."""
    return (0.0, 0.0, 1.0) if convention == 'rep103' else (0.0, -1.0, 0.0)


def _rotate_world(out, R: np.ndarray):
    """Copy of a PipelineOutput with every world-frame quantity rotated by ``R``: camera
    pose, world points, object poses and velocities (camera-frame data are unchanged)."""
    if np.array_equal(R, np.eye(3)):
        return out
    T = np.eye(4)
    T[:3, :3] = R
    Rf = R.astype(np.float32)
    objects = [dataclasses.replace(
        obj, T_world_obj=T @ np.asarray(obj.T_world_obj, dtype=np.float64),
        linear_velocity=R @ np.asarray(obj.linear_velocity, dtype=np.float64),
        angular_velocity=R @ np.asarray(obj.angular_velocity, dtype=np.float64))
        for obj in out.objects]
    return dataclasses.replace(
        out, T_world_cam=T @ np.asarray(out.T_world_cam, dtype=np.float64),
        points_world=np.asarray(out.points_world, dtype=np.float32) @ Rf.T, objects=objects)


def output_types() -> dict[str, type]:
    """Output name -> message class, in publication order (TrackedObjectArray comes from the
    colcon overlay)."""
    from pointmap_ros.msg import TrackedObjectArray
    return {'points': PointCloud2, 'scene_flow': PointCloud2, 'dynamic_points': PointCloud2,
            'motion_mask': Image, 'instance_ids': Image, 'objects': TrackedObjectArray,
            'markers': MarkerArray}


def camera_name(namespace: str) -> str:
    """``'/robot/front_cam'`` -> ``'robot_front_cam'`` (used in topic and frame prefixes)."""
    return namespace.strip('/').replace('/', '_') or 'camera'


def camera_prefix(namespace: str, num_cameras: int) -> str:
    """'' for a single camera, else ``'<camera_name>/'`` (topics and frame names)."""
    return f'{camera_name(namespace)}/' if num_cameras > 1 else ''


def output_topic(node_name: str, prefix: str, key: str) -> str:
    """Fully qualified topic of one output, e.g. ``/dynamic_recon_node/points``."""
    return f"/{node_name.strip('/')}/{prefix}{key}"


@dataclass
class OutputState:
    """What output building remembers per camera between frames (drawn marker ids)."""

    prefix: str = ''
    marker_ids: set[int] = field(default_factory=set)


def flow_units(metric_scale: bool, per_second: bool) -> str:
    """Human-readable units of lengths and of flow/velocities, for diagnostics and docs."""
    length = 'm' if metric_scale else 'model units (unknown scale)'
    return f"{length}; flow {'per second' if per_second else 'per frame gap'}"


def convert_synced(synced: SyncedInput) -> dict:
    """Decode and validate one synchronized set.

    Returns:
        ``{'header', 'stamp_ns', 'rgb' [H, W, 3] uint8, 'K' [3, 3] or None,
        'depth' [H, W] metres or None}``.

    Raises:
        InputError / CalibrationError: with the reason key diagnostics count.
    """
    rgb = conv.image_to_rgb(synced.image)
    K = None if synced.info is None else conv.camera_info_to_K(synced.info, rgb.shape[:2])
    depth = None if synced.depth is None else conv.image_to_depth(synced.depth)
    if depth is not None and depth.shape != rgb.shape[:2]:
        raise InputError(f'depth is {depth.shape[0]}x{depth.shape[1]} but the image is '
                         f'{rgb.shape[0]}x{rgb.shape[1]} (register depth to the colour image)',
                         'size', actual=depth.shape, expected=rgb.shape[:2])
    return {'header': synced.image.header, 'stamp_ns': synced.stamp_ns, 'rgb': rgb, 'K': K,
            'depth': depth}


def build_outputs(out, image_header: Header, values: dict, state: OutputState):
    """All messages of one :class:`~pointmap_ros.pipeline.PipelineOutput`.

    Args:
        out: the pipeline output.
        image_header: header of the source image (stamp and optical frame_id are copied).
        values: node parameter values (points_frame, cloud_stride, frame names, TF toggles,
            world_frame_convention).
        state: per-camera state; its ``marker_ids`` is updated.

    Returns:
        ``(messages, transforms)``: ``{output name: message}`` in :func:`output_types` order
        and the list of TransformStamped for ``/tf``.
    """
    out = _rotate_world(out, world_rotation(values['world_frame_convention']))
    stamp = image_header.stamp
    world = Header(stamp=stamp, frame_id=f"{state.prefix}{values['world_frame']}")
    camera = Header(stamp=stamp, frame_id=image_header.frame_id)
    if values['points_frame'] == 'world':
        cloud_header, points = world, out.points_world
        flow = out.flow @ np.asarray(out.T_world_cam, dtype=np.float32)[:3, :3].T
    else:
        cloud_header, points, flow = camera, out.points_cam, out.flow
    stride = values['cloud_stride']
    dynamic = out.valid & out.motion_mask
    markers, state.marker_ids = objects_to_markers(
        out.objects, world, state.marker_ids, up=world_up(values['world_frame_convention']))
    messages = {
        'points': conv.points_to_cloud(points, out.image, out.confidence, out.valid,
                                       cloud_header, stride),
        'scene_flow': conv.flow_to_cloud(points, flow, out.flow_valid, cloud_header, stride),
        # Unorganized 1 x N cloud of the moving pixels only.
        'dynamic_points': conv.points_to_cloud(
            points[dynamic][None], out.image[dynamic][None], out.confidence[dynamic][None],
            np.ones((1, int(dynamic.sum())), bool), cloud_header),
        'motion_mask': conv.mask_to_image(out.motion_mask, camera),
        'instance_ids': conv.instance_ids_to_image(out.instance_ids, camera),
        'objects': conv.objects_to_msg(out.objects, world, out.metric_scale),
        'markers': markers,
    }
    camera_frame = (values['camera_frame']
                    or f'{state.prefix}{image_header.frame_id}_estimated')
    transforms = output_transforms(
        out, stamp, world_frame=world.frame_id, camera_frame=camera_frame,
        object_prefix=f"{state.prefix}{values['object_frame_prefix']}",
        camera=values['publish_camera_tf'], objects=values['publish_object_tf'])
    return messages, transforms
