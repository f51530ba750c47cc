"""One prepared run of every speed/parity measurement we want from a GPU machine.

Needs only PyTorch, numpy, scipy, opencv, safetensors, onnx (no ROS, no network): run it with
``PYTHONPATH=<repo>`` (``scripts/device_check.sh`` does). It writes one JSON file,
``<out>/device_check.json``, rewritten after every step so a run cut by a time limit still
leaves everything measured so far. Steps (each guarded: a failure is recorded, not fatal):

1. ``speed``: ms per streaming pair (1 encode + 1 decode, the node's sliding window) and the
   stage times, for sizes small and official at 512x288 (``--quick``: small only, fewer
   pairs), precisions fp32 / bf16 / fp16 (fp16 on CUDA only), modes ``eager``,
   ``compile`` (``torch.compile`` of encode and decode) and ``cudagraphs``
   (``torch.compile(mode='reduce-overhead')``, CUDA graphs; CUDA only). Random weights.
2. ``parity``: every (size, precision, mode) output against CPU float32 on the same pair,
   per output: median / p99 / max relative point error and median relative confidence error.
3. ``pipeline``: the full pipeline (engine + motion + tracking) on one held-out synthetic
   sequence with the shipped model, wall time per frame (``pointmap-eval-pipeline``).

    bash scripts/device_check.sh --out /tmp/dc                     # on the GPU machine
    bash scripts/device_check.sh --device cpu --quick --out /tmp/dc # a few minutes on a CPU
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

import numpy as np

__all__ = ['main']

RESOLUTION = (288, 512)


class Report:
    """The JSON document, rewritten after each step."""

    def __init__(self, out_dir: Path, meta: dict):
        self.path = out_dir / 'device_check.json'
        self.data = {**meta, 'speed': [], 'parity': [], 'pipeline': None, 'errors': []}
        self.save()

    def save(self):
        tmp = self.path.with_suffix('.tmp')
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        tmp.replace(self.path)


def _frames(count):
    from pointmap_ros.tools.precision_accuracy import scene_frames
    return scene_frames(RESOLUTION, count)


def _engine(model, device, precision, mode):
    """A TorchEngine whose model's encode/decode are compiled for ``mode``."""
    import torch
    from pointmap_ros.engines.torch_engine import TorchEngine
    engine = TorchEngine(model, device=device, precision=precision, input_shape=RESOLUTION)
    if mode != 'eager':
        kwargs = {'mode': 'reduce-overhead'} if mode == 'cudagraphs' else {}
        net = engine.model
        # Fixed shapes: one graph each; dynamic=False avoids recompiling for symbolic sizes.
        net.encode = torch.compile(net.encode, dynamic=False, **kwargs)
        net.decode = torch.compile(net.decode, dynamic=False, **kwargs)
    return engine


def _time_pairs(engine, frames, warmup, pairs, sync):
    """Streaming pairs: the new frame is encoded, the previous one comes from the cache."""
    for k in range(warmup):
        engine.infer(frames[k], frames[k + 1])
    enc_t, dec_t, pair_t = [], [], []
    for k in range(warmup, warmup + pairs):
        fi, fj = frames[k], frames[k + 1]
        sync()
        t0 = time.perf_counter()
        ei = engine.encode_cached(fi)
        ej = engine.encode_cached(fj)
        sync()
        t1 = time.perf_counter()
        engine.decode(ei, ej, fi, fj)      # returns host numpy arrays: includes the transfer
        t2 = time.perf_counter()
        enc_t.append(t1 - t0), dec_t.append(t2 - t1), pair_t.append(t2 - t0)
    ms = lambda v: round(1000 * statistics.median(v), 2)
    return {'ms_per_pair': ms(pair_t), 'encode_ms': ms(enc_t), 'decode_ms': ms(dec_t),
            'pairs_per_s': round(1.0 / statistics.median(pair_t), 3),
            'all_ms': [round(1000 * v, 2) for v in pair_t]}


