"""Rigid motion of one object instance between two times (weighted Umeyama in RANSAC).

A DPM pair gives, for the same pixels, their points at two times in one frame
(``P_j(t_i)`` and ``P_j(t_j)``), i.e. exact 3D correspondences: no matching is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pointmap_ros.geometry.alignment import ransac_umeyama

__all__ = ['RigidMotion', 'fit_rigid_motion', 'object_size']


@dataclass
class RigidMotion:
    """Motion ``T`` (``[4, 4]`` float64, maps points at time a to time b, same frame).

    Attributes:
        rms: RMS residual of the best 90 % of *all* points (point units). Inlier-only RMS
            would hide deformation (RANSAC finds the largest rigid part of a bending object);
            trimming 10 % keeps a few outliers from flagging a rigid object.
        residual_rel: ``(rms - 1.5 * noise_rms)+ / size``, the non-rigidity measure.
        inlier_ratio: fraction of points within the RANSAC threshold.
        is_rigid: ``residual_rel <= rigid_residual_rel`` and inliers are the majority.
        size: RMS radius of the points at time b about their centroid.
    """

    T: np.ndarray
    rms: float
    residual_rel: float
    inlier_ratio: float
    is_rigid: bool
    size: float


def object_size(points: np.ndarray) -> float:
    """RMS distance ``[N, 3]`` points have from their centroid (0 for fewer than 2)."""
    if len(points) < 2:
        return 0.0
    d = points - points.mean(0)
    return float(np.sqrt(np.mean(d * d) * 3))


def fit_rigid_motion(pts_a: np.ndarray, pts_b: np.ndarray, weights: np.ndarray | None,
                     threshold: float, rigid_residual_rel: float, iterations: int = 64,
                     seed: int = 0, noise_rms: float = 0.0,
                     motion_residual_frac: float | None = None) -> RigidMotion:
    """Fit ``pts_b ~ T pts_a`` for one instance; ``[N, 3]`` correspondences, N >= 3.

    Args:
        pts_a, pts_b: the instance's points at times a and b (same frame).
        weights: ``[N]`` confidences or None.
        threshold: RANSAC inlier distance (point units).
        rigid_residual_rel: max ``rms / size`` for :attr:`RigidMotion.is_rigid`...
        iterations, seed: RANSAC settings (deterministic).
        noise_rms: ...above the residual that map noise alone explains (RMS of the difference
            of two noisy points), which is allowed on top.
        motion_residual_frac: when given, rigid also needs that residual (noise removed) to
            be at most this fraction of the RMS displacement ``|pts_b - pts_a|``: a waving
            sheet's deviation from one rigid motion is small next to its size but not next
            to how far it moved between two frames.

    Raises:
        InputError: fewer than 3 points (from the alignment).
    """
    res = ransac_umeyama(pts_a, pts_b, threshold, weights, iterations=iterations, seed=seed)
    keep = max(1, int(np.ceil(0.9 * len(res.residuals))))
    r = np.partition(res.residuals, keep - 1)[:keep]  # the smallest 90 %
    rms = float(np.sqrt(np.mean(r ** 2)))
    size = object_size(pts_b)
    rel = max(rms - 1.5 * noise_rms, 0.0) / size if size > 0 else 0.0
    ratio = float(np.mean(res.inliers))
    is_rigid = rel <= rigid_residual_rel and ratio >= 0.5
    if motion_residual_frac is not None and is_rigid:
        displacement = np.sqrt(np.mean(np.sum(np.square(pts_b - pts_a), axis=1)))
        is_rigid = max(rms - 1.5 * noise_rms, 0.0) <= motion_residual_frac * displacement
    return RigidMotion(T=res.T, rms=rms, residual_rel=rel, inlier_ratio=ratio,
                       is_rigid=bool(is_rigid), size=size)
