"""One prepared training session for a lent GPU: throughput, ablation, final run, export.

Run on the accelerator machine with only ``PYTHONPATH=<repo>`` and the packages its image has
(torch, numpy, opencv, scipy, safetensors; no ROS)::

    PYTHONUNBUFFERED=1 python -m pointmap_ros.training.gpu_session --out $OUT

What it does, in order, each stage guarded so a failure still leaves the earlier results:

1. **Throughput**: the data pipeline alone (DataLoader workers over ``DPMPairStream``, pairs/s)
   and the training step alone on one fixed batch (pairs/s, GPU-bound).
2. **Ablation** at an equal step budget (steps fixed once from the measured rate), every
   variant from the same initial weights and the same data seed, scored on the same held-out
   pairs (val split seeds disjoint from training, validation and the test split).
3. **Final run** with the best new-objective variant by the ablation score, for
   ``--final-seconds``, GPU utilisation sampled in the background, checkpoints exported as
   float16 safetensors (<= 16 MiB) into ``--out`` every ``--ckpt-seconds``.
4. **Evaluation** of the final model on the test split (``pointmap-eval``'s defaults) and a
   JSON summary (``results.json``) plus a table printed last.

The same script runs on the CPU at toy scale (``--device cpu --smoke``) to check it end to end.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import platform
import threading
import time
import traceback

import numpy as np
import torch

from pointmap_ros.data.dataset import DPMPairStream, PairDataConfig, SPLIT_SEEDS
from pointmap_ros.model.checkpoint import save_checkpoint
from pointmap_ros.model.config import ModelConfig
from pointmap_ros.model.dpm import DynamicPointMapNet, zero_init_cross_time_offsets
from pointmap_ros.training.loss import DPMLoss, DPMLossConfig
from pointmap_ros.training.trainer import Trainer, TrainConfig, make_loader, seed_everything

__all__ = ['main', 'VARIANTS', 'ablation_score', 'export_fp16', 'export_fp32_shards',
           'merge_fp32_shards']

logger = logging.getLogger('gpu_session')

#: Ablation variants: (name, cross_time, loss overrides, data overrides). 'old' is the shipped
#: model's recipe (absolute maps, plain confidence-weighted loss, gaps 1..4, no variation).
OLD_DATA = {'gap_max': 4, 'vary_scenes': 0.0}
NEW_DATA = {'gap_max': 8, 'vary_scenes': 0.5}
PLAIN_LOSS = {'flow_weight': 0.0}
FLOW_LOSS = {'flow_weight': 1.0, 'flow_scale': 'flow', 'flow_moving_share': 0.5}
VARIANTS = [
    ('A old: absolute, plain loss', 'absolute', PLAIN_LOSS, OLD_DATA),
    ('B residual, plain loss', 'residual', PLAIN_LOSS, OLD_DATA),
    ('C residual + flow term', 'residual', FLOW_LOSS, OLD_DATA),
    ('D C + varied data, gaps 1..8', 'residual', FLOW_LOSS, NEW_DATA),
    ('E D + dynamic weight 1', 'residual', {**FLOW_LOSS, 'dynamic_weight': 1.0}, NEW_DATA),
]
#: Variants the final run may pick: the new objective on the new data (the data change is
#: for scenes beyond the eval distribution, which a short ablation on it cannot reward).
FINAL_CANDIDATES = ('D', 'E')
FALLBACK = 'D'

#: Held-out pairs of the ablation: val-split seeds past the trainer's validation seeds.
ABLATION_SEED_OFFSET = 500


def ablation_score(metrics: dict, baseline: dict) -> float:
    """Lower is better: the four done-when ratios, each as a fraction of its bound.

    ``epe / (0.5 zero-flow epe)``, ``epe_dyn / (0.5 zero-flow epe_dyn)``,
    ``(1 - iou) / 0.3`` and ``absrel / 0.08``, averaged; NaN counts as 10.
    """
    terms = [metrics.get('epe', math.nan) / (0.5 * baseline.get('epe', math.nan)),
             metrics.get('epe_dyn', math.nan) / (0.5 * baseline.get('epe_dyn', math.nan)),
             (1.0 - metrics.get('iou', math.nan)) / 0.3,
             metrics.get('absrel', math.nan) / 0.08]
    return float(np.mean([t if math.isfinite(t) else 10.0 for t in terms]))


class _GpuSampler:
    """Samples GPU utilisation (%) every ``interval`` s in a thread (NVML via torch)."""

    def __init__(self, interval: float = 0.5):
        self.interval = interval
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                self.samples.append(float(torch.cuda.utilization()))
            except Exception:  # NVML missing: no samples, reported as None
                return
            self._stop.wait(self.interval)

    def __enter__(self):
        if torch.cuda.is_available():
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()

    def mean(self) -> float | None:
        # Skip the first second (worker start-up) when there is enough.
        s = self.samples[2:] if len(self.samples) > 6 else self.samples
        return float(np.mean(s)) if s else None


class _ExportingTrainer(Trainer):
    """A trainer whose every checkpoint is also exported as float16 safetensors to ``export``
    (the lent machine returns only files <= 16 MiB; the float32 file is 26.6 MB)."""

    export: str | None = None
    source: dict | None = None

    def save(self, name: str = 'last') -> str:
        path = super().save(name)
        if self.export:
            export_fp16(self.model, self.export, {**(self.source or {}), 'step': self.step})
            export_fp32_shards(self.model, os.path.dirname(self.export))
        return path


def export_fp32_shards(model: torch.nn.Module, folder: str, shards: int = 2) -> list[str]:
    """The exact float32 weights in ``shards`` safetensors files (each under the 16 MiB a
    returned file may have); :func:`merge_fp32_shards` puts them back together."""
    from safetensors.torch import save_file

    from pointmap_ros.model.key_mapping import drop_dpt_aliases
    state = {k: v.detach().to('cpu').float().contiguous()
             for k, v in drop_dpt_aliases(model.state_dict()).items()}
    total = sum(v.numel() for v in state.values())
    parts: list[dict] = [{} for _ in range(shards)]
    done = 0
    for key, value in state.items():
        parts[min(shards - 1, done * shards // max(total, 1))][key] = value
        done += value.numel()
    paths = []
    for k, part in enumerate(parts):
        path = os.path.join(folder, f'weights_fp32_part{k}.safetensors')
        save_file(part, path)
        paths.append(path)
    return paths


def merge_fp32_shards(paths: list[str]) -> dict[str, torch.Tensor]:
    """The state dict of :func:`export_fp32_shards`' files."""
    from safetensors.torch import load_file
    state: dict[str, torch.Tensor] = {}
    for path in paths:
        state.update(load_file(path))
    return state


