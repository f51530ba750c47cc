"""Point-map utilities: validity and confidence gating, depth, and metric scale from depth.

Convention: point maps ``[H, W, 3]`` in an OpenCV optical frame; depth is z.
"""

from __future__ import annotations

import numpy as np

from pointmap_ros.errors import InputError

__all__ = ['squared_norm', 'vector_norm', 'valid_mask', 'confidence_mask',
           'confidence_threshold', 'invalid_as_nan', 'set_invalid_nan', 'depth_from_points',
           'median', 'median_depth', 'scale_from_depth', 'depth_ratio', 'depth_edges']


def squared_norm(v: np.ndarray) -> np.ndarray:
    """``[...]`` squared Euclidean norm of ``[..., C]`` vectors (same dtype; points have
    C = 3, image flow C = 2).

    Squares element-wise, then a matrix-vector product sums the components: numpy
    reductions and element-wise ops over a short last axis are several times slower at
    512x288.
    A network can emit points beyond sqrt(float32 max) ~ 1.8e19 on pixels it has given up
    on; their squared norm is +inf, which every threshold treats as "too large", so the
    overflow is the intended result and not worth a RuntimeWarning per frame.
    """
    with np.errstate(over='ignore', invalid='ignore'):
        sq = np.square(v)
        components = v.shape[-1]
        return (sq.reshape(-1, components) @ np.ones(components, sq.dtype)).reshape(
            v.shape[:-1])


def vector_norm(v: np.ndarray) -> np.ndarray:
    """``[...]`` Euclidean norm of ``[..., C]`` vectors (see :func:`squared_norm`)."""
    return np.sqrt(squared_norm(v))


def valid_mask(points: np.ndarray) -> np.ndarray:
    """``[H, W]`` bool: points in front of the camera with a finite depth (0 < z < inf).

    Only z is tested (NaN fails ``z > 0``): engines produce x, y and z of a pixel together
    (DUSt3R heads output depth-scaled rays), so a non-finite x or y comes with a bad z; this
    keeps the test at two comparisons on one channel.
    """
    z = np.ascontiguousarray(points[..., 2])  # one strided read, then two fast compares
    ok = z > 0
    ok &= z < np.inf
    return ok


def confidence_mask(conf: np.ndarray, threshold: float,
                    relative_quantile: float | None = None) -> np.ndarray:
    """``[H, W]`` bool gate ``conf >= threshold``.

    With ``relative_quantile`` q the gate is ``conf >= min(threshold, quantile(conf, q))``, so
    a globally low-confidence pair still keeps its best fraction ``1 - q`` of pixels instead
    of nothing (DUSt3R confidences are >= 1 and their scale varies between checkpoints). The
    quantile is taken on a strided subsample of at most ~4k pixels (speed).
    """
    conf = np.asarray(conf)
    thr = confidence_threshold(conf, threshold, relative_quantile)
    ok = conf >= thr  # NaN fails
    ok &= conf < np.inf
    return ok


def confidence_threshold(conf: np.ndarray, threshold: float,
                         relative_quantile: float | None = None) -> float:
    """The effective threshold of :func:`confidence_mask` for ``conf`` ``[H, W]``.

    Separate so callers can gate a strided view of the same map with the full map's
    threshold.
    """
    if relative_quantile is None:
        return threshold
    step = max(1, int(np.sqrt(conf.size / 4096)))
    sub = conf[::step, ::step]
    finite = sub[np.isfinite(sub)]
    if finite.size:
        return min(threshold, _quantile(finite, relative_quantile))
    return threshold


def _quantile(values: np.ndarray, q: float) -> float:
    """``float(np.quantile(values, q))`` (default 'linear' method) of a non-empty 1-D array
    of finite values, bit for bit: the same partition and interpolation without NumPy's
    generic machinery (~0.1 ms of Python per call, several calls per frame)."""
    n = values.size
    virtual = (n - 1) * float(q)
    lo = int(np.floor(virtual))
    hi = min(lo + 1, n - 1)
    gamma = virtual - lo
    part = np.partition(values, (lo, hi))
    a, b = part[lo], part[hi]
    diff = b - a
    # NumPy's _lerp: from the nearer end, so q = 1 gives b exactly.
    return float(b - diff * (1 - gamma) if gamma >= 0.5 else a + diff * gamma)


def median(values: np.ndarray) -> float:
    """``float(np.median(values))`` of a non-empty array, bit for bit (NaN if any value is):
    the same partition without NumPy's generic machinery (~30 us of Python per call, a
    dozen calls per frame)."""
    flat = np.ravel(values)
    half = flat.size // 2
    if flat.size % 2:
        part = np.partition(flat, (half, -1))  # -1: a NaN sorts last
        middle = part[half]
    else:
        part = np.partition(flat, (half - 1, half, -1))
        middle = part[half - 1:half + 1].mean()  # as np.median does
    return float('nan') if np.isnan(part[-1]) else float(middle)


