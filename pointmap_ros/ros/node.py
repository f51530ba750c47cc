"""``dynamic_recon_node``: the thin ROS 2 shell over one :class:`CameraStream` per camera.

What a frame goes through lives in ros/camera_stream.py (read it first); this module only
wires it to ROS. Executor thread: each subscription callback hands its message to the
camera's stream, which pairs, decodes and validates; a completed frame goes to the inference
worker (pipeline/worker.py), which keeps the newest per camera. Timers publish diagnostics
and the no-input warning. Worker thread: the stream runs the pipeline and builds the
messages, the node publishes them with the *source image's* header stamp. With
``odom_frame`` set, the stream first looks up the camera's pose in the odometry frame
(ros/odometry_source.py; TF may need a few ms more, so on the worker thread). ``~/ready``
(``std_msgs/Bool``, latched) says when the node is listening with its engine loaded. The full
interface (topics, frames, QoS, parameters) is documented in docs/ros_interface.md.
"""

from __future__ import annotations

import collections
import logging
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Bool, Header

from pointmap_ros.assets import SHIPPED_MODEL
from pointmap_ros.errors import ConfigError, EngineError, PointmapError
from pointmap_ros.pipeline.worker import InferenceWorker
from pointmap_ros.ros import params as P
from pointmap_ros.ros.camera_stream import CameraStream, NoPipelineError, StreamFrame
from pointmap_ros.ros.diagnostics import NodeStats, build_diagnostics
from pointmap_ros.ros.odometry_source import OdometrySource
from pointmap_ros.ros.outputs import OutputOptions, flow_units, output_types
from pointmap_ros.ros.qos import describe_qos, latched_qos, make_qos, overriding_options
from pointmap_ros.ros.runner import node_arg_parser, run_node
from pointmap_ros.ros.sync import InputWatchdog, no_input_warning, stream_ended_message
from pointmap_ros.ros.tf import TfPublisher

__all__ = ['ReconCore', 'DynamicReconNode', 'create_engine_from_params', 'engine_cache_use',
           'main', 'NODE_NAME', 'READY_TOPIC']

NODE_NAME = 'dynamic_recon_node'
#: Latched std_msgs/Bool: true while the node listens with its engine loaded (relative name).
READY_TOPIC = '~/ready'
_LOG_EVERY_S = 5.0
#: Message type of each input kind CameraStream.on_message takes.
_INPUT_TYPES = {'image': Image, 'info': CameraInfo, 'depth': Image}


def engine_cache_use(info: dict, values: dict[str, Any], started_s: float) -> str | None:
    """'hit (key K, path P)' / 'miss (key K, path P)' for an engine built from the persistent
    cache, or None when the backend uses no cache file (torch, oracle, a given onnx_dir or
    engine_path).

    The key is the cached file's stem (``<model>-<H>x<W>-<weights hash>`` for ONNX exports,
    the build-key hash for TensorRT engines). A file written after ``started_s`` (wall-clock
    seconds, taken just before the engine was created) was made now: a miss.
    """
    from pointmap_ros.engines.engine_cache import default_cache_root
    if values['onnx_dir'] or values['engine_path']:
        return None
    root = Path(values['engine_cache_dir'] or default_cache_root()).resolve()
    files = [Path(info['onnx'])] if info.get('onnx') else []
    files += [Path(f) for f in dict(info.get('engines') or {}).values()]
    files = [f for f in files if f.is_file() and root in f.resolve().parents]
    if not files:
        return None
    made_now = any(f.stat().st_mtime >= started_s for f in files)
    key = ', '.join(f.stem for f in files)
    return f"{'miss' if made_now else 'hit'} (key {key}; {', '.join(map(str, files))})"


class _RosLogHandler(logging.Handler):
    """Forwards Python ``logging`` records of pointmap_ros (e.g. the engine factory's ONNX
    export and TensorRT engine-cache messages) to the node's ROS logger, where users look."""

    def __init__(self, ros_logger):
        super().__init__(level=logging.INFO)
        self._ros_logger = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        text = f'[{record.name}] {record.getMessage()}'
        if record.levelno >= logging.ERROR:
            self._ros_logger.error(text)
        elif record.levelno >= logging.WARNING:
            self._ros_logger.warning(text)
        else:
            self._ros_logger.info(text)


