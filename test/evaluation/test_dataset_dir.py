"""The documented dataset folder layout: writer, reader, errors (evaluation/dataset_dir.py)."""

import os

import numpy as np
import pytest

from pointmap_ros.data.scenes import SceneConfig, SceneGenerator
from pointmap_ros.errors import InputError
from pointmap_ros.evaluation.dataset_dir import list_sequences, read_sequence_pairs, write_sequence
from pointmap_ros.types import MAP_NAMES


@pytest.fixture(scope='module')
def sequence(tmp_path_factory):
    gen = SceneGenerator(SceneConfig(height=32, width=48, num_frames=4), seed=2_000_123)
    root = tmp_path_factory.mktemp('dataset')
    write_sequence(str(root / 'seq_a'), gen, pairs=[(0, 2), (3, 1)])
    return gen, root


def test_pairs_folder_round_trip_at_native_resolution(sequence):
    gen, root = sequence
    assert list_sequences(str(root)) == [str(root / 'seq_a')]
    pairs = read_sequence_pairs(str(root / 'seq_a'), (32, 48))
    assert [p.name for p in pairs] == ['seq_a:0-2', 'seq_a:3-1']
    gt = gen.pair_ground_truth(3, 1)
    truth = pairs[1].truth
    assert truth.has_dynamic and truth.dt == pytest.approx(0.2)
    for m in MAP_NAMES:
        np.testing.assert_allclose(truth.maps.pts(m), gt.maps.pts(m), atol=1e-5)
    np.testing.assert_array_equal(truth.motion_i, gt.motion_i)
    np.testing.assert_allclose(truth.T_cami_camj, gt.T_cami_camj, atol=1e-9)
    np.testing.assert_allclose(truth.K, gen.K, atol=1e-9)
    np.testing.assert_array_equal(pairs[0].rgb_i, gen.render(0).rgb)


def test_depth_only_sequence_gives_same_time_maps(sequence, tmp_path):
    gen, root = sequence
    folder = tmp_path / 'depth_only'
    write_sequence(str(folder), gen)
    pairs = read_sequence_pairs(str(folder), (32, 48), gaps=(1, 2))
    assert len(pairs) == 3 + 2
    truth = pairs[0].truth
    assert not truth.has_dynamic and truth.motion_i is None
    gt = gen.pair_ground_truth(0, 1)
    np.testing.assert_allclose(truth.maps.pts_i_ti, gt.maps.pts_i_ti, atol=1e-4)
    np.testing.assert_allclose(truth.maps.pts_j_tj, gt.maps.pts_j_tj, atol=1e-4)


def test_resampled_to_another_model_resolution(sequence):
    _, root = sequence
    pairs = read_sequence_pairs(str(root / 'seq_a'), (16, 32))
    assert pairs[0].rgb_i.shape == (16, 32, 3)
    assert pairs[0].truth.maps.pts_i_tj.shape == (16, 32, 3)
    assert pairs[0].truth.valid_j.shape == (16, 32)


def test_layout_errors(sequence, tmp_path):
    gen, root = sequence
    with pytest.raises(InputError, match='no sequence folder'):
        list_sequences(str(tmp_path))
    bad = tmp_path / 'bad'
    write_sequence(str(bad), gen)
    with open(bad / 'poses.txt', 'a') as f:
        f.write(' '.join(['0'] * 16) + '\n')
    with pytest.raises(InputError, match='5 poses for 4 images'):
        read_sequence_pairs(str(bad), (32, 48))
    os.remove(bad / 'K.txt')
    with pytest.raises(InputError, match='K.txt'):
        read_sequence_pairs(str(bad), (32, 48))
    nodepth = tmp_path / 'nodepth'
    write_sequence(str(nodepth), gen, with_depth=False)
    with pytest.raises(InputError, match='needs depth'):
        read_sequence_pairs(str(nodepth), (32, 48))
    misnamed = tmp_path / 'misnamed'
    write_sequence(str(misnamed), gen, pairs=[(0, 1)])
    os.rename(misnamed / 'pairs' / '000000_000001.npz', misnamed / 'pairs' / 'pair.npz')
    with pytest.raises(InputError, match='not named'):
        read_sequence_pairs(str(misnamed), (32, 48))
