"""Our official-size configuration has exactly the official state-dict keys and shapes.

Reference key lists: ``shared/reference/keys/*.tsv`` (naver/dust3r @ 4c24a6e, built on CPU
with nothing downloaded): DUSt3R_ViTLarge_BaseDecoder_512_dpt (1009 keys, 571,171,208 unique
parameters) and ..._224_linear (877 keys). Models are built on the ``meta`` device, so no
memory is allocated for the ~600 M parameters. With ``num_maps=4`` the key set must be the
official one plus ``downstream_head3`` / ``downstream_head4`` mirroring heads 1 / 2.
"""

from helpers import shared_path
import pytest
import torch

from pointmap_ros.model import DynamicPointMapNet, ModelConfig

KEY_FILES = {'dpt': 'DUSt3R_ViTLarge_BaseDecoder_512_dpt.state_dict_keys.tsv',
             'linear': 'DUSt3R_ViTLarge_BaseDecoder_224_linear.state_dict_keys.tsv'}


def _official_keys(head_type: str) -> dict:
    shared = shared_path()
    path = shared / 'reference' / 'keys' / KEY_FILES[head_type]
    if not path.is_file():
        pytest.skip(f'official key list not found at {path}')
    keys = {}
    for line in path.read_text().splitlines():
        if line.startswith('#') or not line.strip():
            continue
        key, dtype, shape = line.split('\t')
        assert dtype == 'float32'
        keys[key] = tuple(int(v) for v in shape.strip('[]').split(',') if v.strip())
    return keys


def _our_keys(head_type: str, num_maps: int) -> dict:
    with torch.device('meta'):
        model = DynamicPointMapNet(ModelConfig.preset('official', head_type=head_type,
                                                      num_maps=num_maps))
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize('head_type', ['dpt', 'linear'])
def test_two_map_model_has_exactly_the_official_keys(head_type):
    official = _official_keys(head_type)
    ours = _our_keys(head_type, num_maps=2)
    assert sorted(set(official) - set(ours)) == []
    assert sorted(set(ours) - set(official)) == []
    assert {k: v for k, v in ours.items() if official[k] != v} == {}


@pytest.mark.parametrize('head_type', ['dpt', 'linear'])
def test_dpm_model_adds_two_heads_mirroring_the_official_ones(head_type):
    official = _official_keys(head_type)
    expected = dict(official)
    for new, old in (('downstream_head3.', 'downstream_head1.'),
                     ('downstream_head4.', 'downstream_head2.')):
        expected.update({new + k[len(old):]: v for k, v in official.items() if k.startswith(old)})
    assert _our_keys(head_type, num_maps=4) == expected


def test_official_parameter_count():
    """571,171,208 unique parameters for 512 DPT (README), aliases counted once."""
    with torch.device('meta'):
        model = DynamicPointMapNet(ModelConfig.preset('official', num_maps=2))
    assert sum(p.numel() for p in model.parameters()) == 571_171_208
