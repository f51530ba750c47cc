"""``pointmap-replay IN_BAG OUT_BAG``: run the node's pipeline over a ROS 2 bag, offline.

Reads MCAP or sqlite3 bags with rosbags' ``AnyReader``, deserializes with rclpy and feeds one
:class:`~pointmap_ros.ros.camera_stream.CameraStream` per camera, the very object
``dynamic_recon_node`` runs (same pairing, conversion, pipeline and output code), and
writes the outputs to a new MCAP bag, viewable in Foxglove or with ``ros2 bag play`` + RViz.
Unlike the live node nothing is skipped: every synchronized frame is processed, in log order.

    pointmap-replay in_bag/ out_bag/ --backend oracle -p oracle_frames:=30
    pointmap-replay in_bag/ out_bag/ --params-file config/dynamic_recon.yaml --no-inputs

Output topics are the node's (``/dynamic_recon_node/points`` ...) plus ``/tf``; the input
topics are copied too unless ``--no-inputs``. Messages are logged at the source image's bag
time. Parameters: the node's table (``--params-file``, ``-p name:=value``). With
``odom_frame`` set, the odometry prior reads the bag's own ``/tf`` and ``/tf_static``, as the
node reads them live (:class:`BagOdometry`, :class:`HeldFrames`).
"""

from __future__ import annotations

import argparse
import collections
import importlib
import sys
import time
from pathlib import Path

import yaml

from pointmap_ros.errors import ConfigError, PointmapError

__all__ = ['OutputBag', 'BagOdometry', 'HeldFrames', 'msgtype_of', 'share_path',
           'load_parameters', 'replay', 'main']

NODE_NAME = 'dynamic_recon_node'


def msgtype_of(cls) -> str:
    """rclpy message class -> ``'pkg/msg/Name'``."""
    return f"{cls.__module__.split('.')[0]}/msg/{cls.__name__}"


def _message_class(msgtype: str):
    pkg, _, name = msgtype.split('/')
    return getattr(importlib.import_module(f'{pkg}.msg'), name)


def share_path(*parts: str) -> Path:
    """A file of the package's share/ folder: installed (ament index) or the source tree."""
    try:
        from ament_index_python.packages import (PackageNotFoundError,
                                                 get_package_share_directory)
        try:
            path = Path(get_package_share_directory('pointmap_ros')).joinpath(*parts)
            if path.exists():
                return path
        except PackageNotFoundError:
            pass
    except ImportError:
        pass
    import pointmap_ros
    return Path(pointmap_ros.__file__).resolve().parent.parent.joinpath(*parts)


class OutputBag:
    """MCAP rosbag2 writer taking already-serialized CDR messages (rclpy's format).

    Knows every ROS 2 Kilted type plus ``pointmap_ros/msg/TrackedObject(Array)``, registered
    from the ``.msg`` text so readers without our package can decode them.
    """

    def __init__(self, path: Path, overwrite: bool = False):
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import get_types_from_msg

        from pointmap_ros.data.bag import BAG_VERSION, prepare_bag_dir, typestore
        path = prepare_bag_dir(path, overwrite, name='out_bag', how='pass --overwrite')
        self.store = typestore()
        types = {}
        for name in ('TrackedObject', 'TrackedObjectArray'):
            text = share_path('msg', f'{name}.msg').read_text()
            types.update(get_types_from_msg(text, f'pointmap_ros/msg/{name}'))
        self.store.register(types)
        self.path = path
        self._writer = Writer(path, version=BAG_VERSION, storage_plugin=StoragePlugin.MCAP)
        self._connections: dict[str, object] = {}
        self.counts: collections.Counter = collections.Counter()

    def __enter__(self) -> 'OutputBag':
        self._writer.open()
        return self

    def __exit__(self, *exc) -> None:
        self._writer.close()

    def write(self, topic: str, msgtype: str, log_time_ns: int, raw: bytes) -> None:
        if topic not in self._connections:
            self._connections[topic] = self._writer.add_connection(topic, msgtype,
                                                                   typestore=self.store)
        self._writer.write(self._connections[topic], int(log_time_ns), bytes(raw))
        self.counts[topic] += 1


