"""Plain data types shared by the engines, the 4D pipeline and the ROS layer.

Dimension letters: H, W image rows/cols at the model resolution.

Convention: all point maps are channels-last float32 arrays ``[H, W, 3]`` in an OpenCV /
REP-103 optical frame (x right, y down, z forward). Units are those of the model (up to an
unknown global scale) unless a pipeline stage says it rescaled them to metres.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field

import numpy as np

__all__ = ['Frame', 'DynamicPointMaps', 'MapName', 'MAP_NAMES']

# Order in which the four DPM maps appear in flat model outputs (ONNX / TensorRT bindings):
# pts_<pixels of image>_<time>, all expressed in camera i's frame.


class MapName(enum.StrEnum):
    """The four maps of a pair: ``<image>_<time>``, e.g. ``I_TJ`` = image i's pixels at t_j.

    A ``StrEnum``: its values are the suffixes of :class:`DynamicPointMaps`' fields
    (``pts_i_tj``) and of flat output names, so ``f'pts_{name}'`` reads the field.
    """

    I_TI = 'i_ti'
    I_TJ = 'i_tj'
    J_TI = 'j_ti'
    J_TJ = 'j_tj'


MAP_NAMES = tuple(MapName)


@dataclass(frozen=True)
class Frame:
    """One image as fed to an engine.

    Attributes:
        image: ``[H, W, 3]`` uint8 RGB at the engine's input resolution.
        stamp: acquisition time in seconds (from the source header; never wall time).
        key: identifier unique within a stream (e.g. ``'cam0/42'``); engines cache encoder
            outputs by it, the oracle engine looks ground truth up by it.
        camera_id: which camera the frame came from.
    """

    image: np.ndarray
    stamp: float
    key: str
    camera_id: str = ''

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.image.shape[0]), int(self.image.shape[1])


@dataclass(frozen=True)
class DynamicPointMaps:
    """The four DPM point maps of a pair (I_i at t_i, I_j at t_j), all in camera i's frame.

    ``pts_i_tj`` is where image i's pixels are at time t_j, and so on. Scene flow of image i's
    pixels is ``pts_i_tj - pts_i_ti``. Confidences are >= 1 (DUSt3R's ``1 + exp(x)``).
    Arrays own their memory (never views into reused engine buffers).

    Attributes:
        pts_i_ti, pts_i_tj: ``[H_i, W_i, 3]`` float32, image i's pixels at t_i / t_j.
        pts_j_ti, pts_j_tj: ``[H_j, W_j, 3]`` float32, image j's pixels at t_i / t_j.
        conf_*: ``[H, W]`` float32 confidence of the matching map.
        key_i, key_j: the frame keys the pair was computed from.
        metric: True when the maps are in metres (e.g. ground truth); False for up-to-scale.
    """

    pts_i_ti: np.ndarray
    pts_i_tj: np.ndarray
    pts_j_ti: np.ndarray
    pts_j_tj: np.ndarray
    conf_i_ti: np.ndarray
    conf_i_tj: np.ndarray
    conf_j_ti: np.ndarray
    conf_j_tj: np.ndarray
    key_i: str = ''
    key_j: str = ''
    metric: bool = False
    extras: dict = field(default_factory=dict, compare=False)

    def pts(self, name: MapName | str) -> np.ndarray:
        """Point map ``[H, W, 3]`` by name (:class:`MapName` or its value, e.g. ``'i_tj'``)."""
        return self._maps(0)[MapName(name)]

    def conf(self, name: MapName | str) -> np.ndarray:
        """Confidence ``[H, W]`` of the map ``name``."""
        return self._maps(1)[MapName(name)]

    def _maps(self, column: int) -> dict[MapName, np.ndarray]:
        table = {MapName.I_TI: (self.pts_i_ti, self.conf_i_ti),
                 MapName.I_TJ: (self.pts_i_tj, self.conf_i_tj),
                 MapName.J_TI: (self.pts_j_ti, self.conf_j_ti),
                 MapName.J_TJ: (self.pts_j_tj, self.conf_j_tj)}
        return {name: arrays[column] for name, arrays in table.items()}

    def flow_i(self) -> np.ndarray:
        """Scene flow of image i's pixels from t_i to t_j, ``[H_i, W_i, 3]``, camera-i frame."""
        return self.pts_i_tj - self.pts_i_ti

    def flow_j(self) -> np.ndarray:
        """Scene flow of image j's pixels from t_i to t_j, ``[H_j, W_j, 3]``, camera-i frame."""
        return self.pts_j_tj - self.pts_j_ti

    def swapped(self) -> 'DynamicPointMaps':
        """The same maps with the roles of i and j exchanged *without* changing frame.

        Only a relabelling: the points stay in camera i's frame. Useful for symmetric code
        paths that then apply a pose.
        """
        return dataclasses.replace(
            self,
            pts_i_ti=self.pts_j_tj, pts_i_tj=self.pts_j_ti,
            pts_j_ti=self.pts_i_tj, pts_j_tj=self.pts_i_ti,
            conf_i_ti=self.conf_j_tj, conf_i_tj=self.conf_j_ti,
            conf_j_ti=self.conf_i_tj, conf_j_tj=self.conf_i_ti,
            key_i=self.key_j, key_j=self.key_i)

    @classmethod
    def from_flat(cls, outputs: dict, key_i: str = '', key_j: str = '',
                  metric: bool = False, copy: bool = True) -> 'DynamicPointMaps':
        """Build from a flat dict ``{'pts_i_ti': [H,W,3], 'conf_i_ti': [H,W], ...}``.

        A leading batch dimension of size 1 is removed; arrays become C-contiguous float32.
        With ``copy=True`` (default) they are always copied, so the result never aliases the
        caller's buffers. ``copy=False`` is for callers handing over arrays nobody else holds
        (an engine's freshly transferred host buffer): they are then copied only when they
        are not already C-contiguous float32, saving a full copy of the eight maps per pair.
        """
        kwargs = {}
        for name in MAP_NAMES:
            for prefix in ('pts', 'conf'):
                arr = np.asarray(outputs[f'{prefix}_{name}'])
                if arr.ndim == (4 if prefix == 'pts' else 3):
                    if arr.shape[0] != 1:
                        raise ValueError(f'expected batch size 1, got shape {arr.shape}')
                    arr = arr[0]
                kwargs[f'{prefix}_{name}'] = (np.array(arr, dtype=np.float32, order='C')
                                              if copy else
                                              np.ascontiguousarray(arr, dtype=np.float32))
        return cls(key_i=key_i, key_j=key_j, metric=metric, **kwargs)
