"""Trainer: schedule, smoke run (the loss must fall), checkpoints, resume, CLI."""

import csv
import json
import math

import pytest
import torch

from pointmap_ros.data.dataset import DPMPairDataset, DPMPairStream, PairDataConfig, split_seeds
from pointmap_ros.errors import CheckpointError, ConfigError
from pointmap_ros.model.checkpoint import load_checkpoint
from pointmap_ros.model.config import ModelConfig
from pointmap_ros.model.dpm import DynamicPointMapNet
from pointmap_ros.tools import train as train_tool
from pointmap_ros.training.loss import DPMLoss
from pointmap_ros.training.trainer import Trainer, TrainConfig, lr_at, seed_everything

torch.set_num_threads(1)

DATA = PairDataConfig(height=48, width=64, num_frames=8, gap_min=1, gap_max=2, cache_size=2)


def _tiny():
    seed_everything(0)
    return DynamicPointMapNet(ModelConfig.preset('tiny', img_size=(48, 64)))


def test_lr_schedule_warmup_cosine_and_time_budget():
    cfg = TrainConfig(steps=110, lr=1e-3, min_lr=1e-5, warmup_steps=10)
    assert lr_at(0, cfg) == pytest.approx(1e-4)
    assert lr_at(9, cfg) == pytest.approx(1e-3)
    assert lr_at(10, cfg) == pytest.approx(1e-3)
    assert lr_at(60, cfg) == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5)
    assert lr_at(110, cfg) == pytest.approx(1e-5)
    # A used-up time budget ends the cosine early.
    assert lr_at(20, cfg, time_fraction=1.0) == pytest.approx(1e-5)
    assert lr_at(20, cfg, time_fraction=0.5) == pytest.approx(lr_at(60, cfg))


def test_config_errors():
    with pytest.raises(ConfigError, match='fp16'):
        TrainConfig(amp='fp16').validate(torch.device('cpu'))
    with pytest.raises(ConfigError, match='amp'):
        TrainConfig(amp='int8').validate(torch.device('cpu'))
    with pytest.raises(ConfigError, match='min_lr'):
        TrainConfig(lr=1e-5, min_lr=1e-4).validate(torch.device('cpu'))
    with pytest.raises(ConfigError, match='steps'):
        TrainConfig(steps=0).validate(torch.device('cpu'))


@pytest.mark.slow
def test_smoke_run_loss_decreases_and_resume(tmp_path):
    cfg = TrainConfig(steps=16, batch_size=2, lr=5e-4, warmup_steps=3, val_every=0,
                      log_every=4, seed=0)
    val = DPMPairDataset(split_seeds('val', 1), PairDataConfig(**{**DATA.__dict__,
                                                                  'pairs_per_sequence': 2}))
    trainer = Trainer(_tiny(), DPMLoss(), DPMPairStream(DATA, seed=0), val, cfg, str(tmp_path))
    val_metrics = trainer.fit(progress=False)
    with open(tmp_path / 'log.csv') as f:
        rows = [r for r in csv.DictReader(f) if r['phase'] == 'train']
    losses = [float(r['loss']) for r in rows]
    assert len(losses) == 4
    assert losses[-1] < 0.8 * losses[0], losses
    assert math.isfinite(val_metrics['loss'])
    assert (tmp_path / 'log.png').stat().st_size > 0
    # The checkpoint loads with the model package's loader; the trainer state resumes.
    model = load_checkpoint(tmp_path / 'last.safetensors')
    assert model.checkpoint_meta['source'] == {'kind': 'trained', 'step': 16}
    cfg2 = TrainConfig(**{**cfg.__dict__, 'steps': 18})
    resumed = Trainer(model, DPMLoss(), DPMPairStream(DATA, seed=0), None, cfg2, str(tmp_path))
    resumed.load_state(str(tmp_path / 'trainer_state.pt'))
    assert resumed.step == 16 and resumed.elapsed_s > 0
    resumed.fit(progress=False)
    assert resumed.step == 18


def test_load_state_errors(tmp_path):
    trainer = Trainer(_tiny(), DPMLoss(), DPMPairStream(DATA), None, TrainConfig(),
                      str(tmp_path))
    with pytest.raises(CheckpointError, match='does not exist'):
        trainer.load_state(str(tmp_path / 'nope.pt'))
    torch.save({'step': 3}, tmp_path / 'bad.pt')
    with pytest.raises(CheckpointError, match='not a trainer state'):
        trainer.load_state(str(tmp_path / 'bad.pt'))