def export_fp16(model: torch.nn.Module, path: str, source: dict) -> str:
    """Write ``model`` as a float16 checkpoint (``load_checkpoint`` reads it back into the
    float32 network); returns the JSON path."""
    half = copy.deepcopy(model).to('cpu').half()
    return str(save_checkpoint(half, path, source=source))


def _new_model(preset: str, size, cross_time: str, seed: int) -> DynamicPointMapNet:
    seed_everything(seed)
    model = DynamicPointMapNet(ModelConfig.preset(preset, img_size=size, cross_time=cross_time))
    # Heads 3/4 start as copies of heads 1/2: zero flow at step 0 (offsets zeroed if residual).
    model.downstream_head3.load_state_dict(model.downstream_head1.state_dict())
    model.downstream_head4.load_state_dict(model.downstream_head2.state_dict())
    if cross_time == 'residual':
        zero_init_cross_time_offsets(model)
    return model


def _data_config(args, overrides: dict) -> PairDataConfig:
    return PairDataConfig(height=args.size[0], width=args.size[1], num_frames=24,
                          gap_min=1, symmetrize=0.5, cache_size=args.cache_size,
                          pairs_per_sequence=args.pairs_per_sequence,
                          **{'gap_max': 4, 'vary_scenes': 0.0, **overrides})


def _eval_pairs(split: str, offset: int, sequences: int, pairs: int, size):
    from pointmap_ros.tools.evaluate import generated_pairs
    lo, _ = SPLIT_SEEDS[split]
    seeds = list(range(lo + offset, lo + offset + sequences))
    data = PairDataConfig(height=size[0], width=size[1], num_frames=24, gap_min=1, gap_max=4,
                          symmetrize=0.0)
    return seeds, generated_pairs(seeds, data, pairs)


