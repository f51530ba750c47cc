"""Pinhole intrinsics: validation, resize/crop bookkeeping, (un)projection, focal fitting.

Convention:
    ``K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` in pixels at a given image size. Pixel
    centres lie on integers: pixel column ``u`` covers ``[u - 0.5, u + 0.5]``, so the image
    centre of a ``W``-wide image is at ``(W - 1) / 2``. Points are in the OpenCV optical frame
    (x right, y down, z forward) and depth is z, not ray length. Maps are channels-last.
"""

from __future__ import annotations

import functools

import numpy as np

from pointmap_ros.errors import CalibrationError, InputError

__all__ = [
    'intrinsics_from_camera_info', 'scale_intrinsics', 'crop_intrinsics', 'pixel_grid',
    'project', 'unproject', 'unproject_at', 'estimate_focal',
]


def intrinsics_from_camera_info(k, width: int | None = None,
                                height: int | None = None) -> np.ndarray:
    """Validated ``[3, 3]`` float64 K from a CameraInfo-like ``k`` (9 values or 3x3).

    The single validation of intrinsics: the ROS conversion (``camera_info_to_K``) and the
    pipeline both call it, so one set of reason keys reaches diagnostics.

    Args:
        k: row-major 9-vector (``sensor_msgs/CameraInfo.k``) or ``[3, 3]`` matrix.
        width, height: image size the K belongs to; when given, the principal point must lie
            inside the image.

    Raises:
        CalibrationError: with ``reason`` ``calibration_values`` (not 9 values),
            ``calibration_nonfinite`` (NaN/inf), ``calibration_zero`` (all zero: the driver
            is uncalibrated), ``calibration_invalid`` (fx or fy <= 0), ``calibration_form``
            (bottom row not (0, 0, 1) or a non-zero K[1, 0]) or
            ``calibration_principal_point`` (principal point outside the image).
    """
    K = np.asarray(k, dtype=np.float64)
    if K.size != 9:
        raise CalibrationError(f'K must have 9 values, got {K.size}', 'calibration_values')
    K = K.reshape(3, 3)
    if not np.all(np.isfinite(K)):
        raise CalibrationError(f'K has non-finite values: {K.ravel().tolist()}',
                               'calibration_nonfinite')
    if not K.any():
        raise CalibrationError('K is all zero (the camera is not calibrated)',
                               'calibration_zero')
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise CalibrationError(
            f'K focal lengths must be > 0, got fx={K[0, 0]}, fy={K[1, 1]}',
            'calibration_invalid')
    if not np.allclose(K[2], (0.0, 0.0, 1.0)) or K[1, 0] != 0:
        raise CalibrationError(f'K is not a pinhole matrix: {K.ravel().tolist()}',
                               'calibration_form')
    if width is not None and height is not None and not (
            -0.5 <= K[0, 2] <= width - 0.5 and -0.5 <= K[1, 2] <= height - 0.5):
        raise CalibrationError(
            f'principal point ({K[0, 2]}, {K[1, 2]}) outside a {width}x{height} image',
            'calibration_principal_point')
    return K


