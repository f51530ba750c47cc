"""Intrinsics stage: the frame's K, from CameraInfo or from the maps themselves.

CameraInfo wins (this frame's, or the last one the camera sent). Without it, the focal
length is fitted (Weiszfeld, geometry/camera.py) on the keyframe pair's own map of image i
and accumulated over frames: a fit outside ``[focal_min_rel, focal_max_rel] * max(H, W)``
(or impossible, too few points) is rejected, and the running median of the earlier
plausible fits -- else the prior of ``focal_prior_fov_deg`` -- is used instead. The
principal point is the image centre.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pointmap_ros.errors import InputError
from pointmap_ros.geometry.camera import estimate_focal
from pointmap_ros.pipeline.config import PipelineConfig
from pointmap_ros.pipeline.pair import PairView, WorkGrid
from pointmap_ros.types import MapName

__all__ = ['Intrinsics', 'frame_intrinsics']

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Intrinsics:
    """The frame's intrinsics and how they were obtained.

    Attributes:
        K: ``[3, 3]`` at model resolution.
        estimated: True when fitted on the maps (no CameraInfo).
        focal_fit: a plausible focal fit (px) to add to the camera's history once the frame
            has a pose, else None.
        rejected: a fit was made and rejected as implausible (counted ``'focal_rejected'``).
    """

    K: np.ndarray
    estimated: bool
    focal_fit: float | None = None
    rejected: bool = False


def frame_intrinsics(camera_info_K: np.ndarray | None, keyframe_pair: PairView,
                     focal_history: Sequence[float], config: PipelineConfig,
                     grid: WorkGrid) -> Intrinsics:
    """The current frame's :class:`Intrinsics` (module docstring).

    Args:
        camera_info_K: the camera's last CameraInfo K at model resolution, or None.
        keyframe_pair: the frame's keyframe pair (its ``P_i(t_i)`` is fitted).
        focal_history: earlier plausible fits of this camera (px).
        config: plausibility bounds and the prior.
        grid: model size and work-grid stride.
    """
    if camera_info_K is not None:
        return Intrinsics(camera_info_K, estimated=False)
    side = max(grid.size)
    try:
        # Strided inside the fit, which keeps full-size pixel coordinates (a strided map
        # fitted as an image of its own would give f / stride); the scale is irrelevant.
        focal_fit = estimate_focal(keyframe_pair.maps.pts_i_ti,
                                   keyframe_pair.gate(MapName.I_TI), stride=grid.stride)
    except InputError as exc:
        logger.debug('focal fit failed: %s', exc)
        focal_fit = math.nan
    if config.focal_min_rel * side <= focal_fit <= config.focal_max_rel * side:
        focal = float(np.median([*focal_history, focal_fit]))
        return Intrinsics(_pinhole(focal, grid.size), True, focal_fit=focal_fit)
    logger.debug('focal fit %.4g px outside [%.3g, %.3g] px: rejected', focal_fit,
                 config.focal_min_rel * side, config.focal_max_rel * side)
    focal = (float(np.median(focal_history)) if len(focal_history)
             else config.prior_focal_rel * side)
    return Intrinsics(_pinhole(focal, grid.size), True, rejected=True)


def _pinhole(focal: float, size: tuple[int, int]) -> np.ndarray:
    """K with focal ``focal`` px and the principal point at the image centre."""
    height, width = size
    return np.array([[focal, 0, (width - 1) / 2], [0, focal, (height - 1) / 2], [0, 0, 1]])
