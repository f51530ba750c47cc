"""Pair datasets generated on the fly (data/dataset.py)."""

import itertools

import numpy as np
import pytest
import torch

from pointmap_ros.data.dataset import (SPLIT_SEEDS, DPMPairDataset, DPMPairStream,
                                       PairDataConfig, make_sample, normalize_image,
                                       split_seeds, swap_sample)
from pointmap_ros.data.scenes import SceneGenerator
from pointmap_ros.errors import ConfigError
from pointmap_ros.types import MAP_NAMES

CFG = PairDataConfig(height=32, width=48, num_frames=8, gap_min=1, gap_max=3,
                     pairs_per_sequence=4, cache_size=2)


def test_split_seed_ranges_are_disjoint():
    ranges = sorted(SPLIT_SEEDS.values())
    for (_, hi), (lo, _) in zip(ranges, ranges[1:]):
        assert hi <= lo
    assert split_seeds('test', 3, offset=2) == [SPLIT_SEEDS['test'][0] + k for k in (2, 3, 4)]
    with pytest.raises(ConfigError, match='unknown split'):
        split_seeds('holdout', 1)
    with pytest.raises(ConfigError, match='exceed'):
        split_seeds('val', 10**7)


def test_config_validation():
    for bad in (dict(gap_min=0), dict(gap_min=3, gap_max=2), dict(gap_max=8),
                dict(symmetrize=1.5), dict(cache_size=0)):
        with pytest.raises(ConfigError):
            PairDataConfig(**{**CFG.__dict__, **bad}).validate()


def test_swapped_sample_equals_the_reversed_pair():
    # Re-expressing (i, j) in camera j must give exactly the generator's pair (j, i).
    gen = SceneGenerator(CFG.scene_config(), seed=11)
    swapped = swap_sample(make_sample(gen, 2, 5))
    reverse = make_sample(gen, 5, 2)
    for key, value in reverse.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_allclose(swapped[key], value, atol=1e-4, err_msg=key)
        else:
            assert swapped[key] == value, key


def test_sample_contents():
    gen = SceneGenerator(CFG.scene_config(), seed=3)
    s = make_sample(gen, 1, 3)
    assert s['img_i'].shape == (3, 32, 48) and s['img_i'].dtype == np.float32
    assert -1.0 <= s['img_i'].min() and s['img_i'].max() <= 1.0
    gt = gen.pair_ground_truth(1, 3)
    np.testing.assert_allclose(s['pts_i_tj'] - s['pts_i_ti'],
                               np.where(gt.valid_i[..., None], gt.flow_i, 0), atol=1e-5)
    assert not np.any(s['motion_i'] & ~s['valid_i'])
    assert normalize_image(np.full((2, 2, 3), 255, np.uint8)).max() == 1.0


def test_map_dataset_is_deterministic_and_in_range():
    seeds = split_seeds('val', 2)
    ds = DPMPairDataset(seeds, CFG)
    assert len(ds) == 8
    a, b = ds[5], DPMPairDataset(seeds, CFG)[5]
    assert a['seed'] == seeds[1] and (a['i'], a['j']) == (b['i'], b['j'])
    assert 1 <= abs(a['j'] - a['i']) <= 3
    for m in MAP_NAMES:
        assert torch.equal(a[f'pts_{m}'], b[f'pts_{m}'])
    with pytest.raises(IndexError):
        ds[8]


def test_stream_draws_training_seeds_only_and_batches():
    stream = DPMPairStream(CFG, seed=4)
    lo, hi = SPLIT_SEEDS['train']
    samples = list(itertools.islice(iter(stream), 12))
    assert all(lo <= s['seed'] < hi for s in samples)
    assert len({s['seed'] for s in samples}) >= 2
    batch = next(iter(torch.utils.data.DataLoader(stream, batch_size=3)))
    assert batch['pts_j_ti'].shape == (3, 32, 48, 3) and batch['valid_j'].dtype == torch.bool
    with pytest.raises(ConfigError):
        DPMPairStream(CFG, split='nope')
