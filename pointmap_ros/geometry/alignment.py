"""Weighted rigid / similarity alignment of corresponding 3D point sets, and a RANSAC wrapper.

Convention:
    ``umeyama(src, dst)`` returns ``(R, t, s)`` with ``dst ~ s * R @ src + t``; as a pose this
    is ``T_dst_src`` (it maps points given in the src frame into the dst frame). Inputs are
    ``[N, 3]``; computation is float64 whatever the input dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pointmap_ros.errors import InputError
from pointmap_ros.geometry.transforms import se3_from_rt

__all__ = ['umeyama', 'RansacResult', 'ransac_umeyama']


def umeyama(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None,
            with_scale: bool = False) -> tuple[np.ndarray, np.ndarray, float]:
    """Weighted least-squares ``min sum w |dst - (s R src + t)|^2`` (Umeyama 1991).

    Args:
        src, dst: ``[N, 3]`` corresponding points, N >= 3 (non-collinear for a unique R).
        weights: ``[N]`` non-negative weights (e.g. confidences); default uniform.
        with_scale: also fit a uniform scale ``s`` (else ``s = 1``, i.e. Kabsch).

    Returns:
        ``R`` ``[3, 3]`` (det +1), ``t`` ``[3]``, ``s`` float.

    Raises:
        InputError: mismatched shapes, fewer than 3 points or zero total weight.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 3:
        raise InputError(f'src and dst must both be [N, 3], got {src.shape} and {dst.shape}',
                         'shape', actual=(src.shape, dst.shape))
    if len(src) < 3:
        raise InputError(f'alignment needs >= 3 points, got {len(src)}', 'too_few_points')
    w = np.ones(len(src)) if weights is None else np.asarray(weights, dtype=np.float64)
    wsum = w.sum()
    if not wsum > 0:
        raise InputError(f'alignment weights sum to {wsum}, expected > 0', 'weights')
    w = w / wsum
    mu_s, mu_d = w @ src, w @ dst
    xs, xd = src - mu_s, dst - mu_d
    cov = (xd * w[:, None]).T @ xs  # [3, 3] sum w dst_c src_c^T
    U, S, Vt = np.linalg.svd(cov)
    # Reflection guard: flip the weakest axis so det(R) = +1.
    D = np.ones(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        D[2] = -1.0
    R = (U * D) @ Vt
    s = 1.0
    if with_scale:
        var_s = np.sum(w * np.sum(xs * xs, axis=1))
        s = float(np.sum(S * D) / var_s) if var_s > 0 else 1.0
    t = mu_d - s * R @ mu_s
    return R, t, s


def _umeyama_batch(src: np.ndarray, dst: np.ndarray, with_scale: bool):
    """Unweighted :func:`umeyama` of ``B`` small sets at once: ``[B, k, 3]`` each."""
    mu_s, mu_d = src.mean(1, keepdims=True), dst.mean(1, keepdims=True)
    xs, xd = src - mu_s, dst - mu_d
    cov = np.swapaxes(xd, 1, 2) @ xs / src.shape[1]  # [B, 3, 3]
    U, S, Vt = np.linalg.svd(cov)
    R = U @ Vt
    D = np.ones((len(src), 3))
    flip = np.linalg.det(R) < 0  # det(U) det(Vt), one batched det instead of two
    D[flip, 2] = -1.0
    R[flip] = (U[flip] * D[flip, None, :]) @ Vt[flip]
    sc = np.ones(len(src))
    if with_scale:
        var = np.mean(np.sum(xs * xs, axis=2), axis=1)
        sc = np.where(var > 0, np.sum(S * D, axis=1) / np.maximum(var, 1e-300), 1.0)
    t = mu_d[:, 0] - sc[:, None] * (R @ mu_s[:, 0, :, None])[..., 0]
    return R, t, sc


def _sq_residuals(src_h: np.ndarray, dst: np.ndarray, A: np.ndarray, t: np.ndarray):
    """``|dst - (A src + t)|^2`` for ``B`` hypotheses at once: ``[B, M]``.

    ``src_h`` is ``[M, 4]`` homogeneous, so one batched matmul against ``[B, 4, 3]``
    applies every hypothesis (rotation and translation) to every point.
    """
    M = np.empty((len(A), 4, 3))
    M[:, :3] = np.swapaxes(A, 1, 2)
    M[:, 3] = t
    d = src_h @ M
    d -= dst
    d *= d
    return d @ np.ones(3)


@dataclass
class RansacResult:
    """Outcome of :func:`ransac_umeyama`.

    Attributes:
        T: ``[4, 4]`` float64 ``T_dst_src`` (rotation block scaled by ``scale``).
        scale: fitted uniform scale (1 without ``with_scale``).
        inliers: ``[N]`` bool.
        rms: weighted RMS residual over inliers, in the units of the points.
        residuals: ``[N]`` distances ``|dst - T src|`` of all points under ``T``.
    """

    T: np.ndarray
    scale: float
    inliers: np.ndarray
    rms: float
    residuals: np.ndarray | None = None


def ransac_umeyama(src: np.ndarray, dst: np.ndarray, threshold: float,
                   weights: np.ndarray | None = None, with_scale: bool = False,
                   iterations: int = 64, seed: int = 0, sample_size: int = 4,
                   max_eval_points: int = 1000, confidence: float = 0.999,
                   first_batch: int = 16) -> RansacResult:
    """Robust :func:`umeyama`: minimal-sample hypotheses, inlier count, weighted refit.

    All hypotheses are solved in one batched SVD and scored in one batched matmul; a first
    batch of ``first_batch`` is scored alone because it usually suffices (adaptive stop).
    Hypotheses are scored on at most ``max_eval_points`` strided points (speed); the final
    inlier set and refit (two rounds) use all points.

    Args:
        src, dst: ``[N, 3]`` correspondences.
        threshold: inlier distance ``|dst - T src|`` in point units.
        weights: ``[N]`` weights for the refit; default uniform.
        with_scale: fit a similarity instead of a rigid transform.
        iterations: number of random minimal samples.
        seed: RNG seed (results are deterministic).
        sample_size: points per hypothesis (>= 3).
        max_eval_points: cap on the points used to score hypotheses.
        confidence: stop once an all-inlier sample has been drawn with this probability,
            given the best inlier fraction so far (the standard adaptive RANSAC bound).
        first_batch: hypotheses scored before the first stopping test.

    Raises:
        InputError: as :func:`umeyama`.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    n = len(src)
    if src.shape != dst.shape or n < 3:
        raise InputError(f'RANSAC needs matching [N >= 3, 3] sets, got {src.shape}, {dst.shape}',
                         'too_few_points', actual=(src.shape, dst.shape))
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    rng = np.random.default_rng(seed)
    step = max(1, n // max_eval_points)
    src_h = np.empty((n, 4))
    src_h[:, :3], src_h[:, 3] = src, 1.0
    es_h, ed = src_h[::step], dst[::step]
    thr2 = threshold ** 2
    k = min(sample_size, n)
    # With replacement (a rare repeated index only wastes that hypothesis): drawing without
    # replacement per sample costs more than all the scoring.
    idx = rng.integers(0, n, size=(iterations, k))
    best, best_count = None, -1
    split = min(first_batch, iterations)
    for lo, hi in ((0, split), (split, iterations)):
        if hi <= lo:
            break
        R, t, sc = _umeyama_batch(src[idx[lo:hi]], dst[idx[lo:hi]], with_scale)
        count = np.count_nonzero(
            _sq_residuals(es_h, ed, R * sc[:, None, None], t) < thr2, axis=1)
        i = int(np.argmax(count))
        if count[i] > best_count:
            best_count, best = int(count[i]), (R[i], t[i], float(sc[i]))
        frac = best_count / len(ed)
        if frac >= 1.0 or (frac > 0 and hi >= np.log(1 - confidence) / np.log(1 - frac ** k)):
            break
    R, t, s = best
    inl = np.ones(n, dtype=bool)
    res = np.sqrt(_sq_residuals(src_h, dst, (s * R)[None], t[None])[0])
    for round_ in range(2):
        new = res < threshold
        if (np.count_nonzero(new) < 3 or not np.any(w[new] > 0)
                or (round_ and np.array_equal(new, inl))):  # same set: same refit
            break
        inl = new
        R, t, s = umeyama(src[inl], dst[inl], w[inl], with_scale)
        res = np.sqrt(_sq_residuals(src_h, dst, (s * R)[None], t[None])[0])
    wi = w[inl]
    rms = float(np.sqrt(np.sum(wi * res[inl] ** 2) / max(np.sum(wi), 1e-300)))
    return RansacResult(T=se3_from_rt(s * R, t), scale=s, inliers=inl, rms=rms, residuals=res)
