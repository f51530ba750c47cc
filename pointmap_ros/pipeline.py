"""DynamicReconPipeline: timestamped frames in, everything the ROS node publishes out.

Per new frame t of a camera (all pairs have the older frame as i, so maps are in its frame):

1. Pairs: ``(keyframe, t)`` always, ``(t - g, t)`` for the configured gaps (window.py).
2. Geometry: confidence gating; per-pair scale alignment to the window (non-metric engines);
   K from CameraInfo or a Weiszfeld focal fit on the keyframe's own map; scene flow
   ``P_t(t) - P_t(t_ref)`` and a motion mask per pair; ``T_kf_cam`` by PnP of the keyframe
   pair's ``P_t(t)`` on static pixels (geometry/pose.py explains why PnP).
3. World frame = the first keyframe's optical frame. ``T_world_cam = T_world_kf @ T_kf_cam``
   comes straight from the keyframe pair (St4RTrack-style, no chaining of small steps inside a
   keyframe); when the keyframe switches, the new keyframe's pose is already known.
4. Objects: instances of the motion mask, rigid motion of each from the keyframe time to t,
   persistent ids (tracking/tracker.py).

See docs/pipeline.md for choices and conventions.
"""

from __future__ import annotations

import collections
import functools
import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from pointmap_ros.data.preprocess import make_frame, resize_crop
from pointmap_ros.engines.base import Engine
from pointmap_ros.errors import ConfigError, InputError
from pointmap_ros.geometry.camera import estimate_focal, intrinsics_from_camera_info
from pointmap_ros.geometry.pointmap import (
    confidence_mask, depth_ratio, median_depth, valid_mask)
from pointmap_ros.geometry.pose import relative_pose_pnp
from pointmap_ros.geometry.transforms import se3_apply, se3_compose, se3_inverse
from pointmap_ros.tracking.objects import fit_rigid_motion
from pointmap_ros.tracking.segmentation import (
    pair_motion, remove_small_regions, segment_instances)
from pointmap_ros.tracking.tracker import (
    Detection, ObjectTracker, TrackedObject, TrackerConfig, warped_overlap)
from pointmap_ros.tracking.window import LatestFrameSlot, SlidingWindow, WindowFrame, view_overlap
from pointmap_ros.types import DynamicPointMaps

__all__ = ['PipelineConfig', 'FrameInput', 'PipelineOutput', 'DynamicReconPipeline']

logger = logging.getLogger(__name__)


