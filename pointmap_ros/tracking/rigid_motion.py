"""Rigid motion of one object instance between two times (weighted Umeyama in RANSAC), its
refinement in each correspondence's own metric, the affine motion of an instance that
stretches as a whole, and the locally rigid motion of a deforming instance (rigid pieces
blended by distance).

A DPM pair gives, for the same pixels, their points at two times in one frame
(``P_j(t_i)`` and ``P_j(t_j)``), i.e. exact 3D correspondences: no matching is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pointmap_ros.geometry.alignment import ransac_umeyama
from pointmap_ros.geometry.transforms import (
    rotvec_to_rotmat, se3_apply, se3_from_rt, se3_inverse, skew)

__all__ = ['MAX_PIECE_TEAR_SIZES', 'RigidMotion', 'BlendedMotion', 'fit_rigid_motion',
           'fit_blended_motion', 'fit_affine_motion', 'trimmed_rms', 'object_size',
           'refine_rigid_motion']

#: :func:`fit_affine_motion` fits the directions in which the points spread at least about
#: this fraction of their mean spread (standard deviations); a flat or thin instance keeps
#: the rigid rotation across itself, where its points cannot tell a stretch from noise.
AFFINE_MIN_SPREAD_REL = 0.1

#: :func:`fit_blended_motion` keeps a piece's own motion only where it moves the piece's
#: centre to within this many instance sizes (RMS radius) of where the instance's single
#: rigid fit moves it. Between two frames a deforming object bends by a fraction of its
#: size; a piece that leaves it by more has been fitted to correspondences that read another
#: surface (a fast object's optical flow lost on part of it), whose consensus RANSAC finds
#: as readily as a true one: on held-out scenes, pieces turned 120 degrees and moved 3-4 m
#: with their 0.3 m objects moving 0.15 m.
MAX_PIECE_TEAR_SIZES = 1.0


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
        blended: the locally rigid motion of an instance that is not rigid, where it was
            fitted (:func:`fit_blended_motion`).
        affine: ``[4, 4]`` the affine motion (time a to b) of a rigid-judged instance whose
            residual it explains (:func:`fit_affine_motion`): a pulsing or stretching
            object, whose deformation is small next to its size.
    """

    T: np.ndarray
    rms: float
    residual_rel: float
    inlier_ratio: float
    is_rigid: bool
    size: float
    blended: 'BlendedMotion | None' = None
    affine: np.ndarray | None = None

    def displacement(self, points_b: np.ndarray) -> np.ndarray:
        """``[N, 3]`` how far each point (time b) moved since time a, under the most
        detailed motion fitted: the blended pieces of a non-rigid instance, else the affine
        motion where one was kept, else ``T``."""
        points_b = np.asarray(points_b, np.float64)
        if not self.is_rigid and self.blended is not None:
            return self.blended.displacement(points_b)
        earlier = (se3_inverse(self.T) if self.affine is None
                   else np.linalg.inv(self.affine))
        return points_b - se3_apply(earlier, points_b)


