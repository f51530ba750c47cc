"""``pointmap-bench-pipeline``: the 4D pipeline's own cost per frame, inference excluded.

Runs :class:`~pointmap_ros.pipeline.DynamicReconPipeline` on a generated 'demo' scene through
the oracle engine and prints per-stage milliseconds per frame at each requested resolution.
The sequence is processed twice: the first pass has the oracle compute (and keep) its ground
truth, the second, timed pass gets it by lookup, so the generator's ray casting and its BLAS
threads do not disturb the pipeline's clock. The machine's load average is printed too: on a
shared CPU the numbers are upper bounds; ``pipeline_cpu`` (CPU time of the pipeline's thread)
is the robust figure, ``process_cpu`` adds any helper threads (BLAS, OpenCV).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from pointmap_ros.data.scenes import SceneConfig
from pointmap_ros.engines.oracle_engine import OracleEngine
from pointmap_ros.pipeline import DynamicReconPipeline, FrameInput, PipelineConfig

__all__ = ['STAGES', 'bench', 'main']

STAGES = ('preprocess', 'correspondence', 'geometry', 'segmentation', 'objects', 'tracking',
          'pipeline', 'pipeline_cpu', 'process_cpu')


def bench(height: int, width: int, frames: int = 20, warmup: int = 3,
          noise_std: float = 0.0, two_map: bool = False) -> dict:
    """Median and mean ms per stage over ``frames`` timed frames.

    ``two_map``: the oracle withholds the cross-time maps (as a converted DUSt3R checkpoint
    does), so the correspondence stage runs (``correspondence``: optical flow both ways and
    the cross-time maps, for every pair of the frame).

    Returns:
        ``{stage: (median_ms, mean_ms)}`` for :data:`STAGES` (``'pipeline'``: wall-clock sum
        of the stages; ``'pipeline_cpu'``: their thread CPU time; ``'process_cpu'``: process
        CPU time of the whole ``process`` call, inference being a lookup).
    """
    n = max(5, frames + warmup + 1)  # the demo preset needs >= 5 frames
    scene = SceneConfig(height=height, width=width, num_frames=n, fps=10.0, preset='demo',
                        num_objects=4, include_deformable=True)
    engine = OracleEngine.from_scene(scene, noise_std=noise_std, memoize=True, two_map=two_map)
    gen = engine.scene
    inputs = [FrameInput(f.rgb, f.stamp, K=gen.K) for f in (gen.render(t) for t in range(n))]
    warm = DynamicReconPipeline(engine, PipelineConfig())
    for inp in inputs:
        warm.process(inp)
    pipe = DynamicReconPipeline(engine, PipelineConfig())
    samples = {s: [] for s in STAGES}
    for t, inp in enumerate(inputs):
        cpu = time.process_time()
        out = pipe.process(inp)
        cpu = (time.process_time() - cpu) * 1e3
        if out is None or t <= warmup:
            continue
        for s in STAGES[:-1]:
            samples[s].append(out.timings_ms[s])
        samples['process_cpu'].append(cpu)
    return {s: (float(np.median(v)), float(np.mean(v))) for s, v in samples.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--sizes', nargs='+', default=['224x224', '288x512'],
                        help='HxW resolutions (default: 224x224 288x512)')
    parser.add_argument('--frames', type=int, default=20)
    parser.add_argument('--noise', type=float, default=0.0,
                        help='map noise (fraction of median depth); > 0 exercises the '
                             'noisy-flow smoothing path')
    parser.add_argument('--two-map', action='store_true',
                        help='withhold the cross-time maps: the correspondence stage runs')
    args = parser.parse_args(argv)
    print(f'load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs')
    for size in args.sizes:
        h, w = (int(v) for v in size.lower().split('x'))
        tick = time.perf_counter()
        res = bench(h, w, args.frames, noise_std=args.noise, two_map=args.two_map)
        cells = '  '.join(f'{s} {res[s][0]:.1f}' for s in STAGES)
        mode = ' two-map' if args.two_map else ''
        print(f'{h}x{w} noise {args.noise:g}{mode}: ms/frame (median) {cells}  '
              f'[mean pipeline {res["pipeline"][1]:.1f}; run {time.perf_counter() - tick:.0f} s]')
    print(f'load average after: {os.getloadavg()[0]:.2f}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
