"""Accuracy of a reduced-precision engine against the float32 PyTorch engine, per output.

For each pair of a rendered test scene (the held-out 'random' scene family of the pipeline
evaluation, so the images look like what the model was trained on) both engines infer the
four DPM maps, and per output map we report over all pixels of all pairs:

- ``pts_rel_median`` / ``pts_rel_p99`` / ``pts_rel_max``: ``|p - p32| / |p32|`` (scale-free);
- ``conf_rel_median`` / ``conf_rel_max``: ``|c - c32| / c32``;
- per pixel-set flow (``i_tj - i_ti`` and ``j_tj - j_ti``): median ``|f - f32|`` divided by
  the median point norm, i.e. relative to the scene scale.

    python -m pointmap_ros.tools.precision_accuracy --precision bf16              # shipped model
    python -m pointmap_ros.tools.precision_accuracy --size official --pairs 2     # random weights

The bound these numbers are checked against is documented in docs/engines.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ['compare', 'main', 'scene_frames']


def scene_frames(shape, count: int, seed: int = 1000):
    """``count`` consecutive rendered frames (uint8 RGB) of a held-out evaluation scene."""
    from pointmap_ros.data.scenes import SceneGenerator
    from pointmap_ros.evaluation.pipeline_eval import eval_scene
    from pointmap_ros.types import Frame
    gen = SceneGenerator(eval_scene(shape[0], shape[1], num_frames=max(count, 2)), seed=seed)
    return [Frame(np.ascontiguousarray(gen.render(t).rgb), stamp=gen.stamp(t), key=gen.key(t))
            for t in range(count)]


def compare(reference, candidate, frames) -> dict:
    """Per-output error statistics of ``candidate`` against ``reference`` (two engines)."""
    from pointmap_ros.types import MAP_NAMES
    errs = {name: {'pts': [], 'conf': []} for name in MAP_NAMES}
    flow = {'flow_i': [], 'flow_j': []}
    scale = []
    for fi, fj in zip(frames[:-1], frames[1:]):
        ref, out = reference.infer(fi, fj), candidate.infer(fi, fj)
        for name in MAP_NAMES:
            p32, p = ref.pts(name), out.pts(name)
            norm = np.linalg.norm(p32, axis=-1)
            errs[name]['pts'].append((np.linalg.norm(p - p32, axis=-1)
                                      / np.maximum(norm, 1e-6)).ravel())
            errs[name]['conf'].append((np.abs(out.conf(name) - ref.conf(name))
                                       / ref.conf(name)).ravel())
            scale.append(np.median(norm))
        for key, fn in (('flow_i', 'flow_i'), ('flow_j', 'flow_j')):
            flow[key].append(np.linalg.norm(getattr(out, fn)() - getattr(ref, fn)(), axis=-1)
                             .ravel())
    result = {}
    for name, e in errs.items():
        pts, conf = np.concatenate(e['pts']), np.concatenate(e['conf'])
        result[name] = {'pts_rel_median': float(np.median(pts)),
                        'pts_rel_p99': float(np.percentile(pts, 99)),
                        'pts_rel_max': float(pts.max()),
                        'conf_rel_median': float(np.median(conf)),
                        'conf_rel_max': float(conf.max())}
    s = float(np.median(scale))
    for key, values in flow.items():
        diff = np.concatenate(values)
        result[key] = {'flow_diff_median_rel_scene': float(np.median(diff) / s),
                       'flow_diff_p99_rel_scene': float(np.percentile(diff, 99) / s)}
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='precision_accuracy',
                                     description=__doc__.split('\n')[0])
    parser.add_argument('--checkpoint', help='default: the shipped model (unless --size)')
    parser.add_argument('--size', choices=('tiny', 'small', 'official'),
                        help='random weights of this preset instead of a checkpoint')
    parser.add_argument('--resolution', default='512x288', help='WxH')
    parser.add_argument('--precision', default='bf16')
    parser.add_argument('--pairs', type=int, default=4)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--json', type=Path)
    args = parser.parse_args(argv)
    import torch
    from pointmap_ros.engines.torch_engine import TorchEngine
    from pointmap_ros.model import DynamicPointMapNet, ModelConfig
    from pointmap_ros.model.checkpoint import load_checkpoint
    torch.set_num_threads(args.threads)

    def model():
        if args.size:
            torch.manual_seed(0)
            return DynamicPointMapNet(ModelConfig.preset(args.size)).eval()
        from pointmap_ros.assets import SHIPPED_MODEL
        return load_checkpoint(args.checkpoint or SHIPPED_MODEL, map_location='cpu')

    w, h = (int(v) for v in args.resolution.split('x'))
    frames = scene_frames((h, w), args.pairs + 1)
    tick = time.perf_counter()
    result = compare(TorchEngine(model(), input_shape=(h, w)),
                     TorchEngine(model(), precision=args.precision, input_shape=(h, w)), frames)
    report = {'model': args.size or args.checkpoint or 'shipped', 'resolution': args.resolution,
              'precision': args.precision, 'pairs': args.pairs, 'outputs': result,
              'wall_s': round(time.perf_counter() - tick, 1), 'loadavg': os.getloadavg()}
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
