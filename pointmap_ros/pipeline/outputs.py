"""What goes into and comes out of :class:`~pointmap_ros.pipeline.DynamicReconPipeline`.

Also the conversion of window units to metres once a metric scale is known (``scaled*``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pointmap_ros.tracking.tracker import TrackedObject

__all__ = ['FrameInput', 'PipelineOutput', 'scaled', 'scaled_pose', 'scaled_object']


@dataclass
class FrameInput:
    """One camera frame as received (any size; preprocessing happens in the pipeline).

    Attributes:
        image: ``[h, w, 3]`` uint8 RGB.
        stamp: header stamp, seconds.
        camera_id: stream name; each camera has its own window, keyframes and tracks.
        K: raw ``[3, 3]`` / 9-vector CameraInfo intrinsics of ``image`` or None.
        depth: ``[h, w]`` metric z-depth registered to ``image`` or None.
        T_odom_cam: ``[4, 4]`` pose of the image's optical frame in a fixed odometry frame at
            ``stamp`` (metres; e.g. TF ``odom -> camera_optical``), or None. Only relative
            poses between frames are used, so any fixed odometry frame will do.
    """

    image: np.ndarray
    stamp: float
    camera_id: str = 'cam0'
    K: np.ndarray | None = None
    depth: np.ndarray | None = None
    T_odom_cam: np.ndarray | None = None


@dataclass
class PipelineOutput:
    """Everything published for one processed frame (see docs/architecture.md).

    All maps are ``[H, W, ...]`` at model resolution, float32 unless stated; lengths are
    metres when ``metric_scale`` else model units; poses float64.
    Additions to the documented contract: ``keyframe_points_world`` ``[H, W, 3]`` (when
    ``PipelineConfig.keyframe_tracks``, else None) holds the keyframe's pixels at the current
    time in the world frame: St4RTrack-style long-range 3D tracks; ``flow_valid`` ``[H, W]``
    bool, where ``flow`` is known.

    Masks: ``valid`` marks pixels with a confident point in front of the camera
    (``points_cam``, ``points_world`` and ``confidence`` apply there; the points are NaN
    elsewhere). ``flow_valid`` is a subset of ``valid``: the pixel must also be confident in
    the flow pair's map at the older time; ``flow`` is finite exactly on ``flow_valid`` and
    NaN elsewhere. ``instance_ids`` are within ``valid``; so is ``motion_mask``, except that
    with correspondences it also marks pixels without a confident point that the image-space
    (epipolar) test found moving: a weak model is often unsure exactly of the moving object.
    ``timings_ms`` also has
    ``'pipeline_cpu'``, the thread CPU time of the non-inference stages (robust to a loaded
    machine, unlike the wall-clock stage times). ``skipped_frames``: frames of this camera
    superseded before inference by a newer one (keep-latest ``LatestFrameSlot``), cumulative
    since the camera's first frame or :meth:`DynamicReconPipeline.reset`; ``odometry``: how
    the frame's ``FrameInput.T_odom_cam`` entered its pose (docs/pipeline.md, "Odometry
    prior"): ``'none'`` (no odometry for this frame or its keyframe), ``'fused'`` (odometry
    and maps agreed and were blended), ``'odometry'`` / ``'maps'`` (they disagreed; the one
    that better explains the static pixels' correspondences was used); ``depth_fused``:
    the frame's depth image was fused into its keyframe pair's maps (docs/pipeline.md,
    "Depth prior"; False without depth, with the prior off or too sparse a depth). Other
    drops (bad input, stamps, pose loss) are not counted here.
    """

    stamp: float
    camera_id: str
    frame_index: int
    image: np.ndarray
    K: np.ndarray
    intrinsics_estimated: bool
    points_cam: np.ndarray
    points_world: np.ndarray
    confidence: np.ndarray
    valid: np.ndarray
    flow: np.ndarray
    flow_dt: float
    motion_mask: np.ndarray
    instance_ids: np.ndarray
    T_world_cam: np.ndarray
    keyframe_index: int
    objects: list[TrackedObject]
    metric_scale: bool
    scale: float
    timings_ms: dict
    skipped_frames: int
    keyframe_points_world: np.ndarray | None = None
    flow_valid: np.ndarray | None = None
    odometry: str = 'none'
    depth_fused: bool = False


def scaled(arr: np.ndarray, scale: float) -> np.ndarray:
    """``arr * scale`` (float32), or ``arr`` itself when the scale is 1."""
    return arr if scale == 1.0 else arr * np.float32(scale)


def scaled_pose(T: np.ndarray, scale: float) -> np.ndarray:
    """Copy of pose ``T`` ``[4, 4]`` with its translation multiplied by ``scale``."""
    T = T.copy()
    T[:3, 3] *= scale
    return T


def scaled_object(o: TrackedObject, scale: float) -> TrackedObject:
    """``o`` with pose translation, velocity and extent in the new units (in place)."""
    if scale == 1.0:
        return o
    o.T_world_obj = scaled_pose(o.T_world_obj, scale)
    o.linear_velocity = o.linear_velocity * scale
    o.extent = o.extent * scale
    return o