def invalid_as_nan(valid: np.ndarray, dtype=np.float32) -> np.ndarray:
    """``[H, W, 3]`` additive mask: 0 where ``valid`` ``[H, W]`` (bool), NaN elsewhere.

    ``points + invalid_as_nan(valid)`` is ``points`` with NaN where invalid and unchanged
    elsewhere (``x + 0 = x`` exactly), several times cheaper at 512x288 than the boolean
    assignment ``points[~valid] = nan``; one mask serves every map with the same validity.
    """
    lut = np.array([[np.nan] * 3, [0.0] * 3], dtype)
    return np.take(lut, np.asarray(valid, bool).view(np.uint8), axis=0)


def set_invalid_nan(points: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``points`` ``[H, W, 3]`` (C-contiguous, fresh) with NaN where not ``valid``, in place.

    Few invalid pixels (the usual case): an indexed write of just those rows; many: one
    add of :func:`invalid_as_nan` (a boolean-mask assignment costs ~5x either at 512x288).
    """
    invalid = np.flatnonzero(~valid)
    if 4 * invalid.size < valid.size:
        points.reshape(-1, 3)[invalid] = np.nan
    else:
        points += invalid_as_nan(valid, points.dtype)
    return points


def depth_from_points(points: np.ndarray) -> np.ndarray:
    """``[H, W]`` z-depth of camera-frame points; NaN where invalid."""
    z = np.array(points[..., 2], copy=True)
    z[~valid_mask(points)] = np.nan
    return z


def median_depth(points: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Median z over valid (and masked) pixels; NaN when none (the scene's scale)."""
    ok = valid_mask(points)
    if mask is not None:
        ok &= mask
    z = points[..., 2][ok]
    return median(z) if z.size else float('nan')


def depth_ratio(z_ref: np.ndarray, z: np.ndarray, mask: np.ndarray | None = None,
                min_pixels: int = 16) -> float | None:
    """Robust scale ``median(z_ref / z)`` over pixels valid in both; None when too few."""
    ok = np.isfinite(z_ref) & np.isfinite(z) & (z_ref > 0) & (z > 0)
    if mask is not None:
        ok &= mask
    if np.count_nonzero(ok) < min_pixels:
        return None
    return median(z_ref[ok] / z[ok])


def scale_from_depth(points: np.ndarray, depth: np.ndarray, mask: np.ndarray | None = None,
                     min_pixels: int = 16) -> float:
    """Metres per model unit from a metric depth image of the same camera.

    Args:
        points: ``[H, W, 3]`` camera-frame points of the image in model units.
        depth: ``[H, W]`` metric z-depth registered to the same pixels (0/NaN = no data).
        mask: optional ``[H, W]`` bool pixels to use (e.g. confident ones).

    Raises:
        InputError: shape mismatch or fewer than ``min_pixels`` pixels with both values.
    """
    depth = np.asarray(depth)
    if depth.shape != points.shape[:2]:
        raise InputError(f'depth shape {depth.shape} does not match the point map '
                         f'{points.shape[:2]}', 'size', actual=depth.shape,
                         expected=points.shape[:2])
    s = depth_ratio(depth.astype(np.float64), depth_from_points(points).astype(np.float64),
                    mask, min_pixels)
    if s is None:
        raise InputError(f'depth scale needs >= {min_pixels} pixels with valid depth and points',
                         'depth_scale')
    return s


def depth_edges(depth: np.ndarray, edge_rel: float) -> np.ndarray:
    """``[H, W]`` bool: pixels at a depth discontinuity of a z-depth image.

    A pixel is at an edge when its inverse depth departs from the mean of its two
    neighbours along the row or the column by more than ``edge_rel`` of its own (the second
    difference). The inverse depth of a plane is affine in the pixel coordinates, so slanted
    floors and walls have no edges however steep (a depth-spread test flagged half of a
    96x128 room view at 5 %), while a step between two surfaces marks the last pixel on each
    side and any pixel between them. Directions with a neighbour without data (0 / NaN)
    give no evidence; pixels without data are never edges.
    """
    depth = np.asarray(depth, np.float32)
    has_data = np.isfinite(depth) & (depth > 0)
    with np.errstate(divide='ignore', invalid='ignore'):
        inverse = np.where(has_data, np.float32(1) / depth, np.float32(np.nan))
    edge = np.zeros(depth.shape, bool)
    bend = np.zeros(depth.shape, np.float32)
    # Interior pixels only: the first and last row / column have no second difference.
    bend[1:-1, :] = np.abs(inverse[:-2, :] + inverse[2:, :] - 2 * inverse[1:-1, :])
    with np.errstate(invalid='ignore'):
        edge |= bend > edge_rel * inverse  # NaN (no data around): no evidence
    bend[:] = 0
    bend[:, 1:-1] = np.abs(inverse[:, :-2] + inverse[:, 2:] - 2 * inverse[:, 1:-1])
    with np.errstate(invalid='ignore'):
        edge |= bend > edge_rel * inverse
    return edge & has_data
