"""DynamicReconPipeline: timestamped frames in, everything the ROS node publishes out.

Per new frame t of a camera (all pairs have the older frame as i, so maps are in its frame),
stages that take values and return values:

1. Pairs: ``(keyframe, t)`` always, ``(t - g, t)`` for the configured gaps (window.py);
   engine inference; a registered depth image fused into the same-time maps when both
   frames have one (depth_prior.py); then the cross-time maps from the configured source
   (correspondence.py), metric scene flow when the same-time maps are.
2. Views: confidence gating and per-pair scale alignment to the window (pair.py).
3. Intrinsics: CameraInfo, else a focal fit on the keyframe's own map (intrinsics.py).
4. Motion and pose: the motion mask and ``T_kf_cam`` (ego_motion.py); PnP of the keyframe
   pair's ``P_t(t)`` on static pixels (geometry/pose.py explains why PnP), fused with the
   robot's odometry when frames carry it (odometry_prior.py). With correspondences, stages
   1-4 of the keyframe pair (inferred first) give the pose and that pair's motion test
   alone, so they run on the helper thread while the frame's other pairs infer.
5. World frame = the first keyframe's optical frame. ``T_world_cam = T_world_kf @ T_kf_cam``
   comes straight from the keyframe pair (St4RTrack-style, no chaining of small steps inside a
   keyframe); when the keyframe switches, the new keyframe's pose is already known. When PnP
   fails (:class:`PoseError`) for ``pose_reset_after`` consecutive frames, the failing frame
   becomes the keyframe at the last good pose and the window restarts (re-anchoring).
6. Instances and flow: instances of the motion mask, completed by their rigid fits
   (instances.py); the published scene flow (scene_flow.py).
7. Objects: rigid motion of each instance from the keyframe time to t, persistent ids
   (instances.py, tracking/tracker.py); then the keyframe policy and the metric scale
   (metric engine or fused depth, else ``fixed_scale``, else depth ratios, else odometry).

Cost: published maps are computed at full resolution, exactly; statistics (scale, depth,
focal, PnP samples, noise) and segmentation use the work grid (``stride``). See
docs/pipeline.md for choices, conventions and measured costs.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

import numpy as np

from pointmap_ros.engines.base import Engine
from pointmap_ros.errors import InputError, PoseError
from pointmap_ros.geometry.camera import intrinsics_from_camera_info
from pointmap_ros.geometry.pointmap import (
    confidence_mask, depth_ratio, median_depth, set_invalid_nan)
from pointmap_ros.geometry.transforms import se3_apply, se3_compose, se3_inverse
from pointmap_ros.pipeline.config import PipelineConfig
from pointmap_ros.pipeline.correspondence import (
    DenseFlow, FlowSource, PixelFlow, correspondence_cross_time, fuse_cross_time,
    resolve_cross_time_source)
from pointmap_ros.pipeline.depth_prior import fuse_depth_prior
from pointmap_ros.pipeline.ego_motion import (
    KeyframeMotion, MotionResult, estimate_motion_and_pose, keyframe_motion)
from pointmap_ros.pipeline.instances import (
    carried_track_ids, complete_instances, detect_objects, fit_instances, instance_labels,
    moving_object_fits, small_instance_labels, split_instances)
from pointmap_ros.pipeline.intrinsics import Intrinsics, frame_intrinsics
from pointmap_ros.pipeline.motion import ApertureMetric, aperture_metric
from pointmap_ros.pipeline.odometry_prior import (
    FUSED, OdometryPrior, parallax_points, relative_odometry, scale_sample,
    window_units_per_metre)
from pointmap_ros.pipeline.outputs import (
    FrameInput, PipelineOutput, scaled, scaled_object, scaled_pose)
from pointmap_ros.pipeline.pair import PairView, WorkGrid, window_scale
from pointmap_ros.pipeline.preprocess import make_frame, resize_crop
from pointmap_ros.pipeline.scene_flow import across_rays, keeps_flow_along_ray, published_flow
from pointmap_ros.tracking.tracker import ObjectTracker, TrackedObject
from pointmap_ros.tracking.window import (
    STAMP_TOLERANCE_S, SlidingWindow, WindowFrame, view_overlap)
from pointmap_ros.types import DynamicPointMaps, MapName

__all__ = ['DynamicReconPipeline']

logger = logging.getLogger(__name__)


class _CameraState:
    """Everything the pipeline remembers about one camera between frames."""

    def __init__(self, config: PipelineConfig, engine: Engine):
        self.window = SlidingWindow(config.window_size, tuple(config.pair_gaps), engine.forget)
        self.tracker = ObjectTracker(config.tracker)
        self.frame_count = 0
        self.camera_info_K: np.ndarray | None = None  # last CameraInfo K, model resolution
        self.last_stamp: float | None = None
        self.focal_fits: collections.deque = collections.deque(maxlen=32)  # plausible only
        self.depth_scales: collections.deque = collections.deque(maxlen=32)
        # (window units per metre, parallax px per unit) against odometry (scale_sample).
        self.odometry_scales: collections.deque = collections.deque(maxlen=32)
        # Are the window's units metres? None until the keyframe's first pair defines them
        # (a metric engine's or a depth-fused pair: metres; else that pair's units).
        self.metric_window: bool | None = None
        self.pose_failures = 0  # consecutive frames without a pose
        # Did the last frame's keyframe pair have maps as precise as the optical flow? (The
        # motion baseline pair is scheduled on that: flow_motion_baseline_s.)
        self.maps_precise = False
        self.skipped = 0  # frames superseded before inference (LatestFrameSlot), cumulative


@dataclass(frozen=True)
class _Pair:
    """One scheduled pair after inference and the correspondence stage."""

    role: str
    ref: WindowFrame
    maps: DynamicPointMaps
    pixel_flow: PixelFlow | None
    depth_fused: bool = False


@dataclass(frozen=True)
class _ImageMotion:
    """What the current frame's images alone say (no maps needed, so it is computed beside
    inference): the optical flow of each scheduled pair and the frame's aperture metric.
    All None with network cross-time maps."""

    aperture: ApertureMetric | None
    flows: list[PixelFlow | None]


@dataclass(frozen=True)
class _Inferred:
    """A frame's scheduled pairs after inference."""

    pairs: list[tuple[str, WindowFrame, DynamicPointMaps]]  # (role, reference, maps)
    image_motion: _ImageMotion
    keyframe: Future | None  # the keyframe stage, started beside the other pairs' inference
    inference_cpu: float  # thread CPU seconds of the inference calls