def _evaluate(model, pairs, device) -> tuple[dict, dict]:
    from pointmap_ros.tools.evaluate import evaluate_pairs, predict
    model.eval()
    preds = predict(model, pairs, 32, str(device))
    metrics, base = evaluate_pairs(pairs, preds)
    keys = ('epe', 'epe_dyn', 'iou', 'iou_i', 'iou_j', 'absrel', 'delta')
    return ({k: metrics.get(k) for k in keys},
            {k: base['zero_flow'].get(k) for k in ('epe', 'epe_dyn')})


def _train(args, name, cross_time, loss_over, data_over, steps, seconds, out_dir, export=None,
           val_every=0, init=None):
    if init:
        # Continue from a checkpoint (a second, shorter session): its weights, a new schedule.
        from pointmap_ros.model.checkpoint import load_checkpoint
        model = load_checkpoint(init).float()
        model.config.img_size = args.size
    else:
        model = _new_model(args.preset, args.size, cross_time, args.seed)
    loss = DPMLoss(DPMLossConfig(**loss_over))
    data = _data_config(args, data_over)
    cfg = TrainConfig(steps=steps, batch_size=args.batch_size, lr=args.lr, min_lr=1e-6,
                      warmup_steps=min(args.warmup, max(1, steps // 10)),
                      amp='bf16' if args.device.startswith('cuda') else 'none',
                      val_every=val_every, log_every=args.log_every,
                      ckpt_minutes=args.ckpt_seconds / 60.0, max_minutes=seconds / 60.0,
                      seed=args.seed, num_workers=args.workers, prefetch_factor=4)
    trainer = _ExportingTrainer(model, loss, DPMPairStream(data, seed=args.seed), None, cfg,
                                out_dir, args.device)
    trainer.export = export
    trainer.source = {'kind': 'trained', 'recipe': 'docs/model_card.md', 'variant': name,
                      'init': os.path.basename(init) if init else None,
                      'loss': loss_over, 'data': data.__dict__, 'seed': args.seed,
                      'batch_size': args.batch_size, 'lr': args.lr}
    start = time.time()
    trainer.fit(progress=False)
    wall = time.time() - start
    rows = _read_log(os.path.join(out_dir, 'log.csv'))
    tail = [r for r in rows if r['phase'] == 'train'][-5:]
    rate = float(np.mean([float(r['samples_per_s']) for r in tail])) if tail else None
    wait = float(np.mean([float(r['data_wait_frac']) for r in tail])) if tail else None
    return trainer, {'steps': trainer.step, 'wall_s': round(wall, 1),
                     'pairs': trainer.step * args.batch_size, 'pairs_per_s': rate,
                     'data_wait_frac': wait}


def _read_log(path):
    import csv
    if not os.path.exists(path):
        return []
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def _bench_data(args, seconds: float) -> dict:
    """Pairs/s of the data pipeline alone (workers + collation + pinning)."""
    data = _data_config(args, NEW_DATA)
    cfg = TrainConfig(batch_size=args.batch_size, num_workers=args.workers)
    loader = make_loader(DPMPairStream(data, seed=args.seed + 99), cfg, torch.device(args.device))
    it = iter(loader)
    next(it)  # worker start-up
    start, n = time.monotonic(), 0
    while time.monotonic() - start < seconds:
        n += len(next(it)['img_i'])
    rate = n / (time.monotonic() - start)
    del it, loader
    return {'pairs_per_s': round(rate, 1), 'workers': args.workers,
            'per_worker': round(rate / max(args.workers, 1), 1)}


def _bench_step(args, steps: int) -> dict:
    """Pairs/s of the training step alone on one fixed batch already on the device."""
    data = _data_config(args, NEW_DATA)
    loader = torch.utils.data.DataLoader(DPMPairStream(data, seed=args.seed + 98),
                                         batch_size=args.batch_size)
    batch = next(iter(loader))
    model = _new_model(args.preset, args.size, 'residual', args.seed)
    cfg = TrainConfig(steps=10 ** 6, batch_size=args.batch_size, warmup_steps=1,
                      amp='bf16' if args.device.startswith('cuda') else 'none')
    trainer = Trainer(model, DPMLoss(), None, None, cfg, os.path.join(args.work, 'bench'),
                      args.device)
    dev = {k: v.to(args.device) if torch.is_tensor(v) else v for k, v in batch.items()}
    for _ in range(5):
        trainer.train_step(dev)
    if args.device.startswith('cuda'):
        torch.cuda.synchronize()
    start = time.monotonic()
    for _ in range(steps):
        trainer.train_step(dev)
    if args.device.startswith('cuda'):
        torch.cuda.synchronize()
    elapsed = time.monotonic() - start
    out = {'pairs_per_s': round(steps * args.batch_size / elapsed, 1),
           'step_ms': round(1000 * elapsed / steps, 2)}
    if args.device.startswith('cuda'):
        out['max_memory_gb'] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='gpu_session', description=__doc__.split('\n')[0])
    p.add_argument('--out', required=True, help='folder for the returned files')
    p.add_argument('--work', default='/tmp/gpu_session', help='scratch folder')
    p.add_argument('--device', default='cuda')
    p.add_argument('--preset', default='small')
    p.add_argument('--resolution', default='128x96')
    p.add_argument('--batch-size', type=int, default=64)
    p.add_argument('--lr', type=float, default=4e-4)
    p.add_argument('--warmup', type=int, default=150)
    p.add_argument('--workers', type=int, default=max(1, (os.cpu_count() or 2) - 2))
    p.add_argument('--cache-size', type=int, default=16, help='sequences per worker')
    p.add_argument('--pairs-per-sequence', type=int, default=200)
    p.add_argument('--ablation-seconds', type=float, default=35.0)
    p.add_argument('--ablation-variants', default='ABCDE')
    p.add_argument('--final-seconds', type=float, default=240.0)
    p.add_argument('--ckpt-seconds', type=float, default=60.0)
    p.add_argument('--log-every', type=int, default=50)
    p.add_argument('--eval-sequences', type=int, default=16)
    p.add_argument('--eval-pairs', type=int, default=8)
    p.add_argument('--final-variant', default='auto', help="'auto' (best score) or a letter")
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--init', help='final run: continue from this checkpoint (new schedule)')
    p.add_argument('--rate', type=float, default=None,
                   help='pairs/s to size the step budgets with; skips the throughput stage')
    p.add_argument('--skip-final-eval', action='store_true')
    p.add_argument('--smoke', action='store_true', help='toy sizes for a CPU check')
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(name)s: %(message)s')
    w, h = (int(v) for v in args.resolution.split('x'))
    args.size = (h, w)
    os.makedirs(args.out, exist_ok=True)
    os.makedirs(args.work, exist_ok=True)
    if args.device.startswith('cuda'):
        torch.backends.cudnn.benchmark = True
        # No TF32: the heavy work runs under bf16 autocast anyway, and the float32 parts (the
        # heads' last projection, the evaluation) must stay float32 for the small offsets.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    results: dict = {'started_utc': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
                     'torch': torch.__version__, 'python': platform.python_version(),
                     'cpu_count': os.cpu_count(), 'args': {k: v for k, v in vars(args).items()}}
    if args.device.startswith('cuda'):
        results['gpu'] = torch.cuda.get_device_name(0)
    session_start = time.time()

    def dump():
        results['session_s'] = round(time.time() - session_start, 1)
        with open(os.path.join(args.out, 'results.json'), 'w') as f:
            json.dump(results, f, indent=2, default=str)

    def stage(name, fn):
        t = time.time()
        try:
            value = fn()
            results.setdefault('stage_s', {})[name] = round(time.time() - t, 1)
            dump()
            return value
        except Exception:
            results.setdefault('errors', {})[name] = traceback.format_exc()[-3000:]
            logger.error('stage %s failed:\n%s', name, traceback.format_exc())
            dump()
            return None

    bench_s = 3.0 if args.smoke else 12.0
    if args.rate:
        rate = args.rate
    else:
        results['throughput_data'] = stage('bench_data', lambda: _bench_data(args, bench_s))
        results['throughput_step'] = stage('bench_step',
                                           lambda: _bench_step(args, 3 if args.smoke else 40))
        rate = min(r['pairs_per_s'] for r in (results['throughput_data'],
                                              results['throughput_step']) if r) \
            if (results['throughput_data'] or results['throughput_step']) else 100.0
    logger.info('throughput: %s / %s', results.get('throughput_data'),
                results.get('throughput_step'))

    ab_seeds_pairs = None
    if args.ablation_variants:
        ab_seeds_pairs = stage('ablation_pairs', lambda: _eval_pairs(
            'val', ABLATION_SEED_OFFSET, args.eval_sequences, args.eval_pairs, args.size))
    # Equal step budget: what the slower of data and step sustains in ablation_seconds, less
    # a margin for the workers' start-up.
    ab_steps = max(2, int(0.8 * args.ablation_seconds * rate / args.batch_size))
    results['ablation_steps'] = ab_steps
    results['ablation'] = {}
    for letter, (name, cross_time, loss_over, data_over) in zip('ABCDE', VARIANTS):
        if letter not in args.ablation_variants:
            continue

        def run_variant(name=name, cross_time=cross_time, loss_over=loss_over,
                        data_over=data_over, letter=letter):
            trainer, info = _train(args, name, cross_time, loss_over, data_over, ab_steps,
                                   2.0 * args.ablation_seconds,
                                   os.path.join(args.work, f'ablation_{letter}'))
            if ab_seeds_pairs:
                metrics, base = _evaluate(trainer.model, ab_seeds_pairs[1], args.device)
                info.update(metrics=metrics, zero_flow=base,
                            score=ablation_score(metrics, base))
            del trainer
            return info
        results['ablation'][letter] = {'name': name,
                                       **(stage(f'ablation_{letter}', run_variant) or {})}
        logger.info('ablation %s: %s', letter, results['ablation'][letter])
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    scored = {k: v['score'] for k, v in results['ablation'].items()
              if k in FINAL_CANDIDATES and 'score' in v}
    final = args.final_variant if args.final_variant != 'auto' else (
        min(scored, key=scored.get) if scored else FALLBACK)
    results['final_variant'] = final
    name, cross_time, loss_over, data_over = VARIANTS['ABCDE'.index(final)]
    final_steps = max(2, int(args.final_seconds * rate / args.batch_size))
    export = os.path.join(args.out, 'dpm_small_fp16')

    def run_final():
        with _GpuSampler() as sampler:
            trainer, info = _train(args, name, cross_time, loss_over, data_over, final_steps,
                                   args.final_seconds, os.path.join(args.work, 'final'),
                                   export=export, init=args.init)
        info['gpu_util_mean'] = sampler.mean()
        info['gpu_util_samples'] = len(sampler.samples)
        export_fp16(trainer.model, export, {**trainer.source, 'step': trainer.step,
                                            'wall_s': info['wall_s']})
        export_fp32_shards(trainer.model, args.out)
        return trainer, info

    final_out = stage('final', run_final)
    if final_out:
        trainer, info = final_out
        results['final'] = info
        try:
            import shutil
            shutil.copy(os.path.join(args.work, 'final', 'log.csv'),
                        os.path.join(args.out, 'final_log.csv'))
        except OSError:
            pass

        def final_eval():
            seeds, pairs = _eval_pairs('test', 0, args.eval_sequences, args.eval_pairs,
                                       args.size)
            metrics, base = _evaluate(trainer.model, pairs, args.device)
            return {'seeds': [seeds[0], seeds[-1]], 'metrics': metrics, 'zero_flow': base}
        if not args.skip_final_eval:
            results['final_eval_test'] = stage('final_eval', final_eval)
    dump()
    _print_table(results)
    return 0


