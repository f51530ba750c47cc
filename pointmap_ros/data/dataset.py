"""Torch datasets of DPM training pairs generated on the fly from procedural scenes.

Every sample is one frame pair (I_i, I_j) of a generated sequence with the four ground-truth
point maps in camera i's frame (metres), validity and motion masks. Sequences are identified
by their generator seed; the seed ranges of the three splits are disjoint and defined once in
:data:`SPLIT_SEEDS`, so evaluation never sees a training scene.

Ray casting dominates the cost of a sample, so both datasets keep a small LRU cache of scene
generators, each of which caches its rendered frames.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from pointmap_ros.data.scenes import SceneConfig, SceneGenerator, varied_motion
from pointmap_ros.errors import ConfigError
from pointmap_ros.types import MAP_NAMES

__all__ = ['SPLIT_SEEDS', 'split_seeds', 'PairDataConfig', 'make_sample', 'swap_sample',
           'normalize_image', 'DPMPairDataset', 'DPMPairStream']

#: Half-open seed ranges of the generated splits. Training draws only from 'train'; 'test'
#: seeds are the held-out sequences every reported number is measured on.
SPLIT_SEEDS: dict[str, tuple[int, int]] = {
    'train': (0, 1_000_000),
    'val': (1_000_000, 1_001_000),
    'test': (2_000_000, 2_001_000),
}


def split_seeds(split: str, count: int, offset: int = 0) -> list[int]:
    """The first ``count`` seeds of ``split`` starting at ``offset`` within its range.

    Raises:
        ConfigError: for an unknown split or a request beyond the split's range.
    """
    if split not in SPLIT_SEEDS:
        raise ConfigError(f'unknown split {split!r}; expected one of {sorted(SPLIT_SEEDS)}',
                          name='split', value=split)
    lo, hi = SPLIT_SEEDS[split]
    if count < 0 or offset < 0 or lo + offset + count > hi:
        raise ConfigError(f'{count} seeds from offset {offset} exceed split {split!r} range '
                          f'[{lo}, {hi})', name='count', value=count)
    return list(range(lo + offset, lo + offset + count))


@dataclass
class PairDataConfig:
    """How pairs are drawn.

    Attributes:
        height, width: image size (pixels), the model's native resolution.
        num_frames: frames per generated sequence.
        gap_min, gap_max: inclusive range of the frame gap |j - i| (frames).
        symmetrize: probability of swapping the roles of i and j (the maps are re-expressed
            in the new camera i); 0 disables it.
        cache_size: number of sequences kept in memory.
        pairs_per_sequence: pairs drawn from a sequence (dataset: exactly; stream: on average)
            before it is replaced.
        scene: extra :class:`SceneConfig` keyword arguments.
        vary_scenes: probability that a sequence gets randomised motion settings (drawn from
            its seed, see :meth:`scene_config`): faster or slower objects, a static camera,
            more objects, an articulated object. 0 (evaluation) keeps every sequence at
            ``scene``'s settings.
    """

    height: int = 96
    width: int = 128
    num_frames: int = 24
    gap_min: int = 1
    gap_max: int = 4
    symmetrize: float = 0.5
    cache_size: int = 8
    pairs_per_sequence: int = 16
    scene: dict = field(default_factory=dict)
    vary_scenes: float = 0.0

    def validate(self) -> None:
        if not 1 <= self.gap_min <= self.gap_max < self.num_frames:
            raise ConfigError(f'need 1 <= gap_min ({self.gap_min}) <= gap_max ({self.gap_max}) '
                              f'< num_frames ({self.num_frames})', name='gap_max',
                              value=self.gap_max)
        if not 0.0 <= self.symmetrize <= 1.0:
            raise ConfigError(f'symmetrize must be a probability, got {self.symmetrize}',
                              name='symmetrize', value=self.symmetrize)
        if self.cache_size < 1 or self.pairs_per_sequence < 1:
            raise ConfigError('cache_size and pairs_per_sequence must be >= 1, got '
                              f'{self.cache_size} and {self.pairs_per_sequence}')
        if not 0.0 <= self.vary_scenes <= 1.0:
            raise ConfigError(f'vary_scenes must be a probability, got {self.vary_scenes}',
                              name='vary_scenes', value=self.vary_scenes)

    def scene_config(self, seed: int | None = None) -> SceneConfig:
        """The :class:`SceneConfig` of sequence ``seed``.

        Without a seed, or when the seed's draw (probability ``1 - vary_scenes``) keeps it,
        this is ``scene``'s settings. Otherwise the motion is re-drawn from the seed
        (:func:`~pointmap_ros.data.scenes.varied_motion`).
        """
        kwargs = dict(self.scene)
        if seed is not None and self.vary_scenes > 0:
            if np.random.default_rng([int(seed), 0x5CE4E]).random() < self.vary_scenes:
                kwargs.update(varied_motion(seed))
        return SceneConfig(height=self.height, width=self.width, num_frames=self.num_frames,
                           **kwargs)


def normalize_image(rgb: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB -> ``[3, H, W]`` float32 in [-1, 1] (DUSt3R's normalisation)."""
    return np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32) / 127.5 - 1.0


