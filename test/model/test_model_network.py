"""Unit tests of the DPM network pieces: config, RoPE2D, post-processing, shapes and errors.

Numerical conformance with the reference lives in test_model_conformance.py; here the
properties that hold for any weights are checked on the tiny preset (float32, CPU, 1 thread).
"""

import json
import math

import pytest
import torch

from pointmap_ros.errors import ConfigError, InputError
from pointmap_ros.model import OUTPUT_NAMES, DynamicPointMapNet, ModelConfig
from pointmap_ros.model.heads.postprocess import postprocess
from pointmap_ros.model.layers.rope import apply_rope2d, rope2d_table

torch.set_num_threads(1)


@pytest.fixture(scope='module')
def tiny():
    torch.manual_seed(0)
    return DynamicPointMapNet(ModelConfig.preset('tiny')).eval()


# -- config -----------------------------------------------------------------------------------
@pytest.mark.parametrize('name', ['official', 'small', 'tiny'])
def test_presets_round_trip_through_json(name):
    config = ModelConfig.preset(name)
    assert ModelConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_default_hooks_follow_dust3r_formula():
    assert ModelConfig.preset('official').hooks == (0, 6, 9, 12)
    assert ModelConfig.preset('small').hooks == (0, 2, 3, 4)
    assert ModelConfig.preset('tiny', dpt_hooks=(0, 1, 2, 4)).hooks == (0, 1, 2, 4)


@pytest.mark.parametrize('overrides, field', [
    ({'head_type': 'conv'}, 'head_type'),
    ({'num_maps': 3}, 'num_maps'),
    ({'enc_num_heads': 5}, 'enc_num_heads'),                        # 96 / 5 heads
    ({'dec_embed_dim': 36, 'dec_num_heads': 2}, 'dec_num_heads'),   # head dim 18: not % 4
    ({'img_size': (60, 96)}, 'img_size'),
    ({'dec_depth': 3}, 'dec_depth'),
    ({'dpt_hooks': (0, 3, 2, 4)}, 'dpt_hooks'),
    ({'dpt_layer_dims': (8, 16, 32)}, 'dpt_layer_dims'),
    ({'enc_depth': 0}, 'enc_depth'),
])
def test_invalid_config_names_the_field(overrides, field):
    with pytest.raises(ConfigError) as info:
        ModelConfig.preset('tiny', **overrides)
    assert info.value.name == field and field in str(info.value)


def test_unknown_preset_and_fields_are_rejected():
    with pytest.raises(ConfigError, match='unknown model preset'):
        ModelConfig.preset('huge')
    with pytest.raises(ConfigError, match='unknown ModelConfig fields'):
        ModelConfig.from_dict({'enc_width': 3})


# -- RoPE2D -------------------------------------------------------------------------------------
def test_rope_scores_depend_only_on_relative_position():
    """q.k after RoPE is invariant to shifting both tokens by the same (dy, dx)."""
    torch.manual_seed(1)
    table = rope2d_table(6, 7, 16, base=100.0)
    q, k = torch.randn(16), torch.randn(16)

    def score(pq, pk):
        x = torch.stack([q, k])[None, None]                         # [1, 1, 2, 16]
        idx = torch.tensor([pq[0] * 7 + pq[1], pk[0] * 7 + pk[1]])
        rot = apply_rope2d(x, type(table)(table.cos[idx], table.sin[idx]))[0, 0]
        return float(rot[0] @ rot[1])

    assert score((1, 2), (3, 1)) == pytest.approx(score((3, 5), (5, 4)), abs=1e-5)
    assert score((1, 2), (3, 1)) != pytest.approx(score((1, 2), (1, 4)), abs=1e-3)


