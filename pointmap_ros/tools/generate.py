"""``pointmap-generate``: write a procedural dynamic scene as a ROS 2 bag (MCAP).

Example::

    pointmap-generate --preset demo --frames 60 --width 224 --height 224 --out /tmp/demo_bag

The bag holds ``/camera/image_raw``, ``/camera/camera_info``, ``/tf`` (ground-truth camera and
object poses) and, with ``--depth``, ``/camera/depth``; see :mod:`pointmap_ros.data.bag`.
The robot's priors, as the synthetic camera node publishes them: ``--odometry`` adds the
drifting odometry on ``/tf`` (``odom -> camera_optical_frame``; the ground truth then places
``odom``), ``--depth-noise`` > 0 gives the depth of an RGB-D sensor (noise, holes)::

    pointmap-generate --out /tmp/robot_bag --depth --depth-noise 0.01 --odometry
"""

from __future__ import annotations

import argparse
import logging
import sys

from pointmap_ros.data.bag import write_bag
from pointmap_ros.data.depth_sensor import DepthSensorModel
from pointmap_ros.data.odometry import OdometryModel
from pointmap_ros.data.scenes import PRESETS, SceneConfig, SceneGenerator
from pointmap_ros.data.sensor_rig import SensorRig
from pointmap_ros.errors import PointmapError

__all__ = ['build_parser', 'sensor_rig', 'main']


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='pointmap-generate', description=__doc__.split('\n\n')[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--out', required=True, help='bag directory to create')
    parser.add_argument('--seed', type=int, default=0, help='scene seed')
    parser.add_argument('--frames', type=int, default=60, help='number of frames')
    parser.add_argument('--width', type=int, default=224, help='image width (pixels)')
    parser.add_argument('--height', type=int, default=224, help='image height (pixels)')
    parser.add_argument('--fps', type=float, default=10.0, help='frame rate (Hz)')
    parser.add_argument('--preset', choices=PRESETS, default='demo', help='scene layout')
    parser.add_argument('--objects', type=int, default=4, help='number of moving objects')
    parser.add_argument('--depth', action='store_true', help='also write /camera/depth')
    parser.add_argument('--depth-noise', type=float, default=0.0,
                        help='with --depth: relative noise of a simulated RGB-D sensor, which '
                             'also drops pixels and depth edges; 0 = exact depth')
    parser.add_argument('--odometry', action='store_true',
                        help='also write the odometry on /tf (odom -> camera_optical_frame)')
    defaults = OdometryModel()
    parser.add_argument('--odometry-drift', type=float, default=defaults.drift_rel,
                        help='odometry drift per metre travelled')
    parser.add_argument('--odometry-jitter-m', type=float, default=defaults.jitter_m,
                        help='odometry translation noise per reading (m)')
    parser.add_argument('--odometry-jitter-deg', type=float, default=defaults.jitter_deg,
                        help='odometry rotation noise per reading (degrees)')
    parser.add_argument('--noise-seed', type=int, default=0,
                        help='seed of the odometry error and the depth noise')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing bag')
    parser.add_argument('--quiet', action='store_true', help='no progress bar')
    return parser


def sensor_rig(args: argparse.Namespace) -> SensorRig:
    """The robot sensors the arguments ask for (none by default)."""
    odometry = (OdometryModel(args.odometry_drift, args.odometry_jitter_m,
                              args.odometry_jitter_deg) if args.odometry else None)
    depth = DepthSensorModel(noise_rel=args.depth_noise) if args.depth_noise > 0 else None
    return SensorRig(odometry=odometry, depth=depth, seed=args.noise_seed)


def main(argv=None) -> int:
    """Entry point; returns the process exit code (2 for bad arguments or an existing bag)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.depth_noise > 0 and not args.depth:
        parser.error('--depth-noise needs --depth')
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    try:
        config = SceneConfig(height=args.height, width=args.width, num_frames=args.frames,
                             fps=args.fps, preset=args.preset, num_objects=args.objects)
        generator = SceneGenerator(config, seed=args.seed)
        from tqdm import tqdm
        with tqdm(total=args.frames, unit='frame', disable=args.quiet,
                  desc='pointmap-generate') as bar:
            summary = write_bag(generator, args.out, include_depth=args.depth,
                                sensors=sensor_rig(args), overwrite=args.overwrite,
                                on_frame=lambda _t: bar.update(1))
    except PointmapError as exc:
        print(f'pointmap-generate: error: {exc}', file=sys.stderr)
        return 2
    topics = ', '.join(f'{topic} x{count}' for topic, count in summary.topics.items())
    print(f'wrote {summary.num_frames} frames to {summary.path} ({topics})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
