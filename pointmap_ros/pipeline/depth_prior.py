"""Depth-prior stage: a registered metric depth image fused into a pair's same-time maps.

An RGB-D camera measures what the network can only regress: the z of every pixel it sees,
in metres. Where its depth is reliable it replaces the network's same-time points; where it
is not (holes, out of range, flying pixels at depth edges) the network's points fill in,
scaled to the depth first so the filled regions join the measured ones without a step.
The pair's maps are then metric, and the correspondence stage, which reads the cross-time
maps ``P_i(t_j)(u) = P_j(t_j)(u + F_ij(u))`` out of the fused same-time maps
(pipeline/correspondence.py), turns them into metric scene flow.

Which maps are fused, and how (all four maps of a pair are in camera i's frame):

- ``P_i(t_i)``, image i's pixels at its own time, *is* camera i's back-projected depth:
  ``d_i(u) K^-1 [u, v, 1]``. Exact. Network points fill the rest, multiplied by
  ``s_i = median(d_i / z_i)`` over reliable, confident pixels (the only unknown between a
  network map in its own camera frame and the depth is a scale).
- ``P_j(t_j)``, image j's pixels at t_j but in camera i's frame, needs the pair's relative
  pose, which the network's map holds implicitly: a similarity ``X_j ~ s_j R P_j(t_j) + t``
  between that map and camera j's back-projected depth ``X_j`` is fitted (RANSAC Umeyama on
  per-pixel correspondences, so no matching; every pixel of a same-time map obeys it, moving
  objects included, since both sides show the same instant). The measured points enter as
  ``R^T (X_j - t)``, the holes as ``s_j P_j(t_j)``. Exact for exact maps; with a network's
  maps the pose is the network's, the geometry the sensor's. (With depth, Procrustes has the
  same points in both frames, which PnP was chosen over it for lacking: docs/pipeline.md.)
- The cross-time maps are only scaled (``P_i(t_j)`` by ``s_i``, ``P_j(t_i)`` by ``s_j``):
  no depth image shows image i's pixels at t_j. With correspondences they are rebuilt from
  the fused same-time maps afterwards anyway.

Reliable depth (:func:`reliable_depth`): finite, inside ``[min_m, max_m]``, and not at a
depth edge, where sensors produce flying pixels (a mix of foreground and background): a
pixel whose inverse depth bends by more than ``edge_rel`` along its row or column is
rejected (both sides of a step, one pixel wide; the network fills them). Inverse depth, not
depth: it is affine across any plane, so a floor seen at a grazing angle is not an edge
(a 3x3 depth-spread test rejected half of a 96x128 room view at 5 %).

Confidence: a measured point gets ``max(network confidence, measured_confidence)`` (the
pipeline passes its confidence threshold), so the gate never drops a measurement.

Conventions: depth ``[H, W]`` float32 metres of z, registered to the model image, 0 or NaN =
no data; K ``[3, 3]`` at the model resolution, pixel centres at integers; functions take
values and return new values.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from pointmap_ros.geometry.alignment import ransac_umeyama
from pointmap_ros.geometry.pointmap import depth_edges, valid_mask
from pointmap_ros.types import DynamicPointMaps

__all__ = ['DepthFusion', 'reliable_depth', 'backproject', 'fuse_depth_prior']

#: A depth image with fewer reliable pixels than this (on the statistics' grid) is not
#: fused: too few for a robust scale and pose.
MIN_RELIABLE_PIXELS = 64

#: RANSAC inlier distance of the pose fit, as a fraction of the median measured depth: wide
#: enough for a network's map error (a few per cent), narrow enough to ignore its outliers.
POSE_INLIER_REL = 0.05

#: Correspondences the pose fit uses at most (a regular subsample; the fit has 7 unknowns).
POSE_FIT_POINTS = 4000


@dataclass(frozen=True)
class DepthFusion:
    """A pair's maps after the depth prior.

    Attributes:
        maps: the four maps in metres (``metric=True``), camera i's frame.
        scale_i, scale_j: metres per network unit of image i's / image j's maps.
        T_i_j: ``[4, 4]`` float64 pose of camera j in camera i (metres) fitted for
            ``P_j(t_j)``.
        measured_i, measured_j: ``[H, W]`` bool pixels whose same-time point is the depth's.
    """

    maps: DynamicPointMaps
    scale_i: float
    scale_j: float
    T_i_j: np.ndarray
    measured_i: np.ndarray
    measured_j: np.ndarray


def reliable_depth(depth: np.ndarray, min_m: float, max_m: float,
                   edge_rel: float) -> np.ndarray:
    """``[H, W]`` bool: depth pixels fit to replace a network point (module docstring).

    Args:
        depth: ``[H, W]`` metres, 0 / NaN / inf = no data.
        min_m, max_m: the sensor's trusted range (both inclusive).
        edge_rel: :func:`~pointmap_ros.geometry.pointmap.depth_edges` (inverse-depth
            bend along a row or column, relative).
    """
    depth = np.asarray(depth, np.float32)
    ok = np.isfinite(depth) & (depth >= min_m) & (depth <= max_m) & (depth > 0)
    return ok & ~depth_edges(depth, edge_rel)


def backproject(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` float32 camera-frame points ``z K^-1 [u, v, 1]`` of a z-depth image
    (NaN depth gives NaN points)."""
    height, width = depth.shape
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    skew = K[0, 1]
    y = (v - cy) / fy
    x = (u - cx - skew * y) / fx
    z = depth.astype(np.float64)
    return np.stack([x * z, y * z, z], axis=-1).astype(np.float32)


