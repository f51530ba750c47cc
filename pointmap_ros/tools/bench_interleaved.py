"""Side-by-side engine timing in one process: configurations alternate pair by pair.

``pointmap-bench`` runs every configuration in a fresh process, one after the other, which is
right for memory but wrong for *comparing* speeds on a shared machine: the load changes between
configurations. Here all engines are built first and then each timed round runs one streaming
pair (1 encode + 1 decode, the node's sliding window) on every configuration in turn
(A B C A B C ...), so they see the same load. Reported per configuration: median seconds per
pair, pairs/s, the median encode and decode times, and the ratio against the first
configuration (by default torch fp32, our fixed baseline); the load average is recorded with
every round.

    python -m pointmap_ros.tools.bench_interleaved --size official --threads 2 \\
        --configs torch:fp32,torch:bf16 --rounds 5 --json out.json

This is a tool, not a test: it asserts nothing about the numbers.
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
import tempfile
import time
from pathlib import Path

import numpy as np

__all__ = ['main', 'run']


def _build(backend: str, precision: str, model_factory, name, shape, threads, workdir,
           thread_mode=None):
    if backend == 'torch':
        from pointmap_ros.engines.torch_engine import TorchEngine
        # 'auto': the engine's ThreadGovernor; else the fixed --threads, set before each call.
        return TorchEngine(model_factory(), precision=precision, input_shape=shape,
                           intra_op_threads='auto' if thread_mode == 'auto' else None)
    from pointmap_ros.engines.onnx_export import export_onnx
    from pointmap_ros.engines.onnxruntime_engine import OnnxRuntimeEngine
    export = export_onnx(model_factory(), Path(workdir) / 'onnx', shape, model_name=name)
    if precision == 'int8':
        export = _dynamic_int8(export, Path(workdir) / 'onnx-int8')
    return OnnxRuntimeEngine(export, providers=['CPUExecutionProvider'],
                             intra_op_threads=threads)


def _dynamic_int8(export, out_dir: Path):
    """``export`` with ONNX Runtime's dynamic int8 quantisation of its MatMul/Gemm weights
    (activations quantised per call; MLAS runs them on VNNI / AMX-int8 where the CPU has it).

    Convolutions stay float32: as ``ConvInteger`` they ran 3x slower than float32 here, and a
    statically quantised decoder (QLinearConv, calibrated) was no faster than float32 either
    (docs/benchmarks.md). A measurement, not a shipped path: ``backend: auto`` never picks it.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from pointmap_ros.engines.onnx_export import load_export
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = copy.deepcopy(export.meta)
    for part, source in (('encoder', export.encoder_path), ('decoder', export.decoder_path)):
        target = out_dir / source.name
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8,
                         op_types_to_quantize=['MatMul', 'Gemm'])
        meta[part]['file'] = target.name
    sidecar = out_dir / export.sidecar.name
    sidecar.write_text(json.dumps(meta))
    return load_export(sidecar)


def run(size: str, shape, configs, rounds: int, threads: int, checkpoint=None) -> dict:
    """Time ``configs`` (``[(backend, precision), ...]``) interleaved; returns the report."""
    import torch
    from pointmap_ros.model import DynamicPointMapNet, ModelConfig
    from pointmap_ros.types import Frame
    torch.set_num_threads(threads)
    torch.manual_seed(0)

    def model_factory():
        if checkpoint:
            from pointmap_ros.model.checkpoint import load_checkpoint
            return load_checkpoint(checkpoint, map_location='cpu')
        torch.manual_seed(0)    # the same random weights for every configuration
        return DynamicPointMapNet(ModelConfig.preset(size)).eval()

    rng = np.random.default_rng(0)
    frames = [Frame(rng.integers(0, 256, (*shape, 3), dtype=np.uint8), stamp=0.1 * k,
                    key=f'f{k}') for k in range(rounds + 2)]
    with tempfile.TemporaryDirectory() as workdir:
        engines = {':'.join(c): _build(*c[:2], model_factory, size, shape, threads, workdir,
                                       *c[2:]) for c in configs}
        times = {key: {'pair': [], 'encode': [], 'decode': []} for key in engines}
        loads = []
        for key, engine in engines.items():       # warm-up: first pair of every engine
            engine.infer(frames[0], frames[1])
        for r in range(rounds):
            loads.append(os.getloadavg()[0])
            for key, engine in engines.items():
                fi, fj = frames[r + 1], frames[r + 2]
                if not key.endswith(':auto'):
                    torch.set_num_threads(threads)
                t0 = time.perf_counter()
                enc_i = engine.encode_cached(fi)    # cached by the previous round
                enc_j = engine.encode_cached(fj)    # the new frame: one encode per pair
                t1 = time.perf_counter()
                engine.decode(enc_i, enc_j, fi, fj)
                t2 = time.perf_counter()
                times[key]['encode'].append(t1 - t0)
                times[key]['decode'].append(t2 - t1)
                times[key]['pair'].append(t2 - t0)
                print(f'round {r} {key:18s} encode {t1 - t0:7.3f} s  decode {t2 - t1:7.3f} s'
                      f'  load {loads[-1]:.2f}', file=sys.stderr, flush=True)
    rows, base = [], None
    for key, t in times.items():
        pair = statistics.median(t['pair'])
        base = base or pair
        rows.append({'config': key, 'median_s_per_pair': round(pair, 4),
                     'pairs_per_s': round(1.0 / pair, 3),
                     'encode_s': round(statistics.median(t['encode']), 4),
                     'decode_s': round(statistics.median(t['decode']), 4),
                     'speedup_vs_first': round(base / pair, 2), 'all_s': t['pair']})
    return {'size': size, 'shape_hw': list(shape), 'threads': threads, 'rounds': rounds,
            'rows': rows, 'loadavg_per_round': loads, 'loadavg_end': os.getloadavg(),
            'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
            'machine': platform.processor() or platform.machine(),
            'torch': torch.__version__, 'checkpoint': checkpoint}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='bench_interleaved', description=__doc__.split('\n')[0])
    parser.add_argument('--size', default='small', choices=('tiny', 'small', 'official'))
    parser.add_argument('--resolution', default='512x288', help='WxH')
    parser.add_argument('--configs', default='torch:fp32,torch:bf16,onnxruntime:fp32',
                        help='backend:precision[:auto] list (auto: torch ThreadGovernor; '
                             'onnxruntime:int8: dynamic int8 MatMul/Gemm, a measurement); '
                             'the first is the ratio baseline')
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--checkpoint', help='a checkpoint instead of random weights')
    parser.add_argument('--json', type=Path)
    args = parser.parse_args(argv)
    w, h = (int(v) for v in args.resolution.split('x'))
    configs = [tuple(c.split(':')) for c in args.configs.split(',')]
    report = run(args.size, (h, w), configs, args.rounds, args.threads, args.checkpoint)
    for row in report['rows']:
        print(f"{report['size']:8s} {args.resolution} {row['config']:18s} "
              f"{row['median_s_per_pair']:8.3f} s/pair {row['pairs_per_s']:7.2f} pairs/s  "
              f"encode {row['encode_s']:.3f}  decode {row['decode_s']:.3f}  "
              f"x{row['speedup_vs_first']:.2f} vs {report['rows'][0]['config']}")
    print(f"threads {args.threads}, load average per round {report['loadavg_per_round']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