@pytest.mark.slow
def test_cli_train_and_resume(tmp_path, capsys):
    out = tmp_path / 'run'
    args = ['--preset', 'tiny', '--resolution', '64x48', '--steps', '3', '--batch-size', '1',
            '--num-frames', '6', '--gap-max', '2', '--val-sequences', '0', '--warmup', '1',
            '--out', str(out), '--no-progress', '--seed', '1']
    assert train_tool.main(args) == 0
    record = json.loads((out / 'run.json').read_text())
    assert record['final_step'] == 3 and record['model']['img_size'] == [48, 64]
    assert record['command'].startswith('pointmap-train --preset tiny')
    # Fresh models are residual by default and predict exactly zero flow at step 0 (heads 3/4
    # copy heads 1/2's confidence and start with zero offsets).
    fresh = train_tool.build_model(train_tool.build_parser().parse_args(args), (48, 64))
    assert fresh.config.cross_time == 'residual'
    with torch.no_grad():
        img = torch.rand(1, 3, 48, 64) * 2 - 1
        maps = fresh.eval()(img, -img)
    assert torch.equal(maps['pts_i_tj'], maps['pts_i_ti'])
    assert torch.equal(maps['pts_j_ti'], maps['pts_j_tj'])
    assert torch.equal(maps['conf_i_tj'], maps['conf_i_ti'])
    absolute = train_tool.build_model(train_tool.build_parser().parse_args(
        [*args, '--cross-time', 'absolute']), (48, 64))
    for a, b in zip(absolute.downstream_head1.parameters(),
                    absolute.downstream_head3.parameters()):
        assert torch.equal(a, b)
    assert train_tool.main([*args[:5], '5', *args[6:], '--resume']) == 0
    record = json.loads((out / 'run.json').read_text())
    assert record['final_step'] == 5 and record['previous']['final_step'] == 3
    # Stage 2 of the shipped recipe: cross-time heads reset to copies, only they train.
    stage2 = tmp_path / 'stage2'
    assert train_tool.main([*args, '--steps', '2', '--out', str(stage2),
                            '--init', str(out / 'last.safetensors'), '--copy-cross-heads',
                            '--train-only', 'downstream_head3', 'downstream_head4',
                            '--map-weights', '0', '0', '0', '0', '--flow-weight', '1']) == 0
    before, after = load_checkpoint(out / 'last.safetensors'), load_checkpoint(
        stage2 / 'last.safetensors')
    for name, p in after.named_parameters():
        if name.startswith(('downstream_head3', 'downstream_head4')):
            continue
        assert torch.equal(p, dict(before.named_parameters())[name]), name
    assert not all(torch.equal(a, b) for a, b in zip(after.downstream_head1.parameters(),
                                                     after.downstream_head3.parameters()))
    assert train_tool.main([*args, '--out', str(tmp_path / 'y'), '--train-only', 'nothing']) == 2
    # Errors are reported, not raised.
    assert train_tool.main(['--out', str(tmp_path / 'none'), '--resume']) == 2
    assert train_tool.main(['--out', str(tmp_path / 'x'), '--resolution', '96by64']) == 2
    if not torch.cuda.is_available():
        assert train_tool.main(['--out', str(tmp_path / 'x'), '--device', 'cuda']) == 2
    with pytest.raises(ConfigError, match='resolution'):
        train_tool.parse_resolution('0x64')


def test_non_finite_loss_stops_training(tmp_path):
    model = _tiny()
    with torch.no_grad():
        next(model.downstream_head1.parameters()).fill_(float('nan'))
    trainer = Trainer(model, DPMLoss(), DPMPairStream(DATA), None, TrainConfig(),
                      str(tmp_path))
    batch = next(iter(torch.utils.data.DataLoader(DPMPairStream(DATA), batch_size=1)))
    with pytest.raises(FloatingPointError, match='non-finite loss'):
        trainer.train_step(batch)


def test_cli_init_from_an_official_dust3r_checkpoint(tmp_path, shared_dir):
    import argparse

    from safetensors.torch import load_file

    ref = shared_dir / 'reference' / 'tiny_linear'
    if not (ref / 'weights.safetensors').is_file():
        pytest.skip(f'reference vectors not found at {ref}')
    meta = json.loads((ref / 'config.json').read_text())
    pth = tmp_path / 'dust3r.pth'
    torch.save({'model': load_file(str(ref / 'weights.safetensors')),
                'args': argparse.Namespace(model=meta['constructor_python'])}, pth)
    out = tmp_path / 'run'
    assert train_tool.main(['--init', str(pth), '--resolution', '64x48', '--steps', '2',
                            '--batch-size', '1', '--num-frames', '6', '--gap-max', '2',
                            '--val-sequences', '0', '--warmup', '1', '--out', str(out),
                            '--no-progress']) == 0
    init = load_checkpoint(out / 'init.safetensors')
    assert init.config.head_type == 'linear' and init.config.num_maps == 4
    for a, b in zip(init.downstream_head2.parameters(), init.downstream_head4.parameters()):
        assert torch.equal(a, b)
    trained = load_checkpoint(out / 'last.safetensors')
    assert trained.config.img_size == (48, 64)