def scale_intrinsics(K: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """K after resizing an image by factors ``sx`` (width) and ``sy`` (height).

    With integer pixel centres the image edge sits at -0.5, so a coordinate ``u`` maps to
    ``(u + 0.5) * s - 0.5``; hence ``c' = (c + 0.5) * s - 0.5`` rather than ``c * s``.
    """
    K2 = np.array(K, dtype=np.float64)
    K2[0, 0] *= sx
    K2[0, 1] *= sx
    K2[1, 1] *= sy
    K2[0, 2] = (K2[0, 2] + 0.5) * sx - 0.5
    K2[1, 2] = (K2[1, 2] + 0.5) * sy - 0.5
    return K2


def crop_intrinsics(K: np.ndarray, x0: int, y0: int) -> np.ndarray:
    """K after cropping an image so that its pixel ``(x0, y0)`` becomes ``(0, 0)``."""
    K2 = np.array(K, dtype=np.float64)
    K2[0, 2] -= x0
    K2[1, 2] -= y0
    return K2


def pixel_grid(height: int, width: int, dtype=np.float64) -> np.ndarray:
    """``[H, W, 2]`` pixel coordinates (u, v) of pixel centres (cached per size and dtype:
    read-only, shared by every caller)."""
    return _pixel_grid(int(height), int(width), np.dtype(dtype))


@functools.lru_cache(maxsize=16)
def _pixel_grid(height: int, width: int, dtype: np.dtype) -> np.ndarray:
    v, u = np.mgrid[0:height, 0:width].astype(dtype)
    grid = np.stack([u, v], axis=-1)
    grid.flags.writeable = False
    return grid


def project(points: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Project camera-frame points ``[..., 3]`` to pixels ``[..., 2]`` (NaN where z <= 0)."""
    points = np.asarray(points)
    z = points[..., 2]
    with np.errstate(divide='ignore', invalid='ignore'):
        zs = np.where(z > 0, z, np.nan)
        u = K[0, 0] * points[..., 0] / zs + K[0, 1] * points[..., 1] / zs + K[0, 2]
        v = K[1, 1] * points[..., 1] / zs + K[1, 2]
    return np.stack([u, v], axis=-1)


def unproject(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Back-project a z-depth map ``[H, W]`` to camera-frame points ``[H, W, 3]`` float64.

    Pixels with non-finite or non-positive depth give NaN points.
    """
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise InputError(f'depth must be [H, W], got shape {depth.shape}', 'shape',
                         actual=depth.shape)
    z = np.where(np.isfinite(depth) & (depth > 0), depth, np.nan)
    return unproject_at(pixel_grid(*depth.shape, dtype=np.float64), z, K)


def unproject_at(pixels: np.ndarray, depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """``[..., 3]`` float64 camera-frame points at z = ``depth`` ``[...]`` on the rays of
    ``pixels`` ``[..., 2]`` ``(u, v)``, any (sub-pixel) positions: the inverse of
    :func:`project`."""
    pixels = np.asarray(pixels, np.float64)
    y = (pixels[..., 1] - K[1, 2]) / K[1, 1]
    x = (pixels[..., 0] - K[0, 2] - K[0, 1] * y) / K[0, 0]
    z = np.asarray(depth, np.float64)
    return np.stack([x * z, y * z, z], axis=-1)


def estimate_focal(points: np.ndarray, mask: np.ndarray | None = None,
                   principal_point: tuple[float, float] | None = None,
                   iterations: int = 10, max_points: int = 5000, stride: int = 1) -> float:
    """Robust single focal length of a camera-frame point map (DUSt3R's Weiszfeld fit).

    Minimises ``sum |p - c - f * (x/z, y/z)|`` (an L1 reprojection residual) by IRLS, starting
    from the L2 closed form, with square pixels and the principal point at the image centre.

    Args:
        points: ``[H, W, 3]`` points of the image's own pixels in its own optical frame.
        mask: optional ``[H, W]`` bool of pixels to use (e.g. confident ones).
        principal_point: ``(cx, cy)``; default the centre ``((W - 1) / 2, (H - 1) / 2)``.
        iterations: IRLS steps (DUSt3R uses 10).
        max_points: pixels are subsampled on a regular stride above this count (speed).
        stride: use every ``stride``-th pixel in both directions (``mask`` is full size);
            strided before any full-size conversion, unlike ``max_points``.

    Returns:
        Focal length in pixels.

    Raises:
        InputError: wrong shape or fewer than 10 usable pixels (z > 0, finite).
    """
    points = np.asarray(points)
    if points.ndim != 3 or points.shape[2] != 3:
        raise InputError(f'points must be [H, W, 3], got {points.shape}', 'shape',
                         actual=points.shape)
    H, W = points.shape[:2]
    cx, cy = principal_point if principal_point is not None else ((W - 1) / 2, (H - 1) / 2)
    u, v = np.meshgrid(np.arange(0, W, stride) - cx, np.arange(0, H, stride) - cy)
    uv = np.stack([u, v], axis=-1)  # the strided pixel centres, relative to (cx, cy)
    points = points[::stride, ::stride].astype(np.float64)
    ok = np.isfinite(points).all(-1) & (points[..., 2] > 0)
    if mask is not None:
        ok &= mask[::stride, ::stride]
    pix, pts = uv[ok], points[ok]
    if len(pix) < 10:
        raise InputError(f'focal fit needs >= 10 valid pixels, got {len(pix)}', 'too_few_points')
    step = max(1, len(pix) // max_points)
    pix, pts = pix[::step], pts[::step]
    xy = pts[:, :2] / pts[:, 2:]  # [N, 2] normalised image coordinates
    f = np.sum(xy * pix) / np.sum(xy * xy)
    for _ in range(iterations):
        r = np.linalg.norm(pix - f * xy, axis=1)
        w = 1.0 / np.maximum(r, 1e-8)
        f = np.sum(w[:, None] * xy * pix) / np.sum(w[:, None] * xy * xy)
    return float(f)
