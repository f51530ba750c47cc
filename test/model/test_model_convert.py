"""Conversion of official DUSt3R / MonST3R / St4RTrack checkpoints into our DPM format.

The official ``.pth`` files are made here from the reference state dicts in
``shared/reference/tiny_{linear,dpt}/weights.safetensors`` (naver/dust3r @ 4c24a6e, seeded
random weights), saved like the official training code does: ``{'model': state_dict, 'args':
argparse.Namespace(model='AsymmetricCroCo3DStereo(...)', ...), 'epoch': ...}``. Converted DPM
models must reproduce the reference outputs of maps i_ti / j_tj (rtol = atol = 1e-4, float32
CPU) and start with cross-time heads equal to the same-time heads.
"""

import argparse
import json
from pathlib import Path

import numpy as np
from helpers import shared_path
import pytest
import torch

from pointmap_ros.errors import CheckpointError
from pointmap_ros.model.checkpoint import (convert_checkpoint, load_checkpoint,
                                           read_checkpoint_meta)
from pointmap_ros.model.official_config import parse_model_string
from pointmap_ros.tools.convert_checkpoint import main as convert_main

torch.set_num_threads(1)

class NotAllowed:
    """Stands for any pickled object beyond tensors and argparse.Namespace."""


def _reference(name: str) -> Path:
    shared = shared_path()
    path = shared / 'reference' / name
    if not (path / 'weights.safetensors').is_file():
        pytest.skip(f'reference vectors not found at {path}')
    return path


def _official_pth(tmp_path: Path, name: str = 'tiny_dpt', *, model_string=None, state=None,
                  args_extra=None, file_name='official.pth') -> Path:
    from safetensors.torch import load_file

    ref = _reference(name)
    meta = json.loads((ref / 'config.json').read_text())
    if model_string is None:
        # As in the official 512 files: training-time patch embedding in the string.
        model_string = meta['constructor_python'].replace("'PatchEmbedDust3R'",
                                                          "'ManyAR_PatchEmbed'")
    args = argparse.Namespace(model=model_string, lr=1e-4, **(args_extra or {}))
    if state is None:
        state = load_file(str(ref / 'weights.safetensors'))
    path = tmp_path / file_name
    torch.save({'model': state, 'args': args, 'epoch': 7, 'optimizer': {'state': {}}}, path)
    return path


def _case(name: str, case: str = 'case_A_64x96.npz'):
    data = np.load(_reference(name) / case)
    return data, torch.from_numpy(data['view1_img']), torch.from_numpy(data['view2_img'])


@pytest.mark.parametrize('name', ['tiny_linear', 'tiny_dpt'])
def test_dust3r_checkpoint_becomes_a_working_dpm_model(tmp_path, name):
    json_path = convert_checkpoint(_official_pth(tmp_path, name), tmp_path / 'dpm')
    model = load_checkpoint(json_path)
    assert model.config.num_maps == 4 and model.config.head_type == name.split('_')[1]
    state = model.state_dict()
    for key, value in state.items():
        for new, old in (('downstream_head3.', 'downstream_head1.'),
                         ('downstream_head4.', 'downstream_head2.')):
            if key.startswith(new):
                assert torch.equal(value, state[old + key[len(new):]]), key
    ref, img1, img2 = _case(name)
    with torch.no_grad():
        out = model(img1, img2)
    np.testing.assert_allclose(out['pts_i_ti'].numpy(), ref['res1_pts3d'], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out['conf_i_ti'].numpy(), ref['res1_conf'], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out['pts_j_tj'].numpy(), ref['res2_pts3d_in_other_view'],
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out['conf_j_tj'].numpy(), ref['res2_conf'], rtol=1e-4, atol=1e-4)
    assert torch.equal(out['pts_i_tj'], out['pts_i_ti'])
    assert torch.equal(out['pts_j_ti'], out['pts_j_tj'])
    source = read_checkpoint_meta(json_path)['source']
    assert source['layout'] == 'dust3r' and source['epoch'] == 7
    assert source['heads'] == {'downstream_head1': 'trained from source head1',
                               'downstream_head2': 'trained from source head2',
                               'downstream_head3': 'init from source head1',
                               'downstream_head4': 'init from source head2'}


def test_two_map_conversion_keeps_plain_dust3r(tmp_path):
    model = load_checkpoint(convert_checkpoint(_official_pth(tmp_path, 'tiny_linear'),
                                               tmp_path / 'd', num_maps=2, img_size=(64, 96)))
    assert model.config.num_maps == 2 and model.config.img_size == (64, 96)
    assert not hasattr(model, 'downstream_head3')