@dataclass
class PipelineConfig:
    """Parameters of :class:`DynamicReconPipeline` (``*_rel`` = relative to median depth).

    Attributes:
        input_size: ``(H, W)`` model resolution when the engine accepts any size.
        window_size: processed frames kept besides the keyframe.
        pair_gaps: pair each frame with the frames this many positions back.
        keyframe_min_overlap: switch keyframe when fewer of the current pixels fall inside it.
        keyframe_min_confidence: switch when the keyframe pair's mean confidence is lower.
        keyframe_max_age: switch after this many frames (0 = never by age).
        conf_threshold, conf_keep_quantile: confidence gate (see geometry/pointmap.py).
        motion_speed_rel: moving = faster than this fraction of the scene depth per second...
        motion_min_rel: ...and displaced more than this fraction of the scene depth...
        motion_noise_mult: ...and more than this multiple of the median flow (noise floor).
        flow_smooth_radius: when that noise floor dominates, decide on flow box-filtered
            over ``2r + 1`` pixels (0 = never).
        min_region_frac: motion blobs/holes smaller than this fraction of the image vanish.
        cluster_jump_rel, cluster_flow_jump_rel: 3D / flow discontinuity splitting instances.
        min_instance_frac: smallest instance, as a fraction of the image.
        ransac_threshold_rel, ransac_iterations: rigid fit of each instance.
        max_fit_points: random subset of an instance's pixels used for its fit.
        work_pixels: statistics and segmentation run on a grid strided to about this many
            pixels (1 = full resolution up to 256x256; 2 at 512x288).
        rigid_residual_rel: an instance whose residual exceeds this fraction of its size is
            flagged non-rigid.
        pnp_reprojection_px: PnP-RANSAC inlier threshold in pixels.
        tracker: association and lifetime parameters.
        flow_per_second: publish flow in units/s (else per pair gap).
        keyframe_tracks: also output ``keyframe_points_world`` (one more full-size transform).
        fixed_scale: metres per model unit when known a priori (None = not given).
        seed: seed of every random choice (results are deterministic).
    """

    input_size: tuple = (224, 224)
    window_size: int = 8
    pair_gaps: tuple = (1,)
    keyframe_min_overlap: float = 0.5
    keyframe_min_confidence: float = 0.0
    keyframe_max_age: int = 0
    conf_threshold: float = 3.0
    conf_keep_quantile: float | None = 0.5
    motion_speed_rel: float = 0.01
    motion_min_rel: float = 0.001
    motion_noise_mult: float = 4.0
    flow_smooth_radius: int = 2
    min_region_frac: float = 5e-4
    cluster_jump_rel: float = 0.05
    cluster_flow_jump_rel: float = 0.5
    min_instance_frac: float = 1e-3
    ransac_threshold_rel: float = 0.01
    ransac_iterations: int = 64
    max_fit_points: int = 500
    work_pixels: int = 65536
    rigid_residual_rel: float = 0.05
    pnp_reprojection_px: float = 5.0
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    flow_per_second: bool = True
    keyframe_tracks: bool = False
    fixed_scale: float | None = None
    seed: int = 0

    def validate(self) -> 'PipelineConfig':
        """Check every field; raises :class:`ConfigError` naming the first bad one."""
        def bad(name, why):
            raise ConfigError(f'PipelineConfig.{name} = {getattr(self, name)!r}: {why}',
                              name=name, value=getattr(self, name))

        if (len(self.input_size) != 2
                or not all(isinstance(v, int) and v >= 16 for v in self.input_size)):
            bad('input_size', 'expected (H, W) integers >= 16')
        if not isinstance(self.window_size, int) or self.window_size < 1:
            bad('window_size', 'expected an integer >= 1')
        if any(not isinstance(g, int) or not 1 <= g <= self.window_size for g in self.pair_gaps):
            bad('pair_gaps', f'gaps must be integers in [1, window_size={self.window_size}]')
        for name in ('keyframe_min_overlap', 'min_region_frac', 'min_instance_frac'):
            if not 0.0 <= getattr(self, name) < 1.0:
                bad(name, 'expected a value in [0, 1)')
        if self.conf_keep_quantile is not None and not 0.0 <= self.conf_keep_quantile < 1.0:
            bad('conf_keep_quantile', 'expected None or a value in [0, 1)')
        for name in ('keyframe_min_confidence', 'conf_threshold', 'motion_speed_rel',
                     'motion_min_rel', 'motion_noise_mult'):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                bad(name, 'expected a finite value >= 0')
        for name in ('cluster_jump_rel', 'cluster_flow_jump_rel', 'ransac_threshold_rel',
                     'rigid_residual_rel', 'pnp_reprojection_px'):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                bad(name, 'expected a finite value > 0')
        for name, lo in (('keyframe_max_age', 0), ('ransac_iterations', 1),
                         ('flow_smooth_radius', 0),
                         ('max_fit_points', 3), ('work_pixels', 1)):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < lo:
                bad(name, f'expected an integer >= {lo}')
        if self.fixed_scale is not None and not (math.isfinite(self.fixed_scale)
                                                 and self.fixed_scale > 0):
            bad('fixed_scale', 'expected None or a finite value > 0')
        t = self.tracker
        if t.min_hits < 1 or t.max_misses < 0 or not 0 < t.velocity_alpha <= 1 or t.gate_rel <= 0:
            bad('tracker', 'need min_hits >= 1, max_misses >= 0, 0 < velocity_alpha <= 1, '
                'gate_rel > 0')
        return self


