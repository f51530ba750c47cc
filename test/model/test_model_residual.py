"""Residual cross-time heads (``ModelConfig.cross_time='residual'``): zero flow at init, flow
equals the raw offset, config / checkpoint round trip, ONNX parity, training, CLI."""

import csv
import json

import pytest
import torch

from pointmap_ros.data.dataset import DPMPairStream, PairDataConfig
from pointmap_ros.engines.onnx_export import check_parity, export_onnx
from pointmap_ros.engines.trt_ops import TRT10_SUPPORTED_OPS, op_histogram
from pointmap_ros.errors import ConfigError
from pointmap_ros.model import DynamicPointMapNet, ModelConfig, zero_init_cross_time_offsets
from pointmap_ros.model.checkpoint import load_checkpoint, save_checkpoint
from pointmap_ros.tools import train as train_tool
from pointmap_ros.training.loss import DPMLoss
from pointmap_ros.training.trainer import Trainer, TrainConfig, seed_everything

torch.set_num_threads(1)

SHAPE = (32, 48)   # (H, W): small, non-square


def _model(head_type='dpt', seed=0, perturb=True) -> DynamicPointMapNet:
    """Residual tiny model with heads perturbed so every raw channel is far from 0, then zero
    offsets restored (random weights everywhere except the zeroed point channels)."""
    torch.manual_seed(seed)
    model = DynamicPointMapNet(ModelConfig.preset('tiny', head_type=head_type,
                                                  cross_time='residual', img_size=SHAPE))
    if perturb:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        zero_init_cross_time_offsets(model)
    return model.eval()


def _images(seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(2, 3, *SHAPE, generator=gen) * 2 - 1 for _ in range(2)]


@pytest.mark.parametrize('head_type', ['dpt', 'linear'])
def test_flow_is_exactly_zero_after_zero_init(head_type):
    model = _model(head_type)
    with torch.no_grad():
        out = model(*_images())
    assert torch.equal(out['pts_i_tj'], out['pts_i_ti'])
    assert torch.equal(out['pts_j_ti'], out['pts_j_tj'])
    # Only the point channels are zeroed: the cross-time confidences still differ.
    assert not torch.allclose(out['conf_i_tj'], out['conf_i_ti'])
    assert out['pts_i_ti'].abs().max() > 0.1


@pytest.mark.parametrize('head_type', ['dpt', 'linear'])
def test_flow_equals_raw_offset_head_output(head_type):
    model = _model(head_type)
    with torch.no_grad():
        for k in (3, 4):   # give the offsets random weights too
            for p in model.head(k).parameters():
                p.add_(torch.randn_like(p) * 0.05)
        out = model.forward_intermediates(*_images())
    for k, (moved, base) in {3: ('i_tj', 'i_ti'), 4: ('j_ti', 'j_tj')}.items():
        offset = out[f'head{k}_raw'][:, :3].permute(0, 2, 3, 1)
        assert offset.abs().max() > 0.01
        flow = out[f'pts_{moved}'] - out[f'pts_{base}']
        torch.testing.assert_close(flow, offset, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out[f'conf_{moved}'],
                                   1 + out[f'head{k}_raw'][:, 3].exp())


def test_residual_keeps_state_dict_keys_and_shapes():
    absolute = DynamicPointMapNet(ModelConfig.preset('tiny', img_size=SHAPE))
    residual = _model(perturb=False)
    assert {k: v.shape for k, v in absolute.state_dict().items()} == \
        {k: v.shape for k, v in residual.state_dict().items()}
    # Absolute weights load into a residual model (and vice versa) strictly.
    residual.load_state_dict(absolute.state_dict())


def test_zero_init_refuses_absolute_models():
    with pytest.raises(ConfigError, match="cross_time='residual'.*'absolute'"):
        zero_init_cross_time_offsets(DynamicPointMapNet(ModelConfig.preset('tiny')))


def test_config_validation_and_old_json():
    with pytest.raises(ConfigError, match="cross_time='relative'.*expected one of"):
        ModelConfig.preset('tiny', cross_time='relative')
    with pytest.raises(ConfigError, match='num_maps=4, not 2'):
        ModelConfig.preset('tiny', cross_time='residual', num_maps=2)
    old = ModelConfig.preset('tiny').to_dict()
    del old['cross_time']
    assert ModelConfig.from_dict(old).cross_time == 'absolute'


