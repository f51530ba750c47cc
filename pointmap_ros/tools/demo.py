"""``pointmap-demo``: the main job. Runs the real node on the bundled stream over real DDS.

1. starts ``dynamic_recon_node`` (the installed entry point) in its own process with the
   shipped model (``--backend oracle`` serves exact ground truth instead);
2. plays the bundled demo scene to it on ``/camera/image_raw`` + ``/camera/camera_info``
   (+ ground-truth ``/tf``), paced by the node (each frame is sent once the previous one's
   outputs arrived) or at a fixed ``--rate``;
3. records inputs and every output to an MCAP bag (Foxglove / ``ros2 bag play`` + RViz);
4. renders ``summary.png`` and ``summary.gif`` (clouds coloured by motion, object tracks)
   and prints a one-screen summary.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from pointmap_ros.assets import SHIPPED_MODEL

__all__ = ['main', 'node_command']

NODE = 'dynamic_recon_node'


def node_command() -> list[str]:
    """How to start the node: the console script, the ament launcher, or the module."""
    exe = shutil.which(NODE)
    if exe:
        return [exe]
    try:
        from ament_index_python.packages import get_package_prefix
        launcher = Path(get_package_prefix('pointmap_ros')) / 'lib' / 'pointmap_ros' / NODE
        if launcher.is_file():
            return [sys.executable, str(launcher)]
    except (ImportError, LookupError, ValueError):
        pass
    return [sys.executable, '-c', 'import sys; from pointmap_ros.ros.node import main; '
            'sys.exit(main())']


class _Session:
    """The demo's own ROS side: camera publishers and a raw recorder of every output."""

    def __init__(self, bag, scene, fps: float):
        import rclpy
        from rclpy.node import Node
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image

        from pointmap_ros.ros.outputs import output_types
        from pointmap_ros.ros.tf import TfPublisher
        from pointmap_ros.tools.replay import msgtype_of
        rclpy.init()
        self.rclpy = rclpy
        self.node = Node('pointmap_demo')
        self.bag, self.scene, self.fps = bag, scene, fps
        self.base_ns = 0  # stamp of frame 0
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.image_pub = self.node.create_publisher(Image, '/camera/image_raw', qos)
        self.info_pub = self.node.create_publisher(CameraInfo, '/camera/camera_info', qos)
        self.tf = TfPublisher(self.node)
        self.received = collections.defaultdict(list)  # output name -> [(stamp_ns, msg)]
        from diagnostic_msgs.msg import DiagnosticArray
        from tf2_msgs.msg import TFMessage
        topics = {f'/{NODE}/{key}': cls for key, cls in output_types().items()}
        topics.update({'/tf': TFMessage, '/diagnostics': DiagnosticArray})
        sub_qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        for topic, cls in topics.items():
            self.node.create_subscription(
                cls, topic, lambda raw, t=topic, c=cls: self._record(t, c, raw), sub_qos,
                raw=True)
        self._msgtypes = {t: msgtype_of(c) for t, c in topics.items()}

    def _record(self, topic, cls, raw: bytes) -> None:
        from rclpy.serialization import deserialize_message
        self.bag.write(topic, self._msgtypes[topic], self.node.get_clock().now().nanoseconds,
                       raw)
        msg = deserialize_message(raw, cls)
        key = topic.rsplit('/', 1)[1]
        stamp = msg.header.stamp if hasattr(msg, 'header') else None
        self.received[key].append((0 if stamp is None else stamp.sec * 10**9 + stamp.nanosec,
                                   msg))

    def spin_for(self, seconds: float, until=None) -> bool:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.rclpy.spin_once(self.node, timeout_sec=0.05)
            if until is not None and until():
                return True
        return False

    def publish_frame(self, t: int) -> int:
        from rclpy.serialization import serialize_message
        from std_msgs.msg import Header

        from pointmap_ros.ros.conversions import matrix_to_transform
        from pointmap_ros.frames import (CAMERA_OPTICAL_FRAME, GROUND_TRUTH_OBJECT_PREFIX,
                                         WORLD_FRAME, object_frame)
        from pointmap_ros.ros.conversions import K_to_camera_info, ns_to_stamp, rgb_to_image
        frame = self.scene.render(t)
        stamp_ns = self.base_ns + int(round(t * 1e9 / self.fps))
        header = Header(stamp=ns_to_stamp(stamp_ns), frame_id=CAMERA_OPTICAL_FRAME)
        image = rgb_to_image(frame.rgb, header)
        info = K_to_camera_info(frame.K, *frame.rgb.shape[:2], header)
        ground_truth = [matrix_to_transform(frame.T_world_cam, header.stamp, WORLD_FRAME,
                                            header.frame_id)]
        ground_truth += [matrix_to_transform(T_world_object, header.stamp, WORLD_FRAME,
                                             object_frame(GROUND_TRUTH_OBJECT_PREFIX, object_id))
                         for object_id, T_world_object in sorted(frame.object_poses.items())]
        self.tf.send(ground_truth)
        self.info_pub.publish(info)
        self.image_pub.publish(image)
        now = self.node.get_clock().now().nanoseconds
        self.bag.write('/camera/image_raw', 'sensor_msgs/msg/Image', now,
                       serialize_message(image))
        self.bag.write('/camera/camera_info', 'sensor_msgs/msg/CameraInfo', now,
                       serialize_message(info))
        return stamp_ns

    def output_stamps(self) -> set[int]:
        return {s for s, _ in self.received['points']}

    def close(self) -> None:
        self.node.destroy_node()
        self.rclpy.try_shutdown()


