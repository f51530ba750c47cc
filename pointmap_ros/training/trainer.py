"""Training loop for DPM models: AdamW + warmup/cosine, AMP, validation, checkpoints, logs.

The recipe follows DUSt3R (dpm_spec.md §1.14): AdamW with betas (0.9, 0.95) and weight decay
0.05 on matrices only, a linear warmup followed by a cosine decay to ``min_lr``, gradient
clipping. Training is counted in optimizer steps rather than epochs because the generated data
is an endless stream.

Outputs in ``out_dir``:
    ``last.safetensors`` / ``last.json``  model weights + config (``model/checkpoint.py``),
    ``trainer_state.pt``                  optimizer, scaler, step (for ``resume``),
    ``log.csv``                           one row per logging interval and per validation,
    ``log.png``                           loss and per-map errors against steps.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader

from pointmap_ros.errors import CheckpointError, ConfigError
from pointmap_ros.model.checkpoint import save_checkpoint
from pointmap_ros.training.loss import DPMLoss, metrics_to_floats
from pointmap_ros.types import MAP_NAMES

__all__ = ['TrainConfig', 'Trainer', 'seed_everything', 'lr_at', 'plot_log', 'LOG_FIELDS',
           'make_loader']

logger = logging.getLogger(__name__)

#: Columns of ``log.csv``; ``phase`` is 'train' (mean over the logging interval) or 'val'.
LOG_FIELDS = (['step', 'phase', 'lr', 'loss'] + [f'reg_{m}' for m in MAP_NAMES]
              + [f'conf_{m}' for m in MAP_NAMES]
              + ['flow_err', 'flow_err_dyn', 'flow_loss', 'samples_per_s', 'data_wait_frac',
                 'elapsed_s'])

AMP_MODES = ('none', 'bf16', 'fp16')


@dataclass
class TrainConfig:
    """Optimisation settings.

    Attributes:
        steps: total optimizer steps (the cosine schedule ends here).
        batch_size: pairs per step.
        lr, min_lr: peak and final learning rate.
        warmup_steps: linear warmup length (steps).
        weight_decay: AdamW decay, applied to weights with >= 2 dims only.
        betas: AdamW betas.
        grad_clip: max gradient norm; 0 disables clipping.
        amp: 'none', 'bf16' (CPU or CUDA) or 'fp16' (CUDA only, with a GradScaler).
        val_every: validate every this many steps (0: only at the end).
        log_every: write a training log row every this many steps.
        ckpt_minutes: also checkpoint when this much wall time passed since the last one.
        max_minutes: wall-time budget; None: no limit. With a budget the schedule's progress
            is the larger of the step and the wall-time fractions, so a run on a shared or
            slow machine still completes its cosine decay, and stops (with a checkpoint) when
            either is used up.
        seed: seeds python, numpy, torch and the data stream.
        num_workers: DataLoader worker processes.
        prefetch_factor: batches each worker prepares ahead (with ``num_workers`` > 0).
    """

    steps: int = 1000
    batch_size: int = 4
    lr: float = 1e-4
    min_lr: float = 1e-6
    warmup_steps: int = 100
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    amp: str = 'none'
    val_every: int = 500
    log_every: int = 10
    ckpt_minutes: float = 5.0
    max_minutes: float | None = None
    seed: int = 0
    num_workers: int = 0
    prefetch_factor: int = 4

    def validate(self, device: torch.device) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ConfigError(f'steps ({self.steps}) and batch_size ({self.batch_size}) must be '
                              '>= 1', name='steps', value=self.steps)
        if not 0 < self.min_lr <= self.lr:
            raise ConfigError(f'need 0 < min_lr ({self.min_lr}) <= lr ({self.lr})', name='lr',
                              value=self.lr)
        if self.amp not in AMP_MODES:
            raise ConfigError(f'amp={self.amp!r}; expected one of {AMP_MODES}', name='amp',
                              value=self.amp)
        if self.amp == 'fp16' and device.type != 'cuda':
            raise ConfigError(f'amp=fp16 needs a CUDA device, got {device}', name='amp',
                              value=self.amp)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def lr_at(step: int, config: TrainConfig, time_fraction: float = 0.0) -> float:
    """Learning rate at ``step`` (0-based): linear warmup, then cosine to ``min_lr``.

    ``time_fraction`` (elapsed / budget) advances the cosine when it is ahead of the steps.
    """
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    span = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, max((step - config.warmup_steps) / span, time_fraction))
    return config.min_lr + (config.lr - config.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices/kernels; leave biases, norms, tokens and other 1-D tensors alone."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 or name.endswith('.bias') else decay).append(param)
    return [{'params': decay, 'weight_decay': weight_decay},
            {'params': no_decay, 'weight_decay': 0.0}]


class Trainer:
    """Runs the optimisation of a DPM model on a stream of pair samples.

    Args:
        model: a ``DynamicPointMapNet`` (``forward(img_i, img_j)`` -> dict of 8 tensors).
        loss: the objective.
        train_data: an iterable dataset of samples (see ``data/dataset.py``).
        val_data: a map-style dataset for validation, or None.
        config: optimisation settings.
        out_dir: where checkpoints and logs go (created).
        device: torch device.
    """

    def __init__(self, model: torch.nn.Module, loss: DPMLoss, train_data, val_data,
                 config: TrainConfig, out_dir: str, device: str | torch.device = 'cpu'):
        self.device = torch.device(device)
        config.validate(self.device)
        self.model = model.to(self.device)
        self.loss = loss
        self.config = config
        self.train_data = train_data
        self.val_data = val_data
        self.out_dir = out_dir
        os.makedirs(out_dir, exist_ok=True)
        # Fused AdamW on CUDA: one kernel per step instead of a launch per tensor (the small
        # model's step is bound by launches, not arithmetic).
        self.optimizer = torch.optim.AdamW(_param_groups(model, config.weight_decay),
                                           lr=config.lr, betas=tuple(config.betas),
                                           fused=self.device.type == 'cuda' or None)
        self.scaler = torch.amp.GradScaler('cuda', enabled=config.amp == 'fp16')
        self.step = 0
        self.elapsed_s = 0.0  # training wall time, carried over on resume
        self._nonfinite: torch.Tensor | None = None  # count of non-finite losses (CUDA)
        self.log_path = os.path.join(out_dir, 'log.csv')

    # -- state --------------------------------------------------------------------------------
    def save(self, name: str = 'last') -> str:
        """Write the model checkpoint and the trainer state; return the model path."""
        path = os.path.join(self.out_dir, f'{name}.safetensors')
        save_checkpoint(self.model, path, source={'kind': 'trained', 'step': self.step})
        torch.save({'optimizer': self.optimizer.state_dict(), 'scaler': self.scaler.state_dict(),
                    'step': self.step, 'elapsed_s': self.elapsed_s,
                    'config': asdict(self.config)},
                   os.path.join(self.out_dir, 'trainer_state.pt'))
        logger.info('checkpoint at step %d -> %s', self.step, path)
        return path

    def load_state(self, state_path: str) -> None:
        """Restore optimizer, scaler and step from a ``trainer_state.pt`` (model loaded apart).

        Raises:
            CheckpointError: when the file is missing or not a trainer state.
        """
        if not os.path.isfile(state_path):
            raise CheckpointError(f'trainer state {state_path!r} does not exist')
        state = torch.load(state_path, map_location=self.device, weights_only=True)
        if not isinstance(state, dict) or not {'optimizer', 'scaler', 'step'} <= set(state):
            raise CheckpointError(f'{state_path!r} is not a trainer state (expected keys '
                                  f'optimizer, scaler, step)')
        self.optimizer.load_state_dict(state['optimizer'])
        self.scaler.load_state_dict(state['scaler'])
        self.step = int(state['step'])
        self.elapsed_s = float(state.get('elapsed_s', 0.0))

    # -- one step ---------------------------------------------------------------------------
    def _autocast(self):
        if self.config.amp == 'none':
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.config.amp == 'bf16' else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def _forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        batch = {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v
                 for k, v in batch.items()}
        with self._autocast():
            pred = self.model(batch['img_i'], batch['img_j'])
        return self.loss(pred, batch)

    def _time_fraction(self) -> float:
        if self.config.max_minutes is None:
            return 0.0
        return self.elapsed_s / (60.0 * self.config.max_minutes)

    def train_step(self, batch: dict) -> dict[str, torch.Tensor | float]:
        """One optimizer step on ``batch``; returns the loss metrics.

        The metrics are detached tensors on the training device: reading them (``float``)
        would wait for the GPU, so :meth:`fit` adds them up on the device and converts them
        once per logging interval. On the CPU a non-finite loss raises here, before the step;
        on CUDA the check is deferred to :meth:`check_finite` (called by :meth:`fit` at every
        log row), because testing it here would stall the GPU every step.

        Raises:
            FloatingPointError: non-finite loss (at once on the CPU).
        """
        self.model.train()
        for group in self.optimizer.param_groups:
            group['lr'] = lr_at(self.step, self.config, self._time_fraction())
        loss, metrics = self._forward(batch)
        if self.device.type != 'cuda':
            if not torch.isfinite(loss):
                raise FloatingPointError(f'non-finite loss {float(loss.detach())} at step '
                                         f'{self.step}')
        else:
            bad = (~torch.isfinite(loss.detach())).to(torch.int32)
            self._nonfinite = bad if self._nonfinite is None else self._nonfinite + bad
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.config.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        metrics['lr'] = self.optimizer.param_groups[0]['lr']
        return metrics

    def check_finite(self) -> None:
        """Raise if any loss since the last check was non-finite (one host sync on CUDA).

        Raises:
            FloatingPointError: naming the step range.
        """
        if self._nonfinite is not None and int(self._nonfinite) > 0:
            count = int(self._nonfinite)
            self._nonfinite = None
            raise FloatingPointError(f'non-finite loss in {count} step(s) up to step '
                                     f'{self.step}')
        self._nonfinite = None

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean loss metrics over the whole validation set (deterministic pairs)."""
        self.model.eval()
        loader = DataLoader(self.val_data, batch_size=self.config.batch_size, shuffle=False)
        sums: dict[str, float] = {}
        count = 0
        for batch in loader:
            metrics = metrics_to_floats(self._forward(batch)[1])
            n = len(batch['img_i'])
            for key, value in metrics.items():
                sums[key] = sums.get(key, 0.0) + value * n
            count += n
        return {key: value / max(count, 1) for key, value in sums.items()}

    # -- loop ---------------------------------------------------------------------------------
    def _log(self, row: dict) -> None:
        new = not os.path.exists(self.log_path)
        with open(self.log_path, 'a', newline='') as f:
            writer = csv.DictWriter(f, fieldnames=LOG_FIELDS, extrasaction='ignore')
            if new:
                writer.writeheader()
            writer.writerow(row)

    def fit(self, progress: bool = True) -> dict[str, float]:
        """Train until ``config.steps`` or the ``max_minutes`` budget; return the last validation.

        Checkpoints are written every ``ckpt_minutes``, at every validation and at the end, so
        the run can be stopped at any time and resumed.
        """
        from tqdm import tqdm

        cfg = self.config
        # Offset the stream seed by the start step so a resumed run sees new pairs.
        if hasattr(self.train_data, 'seed'):
            self.train_data.seed = cfg.seed + self.step
        loader = make_loader(self.train_data, cfg, self.device)
        last_ckpt = last_log = time.monotonic()
        window: dict[str, float] = {}
        window_steps = 0
        saved_step = -1
        val_metrics: dict[str, float] = {}
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not progress, dynamic_ncols=True)
        batches = iter(loader)
        data_wait = 0.0
        while self.step < cfg.steps and self._time_fraction() < 1.0:
            tick = time.monotonic()
            batch = next(batches)
            got = time.monotonic()
            data_wait += got - tick
            metrics = self.train_step(batch)
            now = time.monotonic()
            self.elapsed_s += now - tick
            bar.update(1)
            for key, value in metrics.items():  # device tensors: no host sync per step
                window[key] = window.get(key, 0.0) + value
            window_steps += 1
            last_step = self.step >= cfg.steps or self._time_fraction() >= 1.0
            if self.step % cfg.log_every == 0 or last_step:
                self.check_finite()
                row = {k: v / window_steps for k, v in metrics_to_floats(window).items()}
                now = time.monotonic()  # after the sync: the interval covers the GPU's work
                row.update(step=self.step, phase='train', elapsed_s=round(self.elapsed_s, 1),
                           samples_per_s=window_steps * cfg.batch_size / max(now - last_log,
                                                                             1e-9),
                           data_wait_frac=data_wait / max(now - last_log, 1e-9))
                data_wait = 0.0
                self._log(row)
                bar.set_postfix(loss=f'{row["loss"]:.4f}', lr=f'{row["lr"]:.2e}')
                window, window_steps, last_log = {}, 0, now
            validate = self.val_data is not None and cfg.val_every \
                and self.step % cfg.val_every == 0
            if validate:
                val_metrics = self._validate_and_log()
            if validate or now - last_ckpt > 60.0 * cfg.ckpt_minutes:
                self.save()
                saved_step, last_ckpt = self.step, time.monotonic()
        bar.close()
        if self._time_fraction() >= 1.0 and self.step < cfg.steps:
            logger.warning('stopped at step %d of %d: max_minutes=%s used up', self.step,
                           cfg.steps, cfg.max_minutes)
        if self.val_data is not None and saved_step != self.step:
            val_metrics = self._validate_and_log()
        if saved_step != self.step:
            self.save()
        plot_log(self.log_path, os.path.join(self.out_dir, 'log.png'))
        return val_metrics

    def _validate_and_log(self) -> dict[str, float]:
        metrics = self.validate()
        self._log({**metrics, 'step': self.step, 'phase': 'val',
                   'lr': self.optimizer.param_groups[0]['lr'],
                   'elapsed_s': round(self.elapsed_s, 1)})
        logger.info('step %d validation: loss %.4f flow_err %.4f', self.step, metrics['loss'],
                    metrics['flow_err'])
        return metrics


