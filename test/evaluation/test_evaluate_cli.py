"""``pointmap-eval`` end to end on the shipped model (tools/evaluate.py)."""

import json
import math

import torch

from pointmap_ros.assets import SHIPPED_MODEL
from pointmap_ros.data.dataset import SPLIT_SEEDS
from pointmap_ros.data.scenes import SceneConfig, SceneGenerator
from pointmap_ros.evaluation.dataset_dir import write_sequence
from pointmap_ros.model.checkpoint import cross_time_heads, load_checkpoint, read_checkpoint_meta
from pointmap_ros.tools import evaluate

torch.set_num_threads(1)


def test_shipped_model_loads_in_fp32_within_size_budget():
    assert SHIPPED_MODEL.stat().st_size <= 40 * 1024 * 1024
    meta = read_checkpoint_meta(SHIPPED_MODEL)
    height, width = meta['config']['img_size']
    assert height % 16 == 0 and width % 16 == 0
    model = load_checkpoint(SHIPPED_MODEL)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_eval_on_a_held_out_sequence_prints_the_table(tmp_path, capsys):
    out = tmp_path / 'eval'
    assert evaluate.main(['--sequences', '1', '--pairs-per-sequence', '2', '--num-frames', '8',
                          '--figures', '1', '--out', str(out)]) == 0
    printed = capsys.readouterr().out
    for heading in ('## Targets', '## Point maps', '## Depth', '## Scene flow and motion'):
        assert heading in printed
    assert 'zero_flow' in printed and 'P_j(t_i)' in printed
    metrics = json.loads((out / 'metrics.json').read_text())
    assert metrics['info']['pairs'] == 2
    assert str(SPLIT_SEEDS['test'][0]) in metrics['info']['data']
    iou = metrics['model'].get('iou', float('nan'))
    assert math.isnan(iou) or 0.0 <= iou <= 1.0
    assert metrics['baselines']['zero_flow']['epe'] > 0
    assert (out / 'report.md').read_text().startswith('# DPM evaluation')
    assert (out / 'fig_0.png').stat().st_size > 0


def test_eval_on_a_dataset_folder(tmp_path, capsys):
    height, width = read_checkpoint_meta(SHIPPED_MODEL)['config']['img_size']
    gen = SceneGenerator(SceneConfig(height=height, width=width, num_frames=3),
                         seed=SPLIT_SEEDS['test'][0] + 7)
    write_sequence(str(tmp_path / 'data' / 'seq'), gen, pairs=[(0, 2)])
    assert evaluate.main(['--dataset-dir', str(tmp_path / 'data'), '--figures', '0',
                          '--out', str(tmp_path / 'eval')]) == 0
    assert 'dataset folder' in capsys.readouterr().out


def test_seeds_outside_the_test_split_are_refused(tmp_path):
    assert evaluate.main(['--seeds', '5', '--out', str(tmp_path)]) == 2


def test_record_stores_the_flow_validation_that_auto_reads(tmp_path):
    # A copy of the shipped model: --record writes into the checkpoint's JSON.
    for suffix in ('.json', '.safetensors'):
        (tmp_path / f'model{suffix}').write_bytes(SHIPPED_MODEL.with_suffix(suffix).read_bytes())
    checkpoint = tmp_path / 'model.safetensors'
    assert cross_time_heads(read_checkpoint_meta(checkpoint)) == 'trained'
    assert evaluate.main(['--checkpoint', str(checkpoint), '--sequences', '1',
                          '--pairs-per-sequence', '2', '--num-frames', '8', '--figures', '0',
                          '--out', str(tmp_path / 'eval'), '--record']) == 0
    metrics = json.loads((tmp_path / 'eval' / 'metrics.json').read_text())
    recorded = read_checkpoint_meta(checkpoint)['source']['cross_time_validation']
    assert recorded['epe'] == metrics['model']['epe']
    assert recorded['epe_zero'] == metrics['baselines']['zero_flow']['epe']
    assert recorded['pairs'] == 2 and '--record' in recorded['command']
    beats = (recorded['epe'] < recorded['epe_zero']
             and recorded['epe_dyn'] < recorded['epe_dyn_zero'])
    assert cross_time_heads(read_checkpoint_meta(checkpoint)) == (
        'validated' if beats else 'trained')
    load_checkpoint(checkpoint)  # the weights and their hash are untouched