def _node_args(args, params_file: Path) -> list[str]:
    # world_frame_convention optical: the ground truth /tf above and demo_render's top view
    # (x right, z forward) use the scene's optical world.
    params = {'backend': args.backend, 'points_frame': 'world', 'max_rate_hz': 0.0,
              'world_frame_convention': 'optical',
              'oracle_height': args.size[0], 'oracle_width': args.size[1],
              'oracle_frames': args.frames, 'oracle_fps': args.fps}
    if args.model:
        params['model'] = args.model
    out = ['--ros-args', '--params-file', str(params_file)]
    for name, value in params.items():
        out += ['-p', f'{name}:={value}']
    return out


def _stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def run(args) -> int:
    from pointmap_ros.data.scenes import SceneGenerator, live_scene_config
    from pointmap_ros.tools.demo_render import render_summary
    from pointmap_ros.tools.replay import OutputBag, share_path

    if args.backend != 'oracle' and not Path(args.model or SHIPPED_MODEL).is_file():
        print(f'pointmap-demo: the model {args.model or SHIPPED_MODEL} is missing.\n'
              '  Run with the exact ground-truth engine instead:  pointmap-demo --backend oracle'
              '\n  or pass a checkpoint:  pointmap-demo --model /path/to/model.safetensors',
              file=sys.stderr)
        return 2
    if args.size is None:
        args.size = _model_size(Path(args.model or SHIPPED_MODEL), args.backend)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scene = SceneGenerator(live_scene_config('demo', *args.size, args.frames, args.fps),
                           seed=args.seed)
    started = time.monotonic()
    log_path = out / 'node.log'
    with open(log_path, 'w') as log, OutputBag(out / 'bag', overwrite=True) as bag:
        cmd = node_command() + _node_args(args, share_path('config', 'dynamic_recon.yaml'))
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env={**os.environ,
                                                               'PYTHONUNBUFFERED': '1'})
        session = _Session(bag, scene, args.fps)
        try:
            print(f'[demo] starting {NODE} (backend {args.backend}); log: {log_path}')
            ready = session.spin_for(args.startup_timeout, lambda: proc.poll() is not None or (
                session.image_pub.get_subscription_count() > 0
                and session.info_pub.get_subscription_count() > 0
                and session.node.count_publishers(f'/{NODE}/points') > 0))
            if not ready or proc.poll() is not None:
                print(f'pointmap-demo: {NODE} did not come up; last lines of {log_path}:\n'
                      + ''.join(log_path.read_text().splitlines(True)[-15:]), file=sys.stderr)
                return 1
            session.spin_for(1.0)  # let the node's side of discovery settle
            # The oracle finds frame t at stamp t / fps; a model gets stamps from this
            # machine's clock (+ t / fps), so /diagnostics does not flag a foreign clock.
            session.base_ns = 0 if args.backend == 'oracle' else time.time_ns() // 10**6 * 10**6
            print(f'[demo] playing {args.frames} frames of the demo scene '
                  f"({'paced by the node' if args.rate <= 0 else f'{args.rate} Hz'})")
            sent = []
            for t in range(args.frames):
                sent.append(session.publish_frame(t))
                if args.rate > 0:
                    session.spin_for(1.0 / args.rate)
                elif t > 0:
                    session.spin_for(args.frame_timeout,
                                     lambda: sent[-1] in session.output_stamps()
                                     or proc.poll() is not None)
                else:
                    session.spin_for(0.5)
                print(f'\r[demo] frame {t + 1}/{args.frames}, outputs '
                      f"{len(session.received['points'])}", end='', flush=True)
            print()
            session.spin_for(args.frame_timeout, lambda: sent[-1] in session.output_stamps())
            session.spin_for(1.5)  # last diagnostics and TF
            code = _stop(proc)
        finally:
            _stop(proc)
            session.close()
    elapsed = time.monotonic() - started
    if code not in (0, None):
        print(f'pointmap-demo: the node exited with {code}; see {log_path}', file=sys.stderr)
        return 1
    files = render_summary(session.received, out)
    _print_summary(args, session.received, sent, elapsed, out, files, log_path)
    return 0