def test_rope_layout_rows_first_half_columns_second_half():
    """Tokens of one row share their first-half rotation; one column shares the second half."""
    table = rope2d_table(3, 4, 8, base=100.0)
    x = torch.randn(1, 1, 1, 8).expand(1, 1, 12, 8)
    rot = apply_rope2d(x, table)[0, 0].reshape(3, 4, 8)
    assert torch.allclose(rot[1, 0, :4], rot[1, 3, :4]) and not torch.allclose(rot[0, 0, :4],
                                                                                rot[2, 0, :4])
    assert torch.allclose(rot[0, 2, 4:], rot[2, 2, 4:]) and not torch.allclose(rot[0, 0, 4:],
                                                                                rot[0, 3, 4:])
    # Rotations keep the norm of each rotate-half pair (k, k + 2) inside a half of size 4.
    pair = rot[..., [0, 2]].norm(dim=-1)
    assert torch.allclose(pair, x[0, 0, 0, [0, 2]].norm().expand_as(pair), atol=1e-6)


def test_rope_frequencies_use_base_100():
    """Angle of row 1 in the highest-index pair is 100 ** (-2 * (h/2 - 1) / h)."""
    table = rope2d_table(2, 1, 8, base=100.0)      # half 4 -> frequencies 1 and 100**-0.5
    assert float(torch.acos(table.cos[1, 1])) == pytest.approx(100 ** -0.5, rel=1e-5)


def test_rope_rejects_head_dim_not_multiple_of_4():
    with pytest.raises(ValueError, match='divisible by 4'):
        rope2d_table(2, 2, 6)


# -- post-processing ------------------------------------------------------------------------------
def test_postprocess_exp_depth_and_conf():
    raw = torch.zeros(1, 4, 1, 2)
    raw[0, :, 0, 0] = torch.tensor([3.0, 4.0, 0.0, 0.5])       # |v| = 5
    pts, conf = postprocess(raw)
    assert pts.shape == (1, 1, 2, 3) and conf.shape == (1, 1, 2)
    expected = torch.tensor([0.6, 0.8, 0.0]) * math.expm1(5.0)
    assert torch.allclose(pts[0, 0, 0], expected, rtol=1e-6)
    assert torch.equal(pts[0, 0, 1], torch.zeros(3))           # zero vector stays finite
    assert conf[0, 0, 0] == pytest.approx(1 + math.exp(0.5)) and conf[0, 0, 1] == 2.0


def test_postprocess_traces_to_exp_minus_one():
    """Under export (torch.export, used by the ONNX exporter) expm1 becomes exp(d) - 1;
    eager keeps expm1."""
    class Post(torch.nn.Module):
        def forward(self, raw):
            return postprocess(raw)

    graph = str(torch.export.export(Post(), (torch.randn(1, 4, 2, 2),)).graph)
    assert 'aten.exp.default' in graph and 'expm1' not in graph
    tiny_raw = torch.tensor([1e-8, 0.0, 0.0, 0.0]).reshape(1, 4, 1, 1)
    assert float(postprocess(tiny_raw)[0][0, 0, 0, 0]) == pytest.approx(1e-8, rel=1e-6)


# -- network ---------------------------------------------------------------------------------
def test_forward_shapes_and_names_for_mixed_sizes(tiny):
    out = tiny(torch.rand(1, 3, 64, 96) * 2 - 1, torch.rand(1, 3, 80, 48) * 2 - 1)
    assert tuple(out) == OUTPUT_NAMES
    for name in ('i_ti', 'i_tj'):
        assert out[f'pts_{name}'].shape == (1, 64, 96, 3) and out[f'conf_{name}'].shape == (1, 64,
                                                                                              96)
    for name in ('j_ti', 'j_tj'):
        assert out[f'pts_{name}'].shape == (1, 80, 48, 3)
    assert all(bool((out[f'conf_{n}'] >= 1).all()) for n in ('i_ti', 'i_tj', 'j_ti', 'j_tj'))


def test_encode_once_decode_many_equals_forward(tiny):
    """Encodings are pair-independent: reusing one frame's tokens in two pairs is exact."""
    torch.manual_seed(2)
    a, b, c = (torch.rand(1, 3, 64, 96) * 2 - 1 for _ in range(3))
    with torch.no_grad():
        tok = {k: tiny.encode(v) for k, v in (('a', a), ('b', b), ('c', c))}
        for (x, tx), (y, ty) in (((a, 'a'), (b, 'b')), ((b, 'b'), (c, 'c'))):
            ref = tiny(x, y)
            out = tiny.decode(tok[tx], (64, 96), tok[ty], (64, 96))
            for name in OUTPUT_NAMES:
                assert torch.allclose(out[name], ref[name], rtol=1e-5, atol=1e-5), name


