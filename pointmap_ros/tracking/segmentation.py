"""Motion segmentation from scene flow and its split into object instances.

Convention: maps are ``[H, W, ...]`` at model resolution, points and flow in one camera frame
and the same units (the threshold is relative, so model units and metres both work).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from pointmap_ros.geometry.pointmap import median, squared_norm, vector_norm

__all__ = ['PLACE_UNKNOWN', 'flow_noise', 'motion_threshold', 'smooth_flow', 'PairMotion',
           'pair_motion', 'remove_small_regions', 'segment_instances']

#: What a pixel continues (:func:`segment_instances`' ``carried``) where its place a frame
#: ago is not known: no evidence that it continues an id, nor that it does not.
PLACE_UNKNOWN = -1

_CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.uint8)  # 4-connected erosion
_BOOL3 = np.array([[False] * 3, [True] * 3])  # bool [H, W] -> [H, W, 3] by np.take


def flow_noise(flow_norm: np.ndarray, valid: np.ndarray, max_samples: int = 16384) -> float:
    """Median flow magnitude over valid pixels: the flow noise level when most pixels are
    static (0 for exact maps). Pass a strided subsample; it is only a statistic, so at most
    ``max_samples`` evenly spaced valid pixels are used."""
    v = flow_norm[valid]
    if v.size > max_samples:
        v = v[::v.size // max_samples]
    return median(v) if v.size else 0.0


def motion_threshold(noise: float, scene_depth: float, dt: float, speed_rel: float,
                     min_rel: float, noise_mult: float) -> float:
    """Flow magnitude above which a pixel moves, in the flow's units.

    ``max(speed_rel * depth * dt, min_rel * depth, noise_mult * noise)``: a speed relative to
    scene scale (so the same objects count as moving whatever the pair's time gap), an
    absolute floor, and a floor above the flow noise (see :func:`flow_noise`).
    """
    return max(speed_rel * scene_depth * dt, min_rel * scene_depth, noise_mult * noise)


def smooth_flow(flow: np.ndarray, valid: np.ndarray, radius: int) -> np.ndarray:
    """Box-filtered flow ``[H, W, 3]`` float32 over valid pixels only (normalised convolution).

    Averaging ``(2r + 1)^2`` pixels divides i.i.d. noise by ``2r + 1``; used only when the
    flow is noisy, because it also blurs motion across object borders. Borders replicate
    the edge pixels (``scipy.ndimage`` mode 'nearest'); OpenCV's box filter is ~4x faster
    than ``ndimage.uniform_filter`` on three channels.
    """
    size = (2 * radius + 1,) * 2
    # Everything on [H, W, 3] arrays: NumPy broadcasts of an [H, W, 1] operand over a
    # length-3 inner axis are several times slower than same-shape element-wise ops.
    valid3 = np.take(_BOOL3, np.asarray(valid, bool).view(np.uint8), axis=0)
    num = cv2.boxFilter(np.where(valid3, flow, np.float32(0)).astype(np.float32, copy=False),
                        -1, size, borderType=cv2.BORDER_REPLICATE)
    den = cv2.boxFilter(valid3.astype(np.float32), -1, size, borderType=cv2.BORDER_REPLICATE)
    np.maximum(den, 1e-6, out=den)
    num /= den
    return num


def _erode(mask: np.ndarray, iterations: int) -> np.ndarray:
    """``ndimage.binary_erosion(mask, iterations=...)`` (cross, outside = False), via OpenCV
    (~50x faster at 512x288)."""
    out = cv2.erode(np.ascontiguousarray(mask).view(np.uint8), _CROSS, iterations=iterations,
                    borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return out.view(bool)


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
                stride: int = 1, flow_sq: np.ndarray | None = None) -> PairMotion:
    """The pipeline's motion rule for one pair's flow ``[H, W, 3]`` over ``valid`` pixels.

    Threshold by :func:`motion_threshold`. When its noise term dominates, decide on
    :func:`smooth_flow` (radius ``smooth_radius``) instead, then erode the decision by
    ``max(1, r - 1)`` pixels: the box filter spreads motion up to r pixels onto static
    neighbours, which would join the instance and outvote a small object in its rigid fit;
    r - 1 removes most of that ring without erasing small objects (see docs/pipeline.md for
    the measured comparison with 0 and r). Exact maps (noise 0) never smooth, so masks keep sharp
    borders. Statistics use every ``stride``-th pixel; ``flow_sq`` (``|flow|^2`` ``[H, W]``)
    may be passed when the caller already has it. Decisions compare squared magnitudes (no
    full-size square root).
    """
    sq = squared_norm(flow) if flow_sq is None else flow_sq
    args = (scene_depth, dt, speed_rel, min_rel, noise_mult)
    noise = flow_noise(np.sqrt(sq[::stride, ::stride]), valid[::stride, ::stride])
    threshold = motion_threshold(noise, *args)
    if not (smooth_radius and threshold == noise_mult * noise > 0):
        return PairMotion(valid & (sq > threshold ** 2), threshold, noise, flow)
    smoothed = smooth_flow(flow, valid, smooth_radius)
    sq = squared_norm(smoothed)
    threshold = motion_threshold(
        flow_noise(np.sqrt(sq[::stride, ::stride]), valid[::stride, ::stride]), *args)
    moving = _erode(valid & (sq > threshold ** 2), max(1, smooth_radius - 1))
    return PairMotion(moving, threshold, noise, smoothed)


def remove_small_regions(mask: np.ndarray, min_pixels: int,
                         keep: Callable[[np.ndarray], np.ndarray | None] | None = None
                         ) -> np.ndarray:
    """Drop 8-connected foreground blobs and fill holes smaller than ``min_pixels``, except
    the blobs with most of their pixels kept: ``keep``, when given, is called once with the
    ``[H, W]`` bool pixels of the small blobs and returns which of them to keep (``[H, W]``
    bool), or None for none.

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
        # OpenCV's labelling returns the sizes too (~2x faster than ndimage + bincount).
        n, labels, stats, _ = cv2.connectedComponentsWithStats(
            (crop == value).view(np.uint8), connectivity=8, ltype=cv2.CV_32S)
        areas = stats[:, cv2.CC_STAT_AREA]
        small = areas < min_pixels
        small[0] = False  # OpenCV's label 0 is the other value
        if value and keep is not None and small.any():
            candidates = np.zeros_like(mask)
            candidates[r0:r1, c0:c1] = np.take(small, labels)
            kept = keep(candidates)
            if kept is not None:
                small &= 2 * np.bincount(labels[kept[r0:r1, c0:c1]], minlength=n) <= areas
        if small.any():
            crop[np.take(small, labels)] = not value
    return out


def _continuing_components(component: np.ndarray, sizes: np.ndarray, carried: np.ndarray,
                           large: np.ndarray, min_pixels: int) -> np.ndarray:
    """Which components under the size limit continue an id alone.

    Args:
        component: ``[N]`` component of each mask pixel; ``sizes`` ``[C]`` their sizes.
        carried: ``[N]`` id each pixel continues (0 = none, :data:`PLACE_UNKNOWN`: the
            pixel's place a frame ago is not known).
        large: ``[C]`` bool, the components kept by size.
        min_pixels: the smallest component that may continue an id, and the fewest pixels
            with a known place it needs.

    Returns:
        ``[C]`` bool: components of at least ``min_pixels`` (not ``large``) whose pixels
        with a known place mostly (> 50 %) carry one id that no large component mostly
        carries, the largest one per id. A fragment beside its object's large instance
        would otherwise compete with it for the object's track; pixels hidden behind an
        object a frame ago also carry its id, and so do its fragments. Pixels without a
        known place (no correspondence: a fast object's optical flow fails on much of it)
        are no evidence either way; counted against, they cut a small, fast arm link off
        its own track (a held-out scene: 64 of its 177 pixels known, all on its track).
    """
    continuing = np.zeros(len(sizes), bool)
    hit = carried > 0
    if not hit.any():
        return continuing
    known = np.bincount(component[carried != PLACE_UNKNOWN], minlength=len(sizes))
    pairs, counts = np.unique(np.stack([component[hit], carried[hit]], axis=1), axis=0,
                              return_counts=True)
    majority = np.zeros(len(sizes), np.int64)  # the id most of a component carries, or 0
    most = 2 * counts > known[pairs[:, 0]]
    majority[pairs[most, 0]] = pairs[most, 1]
    claimed = set(majority[large & (majority > 0)].tolist())
    candidates = np.nonzero(~large & (majority > 0) & (sizes >= min_pixels)
                            & (known >= min_pixels))[0]
    for carried_id in set(majority[candidates].tolist()) - claimed:
        same = candidates[majority[candidates] == carried_id]
        continuing[same[np.argmax(sizes[same])]] = True
    return continuing


def segment_instances(mask: np.ndarray, points: np.ndarray, flow: np.ndarray,
                      jump_rel: float, flow_jump_rel: float, flow_floor: float,
                      min_pixels: int, carried: np.ndarray | None = None,
                      carried_min_pixels: int = 0,
                      small_min_pixels: int | None = None) -> tuple[np.ndarray, int]:
    """Split a motion mask into instances by image connectivity *and* 3D proximity.

    Two 4-neighbouring mask pixels are linked when their points are closer than
    ``jump_rel * z`` and their flows differ by less than ``max(flow_floor, flow_jump_rel *
    mean |flow|)``; instances are the connected components of that graph. This separates
    objects that touch or overlap in the image but lie at different depths (crossings) or
    move differently.

    Args:
        mask: ``[H, W]`` bool moving pixels.
        points: ``[H, W, 3]`` camera-frame points (NaN counts as 0).
        flow: ``[H, W, 3]`` scene flow (NaN counts as 0).
        jump_rel: depth-relative 3D distance that cuts a link.
        flow_jump_rel, flow_floor: flow difference that cuts a link (relative / absolute).
        min_pixels: smaller components are dropped (label 0)...
        carried: ...unless, with this ``[H, W]`` int map of what each pixel continues (e.g.
            the published object track its point lay on a frame ago; 0 = nothing,
            :data:`PLACE_UNKNOWN` = not known) given, a
            smaller component of at least ``carried_min_pixels`` pixels is the only one to
            continue an id (:func:`_continuing_components`).
        small_min_pixels: the dropped components of at least this many pixels keep a
            *negative* label, -1..-m (None: none do).

    Returns:
        ``([H, W] int32 labels, 0 = none, 1..n (-1..-m: small_min_pixels), n)``; both
        ranges numbered by size, largest first, for determinism.
    """
    H, W = mask.shape
    ys, xs = np.nonzero(mask)
    n = len(ys)
    if n == 0:
        return np.zeros((H, W), np.int32), 0
    # Links only join mask pixels: dense arithmetic on the mask's bounding box is cheaper
    # than gathering the pixel pairs of each direction.
    r0, c0 = ys.min(), xs.min()
    box = (slice(r0, ys.max() + 1), slice(c0, xs.max() + 1))
    m, p, f = mask[box], np.nan_to_num(points[box]), np.nan_to_num(flow[box])
    h, w = m.shape
    z = np.abs(p[..., 2])
    fn = vector_norm(f)
    # Components of the link graph by image labelling on a doubled grid: pixels sit at even
    # coordinates, a kept link lights the cell between its two pixels, so 4-connected blobs
    # of the doubled grid are exactly the graph's components (several times faster than a
    # sparse-graph search).
    grid = np.zeros((2 * h - 1, 2 * w - 1), bool)
    grid[::2, ::2] = m
    for a, b, cells in (((slice(None), slice(0, w - 1)), (slice(None), slice(1, w)),
                         (slice(0, None, 2), slice(1, None, 2))),
                        ((slice(0, h - 1), slice(None)), (slice(1, h), slice(None)),
                         (slice(1, None, 2), slice(0, None, 2)))):
        jump = jump_rel * np.minimum(z[a], z[b])
        flow_jump = np.maximum(flow_floor, flow_jump_rel * 0.5 * (fn[a] + fn[b]))
        grid[cells] = (m[a] & m[b] & (squared_norm(p[a] - p[b]) < jump * jump)
                       & (squared_norm(f[a] - f[b]) < flow_jump * flow_jump))
    _, blobs = cv2.connectedComponents(grid.view(np.uint8), connectivity=4, ltype=cv2.CV_32S)
    comp = blobs[2 * (ys - r0), 2 * (xs - c0)] - 1
    sizes = np.bincount(comp)
    kept = sizes >= min_pixels
    if carried is not None:
        kept |= _continuing_components(comp, sizes, carried[ys, xs], kept, carried_min_pixels)
    # Relabel kept components 1..k in order of size (largest first) for determinism.
    by_size = np.argsort(-sizes, kind='stable')
    order = by_size[kept[by_size]]
    lut = np.zeros(len(sizes), np.int32)
    lut[order] = np.arange(1, len(order) + 1, dtype=np.int32)
    if small_min_pixels is not None:
        small = by_size[~kept[by_size] & (sizes[by_size] >= small_min_pixels)]
        lut[small] = -np.arange(1, len(small) + 1, dtype=np.int32)
    labels = np.zeros((H, W), np.int32)
    labels[ys, xs] = lut[comp]
    return labels, len(order)
