"""Sliding window of processed frames, pair scheduling and keyframes.

The window keeps at most ``size`` recent frames plus the pinned keyframe. Each new frame t is
paired with the keyframe (St4RTrack-style long-range anchor) and with the frames ``gaps``
positions back in the window (short-baseline flow). Positions count *processed* frames, so a
gap of 1 is always the previous processed frame even when the latency policy (the
keep-latest slot, pipeline/worker.py) skipped some.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from pointmap_ros.geometry.camera import project
from pointmap_ros.types import Frame

__all__ = ['STAMP_TOLERANCE_S', 'WindowFrame', 'SlidingWindow', 'view_overlap']

#: Stamps this close (s) count as equal where ages are compared with a limit in seconds: a
#: frame period's float rounding (0.7 - 0.3 < 0.4) or a driver's stamp jitter must not shift
#: a decision by a whole frame.
STAMP_TOLERANCE_S = 1e-3


@dataclass(eq=False)
class WindowFrame:
    """A processed frame and the state later pairs need from it.

    Attributes:
        frame: the engine input (model resolution).
        index: per-camera index of processed frames (0, 1, ...).
        K: ``[3, 3]`` intrinsics at model resolution, or None until known.
        depth: ``[H, W]`` metric depth at model resolution, or None.
        T_world_cam: ``[4, 4]`` float64 pose once processed (window units).
        points_cam: ``[H, W, 3]`` own-frame points in window units (scale reference).
        track_ids: ``[H, W]`` int32 track id per pixel (0 = none), for overlap association.
        flow_image: ``[h, w]`` uint8 grey image for optical flow (model crop, possibly
            sharper than the model resolution), or None when no correspondences are used.
        motion_mask: ``[H, W]`` bool motion mask once processed (temporal hysteresis of the
            next frames' motion test).
        T_odom_cam: ``[4, 4]`` the odometry's pose of the camera at this frame's stamp
            (metres), or None (pipeline/odometry_prior.py).
    """

    frame: Frame
    index: int
    K: np.ndarray | None = None
    depth: np.ndarray | None = None
    T_world_cam: np.ndarray | None = None
    points_cam: np.ndarray | None = None
    track_ids: np.ndarray | None = None
    flow_image: np.ndarray | None = None
    motion_mask: np.ndarray | None = None
    T_odom_cam: np.ndarray | None = None

    @property
    def stamp(self) -> float:
        return self.frame.stamp


class SlidingWindow:
    """Bounded buffer of :class:`WindowFrame` with a pinned keyframe.

    Args:
        size: frames kept besides the keyframe (>= 1).
        gaps: positions back (1 = previous processed frame) to pair each new frame with.
        on_evict: called with a frame key when it leaves the window for good (e.g.
            ``engine.forget`` so the encoder cache does not hold dead frames).
    """

    def __init__(self, size: int, gaps: tuple[int, ...] = (1,),
                 on_evict: Callable[[str], Any] | None = None):
        self._frames: collections.deque[WindowFrame] = collections.deque()
        self.size = size
        self.gaps = tuple(sorted(set(gaps)))
        self.keyframe: WindowFrame | None = None
        self._on_evict = on_evict

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def latest(self) -> WindowFrame | None:
        return self._frames[-1] if self._frames else None

    def schedule(self, stamp: float | None = None, baseline_s: float = 0.0
                 ) -> list[tuple[str, WindowFrame]]:
        """Reference frames for the next frame: ``[('keyframe', kf), ('gap<g>', f), ...,
        ('baseline', f)]``.

        A gap frame equal to the keyframe is not paired twice. With ``baseline_s`` > 0 and
        the next frame's ``stamp``: while the keyframe is younger than ``baseline_s``, the
        newest frame at least that much older than the next one is paired too (the oldest
        frame when none is that old), unless it is paired already: right after a keyframe
        switch the keyframe pair spans a frame or two, too short a baseline for slow
        motion.
        """
        pairs = [('keyframe', self.keyframe)] if self.keyframe is not None else []
        for g in self.gaps:
            if g <= len(self._frames):
                ref = self._frames[-g]
                if ref is not self.keyframe:
                    pairs.append((f'gap{g}', ref))
        if (baseline_s > 0 and stamp is not None and self.keyframe is not None
                and self._frames
                and stamp - self.keyframe.stamp < baseline_s - STAMP_TOLERANCE_S):
            old_enough = [frame for frame in self._frames
                          if stamp - frame.stamp >= baseline_s - STAMP_TOLERANCE_S]
            ref = old_enough[-1] if old_enough else self._frames[0]
            if ref.stamp < self.keyframe.stamp and all(ref is not paired for _, paired in pairs):
                pairs.append(('baseline', ref))
        return pairs

    def push(self, wf: WindowFrame) -> None:
        """Append a processed frame, evicting the oldest beyond ``size``."""
        self._frames.append(wf)
        while len(self._frames) > self.size:
            old = self._frames.popleft()
            if old is not self.keyframe and self._on_evict is not None:
                self._on_evict(old.frame.key)

    def restart(self, wf: WindowFrame) -> None:
        """Release every frame and the keyframe, and pin ``wf`` as keyframe (re-anchoring
        after lost tracking); ``wf`` is pushed by the caller as any processed frame."""
        old = [f for f in (*self._frames, self.keyframe) if f is not None and f is not wf]
        self._frames.clear()
        self.keyframe = wf
        if self._on_evict is not None:
            for key in dict.fromkeys(f.frame.key for f in old):
                self._on_evict(key)

    def set_keyframe(self, wf: WindowFrame) -> None:
        """Pin ``wf`` as keyframe; the old one is released if it already left the window."""
        old = self.keyframe
        self.keyframe = wf
        if (old is not None and old is not wf and self._on_evict is not None
                and all(f is not old for f in self._frames)):
            self._on_evict(old.frame.key)


def view_overlap(points_in_ref: np.ndarray, K_ref: np.ndarray, valid: np.ndarray,
                 ref_shape: tuple[int, int]) -> float:
    """Fraction of valid pixels whose points project inside the reference image.

    Args:
        points_in_ref: ``[h, w, 3]`` the current image's points (any subsample) in the
            reference camera frame.
        K_ref: ``[3, 3]`` reference intrinsics.
        valid: ``[h, w]`` bool pixels to count.
        ref_shape: ``(H, W)`` of the reference image ``K_ref`` belongs to.
    """
    H, W = ref_shape
    n = np.count_nonzero(valid)
    if n == 0:
        return 0.0
    uv = project(points_in_ref[valid], K_ref)
    inside = ((uv[:, 0] >= -0.5) & (uv[:, 0] <= W - 0.5)
              & (uv[:, 1] >= -0.5) & (uv[:, 1] <= H - 0.5))
    return float(np.count_nonzero(inside)) / n

