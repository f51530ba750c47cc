"""Our checkpoint format (safetensors + JSON): round trip, alias handling and every error path.

Models are the tiny preset with seeded random weights (float32, CPU, 1 thread); round trips
must be bitwise exact.
"""

import json

import pytest
import torch

from pointmap_ros.errors import CheckpointError
from pointmap_ros.model import DynamicPointMapNet, ModelConfig
from pointmap_ros.model.checkpoint import (checkpoint_paths, load_checkpoint,
                                           load_state_dict_checked, read_checkpoint_meta,
                                           save_checkpoint, state_dict_sha256)
from pointmap_ros.model.key_mapping import (drop_dpt_aliases, fill_second_decoder, map_heads,
                                            strip_prefix, tie_dpt_aliases)

torch.set_num_threads(1)


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    return DynamicPointMapNet(ModelConfig.preset('tiny')).eval()


@pytest.fixture()
def saved(model, tmp_path):
    return save_checkpoint(model, tmp_path / 'ckpt', source={'kind': 'test'})


def test_round_trip_is_exact(model, saved):
    st_path, json_path = checkpoint_paths(saved)
    assert json_path == saved and st_path.is_file()
    loaded = load_checkpoint(st_path)                    # either file or the stem works
    assert loaded.config == model.config and not loaded.training
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    meta = read_checkpoint_meta(saved)
    assert meta['source'] == {'kind': 'test'}
    assert meta['state_sha256'] == state_dict_sha256(model) == state_dict_sha256(loaded)
    assert loaded.checkpoint_meta['sha256'] == meta['sha256']
    img = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        a, b = model(img, img), loaded(img, img)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_dpt_aliases_stored_once_and_accepted_either_way(model, saved):
    from safetensors.torch import load_file

    stored = load_file(str(checkpoint_paths(saved)[0]))
    assert 'downstream_head1.dpt.scratch.layer1_rn.weight' in stored
    assert not any('scratch.layer_rn.' in k for k in stored)
    full = model.state_dict()
    only_listed = {k: v for k, v in full.items() if not k.endswith('1_rn.weight')}
    for state in (drop_dpt_aliases(full), only_listed):
        fresh = DynamicPointMapNet(model.config)
        load_state_dict_checked(fresh, state)
        assert torch.equal(fresh.downstream_head2.dpt.scratch.layer_rn[0].weight,
                           full['downstream_head2.dpt.scratch.layer1_rn.weight'])


def test_aliases_holding_different_tensors_are_rejected(model):
    state = dict(model.state_dict())
    key = 'downstream_head1.dpt.scratch.layer_rn.2.weight'
    state[key] = state[key] + 1
    with pytest.raises(CheckpointError, match='hold different tensors') as info:
        tie_dpt_aliases(state)
    assert key in info.value.mismatched


def test_missing_unexpected_and_mismatched_keys_are_named(model):
    state = dict(model.state_dict())
    del state['enc_norm.weight']
    state['extra.weight'] = torch.zeros(1)
    state['dec_norm.bias'] = torch.zeros(5)
    with pytest.raises(CheckpointError) as info:
        load_state_dict_checked(DynamicPointMapNet(model.config), state, source='file.x')
    msg = str(info.value)
    assert 'file.x' in msg and '1 missing keys: enc_norm.weight' in msg
    assert '1 unexpected keys: extra.weight' in msg
    assert 'dec_norm.bias: file (5,) vs model (48,)' in msg
    assert info.value.missing == ['enc_norm.weight'] and info.value.unexpected == ['extra.weight']


def test_long_key_lists_are_truncated_with_counts(model):
    state = {k: v for k, v in model.state_dict().items() if not k.startswith('enc_blocks')}
    with pytest.raises(CheckpointError, match=r'missing keys: .*\(\+\d+ more\)') as info:
        load_state_dict_checked(DynamicPointMapNet(model.config), state)
    assert len(info.value.missing) > 8


def test_two_map_model_file_into_dpm_model_names_missing_heads(tmp_path):
    two = DynamicPointMapNet(ModelConfig.preset('tiny', num_maps=2))
    state = two.state_dict()
    with pytest.raises(CheckpointError, match='downstream_head3'):
        load_state_dict_checked(DynamicPointMapNet(ModelConfig.preset('tiny')), state)


def test_corrupt_weights_file_is_named(saved):
    st_path, _ = checkpoint_paths(saved)
    st_path.write_bytes(st_path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match='does not match the sha256') as info:
        load_checkpoint(saved)
    assert str(st_path) in str(info.value)
    with pytest.raises(CheckpointError, match=f'cannot read weights {st_path}'):
        load_checkpoint(saved, verify_hash=False)


@pytest.mark.parametrize('content, match', [
    ('{not json', 'cannot read checkpoint config'),
    ('{"format": "other"}', 'is not a pointmap_ros.dpm checkpoint'),
    (None, 'format_version 99'),
    (None, 'invalid model config'),
])
def test_bad_json_side(saved, content, match):
    if content is None:
        meta = json.loads(saved.read_text())
        if 'version' in match:
            meta['format_version'] = 99
        else:
            meta['config']['head_type'] = 'conv'
        content = json.dumps(meta)
    saved.write_text(content)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(saved)


def test_missing_files_and_pickles_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match='cannot read checkpoint config'):
        load_checkpoint(tmp_path / 'absent')
    with pytest.raises(CheckpointError, match='pointmap-convert-checkpoint'):
        load_checkpoint(tmp_path / 'model.pth')


def test_key_mapping_helpers(model):
    state = model.state_dict()
    assert strip_prefix({'module.' + k: v for k, v in state.items()}).keys() == state.keys()
    no_dec2 = {k: v for k, v in state.items() if not k.startswith('dec_blocks2.')}
    filled = fill_second_decoder(no_dec2)
    assert torch.equal(filled['dec_blocks2.1.norm_y.weight'], state['dec_blocks.1.norm_y.weight'])
    with pytest.raises(CheckpointError, match='unknown checkpoint layout'):
        map_heads(state, 'mast3r', 4)