def load_parameters(params_file: str | None, overrides: list[str]) -> dict:
    """Node parameter values: table defaults, then the YAML file, then ``name:=value``s.

    Raises:
        ConfigError: unknown name, malformed override or a value the node would reject.
    """
    from pointmap_ros.ros import params as P
    values = P.defaults()
    if params_file:
        data = yaml.safe_load(Path(params_file).read_text()) or {}
        for key in ('/**', NODE_NAME, f'/{NODE_NAME}'):
            values.update((data.get(key) or {}).get('ros__parameters', {}))
    for item in overrides:
        name, sep, text = item.partition(':=')
        if not sep:
            raise ConfigError(f'parameter override {item!r} is not name:=value', name=item)
        values[name] = yaml.safe_load(text)
    unknown = sorted(set(values) - set(P.PARAMS_BY_NAME))
    if unknown:
        raise ConfigError(f'unknown parameters {unknown}', name=unknown[0])
    for name, value in values.items():  # YAML writes 5 for 5.0; the node's types are strict
        if isinstance(P.PARAMS_BY_NAME[name].default, float) and isinstance(value, int):
            values[name] = float(value)
    if (reason := P.validate(values)) is not None:
        raise ConfigError(f'invalid parameters: {reason}')
    return values


class BagOdometry:
    """The odometry prior offline: the bag's ``/tf`` and ``/tf_static`` in a
    :class:`~pointmap_ros.ros.tf_buffer.TfBuffer`, looked up like the node does (same
    counts and log lines, from :class:`~pointmap_ros.ros.odometry_source.OdometrySource`)."""

    TOPICS = {'/tf': False, '/tf_static': True}  # topic -> static

    def __init__(self, odom_frame: str):
        import logging

        from pointmap_ros.ros.odometry_source import OdometrySource
        from pointmap_ros.ros.tf_buffer import TfBuffer
        self.buffer = TfBuffer()
        self.source = OdometrySource.from_buffer(self.buffer, odom_frame,
                                                 logging.getLogger('pointmap-replay'))
        self.invalid_transforms = 0

    def store(self, topic: str, msg) -> None:
        """Add one TFMessage of the bag (malformed transforms are counted, not fatal)."""
        for transform in msg.transforms:
            try:
                self.buffer.set_transform(transform, 'bag', self.TOPICS[topic])
            except ValueError:
                self.invalid_transforms += 1


class HeldFrames:
    """Completed frames waiting for the bag to be read ``hold_s`` past their image.

    Live, the node waits up to ``odom_timeout_s`` for an image's TF, which usually arrives
    just after the image; offline the bag's log time plays that clock, so TF logged up to
    that much after the image is still used. Without the odometry prior ``hold_s`` is 0 and
    every frame is due at once.
    """

    def __init__(self, hold_s: float):
        self.hold_ns = int(round(hold_s * 1e9))
        self._frames: collections.deque = collections.deque()  # (log_ns, stream, frame)

    def hold(self, log_ns: int, stream, frame) -> None:
        self._frames.append((log_ns, stream, frame))

    def due(self, now_log_ns: int | None) -> list[tuple]:
        """``(log_ns, stream, frame)`` of the frames whose wait is over at bag time
        ``now_log_ns`` (None: all, the bag ended), oldest first."""
        ready = []
        while self._frames and (now_log_ns is None
                                or self._frames[0][0] + self.hold_ns <= now_log_ns):
            ready.append(self._frames.popleft())
        return ready


def _process_frame(held: tuple, bag: OutputBag, drops: collections.Counter) -> bool:
    """Run one held frame through its stream and write its outputs at its image's log time;
    True when it had outputs."""
    from rclpy.serialization import serialize_message
    from tf2_msgs.msg import TFMessage

    from pointmap_ros.ros.outputs import output_topic, output_types
    log_ns, stream, frame = held
    try:
        result = stream.process(frame)
    except PointmapError as exc:
        drops[getattr(exc, 'reason', type(exc).__name__)] += 1
        return False
    if result is None:
        return False
    messages, transforms = stream.outputs(result, frame.header)
    message_types = output_types()
    for key, message in messages.items():
        bag.write(output_topic(NODE_NAME, stream.prefix, key),
                  msgtype_of(message_types[key]), log_ns, serialize_message(message))
    if transforms:
        bag.write('/tf', 'tf2_msgs/msg/TFMessage', log_ns,
                  serialize_message(TFMessage(transforms=transforms)))
    return True


def _make_streams(values: dict, engine, odometry: BagOdometry | None):
    """One attached CameraStream per camera, and ``{input topic: (stream, kind)}``."""
    from pointmap_ros.pipeline import DynamicReconPipeline
    from pointmap_ros.ros import params as P
    from pointmap_ros.ros.camera_stream import CameraStream
    streams, routes = [], {}
    for namespace in values['cameras']:
        stream = CameraStream.from_parameters(namespace, values)
        stream.attach(DynamicReconPipeline(engine, P.pipeline_config(values)))
        if odometry is not None:
            stream.attach_odometry(odometry.source.pose_at)
        routes.update({topic: (stream, kind) for kind, topic in stream.input_topics()})
        streams.append(stream)
    return streams, routes


def _feed(stream, kind: str, msg, drops: collections.Counter):
    """The frame ``msg`` completes, if any (a set rejected on arrival is counted)."""
    try:
        return stream.on_message(kind, msg)
    except PointmapError as exc:
        drops[getattr(exc, 'reason', type(exc).__name__)] += 1
        return None


