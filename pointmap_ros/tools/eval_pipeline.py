"""``pointmap-eval-pipeline``: the whole streaming pipeline on held-out generated sequences.

Runs window, correspondences, pose, masks and tracker frame by frame, as the node would, and
writes the metrics of :mod:`pointmap_ros.evaluation.pipeline_eval` (see docs/evaluation.md).

Engines: ``oracle`` (exact four maps), ``oracle-two-map`` (exact same-time maps, cross-time
maps withheld as a converted DUSt3R checkpoint gives them), ``checkpoint`` (a trained model;
default: the shipped one). Sequences come from the 'test' seed range (offset 500, disjoint
from ``pointmap-eval``'s pairs and from training) for reported numbers; tune on ``--split
val`` (the same offset in the validation range), never on the test seeds.

Example::

    pointmap-eval-pipeline --engine oracle-two-map --sequences 8 --json two_map.json
    pointmap-eval-pipeline --engine checkpoint --cross-time-source fused --json shipped.json
    pointmap-eval-pipeline --engine oracle-two-map --depth --depth-noise 0.01
    pointmap-eval-pipeline --engine checkpoint --odometry-noise 0.01

``--depth`` gives every frame the camera's depth as an RGB-D sensor measures it
(data/depth_sensor.py: relative noise, holes and flying pixels at depth edges, random
dropouts, range), which the pipeline fuses (pipeline/depth_prior.py). ``--odometry-noise X``
gives every frame the camera pose a robot's odometry with drift X per metre travelled (and
jitter in proportion) would report (data/odometry.py), which the pipeline fuses with the
maps' pose and takes the metric scale from (pipeline/odometry_prior.py); both combine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from tqdm import tqdm

from pointmap_ros.assets import SHIPPED_MODEL
from pointmap_ros.data.dataset import split_seeds
from pointmap_ros.data.depth_sensor import DepthSensorModel
from pointmap_ros.data.odometry import OdometryModel
from pointmap_ros.engines.factory import create_engine
from pointmap_ros.engines.oracle_engine import OracleEngine
from pointmap_ros.evaluation.pipeline_eval import eval_scene, evaluate_sequence, pool_scores
from pointmap_ros.evaluation.pipeline_figures import save_sequence_figure
from pointmap_ros.pipeline import PipelineConfig
from pointmap_ros.pipeline.correspondence import CROSS_TIME_SOURCES, FLOW_PRESETS

__all__ = ['main', 'build_parser', 'SEED_OFFSET', 'VARIED_SEED_OFFSET']

#: Offset of the pipeline sequences within the seed range of the split.
SEED_OFFSET = 500
#: Offset of the ``--vary-scenes`` sequences: rooms of their own, not the default ones with
#: other motion.
VARIED_SEED_OFFSET = 700


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='pointmap-eval-pipeline',
                                     description=__doc__.split('\n')[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--engine', choices=('oracle', 'oracle-two-map', 'checkpoint'),
                        default='checkpoint')
    parser.add_argument('--checkpoint', help='model checkpoint (default: the shipped one)')
    parser.add_argument('--oracle-units-per-metre', type=float, default=None, metavar='UNITS',
                        help='oracle engines: serve the maps in other units, flagged up to '
                             'scale, as a network without metric scale gives them (the '
                             'metres must then come from depth or odometry)')
    parser.add_argument('--backend', default='auto',
                        help='inference backend for --engine checkpoint')
    parser.add_argument('--precision', default='fp32',
                        help="engine precision for --engine checkpoint: fp32, bf16 or auto "
                             '(bf16 on a CPU with native bf16)')
    parser.add_argument('--device', default='cpu',
                        help="device for --engine checkpoint ('cpu', 'cuda', 'cuda:N')")
    parser.add_argument('--cross-time-source', choices=CROSS_TIME_SOURCES, default='auto')
    parser.add_argument('--flow-preset', choices=FLOW_PRESETS,
                        default=PipelineConfig.flow_preset,
                        help='optical-flow settings (PipelineConfig.flow_preset)')
    parser.add_argument('--flow-warm-start', action=argparse.BooleanOptionalAction,
                        default=PipelineConfig.flow_warm_start,
                        help="start each pair's optical flow from the previous frame's "
                             '(PipelineConfig.flow_warm_start)')
    parser.add_argument('--split', choices=('test', 'val'), default='test',
                        help="seed range: 'test' for reported numbers, 'val' for tuning "
                             '(disjoint from test and from training)')
    parser.add_argument('--sequences', type=int, default=8,
                        help='held-out moving-camera sequences')
    parser.add_argument('--static-sequences', type=int, default=2,
                        help='extra static-camera sequences for static_camera_drift_rel')
    parser.add_argument('--static-camera', action='store_true',
                        help='a static-camera preset for every sequence')
    parser.add_argument('--vary-scenes', action='store_true',
                        help='draw each sequence\'s motion from its seed (object speed x0.5-2.5, '
                        'camera amplitude 0.1-0.5 m or a static camera, 3-6 objects, an '
                        'articulated one; data.scenes.varied_motion), on seeds of their own: '
                        'scenes beyond the family the defaults were chosen on')
    parser.add_argument('--plain-objects', action='store_true',
                        help='the same scenes with every moving object one colour (no '
                             'texture; shading only): faces the optical flow cannot track')
    parser.add_argument('--frames', type=int, default=24, help='frames per sequence')
    parser.add_argument('--fps', type=float, default=10.0,
                        help='frame rate: motion is a function of time, so a higher rate '
                             'moves the same way in smaller steps (--fps 30 --frames 72: '
                             'the same 2.4 s at a camera driver\'s rate)')
    parser.add_argument('--size', default=None,
                        help='HxW of the oracle scenes (default 192x256; checkpoints use '
                             'their native resolution)')
    parser.add_argument('--camera-scale', type=int, default=2,
                        help='camera images have this many times the model resolution '
                             '(rows and columns), like real cameras')
    parser.add_argument('--depth', action='store_true',
                        help='feed each frame a degraded depth image (a simulated RGB-D '
                             'camera) to the pipeline')
    parser.add_argument('--depth-noise', type=float, default=DepthSensorModel.noise_rel,
                        help='relative depth noise (standard deviation) with --depth')
    parser.add_argument('--odometry-noise', type=float, default=None, metavar='DRIFT',
                        help='feed each frame the camera pose of an odometry drifting DRIFT '
                             'per metre travelled (e.g. 0.01), jitter in proportion')
    parser.add_argument('--json', type=Path, help='write the metrics here')
    parser.add_argument('--figures', type=Path, metavar='DIR',
                        help='write one PNG per sequence here: masks on three frames, top '
                             'view of camera and objects in metres, flow error per frame')
    parser.add_argument('--no-progress', action='store_true')
    return parser


def _engine_factory(args):
    """``(scene_config, seed) -> Engine`` and the scene size it needs."""
    if args.engine.startswith('oracle'):
        two_map = args.engine == 'oracle-two-map'
        size = tuple(int(v) for v in (args.size or '192x256').split('x'))
        units = args.oracle_units_per_metre
        return (lambda scene, seed: OracleEngine.from_scene(scene, seed=seed, two_map=two_map,
                                                            units_per_metre=units), size)
    checkpoint = args.checkpoint or str(SHIPPED_MODEL)
    engine = create_engine(args.backend, checkpoint=checkpoint, device=args.device,
                           precision=args.precision)

    def factory(scene, seed):
        engine.clear_cache()
        return engine
    return factory, tuple(engine.input_shape)


def _figure_name(args, seed: int, still: bool) -> str:
    return f'{args.engine}-{args.split}-{seed}{"-static" if still else ""}.png'


def _figure_title(args, seed: int, still: bool) -> str:
    """Engine, sequence and priors of one figure."""
    engine = args.engine if args.engine != 'checkpoint' else (
        f'checkpoint {Path(args.checkpoint).name}' if args.checkpoint else 'shipped model')
    parts = [engine, f'{args.split} seed {seed}', 'static camera' if still else 'moving camera']
    if args.vary_scenes:
        parts.append('varied motion')
    if args.plain_objects:
        parts.append('plain objects')
    if args.fps != 10.0:
        parts.append(f'{args.fps:g} fps')
    if args.depth:
        parts.append(f'depth camera ({100 * args.depth_noise:g} % noise)')
    if args.odometry_noise is not None:
        parts.append(f'odometry ({100 * args.odometry_noise:g} % drift)')
    return ', '.join(parts)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    factory, (height, width) = _engine_factory(args)
    config = PipelineConfig(cross_time_source=args.cross_time_source,
                            flow_preset=args.flow_preset, flow_warm_start=args.flow_warm_start)
    offset = VARIED_SEED_OFFSET if args.vary_scenes else SEED_OFFSET
    moving = [] if args.static_camera else split_seeds(args.split, args.sequences, offset)
    static = split_seeds(args.split, args.sequences if args.static_camera else
                         args.static_sequences, offset + args.sequences)
    jobs = [(seed, False) for seed in moving] + [(seed, True) for seed in static]
    depth_sensor = DepthSensorModel(noise_rel=args.depth_noise) if args.depth else None
    odometry = (None if args.odometry_noise is None
                else OdometryModel().scaled(args.odometry_noise))
    tick = time.perf_counter()
    scores = []
    for seed, still in tqdm(jobs, desc='sequences', disable=args.no_progress, file=sys.stderr):
        scene = eval_scene(height, width, static_camera=still, num_frames=args.frames,
                           varied_seed=seed if args.vary_scenes else None,
                           plain_objects=args.plain_objects, fps=args.fps)
        still = scene.camera_amplitude == 0  # a varied sequence may draw a static camera
        score = evaluate_sequence(factory, scene, seed, config, camera_scale=args.camera_scale,
                                  depth_sensor=depth_sensor, odometry=odometry,
                                  keep_trace=args.figures is not None)
        if args.figures is not None:
            save_sequence_figure(args.figures / _figure_name(args, seed, still), score.trace,
                                 _figure_title(args, seed, still), score)
            score = dataclasses.replace(score, trace=None)  # its images are no longer needed
        scores.append(score)
    result = {'engine': args.engine, 'checkpoint': args.checkpoint, 'split': args.split,
              'oracle_units_per_metre': args.oracle_units_per_metre,
              'precision': args.precision if args.engine == 'checkpoint' else None,
              'cross_time_source': args.cross_time_source, 'flow_preset': args.flow_preset,
              'flow_warm_start': args.flow_warm_start, 'vary_scenes': args.vary_scenes,
              'plain_objects': args.plain_objects, 'fps': args.fps,
              'size': [height, width],
              'camera_scale': args.camera_scale,
              'depth_sensor': dataclasses.asdict(depth_sensor) if depth_sensor else None,
              'odometry': dataclasses.asdict(odometry) if odometry else None,
              'seeds': [seed for seed, _ in jobs], **pool_scores(scores),
              'wall_s': round(time.perf_counter() - tick, 1)}
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + '\n')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