def create_engine_from_params(values: dict[str, Any]):
    """The inference engine the parameters describe (shared by the node and pointmap-replay).

    Raises:
        EngineError / CheckpointError / ConfigError: the backend cannot be created; the message
            names the missing file or library (never a silent fallback to another model).
    """
    from pointmap_ros.engines.factory import create_engine
    kwargs = P.engine_kwargs(values)
    if values['backend'] != 'oracle' and not (values['onnx_dir'] or values['engine_path']):
        model = Path(kwargs.setdefault('checkpoint', str(SHIPPED_MODEL)))
        if not (model.is_file() or model.with_suffix('.safetensors').is_file()):
            which = 'the shipped model' if not values['model'] else 'parameter model'
            raise EngineError(
                f'model file {model} ({which}) does not exist. Install the model (see '
                'docs/model_card.md), pass model:=/path/to/checkpoint.safetensors, or try the '
                'pipeline on the demo stream with backend:=oracle.')
    return create_engine(**kwargs)


@dataclass
class _Camera:
    """One camera as the node sees it: its stream plus the ROS objects serving it."""

    stream: CameraStream
    topics: list[str] = field(default_factory=list)  # subscribed now (empty while inactive)
    publishers: dict[str, Any] = field(default_factory=dict)  # output name -> publisher