@dataclass(frozen=True)
class _KeyframeStage:
    """What the keyframe pair alone gives (``DynamicReconPipeline._keyframe_stage``)."""

    pair: _Pair
    view: PairView
    intrinsics: Intrinsics
    scene_depth: float
    prior: OdometryPrior | None
    motion: KeyframeMotion | None  # the pose and the pair's motion test (correspondences)
    timings: dict[str, float]  # ms of its correspondence, depth prior and geometry work


@dataclass(frozen=True)
class _Geometry:
    """The current frame's points under its final pose (window units, camera frame)."""

    points_cam: np.ndarray  # [H, W, 3], NaN where invalid
    valid: np.ndarray  # [H, W] confident and in front of the camera
    motion: np.ndarray  # [H, W] motion mask (pixels without a point: image-space test only)
    scene_depth: float


@dataclass(frozen=True)
class _Instances:
    """Instances of the motion mask and the published flow they imply."""

    # [H, W] int32, 0 = none: the instances 1..count, then the small instances (objects
    # only, instances.small_instance_labels) count + 1..object_count.
    labels: np.ndarray
    count: int
    object_count: int
    motion: np.ndarray  # [H, W] the final motion mask (grown instances included)
    flow: np.ndarray  # [H, W, 3] in the current camera, NaN where unknown
    flow_valid: np.ndarray
    flow_dt: float