def make_loader(dataset, config: TrainConfig, device: torch.device) -> DataLoader:
    """The training DataLoader: worker processes (persistent, prefetching) and, for CUDA,
    pinned host memory so the ``non_blocking`` copies in :meth:`Trainer._forward` overlap
    the GPU's work."""
    workers = config.num_workers
    extra = {'persistent_workers': True, 'prefetch_factor': config.prefetch_factor} \
        if workers > 0 else {}
    return DataLoader(dataset, batch_size=config.batch_size, num_workers=workers,
                      pin_memory=device.type == 'cuda', **extra)


def plot_log(csv_path: str, png_path: str) -> bool:
    """Plot loss, per-map regression errors and flow error of ``log.csv`` into a PNG.

    Returns False (with a warning) when matplotlib is missing or the log is empty.
    """
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning('matplotlib not installed: no %s', png_path)
        return False
    if not os.path.exists(csv_path):
        logger.warning('no log %s to plot', csv_path)
        return False
    with open(csv_path, newline='') as f:
        rows = list(csv.DictReader(f))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for phase, style in (('train', '-'), ('val', 'o-')):
        sel = [r for r in rows if r['phase'] == phase]
        if not sel:
            continue
        steps = [int(r['step']) for r in sel]

        def col(key, sel=sel):
            return [float(r[key]) if r[key] else math.nan for r in sel]

        axes[0].plot(steps, col('loss'), style, label=phase)
        for m in MAP_NAMES:
            axes[1].plot(steps, col(f'reg_{m}'), style, label=f'{phase} {m}')
        axes[2].plot(steps, col('flow_err'), style, label=phase)
    for ax, title in zip(axes, ('loss (conf-weighted)', 'normalised L21 error per map',
                                'normalised scene-flow error')):
        ax.set_title(title)
        ax.set_xlabel('step')
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    axes[1].set_yscale('log')
    axes[2].set_yscale('log')
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return True
