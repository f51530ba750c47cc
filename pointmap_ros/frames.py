"""TF frame names shared by every producer of transforms: the reconstruction node, the
synthetic camera node and the bag writer. Plain strings, no ROS import."""

from __future__ import annotations

__all__ = ['WORLD_FRAME', 'ODOM_FRAME', 'CAMERA_OPTICAL_FRAME', 'GROUND_TRUTH_OBJECT_PREFIX',
           'object_frame']

#: Default fixed frame (parameter ``world_frame``) and the generated scenes' world.
WORLD_FRAME = 'world'
#: Default odometry frame (REP-105 ``odom``) of the simulated odometry: synthetic camera
#: parameter ``odom_frame``, bags of generated sequences.
ODOM_FRAME = 'odom'
#: Optical frame of generated images (synthetic camera, bags of generated sequences).
CAMERA_OPTICAL_FRAME = 'camera_optical_frame'
#: Ground-truth objects of generated scenes are ``gt_object_<id>``, so they never collide
#: with the reconstruction's estimated ``<object_frame_prefix><track id>`` frames.
GROUND_TRUTH_OBJECT_PREFIX = 'gt_object_'


def object_frame(prefix: str, object_id: int) -> str:
    """Child frame of one object, e.g. ``object_frame('object_', 3) == 'object_3'``."""
    return f'{prefix}{int(object_id)}'