def test_checkpoint_round_trip_keeps_mode(tmp_path):
    model = _model()
    save_checkpoint(model, tmp_path / 'res')
    meta = json.loads((tmp_path / 'res.json').read_text())
    assert meta['config']['cross_time'] == 'residual'
    loaded = load_checkpoint(tmp_path / 'res').eval()
    assert loaded.config.cross_time == 'residual'
    images = _images()
    with torch.no_grad():
        a, b = model(*images), loaded(*images)
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.mark.slow
def test_onnx_export_parity_residual(tmp_path):
    model = _model()
    with torch.no_grad():
        for k in (3, 4):
            for p in model.head(k).parameters():
                p.add_(torch.randn_like(p) * 0.05)
    export = export_onnx(model, tmp_path, SHAPE, model_name='tiny_residual')
    assert export.meta['model_config']['cross_time'] == 'residual'
    result = check_parity(model, export, seed=3, atol=1e-4, rtol=1e-3)
    assert result.ok, result.table()
    ops = op_histogram(str(export.decoder_path))
    assert set(ops) <= TRT10_SUPPORTED_OPS, sorted(set(ops) - TRT10_SUPPORTED_OPS)
    assert ops['Exp'] == 6   # depth of heads 1/2 + 4 confidences; offsets have no exp


def test_training_residual_lowers_the_loss(tmp_path):
    seed_everything(0)
    data = PairDataConfig(height=48, width=64, num_frames=8, gap_min=1, gap_max=2,
                          cache_size=2)
    model = DynamicPointMapNet(ModelConfig.preset('tiny', cross_time='residual',
                                                  img_size=(48, 64)))
    cfg = TrainConfig(steps=20, batch_size=2, lr=5e-4, warmup_steps=3, val_every=0,
                      log_every=5, seed=0)
    Trainer(model, DPMLoss(), DPMPairStream(data, seed=0), None, cfg, str(tmp_path)).fit(
        progress=False)
    with open(tmp_path / 'log.csv') as f:
        losses = [float(r['loss']) for r in csv.DictReader(f) if r['phase'] == 'train']
    assert len(losses) == 4 and losses[-1] < 0.8 * losses[0], losses
    trained = load_checkpoint(tmp_path / 'last.safetensors')
    assert trained.config.cross_time == 'residual'


def test_cli_cross_time(tmp_path):
    parser = train_tool.build_parser()
    base = ['--preset', 'tiny', '--out', str(tmp_path)]
    # From scratch: the mode goes into the config and the flow starts at exactly 0.
    fresh = train_tool.build_model(parser.parse_args([*base, '--cross-time', 'residual']),
                                   SHAPE)
    assert fresh.config.cross_time == 'residual'
    with torch.no_grad():
        out = fresh.eval()(*_images())
    assert torch.equal(out['pts_i_tj'], out['pts_i_ti'])
    # Since issue 11 a fresh model is residual by default; 'absolute' must be asked for.
    assert train_tool.build_model(parser.parse_args(base), SHAPE).config.cross_time == \
        'residual'
    assert train_tool.build_model(parser.parse_args([*base, '--cross-time', 'absolute']),
                                  SHAPE).config.cross_time == 'absolute'
    # --init with an absolute checkpoint: switched to residual, only the offsets are zeroed.
    absolute = DynamicPointMapNet(ModelConfig.preset('tiny', img_size=SHAPE))
    with torch.no_grad():
        for p in absolute.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    save_checkpoint(absolute, tmp_path / 'abs')
    init = train_tool.build_model(parser.parse_args(
        [*base, '--init', str(tmp_path / 'abs.safetensors'), '--cross-time', 'residual']), SHAPE)
    assert init.config.cross_time == 'residual'
    with torch.no_grad():
        out = init.eval()(*_images())
        ref = absolute.eval()(*_images())
    assert torch.equal(out['pts_i_tj'], out['pts_i_ti'])
    assert torch.equal(out['conf_i_tj'], ref['conf_i_tj'])   # confidence channel kept
    # ... and back to absolute: heads 3/4 become copies of heads 1/2.
    save_checkpoint(init, tmp_path / 'res')
    back = train_tool.build_model(parser.parse_args(
        [*base, '--init', str(tmp_path / 'res.safetensors'), '--cross-time', 'absolute']), SHAPE)
    assert back.config.cross_time == 'absolute'
    for a, b in zip(back.downstream_head1.parameters(), back.downstream_head3.parameters()):
        assert torch.equal(a, b)
