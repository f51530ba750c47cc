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

__all__ = ['resize_crop', 'make_frame', 'frame_key']


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
        depth: ``[h, w]`` float depth in metres (0/NaN = no data) or None; resized with
            nearest-neighbour so no depth is invented across object edges.

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
            d = cv2.resize(d, (rw, rh), interpolation=cv2.INTER_NEAREST)
        d_out = np.ascontiguousarray(d[y0:y0 + H, x0:x0 + W])
    return out, K_out, d_out


def frame_key(camera_id: str, stamp: float) -> str:
    """``'<camera_id>/<stamp in integer nanoseconds>'``: unique per stream, skip-proof."""
    return f'{camera_id}/{int(round(stamp * 1e9))}'


def make_frame(image: np.ndarray, stamp: float, camera_id: str = '') -> Frame:
    """:class:`Frame` for an already-preprocessed image, keyed by :func:`frame_key`."""
    return Frame(image=_check_image(image), stamp=float(stamp),
                 key=frame_key(camera_id, stamp), camera_id=camera_id)
