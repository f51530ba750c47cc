"""An engine that serves known point maps (ground truth), for tests and debugging.

Feeding exact maps through the real pipeline isolates pipeline errors from network errors;
with ``noise_std`` it shows how the pipeline degrades with map noise.

Frame rule (:meth:`OracleEngine.from_scene`): the scene frame index of a :class:`Frame` is
``round(frame.stamp * fps)`` (its stamp, not its key, so skipped frames and any key scheme --
the pipeline's ``'<camera_id>/<stamp_ns>'``, the generator's ``'<camera_id>/<t>'`` -- work);
a stamp more than a quarter frame away from a frame time is an :class:`EngineError`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from pointmap_ros.engines.base import Engine, EngineInfo
from pointmap_ros.errors import EngineError
from pointmap_ros.types import MAP_NAMES, DynamicPointMaps, Frame

__all__ = ['OracleEngine', 'add_map_noise', 'in_other_units']


def add_map_noise(maps: DynamicPointMaps, noise_std: float, seed: int) -> DynamicPointMaps:
    """Copy of ``maps`` with i.i.d. Gaussian noise of ``noise_std * median depth`` on points.

    The median depth is that of ``pts_i_ti``; each map gets independent noise.
    """
    z = maps.pts_i_ti[..., 2]
    z = z[np.isfinite(z) & (z > 0)]
    sigma = noise_std * (float(np.median(z)) if z.size else 1.0)
    rng = np.random.default_rng(seed)
    noisy = {f'pts_{n}': (maps.pts(n) + rng.normal(0.0, sigma, maps.pts(n).shape))
             .astype(np.float32) for n in MAP_NAMES}
    return dataclasses.replace(maps, **noisy)


def in_other_units(maps: DynamicPointMaps, units_per_metre: float) -> DynamicPointMaps:
    """``maps`` (metric) in units of ``1 / units_per_metre`` m, flagged up-to-scale: what a
    perfect network that does not know metres would return."""
    factor = np.float32(units_per_metre)
    return dataclasses.replace(maps, metric=False,
                               **{f'pts_{n}': maps.pts(n) * factor for n in MAP_NAMES})


class OracleEngine(Engine):
    """Serves :class:`DynamicPointMaps` from a callable ``(key_i, key_j) -> maps``.

    Args:
        source: returns the maps of a pair (in camera i's frame) for two frame keys, or for
            the two :class:`Frame` objects when ``by_frame``.
        input_shape: ``(H, W)`` the maps have.
        noise_std: Gaussian point noise relative to median depth (0 = exact).
        noise_seed: base seed; the noise of a pair is a deterministic function of it and the
            keys.
        by_frame: call ``source(frame_i, frame_j)`` instead of ``source(key_i, key_j)``.
        memoize: keep every pair served, so a second pass over the same frames is a lookup
            (benchmarks: the ground truth's own computation stays out of the timed pass).
        two_map: withhold the cross-time maps as a converted DUSt3R checkpoint would: serve
            ``P_i(t_i)`` as ``P_i(t_j)`` and ``P_j(t_j)`` as ``P_j(t_i)`` (zero flow), and
            report ``cross_time_heads = 'withheld'``. Exact same-time maps with no motion
            information: what the correspondence stage has to recover.
    """

    backend = 'oracle'

    def __init__(self, source: Callable[..., DynamicPointMaps],
                 input_shape: tuple[int, int], noise_std: float = 0.0, noise_seed: int = 0,
                 by_frame: bool = False, memoize: bool = False, two_map: bool = False):
        super().__init__(cache_size=0)
        self.two_map = bool(two_map)
        self.cross_time_heads = 'withheld' if two_map else 'exact'
        self._source = source
        self._served: dict | None = {} if memoize else None
        self._by_frame = by_frame
        self._shape = (int(input_shape[0]), int(input_shape[1]))
        self.noise_std = float(noise_std)
        self.noise_seed = int(noise_seed)

    @property
    def input_shape(self) -> tuple[int, int]:
        return self._shape

    def encode(self, frame: Frame) -> Any:
        return frame.key  # nothing to compute: the "encoding" is the key itself

    def decode(self, enc_i: Any, enc_j: Any, frame_i: Frame, frame_j: Frame) -> DynamicPointMaps:
        if self._served is not None and (enc_i, enc_j) in self._served:
            return self._served[(enc_i, enc_j)]
        maps = (self._source(frame_i, frame_j) if self._by_frame
                else self._source(enc_i, enc_j))
        if maps.pts_i_ti.shape[:2] != self._shape:
            raise EngineError(f'oracle maps are {maps.pts_i_ti.shape[:2]}, engine declares '
                              f'{self._shape}')
        if self.noise_std > 0:
            seed = [self.noise_seed] + [ord(ch) for ch in f'{enc_i}|{enc_j}']
            maps = add_map_noise(maps, self.noise_std, int(np.random.SeedSequence(seed)
                                                           .generate_state(1)[0]))
        if self.two_map:
            maps = dataclasses.replace(
                maps, pts_i_tj=maps.pts_i_ti.copy(), conf_i_tj=maps.conf_i_ti.copy(),
                pts_j_ti=maps.pts_j_tj.copy(), conf_j_ti=maps.conf_j_tj.copy())
        maps = dataclasses.replace(maps, key_i=frame_i.key, key_j=frame_j.key)
        if self._served is not None:
            self._served[(enc_i, enc_j)] = maps
        return maps

    def info(self) -> EngineInfo:
        return EngineInfo(backend=self.backend,
                          cross_time_heads=self.cross_time_heads, input_shape=self._shape,
                          noise_std=self.noise_std, two_map=self.two_map)

    @classmethod
    def from_scene(cls, scene_config, seed: int = 0, noise_std: float = 0.0,
                   noise_seed: int = 0, memoize: bool = False, two_map: bool = False,
                   units_per_metre: float | None = None) -> 'OracleEngine':
        """Oracle over :class:`pointmap_ros.data.scenes.SceneGenerator` ground truth.

        The generator object is available as ``engine.scene`` (to render the images).
        ``units_per_metre``: serve the maps in other units, flagged up-to-scale
        (:func:`in_other_units`), as a network without metric scale would; None: metres.
        """
        from pointmap_ros.data.scenes import SceneGenerator

        gen = SceneGenerator(scene_config, seed=seed)
        fps = float(scene_config.fps)

        def index(frame: Frame) -> int:
            stamp = frame.stamp
            t = int(round(stamp * fps))
            if not 0 <= t < gen.num_frames or abs(t / fps - stamp) > 0.25 / fps:
                raise EngineError(f'stamp {stamp:.6f} s is not a frame of the scene '
                                  f'({gen.num_frames} frames at {fps} fps)')
            return t

        def source(frame_i: Frame, frame_j: Frame) -> DynamicPointMaps:
            maps = gen.pair_ground_truth(index(frame_i), index(frame_j)).maps
            return maps if units_per_metre is None else in_other_units(maps, units_per_metre)

        engine = cls(source, (scene_config.height, scene_config.width), noise_std, noise_seed,
                     by_frame=True, memoize=memoize, two_map=two_map)
        engine.scene = gen
        return engine
