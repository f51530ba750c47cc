"""Pieces of the prepared GPU session (training/gpu_session.py) that run on any machine."""

import math

import pytest
import torch

from pointmap_ros.model.checkpoint import load_checkpoint, load_state_dict_checked
from pointmap_ros.training import gpu_session
from pointmap_ros.training.gpu_session import (ablation_score, export_fp16, export_fp32_shards,
                                               merge_fp32_shards)

torch.set_num_threads(1)


def test_ablation_score_is_the_mean_fraction_of_the_done_when_bounds():
    base = {'epe': 0.004, 'epe_dyn': 0.02}
    at_bounds = {'epe': 0.002, 'epe_dyn': 0.01, 'iou': 0.7, 'absrel': 0.08}
    assert ablation_score(at_bounds, base) == pytest.approx(1.0)
    # Zero flow: 2 x the flow bounds; no mask: 1 / 0.3 of the IoU bound.
    zero = {'epe': 0.004, 'epe_dyn': 0.02, 'iou': 0.0, 'absrel': 0.08}
    assert ablation_score(zero, base) == pytest.approx((2 + 2 + 1 / 0.3 + 1) / 4)
    assert ablation_score({**zero, 'iou': math.nan}, base) == pytest.approx((2 + 2 + 10 + 1) / 4)


def test_exports_round_trip(tmp_path):
    model = gpu_session._new_model('tiny', (32, 48), 'residual', seed=3)
    with torch.no_grad():  # move the zeroed offsets so the check is not on zeros
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    paths = export_fp32_shards(model, str(tmp_path), shards=2)
    assert len(paths) == 2
    export_fp16(model, str(tmp_path / 'half'), {'kind': 'test'})
    half = load_checkpoint(tmp_path / 'half.safetensors')
    assert all(p.dtype == torch.float32 for p in half.parameters())
    assert half.config.cross_time == 'residual'
    exact = load_checkpoint(tmp_path / 'half.safetensors')
    load_state_dict_checked(exact, merge_fp32_shards(paths))
    for (name, p), q in zip(model.state_dict().items(), exact.state_dict().values()):
        assert torch.equal(p, q), name
    # float16 storage: relative rounding ~5e-4.
    for p, q in zip(model.parameters(), half.parameters()):
        assert torch.allclose(p, q, rtol=1e-3, atol=1e-4)


def test_cpu_smoke_session_writes_results(tmp_path):
    out, work = tmp_path / 'out', tmp_path / 'work'
    assert gpu_session.main(['--out', str(out), '--work', str(work), '--device', 'cpu',
                             '--smoke', '--preset', 'tiny', '--resolution', '48x32',
                             '--batch-size', '2', '--workers', '0', '--cache-size', '2',
                             '--rate', '8', '--ablation-variants', 'C',
                             '--ablation-seconds', '1', '--final-seconds', '1',
                             '--eval-sequences', '1', '--eval-pairs', '1',
                             '--skip-final-eval', '--log-every', '1']) == 0
    import json
    results = json.loads((out / 'results.json').read_text())
    assert not results.get('errors'), results.get('errors')
    assert results['ablation']['C']['steps'] >= 1
    assert 0 < results['ablation']['C']['metrics']['absrel'] < 10
    assert results['final_variant'] == gpu_session.FALLBACK
    assert (out / 'dpm_small_fp16.safetensors').stat().st_size > 0
    assert (out / 'weights_fp32_part1.safetensors').stat().st_size > 0
