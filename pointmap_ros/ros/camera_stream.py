"""One camera's way from ROS messages to output messages, without rclpy.

:class:`CameraStream` is to the node what tf2's ``Buffer`` is to its ``TransformListener``:
the node (and the lifecycle node, and ``pointmap-replay``) only subscribes, schedules and
publishes; everything a camera's frames go through is here, once:

1. :meth:`CameraStream.on_message` pairs image / camera_info (/ depth) by stamp
   (:class:`~pointmap_ros.ros.sync.StampSynchronizer`), decodes and validates the set and
   returns a :class:`StreamFrame`: the pipeline's ``FrameInput`` plus the source header and
   its stamp in integer nanoseconds (kept as such for latency and output stamps);
2. :meth:`CameraStream.process` runs the camera's pipeline on it, with the camera's pose in
   the odometry frame at the image stamp when an odometry lookup is attached
   (:meth:`CameraStream.attach_odometry`; the node's comes from TF);
3. :meth:`CameraStream.outputs` turns the result into messages and TF transforms
   (:func:`~pointmap_ros.ros.outputs.build_outputs`) and remembers the markers drawn.

Settings come in two frozen dataclasses built once from the node parameters:
:class:`InputOptions` (topics and pairing) and
:class:`~pointmap_ros.ros.outputs.OutputOptions`. No threads: the caller decides on which
thread each step runs (the node: 1 on the executor, 2 and 3 on the inference worker).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping

import numpy as np
from geometry_msgs.msg import TransformStamped
from std_msgs.msg import Header

from pointmap_ros.errors import InputError
from pointmap_ros.pipeline import DynamicReconPipeline, FrameInput, PipelineConfig, PipelineOutput
from pointmap_ros.ros import conversions
from pointmap_ros.ros.outputs import OutputOptions, build_outputs, camera_name, camera_prefix
from pointmap_ros.ros.sync import StampSynchronizer, SyncedInput

__all__ = ['CameraStream', 'InputOptions', 'OutputOptions', 'StreamFrame', 'NoPipelineError',
           'OdometryLookup']

#: ``(TF frame, stamp in integer ns) -> T_odom_cam [4, 4] or None``: the camera's pose in the
#: odometry frame at an image's stamp (the node's is ``OdometrySource.pose_at``). It may wait
#: briefly for TF, so it is called where :meth:`CameraStream.process` runs (the worker thread).
OdometryLookup = Callable[[str, int], np.ndarray | None]


class NoPipelineError(RuntimeError):
    """:meth:`CameraStream.process` was called while no pipeline is attached (the engine is
    not loaded, or was released while the frame waited for inference)."""


@dataclass(frozen=True)
class InputOptions:
    """Which topics one camera reads and how they are paired (read-only parameters).

    Attributes:
        image_topic, camera_info_topic, depth_topic: topics relative to the camera namespace.
        use_camera_info, use_depth: which partners each image needs.
        sync_slop_s: largest stamp difference between an image and its partners (s).
        exact_sync: require identical stamps (``sync_slop_s`` ignored).
        sync_queue_size: messages buffered per input while waiting for partners.
        odom_camera_frame: TF frame whose odometry pose is looked up; '' = the image's
            ``header.frame_id`` (the optical frame).
    """

    image_topic: str = 'image_raw'
    camera_info_topic: str = 'camera_info'
    depth_topic: str = 'depth'
    use_camera_info: bool = True
    use_depth: bool = False
    sync_slop_s: float = 0.02
    exact_sync: bool = False
    sync_queue_size: int = 5
    odom_camera_frame: str = ''

    @classmethod
    def from_parameters(cls, values: Mapping[str, Any]) -> 'InputOptions':
        """The options of the node parameter ``values`` (validated by ``params.validate``)."""
        return cls(image_topic=values['image_topic'],
                   camera_info_topic=values['camera_info_topic'],
                   depth_topic=values['depth_topic'],
                   use_camera_info=bool(values['use_camera_info']),
                   use_depth=bool(values['use_depth']),
                   sync_slop_s=float(values['sync_slop_s']),
                   exact_sync=bool(values['exact_sync']),
                   sync_queue_size=int(values['sync_queue_size']),
                   odom_camera_frame=values['odom_camera_frame'])


@dataclass(frozen=True)
class StreamFrame:
    """One synchronized, decoded and validated input set of a camera.

    Attributes:
        frame: what the pipeline takes (``frame.stamp`` is ``stamp_ns`` in seconds).
        header: the source image's header: output stamps and the optical frame_id.
        stamp_ns: the source image's stamp, integer nanoseconds (exact, unlike ``frame.stamp``).
    """

    frame: FrameInput
    header: Header
    stamp_ns: int


class CameraStream:
    """One camera: its synchronizer, its pipeline and what its outputs remember.

    Args:
        namespace: the camera namespace, e.g. ``'/camera'``.
        num_cameras: cameras served together (one camera: unprefixed topics and frames).
        inputs: topics and pairing.
        outputs: how results become messages (``prefix`` is set from the namespace here).
    """

    def __init__(self, namespace: str, *, num_cameras: int = 1,
                 inputs: InputOptions = InputOptions(),
                 outputs: OutputOptions = OutputOptions()):
        self.namespace = namespace
        self.name = camera_name(namespace)
        self.prefix = camera_prefix(namespace, num_cameras)
        self.inputs = inputs
        self.output_options = outputs
        self.synchronizer = StampSynchronizer(
            self.name, slop_s=inputs.sync_slop_s, exact=inputs.exact_sync,
            queue_size=inputs.sync_queue_size, use_info=inputs.use_camera_info,
            use_depth=inputs.use_depth)
        #: None until :meth:`attach` and after :meth:`detach` (engine not loaded).
        self.pipeline: DynamicReconPipeline | None = None
        #: ``(reason, explanation)`` of a message the synchronizer dropped during the latest
        #: :meth:`on_message` call, else None (the caller logs it).
        self.sync_drop: tuple[str, str] | None = None
        self._odometry: OdometryLookup | None = None
        self._marker_ids: frozenset[int] = frozenset()

    @classmethod
    def from_parameters(cls, namespace: str, values: Mapping[str, Any]) -> 'CameraStream':
        """The stream of camera ``namespace`` configured by the node parameter ``values``."""
        num_cameras = len(values['cameras'])
        return cls(namespace, num_cameras=num_cameras,
                   inputs=InputOptions.from_parameters(values),
                   outputs=OutputOptions.from_parameters(
                       values, camera_prefix(namespace, num_cameras)))

    # -- configuration ------------------------------------------------------------------
    @property
    def output_options(self) -> OutputOptions:
        return self._output_options

    @output_options.setter
    def output_options(self, options: OutputOptions) -> None:
        # The prefix is the stream's (from its namespace), whatever the caller built.
        self._output_options = (options if options.prefix == self.prefix
                                else replace(options, prefix=self.prefix))

    def input_topics(self) -> list[tuple[str, str]]:
        """``(kind, topic)`` of every input this camera needs, ``kind`` as
        :meth:`on_message` takes it (``'image'``, ``'info'``, ``'depth'``)."""
        relative = [('image', self.inputs.image_topic)]
        if self.inputs.use_camera_info:
            relative.append(('info', self.inputs.camera_info_topic))
        if self.inputs.use_depth:
            relative.append(('depth', self.inputs.depth_topic))
        base = self.namespace.rstrip('/')
        return [(kind, f'{base}/{topic}') for kind, topic in relative]

    def attach(self, pipeline: DynamicReconPipeline) -> None:
        """Use ``pipeline`` from now on (a fresh one: empty window, no tracks)."""
        self.detach()
        self.pipeline = pipeline
        self._marker_ids = frozenset()

    def attach_odometry(self, lookup: OdometryLookup | None) -> None:
        """Give every later frame its odometry pose from ``lookup`` (None: no odometry)."""
        self._odometry = lookup

    def odometry_frame(self, frame: StreamFrame) -> str:
        """The TF frame whose odometry pose ``frame`` needs: ``odom_camera_frame``, else the
        image's own frame_id (each camera its own)."""
        return self.inputs.odom_camera_frame or frame.header.frame_id

    def detach(self) -> None:
        """Forget the pipeline (the engine is being released), ending its flow thread."""
        if self.pipeline is not None:
            self.pipeline.close()
        self.pipeline = None

    def set_pipeline_config(self, config: PipelineConfig) -> None:
        """Swap in a validated config with changed dynamic fields; the pipeline reads its
        config on every frame, so the next frame uses it."""
        if self.pipeline is not None:
            self.pipeline.config = config

    # -- the three steps of a frame -----------------------------------------------------
    def on_message(self, kind: str, msg) -> StreamFrame | None:
        """Feed one message; return the frame it completes, if any.

        Args:
            kind: ``'image'``, ``'info'`` or ``'depth'``.
            msg: sensor_msgs Image / CameraInfo / Image (depth).

        Raises:
            InputError / CalibrationError: the completed set is unusable (bad encoding,
                size mismatch, unusable K...); ``reason`` is the drop reason diagnostics
                count. Messages the synchronizer drops are reported in :attr:`sync_drop`.
        """
        previous_drop = self.synchronizer.last_drop  # a new tuple per drop
        synced = self.synchronizer.add(kind, conversions.stamp_to_ns(msg.header.stamp), msg)
        latest_drop = self.synchronizer.last_drop
        self.sync_drop = latest_drop if latest_drop is not previous_drop else None
        return None if synced is None else self._decode(synced)

    def process(self, frame: StreamFrame, skipped: int = 0) -> PipelineOutput | None:
        """Run the pipeline on ``frame``; None while no output is possible yet.

        With an odometry lookup attached, the frame's ``T_odom_cam`` is looked up first
        (it may wait briefly for TF: call this off the executor thread).

        Args:
            frame: from :meth:`on_message`.
            skipped: frames of this camera superseded before inference since the previous
                one (the inference worker's count).

        Raises:
            NoPipelineError: no pipeline attached.
            InputError / CalibrationError / PoseError: the pipeline dropped the frame.
        """
        pipeline = self.pipeline  # read once: another thread may detach it meanwhile
        if pipeline is None:
            raise NoPipelineError(f'camera {self.name!r} has no pipeline (engine not loaded)')
        return pipeline.process(self._with_odometry(frame), skipped)

    def outputs(self, result: PipelineOutput,
                header: Header) -> tuple[dict[str, Any], list[TransformStamped]]:
        """Messages (``{output name: message}``) and TF transforms of one result, stamped
        with the source image ``header``."""
        built = build_outputs(result, header, self._output_options, self._marker_ids)
        self._marker_ids = built.marker_ids
        return built.messages, built.transforms

    def _with_odometry(self, frame: StreamFrame) -> FrameInput:
        """The frame's pipeline input, with ``T_odom_cam`` when a lookup is attached (a
        copy: the StreamFrame stays as received)."""
        if self._odometry is None:
            return frame.frame
        pose = self._odometry(self.odometry_frame(frame), frame.stamp_ns)
        return replace(frame.frame, T_odom_cam=pose)

    def _decode(self, synced: SyncedInput) -> StreamFrame:
        rgb = conversions.image_to_rgb(synced.image)
        # The CameraInfo checks that need the message (its stated size) and the K checks
        # happen here, on arrival, so a bad set is dropped before it waits for inference.
        K = (None if synced.info is None
             else conversions.camera_info_to_K(synced.info, rgb.shape[:2]))
        depth = None if synced.depth is None else conversions.image_to_depth(synced.depth)
        if depth is not None and depth.shape != rgb.shape[:2]:
            raise InputError(f'depth is {depth.shape[0]}x{depth.shape[1]} but the image is '
                             f'{rgb.shape[0]}x{rgb.shape[1]} (register depth to the colour '
                             'image)', 'size', actual=depth.shape, expected=rgb.shape[:2])
        # FrameInput takes seconds; the exact integer stamp travels beside it.
        frame = FrameInput(image=rgb, stamp=synced.stamp_ns * 1e-9, camera_id=self.name, K=K,
                           depth=depth)
        return StreamFrame(frame=frame, header=synced.image.header, stamp_ns=synced.stamp_ns)