def make_sample(gen: SceneGenerator, i: int, j: int) -> dict[str, np.ndarray]:
    """The training sample of pair (i, j) of ``gen``: numpy arrays ready for collation.

    Returns:
        ``img_i``/``img_j`` ``[3, H, W]`` float32 in [-1, 1]; ``pts_<m>`` ``[H, W, 3]``
        float32 metres in camera i (0 where invalid); ``valid_i``/``valid_j`` and
        ``motion_i``/``motion_j`` ``[H, W]`` bool; ``T_cami_camj`` ``[4, 4]`` float64;
        ``K`` ``[3, 3]`` float64; ``i``, ``j`` ints.
    """
    gt = gen.pair_ground_truth(i, j)
    sample = {
        'img_i': normalize_image(gen.render(i).rgb),
        'img_j': normalize_image(gen.render(j).rgb),
        'valid_i': np.asarray(gt.valid_i, dtype=bool),
        'valid_j': np.asarray(gt.valid_j, dtype=bool),
        'motion_i': np.asarray(gt.motion_i, dtype=bool) & np.asarray(gt.valid_i, dtype=bool),
        'motion_j': np.asarray(gt.motion_j, dtype=bool) & np.asarray(gt.valid_j, dtype=bool),
        'T_cami_camj': np.asarray(gt.T_cami_camj, dtype=np.float64),
        'K': np.asarray(gen.K, dtype=np.float64),
        'i': int(i), 'j': int(j),
    }
    for name in MAP_NAMES:
        valid = sample['valid_i'] if name.startswith('i') else sample['valid_j']
        pts = np.asarray(gt.maps.pts(name), dtype=np.float32)
        sample[f'pts_{name}'] = np.where(valid[..., None], np.nan_to_num(pts), 0.0)
    return sample