def fuse_depth_prior(maps: DynamicPointMaps, depth_i: np.ndarray, depth_j: np.ndarray,
                     K: np.ndarray, confident_i: np.ndarray, confident_j: np.ndarray,
                     min_m: float, max_m: float, edge_rel: float,
                     measured_confidence: float, stride: int = 1,
                     seed: int = 0) -> DepthFusion | None:
    """The pair's maps with both depth images fused in (module docstring); None when either
    image has fewer than :data:`MIN_RELIABLE_PIXELS` reliable, confident pixels or the pose
    fit fails (the pair then stays as the network gave it).

    Args:
        maps: the engine's maps of the pair (any units).
        depth_i, depth_j: ``[H, W]`` metric z of image i (older) and image j (current).
        K: ``[3, 3]`` intrinsics of both images at model resolution (one camera).
        confident_i, confident_j: ``[H, W]`` bool network pixels trusted for the scale and
            pose fits (the pipeline's confidence gate of ``P_i(t_i)`` / ``P_j(t_j)``).
        min_m, max_m, edge_rel: :func:`reliable_depth`.
        measured_confidence: the least confidence a measured point gets.
        stride: the scale and pose fits use every ``stride``-th pixel (the work grid).
        seed: RANSAC seed (deterministic).
    """
    reliable_i = reliable_depth(depth_i, min_m, max_m, edge_rel)
    reliable_j = reliable_depth(depth_j, min_m, max_m, edge_rel)
    net_i, net_j = maps.pts_i_ti, maps.pts_j_tj
    fit_i = (reliable_i & confident_i & valid_mask(net_i))[::stride, ::stride]
    fit_j = (reliable_j & confident_j & np.isfinite(net_j).all(axis=-1))[::stride, ::stride]
    if min(np.count_nonzero(fit_i), np.count_nonzero(fit_j)) < MIN_RELIABLE_PIXELS:
        return None
    scale_i = float(np.median(depth_i[::stride, ::stride][fit_i]
                              / net_i[::stride, ::stride, 2][fit_i]))
    measured_points_i = backproject(depth_i, K)
    measured_points_j = backproject(depth_j, K)
    # Similarity network P_j(t_j) (camera i, network units) -> camera j's measured points.
    src = net_j[::stride, ::stride][fit_j].astype(np.float64)
    dst = measured_points_j[::stride, ::stride][fit_j].astype(np.float64)
    step = max(1, len(src) // POSE_FIT_POINTS)
    median_depth = float(np.median(dst[:, 2]))
    fit = ransac_umeyama(src[::step], dst[::step], POSE_INLIER_REL * median_depth,
                         with_scale=True, seed=seed)
    scale_j = float(fit.scale)
    if not (np.isfinite(scale_j) and scale_j > 0 and np.count_nonzero(fit.inliers) >= 3):
        return None
    R = fit.T[:3, :3] / scale_j  # the rotation block of a similarity holds s R
    t = fit.T[:3, 3]
    T_i_j = np.eye(4)
    T_i_j[:3, :3], T_i_j[:3, 3] = R.T, -R.T @ t
    # Measured points of image j in camera i: R^T (X_j - t).
    measured_j_in_i = ((measured_points_j.reshape(-1, 3).astype(np.float64) - t) @ R
                       ).reshape(measured_points_j.shape).astype(np.float32)
    pts_i_ti, conf_i_ti = _fill(measured_points_i, reliable_i, net_i, scale_i, maps.conf_i_ti,
                                measured_confidence)
    pts_j_tj, conf_j_tj = _fill(measured_j_in_i, reliable_j, net_j, scale_j, maps.conf_j_tj,
                                measured_confidence)
    fused = dataclasses.replace(
        maps, pts_i_ti=pts_i_ti, conf_i_ti=conf_i_ti, pts_j_tj=pts_j_tj, conf_j_tj=conf_j_tj,
        pts_i_tj=maps.pts_i_tj * np.float32(scale_i), pts_j_ti=maps.pts_j_ti * np.float32(scale_j),
        metric=True)
    return DepthFusion(fused, scale_i, scale_j, T_i_j, reliable_i, reliable_j)


def _fill(measured: np.ndarray, reliable: np.ndarray, network: np.ndarray, scale: float,
          confidence: np.ndarray, measured_confidence: float
          ) -> tuple[np.ndarray, np.ndarray]:
    """Measured points where reliable, the network's scaled ones elsewhere; confidences."""
    points = np.where(reliable[..., None], measured, network * np.float32(scale))
    conf = np.where(reliable, np.maximum(confidence, np.float32(measured_confidence)),
                    confidence)
    return points.astype(np.float32), conf.astype(np.float32)
