"""``pointmap-train``: train a DPM model on procedurally generated dynamic scenes.

Examples::

    # the shipped model's recipe (see docs/model_card.md for the exact command)
    pointmap-train --preset small --resolution 128x96 --steps 3000 --out runs/small
    # a quick smoke run
    pointmap-train --preset tiny --resolution 96x64 --steps 20 --batch-size 2 --out /tmp/smoke
    # continue an interrupted run (same arguments, plus --resume)
    pointmap-train ... --out runs/small --resume

Writes ``last.safetensors`` + ``last.json`` (loadable with ``model/checkpoint.py``),
``trainer_state.pt``, ``log.csv``, ``log.png`` and ``run.json`` (arguments, command, hardware,
wall time, final validation) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import sys
import time

import torch

from pointmap_ros.data.dataset import DPMPairDataset, DPMPairStream, PairDataConfig, split_seeds
from pointmap_ros.errors import ConfigError, PointmapError
from pointmap_ros.model.checkpoint import convert_checkpoint, load_checkpoint
from pointmap_ros.model.config import CROSS_TIME_MODES, ModelConfig
from pointmap_ros.model.dpm import DynamicPointMapNet, zero_init_cross_time_offsets
from pointmap_ros.training.loss import FLOW_SCALES, DPMLoss, DPMLossConfig
from pointmap_ros.training.trainer import Trainer, TrainConfig, seed_everything

__all__ = ['main', 'build_parser', 'parse_resolution', 'build_model', 'freeze_except',
           'loss_config']

logger = logging.getLogger(__name__)


def parse_resolution(text: str) -> tuple[int, int]:
    """``'128x96'`` (W x H) -> ``(H, W)``.

    Raises:
        ConfigError: when the text is not ``<W>x<H>`` with positive integers.
    """
    try:
        w, h = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise ConfigError(f'resolution {text!r} is not <W>x<H>, e.g. 128x96',
                          name='resolution', value=text) from None
    if w <= 0 or h <= 0:
        raise ConfigError(f'resolution {text!r} must be positive', name='resolution', value=text)
    return h, w


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='pointmap-train', description=__doc__.split('\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    model = p.add_argument_group('model')
    model.add_argument('--preset', default='small', help='ModelConfig preset (small, tiny, ...)')
    model.add_argument('--config', help='ModelConfig JSON file; overrides --preset')
    model.add_argument('--resolution', default='128x96',
                       help='native training resolution WxH (multiples of the patch size)')
    model.add_argument('--init', help='initial weights: our .safetensors or a DUSt3R-family '
                       '.pth (heads 3/4 start as copies of heads 1/2); default: from scratch')
    model.add_argument('--copy-cross-heads', action='store_true',
                       help='with --init: reset heads 3/4 to copies of heads 1/2 (zero flow)')
    model.add_argument('--cross-time', choices=CROSS_TIME_MODES, default=None,
                       help="cross-time heads 3/4: 'absolute' maps or 'residual' offsets from "
                       'heads 1/2 (zero-initialised, so flow starts at exactly 0); default: '
                       "the --init checkpoint's mode, else 'residual'")
    model.add_argument('--train-only', nargs='+', metavar='PREFIX',
                       help='train only parameters whose names start with one of these '
                       'prefixes (e.g. downstream_head3 downstream_head4); freeze the rest')
    data = p.add_argument_group('data')
    data.add_argument('--num-frames', type=int, default=24, help='frames per generated sequence')
    data.add_argument('--gap-min', type=int, default=1, help='smallest frame gap of a pair')
    data.add_argument('--gap-max', type=int, default=8, help='largest frame gap of a pair')
    data.add_argument('--symmetrize', type=float, default=0.5, nargs='?', const=0.5,
                      help='probability of swapping i and j (0 disables)')
    data.add_argument('--cache-size', type=int, default=8, help='sequences kept in memory')
    data.add_argument('--pairs-per-sequence', type=int, default=32,
                      help='mean pairs drawn from a sequence before it is replaced')
    data.add_argument('--val-sequences', type=int, default=4, help='validation sequences')
    data.add_argument('--vary-scenes', type=float, default=0.5,
                      help='probability that a training sequence gets randomised motion '
                      '(speed x0.5..2.5, static camera, 3..6 objects, articulated arm); '
                      'validation never varies')
    data.add_argument('--workers', type=int, default=0, help='DataLoader worker processes')
    data.add_argument('--prefetch', type=int, default=4,
                      help='batches each worker prepares ahead (with --workers > 0)')
    opt = p.add_argument_group('optimisation')
    opt.add_argument('--steps', type=int, default=1000)
    opt.add_argument('--batch-size', type=int, default=8)
    opt.add_argument('--lr', type=float, default=1e-4)
    opt.add_argument('--min-lr', type=float, default=1e-6)
    opt.add_argument('--warmup', type=int, default=100, help='warmup steps')
    opt.add_argument('--grad-clip', type=float, default=1.0)
    opt.add_argument('--map-weights', type=float, nargs=4, default=(1.0, 1.0, 1.0, 1.0),
                     metavar=('I_TI', 'I_TJ', 'J_TI', 'J_TJ'), help='loss weight per map')
    opt.add_argument('--flow-weight', type=float, default=1.0,
                     help='weight of the scene-flow term (0: plain DPM map loss)')
    opt.add_argument('--flow-scale', choices=FLOW_SCALES, default='flow',
                     help="divide the flow error by the flow's own scale ('flow') or only by "
                     "the geometry's normalisation ('geometry', the pre-issue-11 term)")
    opt.add_argument('--flow-scale-floor', type=float, default=0.005,
                     help='lower bound of the flow scale (normalised units)')
    opt.add_argument('--flow-moving-share', type=float, default=0.5,
                     help='share of the flow term on moving pixels (rest: static); negative: '
                     'plain mean over valid pixels')
    opt.add_argument('--flow-charbonnier', type=float, default=0.0,
                     help='Charbonnier width c of the scaled flow error (0: plain L21)')
    opt.add_argument('--dynamic-weight', type=float, default=0.0,
                     help='St4RTrack fixed weight of moving pixels (x max static conf; 0: off)')
    opt.add_argument('--dynamic-confidence', action='store_true',
                     help='with --dynamic-weight: still learn the moving pixels\' confidence '
                     'from their detached error (the node gates points by confidence)')
    run = p.add_argument_group('run')
    run.add_argument('--out', required=True, help='output folder')
    run.add_argument('--resume', action='store_true', help='continue from --out/last.*')
    run.add_argument('--device', default='auto', help="'cpu', 'cuda', 'cuda:1' or 'auto'")
    run.add_argument('--amp', default='auto', choices=('auto', 'none', 'bf16', 'fp16'),
                     help="mixed precision; 'auto' = bf16 on CUDA, none on CPU")
    run.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    run.add_argument('--val-every', type=int, default=500)
    run.add_argument('--log-every', type=int, default=10)
    run.add_argument('--ckpt-minutes', type=float, default=5.0)
    run.add_argument('--max-minutes', type=float, default=None,
                     help='stop (with a checkpoint) after this much wall time')
    run.add_argument('--seed', type=int, default=0)
    run.add_argument('--no-progress', action='store_true', help='no tqdm progress bar')
    return p


def build_model(args, size: tuple[int, int]) -> DynamicPointMapNet:
    """The model to train: --init weights, else a fresh network from --config / --preset.

    An official DUSt3R-family file is converted once into ``--out/init.*`` (its heads 3/4
    start as copies of heads 1/2); its architecture then comes from the file, not the preset.
    ``--cross-time`` overrides the mode of the file / config. Switching an initial model to
    'residual' zeroes the point channels of heads 3/4's last layer (flow exactly 0; the rest of
    heads 3/4, copies of heads 1/2 for a converted file, is kept); switching it to 'absolute'
    resets heads 3/4 to copies of heads 1/2 (offset channels are no point maps).
    """
    if args.init:
        init = args.init
        if os.path.isdir(init) or init.endswith(('.pth', '.pt')):
            init = convert_checkpoint(init, os.path.join(args.out, 'init'), num_maps=4,
                                      img_size=size)
        model = load_checkpoint(init)
        model.config.img_size = size
        if args.cross_time not in (None, model.config.cross_time):
            model.config = ModelConfig.from_dict({**model.config.to_dict(),
                                                  'cross_time': args.cross_time})
            if args.cross_time == 'residual':
                zero_init_cross_time_offsets(model)
            else:
                _copy_cross_heads(model)
        if args.copy_cross_heads:
            _copy_cross_heads(model)
        return model
    overrides = {'img_size': list(size), 'cross_time': args.cross_time or 'residual'}
    if args.config:
        with open(args.config) as f:
            config = ModelConfig.from_dict({**json.load(f), **overrides})
    else:
        config = ModelConfig.preset(args.preset, **overrides)
    model = DynamicPointMapNet(config)
    _copy_cross_heads(model)
    return model


def _copy_cross_heads(model: DynamicPointMapNet) -> None:
    """Heads 3/4 := heads 1/2, as when converting a DUSt3R checkpoint: the predicted flow is
    then exactly zero (the zero-flow baseline) and training departs from it. In residual mode
    the copied point channels are then zeroed (zero offsets; the confidences stay copies)."""
    if model.config.num_maps == 4:
        model.downstream_head3.load_state_dict(model.downstream_head1.state_dict())
        model.downstream_head4.load_state_dict(model.downstream_head2.state_dict())
        if model.config.cross_time == 'residual':
            zero_init_cross_time_offsets(model)


def freeze_except(model: torch.nn.Module, prefixes: list[str]) -> int:
    """Freeze every parameter not starting with one of ``prefixes``; return the number of
    trainable parameters.

    Raises:
        ConfigError: when no parameter matches.
    """
    trainable = 0
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith(tuple(prefixes)))
        trainable += param.numel() if param.requires_grad else 0
    if not trainable:
        raise ConfigError(f'--train-only {prefixes}: no parameter name starts with these',
                          name='train_only', value=prefixes)
    return trainable


def loss_config(args) -> DPMLossConfig:
    """The :class:`DPMLossConfig` of the parsed command line."""
    share = args.flow_moving_share if args.flow_moving_share >= 0 else None
    return DPMLossConfig(map_weights=tuple(args.map_weights), flow_weight=args.flow_weight,
                         flow_scale=args.flow_scale, flow_scale_floor=args.flow_scale_floor,
                         flow_moving_share=share, dynamic_weight=args.dynamic_weight,
                         dynamic_confidence=args.dynamic_confidence,
                         flow_charbonnier=args.flow_charbonnier)


def _hardware(device: torch.device) -> str:
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    return f'{platform.processor() or platform.machine()}, {os.cpu_count()} cores, ' \
           f'{torch.get_num_threads()} torch threads'


def _write_record(out: str, record: dict) -> None:
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, 'run.json'), 'w') as f:
        json.dump(record, f, indent=2, default=str)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(name)s: %(message)s')
    try:
        return _run(args, argv)
    except PointmapError as exc:
        logger.error('%s', exc)
        return 2


def _run(args, argv) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device('cuda' if args.device == 'auto' and torch.cuda.is_available()
                          else 'cpu' if args.device == 'auto' else args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise ConfigError(f'--device {args.device}: CUDA is not available here', name='device',
                          value=args.device)
    amp = args.amp if args.amp != 'auto' else ('bf16' if device.type == 'cuda' else 'none')
    size = parse_resolution(args.resolution)
    seed_everything(args.seed)
    data_cfg = PairDataConfig(height=size[0], width=size[1], num_frames=args.num_frames,
                              gap_min=args.gap_min, gap_max=args.gap_max,
                              symmetrize=args.symmetrize, cache_size=args.cache_size,
                              pairs_per_sequence=args.pairs_per_sequence,
                              vary_scenes=args.vary_scenes)
    train_cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                            min_lr=min(args.min_lr, args.lr), warmup_steps=args.warmup,
                            grad_clip=args.grad_clip, amp=amp, val_every=args.val_every,
                            log_every=args.log_every, ckpt_minutes=args.ckpt_minutes,
                            max_minutes=args.max_minutes, seed=args.seed,
                            num_workers=args.workers, prefetch_factor=args.prefetch)
    last = os.path.join(args.out, 'last.safetensors')
    if args.resume:
        if not os.path.isfile(last):
            raise ConfigError(f'--resume: no checkpoint {last!r}', name='resume')
        model = load_checkpoint(last)
    else:
        model = build_model(args, size)
    if args.train_only:
        logger.info('training %d parameters under %s', freeze_except(model, args.train_only),
                    args.train_only)
    loss = DPMLoss(loss_config(args))
    # Validation pairs come from the val split at the unvaried settings (like evaluation).
    val_cfg = PairDataConfig(**{**data_cfg.__dict__, 'vary_scenes': 0.0})
    val = DPMPairDataset(split_seeds('val', args.val_sequences), val_cfg) \
        if args.val_sequences > 0 else None
    trainer = Trainer(model, loss, DPMPairStream(data_cfg, seed=args.seed), val, train_cfg,
                      args.out, device)
    if args.resume:
        trainer.load_state(os.path.join(args.out, 'trainer_state.pt'))
        logger.info('resumed at step %d', trainer.step)
    params = sum(p.numel() for p in model.parameters())
    logger.info('model %.2f M parameters, %s, device %s, amp %s', params / 1e6,
                model.config.to_dict(), device, amp)
    record = {
        'command': 'pointmap-train ' + shlex.join(sys.argv[1:] if argv is None else argv),
        'args': vars(args), 'data': data_cfg.__dict__, 'train': train_cfg.__dict__,
        'model': model.config.to_dict(), 'parameters': params, 'start_step': trainer.step,
        'hardware': _hardware(device), 'torch': torch.__version__, 'status': 'running',
    }
    if args.resume and os.path.exists(os.path.join(args.out, 'run.json')):
        with open(os.path.join(args.out, 'run.json')) as f:
            record['previous'] = json.load(f)  # keep the history of a resumed run
    _write_record(args.out, record)  # written first, so an interrupted run is documented too
    start = time.time()
    val_metrics = trainer.fit(progress=not args.no_progress)
    record.update(status='done', final_step=trainer.step,
                  wall_time_s=round(time.time() - start, 1),
                  train_time_s=round(trainer.elapsed_s, 1), final_validation=val_metrics)
    _write_record(args.out, record)
    logger.info('done: step %d in %.0f s; validation %s', trainer.step, record['wall_time_s'],
                {k: round(v, 4) for k, v in val_metrics.items()})
    return 0


if __name__ == '__main__':
    sys.exit(main())