def _fmt(v, digits=4):
    return '-' if v is None else (f'{v:.{digits}f}' if isinstance(v, float) else str(v))


def _print_table(results: dict) -> None:
    print('\n==== throughput ====')
    print('data only:', results.get('throughput_data'))
    print('train step only:', results.get('throughput_step'))
    print(f"\n==== ablation ({results.get('ablation_steps')} steps each) ====")
    print('| variant | steps | pairs/s | epe | zero epe | epe_dyn | zero dyn | iou | absrel | '
          'score |')
    for letter, row in results.get('ablation', {}).items():
        m, z = row.get('metrics', {}), row.get('zero_flow', {})
        print(f"| {row.get('name')} | {row.get('steps')} | "
              f"{_fmt(row.get('pairs_per_s'), 0)} | {_fmt(m.get('epe'))} | {_fmt(z.get('epe'))} | "
              f"{_fmt(m.get('epe_dyn'))} | {_fmt(z.get('epe_dyn'))} | {_fmt(m.get('iou'), 3)} | "
              f"{_fmt(m.get('absrel'), 3)} | {_fmt(row.get('score'), 3)} |")
    print('\n==== final ====', results.get('final_variant'), results.get('final'))
    print('test eval:', results.get('final_eval_test'))
    print('errors:', list(results.get('errors', {})))
    print('session_s:', results.get('session_s'))


if __name__ == '__main__':
    raise SystemExit(main())
