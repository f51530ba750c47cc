"""Flow stage: the scene flow the pipeline publishes for the current pixels.

With network cross-time maps it is the shortest-gap pair's ``P_j(t_j) - P_j(t_i)``. With
correspondences, per pixel: exactly zero on static pixels (the camera explains their image
motion: known, not missing); the instance's fitted rigid motion on rigid instances (affine on
one that stretches as a whole); its locally rigid motion (rigid pieces blended by distance)
on deforming ones; unknown on moving pixels outside every fitted instance (the pipeline
passes only the fits of instances that are moving objects,
:func:`~pointmap_ros.pipeline.instances.moving_object_fits`). On pairs whose depths
nothing vouches for, moving pixels keep only their flow across the viewing ray
(:func:`across_rays`, ``PipelineConfig.flow_along_ray``).
"""

from __future__ import annotations

import numpy as np

from pointmap_ros.geometry.pointmap import set_invalid_nan
from pointmap_ros.pipeline.pair import PairView
from pointmap_ros.tracking.rigid_motion import RigidMotion

__all__ = ['FLOW_ALONG_RAY', 'published_flow', 'rigid_flow', 'across_rays',
           'keeps_flow_along_ray']

#: ``PipelineConfig.flow_along_ray``: publish the moving pixels' flow along their viewing rays
#: only where the pair's depths are measured or trusted, or always.
FLOW_ALONG_RAY = ('trusted', 'always')


def published_flow(flow_pair: PairView, R_cam_ref: np.ndarray, time_unit: float,
                   valid: np.ndarray, motion: np.ndarray, labels: np.ndarray,
                   fits: dict[int, RigidMotion]) -> tuple[np.ndarray, np.ndarray]:
    """(flow ``[H, W, 3]`` in the current camera, NaN where unknown; ``flow_valid``).

    Args:
        flow_pair: the pair whose flow is published (its reference frame's camera).
        R_cam_ref: rotates that frame into the current camera.
        time_unit: the flow is divided by this (the pair's gap in s for flow per second,
            else 1).
        valid: ``[H, W]`` current pixels with a point.
        motion: ``[H, W]`` the final motion mask.
        labels: ``[H, W]`` instance labels (0 = none).
        fits: motions of the instances that publish them (empty with network cross-time
            maps); the pixels of the other instances are moving, with unknown flow.

    Flow is known where the pixel is valid and its pair gated it at both times; with
    correspondences, as the module docstring says.
    """
    flow_valid = valid & flow_pair.valid_flow
    flow_ref = flow_pair.flow_j
    if flow_pair.pixel_flow is not None:
        # Zero, with the moving pixels' rows written (fewer than the static ones; an
        # [H, W, 1] mask broadcast over the channels costs more).
        moving_rows = np.flatnonzero(motion)
        flow_ref = np.zeros(flow_pair.flow_j.shape, np.float32)
        rigid_rows = rigid_flow(labels, fits, flow_pair).reshape(-1, 3)
        flow_ref.reshape(-1, 3)[moving_rows] = rigid_rows[moving_rows]
        # A moving pixel outside every fitted instance (a blob too small to be an object,
        # mostly at occlusion borders) has only its own correspondence, whose 3D error was
        # 7x its true flow on the held-out scenes: unknown is more honest than that.
        rigid = np.isin(labels, [label for label, fit in fits.items() if fit.is_rigid])
        deforming = np.isin(labels, [label for label, fit in fits.items()
                                     if not fit.is_rigid])
        flow_valid = valid & (~motion | rigid | (deforming & np.isfinite(flow_ref[..., 0])))
    flow = flow_ref @ np.ascontiguousarray(R_cam_ref.T / time_unit, dtype=np.float32)
    return set_invalid_nan(flow, flow_valid), flow_valid


def rigid_flow(labels: np.ndarray, fits: dict[int, RigidMotion],
               view: PairView) -> np.ndarray:
    """``view``'s scene flow ``[H, W, 3]`` (its reference camera's frame) with every
    instance's pixels moved by the instance's fitted motion.

    Correspondence flow is a difference of two points read at two pixels, so each pixel
    carries the optical flow's error times the depth, worst at the object's borders, and
    that error is spatially correlated (the flow is smooth, and fails in patches). A rigid
    object moves as one: its fit (:func:`~pointmap_ros.pipeline.instances.fit_instances`)
    averages those errors over hundreds of pixels, and gives every pixel of the instance the
    flow ``x - T^-1 x`` (``x`` = its point now; ``T`` affine where the fit kept one, a
    pulsing object). Instances that are not rigid (a waving
    sheet) move with their locally rigid fit, rigid pieces blended by distance
    (:class:`~pointmap_ros.tracking.rigid_motion.BlendedMotion`; their single fit where
    they have none): on the held-out scenes' deforming instances its error was 0.39 of
    their true flow, against 0.71 for the mean of the correspondences within 7 pixels.
    """
    flow = view.flow_j.copy()
    flat_flow, flat_labels = flow.reshape(-1, 3), labels.ravel()
    target = view.j_tj.reshape(-1, 3)
    for label, fit in fits.items():
        members = np.flatnonzero(flat_labels == label)
        moved = fit.displacement(target[members].astype(np.float64))
        flat_flow[members] = moved.astype(np.float32)
    return flow


def keeps_flow_along_ray(policy: str, measured_depth: bool, maps_trusted: bool) -> bool:
    """Whether a pair's moving pixels keep their flow along the viewing ray under
    ``policy`` (:data:`FLOW_ALONG_RAY`): always, or where a depth sensor measured the pair's
    depths or the camera test trusted them (:func:`across_rays` says why)."""
    return policy == 'always' or measured_depth or maps_trusted


def across_rays(flow: np.ndarray, points_cam: np.ndarray, moving: np.ndarray) -> np.ndarray:
    """``flow`` ``[H, W, 3]`` (current camera) without its component along each ``moving``
    pixel's viewing ray (through its point ``points_cam``, ``[H, W, 3]``, same camera).

    Across the ray a moving pixel's 3D flow is its optical flow times its depth: a depth
    error scales it. Along the ray it is the difference of the pair's two depths of the
    object, and a network's depth of a moving object errs independently in each frame by
    more than the object moves (the shipped model's depth of moving pixels was 27 % off on
    validation, at 2-4 m against a few centimetres per frame). That component is then
    noise several times the size of the motion, and zero is the better estimate: on the
    validation sequences the shipped model's moving-pixel flow error fell 1.84 -> 1.31 of
    zero flow's (static camera 1.99 -> 1.05) on the pairs whose depths the camera test did
    not trust (docs/pipeline.md, *Cross-time maps from correspondences*, step 9).
    """
    # Only the moving rows change (a small part of the image): per frame, no full-size pass.
    rows = np.flatnonzero(moving)
    ray = points_cam.reshape(-1, 3)[rows]
    ray = ray / np.linalg.norm(ray, axis=-1, keepdims=True)
    moved = flow.reshape(-1, 3)[rows]
    across = flow.astype(np.float32, copy=True)
    across.reshape(-1, 3)[rows] = moved - np.sum(moved * ray, axis=-1, keepdims=True) * ray
    return across