class ReconCore:
    """The node's behaviour, mixed into a plain :class:`Node` or a ``LifecycleNode``.

    Phases (the lifecycle variant maps them onto transitions): :meth:`_setup` declares and
    validates parameters and starts the timers; :meth:`_allocate` loads the engine, builds
    one pipeline per camera and creates the publishers; :meth:`_activate` subscribes and
    starts the inference worker. :meth:`_deactivate` and :meth:`_release` undo the last two.
    """

    def _setup(self) -> None:
        # What the teardown reads exists before anything can raise: rclpy destroys a node
        # whose parameters were rejected too, at the context's shutdown.
        self._values: dict[str, Any] | None = None
        self.stats = NodeStats()
        self._engine = None
        self._worker: InferenceWorker | None = None
        self._worker_ran = False  # an activation happened before (lifecycle re-activation)
        # Frames superseded before inference per camera, by workers already stopped.
        self._superseded: collections.Counter = collections.Counter()
        self._subscriptions: list = []
        self._cameras: dict[str, _Camera] = {}
        self._odometry = None
        # Registered before declaring, so start-up values are checked like runtime changes.
        self.add_on_set_parameters_callback(self._validate_parameters)
        values = P.declare_parameters(self)
        if (reason := P.validate(values)) is not None:
            raise ConfigError(f'invalid parameters: {reason}')
        self._values = values
        self.add_post_set_parameters_callback(self._apply_parameters)
        self._last_log: dict[str, float] = {}
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        in_qos = make_qos(values['input_qos'], values['input_queue_depth'])
        self._in_qos = in_qos
        self._in_qos_text = describe_qos(in_qos)
        self._out_qos = make_qos(values['output_qos'], values['output_queue_depth'])
        self._odometry = self._make_odometry_source(values)
        for namespace in values['cameras']:
            stream = CameraStream.from_parameters(namespace, values)
            if self._odometry is not None:
                stream.attach_odometry(self._odometry.pose_at)
            self._cameras[stream.name] = _Camera(stream)
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        # Latched (transient local): a camera or test that starts later still gets the state.
        self._ready_pub = self.create_publisher(Bool, READY_TOPIC, latched_qos())
        self._ready_pub.publish(Bool(data=False))
        self._tf = TfPublisher(self)
        self._watchdog = InputWatchdog(values['no_input_warn_s'], self._now_steady())
        # Steady-clock timers: they must run while a bag is paused or /clock is absent.
        self.create_timer(values['diagnostics_period_s'], self._publish_diagnostics,
                          clock=self._steady)
        self.create_timer(1.0, self._check_input, clock=self._steady)

    def _make_odometry_source(self, values: dict[str, Any]) -> OdometrySource | None:
        """The TF reader of the odometry prior, None while ``odom_frame`` is empty (off)."""
        if not values['odom_frame']:
            return None
        source = OdometrySource.from_node(self, values['odom_frame'],
                                          timeout_s=values['odom_timeout_s'])
        camera_frame = values['odom_camera_frame'] or "each image's frame_id"
        self.get_logger().info(f"odometry prior: {values['odom_frame']} -> {camera_frame} "
                               f'from TF via {source.kind}')
        return source

    def _allocate(self) -> None:
        """Load the engine (raises EngineError & co.), build pipelines and publishers."""
        self._load_engine()
        for cam in self._cameras.values():
            self._advertise(cam)

    def _load_engine(self) -> None:
        package_logger = logging.getLogger('pointmap_ros')
        handler = _RosLogHandler(self.get_logger())
        package_logger.addHandler(handler)
        level = package_logger.level
        package_logger.setLevel(logging.INFO)
        started_s = time.time()
        try:
            self._engine = create_engine_from_params(self._values)
        finally:
            package_logger.removeHandler(handler)
            package_logger.setLevel(level)
        info = dict(self._engine.info())
        if (cache := engine_cache_use(info, self._values, started_s)) is not None:
            info['cache'] = cache
            self.get_logger().info(f'engine cache {cache}')
        self._make_pipelines()
        from pointmap_ros.pipeline.correspondence import resolve_cross_time_source
        source, reason = resolve_cross_time_source(
            P.pipeline_config(self._values).cross_time_source, self._engine)
        info['cross_time_source'] = source
        self.stats.set_engine('ready', info)
        self.get_logger().info(f'engine ready: {info}')
        self.get_logger().info(f'cross-time maps: {source} ({reason})')

    def _make_pipelines(self) -> None:
        """Fresh pipelines (empty windows, no tracks) over the loaded engine."""
        from pointmap_ros.pipeline import DynamicReconPipeline
        for cam in self._cameras.values():
            cam.stream.attach(DynamicReconPipeline(self._engine,
                                                   P.pipeline_config(self._values)))

    def _release_engine(self) -> None:
        """Free the engine (GPU memory, sessions); windows and tracks start over after."""
        for cam in self._cameras.values():
            cam.stream.detach()
        if self._engine is not None:
            self._engine.close()
            self._engine = None
        self.stats.set_engine('released')

    def _activate(self) -> None:
        if self._engine is None:
            self._load_engine()
        elif self._worker_ran:
            # Re-activation: windows and tracks start over (the engine stays loaded).
            self._make_pipelines()
        for cam in self._cameras.values():
            self._subscribe(cam)
        self._worker = InferenceWorker(self._process, self._on_worker_error,
                                       max_rate_hz=self._values['max_rate_hz'])
        self._worker.start()
        self._worker_ran = True
        self._watchdog.note_usable(self._now_steady(), count=False)
        self.get_logger().info(
            f"listening to {[t for c in self._cameras.values() for t in c.topics]} "
            f"(QoS {self._in_qos_text}); publishing with QoS {describe_qos(self._out_qos)}; "
            f"TF via {self._tf.kind}; world frame convention "
            f"{self._values['world_frame_convention']}")
        self._ready_pub.publish(Bool(data=True))

    def _deactivate(self) -> None:
        if self._subscriptions or self._worker is not None:
            self._announce_not_ready()
        for sub in self._subscriptions:
            self.destroy_subscription(sub)
        self._subscriptions.clear()
        for cam in self._cameras.values():
            cam.topics.clear()
        if self._worker is not None:
            self._worker.stop(timeout_s=30.0)  # let a running inference finish with the engine
            self._superseded.update(self._worker.superseded_by_camera())
            self._worker = None

    def _announce_not_ready(self) -> None:
        """Publish ready=False, unless shutdown has begun (subscribers see the node vanish)."""
        if not self.context.ok():
            return
        try:
            self._ready_pub.publish(Bool(data=False))
        except Exception:
            # SIGINT may invalidate the context between the check and the publish (seen on
            # a loaded CI machine: RCLError "publisher's context is invalid"); only a
            # failure on a live context is a bug.
            if self.context.ok():
                raise

    def _release(self) -> None:
        """Undo :meth:`_allocate`: publishers and engine."""
        for cam in self._cameras.values():
            for pub in cam.publishers.values():
                self._destroy_output_publisher(pub)
            cam.publishers.clear()
        self._release_engine()

    # Plain node: ordinary publishers. The lifecycle node overrides both with lifecycle
    # publishers, which publish only while the node is active.
    def _create_output_publisher(self, msg_type, topic: str):
        return self.create_publisher(msg_type, topic, self._out_qos,
                                     qos_overriding_options=overriding_options())

    def _destroy_output_publisher(self, publisher) -> None:
        self.destroy_publisher(publisher)

    def destroy_node(self):
        """Stop the worker and free the engine before the node itself goes."""
        self._deactivate()
        self._release_engine()
        if self._odometry is not None:
            self._odometry.close()
        return super().destroy_node()

    # -- parameters ---------------------------------------------------------------------
    def _validate_parameters(self, params) -> SetParametersResult:
        """On-set callback: accept or reject with a reason; no side effects."""
        changes = {}
        for p in params:
            spec = P.PARAMS_BY_NAME.get(p.name)
            if spec is None:
                continue  # use_sim_time, qos_overrides.* are validated by rclpy
            if (reason := P.check_value(spec, p.value)) is not None:
                return SetParametersResult(successful=False, reason=reason)
            changes[p.name] = p.value
        if self._values is not None and changes:
            if (reason := P.validate({**self._values, **changes})) is not None:
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _apply_parameters(self, params) -> None:
        """Post-set callback: apply accepted dynamic changes."""
        changed = {p.name: p.value for p in params if p.name in P.PARAMS_BY_NAME}
        if not changed:
            return
        self._values.update(changed)
        if 'max_rate_hz' in changed and self._worker is not None:
            self._worker.set_max_rate(changed['max_rate_hz'])
        if 'no_input_warn_s' in changed:
            self._watchdog.timeout_s = changed['no_input_warn_s']
        config = P.pipeline_config(self._values).validate()  # only dynamic fields changed
        for cam in self._cameras.values():
            cam.stream.output_options = OutputOptions.from_parameters(self._values)
            if any(P.PARAMS_BY_NAME[name].config_field for name in changed):
                cam.stream.set_pipeline_config(config)
        self.get_logger().info(f'parameters changed: {changed}')

    # -- wiring -------------------------------------------------------------------------
    def _subscribe(self, cam: _Camera) -> None:
        for kind, topic in cam.stream.input_topics():
            cam.topics.append(topic)
            self._subscriptions.append(self.create_subscription(
                _INPUT_TYPES[kind], topic,
                lambda msg, camera=cam, kind=kind: self._on_message(camera, kind, msg),
                self._in_qos, qos_overriding_options=overriding_options()))

    def _advertise(self, cam: _Camera) -> None:
        for key, msg_type in output_types().items():
            cam.publishers[key] = self._create_output_publisher(
                msg_type, f'~/{cam.stream.prefix}{key}')

    # -- executor thread ----------------------------------------------------------------
    def _on_message(self, cam: _Camera, kind: str, msg) -> None:
        stream = cam.stream
        if kind == 'image':
            self.stats.on_input(stream.name, self._now_steady())
        try:
            frame = stream.on_message(kind, msg)
        except PointmapError as exc:
            self._count_drop(stream.name, exc)
            return
        finally:
            if stream.sync_drop is not None:  # counted by the synchronizer, logged here
                self._log_drop(stream.name, *stream.sync_drop)
        if frame is None:
            return
        self._watchdog.note_usable(self._now_steady())
        if self._worker is not None:
            self._worker.submit(stream.name, frame)

    def _count_drop(self, camera: str, exc: Exception) -> None:
        reason = getattr(exc, 'reason', type(exc).__name__)
        self.stats.on_drop(reason)
        self._log_drop(camera, reason, str(exc))

    def _log_drop(self, camera: str, reason: str, text: str) -> None:
        """Log the first drop of each reason, then at most one per reason every 5 s."""
        now = time.monotonic()
        if now - self._last_log.get(reason, -float('inf')) >= _LOG_EVERY_S:
            self._last_log[reason] = now
            self.get_logger().warning(f'[{camera}] dropped frame ({reason}): {text}')

    def _check_input(self) -> None:
        now = self._now_steady()
        if not self._subscriptions or not self._watchdog.should_warn(now):
            return
        received = collections.Counter()
        for cam in self._cameras.values():
            received.update({f'{cam.stream.name}/{kind}': count for kind, count
                             in cam.stream.synchronizer.received.items()})
        # The very counts /diagnostics publishes (sync, conversion, pipeline, superseded).
        dropped = {k: v for k, v in self._snapshot(now)['dropped'].items() if v}
        silent_s = self._watchdog.silent_for(now)
        topics = [t for cam in self._cameras.values() for t in cam.topics]
        if self._watchdog.usable_count:
            self.get_logger().info(stream_ended_message(
                silent_s, self._watchdog.usable_count, topics, self._in_qos_text, received,
                dropped))
            return
        self.get_logger().warning(no_input_warning(
            silent_s, topics, self._in_qos_text, self._values['sync_slop_s'],
            self._values['exact_sync'], received, dropped))

    def _snapshot(self, now_s: float) -> dict:
        """Statistics as /diagnostics reports them (drops of every source included)."""
        superseded = self._superseded.copy()
        if self._worker is not None:
            superseded.update(self._worker.superseded_by_camera())
        extra = collections.Counter({'superseded_before_inference': superseded.total()})
        events = collections.Counter()  # degraded but published (e.g. focal_rejected)
        for cam in self._cameras.values():
            extra.update(cam.stream.synchronizer.dropped)
            if (pipeline := cam.stream.pipeline) is not None:
                events.update(pipeline.event_counts())
        snap = self.stats.snapshot(now_s, extra)
        snap['pipeline_events'] = dict(events)
        snap['superseded'] = {name: superseded[name] for name in self._cameras}
        snap['odometry'] = None if self._odometry is None else self._odometry.snapshot()
        return snap

    def _publish_diagnostics(self) -> None:
        snap = self._snapshot(self._now_steady())
        self._diag_pub.publish(build_diagnostics(
            self.get_name(), snap, self.get_clock().now().to_msg(),
            hardware_id=str(snap['engine'].get('device', ''))))

    def _now_steady(self) -> float:
        return self._steady.now().nanoseconds * 1e-9

    # -- worker thread ------------------------------------------------------------------
    def _process(self, camera: str, frame: StreamFrame, skipped: int) -> None:
        cam = self._cameras[camera]
        try:
            result = cam.stream.process(frame, skipped)
        except NoPipelineError:  # the engine was released while this frame waited
            return
        except PointmapError as exc:
            self._count_drop(camera, exc)
            return
        self.stats.on_processed()
        if result is None:  # the camera's first frame only opens its window
            return
        if self._odometry is not None:
            self.stats.on_odometry_decision(camera, result.odometry)
        if result.depth_fused:
            self.stats.on_depth_fused(camera)
        if not self.context.ok():  # shutting down: the publishers are unusable
            return
        publish_start = time.perf_counter()
        self._publish(cam, frame.header, result)
        publish_ms = (time.perf_counter() - publish_start) * 1e3
        latency_ms = (self.get_clock().now().nanoseconds - frame.stamp_ns) * 1e-6
        self.stats.on_output(
            self._now_steady(), latency_ms, {**result.timings_ms, 'publish': publish_ms},
            units=flow_units(result.metric_scale, cam.stream.output_options.flow_per_second))

    def _on_worker_error(self, camera: str, exc: BaseException) -> None:
        if not self.context.ok():
            # Shutting down (SIGINT): rclpy invalidated the context while this frame was in
            # flight, so its publish failed. Not a bug, and nothing can be published now.
            return
        text = ''.join(traceback.format_exception(exc))
        self.stats.on_drop('internal_error')
        self.stats.set_engine('error', error=f'{type(exc).__name__}: {exc}')
        self.get_logger().error(f'[{camera}] inference failed (a bug; please report):\n{text}')

    def _publish(self, cam: _Camera, image_header: Header, result) -> None:
        """Publish every output of one pipeline result, stamped with the source image."""
        messages, transforms = cam.stream.outputs(result, image_header)
        for key, message in messages.items():
            cam.publishers[key].publish(message)
        self._tf.send(transforms)


class DynamicReconNode(ReconCore, Node):
    """DPM 4D reconstruction node; see docs/ros_interface.md for its interface."""

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        self._setup()
        self._allocate()
        self._activate()


def main(args: list[str] | None = None) -> int:
    """Console entry point ``dynamic_recon_node`` (what launch/dynamic_recon.launch.py starts)."""
    return run_node(NODE_NAME, DynamicReconNode, args,
                    parser=node_arg_parser(NODE_NAME, __doc__))
