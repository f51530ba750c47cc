"""Relative camera pose of a pair from its point maps (PnP-RANSAC, as DUSt3R's PairViewer).

Choice: PnP, not Procrustes. A DPM pair gives ``P_j(t_j)`` -- image j's pixels at its own
time -- already in camera i's frame, and image j's pixel grid is known. Projecting those points
through camera j at the right pose must reproduce the grid, so ``PnP(P_j(t_j), grid_j, K)``
returns ``T_camj_cami`` from a *single* pair. Procrustes would need the same points in camera
j's own frame, which one pair does not contain (it needs the swapped pair, i.e. a second
decoder pass, or a previous estimate). PnP also uses K, so a bad scale in the maps does not
leak into the rotation. ``P_j(t_j)`` is consistent for moving pixels too (they are at t_j in
both), but the network is less reliable on them, so callers pass a static-pixel mask.

Convention: points are in the OpenCV optical frame, pixel centres at integers, poses
``T_<to>_<from>`` float64.
"""

from __future__ import annotations

import cv2
import numpy as np

from pointmap_ros.errors import InputError, PoseError
from pointmap_ros.geometry.camera import pixel_grid
from pointmap_ros.geometry.transforms import (rotvec_to_rotmat, se3_apply, se3_from_rt,
                                              se3_inverse)

__all__ = ['relative_pose_pnp']


def relative_pose_pnp(pts_j_in_i: np.ndarray, K: np.ndarray, mask: np.ndarray | None = None,
                      reprojection_error_px: float = 5.0, iterations: int = 100,
                      max_points: int = 500, refine_points: int = 500,
                      seed: int = 0, stride: int = 1) -> tuple[np.ndarray, int]:
    """``T_cami_camj`` from image j's points expressed in camera i's frame.

    RANSAC (SQPnP minimal solver, as PairViewer) on at most ``max_points`` random pixels, then
    Levenberg-Marquardt refinement on up to ``refine_points`` inliers (this makes exact maps
    give an exact pose rather than the pose of the best minimal sample).

    Args:
        pts_j_in_i: ``[H, W, 3]`` float, ``P_j(t_j)`` in camera i's optical frame.
        K: ``[3, 3]`` intrinsics of camera j at this resolution.
        mask: ``[H, W]`` bool pixels allowed (confident and static); NaN points are skipped.
        reprojection_error_px: RANSAC inlier threshold (DUSt3R: 5 px).
        iterations: RANSAC iterations.
        max_points, refine_points: subsampling caps (speed at 512x288).
        seed: subsampling seed (OpenCV's RANSAC uses its own fixed RNG).
        stride: candidates are every ``stride``-th pixel in both directions (the samples
            are a few hundred anyway; this saves full-size passes). ``mask`` may be given
            at full or at strided size.

    Returns:
        ``(T_cami_camj [4, 4] float64, inlier_count)``.

    Raises:
        InputError: ``pts_j_in_i`` is not ``[H, W, 3]``.
        PoseError: fewer than 6 usable pixels (``'pnp_too_few_points'``) or no RANSAC
            consensus (``'pnp_failed'``): the maps are valid input, the pose is unknown.
    """
    pts = np.asarray(pts_j_in_i)
    if pts.ndim != 3 or pts.shape[2] != 3:
        raise InputError(f'points must be [H, W, 3], got {pts.shape}', 'shape', actual=pts.shape)
    H, W = pts.shape[:2]
    sub = pts[::stride, ::stride]
    if mask is not None and mask.shape != sub.shape[:2]:
        mask = mask[::stride, ::stride]
    z = sub[..., 2]
    ok = np.isfinite(z)  # x, y are checked on the sampled points
    if mask is not None:
        ok &= mask
    # Full-size flat indices of the usable grid pixels (no strided copies of the maps);
    # at stride 1 they are the mask's own flat indices (one pass instead of three).
    if stride == 1:
        idx = np.flatnonzero(ok)
    else:
        rows, cols = np.nonzero(ok)
        idx = rows * (stride * W) + cols * stride
    if len(idx) < 6:
        raise PoseError(f'PnP needs >= 6 usable pixels, got {len(idx)}', 'pnp_too_few_points')
    rng = np.random.default_rng(seed)
    grid = pixel_grid(H, W).reshape(-1, 2)
    flat = pts.reshape(-1, 3)
    sample = idx if len(idx) <= max_points else rng.choice(idx, max_points, replace=False)
    sample = sample[np.isfinite(flat[sample]).all(1)]
    obj = flat[sample].astype(np.float64)
    img = grid[sample]
    K = np.asarray(K, dtype=np.float64)
    found, rvec, tvec, inl = cv2.solvePnPRansac(
        obj, img, K, None, iterationsCount=iterations, reprojectionError=reprojection_error_px,
        flags=cv2.SOLVEPNP_SQPNP)
    if not found or inl is None or len(inl) < 6:
        raise PoseError(f'PnP-RANSAC failed ({0 if inl is None else len(inl)} inliers, '
                        f'need >= 6 of {len(sample)} samples)', 'pnp_failed')
    # Refine on inliers of the full set under the RANSAC pose (capped for speed).
    T_j_i = se3_from_rt(rotvec_to_rotmat(rvec.ravel()), tvec.ravel())
    ref = idx if len(idx) <= refine_points else rng.choice(idx, refine_points, replace=False)
    p = se3_apply(T_j_i, flat[ref].astype(np.float64))                   # [n, 3] in cam j
    with np.errstate(divide='ignore', invalid='ignore'):
        uv = p[:, :2] / p[:, 2:] * K[[0, 1], [0, 1]] + K[:2, 2]
    err = np.linalg.norm(uv - grid[ref], axis=1)
    good = ref[(err < reprojection_error_px) & (p[:, 2] > 0)]  # NaN rows compare False
    if len(good) >= 6:
        rvec, tvec = cv2.solvePnPRefineLM(flat[good].astype(np.float64), grid[good], K, None,
                                          rvec, tvec)
    T_j_i = se3_from_rt(rotvec_to_rotmat(rvec.ravel()), tvec.ravel())
    return se3_inverse(T_j_i), int(max(len(good), len(inl)))