@dataclass
class FrameInput:
    """One camera frame as received (any size; preprocessing happens in the pipeline).

    Attributes:
        image: ``[h, w, 3]`` uint8 RGB.
        stamp: header stamp, seconds.
        camera_id: stream name; each camera has its own window, keyframes and tracks.
        K: raw ``[3, 3]`` / 9-vector CameraInfo intrinsics of ``image`` or None.
        depth: ``[h, w]`` metric z-depth registered to ``image`` or None.
    """

    image: np.ndarray
    stamp: float
    camera_id: str = 'cam0'
    K: np.ndarray | None = None
    depth: np.ndarray | None = None


@dataclass
class PipelineOutput:
    """Everything published for one processed frame (see docs/architecture.md).

    All maps are ``[H, W, ...]`` at model resolution, float32 unless stated; lengths are
    metres when ``metric_scale`` else model units; poses float64.
    Additions to the documented contract: ``keyframe_points_world`` ``[H, W, 3]`` (when
    ``PipelineConfig.keyframe_tracks``, else None) holds the keyframe's pixels at the current
    time in the world frame: St4RTrack-style long-range 3D tracks; ``timings_ms`` also has
    ``'pipeline_cpu'``, the thread CPU time of the non-inference stages (robust to a loaded
    machine, unlike the wall-clock stage times).
    """

    stamp: float
    camera_id: str
    frame_index: int
    image: np.ndarray
    K: np.ndarray
    intrinsics_estimated: bool
    points_cam: np.ndarray
    points_world: np.ndarray
    confidence: np.ndarray
    valid: np.ndarray
    flow: np.ndarray
    flow_dt: float
    motion_mask: np.ndarray
    instance_ids: np.ndarray
    T_world_cam: np.ndarray
    keyframe_index: int
    objects: list[TrackedObject]
    metric_scale: bool
    scale: float
    timings_ms: dict
    skipped_frames: int
    keyframe_points_world: np.ndarray | None = None


class _CameraState:
    def __init__(self, config: PipelineConfig, engine: Engine):
        self.window = SlidingWindow(config.window_size, tuple(config.pair_gaps), engine.forget)
        self.tracker = ObjectTracker(config.tracker)
        self.count = 0
        self.K_info: np.ndarray | None = None  # last CameraInfo K at model resolution
        self.last_stamp: float | None = None
        self.focals: collections.deque = collections.deque(maxlen=32)
        self.scales: collections.deque = collections.deque(maxlen=32)