def swap_sample(sample: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Exchange the roles of i and j, re-expressing all four maps in the new camera i.

    The new pair is (I_j at t_j, I_i at t_i): new P_i(t_i) is old P_j(t_j), new P_i(t_j) is old
    P_j(t_i), and so on, each mapped by ``T_camj_cami = inv(T_cami_camj)``.
    """
    T = np.linalg.inv(sample['T_cami_camj'])
    R, t = T[:3, :3].astype(np.float32), T[:3, 3].astype(np.float32)
    renamed = {'i_ti': 'j_tj', 'i_tj': 'j_ti', 'j_ti': 'i_tj', 'j_tj': 'i_ti'}
    out = dict(sample)
    for a, b in (('img_i', 'img_j'), ('valid_i', 'valid_j'), ('motion_i', 'motion_j'),
                 ('i', 'j')):
        out[a], out[b] = sample[b], sample[a]
    for new, old in renamed.items():
        valid = out['valid_i'] if new.startswith('i') else out['valid_j']
        moved = sample[f'pts_{old}'] @ R.T + t
        out[f'pts_{new}'] = np.where(valid[..., None], moved, 0.0).astype(np.float32)
    out['T_cami_camj'] = T
    return out


class _SequenceCache:
    """LRU cache of scene generators; each keeps its own cache of ray-cast frames, so pairs
    drawn again from a cached sequence cost only the ground-truth arithmetic."""

    def __init__(self, config: PairDataConfig):
        self.config = config
        self._gens: collections.OrderedDict[int, SceneGenerator] = collections.OrderedDict()

    def sample(self, seed: int, i: int, j: int) -> dict[str, np.ndarray]:
        if seed in self._gens:
            self._gens.move_to_end(seed)
        else:
            self._gens[seed] = SceneGenerator(self.config.scene_config(seed), seed=seed)
            while len(self._gens) > self.config.cache_size:
                self._gens.popitem(last=False)
        sample = make_sample(self._gens[seed], i, j)
        sample['seed'] = seed
        return sample


def _draw_pair(rng: np.random.Generator, config: PairDataConfig) -> tuple[int, int, bool]:
    """A random (i, j, swap) with i < j and a gap in [gap_min, gap_max]."""
    gap = int(rng.integers(config.gap_min, config.gap_max + 1))
    i = int(rng.integers(0, config.num_frames - gap))
    return i, i + gap, bool(rng.random() < config.symmetrize)


def _to_torch(sample: dict) -> dict:
    return {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v
            for k, v in sample.items()}


class DPMPairDataset(Dataset):
    """Fixed, reproducible pairs from the sequences ``seeds`` (validation and evaluation).

    Item ``k`` is pair ``k % pairs_per_sequence`` of sequence ``seeds[k // pairs_per_sequence]``;
    its frames, gap and swap are drawn from a generator seeded by ``(seed, k)``, so the same
    index always yields the same pair.
    """

    def __init__(self, seeds: list[int], config: PairDataConfig):
        config.validate()
        self.seeds = list(seeds)
        self.config = config
        self._cache = _SequenceCache(config)

    def __len__(self) -> int:
        return len(self.seeds) * self.config.pairs_per_sequence

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f'index {index} out of range [0, {len(self)})')
        seed = self.seeds[index // self.config.pairs_per_sequence]
        i, j, swap = _draw_pair(np.random.default_rng([seed, index]), self.config)
        sample = self._cache.sample(seed, i, j)
        return _to_torch(swap_sample(sample) if swap else sample)


class DPMPairStream(IterableDataset):
    """Endless stream of random training pairs from the 'train' seed range.

    A pool of ``cache_size`` sequences is kept; each sample comes from a random pool member
    and, with probability ``1 / pairs_per_sequence``, the oldest member is replaced by a fresh
    sequence. Each DataLoader worker draws from its own random generator.
    """

    def __init__(self, config: PairDataConfig, seed: int = 0, split: str = 'train'):
        config.validate()
        split_seeds(split, 0)  # validates the split name
        self.config = config
        self.seed = int(seed)
        self.split = split

    def __iter__(self):
        info = get_worker_info()
        worker = info.id if info is not None else 0
        rng = np.random.default_rng([self.seed, worker])
        lo, hi = SPLIT_SEEDS[self.split]
        cache = _SequenceCache(self.config)
        pool = collections.deque(int(s) for s in rng.integers(lo, hi, self.config.cache_size))
        while True:
            if rng.random() < 1.0 / self.config.pairs_per_sequence:
                pool.popleft()
                pool.append(int(rng.integers(lo, hi)))
            seq = pool[int(rng.integers(0, len(pool)))]
            i, j, swap = _draw_pair(rng, self.config)
            sample = cache.sample(seq, i, j)
            yield _to_torch(swap_sample(sample) if swap else sample)