def replay(in_bag: Path, out_bag: Path, values: dict, *, copy_inputs: bool = True,
           overwrite: bool = False, progress: bool = True) -> dict:
    """Process ``in_bag`` with the node's pipeline; write ``out_bag``. Returns a summary
    (with ``odom_frame`` set also the odometry counts, as /diagnostics has them)."""
    from rclpy.serialization import deserialize_message
    from rosbags.highlevel import AnyReader
    from tqdm import tqdm

    from pointmap_ros.ros.node import create_engine_from_params

    engine = create_engine_from_params(values)
    odometry = BagOdometry(values['odom_frame']) if values['odom_frame'] else None
    held = HeldFrames(values['odom_timeout_s'] if odometry is not None else 0.0)
    streams, routes = _make_streams(values, engine, odometry)
    drops: collections.Counter = collections.Counter()
    frames_out = 0
    start = time.monotonic()
    with AnyReader([Path(in_bag)]) as reader, OutputBag(out_bag, overwrite) as bag:
        missing = sorted(set(routes) - {c.topic for c in reader.connections})
        if len(missing) == len(routes):
            raise ConfigError(f'none of the input topics {sorted(routes)} is in {in_bag} '
                              f'(it has {sorted(reader.topics)}); set cameras/topic parameters')
        for connection, log_ns, raw in tqdm(reader.messages(), total=reader.message_count,
                                            unit='msg', disable=not progress, desc='replay'):
            if copy_inputs:
                bag.write(connection.topic, connection.msgtype, log_ns, raw)
            topic = connection.topic
            if topic in routes or (odometry is not None and topic in BagOdometry.TOPICS):
                msg = deserialize_message(bytes(raw), _message_class(connection.msgtype))
                if topic not in routes:
                    odometry.store(topic, msg)
                elif (frame := _feed(*routes[topic], msg, drops)) is not None:
                    held.hold(log_ns, routes[topic][0], frame)
            frames_out += sum(_process_frame(ready, bag, drops) for ready in held.due(log_ns))
        frames_out += sum(_process_frame(ready, bag, drops) for ready in held.due(None))
    for stream in streams:
        drops.update(stream.synchronizer.dropped)
    engine.close()
    summary = {'out_bag': str(out_bag), 'frames_out': frames_out, 'dropped': dict(drops),
               'topics': dict(bag.counts), 'seconds': time.monotonic() - start}
    if odometry is not None:
        summary['odometry'] = {**odometry.source.snapshot(),
                               'invalid_transforms': odometry.invalid_transforms}
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='pointmap-replay', description=__doc__.split('\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('in_bag', type=Path, help='input ROS 2 bag directory (MCAP/sqlite3)')
    parser.add_argument('out_bag', type=Path, help='output bag directory to create (MCAP)')
    parser.add_argument('--backend', help='inference backend (overrides the parameter)')
    parser.add_argument('--model', help='checkpoint (overrides the model parameter)')
    parser.add_argument('--params-file', help='node YAML (default: the table defaults)')
    parser.add_argument('-p', '--param', action='append', default=[], metavar='NAME:=VALUE',
                        help='override one node parameter (repeatable)')
    parser.add_argument('--no-inputs', action='store_true',
                        help='write only the outputs (default: copy the input topics too)')
    parser.add_argument('--overwrite', action='store_true', help='replace OUT_BAG if present')
    parser.add_argument('--quiet', action='store_true', help='no progress bar')
    args = parser.parse_args(argv)
    overrides = list(args.param)
    overrides += [f'backend:={args.backend}'] if args.backend else []
    overrides += [f"model:='{args.model}'"] if args.model else []
    try:
        values = load_parameters(args.params_file, overrides)
        summary = replay(args.in_bag, args.out_bag, values, copy_inputs=not args.no_inputs,
                         overwrite=args.overwrite, progress=not args.quiet)
    except PointmapError as exc:
        print(f'pointmap-replay: {exc}', file=sys.stderr)
        return 2
    print(f"wrote {summary['out_bag']}: {summary['frames_out']} frames of outputs in "
          f"{summary['seconds']:.1f} s")
    for topic, count in sorted(summary['topics'].items()):
        print(f'  {topic:<40} {count}')
    if summary['dropped']:
        print(f"  dropped: {summary['dropped']}")
    if (odometry := summary.get('odometry')) is not None:
        print(f"  odometry ({odometry['frame']}): {odometry['with']} frames with, "
              f"without: {odometry['without']}")
        if odometry['invalid_transforms']:
            print(f"  ignored {odometry['invalid_transforms']} invalid transforms in /tf")
    return 0


if __name__ == '__main__':
    sys.exit(main())