@dataclass(frozen=True)
class BlendedMotion:
    """Locally rigid motion of a deforming instance: rigid pieces blended by distance.

    A waving sheet or a walking person is not one rigid body, but each small part of it
    moves almost rigidly (the local rigidity Dynamic 3D Gaussians builds on). A point ``x``
    (time b) moves with the pieces' motions weighted by a Gaussian of its distance to each
    piece's centre (linear blend skinning): ``x - sum_k w_k(x) T_k^-1 x``.

    Attributes:
        centres: ``[K, 3]`` the pieces' centroids at time b.
        motions: ``[K, 4, 4]`` each piece's motion (time a to b).
        radius: blending scale (RMS distance of the points to their piece's centre).
    """

    centres: np.ndarray
    motions: np.ndarray
    radius: float

    def displacement(self, points_b: np.ndarray) -> np.ndarray:
        """``[N, 3]`` how far each point (time b) moved since time a (NaN for a point
        that is not finite)."""
        points_b = np.asarray(points_b, np.float64)
        result = np.full_like(points_b, np.nan)
        finite = np.all(np.isfinite(points_b), axis=1)
        points = points_b[finite]
        distance_sq = np.sum(np.square(points[:, None, :] - self.centres[None]), axis=-1)
        # Relative to each point's nearest piece, so far points do not underflow to 0/0.
        nearest = distance_sq.min(axis=1, keepdims=True)
        weights = np.exp(-0.5 * (distance_sq - nearest) / self.radius ** 2)
        weights /= weights.sum(axis=1, keepdims=True)
        rotations, translations = self.motions[:, :3, :3], self.motions[:, :3, 3]
        earlier = (np.einsum('kji,nj->nki', rotations, points)  # T_k^-1 x = R^T (x - t)
                   - np.einsum('kji,kj->ki', rotations, translations)[None])
        result[finite] = points - np.einsum('nk,nki->ni', weights, earlier)
        return result


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
    rms = trimmed_rms(res.residuals)
    size = object_size(pts_b)
    rel = max(rms - 1.5 * noise_rms, 0.0) / size if size > 0 else 0.0
    ratio = float(np.mean(res.inliers))
    is_rigid = rel <= rigid_residual_rel and ratio >= 0.5
    if motion_residual_frac is not None and is_rigid:
        displacement = np.sqrt(np.mean(np.sum(np.square(pts_b - pts_a), axis=1)))
        is_rigid = max(rms - 1.5 * noise_rms, 0.0) <= motion_residual_frac * displacement
    return RigidMotion(T=res.T, rms=rms, residual_rel=rel, inlier_ratio=ratio,
                       is_rigid=bool(is_rigid), size=size)


def trimmed_rms(residuals: np.ndarray) -> float:
    """RMS of the smallest 90 % of ``[N]`` residual lengths (a few outliers do not count,
    a deformation of the whole does)."""
    keep = max(1, int(np.ceil(0.9 * len(residuals))))
    return float(np.sqrt(np.mean(np.square(np.partition(residuals, keep - 1)[:keep]))))


def fit_affine_motion(pts_a: np.ndarray, pts_b: np.ndarray, rigid: np.ndarray,
                      threshold: float, information: np.ndarray | None = None,
                      min_spread_rel: float = AFFINE_MIN_SPREAD_REL, iterations: int = 10
                      ) -> np.ndarray:
    """``[4, 4]`` affine motion ``pts_b ~ A pts_a + t`` of the correspondences within
    ``threshold`` of the ``rigid`` motion (its inliers), started from ``rigid``.

    An object that pulses or stretches (a breathing ball, an inflating bag, a limb whose
    reconstruction stretches) moves affinely as a whole; a rigid fit leaves that in its
    residual. Minimises ``sum_k e_k^T W_k e_k``, ``e_k = A a_k + t - b_k``, ``W_k`` =
    ``information`` (identity when None; :func:`refine_rigid_motion`'s metric, so a match
    slid along an image stripe does not pass for a stretch): linear in the 12 unknowns,
    solved ``iterations`` times from ``rigid``, each step damped by ``min_spread_rel^2``
    times the linear part's mean diagonal in the normal matrix. Directions the points
    hardly span (a flat instance's normal, a stripe's direction) then stay at ``rigid``;
    the others reach least squares (exact for exact affine correspondences that span
    space: a direction whose normal-matrix value is ``1 / d`` times the damping keeps
    ``(d / (1 + d))^iterations`` of the start's error). Returns ``rigid`` when fewer than
    12 inliers (4 per unknown row) remain.
    """
    pts_a = np.asarray(pts_a, np.float64)
    pts_b = np.asarray(pts_b, np.float64)
    rigid = np.asarray(rigid, np.float64)
    inliers = np.linalg.norm(se3_apply(rigid, pts_a) - pts_b, axis=1) < threshold
    if np.count_nonzero(inliers) < 12:
        return rigid
    # Centred on the source's mean, so the linear part and the translation decouple.
    centre = pts_a[inliers].mean(axis=0)
    source, target = pts_a[inliers] - centre, pts_b[inliers]
    weights = (np.broadcast_to(np.eye(3), (len(source), 3, 3)) if information is None
               else np.asarray(information, np.float64)[inliers])
    # e = A s + c - b is linear in x = (A row-major, c): e = J x - b, J_k = [I (x) s_k^T | I].
    jacobian = np.zeros((len(source), 3, 12))
    for row in range(3):
        jacobian[:, row, 3 * row:3 * row + 3] = source
        jacobian[:, row, 9 + row] = 1.0
    weighted_jacobian = np.einsum('nij,njk->nik', weights, jacobian)
    normal = np.einsum('nji,njk->ik', jacobian, weighted_jacobian)
    normal_target = np.einsum('nji,nj->i', weighted_jacobian, target)
    # Relative to the linear part's mean diagonal (the mean squared spread of the points
    # in the metric): the translation's diagonal, one per point, is far larger.
    damping = min_spread_rel ** 2 * max(np.trace(normal[:9, :9]) / 9.0, 1e-300) * np.eye(12)
    unknowns = np.concatenate([rigid[:3, :3].ravel(), se3_apply(rigid, centre[None])[0]])
    for _ in range(iterations):
        unknowns = unknowns + np.linalg.solve(normal + damping,
                                              normal_target - normal @ unknowns)
    motion = np.eye(4)
    motion[:3, :3] = unknowns[:9].reshape(3, 3)
    motion[:3, 3] = unknowns[9:] - motion[:3, :3] @ centre
    return motion