def test_st4rtrack_heads_map_onto_dpm_outputs(tmp_path):
    """Detected from St4RTrack's training arguments; its head1 (tracking) -> P_i(t_j)."""
    from safetensors.torch import load_file

    state = load_file(str(_reference('tiny_linear') / 'weights.safetensors'))
    pth = _official_pth(tmp_path, 'tiny_linear', args_extra={'track_eval_freq': 20})
    model = load_checkpoint(convert_checkpoint(pth, tmp_path / 'st4r'))
    assert torch.equal(model.downstream_head3.proj.weight, state['downstream_head1.proj.weight'])
    assert torch.equal(model.downstream_head2.proj.weight, state['downstream_head2.proj.weight'])
    heads = model.checkpoint_meta['source']['heads']
    assert model.checkpoint_meta['source']['layout'] == 'st4rtrack'
    assert heads['downstream_head3'] == 'trained from source head1'
    assert heads['downstream_head1'] == 'init from source head1'
    with pytest.raises(CheckpointError, match='only a 4-map DPM model'):
        convert_checkpoint(pth, tmp_path / 'st4r2', num_maps=2)
    # The layout can also be forced for a file whose arguments do not reveal it.
    plain = _official_pth(tmp_path, 'tiny_linear', file_name='plain.pth')
    forced = convert_checkpoint(plain, tmp_path / 'forced', layout='st4rtrack')
    assert read_checkpoint_meta(forced)['source']['layout'] == 'st4rtrack'


def test_croco_style_single_decoder_and_ddp_prefix(tmp_path):
    from safetensors.torch import load_file

    state = load_file(str(_reference('tiny_linear') / 'weights.safetensors'))
    state = {'module.' + k: v for k, v in state.items() if not k.startswith('dec_blocks2.')}
    model = load_checkpoint(convert_checkpoint(_official_pth(tmp_path, 'tiny_linear',
                                                             state=state), tmp_path / 'c'))
    assert torch.equal(model.dec_blocks2[1].mlp.fc1.weight, model.dec_blocks[1].mlp.fc1.weight)


def test_hub_export_needs_no_pickle(tmp_path):
    from safetensors.torch import load_file, save_file

    ref = _reference('tiny_linear')
    folder = tmp_path / 'hub'
    folder.mkdir()
    save_file(load_file(str(ref / 'weights.safetensors')), str(folder / 'model.safetensors'))
    kwargs = dict(parse_model_string(json.loads((ref / 'config.json').read_text())
                                     ['constructor_python'])[1])
    (folder / 'config.json').write_text(json.dumps(kwargs))   # inf -> Infinity, as the hub does
    model = load_checkpoint(convert_checkpoint(folder, tmp_path / 'h'))
    ref_case, img1, img2 = _case('tiny_linear')
    with torch.no_grad():
        out = model(img1, img2)
    np.testing.assert_allclose(out['pts_i_ti'].numpy(), ref_case['res1_pts3d'], rtol=1e-4,
                               atol=1e-4)
    (folder / 'config.json').unlink()
    with pytest.raises(CheckpointError, match='needs a config.json'):
        convert_checkpoint(folder, tmp_path / 'h2')
    (folder / 'config.json').write_text(json.dumps(kwargs))
    (folder / 'model.safetensors').write_bytes(b'\x00' * 20)
    with pytest.raises(CheckpointError, match='cannot read weights'):
        convert_checkpoint(folder, tmp_path / 'h3')


def test_pickled_objects_need_the_explicit_opt_in(tmp_path):
    pth = _official_pth(tmp_path, 'tiny_linear', args_extra={'hook': NotAllowed()})
    with pytest.raises(CheckpointError, match='trust_pickle=True / --trust-pickle') as info:
        convert_checkpoint(pth, tmp_path / 'p')
    assert 'NotAllowed' in str(info.value) and 'executes code' in str(info.value)
    model = load_checkpoint(convert_checkpoint(pth, tmp_path / 'p', trust_pickle=True))
    assert model.config.num_maps == 4