class DynamicReconPipeline:
    """Sliding-window 4D reconstruction over an :class:`Engine` (no ROS imports).

    Args:
        engine: pair-inference backend (its ``input_shape`` wins over ``config.input_size``).
        config: validated here.

    Thread model: one worker calls :meth:`process` (or :meth:`process_pending`); camera
    callbacks may call :meth:`submit` concurrently.
    """

    def __init__(self, engine: Engine, config: PipelineConfig | None = None):
        self.engine = engine
        self.config = (config or PipelineConfig()).validate()
        self.size = tuple(engine.input_shape or self.config.input_size)
        # Per-pixel statistics and segmentation run on a strided grid of ~work_pixels.
        self.stride = max(1, int(round(math.sqrt(self.size[0] * self.size[1]
                                                 / self.config.work_pixels))))
        self._slot = LatestFrameSlot()
        self._cams: dict[str, _CameraState] = {}

    # -- latency policy -----------------------------------------------------------------
    def submit(self, inp: FrameInput) -> bool:
        """Offer a frame from a camera callback; returns True if an older one was skipped."""
        return self._slot.put(inp)

    def process_pending(self) -> PipelineOutput | None:
        """Process the newest submitted frame (older untaken ones were skipped)."""
        inp, _ = self._slot.take()
        return None if inp is None else self.process(inp)

    @property
    def skipped_frames(self) -> int:
        return self._slot.skipped_total

    def reset(self) -> None:
        """Forget all cameras' windows, keyframes and tracks."""
        self._cams.clear()
        self.engine.clear_cache()

    # -- main entry ---------------------------------------------------------------------
    def process(self, inp: FrameInput) -> PipelineOutput | None:
        """Process one frame; None while no output is possible yet (first frame).

        Raises:
            InputError: bad image/depth, non-finite or non-increasing stamp, PnP failure.
            CalibrationError: unusable K.
        """
        cfg = self.config
        tick = time.perf_counter()
        cpu = time.thread_time()
        timings: dict[str, float] = {}
        if not math.isfinite(inp.stamp):
            raise InputError(f'stamp must be finite, got {inp.stamp}', 'stamp')
        cs = self._cams.get(inp.camera_id)
        if cs is None:
            cs = self._cams[inp.camera_id] = _CameraState(cfg, self.engine)
        if cs.last_stamp is not None and inp.stamp <= cs.last_stamp:
            raise InputError(f'stamp {inp.stamp:.9f} is not after the previous '
                             f'{cs.last_stamp:.9f} of {inp.camera_id!r}', 'stamp_order',
                             actual=inp.stamp, expected=f'> {cs.last_stamp}')
        K_raw = None
        if inp.K is not None:
            K_raw = intrinsics_from_camera_info(inp.K, inp.image.shape[1], inp.image.shape[0])
        image, K, depth = resize_crop(inp.image, self.size, K_raw, inp.depth)
        wf = WindowFrame(make_frame(image, inp.stamp, inp.camera_id), cs.count, K, depth)
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
            cpu_inf = time.thread_time() - cpu_inf
            out = self._geometry(cs, wf, pairs, timings)
            timings['pipeline'] = sum(v for k, v in timings.items() if k != 'inference')
            timings['pipeline_cpu'] = (time.thread_time() - cpu - cpu_inf) * 1e3
            timings['total'] = _ms(tick)
        # Only a frame processed without error enters the window and advances the stream.
        cs.window.push(wf)
        cs.count += 1
        cs.last_stamp = inp.stamp
        return out

    # -- stages -------------------------------------------------------------------------
    def _gate(self, conf: np.ndarray) -> np.ndarray:
        return confidence_mask(conf, self.config.conf_threshold, self.config.conf_keep_quantile)

    def _geometry(self, cs: _CameraState, wf: WindowFrame, pairs, timings) -> PipelineOutput:
        cfg = self.config
        t0 = time.perf_counter()
        kf = cs.window.keyframe
        H, W = self.size
        st = self.stride
        m_kf = pairs[0][2]
        metric = m_kf.metric
        # Scale-align every pair to the window (non-metric maps have a per-pair scale): the
        # reference frame's own-frame depth is known from when it was processed.
        aligned = []
        for role, ref, m in pairs:
            s = 1.0
            if not metric and ref.points_cam is not None:
                s = depth_ratio(ref.points_cam[::st, ::st, 2], m.pts_i_ti[::st, ::st, 2],
                                self._gate(m.conf_i_ti)[::st, ::st]) or 1.0
            aligned.append((role, ref, _Pair(m, s, self._gate, keyframe=role == 'keyframe')))
        pk = aligned[0][2]
        if kf.points_cam is None:  # first pair of the first keyframe defines the units
            kf.points_cam = _masked(pk.i_ti.astype(np.float32), pk.valid_i)
            kf.track_ids = np.zeros((H, W), np.int32)
        # Intrinsics: CameraInfo (this frame's or the last one seen), else a robust focal fit
        # on the keyframe's own points, accumulated over frames.
        K = cs.K_info
        estimated = K is None
        if estimated:
            cs.focals.append(estimate_focal(pk.i_ti, pk.valid_i))
            f = float(np.median(cs.focals))
            K = np.array([[f, 0, (W - 1) / 2], [0, f, (H - 1) / 2], [0, 0, 1]])
        sub = pk.i_ti[::st, ::st]
        scene_depth = median_depth(sub, valid_mask(sub) & self._gate(m_kf.conf_i_ti[::st, ::st]))
        if not math.isfinite(scene_depth):
            raise InputError('keyframe pair has no valid points', 'no_points')
        motion = self._motion(aligned, wf.stamp, scene_depth) & pk.valid_j
        # Camera pose from the keyframe pair, static pixels only.
        static = pk.valid_j & ~motion
        if np.count_nonzero(static) < 50:
            static = pk.valid_j
        T_kf_cam, _ = relative_pose_pnp(pk.j_tj, K, static, cfg.pnp_reprojection_px,
                                        seed=cfg.seed)
        T_cam_kf = se3_inverse(T_kf_cam)
        wf.T_world_cam = se3_compose(kf.T_world_cam, T_kf_cam)
        wf.K = K
        if kf.K is None:  # first keyframe: same camera, same K
            kf.K = K
        valid = pk.valid_j
        points_cam = _masked(se3_apply(T_cam_kf, pk.j_tj), valid)
        wf.points_cam = points_cam
        points_world = _masked(se3_apply(kf.T_world_cam, pk.j_tj), valid)
        kf_world = None
        if cfg.keyframe_tracks:
            kf_world = _masked(se3_apply(kf.T_world_cam, pk.i_tj), pk.valid_i_tj)
        # Published flow: the shortest-gap pair, rotated into the current camera frame.
        _, ref_f, pf = min(aligned, key=lambda a: a[2].dt)
        R_cam_ref = se3_compose(se3_inverse(wf.T_world_cam), ref_f.T_world_cam)[:3, :3]
        R = R_cam_ref.T / (pf.dt if cfg.flow_per_second else 1.0)
        flow = _masked(pf.flow_j @ R.astype(np.float32), pf.valid_flow)
        timings['geometry'] = _ms(t0)

        t1 = time.perf_counter()
        labels, n_inst = self._instances(motion, points_cam, pf.flow_seg, pf.threshold)
        timings['segmentation'] = _ms(t1)

        t2 = time.perf_counter()
        prev = next(((ref, p) for _, ref, p in aligned if ref is cs.window.latest), None)
        detections, det_labels = self._detections(labels, n_inst, pk, kf, prev, scene_depth)
        timings['objects'] = _ms(t2)

        t3 = time.perf_counter()
        ids, objects = cs.tracker.update(detections, wf.stamp, scene_depth)
        lut = np.zeros(n_inst + 1, np.int32)
        published = {o.track_id for o in objects}
        out_lut = np.zeros(n_inst + 1, np.int32)
        for lab, tid in zip(det_labels, ids):
            lut[lab] = tid
            out_lut[lab] = tid if tid in published else 0
        wf.track_ids = lut[labels]
        instance_ids = out_lut[labels]
        # Keyframe switching, after this frame's pose and object poses are final.
        so = 2 * st  # a statistic: a quarter of the work grid is plenty
        overlap = view_overlap(pk.j_tj[::so, ::so], kf.K, valid[::so, ::so], (H, W))
        conf_sub = m_kf.conf_j_tj[::so, ::so][valid[::so, ::so]]
        mean_conf = float(np.mean(conf_sub)) if conf_sub.size else 0.0
        kf_index = kf.index
        if (overlap < cfg.keyframe_min_overlap or mean_conf < cfg.keyframe_min_confidence
                or (cfg.keyframe_max_age and wf.index - kf.index >= cfg.keyframe_max_age)):
            logger.debug('keyframe %d -> %d (overlap %.2f, conf %.2f)', kf.index, wf.index,
                         overlap, mean_conf)
            cs.window.set_keyframe(wf)
            cs.tracker.reanchor()
        timings['tracking'] = _ms(t3)

        scale, is_metric = self._scale(cs, metric, wf, points_cam, valid)
        return PipelineOutput(
            stamp=wf.stamp, camera_id=wf.frame.camera_id, frame_index=wf.index,
            image=wf.frame.image, K=K, intrinsics_estimated=estimated,
            points_cam=_scaled(points_cam, scale), points_world=_scaled(points_world, scale),
            confidence=m_kf.conf_j_tj.astype(np.float32), valid=valid,
            flow=_scaled(flow, scale), flow_dt=float(pf.dt), motion_mask=motion,
            instance_ids=instance_ids, T_world_cam=_scaled_pose(wf.T_world_cam, scale),
            keyframe_index=kf_index, objects=[_scaled_object(o, scale) for o in objects],
            metric_scale=is_metric, scale=scale, timings_ms=timings,
            skipped_frames=self._slot.skipped_total,
            keyframe_points_world=None if kf_world is None else _scaled(kf_world, scale))

    def _motion(self, aligned, stamp: float, scene_depth: float) -> np.ndarray:
        """``[H, W]`` motion mask of the current pixels: union over pairs, cleaned up.

        Also records on each pair its gap, flow noise, threshold and the flow the decision
        used (for segmentation).
        """
        cfg = self.config
        H, W = self.size
        raw = np.zeros((H, W), bool)
        for _, ref, p in aligned:
            p.dt = stamp - ref.stamp
            pm = pair_motion(p.flow_j, p.valid_flow, scene_depth, p.dt, cfg.motion_speed_rel,
                             cfg.motion_min_rel, cfg.motion_noise_mult, cfg.flow_smooth_radius,
                             self.stride)
            p.noise, p.threshold, p.flow_seg = pm.noise, pm.threshold, pm.flow
            raw |= pm.moving
        return remove_small_regions(raw, max(1, int(cfg.min_region_frac * H * W)))

    def _instances(self, motion, points_cam, flow, flow_floor) -> tuple[np.ndarray, int]:
        """Instance labels ``[H, W]`` of the motion mask, computed on the work grid.

        ``flow`` may be in any camera frame (only differences of neighbours matter).

        On a strided grid, full-resolution motion pixels take the label of their grid cell,
        or of a neighbouring cell at object borders.
        """
        cfg = self.config
        st = self.stride
        H, W = motion.shape
        small, n = segment_instances(
            motion[::st, ::st], np.nan_to_num(points_cam[::st, ::st]),
            np.nan_to_num(flow[::st, ::st]), cfg.cluster_jump_rel, cfg.cluster_flow_jump_rel,
            flow_floor, max(3, int(cfg.min_instance_frac * H * W / st ** 2)))
        if st == 1:
            return small, n
        grown = ndimage.grey_dilation(small, size=(3, 3))
        small = np.where(small > 0, small, grown)
        full = np.repeat(np.repeat(small, st, axis=0), st, axis=1)[:H, :W]
        return np.where(motion, full, 0).astype(np.int32), n

    def _detections(self, labels, n_inst, pk: '_Pair', kf: WindowFrame, prev, scene_depth):
        """One :class:`Detection` per instance with enough points in both keyframe-pair maps."""
        cfg = self.config
        T_w_kf = kf.T_world_cam
        T_kf_w = se3_inverse(T_w_kf)
        # Pixels grouped by label: sort only the labelled pixels (a small part of the image).
        flat = np.where(pk.valid_flow, labels, 0).ravel()
        nz = np.flatnonzero(flat)
        order = nz[np.argsort(flat[nz], kind='stable')]
        bounds = np.searchsorted(flat[order], np.arange(1, n_inst + 2))
        rng = np.random.default_rng(cfg.seed)
        dets, det_labels = [], []

        def overlap(pix):
            if prev is None or prev[0].track_ids is None:
                return {}
            return warped_overlap(prev[1].j_ti.reshape(-1, 3)[pix], prev[0].K,
                                  prev[0].track_ids)

        for lab in range(1, n_inst + 1):
            pix = order[bounds[lab - 1]:bounds[lab]]
            n_pix = len(pix)
            if n_pix < 3:
                continue
            if n_pix > cfg.max_fit_points:  # the fit needs far fewer points than pixels
                pix = np.sort(rng.choice(pix, cfg.max_fit_points, replace=False))
            src = pk.j_ti.reshape(-1, 3)[pix].astype(np.float64)
            dst = pk.j_tj.reshape(-1, 3)[pix].astype(np.float64)
            # Residuals of a correct fit are differences of two noisy points, like the flow of
            # static pixels: its median (pk.noise) scales the inlier threshold, and its RMS
            # (1.13 x the median for a 3D Gaussian difference) is what noise alone explains.
            fit = fit_rigid_motion(src, dst, pk.conf_j.ravel()[pix],
                                   max(cfg.ransac_threshold_rel * scene_depth, 2.5 * pk.noise),
                                   cfg.rigid_residual_rel, cfg.ransac_iterations, cfg.seed + lab,
                                   noise_rms=1.13 * pk.noise)
            dets.append(Detection(
                points=se3_apply(T_w_kf, dst),
                motion=se3_compose(se3_compose(T_w_kf, fit.T), T_kf_w),
                inlier_ratio=fit.inlier_ratio, is_rigid=fit.is_rigid,
                residual_rel=fit.residual_rel, overlap=overlap(pix), pixel_count=n_pix))
            det_labels.append(lab)
        return dets, det_labels

    def _scale(self, cs: _CameraState, metric: bool, wf: WindowFrame, points_cam, valid):
        """(metres per window unit, is metric) from the engine, fixed scale or depth."""
        if metric:
            return 1.0, True
        if self.config.fixed_scale is not None:
            return float(self.config.fixed_scale), True
        if wf.depth is not None:  # a depth image without enough valid pixels is ignored
            s = depth_ratio(wf.depth, points_cam[..., 2], valid)
            if s is not None:
                cs.scales.append(s)
        if cs.scales:
            return float(np.median(cs.scales)), True
        return 1.0, False


