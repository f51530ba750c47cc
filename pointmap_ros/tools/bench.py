"""``pointmap-bench``: pair-inference throughput, latency and memory per backend.

For every model size x resolution x backend (x precision) it times a stream of frames
paired with their predecessor, in two modes:

- ``cached``: ``engine.infer`` with the encoding cache, so each pair encodes only the new
  frame (1 encode + 1 decode per pair), as the node runs a sliding window;
- ``uncached``: both frames encoded for every pair (2 encodes + 1 decode).

Reported per row: pairs/s (timed pairs / their total time), latency median and p95 (ms),
the median encode and decode stage times (ms, from the uncached run), and peak memory of
the engine: on CPU the peak resident set size, sampled every 5 ms from just before the
engine is built until both modes are done, minus the RSS before (engine weights + working
memory; the shared PyTorch model is not counted); on CUDA
``torch.cuda.max_memory_allocated`` over the same span. Each configuration runs in a fresh
process so allocator state from one does not hide the memory of the next. Warm-up pairs are
excluded. Weights are random (speed does not depend on them), so nothing is downloaded.

This is a tool, not a test: numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

__all__ = ['main', 'run_benchmark', 'format_table', 'RESOLUTIONS']

#: Label (W x H, as resolutions are usually quoted) -> (H, W).
RESOLUTIONS = {'224x224': (224, 224), '512x288': (288, 512), '512x384': (384, 512)}


class _RssSampler:
    """Peak resident set size (bytes) of this process, sampled in a background thread."""

    def __init__(self, period_s: float = 0.005):
        self._period = period_s
        self._page = os.sysconf('SC_PAGE_SIZE')
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * self._page

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self._period)

    def __enter__(self):
        self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def _frames(shape, count, prefix):
    from pointmap_ros.types import Frame
    rng = np.random.default_rng(0)
    return [Frame(rng.integers(0, 256, (*shape, 3), dtype=np.uint8), stamp=0.1 * k,
                  key=f'{prefix}/{k}') for k in range(count)]


def _time_stream(engine, frames, cached: bool, warmup: int, sync) -> dict:
    """Latencies (s) of the pairs (k-1, k) after ``warmup`` pairs.

    Returns:
        ``{'pair': [...]}``, plus ``'encode'`` and ``'decode'`` stage times when uncached.
    """
    engine.clear_cache()
    times = {'pair': [], 'encode': [], 'decode': []}
    for prev, cur in zip(frames, frames[1:]):
        start = time.perf_counter()
        if cached:
            engine.infer(prev, cur)
        else:
            encodings = []
            for frame in (prev, cur):
                t0 = time.perf_counter()
                encodings.append(engine.encode(frame))
                sync()
                times['encode'].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            engine.decode(*encodings, prev, cur)
            sync()
            times['decode'].append(time.perf_counter() - t0)
        if cached:
            sync()
        times['pair'].append(time.perf_counter() - start)
    return {'pair': times['pair'][warmup:], 'encode': times['encode'][2 * warmup:],
            'decode': times['decode'][warmup:]}


def _build_engine(backend, model, name, shape, precision, device, threads, workdir):
    if backend == 'torch':
        from pointmap_ros.engines.torch_engine import TorchEngine
        return TorchEngine(model, device=device, precision=precision, input_shape=shape)
    from pointmap_ros.engines.onnx_export import export_onnx
    export = export_onnx(model, workdir / 'onnx', shape, model_name=name)
    if backend == 'onnxruntime':
        from pointmap_ros.engines.onnxruntime_engine import OnnxRuntimeEngine
        providers = (['CUDAExecutionProvider', 'CPUExecutionProvider']
                     if device.startswith('cuda') else ['CPUExecutionProvider'])
        return OnnxRuntimeEngine(export, providers=providers, intra_op_threads=threads)
    from pointmap_ros.engines.tensorrt_engine import TensorRTEngine
    return TensorRTEngine(export, precision=precision, cache_dir=workdir / 'engines',
                          device=device)


def _configs(backends, device):
    """(backend, precision) pairs that make sense on ``device``."""
    cuda = device.startswith('cuda')
    for backend in backends:
        if backend == 'torch':
            if cuda:
                yield from (('torch', p) for p in ('fp32', 'fp16', 'bf16'))
            else:
                from pointmap_ros.engines.cpu_features import cpu_has_fast_bf16
                # bf16 on a CPU without native bf16 is emulated and slower than fp32.
                yield from (('torch', p) for p in
                            (('fp32', 'bf16') if cpu_has_fast_bf16() else ('fp32',)))
        elif backend == 'onnxruntime':
            yield 'onnxruntime', 'fp32'
        elif backend == 'tensorrt':
            yield from (('tensorrt', p) for p in ('fp32', 'fp16'))


def _run_config(size, resolution, backend, precision, device, pairs, warmup, threads):
    """Time one engine in both modes; returns two rows (cached, uncached)."""
    import torch

    from pointmap_ros.model import DynamicPointMapNet, ModelConfig

    torch.set_num_threads(threads)
    cuda = device.startswith('cuda')

    def sync():
        if cuda:
            torch.cuda.synchronize()

    torch.manual_seed(0)
    model = DynamicPointMapNet(ModelConfig.preset(size)).eval()
    params_m = round(sum(p.numel() for p in model.parameters()) / 1e6, 2)
    shape = RESOLUTIONS[resolution]
    rows = []
    with tempfile.TemporaryDirectory(prefix='pointmap-bench-') as tmp:
        gc.collect()
        sampler = _RssSampler()
        before = sampler.rss()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
            cuda_before = torch.cuda.memory_allocated()
        with sampler:
            engine = _build_engine(backend, model, size, shape, precision, device, threads,
                                   Path(tmp))
            for mode in ('cached', 'uncached'):
                frames = _frames(shape, warmup + pairs + 1, mode)
                times = _time_stream(engine, frames, mode == 'cached', warmup, sync)
                lat = np.array(times['pair'])
                rows.append(dict(
                    model=size, params_m=params_m, resolution=resolution, height=shape[0],
                    width=shape[1], backend=backend,
                    precision=precision, device=device, threads=threads, mode=mode,
                    encodes_per_pair=1 if mode == 'cached' else 2, pairs=len(lat),
                    pairs_per_s=len(lat) / float(lat.sum()),
                    median_ms=1e3 * float(np.median(lat)),
                    p95_ms=1e3 * float(np.percentile(lat, 95))))
            # Stage medians come from the uncached run, which calls encode/decode directly.
            for row in rows:
                row['encode_ms'] = 1e3 * float(np.median(times['encode']))
                row['decode_ms'] = 1e3 * float(np.median(times['decode']))
            engine.close()
    for row in rows:
        # Peak over both modes of this engine: its weights plus working memory.
        row['peak_rss_mb'] = (sampler.peak - before) / 2**20
        if cuda:
            row['peak_cuda_mb'] = (torch.cuda.max_memory_allocated() - cuda_before) / 2**20
    return rows


def _run_isolated(spec: dict) -> list[dict]:
    """:func:`_run_config` in a fresh interpreter, so no allocator state leaks between
    configurations and the memory numbers stay comparable."""
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(
        p for p in (root, os.environ.get('PYTHONPATH')) if p)}
    proc = subprocess.run([sys.executable, '-m', 'pointmap_ros.tools.bench', '--worker',
                           json.dumps(spec)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f'benchmark of {spec} failed:\n{proc.stderr[-3000:]}')
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_benchmark(sizes, resolutions, backends, device='cpu', pairs=10, warmup=2, threads=2,
                  log=print) -> list[dict]:
    """Every (size, resolution, backend, precision), each in its own process.

    Returns:
        One dict per configuration and mode (``cached`` / ``uncached``).
    """
    rows = []
    for size in sizes:
        for resolution in resolutions:
            for backend, precision in _configs(backends, device):
                new = _run_isolated(dict(size=size, resolution=resolution, backend=backend,
                                         precision=precision, device=device, pairs=pairs,
                                         warmup=warmup, threads=threads))
                log(format_table(new, header=False))
                rows.extend(new)
    return rows


#: Fixed float32 baseline of our own: PyTorch fp32 eager on CPU, 2 threads, ms per streaming
#: pair (1 encode + 1 decode) measured 2026-12-05 on the 2-vCPU AMX Xeon of docs/benchmarks.md
#: (``bench_interleaved``, low load). The ``x base`` column divides it by a row's ms per pair
#: (cached rows: the same work), so speed-ups stay comparable across runs and machines of the
#: same kind; rows without a baseline show nan.
BASELINE_MS_PER_PAIR = {('official', '512x288'): 5656.0, ('small', '512x288'): 210.0}


def _with_baseline_ratio(row: dict) -> dict:
    base = BASELINE_MS_PER_PAIR.get((row.get('model'), row.get('resolution')))
    if base and row.get('mode') == 'cached' and row.get('pairs_per_s'):
        row['x_baseline'] = base / (1e3 / row['pairs_per_s'])
    return row


#: Table columns: (row key, title, width, number format or None for text).
_COLUMNS = [('model', 'model', 7, None), ('resolution', 'WxH', 8, None),
            ('backend', 'backend', 11, None), ('precision', 'prec', 5, None),
            ('mode', 'mode', 8, None), ('pairs_per_s', 'pairs/s', 8, '.3f'),
            ('median_ms', 'med ms', 9, '.1f'), ('p95_ms', 'p95 ms', 9, '.1f'),
            ('encode_ms', 'enc ms', 8, '.1f'), ('decode_ms', 'dec ms', 8, '.1f'),
            ('peak_rss_mb', 'RSS MB', 8, '.0f'), ('peak_cuda_mb', 'CUDA MB', 8, '.0f'),
            ('x_baseline', 'x base', 7, '.2f')]


def format_table(rows: list[dict], header: bool = True) -> str:
    """Plain-text table, one line per row (the CUDA column only when measured)."""
    cols = [c for c in _COLUMNS if c[0] != 'peak_cuda_mb'
            or any('peak_cuda_mb' in row for row in rows)]
    lines = [' '.join(f'{title:>{width}}' if fmt else f'{title:<{width}}'
                      for _, title, width, fmt in cols)] if header else []
    for row in rows:
        _with_baseline_ratio(row)
        lines.append(' '.join(f'{row.get(key, float("nan")):>{width}{fmt}}' if fmt
                              else f'{row[key]:<{width}}' for key, _, width, fmt in cols))
    return '\n'.join(lines)


def _machine(device: str, threads: int) -> dict:
    import torch
    cpu = platform.processor()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next((ln.split(':', 1)[1].strip() for ln in f if ln.startswith('model name')),
                       cpu)
    except OSError:
        pass
    info = {'cpu': cpu, 'cpu_count': os.cpu_count(), 'threads': threads,
            'load_avg_at_start': list(os.getloadavg()), 'python': platform.python_version(),
            'torch': torch.__version__}
    if importlib.util.find_spec('onnxruntime'):
        import onnxruntime
        info['onnxruntime'] = onnxruntime.__version__
    if device.startswith('cuda'):
        info['gpu'] = torch.cuda.get_device_name(torch.device(device))
    return info


def _parse_list(text: str, allowed, what: str) -> list[str]:
    items = [t.strip() for t in text.split(',') if t.strip()]
    bad = [t for t in items if t not in allowed]
    if bad or not items:
        raise argparse.ArgumentTypeError(f'{what}: {bad or text!r} not in {sorted(allowed)}')
    return items


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='pointmap-bench', description=__doc__.split('\n')[0])
    parser.add_argument('--sizes', default='tiny,small',
                        type=lambda s: _parse_list(s, ('tiny', 'small', 'official'), 'sizes'))
    parser.add_argument('--official', action='store_true',
                        help='add the official ViT-L size (~13 s per pair on a 2-core CPU)')
    parser.add_argument('--resolutions', default=','.join(RESOLUTIONS),
                        type=lambda s: _parse_list(s, RESOLUTIONS, 'resolutions'),
                        help='comma list of WxH among %(default)s')
    parser.add_argument('--backends', default=None,
                        type=lambda s: _parse_list(s, ('torch', 'onnxruntime', 'tensorrt'),
                                                   'backends'),
                        help='default: torch,onnxruntime (+ tensorrt when importable on CUDA)')
    parser.add_argument('--device', default=None, help="'cpu' or 'cuda[:N]' (default: auto)")
    parser.add_argument('--pairs', type=int, default=10, help='timed pairs per mode')
    parser.add_argument('--warmup', type=int, default=2, help='untimed pairs per mode')
    parser.add_argument('--threads', type=int, default=2, help='CPU threads (torch and ORT)')
    parser.add_argument('--quick', action='store_true', help='3 timed pairs, 1 warm-up')
    parser.add_argument('--json', default='pointmap_bench.json', help='output JSON path')
    parser.add_argument('--worker', help=argparse.SUPPRESS)  # one configuration, JSON spec
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_run_config(**json.loads(args.worker))))
        return 0

    import torch
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    if device.startswith('cuda') and not torch.cuda.is_available():
        parser.error(f'--device {device}: CUDA is not available')
    backends = args.backends or ['torch', 'onnxruntime'] + (
        ['tensorrt'] if device.startswith('cuda') and importlib.util.find_spec('tensorrt')
        else [])
    sizes = list(dict.fromkeys(args.sizes + (['official'] if args.official else [])))
    pairs, warmup = (3, 1) if args.quick else (args.pairs, args.warmup)
    if pairs < 1 or warmup < 0:
        parser.error('--pairs must be >= 1 and --warmup >= 0')
    machine = _machine(device, args.threads)
    print(format_table([], header=True), flush=True)
    rows = run_benchmark(sizes, args.resolutions, backends, device, pairs, warmup,
                         args.threads, log=lambda text: print(text, flush=True))
    machine['load_avg_at_end'] = list(os.getloadavg())
    result = {'tool': 'pointmap-bench',
              'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
              'machine': machine,
              'settings': {'pairs': pairs, 'warmup': warmup, 'sizes': sizes,
                           'resolutions': args.resolutions, 'backends': backends},
              'rows': rows}
    Path(args.json).write_text(json.dumps(result, indent=1))
    print(f'\n{format_table(rows)}\nwrote {args.json}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