def _errors(out, ref):
    from pointmap_ros.types import MAP_NAMES
    result = {}
    for name in MAP_NAMES:
        p, p32 = out.pts(name), ref.pts(name)
        rel = (np.linalg.norm(p - p32, axis=-1)
               / np.maximum(np.linalg.norm(p32, axis=-1), 1e-6))
        conf = np.abs(out.conf(name) - ref.conf(name)) / ref.conf(name)
        result[name] = {'pts_rel_median': float(np.median(rel)),
                        'pts_rel_p99': float(np.percentile(rel, 99)),
                        'pts_rel_max': float(rel.max()),
                        'conf_rel_median': float(np.median(conf)),
                        'finite': bool(np.isfinite(p).all() and np.isfinite(out.conf(name)).all())}
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='device_check', description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cuda')
    parser.add_argument('--out', type=Path, required=True)
    parser.add_argument('--quick', action='store_true',
                        help='small size only, 3 timed pairs, no official size')
    parser.add_argument('--sizes', default=None, help='comma list (default small,official)')
    parser.add_argument('--modes', default=None,
                        help='comma list of eager,compile,cudagraphs (default: eager,compile,'
                             'cudagraphs on CUDA; eager on CPU)')
    parser.add_argument('--budget-s', type=float, default=420.0,
                        help='skip remaining speed steps after this many seconds')
    parser.add_argument('--threads', type=int, default=None, help='CPU threads (CPU runs)')
    args = parser.parse_args(argv)
    import torch
    start = time.perf_counter()
    cuda = args.device.startswith('cuda')
    if cuda and not torch.cuda.is_available():
        print('CUDA requested but not available', file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    from pointmap_ros.engines.cpu_features import cpu_flags, cpu_has_fast_bf16
    from pointmap_ros.model import DynamicPointMapNet, ModelConfig
    meta = {'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
            'device': args.device, 'quick': args.quick, 'resolution_wxh': '512x288',
            'python': platform.python_version(), 'torch': torch.__version__,
            'cuda': torch.version.cuda, 'threads': torch.get_num_threads(),
            'gpu': torch.cuda.get_device_name(args.device) if cuda else None,
            'cpu_bf16': cpu_has_fast_bf16(),
            'cpu_amx': sorted(f for f in cpu_flags() if f.startswith('amx')),
            'loadavg_start': os.getloadavg()}
    report = Report(args.out, meta)
    sizes = (args.sizes.split(',') if args.sizes
             else ['small'] if args.quick else ['small', 'official'])
    modes = (args.modes.split(',') if args.modes
             else ['eager', 'compile', 'cudagraphs'] if cuda else ['eager'])
    precisions = ['fp32', 'bf16', 'fp16'] if cuda else ['fp32', 'bf16']
    warmup, pairs = (2, 3) if args.quick else (3, 10)
    frames = _frames(warmup + pairs + 1)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    from pointmap_ros.engines.torch_engine import TorchEngine
    for size in sizes:
        torch.manual_seed(0)
        base = DynamicPointMapNet(ModelConfig.preset(size)).eval()
        # CPU float32 reference on one pair (the parity anchor).
        ref = TorchEngine(copy.deepcopy(base), input_shape=RESOLUTION).infer(frames[0],
                                                                            frames[1])
        for precision in precisions:
            for mode in modes:
                row = {'size': size, 'precision': precision, 'mode': mode}
                if time.perf_counter() - start > args.budget_s:
                    row['skipped'] = 'time budget'
                    report.data['speed'].append(row)
                    continue
                try:
                    tick = time.perf_counter()
                    engine = _engine(copy.deepcopy(base), args.device, precision, mode)
                    out = engine.infer(frames[0], frames[1])   # includes compilation
                    row['first_pair_s'] = round(time.perf_counter() - tick, 2)
                    engine.clear_cache()
                    row.update(_time_pairs(engine, frames, warmup, pairs, sync))
                    if cuda:
                        row['max_memory_mb'] = round(torch.cuda.max_memory_allocated() / 2**20)
                    report.data['parity'].append({**{k: row[k] for k in ('size', 'precision',
                                                                          'mode')},
                                                  'outputs': _errors(out, ref)})
                    engine.close()
                    del engine
                except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
                    row['error'] = f'{type(exc).__name__}: {exc}'
                    report.data['errors'].append({'step': dict(row),
                                                  'traceback': traceback.format_exc()[-3000:]})
                row['loadavg'] = os.getloadavg()[0]
                report.data['speed'].append(row)
                report.save()
                print(json.dumps(row), flush=True)
                if cuda:
                    torch._dynamo.reset()
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
    try:
        from pointmap_ros.tools import eval_pipeline
        tick = time.perf_counter()
        json_path = args.out / 'pipeline.json'
        frames_n = 8 if args.quick else 24
        eval_pipeline.main(['--engine', 'checkpoint', '--backend', 'torch', '--device',
                            args.device, '--precision', 'auto' if not cuda else 'fp32',
                            '--sequences', '1', '--static-sequences', '0', '--frames',
                            str(frames_n), '--no-progress', '--json', str(json_path)])
        wall = time.perf_counter() - tick
        report.data['pipeline'] = {'frames': frames_n, 'wall_s': round(wall, 2),
                                   's_per_frame': round(wall / frames_n, 3),
                                   'metrics': json.loads(json_path.read_text())}
    except Exception as exc:  # noqa: BLE001
        report.data['errors'].append({'step': 'pipeline', 'traceback':
                                      traceback.format_exc()[-3000:]})
    report.data['wall_s'] = round(time.perf_counter() - start, 1)
    report.data['loadavg_end'] = os.getloadavg()
    report.save()
    print(f'wrote {report.path} ({report.data["wall_s"]} s, '
          f'{len(report.data["errors"])} errors)')
    return 1 if report.data['errors'] else 0


if __name__ == '__main__':
    sys.exit(main())