@pytest.mark.parametrize('damage', ['truncate', 'garbage'])
@pytest.mark.parametrize('trust', [False, True])
def test_corrupt_pth_is_named(tmp_path, damage, trust):
    pth = _official_pth(tmp_path, 'tiny_linear')
    data = pth.read_bytes()
    pth.write_bytes(data[:len(data) // 2] if damage == 'truncate' else b'not a checkpoint' * 9)
    with pytest.raises(CheckpointError, match=f'{pth} is corrupt or not a torch checkpoint'):
        convert_checkpoint(pth, tmp_path / 'x', trust_pickle=trust)


def test_file_without_model_or_args(tmp_path):
    torch.save({'state_dict': {}}, tmp_path / 'a.pth')
    with pytest.raises(CheckpointError, match="has no 'model' state dict"):
        convert_checkpoint(tmp_path / 'a.pth', tmp_path / 'o')
    torch.save({'model': {'x': torch.zeros(1)}}, tmp_path / 'b.pth')
    with pytest.raises(CheckpointError, match="no 'args.model' constructor string"):
        convert_checkpoint(tmp_path / 'b.pth', tmp_path / 'o')
    with pytest.raises(CheckpointError, match='does not exist'):
        convert_checkpoint(tmp_path / 'absent.pth', tmp_path / 'o')


def test_weights_not_matching_the_model_string(tmp_path):
    string = json.loads((_reference('tiny_linear') / 'config.json').read_text())[
        'constructor_python'].replace('enc_depth=2', 'enc_depth=3')
    with pytest.raises(CheckpointError, match=r'missing keys: enc_blocks\.2\.'):
        convert_checkpoint(_official_pth(tmp_path, 'tiny_linear', model_string=string),
                           tmp_path / 'o')


@pytest.mark.parametrize('text, match', [
    ('AsymmetricCroCo3DStereo(', 'cannot parse model constructor string'),
    ('AsymmetricCroCo3DStereo(**kw)', 'positional or \\*\\* arguments'),
    ('AsymmetricCroCo3DStereo(1024)', 'positional'),
    ("AsymmetricCroCo3DStereo(enc_depth=__import__('os').getpid())", 'not a literal value'),
    ('AsymmetricCroCo3DStereo(enc_depth=-x)', 'enc_depth= is not a literal'),
    ('[AsymmetricCroCo3DStereo()]', 'is not a call'),
])
def test_unparseable_model_strings(tmp_path, text, match):
    with pytest.raises(CheckpointError, match=match):
        convert_checkpoint(_official_pth(tmp_path, 'tiny_linear', model_string=text),
                           tmp_path / 'o')


@pytest.mark.parametrize('replace, match', [
    (("AsymmetricCroCo3DStereo(", "AsymmetricMASt3R("), "model class 'AsymmetricMASt3R'"),
    (("'RoPE100'", "'cosine'"), "pos_embed='cosine'"),
    (("'RoPE100'", "'RoPEx'"), "pos_embed='RoPEx'"),
    (("output_mode='pts3d'", "output_mode='pts3d+desc24'"), 'output_mode'),
    (("('exp', -inf, inf)", "('linear', -inf, inf)"), 'depth_mode'),
    (("('exp', 1, inf)", "('exp', 0, inf)"), 'conf_mode'),
    (("head_type='linear'", "head_type='linear', head_type1='dpt'"), 'head_type1'),
    (("head_type='linear'", "head_type='linear', arch_mode='TempDust3r'"), 'arch_mode'),
    (("head_type='linear'", "head_type='linear', norm_im2_in_dec=False"), 'norm_im2_in_dec'),
    (('enc_num_heads=3', 'enc_num_heads=5'), 'valid configuration'),
])
def test_unsupported_architectures(tmp_path, replace, match):
    string = json.loads((_reference('tiny_linear') / 'config.json').read_text())[
        'constructor_python'].replace(*replace)
    with pytest.raises(CheckpointError, match=match):
        convert_checkpoint(_official_pth(tmp_path, 'tiny_linear', model_string=string),
                           tmp_path / 'o')


def test_layout_argument_is_checked(tmp_path):
    with pytest.raises(CheckpointError, match="unknown layout 'mast3r'"):
        convert_checkpoint(_official_pth(tmp_path, 'tiny_linear'), tmp_path / 'o',
                           layout='mast3r')


def test_extra_heads_are_reported_as_unexpected(tmp_path):
    from safetensors.torch import load_file

    state = load_file(str(_reference('tiny_linear') / 'weights.safetensors'))
    state.update({k.replace('head1', 'head3'): v for k, v in state.items() if 'head1' in k})
    with pytest.raises(CheckpointError, match='unexpected keys: downstream_head3.proj'):
        convert_checkpoint(_official_pth(tmp_path, 'tiny_linear', state=state),
                           tmp_path / 'o', num_maps=2)


def test_cli(tmp_path, capsys):
    pth = _official_pth(tmp_path, 'tiny_linear')
    assert convert_main([str(pth), str(tmp_path / 'cli'), '--img-size', '64', '96']) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed['layout'] == 'dust3r' and Path(printed['json']).is_file()
    assert load_checkpoint(printed['json']).config.img_size == (64, 96)
    pth.write_bytes(b'broken')
    assert convert_main([str(pth), str(tmp_path / 'cli2')]) == 1
    assert 'error:' in capsys.readouterr().err