class DynamicReconPipeline:
    """Sliding-window 4D reconstruction over an :class:`Engine` (no ROS imports).

    Args:
        engine: pair-inference backend (its ``input_shape`` wins over ``config.input_size``).
        config: validated here; may be replaced by another validated config between frames
            (the node does so for dynamic parameters).
        flow_source: the correspondence stage's optical flow (default :class:`DenseFlow`
            with ``config.flow_preset``); tests pass the generator's exact flow.

    Thread model: one worker calls :meth:`process`. A caller that drops frames while
    inference runs (the ROS node's worker keeps a keep-latest slot per camera) passes the
    number its slot superseded to :meth:`process` as ``skipped``. The pipeline's own helper
    thread works beside the engine's inference: the optical flow of a frame's pairs while
    the pairs infer, then the keyframe pair's stages (cross-time maps, view, intrinsics,
    pose, its motion test) while the other pairs infer. Neither changes state, and the
    caller's thread waits for both before anything does; :meth:`close` ends the thread.
    """

    def __init__(self, engine: Engine, config: PipelineConfig | None = None,
                 flow_source: FlowSource | None = None):
        self.engine = engine
        # A free-size engine runs at config.input_size: it must fit the patch grid.
        self.config = (config or PipelineConfig()).validate(
            None if engine.input_shape else _patch_size(engine))
        self.size = tuple(engine.input_shape or self.config.input_size)
        # Per-pixel statistics and segmentation run on a strided grid of ~work_pixels.
        self.grid = WorkGrid.for_size(self.size, self.config.work_pixels)
        self.stride = self.grid.stride
        self.flow_source = flow_source or DenseFlow(self.config.flow_preset,
                                                     warm_start=self.config.flow_warm_start)
        self._cameras: dict[str, _CameraState] = {}
        self._events: collections.Counter = collections.Counter()
        self._events_lock = threading.Lock()
        self._flow_thread: ThreadPoolExecutor | None = None  # started by the first flow

    def event_counts(self) -> dict[str, int]:
        """Totals of the fallbacks taken, by reason, over all cameras (thread-safe copy).

        ``'focal_rejected'``: an implausible focal fit was replaced by the running median or
        the prior; ``'pose_reset'``: the world frame was re-anchored after lost tracking.
        Drops are not counted here: they raise a :class:`PointmapError` the caller counts.
        """
        with self._events_lock:
            return dict(self._events)

    def _count(self, event: str) -> None:
        with self._events_lock:
            self._events[event] += 1

    def close(self) -> None:
        """Stop the flow thread (it also ends when the pipeline is garbage-collected).
        The pipeline stays usable: a later frame starts a new one."""
        if self._flow_thread is not None:
            self._flow_thread.shutdown(wait=True, cancel_futures=True)
            self._flow_thread = None

    def reset(self) -> None:
        """Forget all cameras' windows, keyframes and tracks."""
        self._cameras.clear()
        self.engine.clear_cache()

    @property
    def cross_time_source(self) -> str:
        """Where the cross-time maps come from now: ``'network'``, ``'correspondence'`` or
        ``'fused'`` (the config's choice, ``'auto'`` resolved by the engine)."""
        return resolve_cross_time_source(self.config.cross_time_source, self.engine)[0]

    # -- main entry ---------------------------------------------------------------------
    def process(self, inp: FrameInput, skipped: int = 0) -> PipelineOutput | None:
        """Process one frame; None while no output is possible yet (first frame).

        Returns None also for the frame that re-anchors the world frame after
        ``pose_reset_after`` consecutive pose failures (it becomes the keyframe).

        Args:
            inp: the frame.
            skipped: frames of ``inp.camera_id`` superseded before inference since the
                previous one handed over (``LatestFrameSlot.take``); added to the camera's
                cumulative ``PipelineOutput.skipped_frames`` even when ``inp`` is dropped.

        Raises:
            InputError: bad image/depth, non-finite or non-increasing stamp.
            CalibrationError: unusable K.
            PoseError: no camera pose for this frame (tracking lost; not bad input).
        """
        started, cpu_started = time.perf_counter(), time.thread_time()
        camera = self._cameras.get(inp.camera_id)
        if camera is None:
            camera = self._cameras[inp.camera_id] = _CameraState(self.config, self.engine)
        camera.skipped += skipped
        _check_stamp(inp, camera.last_stamp)
        frame = self._window_frame(inp, camera)
        timings = {'preprocess': _ms(started)}
        out = None
        if camera.window.keyframe is None:
            frame.T_world_cam = np.eye(4)
            camera.window.set_keyframe(frame)
        else:
            inferred = self._infer_pairs(camera, frame, timings)
            try:
                out = self._geometry(camera, frame, inferred, timings)
            except PoseError as exc:
                self._pose_lost(camera, frame, exc)  # raises, unless frame re-anchors
            else:
                camera.pose_failures = 0
                timings['pipeline'] = sum(v for k, v in timings.items()
                                          if k not in ('inference', 'beside_inference'))
                timings['pipeline_cpu'] = (time.thread_time() - cpu_started
                                           - inferred.inference_cpu) * 1e3
                timings['total'] = _ms(started)
        # Only a frame processed without error enters the window and advances the stream.
        camera.window.push(frame)
        camera.frame_count += 1
        camera.last_stamp = inp.stamp
        return out

    def _window_frame(self, inp: FrameInput, camera: _CameraState) -> WindowFrame:
        """``inp`` at model resolution as a window frame (K scaled with the crop)."""
        K_raw = None
        if inp.K is not None:
            K_raw = intrinsics_from_camera_info(inp.K, inp.image.shape[1], inp.image.shape[0])
        image, K, depth = resize_crop(inp.image, self.size, K_raw, inp.depth)
        if K is not None:
            camera.camera_info_K = K
        return WindowFrame(make_frame(image, inp.stamp, inp.camera_id), camera.frame_count,
                           K, depth, flow_image=self._flow_image(inp.image, image),
                           T_odom_cam=_checked_odometry(inp.T_odom_cam))

    def _flow_image(self, raw: np.ndarray, model_image: np.ndarray) -> np.ndarray | None:
        """Grey input of the correspondence stage for one frame (None when it is off): the
        model crop at ``flow_width`` pixels across (at most the camera's own width), which
        bounds the cost of full-resolution patch matching; the flow is resampled to the
        model resolution afterwards."""
        if self.cross_time_source == 'network':
            return None
        height, width = self.size
        flow_width = min(self.config.flow_width, raw.shape[1])
        if flow_width == width:
            return DenseFlow.grey(model_image)
        flow_height = int(round(height * flow_width / width))
        return DenseFlow.grey(resize_crop(raw, (flow_height, flow_width))[0])

    def _infer_pairs(self, camera: _CameraState, frame: WindowFrame,
                     timings: dict[str, float]) -> _Inferred:
        """Inference of the frame's scheduled pairs, the keyframe first; the image work
        started beside it (optical flow, aperture) waited for; the keyframe stage started
        beside the other pairs' inference where there are any (timings recorded in
        ``timings``)."""
        # Correspondences on precise maps judge motion by displacement: a baseline in time
        # after keyframe switches. (Network cross-time maps relate the two times directly;
        # on a network's noisy maps the noise floor, not the baseline, limits the tests.)
        baseline_s = (self.config.flow_motion_baseline_s
                      if self.cross_time_source != 'network' and camera.maps_precise
                      else 0.0)
        schedule = list(camera.window.schedule(frame.stamp, baseline_s))
        pending = self._start_image_motion(schedule, frame)
        started, cpu_started = time.perf_counter(), time.thread_time()
        inferred, keyframe = [], None
        try:
            for role, ref in schedule:
                inferred.append((role, ref, self.engine.infer(ref.frame, frame.frame)))
                if pending is not None and keyframe is None and len(schedule) > 1:
                    # The keyframe pair alone gives the pose: work it out while the other
                    # pairs infer (queued behind the image work on the same thread).
                    keyframe = self._flow_thread.submit(lambda: self._keyframe_stage(
                        camera, frame, inferred[0], pending.result()))
        except BaseException:
            for work in (pending, keyframe):
                if work is not None and not work.cancel():
                    wait([work])  # it reads the camera's state: not past this frame
            raise
        timings['inference'] = _ms(started)
        inference_cpu = time.thread_time() - cpu_started
        started = time.perf_counter()
        # What is left of the image work started beside inference is waited for here.
        image_motion = self._image_motion(schedule, frame) if pending is None else pending.result()
        timings['correspondence'] = _ms(started)
        timings['depth_prior'] = 0.0
        return _Inferred(inferred, image_motion, keyframe, inference_cpu)

    def _pair(self, camera: _CameraState, frame: WindowFrame,
              inferred: tuple[str, WindowFrame, DynamicPointMaps], flow: PixelFlow | None,
              timings: dict[str, float]) -> _Pair:
        """One inferred pair after the depth prior and the correspondence stage (their
        milliseconds added to ``timings``)."""
        role, ref, maps = inferred
        started = time.perf_counter()
        fused = self._depth_prior(camera, ref, frame, maps, flow)
        timings['depth_prior'] += _ms(started)
        started = time.perf_counter()
        maps = maps if fused is None else fused
        pair = _Pair(role, ref, self._cross_time(role, maps, flow), flow,
                     depth_fused=fused is not None)
        timings['correspondence'] += _ms(started)
        return pair

    def _start_image_motion(self, schedule: list[tuple[str, WindowFrame]],
                            frame: WindowFrame) -> Future | None:
        """:meth:`_image_motion`, started on the flow thread so that it runs while the
        engine infers: it needs only the images (at 96x128 the optical flow hid 11 of its
        ~12 ms per frame behind the shipped model's inference on two cores). None where it
        runs after inference instead (network cross-time maps, or a flow source not marked
        ``concurrent_with_inference``)."""
        if (self.cross_time_source == 'network'
                or not getattr(self.flow_source, 'concurrent_with_inference', False)):
            return None
        if self._flow_thread is None:
            self._flow_thread = ThreadPoolExecutor(1, thread_name_prefix='pointmap_flow')
        return self._flow_thread.submit(self._image_motion, schedule, frame)

    def _image_motion(self, schedule: list[tuple[str, WindowFrame]],
                      frame: WindowFrame) -> _ImageMotion:
        """The correspondence stage's image-only half for the frame's scheduled pairs."""
        if self.cross_time_source == 'network':
            return _ImageMotion(None, [None] * len(schedule))
        # Nearest reference first: a flow source may start a longer pair's flow from the
        # shorter ones (DenseFlow's warm start chains the previous frame's pairs).
        flows = [None] * len(schedule)
        for index in sorted(range(len(schedule)), key=lambda index: -schedule[index][1].stamp):
            flows[index] = self.flow_source.pair_flow(schedule[index][1], frame, self.size)
        return _ImageMotion(self._aperture(frame), flows)

    def _depth_prior(self, camera: _CameraState, ref: WindowFrame, frame: WindowFrame,
                     maps: DynamicPointMaps, flow: PixelFlow | None
                     ) -> DynamicPointMaps | None:
        """The pair's maps with both frames' depth fused in (metric; the relative pose
        from the depth images and ``flow`` when there is one), or None when the prior is
        off, a frame has no depth, K is not known yet (no CameraInfo and no estimate before
        the first pose) or the depth is too sparse (the maps stay as they are)."""
        config = self.config
        K = frame.K if frame.K is not None else camera.window.keyframe.K
        if not config.depth_prior or ref.depth is None or frame.depth is None or K is None:
            return None
        gate = (config.conf_threshold, config.conf_keep_quantile)
        fusion = fuse_depth_prior(
            maps, ref.depth, frame.depth, K, confidence_mask(maps.conf_i_ti, *gate),
            confidence_mask(maps.conf_j_tj, *gate), config.depth_min_m, config.depth_max_m,
            config.depth_edge_rel, config.conf_threshold, flow, self.stride, config.seed)
        return None if fusion is None else fusion.maps

    def _cross_time(self, role: str, maps: DynamicPointMaps, flow: PixelFlow | None
                    ) -> DynamicPointMaps:
        """The pair's maps with cross-time maps from the configured source (``flow`` is
        None exactly with network cross-time maps). Image i's pixels at t_j are only read
        for the keyframe's tracks (``keyframe_tracks``): other pairs skip them."""
        if flow is None:
            return maps
        forward = role == 'keyframe' and self.config.keyframe_tracks
        corresponded = correspondence_cross_time(maps, flow, forward=forward)
        if self.cross_time_source == 'fused':
            corresponded = fuse_cross_time(maps, corresponded, forward=forward)
        return corresponded

    # -- stages -------------------------------------------------------------------------
    def _geometry(self, camera: _CameraState, frame: WindowFrame, inferred: _Inferred,
                  timings: dict[str, float]) -> PipelineOutput:
        """Stages 1 (after inference) to 7 of the module docstring for a frame with a
        keyframe."""
        if inferred.keyframe is None:
            keyframe = self._keyframe_stage(camera, frame, inferred.pairs[0],
                                            inferred.image_motion)
            for stage, ms in keyframe.timings.items():
                timings[stage] = timings.get(stage, 0.0) + ms
        else:  # computed beside inference: what is left of it is the wait
            started = time.perf_counter()
            keyframe = inferred.keyframe.result()
            timings['beside_inference'] = sum(keyframe.timings.values())
            timings['geometry'] = _ms(started)
        pairs = [keyframe.pair] + [
            self._pair(camera, frame, pair, flow, timings)
            for pair, flow in zip(inferred.pairs[1:], inferred.image_motion.flows[1:])]
        started = time.perf_counter()
        views = [keyframe.view] + [self._view(camera, frame, pair) for pair in pairs[1:]]
        keyframe_pair = views[0]
        # The previous frame and its pair with this one: which pixels continue its tracks
        # (the motion mask keeps their blobs whatever their size; instances may be smaller).
        previous = next(((view.ref, view) for view in views
                         if view.ref is camera.window.latest), None)
        published = camera.tracker.published_ids

        def continuing(where: np.ndarray) -> np.ndarray | None:
            carried = carried_track_ids(previous, published, where)
            return None if carried is None else carried > 0

        motion = estimate_motion_and_pose(views, keyframe.intrinsics.K, keyframe.scene_depth,
                                          inferred.image_motion.aperture, self.config,
                                          self.grid,
                                          fused=self.cross_time_source == 'fused',
                                          prior=keyframe.prior, keyframe=keyframe.motion,
                                          image=frame.frame.image, continuing=continuing)
        # The frame has a pose: from here on nothing raises, so the state may change.
        camera.maps_precise = bool(motion.maps_precise and motion.maps_precise[0])
        self._measure_odometry_scale(camera, keyframe_pair, motion, keyframe.prior,
                                     keyframe.intrinsics.K)
        geometry = self._commit_pose(camera, frame, keyframe_pair, keyframe.intrinsics, motion,
                                     keyframe.scene_depth)
        timings['geometry'] += _ms(started)
        started = time.perf_counter()
        instances = self._instances(views, motion, frame, keyframe.intrinsics.K, geometry,
                                    inferred.image_motion.aperture, previous, published)
        timings['segmentation'] = _ms(started)
        return self._objects_and_output(camera, frame, views, previous, motion,
                                        keyframe.intrinsics, geometry, instances, timings,
                                        pairs[0].depth_fused)

    def _keyframe_stage(self, camera: _CameraState, frame: WindowFrame,
                        inferred: tuple[str, WindowFrame, DynamicPointMaps],
                        image_motion: _ImageMotion) -> _KeyframeStage:
        """Stages 1-4 for the keyframe pair alone: its cross-time maps and view, the
        frame's intrinsics and scene depth, and with correspondences the pose and the
        pair's motion test (:func:`keyframe_motion`). It changes no state, so it may run on
        the helper thread while the engine infers the other pairs (queued behind the image
        work that gives ``image_motion``).

        Raises:
            PoseError: no valid points, or no pose (:func:`keyframe_motion`).
        """
        timings = {'correspondence': 0.0, 'depth_prior': 0.0}
        pair = self._pair(camera, frame, inferred, image_motion.flows[0], timings)
        started = time.perf_counter()
        view = self._view(camera, frame, pair)
        intrinsics = frame_intrinsics(camera.camera_info_K, view, camera.focal_fits,
                                      self.config, self.grid)
        if intrinsics.rejected:
            self._count('focal_rejected')
        scene_depth = median_depth(view.strided(MapName.I_TI, self.stride),
                                   view.gate(MapName.I_TI, self.stride))
        if not math.isfinite(scene_depth):
            raise PoseError('keyframe pair has no valid points', 'no_points')
        prior = self._odometry_prior(camera, view, frame)
        motion = None
        if view.pixel_flow is not None:  # (with network maps the pose needs every pair)
            motion = keyframe_motion(view, intrinsics.K, scene_depth, image_motion.aperture,
                                     self.config, self.grid, prior)
        timings['geometry'] = _ms(started)
        return _KeyframeStage(pair, view, intrinsics, scene_depth, prior, motion, timings)

    def _aperture(self, frame: WindowFrame) -> ApertureMetric:
        """Where the frame's optical flow is measured at all, and in which directions:
        judged on the image the flow ran on (its pixels are the flow's precision), at model
        resolution."""
        grey = frame.flow_image
        if grey is None:
            grey = DenseFlow.grey(frame.frame.image)
        return aperture_metric(grey, self.config.flow_min_gradient).resized(self.size)

    def _odometry_prior(self, camera: _CameraState, keyframe_pair: PairView,
                        frame: WindowFrame) -> OdometryPrior | None:
        """The odometry's motion since the keyframe with the window's scale, or None
        (prior off, or the frame or its keyframe without odometry)."""
        if not self.config.odometry_prior:
            return None
        T_kf_cam_m = relative_odometry(camera.window.keyframe.T_odom_cam, frame.T_odom_cam)
        if T_kf_cam_m is None:
            return None
        if camera.metric_window or (camera.metric_window is None and keyframe_pair.maps.metric):
            window_per_metre = 1.0
        elif self.config.fixed_scale is not None:
            window_per_metre = 1.0 / self.config.fixed_scale
        else:
            window_per_metre = window_units_per_metre(camera.odometry_scales)
        return OdometryPrior(T_kf_cam_m, window_per_metre)

    def _measure_odometry_scale(self, camera: _CameraState, keyframe_pair: PairView,
                                motion: MotionResult, prior: OdometryPrior | None,
                                K: np.ndarray) -> None:
        """Add the keyframe pair's sample of window units per metre to the camera's
        (odometry_prior.scale_sample) while the window's metres are unknown. Only odometry
        the images agreed with measures it: a slipped wheel's jump would otherwise be the
        largest-parallax sample of the window."""
        if prior is None or motion.odometry != FUSED or not self._scale_unknown(camera):
            return
        static = keyframe_pair.valid_j & ~motion.mask
        sample = scale_sample(*parallax_points(keyframe_pair, static, K, self.stride), K,
                              prior.T_kf_cam_m, self.config.odometry_min_parallax_px,
                              prior.window_per_metre)
        if sample is not None:
            camera.odometry_scales.append(sample)

    def _scale_unknown(self, camera: _CameraState) -> bool:
        """Whether the window's metres are still to be measured (up-to-scale units, no
        fixed scale)."""
        return not camera.metric_window and self.config.fixed_scale is None

    def _view(self, camera: _CameraState, frame: WindowFrame, pair: _Pair) -> PairView:
        """The pair's gated view, scale-aligned to the window: metric maps in a metric
        window (or defining the window's units) as they are, others by their own scale (a
        pair without depth in a depth-fused window, or any pair of an up-to-scale
        engine)."""
        gate = (self.config.conf_threshold, self.config.conf_keep_quantile)
        scale = (1.0 if pair.maps.metric and camera.metric_window is not False
                 else window_scale(pair.ref, pair.maps, self.stride, *gate))
        return PairView(pair.role, pair.ref, frame.stamp, pair.maps, scale, *gate,
                        pixel_flow=pair.pixel_flow, measured_depth=pair.depth_fused)

    def _commit_pose(self, camera: _CameraState, frame: WindowFrame, keyframe_pair: PairView,
                     intrinsics: Intrinsics, motion: MotionResult,
                     scene_depth: float) -> _Geometry:
        """Record the frame's pose, K and points in the window (the state change of a frame
        with a pose) and return its geometry under that pose."""
        keyframe = camera.window.keyframe
        height, width = self.size
        if intrinsics.focal_fit is not None:
            camera.focal_fits.append(intrinsics.focal_fit)
        if keyframe.points_cam is None:  # a keyframe's first pair defines the units
            if camera.metric_window is None:
                camera.metric_window = keyframe_pair.maps.metric
            keyframe.points_cam = set_invalid_nan(keyframe_pair.i_ti.copy(),
                                                  keyframe_pair.valid_i)
            keyframe.track_ids = np.zeros((height, width), np.int32)
        frame.T_world_cam = se3_compose(keyframe.T_world_cam, motion.T_kf_cam)
        frame.K = intrinsics.K
        if keyframe.K is None:  # first keyframe: same camera, same K
            keyframe.K = intrinsics.K
        # Valid = confident and in front of the camera under the PnP pose (with poor maps
        # the pose can put confident points behind it; they are not observations).
        points_cam = se3_apply(se3_inverse(motion.T_kf_cam), keyframe_pair.j_tj)
        valid = keyframe_pair.valid_j & (points_cam[..., 2] > 0)
        points_cam = set_invalid_nan(points_cam, valid)
        frame.points_cam = points_cam
        # Confident points behind the camera are not observations; pixels without a
        # confident point keep the image-space decision (correspondences only).
        frame.motion_mask = motion.mask & (valid | ~keyframe_pair.valid_j)
        return _Geometry(points_cam, valid, frame.motion_mask, scene_depth)

    def _instances(self, views: list[PairView], motion: MotionResult, frame: WindowFrame,
                   K: np.ndarray, geometry: _Geometry, aperture: ApertureMetric | None,
                   previous: tuple[WindowFrame, PairView] | None,
                   published_tracks: frozenset[int]) -> _Instances:
        """Instances of the motion mask on the published-flow pair (the shortest gap),
        completed by their rigid fits with correspondences, and the published flow; then the
        small instances, which only the object stage sees. ``previous``: the previous frame
        and its pair with this one, whose ``published_tracks`` small instances may
        continue."""
        config = self.config
        flow_index = min(range(len(views)), key=lambda index: views[index].dt)
        flow_pair, flow_motion = views[flow_index], motion.pair_motions[flow_index]
        # Objects are made of points: instances only from moving pixels with one.
        moving = geometry.motion & geometry.valid
        carried = carried_track_ids(previous, published_tracks, moving)
        labels, count, small = instance_labels(config, self.stride, moving,
                                               geometry.points_cam, flow_motion.flow,
                                               flow_motion.threshold, carried)
        fits, final_motion, along_ray = {}, geometry.motion, True
        if flow_pair.pixel_flow is not None:
            maps_trusted = motion.maps_trusted[flow_index]
            along_ray = keeps_flow_along_ray(config.flow_along_ray, flow_pair.measured_depth,
                                             maps_trusted)
            T_ref_cam = se3_compose(se3_inverse(flow_pair.ref.T_world_cam), frame.T_world_cam)
            # The split assigns pixels over the published-flow pair (first) and judges its
            # bodies over every pair of the frame.
            split_pairs = [
                (view, pair_motion.noise,
                 se3_compose(se3_inverse(view.ref.T_world_cam), frame.T_world_cam)[:3, :3])
                for view, pair_motion in zip(views, motion.pair_motions)]
            split_pairs.insert(0, split_pairs.pop(flow_index))
            labels, count, whole_fits = split_instances(config, labels, count, split_pairs,
                                                        geometry.scene_depth, carried, aperture)
            fits = fit_instances(config, labels, count, flow_pair, geometry.scene_depth,
                                 flow_motion.noise, aperture, T_ref_cam[:3, :3], whole_fits)
            # Only instances that are moving objects grow and publish their fitted motion;
            # the others keep their mask and have no flow, like moving pixels outside
            # every instance.
            fits = moving_object_fits(labels, fits, flow_pair, maps_trusted,
                                      flow_motion.threshold, carried, along_ray)
            labels = complete_instances(labels, fits, flow_pair, T_ref_cam, K,
                                        geometry.points_cam, aperture, config, self.size,
                                        maps_trusted)
            final_motion = geometry.motion | (geometry.valid & (labels > 0))
        R_cam_ref = se3_compose(se3_inverse(frame.T_world_cam), flow_pair.ref.T_world_cam)[:3, :3]
        flow, flow_valid = published_flow(
            flow_pair, R_cam_ref, flow_pair.dt if config.flow_per_second else 1.0,
            geometry.valid, final_motion, labels, fits)
        if not along_ray:
            flow = across_rays(flow, geometry.points_cam, final_motion)
        small, small_count = small_instance_labels(small, self.stride, moving, labels)
        if small_count:
            labels = np.where(small > 0, small + count, labels)
        return _Instances(labels, count, count + small_count, final_motion, flow, flow_valid,
                          float(flow_pair.dt))

    def _objects_and_output(self, camera: _CameraState, frame: WindowFrame,
                            views: list[PairView],
                            previous: tuple[WindowFrame, PairView] | None,
                            motion: MotionResult, intrinsics: Intrinsics, geometry: _Geometry,
                            instances: _Instances, timings: dict[str, float],
                            depth_fused: bool) -> PipelineOutput:
        """Stage 7: object detections and tracks, the keyframe policy, the output."""
        keyframe_pair, keyframe = views[0], camera.window.keyframe
        started = time.perf_counter()
        detections, detection_labels = detect_objects(
            self.config, instances.labels, instances.object_count, keyframe_pair, keyframe,
            previous, geometry.scene_depth, motion.pair_motions[0].noise,
            motion.pair_motions[0].threshold, camera.tracker.published_ids,
            small_from=instances.count + 1)
        timings['objects'] = _ms(started)
        started = time.perf_counter()
        track_ids, objects = camera.tracker.update(detections, frame.stamp,
                                                   geometry.scene_depth)
        frame.track_ids, instance_ids = _track_id_maps(instances.labels, instances.object_count,
                                                       detection_labels, track_ids, objects)
        keyframe_index = keyframe.index
        if self._keyframe_due(keyframe_pair, keyframe, frame, geometry.valid):
            camera.window.set_keyframe(frame)
            camera.tracker.reanchor()
        timings['tracking'] = _ms(started)
        scale, is_metric = self._scale(camera, frame, geometry)
        return PipelineOutput(
            stamp=frame.stamp, camera_id=frame.frame.camera_id, frame_index=frame.index,
            image=frame.frame.image, K=intrinsics.K, intrinsics_estimated=intrinsics.estimated,
            points_cam=scaled(geometry.points_cam, scale),
            points_world=scaled(set_invalid_nan(se3_apply(keyframe.T_world_cam,
                                                          keyframe_pair.j_tj), geometry.valid),
                                scale),
            confidence=keyframe_pair.maps.conf_j_tj.astype(np.float32), valid=geometry.valid,
            flow=scaled(instances.flow, scale), flow_valid=instances.flow_valid,
            flow_dt=instances.flow_dt, motion_mask=instances.motion,
            instance_ids=instance_ids, T_world_cam=scaled_pose(frame.T_world_cam, scale),
            keyframe_index=keyframe_index, objects=[scaled_object(o, scale) for o in objects],
            metric_scale=is_metric, scale=scale, timings_ms=timings,
            skipped_frames=camera.skipped, odometry=motion.odometry, depth_fused=depth_fused,
            keyframe_points_world=self._keyframe_points_world(keyframe_pair, keyframe, scale))

    def _keyframe_points_world(self, keyframe_pair: PairView, keyframe: WindowFrame,
                               scale: float) -> np.ndarray | None:
        """``keyframe_points_world`` when configured: the keyframe's pixels at time t."""
        if not self.config.keyframe_tracks:
            return None
        points = set_invalid_nan(se3_apply(keyframe.T_world_cam, keyframe_pair.i_tj),
                                 keyframe_pair.valid_i_tj)
        return scaled(points, scale)

    def _keyframe_due(self, keyframe_pair: PairView, keyframe: WindowFrame,
                      frame: WindowFrame, valid: np.ndarray) -> bool:
        """Keyframe policy: the frame becomes the keyframe when the view drifted away (too
        little overlap or confidence) or the keyframe is too old (``keyframe_max_age``
        frames; with correspondences ``flow_keyframe_max_age`` frames and
        ``flow_keyframe_max_age_s`` seconds), after its poses are final."""
        config = self.config
        stride = 2 * self.stride  # a statistic: a quarter of the work grid is plenty
        overlap = view_overlap(keyframe_pair.j_tj[::stride, ::stride], keyframe.K,
                               valid[::stride, ::stride], self.size)
        confidence = keyframe_pair.maps.conf_j_tj[::stride, ::stride][valid[::stride, ::stride]]
        mean_confidence = float(np.mean(confidence)) if confidence.size else 0.0
        age = frame.index - keyframe.index
        age_s = frame.stamp - keyframe.stamp + STAMP_TOLERANCE_S
        # With correspondences the keyframe pair must span both enough frames and enough
        # time (PipelineConfig.flow_keyframe_max_age's note).
        frames_limit, seconds_limit = config.flow_keyframe_max_age, config.flow_keyframe_max_age_s
        flow_old = (keyframe_pair.pixel_flow is not None
                    and (frames_limit > 0 or seconds_limit > 0)
                    and age >= frames_limit and age_s >= seconds_limit)
        due = (overlap < config.keyframe_min_overlap
               or mean_confidence < config.keyframe_min_confidence
               or 0 < config.keyframe_max_age <= age
               or flow_old)
        if due:
            logger.debug('keyframe %d -> %d (overlap %.2f, conf %.2f)', keyframe.index,
                         frame.index, overlap, mean_confidence)
        return due

    def _scale(self, camera: _CameraState, frame: WindowFrame,
               geometry: _Geometry) -> tuple[float, bool]:
        """(metres per window unit, is metric): 1 when the window's units are metres (a
        metric engine, or depth fused into the pair that defined them); else the fixed
        scale; else the median depth ratio over the camera's recent depth frames."""
        if camera.metric_window:
            return 1.0, True
        if self.config.fixed_scale is not None:
            return float(self.config.fixed_scale), True
        if frame.depth is not None:  # a depth image without enough valid pixels is ignored
            stride = self.stride  # a median: the work grid is plenty
            ratio = depth_ratio(frame.depth[::stride, ::stride],
                                geometry.points_cam[::stride, ::stride, 2],
                                geometry.valid[::stride, ::stride])
            if ratio is not None:
                camera.depth_scales.append(ratio)
        if camera.depth_scales:
            return float(np.median(camera.depth_scales)), True
        if camera.odometry_scales:  # window units per metre -> metres per window unit
            return 1.0 / window_units_per_metre(camera.odometry_scales), True
        return 1.0, False

    def _pose_lost(self, camera: _CameraState, frame: WindowFrame, exc: PoseError) -> None:
        """Count a frame without pose; at ``pose_reset_after`` in a row, make ``frame`` the
        keyframe at the last good pose and restart the window, else raise.

        Re-anchoring keeps the world frame (the new keyframe's pose is the last good one, so
        the trajectory holds still over the lost frames rather than jumping) and drops the
        window: its frames belong to the lost chain. The new keyframe has no map of its own
        yet, so, as at start, its first pair defines the units of an up-to-scale engine.
        """
        camera.pose_failures += 1
        failures = camera.pose_failures
        if failures < self.config.pose_reset_after:
            raise PoseError(f'{exc} (no pose for {failures} consecutive frame(s); '
                            f're-anchoring at {self.config.pose_reset_after})',
                            exc.reason) from exc
        last = camera.window.latest or camera.window.keyframe
        frame.T_world_cam = last.T_world_cam.copy()
        if frame.K is None:  # no CameraInfo: keep the keyframe's (possibly estimated) K
            frame.K = camera.window.keyframe.K
        camera.window.restart(frame)
        camera.metric_window = None  # as at start, the new keyframe's first pair decides
        camera.odometry_scales.clear()  # ... and its units are new
        camera.tracker.reanchor()
        camera.pose_failures = 0
        self._count('pose_reset')
        logger.warning('%s: no pose for %d frames (%s); re-anchored on frame %d',
                       frame.frame.camera_id, failures, exc, frame.index)