def _print_summary(args, received, sent, elapsed, out, files, log_path) -> None:
    from pointmap_ros.tools.demo_render import has_metric_scale

    diag = {}
    if received['diagnostics']:
        diag = {kv.key: kv.value for s in received['diagnostics'][-1][1].status
                for kv in s.values}
    processed = len(received['points'])
    ids = sorted({o.id for _, m in received['objects'] for o in m.objects})
    metric = has_metric_scale(received)
    stamps = [s for s, _ in received['points']]
    dropped = {k[8:]: v for k, v in diag.items() if k.startswith('dropped ') and v != '0'}
    print(f'\npointmap-demo finished in {elapsed:.1f} s')
    print(f"  engine     {diag.get('backend', args.backend)} "
          f"({diag.get('device', diag.get('selection', 'cpu'))})")
    print(f'  frames     {len(sent)} sent, {processed} with outputs (the first frame only '
          f'opens the window); stamps equal input stamps: {set(stamps) <= set(sent)}')
    frame_ms = float(diag.get('stage total (ms)', 0.0))
    inference_ms = float(diag.get('stage inference (ms)', 0.0))
    outside = (f'; outside it {frame_ms - inference_ms:.1f} ms = '
               f'{100 * (frame_ms - inference_ms) / frame_ms:.0f} %' if frame_ms > 0 else '')
    print(f"  rate       {float(diag.get('output rate (Hz)', 0.0)):.2f} outputs/s; "
          f"{frame_ms:.1f} ms per frame (inference {inference_ms:.1f} ms{outside})")
    print(f'  dropped    {dropped or "none"}')
    print(f"  objects    {len(ids)} tracked (ids {', '.join(map(str, ids)) or '-'}); lengths "
          f"in {'metres' if metric else 'model units (no metric scale)'}")
    print(f'  bag        {out / "bag"}  (MCAP: open in Foxglove, or `ros2 bag play` + RViz '
          'with config/dynamic_recon.rviz)')
    for path in files:
        print(f'  image      {path}')
    print(f'  node log   {log_path}')


def _model_size(model: Path, backend: str) -> tuple[int, int]:
    """The model's native (H, W), so the scene needs no crop; 224x224 for the oracle."""
    if backend == 'oracle' or not model.is_file():
        return (224, 224)
    from pointmap_ros.model.checkpoint import read_checkpoint_meta
    height, width = read_checkpoint_meta(model)['config']['img_size']
    return int(height), int(width)


def _size(text: str) -> tuple[int, int]:
    h, _, w = text.partition('x')
    return int(h), int(w)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='pointmap-demo', description=__doc__.split('\n')[0])
    parser.add_argument('--backend', default='auto',
                        help="node backend (default auto: the shipped model on the best "
                             "available runtime; 'oracle' = exact ground truth)")
    parser.add_argument('--model', default='', help='checkpoint instead of the shipped model')
    parser.add_argument('--frames', type=int, default=30, help='frames of the demo scene')
    parser.add_argument('--size', type=_size, default=None,
                        help="scene HxW (px); default the model's input size (oracle 224x224)")
    parser.add_argument('--fps', type=float, default=10.0, help='scene frame rate (stamps)')
    parser.add_argument('--rate', type=float, default=0.0,
                        help='send frames at this rate (Hz); 0 = paced by the node')
    parser.add_argument('--seed', type=int, default=0, help='scene seed')
    parser.add_argument('--out', default='runs/demo', help='output folder')
    parser.add_argument('--startup-timeout', type=float, default=900.0,
                        help='seconds to wait for the node (a first ONNX export is slow)')
    parser.add_argument('--frame-timeout', type=float, default=120.0,
                        help='seconds to wait for one frame in paced mode')
    args = parser.parse_args(argv)
    if args.frames < 5:
        parser.error('--frames must be >= 5 (the demo scene needs them)')
    try:
        return run(args)
    except KeyboardInterrupt:
        return 130


if __name__ == '__main__':
    sys.exit(main())