def test_head_wiring(tiny):
    """Heads 1/3 read decoder i and heads 2/4 decoder j: giving head3 head1's weights makes
    P_i(t_j) equal P_i(t_i), and head4 <- head2 makes P_j(t_i) equal P_j(t_j)."""
    model = DynamicPointMapNet(tiny.config).eval()
    model.load_state_dict(tiny.state_dict())
    model.downstream_head3.load_state_dict(model.downstream_head1.state_dict())
    model.downstream_head4.load_state_dict(model.downstream_head2.state_dict())
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 96), torch.rand(1, 3, 48, 64))
    assert torch.equal(out['pts_i_tj'], out['pts_i_ti'])
    assert torch.equal(out['pts_j_ti'], out['pts_j_tj'])
    assert not torch.equal(out['pts_i_ti'][..., :2], out['pts_i_ti'][..., 1:])


def test_two_map_model_outputs_only_same_time_maps():
    model = DynamicPointMapNet(ModelConfig.preset('tiny', num_maps=2, head_type='linear')).eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 32, 48), torch.zeros(1, 3, 32, 48))
    assert tuple(out) == ('pts_i_ti', 'conf_i_ti', 'pts_j_tj', 'conf_j_tj')


def test_outputs_stay_fp32_under_autocast(tiny):
    """With bf16 autocast (CPU) the backbone and the heads' inner convolutions run in bf16;
    the heads' last projection, the exp post-processing and the outputs are float32."""
    img = torch.rand(1, 3, 64, 96) * 2 - 1
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        tok = tiny.encode(img)
        out = tiny.decode(tok, (64, 96), tok, (64, 96))
    assert tok.dtype == torch.bfloat16
    assert all(v.dtype == torch.float32 for v in out.values())
    with torch.no_grad():
        ref = tiny(img, img)
    assert torch.allclose(out['conf_i_ti'], ref['conf_i_ti'], rtol=0.1)


@pytest.mark.parametrize('shape, match', [((1, 3, 60, 96), 'multiple of the patch size 16'),
                                          ((1, 1, 64, 96), r'\[B, 3, H, W\]'),
                                          ((3, 64, 96), r'\[B, 3, H, W\]')])
def test_encode_rejects_bad_images(tiny, shape, match):
    with pytest.raises(InputError, match=match):
        tiny.encode(torch.zeros(shape))


def test_decode_rejects_tokens_of_another_size(tiny):
    tok = tiny.encode(torch.zeros(1, 3, 64, 96))
    with pytest.raises(InputError, match=r'tok_j has shape \(1, 24, 96\), expected \[B, 20, 96\]'):
        tiny.decode(tok, (64, 96), tok, (64, 80))


def test_fp16_autocast_keeps_whole_heads_fp32_and_bf16_only_inner_layers(tiny):
    """fp16 (inference engines) must not run any head layer in fp16 (overflow); bf16
    (training) runs the inner head convolutions in bf16 but the last projection in fp32."""
    from pointmap_ros.model.dpm import _heads_in_own_precision
    seen = {}

    def record(name):
        def hook(module, inputs, output):
            seen[name] = output.dtype
        return hook
    head = tiny.downstream_head1
    handles = [head.dpt.head[0].register_forward_hook(record('inner')),
               head.dpt.head[-1].register_forward_hook(record('last'))]
    img = torch.rand(1, 3, 64, 96) * 2 - 1
    try:
        with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
            tiny(img, img)
        assert seen == {'inner': torch.bfloat16, 'last': torch.float32}
        with torch.autocast('cpu', dtype=torch.float16):
            # The policy itself (fp16 convolutions are not implemented on every CPU build).
            assert not torch.is_autocast_enabled('cpu') or isinstance(
                _heads_in_own_precision(torch.device('cpu')), torch.autocast)
    finally:
        for h in handles:
            h.remove()