def _check_stamp(inp: FrameInput, last_stamp: float | None) -> None:
    """Raise :class:`InputError` for a non-finite stamp or one not after the camera's last."""
    if not math.isfinite(inp.stamp):
        raise InputError(f'stamp must be finite, got {inp.stamp}', 'stamp')
    if last_stamp is not None and inp.stamp <= last_stamp:
        raise InputError(f'stamp {inp.stamp:.9f} is not after the previous '
                         f'{last_stamp:.9f} of {inp.camera_id!r}', 'stamp_order',
                         actual=inp.stamp, expected=f'> {last_stamp}')


def _checked_odometry(T_odom_cam: np.ndarray | None) -> np.ndarray | None:
    """``FrameInput.T_odom_cam`` as float64 ``[4, 4]``; :class:`InputError` unless it is a
    finite rigid transform (None passes)."""
    if T_odom_cam is None:
        return None
    pose = np.asarray(T_odom_cam, np.float64)
    if pose.shape != (4, 4) or not np.all(np.isfinite(pose)):
        raise InputError(f'T_odom_cam must be a finite [4, 4] pose, got shape {pose.shape}',
                         'odometry')
    rotation = pose[:3, :3]
    if (not np.allclose(rotation.T @ rotation, np.eye(3), atol=1e-4)
            or not np.allclose(pose[3], [0, 0, 0, 1]) or np.linalg.det(rotation) <= 0):
        raise InputError('T_odom_cam is not a rigid transform (rotation not orthonormal '
                         'or last row not [0, 0, 0, 1])', 'odometry')
    return pose