def fit_blended_motion(pts_a: np.ndarray, pts_b: np.ndarray, threshold: float,
                       pieces: int, fallback: np.ndarray, iterations: int = 64,
                       seed: int = 0, min_points: int = 20) -> BlendedMotion:
    """:class:`BlendedMotion` of a deforming instance from ``[N, 3]`` correspondences.

    The points at time b are split into at most ``pieces`` compact pieces (k-means with a
    deterministic farthest-point start) of at least ``min_points`` each; each piece gets
    its own RANSAC + Umeyama fit with inlier distance ``threshold``. A correspondence's
    error is spatially correlated (optical flow is smooth), so a piece of a few hundred
    points averages far more of it than a small window would. ``fallback`` (the
    instance's single rigid fit) stands in for a piece of fewer than 3 points, for a piece
    whose motion tears it away from the instance (:data:`MAX_PIECE_TEAR_SIZES`), and for the
    whole instance when it is too small to split.
    """
    pts_a = np.asarray(pts_a, np.float64)
    pts_b = np.asarray(pts_b, np.float64)
    fallback = np.asarray(fallback, np.float64)
    count = int(min(pieces, len(pts_b) // max(min_points, 1)))
    if count < 2:
        return BlendedMotion(pts_b.mean(axis=0)[None], fallback[None],
                             max(object_size(pts_b), 1e-9))
    assignment, centres = _kmeans(pts_b, count)
    motions = np.stack([
        ransac_umeyama(pts_a[assignment == piece], pts_b[assignment == piece], threshold,
                       iterations=iterations, seed=seed + piece).T
        if np.count_nonzero(assignment == piece) >= 3 else fallback
        for piece in range(count)])
    # Where each motion puts the piece's centre at time a: a piece torn away from the
    # instance's rigid motion by more than the instance's size gets that motion instead.
    earlier = np.einsum('kji,kj->ki', motions[:, :3, :3], centres - motions[:, :3, 3])
    earlier_rigid = se3_apply(se3_inverse(fallback), centres)
    torn = (np.linalg.norm(earlier - earlier_rigid, axis=1)
            > MAX_PIECE_TEAR_SIZES * object_size(pts_b))
    motions[torn] = fallback
    radius = np.sqrt(np.mean(np.sum(np.square(pts_b - centres[assignment]), axis=1)))
    return BlendedMotion(centres, motions, max(float(radius), 1e-9))


def _kmeans(points: np.ndarray, count: int, rounds: int = 10
            ) -> tuple[np.ndarray, np.ndarray]:
    """(assignment ``[N]``, centres ``[count, 3]``) of Lloyd's k-means, started from
    farthest-point samples (deterministic; a cluster Lloyd empties keeps its centre and may
    stay empty, which :func:`fit_blended_motion` covers with its fallback)."""
    centres = [points[np.argmin(np.sum(np.square(points - points.mean(0)), axis=1))]]
    distance_sq = np.sum(np.square(points - centres[0]), axis=1)
    for _ in range(count - 1):
        centres.append(points[np.argmax(distance_sq)])
        distance_sq = np.minimum(distance_sq, np.sum(np.square(points - centres[-1]), axis=1))
    centres = np.array(centres)
    for _ in range(rounds):
        assignment = np.argmin(np.sum(np.square(points[:, None] - centres[None]), axis=-1),
                               axis=1)
        updated = np.array([points[assignment == k].mean(0) if np.any(assignment == k)
                            else centres[k] for k in range(count)])
        if np.allclose(updated, centres):
            break
        centres = updated
    assignment = np.argmin(np.sum(np.square(points[:, None] - centres[None]), axis=-1), axis=1)
    return assignment, centres


def refine_rigid_motion(T: np.ndarray, pts_a: np.ndarray, pts_b: np.ndarray,
                        information: np.ndarray, scale: float, iterations: int = 5,
                        damping: float = 1e-3) -> np.ndarray:
    """``T`` refined so that ``pts_b ~ T pts_a`` in each pair's own metric.

    Minimises ``sum_k rho(e_k^T W_k e_k)`` with ``e_k = T a_k - b_k``: Gauss-Newton on a
    left perturbation ``T <- (R(w), v) T`` (``xi = (v, w)``, ``R`` Rodrigues), Cauchy
    weights of scale ``scale`` (iteratively reweighted), Levenberg damping of ``damping``
    times the mean diagonal of the normal matrix. With ``W_k = I`` it is a robust
    least-squares rigid fit (Umeyama's cost); a
    ``W_k`` that vanishes along a direction ignores the residual along it. Directions no
    point constrains (all ``W_k`` blind to them) keep the initial ``T``: the damping holds
    the step there at zero.

    Args:
        T: ``[4, 4]`` initial motion (e.g. :func:`fit_rigid_motion`'s).
        pts_a, pts_b: ``[N, 3]`` correspondences.
        information: ``[N, 3, 3]`` symmetric positive semi-definite ``W_k`` (the inverse of
            each correspondence's error covariance, up to one common factor).
        scale: residual length (in the ``W`` metric) at which a pair's weight halves.
        iterations: Gauss-Newton steps.
        damping: relative Levenberg damping.

    Returns:
        ``[4, 4]`` float64 refined ``T`` (``T`` itself for fewer than 3 pairs).
    """
    if len(pts_a) < 3:
        return T
    pts_a = np.asarray(pts_a, np.float64)
    pts_b = np.asarray(pts_b, np.float64)
    information = np.asarray(information, np.float64)
    for _ in range(iterations):
        moved = se3_apply(T, pts_a)
        residual = moved - pts_b
        weighted = np.einsum('nij,nj->ni', information, residual)
        squared = np.einsum('ni,ni->n', residual, weighted)
        robust = 1.0 / (1.0 + squared / scale ** 2)  # Cauchy IRLS weights
        # Jacobian of the perturbed T a at xi = 0: [I | -[Ta]x].
        jacobian = np.zeros((len(moved), 3, 6))
        jacobian[:, :, :3] = np.eye(3)
        jacobian[:, :, 3:] = -skew(moved)
        weighted_jacobian = robust[:, None, None] * np.einsum('nij,njk->nik', information,
                                                              jacobian)
        normal = np.einsum('nji,njk->ik', jacobian, weighted_jacobian)
        gradient = np.einsum('nji,nj->i', weighted_jacobian, residual)
        normal += damping * max(np.trace(normal) / 6.0, 1e-30) * np.eye(6)
        step = -np.linalg.solve(normal, gradient)
        T = se3_from_rt(rotvec_to_rotmat(step[3:]), step[:3]) @ T
    return T
