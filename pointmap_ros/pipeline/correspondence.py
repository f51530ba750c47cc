"""Correspondence stage: dense 2D optical flow between the two images of a pair, and the
cross-time point maps it implies.

A DUSt3R/MonST3R checkpoint predicts only same-time maps (its cross-time heads are copies,
so ``P_i(t_j) == P_i(t_i)`` and scene flow is zero by construction). Optical flow supplies
the missing link: pixel ``u`` of image i shows, at time t_j, the material point that image j
sees at ``u + F_ij(u)``, hence

    P_i(t_j)(u) = P_j(t_j)(u + F_ij(u))        P_j(t_i)(v) = P_i(t_i)(v + F_ji(v))

(both maps already share camera i's frame). Where a pixel is occluded in the other image
or leaves it, the flow has no answer: forward-backward consistency (Sundaram et al. 2010,
``|F_ij(u) + F_ji(u + F_ij(u))|^2 <= abs^2 + rel^2 (|F_ij|^2 + |F_ji|^2)``) finds those
pixels, and their cross-time points are NaN (invalid) instead of invented.

Conventions: flow fields are ``[H, W, 2]`` float32 ``(du, dv)`` in pixels of the model
resolution, pixel centres at integer coordinates; ``forward`` maps image i to image j,
``backward`` image j to image i. Flow is estimated with OpenCV's DIS on grey images that may
be larger than the model resolution (same crop; see :class:`DenseFlow`) and then averaged
down, which sharpens it on real images without changing the maps' resolution.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from pointmap_ros.geometry.camera import pixel_grid
from pointmap_ros.geometry.pointmap import squared_norm
from pointmap_ros.tracking.window import WindowFrame
from pointmap_ros.types import DynamicPointMaps, Frame, MapName

__all__ = ['PixelFlow', 'FlowSource', 'DenseFlow', 'consistent_flow', 'compose_flow',
           'sample_map', 'correspondence_cross_time', 'fuse_cross_time',
           'resolve_cross_time_source', 'CROSS_TIME_SOURCES', 'FLOW_PRESETS']

#: Where the cross-time maps come from: the network's heads, the correspondences, the
#: correspondences where observed and the network elsewhere, or chosen by the engine.
CROSS_TIME_SOURCES = ('network', 'correspondence', 'fused', 'auto')



def resolve_cross_time_source(requested: str, engine) -> tuple[str, str]:
    """``(source, reason)``: ``requested`` with ``'auto'`` decided by the engine.

    ``'auto'`` trusts the network's cross-time maps only as far as they were shown to work:
    correspondences when its cross-time heads were never trained (``engine.cross_time_heads``
    is ``'initialised'``: a converted DUSt3R / MonST3R checkpoint, whose P_i(t_j) is a copy
    of P_i(t_i); or ``'withheld'``: an oracle serving only same-time maps); ``'fused'``
    (correspondences where observed, the network elsewhere) when they were trained but never
    shown to beat zero flow on held-out pairs (``'trained'``; ``pointmap-eval --record``
    validates a checkpoint); the network's own maps when they were (``'validated'``) or are
    exact (``'exact'``).
    """
    heads = getattr(engine, 'cross_time_heads', 'trained')
    if requested != 'auto':
        return requested, f'requested explicitly (cross-time heads: {heads})'
    if heads in ('initialised', 'withheld'):
        return 'correspondence', (f'auto: the engine\'s cross-time heads are {heads} '
                                  '(a copy of the same-time maps), so flow comes from dense '
                                  'correspondences')
    if heads == 'trained':
        return 'fused', ('auto: the engine\'s cross-time heads are trained but not validated '
                         '(no held-out flow below the zero-flow baseline recorded), so '
                         'correspondences where observed, the network elsewhere')
    return 'network', f'auto: the engine\'s cross-time heads are {heads}'


# (OpenCV DIS preset, finest pyramid level it matches patches at; 0 = full resolution,
# distance between patch centres in pixels; None = the preset's).
# What decides the flow's accuracy is the resolution of the images it is measured on, more
# than the preset: on validation sequences (192x256 model, 384x512 camera) motion IoU was
# 0.75 for 'accurate' on 224-pixel-wide images and 0.78 / 0.81 / 0.88 for 'fast' / 'balanced'
# / 'accurate' on the full 512 pixels, at about 7 / 12 / 50 ms per direction (one core);
# on the test sequences, though, 'fast' at 512 scored 0.70 against 0.79 for 'accurate' at
# flow_width 224 (~10 ms per direction), which was therefore kept; the default width is now
# 256 (PipelineConfig.flow_width has the measurements). 'balanced' at 512 (2026-12-06,
# validation, same cost as 'accurate' at 224): moving-pixel flow error 0.224 -> 0.213 of
# zero flow but motion IoU 0.929 -> 0.874 and a spurious track (the motion test's pixel
# thresholds are in the flow's pixels, half the size there).
# 'dense' is 'accurate' with its 8-pixel patches every 3 pixels instead of the preset's 4
# (2026-12-06, session 11): DIS underestimated the motion of moving objects (their rigid
# fits' motion projected on the true one: 0.86 on validation, shipped model + depth; 0.95
# with exact correspondences), and denser patches reduced that most of the knobs tried there
# (moving-pixel flow error over zero flow 0.350 with stride 4; stride 3 0.337, stride 2
# 0.319, 32 gradient-descent iterations 0.342, variational smoothness 10 instead of 20 0.368,
# 10 refinement iterations 0.348). Stride 3 costs about a quarter more flow time, stride 2
# about 1.8 times as much; 'dense' is opt-in because 'accurate' already sits near the
# stage's budget of 25 ms per pair at 512x288 (docs/benchmarks.md; docs/evaluation.md has
# its accuracy).
_DIS_PRESETS = {'fast': (cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, 1, None),
                'balanced': (cv2.DISOPTICAL_FLOW_PRESET_FAST, 1, None),
                'accurate': (cv2.DISOPTICAL_FLOW_PRESET_FAST, 0, None),
                'dense': (cv2.DISOPTICAL_FLOW_PRESET_FAST, 0, 3)}
_PRESET_WIDTH = 512
FLOW_PRESETS = tuple(_DIS_PRESETS)


@dataclass(frozen=True)
class PixelFlow:
    """Dense correspondences of one pair at model resolution.

    Attributes:
        forward: ``[H, W, 2]`` float32, image i -> image j.
        backward: ``[H, W, 2]`` float32, image j -> image i.
        forward_valid: ``[H, W]`` bool, the target is inside image j and the flow is
            forward-backward consistent (not occluded).
        backward_valid: ``[H, W]`` bool, the same for image j's pixels.
        pixel_scale: model pixels per pixel of the images the flow was measured on (< 1 when
            they were sharper): pixel thresholds are stated in measured pixels, since that
            is where the flow's precision lives.
    """

    forward: np.ndarray
    backward: np.ndarray
    forward_valid: np.ndarray
    backward_valid: np.ndarray
    pixel_scale: float = 1.0


@functools.lru_cache(maxsize=8)
def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`~pointmap_ros.geometry.camera.pixel_grid` as the separate contiguous ``(x,
    y)`` float32 planes ``cv2.remap`` takes (cached, read-only)."""
    grid = pixel_grid(height, width, np.float32)
    x, y = np.ascontiguousarray(grid[..., 0]), np.ascontiguousarray(grid[..., 1])
    x.flags.writeable = y.flags.writeable = False
    return x, y


