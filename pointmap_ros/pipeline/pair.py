"""One engine pair as the pipeline sees it: gated views of its maps in window units.

Every stage asks the same :class:`PairView` for masks, flow and flow magnitudes; each is
computed once, on first use, and only at the resolution it is used at (full-size for
published maps, strided for statistics).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from pointmap_ros.geometry.pointmap import (
    confidence_threshold, depth_ratio, squared_norm, valid_mask)
from pointmap_ros.pipeline.correspondence import PixelFlow
from pointmap_ros.tracking.window import WindowFrame
from pointmap_ros.types import DynamicPointMaps, MapName

__all__ = ['PairView', 'WorkGrid', 'window_scale']


@dataclass(frozen=True)
class WorkGrid:
    """The model resolution and the stride of the work grid statistics run on.

    Attributes:
        size: ``(H, W)`` of the engine's maps.
        stride: every ``stride``-th pixel in both directions (about ``work_pixels`` in all).
    """

    size: tuple[int, int]
    stride: int

    @classmethod
    def for_size(cls, size: tuple[int, int], work_pixels: int) -> 'WorkGrid':
        height, width = size
        return cls((int(height), int(width)),
                   max(1, int(round(math.sqrt(height * width / work_pixels)))))


def window_scale(ref: WindowFrame, maps: DynamicPointMaps, stride: int,
                 conf_threshold: float, conf_keep_quantile: float | None) -> float:
    """Window units per pair unit: median ratio of the reference frame's own-frame depth
    (stored when it was processed) to the pair's ``P_i(t_i)`` depth, on the strided grid.

    1 when the reference has no stored points yet or too few pixels match.
    """
    if ref.points_cam is None:
        return 1.0
    thr = confidence_threshold(maps.conf_i_ti, conf_threshold, conf_keep_quantile)
    conf = maps.conf_i_ti[::stride, ::stride]
    return depth_ratio(ref.points_cam[::stride, ::stride, 2],
                       maps.pts_i_ti[::stride, ::stride, 2],
                       (conf >= thr) & (conf < np.inf)) or 1.0


class PairView:
    """Confidence-gated views of one pair's maps (float32), scaled to window units.

    Read-only once built: the stages derive what they need from it and return it.

    Args:
        role: ``'keyframe'``, ``'gap<g>'`` or ``'baseline'`` (see
            :meth:`SlidingWindow.schedule`).
        ref: the pair's older frame (image i; all maps are in its camera frame).
        stamp: the current frame's stamp (image j), s.
        maps: the engine output.
        scale: window units per pair unit (:func:`window_scale`; 1 for metric engines).
        conf_threshold, conf_keep_quantile: the confidence gate
            (:func:`~pointmap_ros.geometry.pointmap.confidence_mask`).
        pixel_flow: the pair's dense 2D correspondences when the correspondence stage ran
            (its cross-time maps are then already in ``maps``), else None.
        measured_depth: the same-time maps carry a depth sensor's measurements (depth
            prior), not only the network's estimate.

    Attributes:
        dt: the pair's time gap ``stamp - ref.stamp``, s.
    """

    def __init__(self, role: str, ref: WindowFrame, stamp: float, maps: DynamicPointMaps,
                 scale: float, conf_threshold: float, conf_keep_quantile: float | None,
                 pixel_flow: PixelFlow | None = None, measured_depth: bool = False):
        self.role, self.ref, self.maps, self.scale = role, ref, maps, float(scale)
        self.dt = stamp - ref.stamp
        self.pixel_flow = pixel_flow
        self.measured_depth = measured_depth
        self._gate_args = (conf_threshold, conf_keep_quantile)
        self._thresholds: dict[MapName, float] = {}

    # -- maps in window units --------------------------------------------------------------
    def strided(self, name: MapName, stride: int = 1) -> np.ndarray:
        """``[h, w, 3]`` map ``name`` on the strided grid, window units."""
        points = self.maps.pts(name)[::stride, ::stride]
        return points if self.scale == 1.0 else points * np.float32(self.scale)

    @functools.cached_property
    def j_ti(self) -> np.ndarray:
        return self.strided(MapName.J_TI)

    @functools.cached_property
    def j_tj(self) -> np.ndarray:
        return self.strided(MapName.J_TJ)

    @functools.cached_property
    def i_ti(self) -> np.ndarray:
        return self.strided(MapName.I_TI)

    @functools.cached_property
    def i_tj(self) -> np.ndarray:
        return self.strided(MapName.I_TJ)

    # -- gates ---------------------------------------------------------------------------
    def gate(self, name: MapName, stride: int = 1) -> np.ndarray:
        """``[h, w]`` confidence gate of map ``name``, strided (threshold of the full map)."""
        confidence = self.maps.conf(name)
        if name not in self._thresholds:  # a cache of a pure function: no state change
            self._thresholds[name] = confidence_threshold(confidence, *self._gate_args)
        confidence = confidence[::stride, ::stride]
        confident = confidence >= self._thresholds[name]
        confident &= confidence < np.inf
        return confident

    @functools.cached_property
    def valid_j(self) -> np.ndarray:
        """``[H, W]`` current pixels with a valid, confident ``P_j(t_j)``."""
        return valid_mask(self.j_tj) & self.gate(MapName.J_TJ)

    @functools.cached_property
    def valid_flow(self) -> np.ndarray:
        """``[H, W]`` current pixels whose flow is defined (both maps valid and confident)."""
        return self.valid_j & valid_mask(self.j_ti) & self.gate(MapName.J_TI)

    @functools.cached_property
    def valid_i(self) -> np.ndarray:
        return valid_mask(self.i_ti) & self.gate(MapName.I_TI)

    @functools.cached_property
    def valid_i_tj(self) -> np.ndarray:
        return valid_mask(self.i_tj) & self.gate(MapName.I_TJ)

    # -- flow ----------------------------------------------------------------------------
    @functools.cached_property
    def flow_j(self) -> np.ndarray:
        """``[H, W, 3]`` scene flow of the current pixels, t_ref -> t, in the ref camera."""
        return self.j_tj - self.j_ti

    @functools.cached_property
    def flow_sq(self) -> np.ndarray:
        """``[H, W]`` ``|flow_j|^2``."""
        return squared_norm(self.flow_j)
