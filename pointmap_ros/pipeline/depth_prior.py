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
  pose ``T_i_j``; the measured points enter as ``T_i_j X_j`` (``X_j`` camera j's
  back-projected depth). With the correspondence stage's optical flow the pose comes from
  the sensor alone (:func:`depth_odometry`: rigid RANSAC between ``X_j(v)`` and
  ``X_i(v + F_ji(v))``, moving objects are its outliers). Without flow, the network's map
  holds it implicitly: a similarity ``X_j ~ s R P_j(t_j) + t`` between that map and ``X_j``
  (RANSAC Umeyama on per-pixel correspondences, no matching; every pixel of a same-time map
  obeys it, moving objects included, since both sides show the same instant). Holes take
  the network's map under the similarity that carries it onto the measured points in
  camera i. Exact for exact maps in both cases. (With depth, Procrustes has the same points
  in both frames, which PnP was chosen over it for lacking: docs/pipeline.md.)
- The cross-time maps are only aligned (``P_i(t_j)`` scaled by ``s_i``, ``P_j(t_i)`` under
  image j's similarity): no depth image shows image i's pixels at t_j. With correspondences
  they are rebuilt from the fused same-time maps afterwards anyway.

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

from pointmap_ros.geometry.alignment import ransac_umeyama, umeyama
from pointmap_ros.geometry.camera import pixel_grid, project, unproject, unproject_at
from pointmap_ros.geometry.pointmap import depth_edges, valid_mask
from pointmap_ros.geometry.transforms import se3_apply, se3_from_rt
from pointmap_ros.pipeline.correspondence import PixelFlow, sample_map
from pointmap_ros.types import DynamicPointMaps

__all__ = ['DepthFusion', 'reliable_depth', 'fuse_depth_prior', 'depth_odometry']

#: A depth image with fewer reliable pixels than this (on the statistics' grid) is not
#: fused: too few for a robust scale and pose.
MIN_RELIABLE_PIXELS = 64

#: RANSAC inlier distance of the similarity fits of a network map onto measured points, as
#: a fraction of their median depth: wide enough for a network's map error (a few per
#: cent), narrow enough to ignore its outliers.
POSE_INLIER_REL = 0.05

#: RANSAC inlier distance of depth odometry, as a fraction of the median depth: two
#: measurements of one static point differ by the sensor noise of both (1 % each), while
#: a moving object moves more between frames than this.
ODOMETRY_INLIER_REL = 0.03

#: Refits of depth odometry on its tight inliers, each selecting them under the last fit:
#: the first fit still leans towards the slow movers it let in, so the next selection is
#: sharper. A box moving 3 cm before a wall, 1 % depth noise: pose error 21 mm with the 3D
#: test alone, 5 mm after one refit with the image test, 2 mm after two (the wall's noise
#: floor); on validation a third took the moving pixels' flow error 0.235 -> 0.233 of zero
#: flow's (0.246 after one).
ODOMETRY_REFITS = 3

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


def fuse_depth_prior(maps: DynamicPointMaps, depth_i: np.ndarray, depth_j: np.ndarray,
                     K: np.ndarray, confident_i: np.ndarray, confident_j: np.ndarray,
                     min_m: float, max_m: float, edge_rel: float, measured_confidence: float,
                     pixel_flow: PixelFlow | None = None, stride: int = 1,
                     seed: int = 0) -> DepthFusion | None:
    """The pair's maps with both depth images fused in (module docstring); None when either
    image has fewer than :data:`MIN_RELIABLE_PIXELS` reliable, confident pixels (the pair
    then stays as the network gave it).

    Args:
        maps: the engine's maps of the pair (any units).
        depth_i, depth_j: ``[H, W]`` metric z of image i (older) and image j (current).
        K: ``[3, 3]`` intrinsics of both images at model resolution (one camera).
        confident_i, confident_j: ``[H, W]`` bool network pixels trusted for the scale and
            alignment fits (the pipeline's confidence gate of ``P_i(t_i)`` / ``P_j(t_j)``).
        min_m, max_m, edge_rel: :func:`reliable_depth`.
        measured_confidence: the least confidence a measured point gets.
        pixel_flow: the pair's optical flow when the correspondence stage runs: the relative
            pose then comes from the two depth images alone (:func:`depth_odometry`), not
            from the network's map.
        stride: the scale and pose fits use every ``stride``-th pixel (the work grid).
        seed: RANSAC seed (deterministic).
    """
    reliable_i, reliable_j = (reliable_depth(depth, min_m, max_m, edge_rel)
                              for depth in (depth_i, depth_j))
    net_i, net_j = maps.pts_i_ti, maps.pts_j_tj
    fit_i = (reliable_i & confident_i & valid_mask(net_i))[::stride, ::stride]
    fit_j = (reliable_j & confident_j & np.isfinite(net_j).all(axis=-1))[::stride, ::stride]
    if min(np.count_nonzero(fit_i), np.count_nonzero(fit_j)) < MIN_RELIABLE_PIXELS:
        return None
    scale_i = float(np.median(depth_i[::stride, ::stride][fit_i]
                              / net_i[::stride, ::stride, 2][fit_i]))
    measured_points_i, measured_points_j = (unproject(depth, K).astype(np.float32)
                                            for depth in (depth_i, depth_j))
    T_i_j = _relative_pose(net_j, fit_j, depth_i, reliable_i, measured_points_j, reliable_j,
                           K, pixel_flow, stride, seed)
    measured_j_in_i = _apply(T_i_j, measured_points_j)
    # The network's image-j maps into the measured camera-i frame (scale, and with
    # odometry also the network's own pose error), so filled holes join without a step.
    network_to_metric = _robust_similarity(net_j[::stride, ::stride][fit_j],
                                           measured_j_in_i[::stride, ::stride][fit_j], seed)
    scale_j = float(np.cbrt(np.linalg.det(network_to_metric[:3, :3])))
    pts_i_ti, conf_i_ti = _fill(measured_points_i, reliable_i, net_i * np.float32(scale_i),
                                maps.conf_i_ti, measured_confidence)
    pts_j_tj, conf_j_tj = _fill(measured_j_in_i, reliable_j, _apply(network_to_metric, net_j),
                                maps.conf_j_tj, measured_confidence)
    fused = dataclasses.replace(
        maps, pts_i_ti=pts_i_ti, conf_i_ti=conf_i_ti, pts_j_tj=pts_j_tj, conf_j_tj=conf_j_tj,
        pts_i_tj=maps.pts_i_tj * np.float32(scale_i),
        pts_j_ti=_apply(network_to_metric, maps.pts_j_ti), metric=True)
    return DepthFusion(fused, scale_i, scale_j, T_i_j, reliable_i, reliable_j)


def _relative_pose(net_j: np.ndarray, fit_j: np.ndarray, depth_i: np.ndarray,
                   reliable_i: np.ndarray, measured_points_j: np.ndarray,
                   reliable_j: np.ndarray, K: np.ndarray, pixel_flow: PixelFlow | None,
                   stride: int, seed: int) -> np.ndarray:
    """``T_i_j``: from the two depth images and the flow when there is flow (and enough
    consistent correspondences), else the network's pose, the similarity of its ``P_j(t_j)``
    to camera j's measured points (``fit_j``: the strided pixels trusted for it)."""
    if pixel_flow is not None:
        T_i_j = depth_odometry(depth_i, reliable_i, measured_points_j, reliable_j, K,
                               pixel_flow, stride, seed)
        if T_i_j is not None:
            return T_i_j
    fit = _robust_similarity(net_j[::stride, ::stride][fit_j],
                             measured_points_j[::stride, ::stride][fit_j], seed)
    return np.linalg.inv(_rigid_part(fit))


def depth_odometry(depth_i: np.ndarray, reliable_i: np.ndarray, points_j: np.ndarray,
                   reliable_j: np.ndarray, K: np.ndarray, pixel_flow: PixelFlow,
                   stride: int = 1, seed: int = 0) -> np.ndarray | None:
    """``T_i_j`` ``[4, 4]`` (metres) from two depth images and their optical flow, or None
    with fewer than :data:`MIN_RELIABLE_PIXELS` consistent correspondences.

    Image j's measured point at ``v`` and image i's at ``v + F_ji(v)`` are the same
    material point; a rigid RANSAC fit over them is the camera's motion wherever the scene
    is static, and moving objects are its outliers (RGB-D odometry: the sensor's geometry,
    independent of the network's map). Outliers are judged in 3D and in the image: an
    object moving less per frame than the sensor's noise along the ray passes any 3D test,
    but the flow sees it move across the ray (docs/pipeline.md, depth prior step 3). Image
    i is read at the sub-pixel target as inverse depth (affine across a plane, so bilinear
    reading is exact there; nearest across a depth jump) and back-projected along the
    target's own ray.

    Args:
        depth_i: ``[H, W]`` image i's depth; reliable_i its reliable pixels.
        points_j: ``[H, W, 3]`` image j's back-projected depth; reliable_j its reliable pixels.
        K: ``[3, 3]`` intrinsics (one camera).
        pixel_flow: the pair's flow (``backward``: image j -> image i).
    """
    inverse_i = np.where(reliable_i, np.float32(1) / np.where(reliable_i, depth_i, 1),
                         np.float32(np.nan)).astype(np.float32)
    # sample_map treats channel 2 as depth for its surface test: inverse depth works alike.
    layers = np.repeat(inverse_i[..., None], 3, axis=-1)
    sampled_inverse = sample_map(layers, pixel_flow.backward)[..., 2]
    target = pixel_grid(*depth_i.shape, dtype=np.float32) + pixel_flow.backward
    with np.errstate(divide='ignore', invalid='ignore'):
        sampled_i = unproject_at(target, 1 / sampled_inverse, K).astype(np.float32)
    usable = (reliable_j & pixel_flow.backward_valid
              & np.isfinite(sampled_i).all(axis=-1))[::stride, ::stride]
    if np.count_nonzero(usable) < MIN_RELIABLE_PIXELS:
        return None
    src = points_j[::stride, ::stride][usable].astype(np.float64)
    dst = sampled_i[::stride, ::stride][usable].astype(np.float64)
    matched = target[::stride, ::stride][usable].astype(np.float64)
    step = max(1, len(src) // POSE_FIT_POINTS)
    src, dst, matched = src[::step], dst[::step], matched[::step]
    fit = ransac_umeyama(src, dst, ODOMETRY_INLIER_REL * float(np.median(dst[:, 2])),
                         seed=seed)
    if np.count_nonzero(fit.inliers) < MIN_RELIABLE_PIXELS // 4:
        return None
    # The fixed threshold must admit the noise of a real sensor; with a better one it also
    # admits slow movers and reading errors at silhouettes. The refits keep the points
    # within 3x the last inliers' median residual twice over: in 3D, which adapts to the
    # noise actually present, and in the image (the point under the fit against the pixel
    # the flow matched it to). A sensor's noise lies along the viewing ray, where it hides
    # an object's motion of a few millimetres per frame, but the optical flow sees that
    # motion across the ray: such points passed the 3D test alone, dragged the camera's
    # motion along and shortened the objects' flow relative to the camera.
    T_i_j, kept = fit.T, fit.inliers
    for _ in range(ODOMETRY_REFITS):
        moved = se3_apply(T_i_j, src)
        distance = np.linalg.norm(moved - dst, axis=-1)
        reprojection = np.linalg.norm(project(moved, K) - matched, axis=-1)
        tight = ((distance < 3 * float(np.median(distance[kept])))
                 & (reprojection < 3 * float(np.median(reprojection[kept]))))
        if np.count_nonzero(tight) < MIN_RELIABLE_PIXELS // 4:
            break
        R, t, _ = umeyama(src[tight], dst[tight])
        T_i_j, kept = se3_from_rt(R, t), tight
    return T_i_j


def _robust_similarity(src: np.ndarray, dst: np.ndarray, seed: int) -> np.ndarray:
    """``[4, 4]`` similarity ``dst ~ s R src + t`` (RANSAC Umeyama, inliers within
    :data:`POSE_INLIER_REL` of the median depth of ``dst``) on at most
    :data:`POSE_FIT_POINTS` of the ``[N, 3]`` correspondences."""
    src, dst = src.astype(np.float64), dst.astype(np.float64)
    step = max(1, len(src) // POSE_FIT_POINTS)
    fit = ransac_umeyama(src[::step], dst[::step],
                         POSE_INLIER_REL * float(np.median(dst[:, 2])), with_scale=True,
                         seed=seed)
    return fit.T


def _rigid_part(similarity: np.ndarray) -> np.ndarray:
    """The rigid motion of a ``[4, 4]`` similarity (its rotation block holds ``s R``)."""
    rigid = similarity.copy()
    rigid[:3, :3] /= np.cbrt(np.linalg.det(similarity[:3, :3]))
    return rigid


def _apply(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` float32 points under the ``[4, 4]`` transform ``T`` (float64 maths)."""
    flat = points.reshape(-1, 3).astype(np.float64)
    return (flat @ T[:3, :3].T + T[:3, 3]).reshape(points.shape).astype(np.float32)


def _fill(measured: np.ndarray, reliable: np.ndarray, network: np.ndarray,
          confidence: np.ndarray, measured_confidence: float
          ) -> tuple[np.ndarray, np.ndarray]:
    """Measured points where reliable, the (aligned) network's elsewhere; confidences."""
    points = np.where(reliable[..., None], measured, network)
    conf = np.where(reliable, np.maximum(confidence, np.float32(measured_confidence)),
                    confidence)
    return points.astype(np.float32), conf.astype(np.float32)