def _targets(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x, y, inside)`` of ``flow``'s targets ``pixel + flow`` (``[H, W]`` float32 planes,
    as ``cv2.remap`` takes them) and whether each lies inside the image (pixel centres at
    integer coordinates, so the image spans -0.5 to size - 0.5)."""
    height, width = flow.shape[:2]
    x, y = _grid(height, width)
    target_x, target_y = x + flow[..., 0], y + flow[..., 1]
    inside = ((target_x >= -0.5) & (target_x <= width - 0.5)
              & (target_y >= -0.5) & (target_y <= height - 0.5))
    return target_x, target_y, inside


def consistent_flow(flow: np.ndarray, reverse: np.ndarray, abs_tol_px: float = 0.75,
                    rel_tol: float = 0.1) -> np.ndarray:
    """``[H, W]`` bool: ``flow``'s target is inside the image and ``reverse`` brings it back.

    Args:
        flow: ``[H, W, 2]`` flow of this image's pixels into the other image.
        reverse: ``[H, W, 2]`` flow of the other image's pixels back into this one.
        abs_tol_px, rel_tol: the round trip may miss by ``sqrt(abs^2 + rel^2 (|flow|^2 +
            |reverse at target|^2))`` pixels (Sundaram et al.: 0.71 px and 0.1).
    """
    tx, ty, inside = _targets(flow)
    back = cv2.remap(np.ascontiguousarray(reverse, np.float32), tx, ty, cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)
    miss = squared_norm(flow + back)
    tol = abs_tol_px ** 2 + rel_tol ** 2 * (squared_norm(flow) + squared_norm(back))
    return inside & (miss <= tol)


class FlowSource(Protocol):
    """What the pipeline asks for the correspondences of a pair.

    A source whose ``concurrent_with_inference`` attribute is true reads nothing but the
    two frames' images, so the pipeline computes its flows on a helper thread while the
    engine infers the same pairs (one call at a time, in schedule order); without the
    attribute they are computed after inference, on the caller's thread.
    """

    def pair_flow(self, ref: WindowFrame, current: WindowFrame,
                  size: tuple[int, int]) -> PixelFlow:
        """Flow between the reference frame (image i) and the current one (image j) at
        model resolution ``size = (H, W)``."""


class DenseFlow:
    """Forward and backward DIS optical flow of a pair, resampled to model resolution.

    Args:
        preset: ``'fast'`` (~7 ms per direction at 512x288 on one core), ``'balanced'``
            (~12 ms) or ``'accurate'`` (~50 ms at 512x288, ~10 ms at a 224-pixel flow width,
            1.3 x that at the default 256); see ``_DIS_PRESETS``.
        abs_tol_px, rel_tol: forward-backward tolerances (:func:`consistent_flow`), checked
            on the measured flow (absolute one in pixels of the flow's images).
        warm_start: start a pair's flow from the flows measured before it
            (:class:`_FlowChain`): the nearest pair from the previous frame's motion, a
            longer one from the chain through the camera's previous frame, each pixel's
            start kept where it matches better than no motion (:func:`_screened_start`).
            DIS matches coarse to fine from zero, and on a small object that moved farther
            than its own size the coarse levels see only the background's motion: on
            validation sequences the flow of moving pixels 2 / 3 / 4 frames apart kept 76 /
            67 / 54 % of their true motion (projected on it) and missed it by 29 / 40 / 51 %
            (end-point error over its length); from the chain 90 / 88 / 86 % and 17 / 19 /
            21 %, and on static pixels 2-7 % less error. Needs the pairs of a frame asked
            nearest reference first (the pipeline does).

    Not thread-safe (its DIS instances and measured flows): one per pipeline, called by one
    thread at a time.
    """

    #: Only the frames' grey images are read: safe to run beside the engine's inference.
    concurrent_with_inference = True

    def __init__(self, preset: str = 'accurate', abs_tol_px: float = 0.75, rel_tol: float = 0.1,
                 warm_start: bool = True):
        if preset not in _DIS_PRESETS:
            raise ValueError(f'DIS preset {preset!r} is not one of {tuple(_DIS_PRESETS)}')
        dis_preset, self._finest_scale, patch_stride = _DIS_PRESETS[preset]
        self._dis, self._dis_warm = (cv2.DISOpticalFlow_create(dis_preset) for _ in range(2))
        if patch_stride is not None:
            self._dis.setPatchStride(patch_stride)
            self._dis_warm.setPatchStride(patch_stride)
        self.abs_tol_px, self.rel_tol = float(abs_tol_px), float(rel_tol)
        self._chain = _FlowChain() if warm_start else None

    @staticmethod
    def grey(image: np.ndarray) -> np.ndarray:
        """The flow's input for an RGB uint8 image: its grey level, contiguous uint8."""
        return np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))

    def pair_flow(self, ref: WindowFrame, current: WindowFrame,
                  size: tuple[int, int]) -> PixelFlow:
        """:class:`FlowSource`: flow of the frames' grey flow images (``flow_image``)."""
        grey_ref, grey_cur = ref.flow_image, current.flow_image
        if grey_ref is None or grey_cur is None or grey_ref.shape != grey_cur.shape:
            # The source was switched on at run time: the model images of both instead.
            grey_ref, grey_cur = self.grey(ref.frame.image), self.grey(current.frame.image)
        if self._chain is None:
            return self._estimate(grey_ref, grey_cur, size, None)[0]
        initial = self._chain.initial(ref.frame, current.frame, grey_ref.shape)
        if initial is not None:
            initial = (_screened_start(grey_ref, grey_cur, initial[0]),
                       _screened_start(grey_cur, grey_ref, initial[1]))
        flow, measured = self._estimate(grey_ref, grey_cur, size, initial)
        self._chain.record(ref.frame, current.frame, measured)
        return flow

    def estimate(self, grey_i: np.ndarray, grey_j: np.ndarray,
                 size: tuple[int, int]) -> PixelFlow:
        """Flows of a pair of grey images (equal shapes, the model crop at any scale >= 1),
        resampled to ``size = (H, W)`` model pixels, with their consistency masks (a cold
        start: no flows measured before)."""
        return self._estimate(grey_i, grey_j, size, None)[0]

    def _estimate(self, grey_i: np.ndarray, grey_j: np.ndarray, size: tuple[int, int],
                  initial: tuple[np.ndarray, np.ndarray] | None
                  ) -> tuple[PixelFlow, tuple[np.ndarray, np.ndarray]]:
        """:meth:`estimate` from the ``initial`` ``(forward, backward)`` flows at the grey
        images' resolution (None: from zero; DIS still matches through its whole pyramid),
        and the ``(forward, backward)`` flows as measured."""
        grey_i, grey_j = np.ascontiguousarray(grey_i), np.ascontiguousarray(grey_j)
        # The presets' pyramid levels are for 512-pixel-wide images: smaller ones are
        # matched one level finer per halving, so a small camera is not matched on a
        # handful of coarse patches.
        halvings = int(np.floor(np.log2(max(1.0, _PRESET_WIDTH / grey_i.shape[1]))))
        # OpenCV's DIS starts from the flow argument when it is a float32 2-channel field of
        # the images' size (and overwrites it: copies). An instance that has been given one
        # no longer gives a fresh instance's flow for a None in later calls (OpenCV 5.0: 2-6
        # px apart), and zeros are not what None does either (up to 4 px apart): warm starts
        # get an instance of their own.
        if initial is None:
            dis, start_forward, start_backward = self._dis, None, None
        else:
            dis = self._dis_warm
            start_forward = np.array(initial[0], np.float32)
            start_backward = np.array(initial[1], np.float32)
        dis.setFinestScale(max(0, self._finest_scale - halvings))
        forward = dis.calc(grey_i, grey_j, start_forward)
        backward = dis.calc(grey_j, grey_i, start_backward)
        # Consistency where the flow was measured (its own pixels, and fewer of them when
        # the model is larger), then every field resampled to the model grid.
        forward_valid = consistent_flow(forward, backward, self.abs_tol_px, self.rel_tol)
        backward_valid = consistent_flow(backward, forward, self.abs_tol_px, self.rel_tol)
        flow = PixelFlow(_to_size(forward, size), _to_size(backward, size),
                         _mask_to_size(forward_valid, size), _mask_to_size(backward_valid, size),
                         size[1] / grey_i.shape[1])
        return flow, (forward, backward)


