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
time. Parameters: the node's table (``--params-file``, ``-p name:=value``).
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

__all__ = ['OutputBag', 'msgtype_of', 'share_path', 'load_parameters', 'replay', 'main']

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


def replay(in_bag: Path, out_bag: Path, values: dict, *, copy_inputs: bool = True,
           overwrite: bool = False, progress: bool = True) -> dict:
    """Process ``in_bag`` with the node's pipeline; write ``out_bag``. Returns a summary."""
    from rclpy.serialization import deserialize_message, serialize_message
    from rosbags.highlevel import AnyReader
    from tf2_msgs.msg import TFMessage
    from tqdm import tqdm

    from pointmap_ros.pipeline import DynamicReconPipeline
    from pointmap_ros.ros import params as P
    from pointmap_ros.ros.camera_stream import CameraStream
    from pointmap_ros.ros.node import create_engine_from_params
    from pointmap_ros.ros.outputs import output_topic, output_types

    engine = create_engine_from_params(values)
    message_types = output_types()
    streams = [CameraStream.from_parameters(namespace, values)
               for namespace in values['cameras']]
    routes = {}  # input topic -> (stream, kind)
    for stream in streams:
        stream.attach(DynamicReconPipeline(engine, P.pipeline_config(values)))
        routes.update({topic: (stream, kind) for kind, topic in stream.input_topics()})
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
            if connection.topic not in routes:
                continue
            stream, kind = routes[connection.topic]
            msg = deserialize_message(bytes(raw), _message_class(connection.msgtype))
            try:
                frame = stream.on_message(kind, msg)
                result = None if frame is None else stream.process(frame)
            except PointmapError as exc:
                drops[getattr(exc, 'reason', type(exc).__name__)] += 1
                continue
            if result is None:
                continue
            messages, transforms = stream.outputs(result, frame.header)
            for key, message in messages.items():
                bag.write(output_topic(NODE_NAME, stream.prefix, key),
                          msgtype_of(message_types[key]), log_ns, serialize_message(message))
            if transforms:
                bag.write('/tf', 'tf2_msgs/msg/TFMessage', log_ns,
                          serialize_message(TFMessage(transforms=transforms)))
            frames_out += 1
    for stream in streams:
        drops.update(stream.synchronizer.dropped)
    engine.close()
    return {'out_bag': str(out_bag), 'frames_out': frames_out, 'dropped': dict(drops),
            'topics': dict(bag.counts), 'seconds': time.monotonic() - start}


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
    return 0


if __name__ == '__main__':
    sys.exit(main())
