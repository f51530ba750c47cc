"""Motion segmentation from scene flow and its split into object instances.

Convention: maps are ``[H, W, ...]`` at model resolution, points and flow in one camera frame
and the same units (the threshold is relative, so model units and metres both work).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from pointmap_ros.geometry.pointmap import vector_norm

__all__ = ['flow_noise', 'motion_threshold', 'smooth_flow', 'PairMotion', 'pair_motion',
           'remove_small_regions', 'segment_instances']


def flow_noise(flow_norm: np.ndarray, valid: np.ndarray) -> float:
    """Median flow magnitude over valid pixels: the flow noise level when most pixels are
    static (0 for exact maps). Pass a strided subsample; it is only a statistic."""
    v = flow_norm[valid]
    return float(np.median(v)) if v.size else 0.0


def motion_threshold(noise: float, scene_depth: float, dt: float, speed_rel: float,
                     min_rel: float, noise_mult: float) -> float:
    """Flow magnitude above which a pixel moves, in the flow's units.

    ``max(speed_rel * depth * dt, min_rel * depth, noise_mult * noise)``: a speed relative to
    scene scale (so the same objects count as moving whatever the pair's time gap), an
    absolute floor, and a floor above the flow noise (see :func:`flow_noise`).
    """
    return max(speed_rel * scene_depth * dt, min_rel * scene_depth, noise_mult * noise)


def smooth_flow(flow: np.ndarray, valid: np.ndarray, radius: int) -> np.ndarray:
    """Box-filtered flow ``[H, W, 3]`` over valid pixels only (normalised convolution).

    Averaging ``(2r + 1)^2`` pixels divides i.i.d. noise by ``2r + 1``; used only when the
    flow is noisy, because it also blurs motion across object borders.
    """
    w = valid.astype(np.float32)
    size = 2 * radius + 1
    den = ndimage.uniform_filter(w, size, mode='nearest')
    out = np.empty(flow.shape, np.float32)
    for c in range(3):
        num = ndimage.uniform_filter(np.where(valid, flow[..., c], 0).astype(np.float32), size,
                                     mode='nearest')
        out[..., c] = num / np.maximum(den, 1e-6)
    return out


@dataclass
class PairMotion:
    """Motion decision of one pair (see :func:`pair_motion`).

    Attributes:
        moving: ``[H, W]`` bool raw decision (before the small-region cleanup).
        threshold: flow magnitude threshold used (units of the flow).
        noise: median raw flow magnitude (the noise estimate).
        flow: the flow the decision used, ``[H, W, 3]`` (smoothed when noisy).
    """

    moving: np.ndarray
    threshold: float
    noise: float
    flow: np.ndarray


def pair_motion(flow: np.ndarray, valid: np.ndarray, scene_depth: float, dt: float,
                speed_rel: float, min_rel: float, noise_mult: float, smooth_radius: int,
                stride: int = 1) -> PairMotion:
    """The pipeline's motion rule for one pair's flow ``[H, W, 3]`` over ``valid`` pixels.

    Threshold by :func:`motion_threshold`. When its noise term dominates, decide on
    :func:`smooth_flow` (radius ``smooth_radius``) instead, then erode the decision by
    ``max(1, r - 1)`` pixels: the box filter spreads motion up to r pixels onto static
    neighbours, which would join the instance and outvote a small object in its rigid fit;
    r - 1 removes most of that ring without erasing small objects (see docs/pipeline.md for
    the measured comparison with 0 and r). Exact maps (noise 0) never smooth, so masks keep sharp
    borders. Statistics use every ``stride``-th pixel.
    """
    norm = vector_norm(flow)
    args = (scene_depth, dt, speed_rel, min_rel, noise_mult)
    noise = flow_noise(norm[::stride, ::stride], valid[::stride, ::stride])
    threshold = motion_threshold(noise, *args)
    if not (smooth_radius and threshold == noise_mult * noise > 0):
        return PairMotion(valid & (norm > threshold), threshold, noise, flow)
    smoothed = smooth_flow(flow, valid, smooth_radius)
    norm = vector_norm(smoothed)
    threshold = motion_threshold(
        flow_noise(norm[::stride, ::stride], valid[::stride, ::stride]), *args)
    moving = ndimage.binary_erosion(valid & (norm > threshold),
                                    iterations=max(1, smooth_radius - 1))
    return PairMotion(moving, threshold, noise, smoothed)


def remove_small_regions(mask: np.ndarray, min_pixels: int) -> np.ndarray:
    """Drop 8-connected foreground blobs and fill holes smaller than ``min_pixels``.

    Works on the mask's bounding box plus a one-pixel margin (same result, less work when
    the moving pixels cover a small part of the image).
    """
    out = mask.copy()
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0:
        return out
    r0, r1 = max(rows[0] - 1, 0), min(rows[-1] + 2, mask.shape[0])
    c0, c1 = max(cols[0] - 1, 0), min(cols[-1] + 2, mask.shape[1])
    crop = out[r0:r1, c0:c1]  # a view: edited in place
    for value in (True, False):
        labels, n = ndimage.label(crop == value, structure=np.ones((3, 3)))
        if n == 0:
            continue
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        small = sizes < min_pixels
        small[0] = False
        if small.any():
            crop[small[labels]] = not value
    return out


def segment_instances(mask: np.ndarray, points: np.ndarray, flow: np.ndarray,
                      jump_rel: float, flow_jump_rel: float, flow_floor: float,
                      min_pixels: int) -> tuple[np.ndarray, int]:
    """Split a motion mask into instances by image connectivity *and* 3D proximity.

    Two 4-neighbouring mask pixels are linked when their points are closer than
    ``jump_rel * z`` and their flows differ by less than ``max(flow_floor, flow_jump_rel *
    mean |flow|)``; instances are the connected components of that graph. This separates
    objects that touch or overlap in the image but lie at different depths (crossings) or
    move differently.

    Args:
        mask: ``[H, W]`` bool moving pixels.
        points: ``[H, W, 3]`` camera-frame points.
        flow: ``[H, W, 3]`` scene flow.
        jump_rel: depth-relative 3D distance that cuts a link.
        flow_jump_rel, flow_floor: flow difference that cuts a link (relative / absolute).
        min_pixels: smaller components are dropped (label 0).

    Returns:
        ``([H, W] int32 labels, 0 = none, 1..n), n``.
    """
    H, W = mask.shape
    idx = np.full((H, W), -1, dtype=np.int64)
    ys, xs = np.nonzero(mask)
    n = len(ys)
    if n == 0:
        return np.zeros((H, W), np.int32), 0
    idx[ys, xs] = np.arange(n)
    rows, cols = [], []
    for dy, dx in ((0, 1), (1, 0)):
        a = mask[:H - dy, :W - dx] & mask[dy:, dx:]
        pa, pb = points[:H - dy, :W - dx][a], points[dy:, dx:][a]
        fa, fb = flow[:H - dy, :W - dx][a], flow[dy:, dx:][a]
        z = np.minimum(np.abs(pa[:, 2]), np.abs(pb[:, 2]))
        fmag = 0.5 * (vector_norm(fa) + vector_norm(fb))
        keep = ((vector_norm(pa - pb) < jump_rel * z)
                & (vector_norm(fa - fb) < np.maximum(flow_floor, flow_jump_rel * fmag)))
        rows.append(idx[:H - dy, :W - dx][a][keep])
        cols.append(idx[dy:, dx:][a][keep])
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r), np.int8), (r, c)), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    sizes = np.bincount(comp)
    # Relabel kept components 1..k in order of size (largest first) for determinism.
    order = np.argsort(-sizes, kind='stable')
    order = order[sizes[order] >= min_pixels]
    lut = np.zeros(len(sizes), np.int32)
    lut[order] = np.arange(1, len(order) + 1, dtype=np.int32)
    labels = np.zeros((H, W), np.int32)
    labels[ys, xs] = lut[comp]
    return labels, len(order)
