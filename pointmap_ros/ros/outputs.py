"""One pipeline result -> every output message: the ROS side of a frame's way out.

Nothing here publishes or keeps state: :func:`build_outputs` takes a
:class:`~pointmap_ros.pipeline.PipelineOutput`, the source image's header, the frozen
:class:`OutputOptions` and the marker ids drawn for the previous frame, and returns the
messages keyed by output name (:func:`output_types`), the TF transforms and the marker ids
now drawn. The live node and ``pointmap-replay`` reach it through
:class:`~pointmap_ros.ros.camera_stream.CameraStream`, so both emit byte-identical messages.
Every header carries the *source image's* stamp.

Also here: the naming rules of outputs (:func:`output_topic`: ``~/<key>`` for one camera,
``~/<camera>/<key>`` for several; :func:`camera_name`, :func:`camera_prefix`) and the
published world axes (:func:`world_rotation`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from geometry_msgs.msg import TransformStamped
from sensor_msgs.msg import Image, PointCloud2
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from pointmap_ros.frames import object_frame
from pointmap_ros.ros import conversions as conv
from pointmap_ros.ros.markers import objects_to_markers

__all__ = ['OutputOptions', 'OutputMessages', 'output_types', 'output_topic', 'camera_name',
           'camera_prefix', 'flow_units', 'build_outputs', 'output_transforms',
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


def flow_units(metric_scale: bool, per_second: bool) -> str:
    """Human-readable units of lengths and of flow/velocities, for diagnostics and docs."""
    length = 'm' if metric_scale else 'model units (unknown scale)'
    return f"{length}; flow {'per second' if per_second else 'per frame gap'}"




def output_transforms(output, stamp, *, world_frame: str, camera_frame: str,
                      object_prefix: str, camera: bool = True,
                      objects: bool = True) -> list[TransformStamped]:
    """Transforms of one :class:`~pointmap_ros.pipeline.PipelineOutput`, stamped ``stamp``.

    ``world -> camera_frame`` is ``output.T_world_cam`` (the *estimated* optical frame); each
    object gives ``world -> <object_prefix><track_id>`` from ``T_world_obj``.
    """
    transforms = []
    if camera:
        transforms.append(conv.matrix_to_transform(output.T_world_cam, stamp, world_frame,
                                                   camera_frame))
    if objects:
        transforms.extend(
            conv.matrix_to_transform(obj.T_world_obj, stamp, world_frame,
                                     object_frame(object_prefix, obj.track_id))
            for obj in output.objects)
    return transforms


@dataclass(frozen=True)
class OutputOptions:
    """How one camera's results become messages: the output parameters, read once.

    Built by :meth:`from_parameters` whenever the parameter values change (several of these
    are dynamic), never read key by key from the raw parameter dict while building outputs.

    Attributes:
        prefix: ``''`` for a single camera, else ``'<camera_name>/'`` (topics and frames).
        world_frame: fixed frame of the trajectory, objects and world clouds (unprefixed).
        world_frame_convention: one of :data:`WORLD_CONVENTIONS`.
        points_frame: ``'camera'`` (the image's optical frame) or ``'world'``.
        cloud_stride: keep every n-th row and column of the organized clouds.
        camera_frame: child frame of the estimated camera pose; ``''`` means
            ``'<prefix><image frame_id>_estimated'``.
        object_frame_prefix: TF child frame of object k is ``<prefix><object_frame_prefix><k>``.
        publish_camera_tf, publish_object_tf: which transforms go to ``/tf``.
        flow_per_second: flow and velocities are per second (else per frame gap); units only.
    """

    prefix: str = ''
    world_frame: str = 'world'
    world_frame_convention: str = 'rep103'
    points_frame: str = 'camera'
    cloud_stride: int = 1
    camera_frame: str = ''
    object_frame_prefix: str = 'object_'
    publish_camera_tf: bool = True
    publish_object_tf: bool = True
    flow_per_second: bool = True

    @classmethod
    def from_parameters(cls, values: Mapping[str, Any], prefix: str = '') -> 'OutputOptions':
        """The options of the node parameter ``values`` (validated by ``params.validate``)
        for the camera with topic/frame ``prefix``."""
        return cls(prefix=prefix, world_frame=values['world_frame'],
                   world_frame_convention=values['world_frame_convention'],
                   points_frame=values['points_frame'],
                   cloud_stride=int(values['cloud_stride']),
                   camera_frame=values['camera_frame'],
                   object_frame_prefix=values['object_frame_prefix'],
                   publish_camera_tf=bool(values['publish_camera_tf']),
                   publish_object_tf=bool(values['publish_object_tf']),
                   flow_per_second=bool(values['flow_per_second']))

    def __post_init__(self):
        # Checked here as well as by params.validate: options built in code (tests, tools)
        # must not fail later, in the middle of a frame.
        world_rotation(self.world_frame_convention)
        if self.points_frame not in ('camera', 'world'):
            raise ValueError(f"points_frame must be 'camera' or 'world', "
                             f'got {self.points_frame!r}')
        if self.cloud_stride < 1:
            raise ValueError(f'cloud_stride must be >= 1, got {self.cloud_stride}')

    def camera_child_frame(self, image_frame_id: str) -> str:
        """TF child frame of the estimated camera pose for images in ``image_frame_id``."""
        return self.camera_frame or f'{self.prefix}{image_frame_id}_estimated'


@dataclass(frozen=True)
class OutputMessages:
    """Every message of one processed frame.

    Attributes:
        messages: ``{output name: message}`` in :func:`output_types` order.
        transforms: the TransformStamped list for ``/tf`` (empty when TF is off).
        marker_ids: marker ids drawn now; pass them with the camera's next result so markers
            of vanished tracks are deleted.
    """

    messages: dict[str, Any]
    transforms: list[TransformStamped]
    marker_ids: frozenset[int]


def build_outputs(result, image_header: Header, options: OutputOptions,
                  previous_marker_ids: frozenset[int] = frozenset()) -> OutputMessages:
    """All messages of one :class:`~pointmap_ros.pipeline.PipelineOutput`.

    Args:
        result: the pipeline output.
        image_header: header of the source image (stamp and optical frame_id are copied).
        options: output options of the camera.
        previous_marker_ids: marker ids drawn for this camera's previous result.
    """
    result = _rotate_world(result, world_rotation(options.world_frame_convention))
    stamp = image_header.stamp
    world = Header(stamp=stamp, frame_id=f'{options.prefix}{options.world_frame}')
    camera = Header(stamp=stamp, frame_id=image_header.frame_id)
    if options.points_frame == 'world':
        cloud_header, points = world, result.points_world
        rotation_world_cam = np.asarray(result.T_world_cam, dtype=np.float32)[:3, :3]
        flow = result.flow @ rotation_world_cam.T
    else:
        cloud_header, points, flow = camera, result.points_cam, result.flow
    stride = options.cloud_stride
    dynamic = result.valid & result.motion_mask
    markers, marker_ids = objects_to_markers(
        result.objects, world, set(previous_marker_ids),
        up=world_up(options.world_frame_convention))
    messages = {
        'points': conv.points_to_cloud(points, result.image, result.confidence, result.valid,
                                       cloud_header, stride),
        'scene_flow': conv.flow_to_cloud(points, flow, result.flow_valid, cloud_header, stride),
        # Unorganized 1 x N cloud of the moving pixels only.
        'dynamic_points': conv.points_to_cloud(
            points[dynamic][None], result.image[dynamic][None],
            result.confidence[dynamic][None], np.ones((1, int(dynamic.sum())), bool),
            cloud_header),
        'motion_mask': conv.mask_to_image(result.motion_mask, camera),
        'instance_ids': conv.instance_ids_to_image(result.instance_ids, camera),
        'objects': conv.objects_to_msg(result.objects, world, result.metric_scale),
        'markers': markers,
    }
    transforms = output_transforms(
        result, stamp, world_frame=world.frame_id,
        camera_frame=options.camera_child_frame(image_header.frame_id),
        object_prefix=f'{options.prefix}{options.object_frame_prefix}',
        camera=options.publish_camera_tf, objects=options.publish_object_tf)
    return OutputMessages(messages, transforms, frozenset(marker_ids))