def _screened_start(grey_from: np.ndarray, grey_to: np.ndarray, start: np.ndarray,
                    window: int = 7) -> np.ndarray:
    """``start`` (flow ``grey_from -> grey_to``) where it matches each pixel's
    ``window``-square neighbourhood at least as well as no motion does, else zero.

    A start carries motion measured before this pair over to it; where the motion has
    changed since (a 1 fps clip: the real car clip's camera pans with the car, and starts
    carried over one or two seconds missed the car's image motion), a start from zero lets
    DIS find the motion coarse to fine as it would cold. Screened, the car's motion mask in
    the clip's middle frame went from 1.9 % of the image (unscreened start) to 11.8 % (cold:
    6.5 %).
    """
    source = grey_from.astype(np.float32)
    target = grey_to.astype(np.float32)
    moved = _read_at(target, start)
    miss_moved = cv2.blur(np.abs(moved - source), (window, window))
    miss_still = cv2.blur(np.abs(target - source), (window, window))
    return np.where((miss_moved <= miss_still)[..., None], start, np.float32(0))


def compose_flow(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """``[H, W, 2]`` flow of the chain ``first`` (image a -> b) then ``second`` (b -> c):
    ``first(u) + second(u + first(u))``."""
    return first + _read_at(second, first)


def _read_at(field: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """``field`` ``[H, W]`` or ``[H, W, C]`` read bilinearly at ``pixel + offset`` (replicated
    border)."""
    target_x, target_y, _ = _targets(offset)
    return cv2.remap(np.ascontiguousarray(field, np.float32), target_x, target_y,
                     cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


@dataclass
class _MeasuredFrame:
    """One frame's flows as :class:`DenseFlow` measured them: reference key -> (reference
    stamp, forward flow reference -> frame, backward flow frame -> reference)."""

    key: str
    stamp: float
    pairs: dict[str, tuple[float, np.ndarray, np.ndarray]]


class _FlowChain:
    """The flows :class:`DenseFlow` measured for each camera's previous frame and, so far,
    for its current one, and the start flows they give a new pair (reference r, current c):

    - r is the camera's previous frame p (the nearest pair): p's own nearest pair (q, p)
      carried on at constant image velocity, ``F_pc(u) = k F_qp(u - k F_qp(u))`` and
      ``F_cp(v) = k F_pq(v + k F_pq(v))`` (one fixed-point step; ``k`` the ratio of the
      frame gaps, used between 0.5 and 2);
    - r is older (the keyframe): the chain ``r -> p -> c``, ``r -> p`` measured with p's
      pairs and ``p -> c`` with c's nearest pair, which the pipeline asks first.

    Frames are told apart by their keys; a camera's flows are dropped once its next frame
    starts, so memory stays at two frames' pairs per camera.
    """

    #: Frame-gap ratios beyond which the previous motion is no prediction (dropped frames).
    _GAP_RATIO_RANGE = (0.5, 2.0)

    def __init__(self):
        # camera id -> its previous frame and its current one.
        self._previous: dict[str, _MeasuredFrame] = {}
        self._current: dict[str, _MeasuredFrame] = {}

    def record(self, ref: Frame, current: Frame,
               flows: tuple[np.ndarray, np.ndarray]) -> None:
        camera = current.camera_id
        measured = self._current.get(camera)
        if measured is None or measured.key != current.key:
            if measured is not None:
                self._previous[camera] = measured
            measured = self._current[camera] = _MeasuredFrame(current.key, current.stamp, {})
        for flow in flows:  # shared with the PixelFlow handed out: nobody may change them
            flow.flags.writeable = False
        measured.pairs[ref.key] = (ref.stamp, *flows)

    def initial(self, ref: Frame, current: Frame, shape: tuple[int, ...]
                ) -> tuple[np.ndarray, np.ndarray] | None:
        """``(forward, backward)`` start flows of the pair at the flow images' ``shape``,
        or None (no measured flows to start from)."""
        camera = current.camera_id
        previous, measured = self._previous.get(camera), self._current.get(camera)
        if measured is not None and measured.key != current.key:
            previous, measured = measured, None  # the frame's first pair
        if previous is None:
            return None
        if ref.key == previous.key:
            start = self._constant_velocity(previous, current.stamp)
        else:
            start = self._chained(previous, measured, ref.key)
        if start is None or any(flow.shape[:2] != tuple(shape[:2]) for flow in start):
            return None  # nothing to start from, or the flow images changed size
        return start

    def _constant_velocity(self, previous: _MeasuredFrame, stamp: float
                           ) -> tuple[np.ndarray, np.ndarray] | None:
        if not previous.pairs:
            return None
        ref_stamp, forward, backward = max(previous.pairs.values(), key=lambda pair: pair[0])
        low, high = self._GAP_RATIO_RANGE
        if not previous.stamp > ref_stamp:
            return None
        ratio = (stamp - previous.stamp) / (previous.stamp - ref_stamp)
        if not low <= ratio <= high:
            return None
        forward, backward = ratio * forward, ratio * backward
        return _read_at(forward, -forward), _read_at(backward, backward)

    @staticmethod
    def _chained(previous: _MeasuredFrame, measured: _MeasuredFrame | None, ref_key: str
                 ) -> tuple[np.ndarray, np.ndarray] | None:
        to_previous = previous.pairs.get(ref_key)
        from_previous = None if measured is None else measured.pairs.get(previous.key)
        if to_previous is None or from_previous is None:
            return None
        ref_stamp, forward_rp, backward_pr = to_previous
        _, forward_pc, backward_cp = from_previous
        if not ref_stamp < previous.stamp < measured.stamp:
            return None
        return (_chain_or_extend(forward_rp, forward_pc,
                                 (measured.stamp - ref_stamp) / (previous.stamp - ref_stamp)),
                _chain_or_extend(backward_cp, backward_pr,
                                 (measured.stamp - ref_stamp) / (measured.stamp - previous.stamp)))


def _chain_or_extend(first: np.ndarray, second: np.ndarray, extension: float) -> np.ndarray:
    """``compose_flow(first, second)``, except where ``first`` leaves the image (the middle
    image never saw the pixel, so ``second`` has nothing to say there: read at the border,
    it would be another pixel's flow): there ``first`` scaled by ``extension`` (the ratio of
    the whole gap to the first one's, constant image velocity)."""
    outside = ~_targets(first)[2]
    chained = compose_flow(first, second)
    if outside.any():
        chained[outside] = extension * first[outside]
    return chained


def _to_size(flow: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Flow ``[h, w, 2]`` resampled to ``size = (H, W)`` (averaged down, bilinear up) and
    rescaled to its pixels."""
    H, W = size
    h, w = flow.shape[:2]
    if (h, w) == (H, W):
        return flow
    shrink = W < w
    out = cv2.resize(flow, (W, H), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    out[..., 0] *= W / w
    out[..., 1] *= H / h
    return out


def _mask_to_size(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bool mask resampled to ``size = (H, W)``: nearest when enlarging; when shrinking, a
    model pixel is valid only if all the measured pixels it covers are."""
    H, W = size
    if mask.shape == (H, W):
        return mask
    if W > mask.shape[1]:
        return cv2.resize(mask.view(np.uint8), (W, H), interpolation=cv2.INTER_NEAREST).view(bool)
    covered = cv2.resize(mask.astype(np.float32), (W, H), interpolation=cv2.INTER_AREA)
    return covered >= 0.999


def sample_map(values: np.ndarray, flow: np.ndarray, jump_rel: float = 0.05) -> np.ndarray:
    """``values`` (``[H, W, C]`` float32 of the *other* image) read at ``pixel + flow``.

    Bilinear inside a surface; nearest-neighbour where the four neighbours straddle a depth
    discontinuity (their depths, channel 2, spread more than ``jump_rel`` of the nearer) or
    include an invalid (NaN) one, so no point is invented between a foreground object and
    the background behind it. Targets outside the image give NaN.
    """
    H, W = flow.shape[:2]
    tx, ty, inside = _targets(flow)
    src = np.ascontiguousarray(values, np.float32)
    # Replicated borders, so a read exactly on the last row/column is not a blend with the
    # outside; targets beyond the image are set to NaN explicitly below.
    sampled = cv2.remap(src, tx, ty, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    z = src[..., 2]
    # Is the 2x2 neighbourhood whose top-left corner is (floor x, floor y) one surface?
    kernel = np.ones((2, 2), np.uint8)
    z_filled = np.where(np.isfinite(z), z, np.float32(0))
    z_max = cv2.dilate(z_filled, kernel, anchor=(0, 0), borderType=cv2.BORDER_REPLICATE)
    z_min = cv2.erode(z_filled, kernel, anchor=(0, 0), borderType=cv2.BORDER_REPLICATE)
    one_surface = ((z_max - z_min) <= jump_rel * z_min).view(np.uint8)
    smooth = cv2.remap(one_surface, np.floor(tx), np.floor(ty), cv2.INTER_NEAREST,
                       borderMode=cv2.BORDER_REPLICATE).view(bool)
    jump = ~smooth | ~np.isfinite(sampled[..., 2])
    # Bilinear, with the few pixels that differ written by index (NumPy's broadcast of an
    # [H, W, 1] mask over the channels costs more than the two remaps together).
    rows = sampled.reshape(H * W, -1)  # a view: writes land in ``sampled``
    jumped = np.flatnonzero(jump)
    if jumped.size:
        nearest = cv2.remap(src, tx, ty, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
        rows[jumped] = nearest.reshape(H * W, -1)[jumped]
    rows[np.flatnonzero(~inside)] = np.nan
    return sampled


def _warp_with_confidence(points: np.ndarray, conf: np.ndarray, flow: np.ndarray,
                          valid: np.ndarray, own_conf: np.ndarray
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Points and confidence of the other image read through ``flow``; invalid -> NaN / 1."""
    sampled = sample_map(np.concatenate([points, conf[..., None]], axis=-1), flow)
    failed = np.flatnonzero(~(valid & np.isfinite(sampled[..., 2])))
    pts = np.ascontiguousarray(sampled[..., :3])
    pts.reshape(-1, 3)[failed] = np.nan
    # A correspondence is as trustworthy as the less confident of its two ends; 1 is the
    # floor of DUSt3R confidences (1 + exp(x)), i.e. "no confidence".
    out_conf = np.minimum(sampled[..., 3], own_conf)
    out_conf.reshape(-1)[failed] = 1.0
    return pts, out_conf


def correspondence_cross_time(maps: DynamicPointMaps, flow: PixelFlow,
                              forward: bool = True) -> DynamicPointMaps:
    """``maps`` with ``P_i(t_j)`` and ``P_j(t_i)`` rebuilt from the same-time maps and the
    pair's correspondences (module docstring); NaN where occluded or out of frame.

    The same-time maps and their confidences are kept unchanged. ``forward=False`` skips
    ``P_i(t_j)`` (all NaN, confidence 1) for a caller that never reads it: the pipeline's
    motion, pose and scene flow are all of image j's pixels.
    """
    if forward:
        i_tj, conf_i_tj = _warp_with_confidence(maps.pts_j_tj, maps.conf_j_tj, flow.forward,
                                                flow.forward_valid, maps.conf_i_ti)
    else:
        i_tj = np.full_like(maps.pts_i_ti, np.nan)
        conf_i_tj = np.ones_like(maps.conf_i_ti)
    j_ti, conf_j_ti = _warp_with_confidence(maps.pts_i_ti, maps.conf_i_ti, flow.backward,
                                            flow.backward_valid, maps.conf_j_tj)
    return dataclasses.replace(maps, pts_i_tj=i_tj, conf_i_tj=conf_i_tj,
                               pts_j_ti=j_ti, conf_j_ti=conf_j_ti)


def fuse_cross_time(network: DynamicPointMaps, correspondence: DynamicPointMaps,
                    forward: bool = True) -> DynamicPointMaps:
    """Per pixel: the correspondence's cross-time point where it is observed (valid), the
    network's elsewhere (all of ``P_i(t_j)`` when the correspondences skipped it:
    ``forward=False`` of :func:`correspondence_cross_time`).

    Why this rule: where the flow is forward-backward consistent the point is *measured*
    (same-time geometry at the matched pixel) and beats any regression of where a point
    went; where it is not (occlusion, out of view, textureless failure) only the network
    can say anything, so its prediction fills in, with its own confidence. DUSt3R-style
    confidences of two different sources are not calibrated against each other, so
    averaging by confidence would weigh apples against oranges.
    """
    def pick(name: MapName) -> tuple[np.ndarray, np.ndarray]:
        # Most pixels are measured: copy the correspondence's, write the network's rows.
        unmeasured = np.flatnonzero(~np.isfinite(correspondence.pts(name)[..., 2]))
        pts = correspondence.pts(name).astype(np.float32)  # a fresh copy
        conf = correspondence.conf(name).astype(np.float32)
        pts.reshape(-1, 3)[unmeasured] = network.pts(name).reshape(-1, 3)[unmeasured]
        conf.reshape(-1)[unmeasured] = network.conf(name).reshape(-1)[unmeasured]
        return pts, conf

    i_tj, conf_i_tj = (pick(MapName.I_TJ) if forward
                       else (network.pts_i_tj, network.conf_i_tj))
    j_ti, conf_j_ti = pick(MapName.J_TI)
    return dataclasses.replace(network, pts_i_tj=i_tj, conf_i_tj=conf_i_tj,
                               pts_j_ti=j_ti, conf_j_ti=conf_j_ti)
