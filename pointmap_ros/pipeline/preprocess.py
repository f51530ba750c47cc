"""Bring camera images (and registered depth) to the engine resolution, keeping K consistent.

Resize so the image covers the target, then centre-crop: the aspect ratio is kept and no
padding enters the network. Intrinsics follow exactly (see geometry/camera.py for the pixel
centre convention).
"""

from __future__ import annotations

import cv2
import numpy as np

from pointmap_ros.errors import InputError
from pointmap_ros.geometry.camera import crop_intrinsics, scale_intrinsics
from pointmap_ros.types import Frame

__all__ = ['resize_crop', 'resize_depth', 'make_frame', 'frame_key']


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f'image must be [H, W, 3] RGB, got shape {image.shape}', 'shape',
                         actual=image.shape)
    if image.dtype != np.uint8:
        raise InputError(f'image must be uint8, got {image.dtype}', 'encoding',
                         actual=str(image.dtype), expected='uint8')
    return image


def resize_crop(image: np.ndarray, size: tuple[int, int], K: np.ndarray | None = None,
                depth: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Resize (cover) + centre-crop an RGB image, its K and depth to ``size = (H, W)``.

    Args:
        image: ``[h, w, 3]`` uint8 RGB, any size.
        size: target ``(H, W)``.
        K: ``[3, 3]`` intrinsics of ``image`` or None.
        depth: ``[h, w]`` float depth in metres (0/NaN = no data) or None; resized by
            :func:`resize_depth`, so no depth is invented across object edges or holes.

    Returns:
        ``(image [H, W, 3] uint8, K at the new resolution or None, depth [H, W] float32 or
        None)``.

    Raises:
        InputError: bad image shape/dtype or depth of a different size than the image.
    """
    image = _check_image(image)
    h, w = image.shape[:2]
    H, W = size
    if depth is not None and np.shape(depth)[:2] != (h, w):
        raise InputError(f'depth {np.shape(depth)} does not match image {h}x{w}', 'size',
                         actual=np.shape(depth), expected=(h, w))
    s = max(H / h, W / w)
    rh, rw = max(H, int(round(h * s))), max(W, int(round(w * s)))
    if (rh, rw) != (h, w):
        interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
        image = cv2.resize(image, (rw, rh), interpolation=interp)
    y0, x0 = (rh - H) // 2, (rw - W) // 2
    out = np.ascontiguousarray(image[y0:y0 + H, x0:x0 + W])
    K_out = None
    if K is not None:
        K_out = crop_intrinsics(scale_intrinsics(K, rw / w, rh / h), x0, y0)
    d_out = None
    if depth is not None:
        d = np.asarray(depth, dtype=np.float32)
        if (rh, rw) != (h, w):
            d = resize_depth(d, (rh, rw))
        d_out = np.ascontiguousarray(d[y0:y0 + H, x0:x0 + W])
    return out, K_out, d_out


#: Shrinking depth averages a block only when it is one surface: the average may differ
#: from the nearest sample by at most this fraction (a floor seen at a grazing angle changes
#: by a few per cent per pixel; a silhouette or a hole by far more).
DEPTH_AVERAGE_TOL = 0.05


def resize_depth(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``[h, w]`` metric depth resized to ``size = (H, W)`` without blending surfaces.

    Nearest-neighbour never mixes a foreground and a background depth, but when shrinking
    it reads a sample up to half a source pixel from the target pixel's centre: at 2x, a
    quarter of a model pixel, 0.75 % of the depth on a floor at a grazing angle (measured:
    depth AbsRel 0.0054 with exact depth, against 0.0009 without resizing). So when
    shrinking, the area average (centred) is used where the block is one surface (within
    :data:`DEPTH_AVERAGE_TOL` of the nearest sample, which a hole (0 / NaN) or an edge
    breaks) and the nearest sample elsewhere; enlarging is nearest-neighbour.
    """
    height, width = size
    nearest = cv2.resize(depth, (width, height), interpolation=cv2.INTER_NEAREST)
    if height >= depth.shape[0] and width >= depth.shape[1]:
        return nearest
    averaged = cv2.resize(depth, (width, height), interpolation=cv2.INTER_AREA)
    with np.errstate(invalid='ignore'):
        one_surface = np.abs(averaged - nearest) <= DEPTH_AVERAGE_TOL * nearest
    one_surface &= nearest > 0
    return np.where(one_surface, averaged, nearest).astype(np.float32)


def frame_key(camera_id: str, stamp: float) -> str:
    """``'<camera_id>/<stamp in integer nanoseconds>'``: unique per stream, skip-proof."""
    return f'{camera_id}/{int(round(stamp * 1e9))}'


def make_frame(image: np.ndarray, stamp: float, camera_id: str = '') -> Frame:
    """:class:`Frame` for an already-preprocessed image, keyed by :func:`frame_key`."""
    return Frame(image=_check_image(image), stamp=float(stamp),
                 key=frame_key(camera_id, stamp), camera_id=camera_id)
