"""``pointmap-eval``: accuracy of a DPM checkpoint against the trivial baselines.

Examples::

    pointmap-eval                                  # shipped model, 8 held-out sequences
    pointmap-eval --checkpoint runs/small/last.safetensors --sequences 16 --out eval/
    pointmap-eval --dataset-dir /data/my_seqs      # folder layout of docs/evaluation.md

Generated data comes from the 'test' seed range of ``data/dataset.py`` (never used in
training), rendered at the checkpoint's native resolution. Writes ``report.md``,
``metrics.json`` and ``fig_*.png`` into ``--out`` and prints the report.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

import numpy as np
import torch

from pointmap_ros.assets import SHIPPED_MODEL
from pointmap_ros.data.dataset import SPLIT_SEEDS, PairDataConfig, normalize_image, split_seeds
from pointmap_ros.data.scenes import SceneGenerator
from pointmap_ros.errors import ConfigError, PointmapError
from pointmap_ros.evaluation.dataset_dir import (EvalPair, list_sequences,
                                                 read_sequence_pairs)
from pointmap_ros.evaluation.metrics import (BASELINES, PairTruth, aggregate, median_scale,
                                             pair_metrics, view_motion)
from pointmap_ros.evaluation.report import markdown_report, save_pair_figure, target_rows
from pointmap_ros.model.checkpoint import load_checkpoint, record_cross_time_validation
from pointmap_ros.types import DynamicPointMaps

__all__ = ['main', 'build_parser', 'generated_pairs', 'predict', 'evaluate_pairs']

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='pointmap-eval', description=__doc__.split('\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--checkpoint', default=str(SHIPPED_MODEL), help='our .safetensors checkpoint')
    p.add_argument('--sequences', type=int, default=8,
                   help='number of held-out generated sequences (first seeds of the test split)')
    p.add_argument('--seeds', help='comma-separated generator seeds instead of --sequences '
                   '(must lie in the test split)')
    p.add_argument('--pairs-per-sequence', type=int, default=8)
    p.add_argument('--num-frames', type=int, default=24)
    p.add_argument('--scene-preset', default='random', choices=('random', 'demo'),
                   help="generated scenes: 'random' (as in training) or the demo stream's")
    p.add_argument('--gap-min', type=int, default=1)
    p.add_argument('--gap-max', type=int, default=4)
    p.add_argument('--dataset-dir', help='evaluate a folder in the documented layout instead')
    p.add_argument('--out', default='eval', help='output folder')
    p.add_argument('--figures', type=int, default=3, help='pairs to draw')
    p.add_argument('--batch-size', type=int, default=8)
    p.add_argument('--device', default='cpu')
    p.add_argument('--record', action='store_true',
                   help="store the flow errors against the zero-flow baseline in the "
                   "checkpoint's JSON: 'cross_time_source: auto' uses the network's cross-time "
                   'maps only for a checkpoint whose recorded flow beats zero flow')
    p.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    return p


def generated_pairs(seeds: list[int], data: PairDataConfig, pairs_per_sequence: int
                    ) -> list[EvalPair]:
    """Pairs (i, i + gap) of generated sequences; pair k of seed s is drawn from rng(s, k)."""
    pairs = []
    for seed in seeds:
        gen = SceneGenerator(data.scene_config(), seed=seed)
        for k in range(pairs_per_sequence):
            rng = np.random.default_rng([seed, k])
            gap = int(rng.integers(data.gap_min, data.gap_max + 1))
            i = int(rng.integers(0, data.num_frames - gap))
            gt = gen.pair_ground_truth(i, i + gap)
            truth = PairTruth.from_generator(gt, gen.K, gen.stamp(i + gap) - gen.stamp(i))
            pairs.append(EvalPair(f'seed {seed}: {i}-{i + gap}', gen.render(i).rgb,
                                  gen.render(i + gap).rgb, truth))
    return pairs


@torch.no_grad()
def predict(model: torch.nn.Module, pairs: list[EvalPair], batch_size: int,
            device: str = 'cpu') -> list[DynamicPointMaps]:
    """Run the model on every pair (images already at its resolution)."""
    out = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        img_i = torch.from_numpy(np.stack([normalize_image(p.rgb_i) for p in chunk])).to(device)
        img_j = torch.from_numpy(np.stack([normalize_image(p.rgb_j) for p in chunk])).to(device)
        pred = {k: v.float().cpu().numpy() for k, v in model(img_i, img_j).items()}
        for b in range(len(chunk)):
            out.append(DynamicPointMaps.from_flat({k: v[b:b + 1] for k, v in pred.items()}))
    return out


def evaluate_pairs(pairs: list[EvalPair], preds: list[DynamicPointMaps]
                   ) -> tuple[dict, dict[str, dict]]:
    """Aggregated metrics of the model and of every baseline over ``pairs``."""
    rows = [pair_metrics(pred, pair.truth) for pair, pred in zip(pairs, preds)]
    base = {name: aggregate([pair_metrics(fn(p.truth), p.truth) for p in pairs])
            for name, fn in BASELINES.items()}
    return aggregate(rows), base


def _figures(out_dir: str, pairs: list[EvalPair], preds: list[DynamicPointMaps],
             count: int) -> list[str]:
    paths = []
    dynamic = [k for k, p in enumerate(pairs)
               if p.truth.has_dynamic and p.truth.motion_i is not None]
    for n, k in enumerate(dynamic[:count]):
        pair, pred = pairs[k], preds[k]
        s = median_scale(pred, pair.truth)
        paths.append(save_pair_figure(
            os.path.join(out_dir, f'fig_{n}.png'), pair.rgb_i, pred, pair.truth.maps,
            pair.truth.valid_i, pair.truth.motion_i, view_motion(pred, pair.truth, 'i', s), s,
            title=pair.name))
    return paths


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.command = 'pointmap-eval ' + ' '.join(argv)
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(name)s: %(message)s')
    try:
        return _run(args)
    except PointmapError as exc:
        logger.error('%s', exc)
        return 2


def _run(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_checkpoint(args.checkpoint, map_location=args.device)
    size = tuple(model.config.img_size)
    info = {'checkpoint': os.path.basename(args.checkpoint),
            'resolution (W x H)': f'{size[1]} x {size[0]}'}
    if args.dataset_dir:
        pairs = [p for seq in list_sequences(args.dataset_dir)
                 for p in read_sequence_pairs(seq, size, gaps=tuple(range(args.gap_min,
                                                                          args.gap_max + 1)))]
        info['data'] = f'dataset folder {args.dataset_dir}'
    else:
        if args.seeds:
            seeds = [int(s) for s in args.seeds.split(',')]
            lo, hi = SPLIT_SEEDS['test']
            outside = [s for s in seeds if not lo <= s < hi]
            if outside:
                raise ConfigError(f'--seeds {outside} are outside the held-out test split '
                                  f'[{lo}, {hi})', name='seeds', value=args.seeds)
        else:
            seeds = split_seeds('test', args.sequences)
        data = PairDataConfig(height=size[0], width=size[1], num_frames=args.num_frames,
                              gap_min=args.gap_min, gap_max=args.gap_max, symmetrize=0.0,
                              scene={'preset': args.scene_preset})
        data.validate()
        pairs = generated_pairs(seeds, data, args.pairs_per_sequence)
        info['data'] = (f'{len(seeds)} held-out generated sequences (preset '
                        f'{args.scene_preset}, seeds {seeds[0]}..{seeds[-1]}), '
                        f'{args.num_frames} frames at {data.scene_config().fps:g} fps, '
                        f'{args.pairs_per_sequence} pairs each, gaps {args.gap_min}-'
                        f'{args.gap_max} frames')
    info['pairs'] = len(pairs)
    preds = predict(model, pairs, args.batch_size, args.device)
    model_metrics, base = evaluate_pairs(pairs, preds)
    os.makedirs(args.out, exist_ok=True)
    report = markdown_report(f'DPM evaluation: {os.path.basename(args.checkpoint)}',
                             model_metrics, base, info)
    figs = _figures(args.out, pairs, preds, args.figures)
    if figs:
        report += '\n' + '\n'.join(f'![{os.path.basename(f)}]({os.path.basename(f)})'
                                   for f in figs) + '\n'
    with open(os.path.join(args.out, 'report.md'), 'w') as f:
        f.write(report)
    with open(os.path.join(args.out, 'metrics.json'), 'w') as f:
        json.dump({'info': info, 'model': model_metrics, 'baselines': base,
                   'targets': target_rows(model_metrics, base)}, f, indent=2)
    print(report)
    if args.record:
        _record_validation(args.checkpoint, model_metrics, base['zero_flow'], info,
                           args.command)
    return 0


def _record_validation(checkpoint: str, model_metrics: dict, zero_flow: dict,
                       info: dict, command: str) -> None:
    """Write the held-out flow errors into the checkpoint (``--record``)."""
    validation = {'epe': model_metrics['epe'], 'epe_zero': zero_flow['epe'],
                  'epe_dyn': model_metrics['epe_dyn'], 'epe_dyn_zero': zero_flow['epe_dyn'],
                  'data': info['data'], 'pairs': info['pairs'],
                  'command': command}
    path = record_cross_time_validation(checkpoint, validation)
    beats = validation['epe'] < validation['epe_zero'] and (
        validation['epe_dyn'] < validation['epe_dyn_zero'])
    logger.info('recorded in %s: flow EPE %.4g vs zero %.4g, moving %.4g vs %.4g -> %s', path,
                validation['epe'], validation['epe_zero'], validation['epe_dyn'],
                validation['epe_dyn_zero'],
                "auto uses the network's cross-time maps" if beats
                else "auto fuses correspondences with them")


if __name__ == '__main__':
    sys.exit(main())