class _Pair:
    """Confidence-gated views of one pair's maps (float32), scaled to window units.

    Image i's maps are only needed for the keyframe pair (focal, scene depth, tracks), and
    their full-size masks only sometimes: those are computed on first use.
    """

    def __init__(self, m: DynamicPointMaps, s: float, gate, keyframe: bool):
        def sc(a):
            return a if s == 1.0 else a * np.float32(s)

        self.j_ti, self.j_tj = sc(m.pts_j_ti), sc(m.pts_j_tj)
        self.conf_j = m.conf_j_tj
        self.valid_j = valid_mask(self.j_tj) & gate(m.conf_j_tj)
        self.valid_flow = self.valid_j & valid_mask(self.j_ti) & gate(m.conf_j_ti)
        self.flow_j = self.j_tj - self.j_ti  # current pixels, t_ref -> t, ref camera frame
        if keyframe:
            self.i_ti, self.i_tj = sc(m.pts_i_ti), sc(m.pts_i_tj)
            self._m, self._gate = m, gate
        # Filled by the motion stage: time gap, flow noise, motion threshold and the flow
        # motion was decided on (smoothed when noisy).
        self.dt = self.noise = self.threshold = 0.0
        self.flow_seg = self.flow_j

    @functools.cached_property
    def valid_i(self) -> np.ndarray:
        return valid_mask(self.i_ti) & self._gate(self._m.conf_i_ti)

    @functools.cached_property
    def valid_i_tj(self) -> np.ndarray:
        return valid_mask(self.i_tj) & self._gate(self._m.conf_i_tj)


def _masked(points: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``points`` with NaN where not ``valid``, in place (callers pass fresh arrays)."""
    points[~valid] = np.nan
    return points


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1e3


def _scaled(arr: np.ndarray, scale: float) -> np.ndarray:
    return arr if scale == 1.0 else arr * np.float32(scale)


def _scaled_pose(T: np.ndarray, scale: float) -> np.ndarray:
    T = T.copy()
    T[:3, 3] *= scale
    return T


def _scaled_object(o: TrackedObject, scale: float) -> TrackedObject:
    if scale == 1.0:
        return o
    o.T_world_obj = _scaled_pose(o.T_world_obj, scale)
    o.linear_velocity = o.linear_velocity * scale
    o.extent = o.extent * scale
    return o
