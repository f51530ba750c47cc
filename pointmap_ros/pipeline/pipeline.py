"""DynamicReconPipeline: timestamped frames in, everything the ROS node publishes out.

Per new frame t of a camera (all pairs have the older frame as i, so maps are in its frame):

1. Pairs: ``(keyframe, t)`` always, ``(t - g, t)`` for the configured gaps (window.py).
2. Geometry: confidence gating; per-pair scale alignment to the window (non-metric engines);
   K from CameraInfo or a Weiszfeld focal fit on the keyframe's own map; scene flow
   ``P_t(t) - P_t(t_ref)`` and a motion mask per pair; ``T_kf_cam`` by PnP of the keyframe
   pair's ``P_t(t)`` on static pixels (geometry/pose.py explains why PnP).
3. World frame = the first keyframe's optical frame. ``T_world_cam = T_world_kf @ T_kf_cam``
   comes straight from the keyframe pair (St4RTrack-style, no chaining of small steps inside a
   keyframe); when the keyframe switches, the new keyframe's pose is already known. When PnP
   fails (:class:`PoseError`) for ``pose_reset_after`` consecutive frames, the failing frame
   becomes the keyframe at the last good pose and the window restarts (re-anchoring).
4. Objects: instances of the motion mask, rigid motion of each from the keyframe time to t,
   persistent ids (objects.py, tracking/tracker.py).

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

import numpy as np

from pointmap_ros.data.preprocess import make_frame, resize_crop
from pointmap_ros.engines.base import Engine
from pointmap_ros.errors import InputError, PoseError
from pointmap_ros.geometry.camera import estimate_focal, intrinsics_from_camera_info
from pointmap_ros.geometry.pointmap import depth_ratio, median_depth, set_invalid_nan
from pointmap_ros.geometry.pose import relative_pose_pnp
from pointmap_ros.geometry.transforms import se3_apply, se3_compose, se3_inverse
from pointmap_ros.pipeline.config import PipelineConfig
from pointmap_ros.pipeline.correspondence import (
    DenseFlow, FlowSource, PixelFlow, correspondence_cross_time, fuse_cross_time,
    resolve_cross_time_source)
from pointmap_ros.pipeline.motion import (
    ApertureMetric, aperture_metric, camera_flow_model, camera_still, depth_residual,
    epipolar_residual, flow_motion, pose_residual, trim_occlusion_halo)
from pointmap_ros.pipeline.objects import (
    detect_objects, fit_instances, grow_instances, instance_labels, rigid_flow)
from pointmap_ros.pipeline.outputs import (
    FrameInput, PipelineOutput, scaled, scaled_object, scaled_pose)
from pointmap_ros.pipeline.pair import PairView, window_scale
from pointmap_ros.tracking.segmentation import pair_motion, remove_small_regions
from pointmap_ros.tracking.tracker import ObjectTracker
from pointmap_ros.tracking.window import LatestFrameSlot, SlidingWindow, WindowFrame, view_overlap
from pointmap_ros.types import DynamicPointMaps

__all__ = ['DynamicReconPipeline']

logger = logging.getLogger(__name__)


class _CameraState:
    def __init__(self, config: PipelineConfig, engine: Engine):
        self.window = SlidingWindow(config.window_size, tuple(config.pair_gaps), engine.forget)
        self.tracker = ObjectTracker(config.tracker)
        self.count = 0
        self.K_info: np.ndarray | None = None  # last CameraInfo K at model resolution
        self.last_stamp: float | None = None
        self.focals: collections.deque = collections.deque(maxlen=32)  # plausible fits only
        self.scales: collections.deque = collections.deque(maxlen=32)
        self.pose_failures = 0  # consecutive frames without a pose
        self.skipped = 0  # frames superseded before inference (LatestFrameSlot), cumulative


class DynamicReconPipeline:
    """Sliding-window 4D reconstruction over an :class:`Engine` (no ROS imports).

    Args:
        engine: pair-inference backend (its ``input_shape`` wins over ``config.input_size``).
        config: validated here; may be replaced by another validated config between frames
            (the node does so for dynamic parameters).
        flow_source: the correspondence stage's optical flow (default :class:`DenseFlow`
            with ``config.flow_preset``); tests pass the generator's exact flow.

    Thread model: one worker calls :meth:`process` (or :meth:`process_pending`); camera
    callbacks may call :meth:`submit` concurrently. A caller with its own scheduling (the ROS
    node's worker) keeps a :class:`LatestFrameSlot` per camera itself and passes the count
    its ``take()`` returned to :meth:`process` as ``skipped``.
    """

    def __init__(self, engine: Engine, config: PipelineConfig | None = None,
                 flow_source: FlowSource | None = None):
        self.engine = engine
        # A free-size engine runs at config.input_size: it must fit the patch grid.
        self.config = (config or PipelineConfig()).validate(
            None if engine.input_shape else _patch_size(engine))
        self.size = tuple(engine.input_shape or self.config.input_size)
        # Per-pixel statistics and segmentation run on a strided grid of ~work_pixels.
        self.stride = max(1, int(round(math.sqrt(self.size[0] * self.size[1]
                                                 / self.config.work_pixels))))
        self._slots: dict[str, LatestFrameSlot] = {}
        self._slots_lock = threading.Lock()
        self.flow_source = flow_source or DenseFlow(self.config.flow_preset)
        self._cams: dict[str, _CameraState] = {}
        self._events: collections.Counter = collections.Counter()
        self._events_lock = threading.Lock()

    # -- latency policy -----------------------------------------------------------------
    def submit(self, inp: FrameInput) -> bool:
        """Offer a frame from a camera callback; returns True if an older untaken frame of
        the same camera was superseded (skipped)."""
        with self._slots_lock:
            slot = self._slots.setdefault(inp.camera_id, LatestFrameSlot())
        return slot.put(inp)

    def process_pending(self, camera_id: str = 'cam0') -> PipelineOutput | None:
        """Process the newest frame submitted for ``camera_id`` (older untaken ones were
        superseded and are counted in ``PipelineOutput.skipped_frames``); None when nothing
        is pending or :meth:`process` returns None.

        Raises:
            As :meth:`process`.
        """
        with self._slots_lock:
            slot = self._slots.get(camera_id)
        if slot is None:
            return None
        inp, skipped = slot.take()
        return None if inp is None else self.process(inp, skipped)

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

    def reset(self) -> None:
        """Forget all cameras' windows, keyframes and tracks."""
        self._cams.clear()
        self.engine.clear_cache()

    @property
    def cross_time_source(self) -> str:
        """Where the cross-time maps come from now: ``'network'``, ``'correspondence'`` or
        ``'fused'`` (the config's choice, ``'auto'`` resolved by the engine)."""
        return resolve_cross_time_source(self.config.cross_time_source, self.engine)[0]

    def _flow_image(self, raw: np.ndarray, model_image: np.ndarray) -> np.ndarray | None:
        """Grey input of the correspondence stage for one frame (None when it is off): the
        model crop at ``flow_width`` pixels across (at most the camera's own width), which
        bounds the cost of full-resolution patch matching; the flow is resampled to the
        model resolution afterwards."""
        if self.cross_time_source == 'network':
            return None
        H, W = self.size
        width = min(self.config.flow_width, raw.shape[1])
        if width == W:
            return DenseFlow.grey(model_image)
        height = int(round(H * width / W))
        return DenseFlow.grey(resize_crop(raw, (height, width))[0])

    def _cross_time(self, ref: WindowFrame, wf: WindowFrame, maps: DynamicPointMaps
                    ) -> tuple[DynamicPointMaps, PixelFlow | None]:
        """The pair's maps with cross-time maps from the configured source, and its pixel
        flow (None with network cross-time maps)."""
        source = self.cross_time_source
        if source == 'network':
            return maps, None
        flow = self.flow_source.pair_flow(ref, wf, self.size)
        corresponded = correspondence_cross_time(maps, flow)
        if source == 'fused':
            corresponded = fuse_cross_time(maps, corresponded)
        return corresponded, flow

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
        cfg = self.config
        tick = time.perf_counter()
        cpu = time.thread_time()
        timings: dict[str, float] = {}
        cs = self._cams.get(inp.camera_id)
        if cs is None:
            cs = self._cams[inp.camera_id] = _CameraState(cfg, self.engine)
        cs.skipped += skipped
        if not math.isfinite(inp.stamp):
            raise InputError(f'stamp must be finite, got {inp.stamp}', 'stamp')
        if cs.last_stamp is not None and inp.stamp <= cs.last_stamp:
            raise InputError(f'stamp {inp.stamp:.9f} is not after the previous '
                             f'{cs.last_stamp:.9f} of {inp.camera_id!r}', 'stamp_order',
                             actual=inp.stamp, expected=f'> {cs.last_stamp}')
        K_raw = None
        if inp.K is not None:
            K_raw = intrinsics_from_camera_info(inp.K, inp.image.shape[1], inp.image.shape[0])
        image, K, depth = resize_crop(inp.image, self.size, K_raw, inp.depth)
        wf = WindowFrame(make_frame(image, inp.stamp, inp.camera_id), cs.count, K, depth,
                         flow_image=self._flow_image(inp.image, image))
        if K is not None:
            cs.K_info = K
        timings['preprocess'] = _ms(tick)
        out = None
        if cs.window.keyframe is None:
            wf.T_world_cam = np.eye(4)
            cs.window.set_keyframe(wf)
        else:
            tock, cpu_inf = time.perf_counter(), time.thread_time()
            pairs = [(role, ref, self.engine.infer(ref.frame, wf.frame))
                     for role, ref in cs.window.schedule()]
            timings['inference'] = _ms(tock)
            tock = time.perf_counter()
            pairs = [(role, ref, *self._cross_time(ref, wf, maps)) for role, ref, maps in pairs]
            timings['correspondence'] = _ms(tock)
            cpu_inf = time.thread_time() - cpu_inf
            try:
                out = self._geometry(cs, wf, pairs, timings)
            except PoseError as exc:
                self._pose_lost(cs, wf, exc)  # raises, unless wf re-anchors the world frame
            else:
                cs.pose_failures = 0
                timings['pipeline'] = sum(v for k, v in timings.items() if k != 'inference')
                timings['pipeline_cpu'] = (time.thread_time() - cpu - cpu_inf) * 1e3
                timings['total'] = _ms(tick)
        # Only a frame processed without error enters the window and advances the stream.
        cs.window.push(wf)
        cs.count += 1
        cs.last_stamp = inp.stamp
        return out

    # -- stages -------------------------------------------------------------------------
    def _geometry(self, cs: _CameraState, wf: WindowFrame, pairs, timings) -> PipelineOutput:
        cfg = self.config
        t0 = time.perf_counter()
        kf = cs.window.keyframe
        H, W = self.size
        st = self.stride
        m_kf = pairs[0][2]  # (role, reference frame, maps, pixel flow or None)
        metric = m_kf.metric
        gate = (cfg.conf_threshold, cfg.conf_keep_quantile)
        # Scale-align every pair to the window (non-metric maps have a per-pair scale).
        views = [PairView(role, ref, m, 1.0 if metric else window_scale(ref, m, st, *gate),
                          *gate, pixel_flow=flow) for role, ref, m, flow in pairs]
        pk = views[0]
        # Intrinsics: CameraInfo (this frame's or the last one seen), else a robust focal fit
        # on the keyframe's own points, accumulated over frames (plausible fits only).
        K = cs.K_info
        estimated = K is None
        f_fit = None
        if estimated:
            f_fit, f = self._focal(cs, pk)
            K = np.array([[f, 0, (W - 1) / 2], [0, f, (H - 1) / 2], [0, 0, 1]])
        scene_depth = median_depth(pk.strided('i_ti', st), pk.gate('i_ti', st))
        if not math.isfinite(scene_depth):
            raise PoseError('keyframe pair has no valid points', 'no_points')
        aperture = (aperture_metric(DenseFlow.grey(wf.frame.image))
                    if pk.pixel_flow is not None else None)
        motion, T_kf_cam = self._motion_and_pose(views, wf, K, scene_depth, aperture)
        # The frame has a pose: from here on nothing raises, so the state may change.
        if f_fit is not None:
            cs.focals.append(f_fit)
        if kf.points_cam is None:  # first pair of a keyframe without a map defines the units
            kf.points_cam = set_invalid_nan(pk.i_ti.copy(), pk.valid_i)
            kf.track_ids = np.zeros((H, W), np.int32)
        T_cam_kf = se3_inverse(T_kf_cam)
        wf.T_world_cam = se3_compose(kf.T_world_cam, T_kf_cam)
        wf.K = K
        if kf.K is None:  # first keyframe: same camera, same K
            kf.K = K
        # Valid = confident and in front of the camera under the PnP pose (with poor maps
        # the pose can put confident points behind it; they are not observations).
        points_cam = se3_apply(T_cam_kf, pk.j_tj)
        valid = pk.valid_j & (points_cam[..., 2] > 0)
        points_cam = set_invalid_nan(points_cam, valid)
        motion &= valid
        wf.points_cam = points_cam
        wf.motion_mask = motion
        points_world = set_invalid_nan(se3_apply(kf.T_world_cam, pk.j_tj), valid)
        kf_world = None
        if cfg.keyframe_tracks:
            kf_world = set_invalid_nan(se3_apply(kf.T_world_cam, pk.i_tj), pk.valid_i_tj)
        # Published flow: the shortest-gap pair, rotated into the current camera frame.
        pf = min(views, key=lambda v: v.dt)
        R_cam_ref = se3_compose(se3_inverse(wf.T_world_cam), pf.ref.T_world_cam)[:3, :3]
        R = R_cam_ref.T / (pf.dt if cfg.flow_per_second else 1.0)
        timings['geometry'] = _ms(t0)

        t1 = time.perf_counter()
        labels, n_inst = instance_labels(cfg, st, motion, points_cam, pf.flow_seg,
                                         pf.threshold)
        fits = {}
        if pf.pixel_flow is not None:
            fits = fit_instances(cfg, labels, n_inst, pf, scene_depth)
            labels = self._grow_objects(pf, wf, K, points_cam, labels, fits, aperture)
            motion = valid & (motion | (labels > 0))
        flow, flow_valid = self._published_flow(pf, R, valid, motion, labels, fits)
        timings['segmentation'] = _ms(t1)

        t2 = time.perf_counter()
        prev = next(((v.ref, v) for v in views if v.ref is cs.window.latest), None)
        detections, det_labels = detect_objects(cfg, labels, n_inst, pk, kf, prev,
                                                scene_depth)
        timings['objects'] = _ms(t2)

        t3 = time.perf_counter()
        ids, objects = cs.tracker.update(detections, wf.stamp, scene_depth)
        lut = np.zeros(n_inst + 1, np.int32)
        published = {o.track_id for o in objects}
        out_lut = np.zeros(n_inst + 1, np.int32)
        for lab, tid in zip(det_labels, ids):
            lut[lab] = tid
            out_lut[lab] = tid if tid in published else 0
        wf.track_ids = np.take(lut, labels)  # np.take: several times faster than lut[labels]
        # Usually every track is published: then a copy is ~10x cheaper than a second take.
        instance_ids = (wf.track_ids.copy() if np.array_equal(lut, out_lut)
                        else np.take(out_lut, labels))
        kf_index = kf.index
        self._maybe_switch_keyframe(cs, wf, pk, valid)
        timings['tracking'] = _ms(t3)

        scale, is_metric = self._scale(cs, metric, wf, points_cam, valid)
        return PipelineOutput(
            stamp=wf.stamp, camera_id=wf.frame.camera_id, frame_index=wf.index,
            image=wf.frame.image, K=K, intrinsics_estimated=estimated,
            points_cam=scaled(points_cam, scale), points_world=scaled(points_world, scale),
            confidence=m_kf.conf_j_tj.astype(np.float32), valid=valid,
            flow=scaled(flow, scale), flow_valid=flow_valid, flow_dt=float(pf.dt),
            motion_mask=motion,
            instance_ids=instance_ids, T_world_cam=scaled_pose(wf.T_world_cam, scale),
            keyframe_index=kf_index, objects=[scaled_object(o, scale) for o in objects],
            metric_scale=is_metric, scale=scale, timings_ms=timings,
            skipped_frames=cs.skipped,
            keyframe_points_world=None if kf_world is None else scaled(kf_world, scale))

    def _grow_objects(self, pf: PairView, wf: WindowFrame, K: np.ndarray,
                      points_cam: np.ndarray, labels: np.ndarray, fits: dict,
                      aperture: ApertureMetric) -> np.ndarray:
        """Instances completed over the pixels the camera test could not judge
        (:func:`grow_instances`), on the published-flow pair."""
        cfg = self.config
        T_ref_cam = se3_compose(se3_inverse(pf.ref.T_world_cam), wf.T_world_cam)
        camera_residual = pose_residual(points_cam, T_ref_cam, K, pf.pixel_flow.backward,
                                        aperture)
        # Rings in model pixels: an eighth of the image at most, a third of that through
        # pixels the flow cannot judge.
        max_steps = max(self.size) // 8
        return grow_instances(labels, fits, pf, K, camera_residual, aperture,
                              cfg.flow_min_px * pf.pixel_flow.pixel_scale,
                              cfg.cluster_jump_rel, max_steps, max(2, max_steps // 3))

    def _published_flow(self, pf: PairView, R: np.ndarray, valid: np.ndarray,
                        motion: np.ndarray, labels: np.ndarray,
                        fits: dict) -> tuple[np.ndarray, np.ndarray]:
        """(flow ``[H, W, 3]`` in the current camera, NaN where unknown; ``flow_valid``).

        ``R`` rotates the pair's reference frame into the current camera (and divides by the
        gap when publishing per second). Flow is known where the pixel is valid and its pair
        gated it at both times. With correspondences, static pixels (the camera explains
        their image motion) have exactly zero flow -- known, not missing -- rigid instances
        move with their fitted motion (:func:`rigid_flow`), which also gives a flow to their
        pixels without a correspondence, and moving pixels outside every fitted instance
        have no flow.
        """
        flow_valid = valid & pf.valid_flow
        flow_ref = pf.flow_j
        if pf.pixel_flow is not None:
            flow_ref = np.where(motion[..., None], rigid_flow(labels, fits, pf), np.float32(0))
            # A moving pixel outside every fitted instance (a blob too small to be an object,
            # mostly at occlusion borders) has only its own correspondence, whose 3D error was
            # 7x its true flow on the held-out scenes: unknown is more honest than that.
            rigid = np.isin(labels, [label for label, fit in fits.items() if fit.is_rigid])
            deforming = np.isin(labels, [label for label, fit in fits.items()
                                         if not fit.is_rigid])
            flow_valid = valid & (~motion | rigid | (deforming & np.isfinite(flow_ref[..., 0])))
        flow = flow_ref @ np.ascontiguousarray(R, dtype=np.float32)
        return set_invalid_nan(flow, flow_valid), flow_valid

    def _motion_and_pose(self, views: list[PairView], wf: WindowFrame, K: np.ndarray,
                         scene_depth: float, aperture: ApertureMetric | None
                         ) -> tuple[np.ndarray, np.ndarray]:
        """(``[H, W]`` motion mask of the current pixels, ``T_kf_cam``).

        Network cross-time maps: motion from the 3D flow (:meth:`_motion`), then the pose by
        PnP on the remaining pixels. Correspondences: MonST3R-style, iterated online --
        static candidates from the epipolar fit of the keyframe pair's flow (pose-free), a
        pose from them, motion from the pose residual of every pair
        (:mod:`~pointmap_ros.pipeline.motion`), then the pose again from the pixels judged
        static and the motion once more under it. A camera whose static pixels do not move
        in the image keeps its keyframe pose exactly (no drift from noisy maps).

        Not yet restricted to valid pixels under the final pose (the caller does that).
        """
        cfg = self.config
        pk = views[0]
        motion_3d = self._motion(views, wf.stamp, scene_depth)
        if pk.pixel_flow is None:
            # PnP samples a few hundred static pixels; candidates stay full-size (~0.3 ms
            # more than the work grid at 512x288) because with noisy maps the pose error is
            # dominated by which slow movers the sample happens to contain, and the
            # full-size draw keeps results identical to the measured noise study.
            return motion_3d, self._pnp(pk, K, pk.valid_j & ~motion_3d)
        backward = pk.pixel_flow.backward
        px = pk.pixel_flow.pixel_scale  # thresholds are in pixels of the flow's images
        observed = pk.valid_j & pk.pixel_flow.backward_valid
        model = camera_flow_model(backward, observed, self.stride, cfg.flow_inlier_px * px,
                                  cfg.seed)
        epipolar = None if model is None else epipolar_residual(model, backward)
        static = (observed if epipolar is None
                  else observed & (epipolar < cfg.flow_inlier_px * px))
        # Pose-independent evidence per pair, computed once for every round below.
        epipolar_per_view = [epipolar] + [self._epipolar(view, aperture) for view in views[1:]]
        was_moving = [_warped_motion(view) for view in views]
        evidence = (scene_depth, motion_3d, epipolar_per_view, was_moving, aperture)
        if camera_still(backward, static, self.stride, cfg.camera_still_px * px):
            still = np.eye(4)
            return self._flow_motion(views, K, still, *evidence), still
        T_kf_cam = self._pnp(pk, K, static)
        motion = self._flow_motion(views, K, T_kf_cam, *evidence)
        T_kf_cam = self._pnp(pk, K, pk.valid_j & ~motion)
        return self._flow_motion(views, K, T_kf_cam, *evidence), T_kf_cam

    def _pnp(self, pk: PairView, K: np.ndarray, static: np.ndarray) -> np.ndarray:
        """``T_kf_cam`` by PnP on ``static`` pixels (all valid ones when too few remain)."""
        if np.count_nonzero(static) < 50:
            static = pk.valid_j
        T_kf_cam, _ = relative_pose_pnp(pk.j_tj, K, static, self.config.pnp_reprojection_px,
                                        seed=self.config.seed)
        return T_kf_cam

    def _epipolar(self, view: PairView, aperture: ApertureMetric) -> np.ndarray | None:
        """Epipolar residual of a pair's flow (None when no camera model fits)."""
        cfg = self.config
        backward = view.pixel_flow.backward
        observed = view.valid_j & view.pixel_flow.backward_valid & aperture.textured
        model = camera_flow_model(backward, observed, self.stride,
                                  cfg.flow_inlier_px * view.pixel_flow.pixel_scale, cfg.seed)
        return None if model is None else epipolar_residual(model, backward)

    def _flow_motion(self, views: list[PairView], K: np.ndarray, T_kf_cam: np.ndarray,
                     scene_depth: float, motion_3d: np.ndarray,
                     epipolar_per_view: list, was_moving: list,
                     aperture: ApertureMetric) -> np.ndarray:
        """Union over pairs of the correspondence motion test, cleaned up.

        Pixels without a consistent correspondence (occluded, out of view) keep the 3D-flow
        decision of the network's cross-time maps in ``'fused'`` mode, and are static in
        ``'correspondence'`` mode (their cross-time points are unknown). A pixel must also
        be displaced by more than ``motion_min_rel`` of the scene depth in 3D.
        """
        cfg = self.config
        H, W = self.size
        pk = views[0]
        points_cam = se3_apply(se3_inverse(T_kf_cam), pk.j_tj)
        T_world_cam = se3_compose(pk.ref.T_world_cam, T_kf_cam)
        raw = np.zeros((H, W), bool)
        unobserved = np.ones((H, W), bool)
        min_sq = (cfg.motion_min_rel * scene_depth) ** 2
        for view, epipolar, moved_before in zip(views, epipolar_per_view, was_moving):
            backward = view.pixel_flow.backward
            observed = view.valid_j & view.pixel_flow.backward_valid & aperture.textured
            T_ref_cam = se3_compose(se3_inverse(view.ref.T_world_cam), T_world_cam)
            px = view.pixel_flow.pixel_scale
            decision = flow_motion(
                pose_residual(points_cam, T_ref_cam, K, backward, aperture), epipolar, observed,
                stride=self.stride, reliable_px=cfg.flow_reliable_px * px,
                inlier_px=cfg.flow_inlier_px * px, noise_mult=cfg.flow_noise_mult,
                min_px=cfg.flow_min_px * px, was_moving=moved_before,
                hysteresis=cfg.flow_hysteresis,
                depth_res=np.where(aperture.isotropy >= cfg.flow_depth_min_isotropy,
                                   depth_residual(view.j_tj, view.j_ti), np.float32(np.nan)),
                min_depth_rel=cfg.flow_depth_min_rel)
            raw |= decision.moving & (view.flow_sq > min_sq)
            unobserved &= ~decision.observed
        if self.cross_time_source == 'fused':
            raw |= motion_3d & unobserved
        if cfg.flow_halo_px:
            halo_width = int(round(cfg.flow_halo_px * pk.pixel_flow.pixel_scale))
            raw = trim_occlusion_halo(raw, points_cam[..., 2], pk.pixel_flow.backward,
                                      cfg.cluster_jump_rel,
                                      max(1, halo_width))
        return remove_small_regions(raw, max(1, int(cfg.min_region_frac * H * W)))

    def _focal(self, cs: _CameraState, pk: PairView) -> tuple[float | None, float]:
        """(plausible fit to record once the pose succeeds or None, focal to use) in px.

        A fit outside ``[focal_min_rel, focal_max_rel] * max(H, W)`` (or impossible: too
        few points) is rejected and counted; the running median of earlier plausible fits,
        else the prior ``prior_focal_rel * max(H, W)``, is used instead.
        """
        cfg = self.config
        side = max(self.size)
        try:
            # Strided inside the fit, which keeps full-size pixel coordinates (a strided map
            # fitted as an image of its own would give f / stride); the scale is irrelevant.
            f_fit = estimate_focal(pk.maps.pts_i_ti, pk.gate('i_ti'), stride=self.stride)
        except InputError as exc:
            logger.debug('focal fit failed: %s', exc)
            f_fit = math.nan
        if cfg.focal_min_rel * side <= f_fit <= cfg.focal_max_rel * side:
            return f_fit, float(np.median([*cs.focals, f_fit]))
        self._count('focal_rejected')
        logger.debug('focal fit %.4g px outside [%.3g, %.3g] px: rejected', f_fit,
                     cfg.focal_min_rel * side, cfg.focal_max_rel * side)
        if cs.focals:
            return None, float(np.median(cs.focals))
        return None, cfg.prior_focal_rel * side

    def _pose_lost(self, cs: _CameraState, wf: WindowFrame, exc: PoseError) -> None:
        """Count a frame without pose; at ``pose_reset_after`` in a row, make ``wf`` the
        keyframe at the last good pose and restart the window, else raise.

        Re-anchoring keeps the world frame (the new keyframe's pose is the last good one, so
        the trajectory holds still over the lost frames rather than jumping) and drops the
        window: its frames belong to the lost chain. The new keyframe has no map of its own
        yet, so, as at start, its first pair defines the units of an up-to-scale engine.
        """
        cs.pose_failures += 1
        n = cs.pose_failures
        if n < self.config.pose_reset_after:
            raise PoseError(f'{exc} (no pose for {n} consecutive frame(s); re-anchoring at '
                            f'{self.config.pose_reset_after})', exc.reason) from exc
        last = cs.window.latest or cs.window.keyframe
        wf.T_world_cam = last.T_world_cam.copy()
        if wf.K is None:  # no CameraInfo: keep the keyframe's (possibly estimated) K
            wf.K = cs.window.keyframe.K
        cs.window.restart(wf)
        cs.tracker.reanchor()
        cs.pose_failures = 0
        self._count('pose_reset')
        logger.warning('%s: no pose for %d frames (%s); re-anchored on frame %d',
                       wf.frame.camera_id, n, exc, wf.index)

    def _motion(self, views: list[PairView], stamp: float, scene_depth: float) -> np.ndarray:
        """``[H, W]`` motion mask of the current pixels: union over pairs, cleaned up.

        Also records on each pair its gap, flow noise, threshold and the flow the decision
        used (for segmentation).
        """
        cfg = self.config
        H, W = self.size
        raw = np.zeros((H, W), bool)
        for p in views:
            p.dt = stamp - p.ref.stamp
            pm = pair_motion(p.flow_j, p.valid_flow, scene_depth, p.dt, cfg.motion_speed_rel,
                             cfg.motion_min_rel, cfg.motion_noise_mult, cfg.flow_smooth_radius,
                             self.stride, flow_sq=p.flow_sq)
            p.noise, p.threshold, p.flow_seg = pm.noise, pm.threshold, pm.flow
            raw |= pm.moving
        return remove_small_regions(raw, max(1, int(cfg.min_region_frac * H * W)))

    def _maybe_switch_keyframe(self, cs: _CameraState, wf: WindowFrame, pk: PairView,
                               valid: np.ndarray) -> None:
        """Make ``wf`` the keyframe when the view drifted away (after its poses are final)."""
        cfg = self.config
        kf = cs.window.keyframe
        so = 2 * self.stride  # a statistic: a quarter of the work grid is plenty
        overlap = view_overlap(pk.j_tj[::so, ::so], kf.K, valid[::so, ::so], self.size)
        conf_sub = pk.maps.conf_j_tj[::so, ::so][valid[::so, ::so]]
        mean_conf = float(np.mean(conf_sub)) if conf_sub.size else 0.0
        if (overlap < cfg.keyframe_min_overlap or mean_conf < cfg.keyframe_min_confidence
                or (cfg.keyframe_max_age and wf.index - kf.index >= cfg.keyframe_max_age)):
            logger.debug('keyframe %d -> %d (overlap %.2f, conf %.2f)', kf.index, wf.index,
                         overlap, mean_conf)
            cs.window.set_keyframe(wf)
            cs.tracker.reanchor()

    def _scale(self, cs: _CameraState, metric: bool, wf: WindowFrame, points_cam, valid):
        """(metres per window unit, is metric) from the engine, fixed scale or depth."""
        if metric:
            return 1.0, True
        if self.config.fixed_scale is not None:
            return float(self.config.fixed_scale), True
        if wf.depth is not None:  # a depth image without enough valid pixels is ignored
            st = self.stride  # a median: the work grid is plenty
            s = depth_ratio(wf.depth[::st, ::st], points_cam[::st, ::st, 2], valid[::st, ::st])
            if s is not None:
                cs.scales.append(s)
        if cs.scales:
            return float(np.median(cs.scales)), True
        return 1.0, False


def _warped_motion(view: PairView) -> np.ndarray | None:
    """``[H, W]`` bool: the reference frame's motion mask read at each current pixel's
    correspondence (None when the reference has no mask or the pair no flow)."""
    previous = view.ref.motion_mask
    if previous is None or view.pixel_flow is None:
        return None
    H, W = previous.shape
    rows, cols = np.mgrid[0:H, 0:W]
    flow = view.pixel_flow.backward
    target_cols = np.clip(np.rint(cols + flow[..., 0]), 0, W - 1).astype(np.intp)
    target_rows = np.clip(np.rint(rows + flow[..., 1]), 0, H - 1).astype(np.intp)
    return previous[target_rows, target_cols] & view.pixel_flow.backward_valid


def _patch_size(engine: Engine) -> int | None:
    """The engine's patch size when it exposes one (torch engine: its model config)."""
    size = getattr(engine, 'patch_size', None)
    if size is None:
        config = getattr(getattr(engine, 'model', None), 'config', None)
        size = getattr(config, 'patch_size', None)
    return size


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1e3