def _track_id_maps(labels: np.ndarray, count: int, detection_labels: list[int],
                   track_ids: list[int], objects: list[TrackedObject]
                   ) -> tuple[np.ndarray, np.ndarray]:
    """``[H, W]`` int32 (track id of every instance pixel, the window's record; the same
    for published tracks only, the output's ``instance_ids``)."""
    all_tracks = np.zeros(count + 1, np.int32)
    published_tracks = np.zeros(count + 1, np.int32)
    published = {o.track_id for o in objects}
    for label, track_id in zip(detection_labels, track_ids):
        all_tracks[label] = track_id
        published_tracks[label] = track_id if track_id in published else 0
    window_ids = np.take(all_tracks, labels)  # np.take: several times faster than lut[labels]
    # Usually every track is published: then a copy is ~10x cheaper than a second take.
    return window_ids, (window_ids.copy() if np.array_equal(all_tracks, published_tracks)
                        else np.take(published_tracks, labels))


def _patch_size(engine: Engine) -> int | None:
    """The engine's patch size when it exposes one (torch engine: its model config)."""
    size = getattr(engine, 'patch_size', None)
    if size is None:
        config = getattr(getattr(engine, 'model', None), 'config', None)
        size = getattr(config, 'patch_size', None)
    return size


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1e3
