"""The whole streaming pipeline against exact ground truth, on held-out generated sequences.

Unlike ``pointmap-eval`` (one network pair at a time), this runs
:class:`~pointmap_ros.pipeline.DynamicReconPipeline` frame by frame -- window, correspondences,
pose, masks, tracker -- and scores what the node would publish.

Metrics (per sequence, then pooled over sequences; lengths relative to the sequence's median
ground-truth depth so scenes of any size weigh the same):

- ``motion_iou``: pooled intersection over union of the published motion mask with the
  ground-truth moving pixels (moved since the previous or the keyframe's time).
- ``flow_epe``: mean end-point error of the published scene flow of the current pixels over
  the shortest pair, ``|s * flow * dt - flow_gt|`` / depth, on every pixel with a published
  point (an unpublished flow counts as zero flow); ``s`` is the frame's median depth ratio
  (ground truth / published), the usual alignment of an up-to-scale reconstruction.
  ``flow_epe_zero``: the same for predicting zero flow. ``*_moving``: on ground-truth moving
  pixels only.
- ``camera_ate_rel``: RMS camera-position error after one similarity (Umeyama with scale)
  alignment of the whole published trajectory to the true one, over depth. Sequences with a
  static camera report ``static_camera_drift_rel`` instead: the largest distance of the
  published camera from its start, scaled by the median depth ratio, over depth.
- Objects: a published track is *on* ground-truth object g in a frame when most of its
  pixels lie on g; a track on no object in most of its frames is ``objects_spurious``; a
  ground-truth object (visible with >= ``min_pixels`` in >= 3 output frames) is
  ``objects_matched`` when some track is on it in at least half of those frames;
  ``id_switches`` counts changes of the majority track id over each object's pixels.
- Geometry: ``depth_absrel``, mean ``|z - z_gt| / z_gt`` of the published ``points_cam``
  over valid pixels, without any scale alignment on frames whose output is metric (else
  after the frame's median depth ratio); ``metric_frames``, the fraction of output frames
  flagged metric; ``object_centroid_err_m``, over every (track, frame) on a ground-truth
  object, the distance between the centroid of the track's published points and that of the
  true points of the same pixels, in metres (aligned like ``depth_absrel``): where the
  published objects are, not their tracked pose; ``object_velocity_err_mps``, over the same
  (published track, frame) pairs on rigid objects, the distance between the track's
  published linear velocity and the true velocity of the material point its frame's origin
  stands for (the point of the object under that origin, moved with the object's true
  motion), m/s, and ``object_speed_mps`` the mean true speed of those points, its scale;
  ``object_origin_err_m``, how far each such track's frame has left its object: the distance
  between its published origin and the material point that origin stood for in the first
  frame the track was published on that object, moved with the object's true motion.

With a depth sensor model (``pointmap-eval-pipeline --depth``) every frame comes with the
camera's depth degraded by :func:`~pointmap_ros.data.depth_sensor.degrade_depth` (seeded by
sequence and frame), as an RGB-D driver would publish it.

With an odometry model (``--odometry-noise``) every frame carries the camera pose the
robot's odometry reports (:func:`~pointmap_ros.data.odometry.odometry_poses`: drift growing
with distance plus jitter, seeded by sequence). Then also: ``odometry_ate_rel`` /
``odometry_drift_rel``, the same two trajectory metrics computed on the odometry's own poses
(the bound the fused estimate should meet). Whatever gave the metres (odometry, depth):
``metric_scale_err``, over sequences the mean of ``|median(s) - 1|`` with ``s`` the median
depth ratio (ground truth / published) of each metric output frame: how far the published
metres are off; ``metric_scale_err_frames_p90``, the 90th percentile of ``|s - 1|`` over
all metric frames, which adds the frame-to-frame scale noise of the maps.
"""

from __future__ import annotations

import collections
import dataclasses
from dataclasses import dataclass, field

import numpy as np

from pointmap_ros.data.depth_sensor import DepthSensorModel, degrade_depth
from pointmap_ros.data.odometry import OdometryModel, odometry_poses
from pointmap_ros.data.scenes import SceneConfig, SceneGenerator, varied_motion
from pointmap_ros.errors import PointmapError
from pointmap_ros.geometry.alignment import umeyama
from pointmap_ros.geometry.camera import unproject
from pointmap_ros.geometry.transforms import se3_apply, se3_compose, se3_inverse
from pointmap_ros.pipeline import DynamicReconPipeline, FrameInput, PipelineConfig

__all__ = ['SequenceScore', 'SequenceTrace', 'FrameSnapshot', 'evaluate_sequence', 'pool_scores',
           'eval_scene']


def eval_scene(height: int, width: int, static_camera: bool = False,
               num_frames: int = 24, varied_seed: int | None = None,
               plain_objects: bool = False, fps: float = 10.0) -> SceneConfig:
    """The held-out scene family: 'random' preset (box/sphere/cylinder + a deformable
    object), 10 fps; a static camera when asked. With ``varied_seed``, the motion settings
    that seed draws (:func:`~pointmap_ros.data.scenes.varied_motion`: object speed, camera
    amplitude or a static camera, 3-6 objects, an articulated one), a static camera still
    when asked. ``plain_objects``: the same scenes with untextured objects
    (``SceneConfig.plain_objects``). ``fps``: the frame rate; motion is a function of
    time, so the same seed moves the same way, in smaller steps per frame at a higher
    rate."""
    scene = SceneConfig(height=height, width=width, num_frames=num_frames, fps=fps,
                        preset='random', num_objects=3, include_deformable=True,
                        camera_amplitude=0.3, plain_objects=plain_objects)
    if varied_seed is not None:
        scene = dataclasses.replace(scene, **varied_motion(varied_seed))
    return dataclasses.replace(scene, camera_amplitude=0.0) if static_camera else scene


@dataclass
class SequenceScore:
    """Sums and lists of one sequence (pooled by :func:`pool_scores`)."""

    static_camera: bool
    inter: int = 0
    union: int = 0
    flow_err: float = 0.0
    flow_zero: float = 0.0
    flow_n: int = 0
    moving_err: float = 0.0
    moving_zero: float = 0.0
    moving_n: int = 0
    ate_rel: float = float('nan')
    drift_rel: float = float('nan')
    objects_gt: int = 0
    objects_matched: int = 0
    objects_spurious: int = 0
    id_switches: int = 0
    frames: int = 0
    dropped: int = 0
    depth_absrel: float = 0.0
    depth_n: int = 0
    metric_frames: int = 0
    centroid_err: float = 0.0
    centroid_n: int = 0
    velocity_err: float = 0.0
    velocity_speed: float = 0.0
    velocity_n: int = 0
    origin_err: float = 0.0
    origin_n: int = 0
    scales: list = field(default_factory=list)
    metric_scale_errors: list = field(default_factory=list)
    odometry_ate_rel: float = float('nan')
    odometry_drift_rel: float = float('nan')
    odometry_decisions: collections.Counter = field(default_factory=collections.Counter)
    trace: 'SequenceTrace | None' = None


@dataclass(frozen=True)
class FrameSnapshot:
    """One output frame as the figures show it (model resolution).

    Attributes:
        frame: frame number in the sequence.
        image: ``[H, W, 3]`` uint8 the scene at model resolution.
        motion: ``[H, W]`` bool the published motion mask.
        motion_true: ``[H, W]`` bool the pixels that truly moved (the mask's ground truth).
        track_ids: ``[H, W]`` int32 published track id per pixel (0 = none).
    """

    frame: int
    image: np.ndarray
    motion: np.ndarray
    motion_true: np.ndarray
    track_ids: np.ndarray


@dataclass
class SequenceTrace:
    """What one sequence looked like frame by frame, for the figures of
    :mod:`pointmap_ros.evaluation.pipeline_figures` (kept only when asked: it holds every
    output frame's image).

    Positions are in the world frame of the first camera (its optical axes: x right, y down,
    z forward), the pipeline's world as well as the true one; the true ones in metres, the
    published ones in the pipeline's units until :meth:`in_metres` converts them.

    Attributes:
        seed: the sequence's seed.
        static_camera: the camera stood still.
        frames: output frame numbers.
        mask_inter, mask_union: per output frame, the motion mask's intersection and union
            with the true moving pixels (pixels).
        moving_epe_m, moving_zero_m: per output frame, the mean scene-flow error over the
            truly moving pixels with a published point, and that of predicting zero flow,
            metres over the frame's gap (NaN without such pixels).
        camera: ``[N, 3]`` published camera positions.
        camera_true: ``[N, 3]`` true camera positions.
        odometry: ``[T, 3]`` positions the odometry reported (every frame), or None.
        tracks: track id -> list of ``(frame, position)`` of the published object frames'
            origins.
        objects_true: object id -> list of ``(frame, position)`` of the centroid of the
            object's visible points while it moves (>= ``min_pixels`` moving pixels).
        track_owners: track id -> the moving object it lay on in each of its frames (0 =
            none), as the object metrics decide it (most of its pixels).
        snapshots: every output frame (:class:`FrameSnapshot`).
        metres_per_unit: 1 when every output frame was metric, else the median depth ratio
            (truth / published), as the geometry metrics align an up-to-scale output. Units
            only: both worlds are the first camera's frame, and a similarity fitted to a
            short camera path (as the ATE uses) would turn distant objects by its rotation
            error (0.4 m at 4 m on a test sequence).
    """

    seed: int
    static_camera: bool
    frames: list = field(default_factory=list)
    mask_inter: list = field(default_factory=list)
    mask_union: list = field(default_factory=list)
    moving_epe_m: list = field(default_factory=list)
    moving_zero_m: list = field(default_factory=list)
    camera: list = field(default_factory=list)
    camera_true: list = field(default_factory=list)
    odometry: np.ndarray | None = None
    tracks: dict = field(default_factory=lambda: collections.defaultdict(list))
    objects_true: dict = field(default_factory=lambda: collections.defaultdict(list))
    track_owners: dict = field(default_factory=dict)
    snapshots: list = field(default_factory=list)
    metres_per_unit: float = 1.0

    def in_metres(self, positions: np.ndarray) -> np.ndarray:
        """Published positions ``[..., 3]`` in metres."""
        return self.metres_per_unit * np.asarray(positions, np.float64)


def _track_ownership(instance_ids: np.ndarray, gt_instances: np.ndarray,
                     gt_moving: np.ndarray) -> dict[int, int]:
    """Published track id -> ground-truth object id it lies on (0 = static / nothing)."""
    owners = {}
    for tid in np.unique(instance_ids):
        if tid <= 0:
            continue
        sel = instance_ids == tid
        labels = np.where(gt_moving[sel], gt_instances[sel], 0)
        ids, counts = np.unique(labels, return_counts=True)
        owners[int(tid)] = int(ids[np.argmax(counts)])
    return owners


def evaluate_sequence(engine_factory, scene: SceneConfig, seed: int,
                      config: PipelineConfig, min_pixels: int = 30,
                      camera_scale: int = 1,
                      depth_sensor: DepthSensorModel | None = None,
                      odometry: OdometryModel | None = None,
                      keep_trace: bool = False) -> SequenceScore:
    """Run the pipeline over one generated sequence and score it.

    Args:
        engine_factory: ``(scene_config, seed) -> Engine`` (a fresh engine per sequence, so
            an oracle serves this sequence's ground truth).
        scene, seed: the sequence at the model's resolution (ground truth is scored there).
        config: pipeline parameters.
        min_pixels: an object counts as visible in a frame with at least this many pixels.
        camera_scale: the camera's images (and CameraInfo) have this many times the model's
            rows and columns, as real cameras do; the same scene is ray-cast at both sizes
            (layout, motion and field of view depend on the seed only).
        depth_sensor: when given, each frame carries the camera's depth as this sensor
            measures it (:func:`degrade_depth`, seed ``1000 * seed + t``).
        odometry: when given, each frame carries the camera pose this odometry reports
            (:func:`odometry_poses` of the true trajectory, seed ``seed``).
        keep_trace: also record the sequence frame by frame (``score.trace``, a
            :class:`SequenceTrace`) for figures.
    """
    gen = SceneGenerator(scene, seed=seed)
    camera = gen if camera_scale == 1 else SceneGenerator(
        dataclasses.replace(scene, height=scene.height * camera_scale,
                            width=scene.width * camera_scale), seed=seed)
    engine = engine_factory(scene, seed)
    pipe = DynamicReconPipeline(engine, config)
    score = SequenceScore(static_camera=scene.camera_amplitude == 0)
    trace = SequenceTrace(seed, score.static_camera) if keep_trace else None
    T_world0 = se3_inverse(gen.camera_pose(0))
    positions, positions_gt, depth_scales = [], [], []
    owners_per_track = collections.defaultdict(list)
    seen_frames = collections.defaultdict(int)
    on_frames = collections.defaultdict(lambda: collections.defaultdict(int))
    majority = collections.defaultdict(list)
    prev = None
    first_depth = None
    # A deforming object has no one velocity: velocities are scored on rigid ones.
    rigid_objects = {info.id for info in gen.objects if info.rigid}
    origin_points = {}  # track id -> (object id, its origin in the object's own frame)
    true_poses = np.stack([gen.camera_pose(t) for t in range(gen.num_frames)])
    odometry_readings = (None if odometry is None
                         else odometry_poses(true_poses, odometry, seed=seed))
    for t in range(gen.num_frames):
        frame = gen.render(t)
        camera_frame = frame if camera is gen else camera.render(t)
        depth = (None if depth_sensor is None else
                 degrade_depth(camera_frame.depth, depth_sensor, seed=1000 * seed + t))
        try:
            out = pipe.process(FrameInput(
                image=camera_frame.rgb, stamp=frame.stamp, camera_id='cam0', K=camera.K,
                depth=depth,
                T_odom_cam=None if odometry_readings is None else odometry_readings[t]))
        except PointmapError:  # a documented drop (e.g. no pose): scored as missing output
            score.dropped += 1
            continue
        if out is None:
            prev = t
            continue
        score.frames += 1
        depth_gt = frame.depth
        if first_depth is None:
            valid_gt = np.isfinite(depth_gt) & (depth_gt > 0)
            first_depth = float(np.median(depth_gt[valid_gt]))
        # Up-to-scale output: align each frame by its median depth ratio.
        ok = out.valid & np.isfinite(depth_gt) & (depth_gt > 0)
        scale = float(np.median(depth_gt[ok] / out.points_cam[..., 2][ok])) if ok.any() else 1.0
        depth_scales.append(scale)
        # Geometry: metric output is scored as published, up-to-scale output aligned.
        geometry_scale = 1.0 if out.metric_scale else scale
        score.metric_frames += int(out.metric_scale)
        if out.metric_scale:
            score.metric_scale_errors.append(scale - 1.0)
        score.odometry_decisions[out.odometry] += 1
        z = out.points_cam[..., 2][ok] * geometry_scale
        score.depth_absrel += float(np.sum(np.abs(z - depth_gt[ok]) / depth_gt[ok]))
        score.depth_n += int(np.count_nonzero(ok))
        true_points = unproject(np.where(ok, depth_gt, np.nan).astype(np.float32),
                                gen.K).astype(np.float32)
        # Motion mask against the pixels that moved since the previous or keyframe's time.
        gt_prev = gen.pair_ground_truth(prev, t, dtype=np.float64)
        t_kf = out.keyframe_index  # frames are never skipped here: index == frame number
        gt_moving = gt_prev.motion_j | gen.pair_ground_truth(t_kf, t).motion_j
        inter = int(np.count_nonzero(out.motion_mask & gt_moving))
        union = int(np.count_nonzero(out.motion_mask | gt_moving))
        score.inter += inter
        score.union += union
        # Scene flow of the current pixels over the shortest pair, in the current camera.
        R_cam_prev = gt_prev.T_cami_camj[:3, :3].T
        flow_gt = gt_prev.flow_j @ R_cam_prev.T
        flow = np.where(out.flow_valid[..., None], out.flow * out.flow_dt, 0.0) * scale
        err = np.linalg.norm(flow - flow_gt, axis=-1) / first_depth
        zero = np.linalg.norm(flow_gt, axis=-1) / first_depth
        sel = out.valid & gt_prev.valid_j
        score.flow_err += float(err[sel].sum())
        score.flow_zero += float(zero[sel].sum())
        score.flow_n += int(sel.sum())
        moving = sel & gt_prev.motion_j
        moving_err, moving_zero = float(err[moving].sum()), float(zero[moving].sum())
        score.moving_err += moving_err
        score.moving_zero += moving_zero
        score.moving_n += int(moving.sum())
        # Trajectory (world = the first camera).
        positions.append(out.T_world_cam[:3, 3].copy())
        T_world_cam_true = se3_compose(T_world0, frame.T_world_cam)
        positions_gt.append(T_world_cam_true[:3, 3])
        # Objects.
        owners = _track_ownership(out.instance_ids, frame.instance_ids, gt_moving)
        published_objects = {obj.track_id: obj for obj in out.objects}
        for tid, gid in owners.items():
            owners_per_track[tid].append(gid)
            on_object = ok & (out.instance_ids == tid) & (frame.instance_ids == gid)
            if gid > 0 and on_object.any():
                published = out.points_cam[on_object].mean(axis=0) * geometry_scale
                score.centroid_err += float(np.linalg.norm(
                    published - true_points[on_object].mean(axis=0)))
                score.centroid_n += 1
            if gid in rigid_objects and tid in published_objects:
                obj = published_objects[tid]
                origin = obj.T_world_obj[:3, 3] * geometry_scale
                true_velocity = _material_velocity(gen, gid, frame.stamp, T_world0, origin)
                score.velocity_err += float(np.linalg.norm(
                    obj.linear_velocity * geometry_scale - true_velocity))
                score.velocity_speed += float(np.linalg.norm(true_velocity))
                score.velocity_n += 1
                # The object frame is attached to the object: its origin must stay on the
                # material point it stood for when the track was first published on it.
                if tid not in origin_points:
                    origin_points[tid] = (gid, _attach(gen, gid, frame.stamp, T_world0, origin))
                attached = origin_points[tid]
                if attached[0] == gid:
                    score.origin_err += float(np.linalg.norm(
                        origin - _attached_position(gen, gid, frame.stamp, T_world0,
                                                    attached[1])))
                    score.origin_n += 1
        for gid in np.unique(frame.instance_ids[gt_moving]):
            if gid <= 0 or np.count_nonzero((frame.instance_ids == gid) & gt_moving) < min_pixels:
                continue
            seen_frames[int(gid)] += 1
            for tid, owner in owners.items():
                if owner == gid:
                    on_frames[int(gid)][tid] += 1
            ids, counts = np.unique(out.instance_ids[frame.instance_ids == gid],
                                    return_counts=True)
            majority[int(gid)].append(int(ids[np.argmax(counts)]))
        if trace is not None:
            _record_frame(trace, t, frame, out, gt_moving, T_world_cam_true, min_pixels,
                          (inter, union), (moving_err, moving_zero, int(moving.sum())),
                          first_depth)
        prev = t
    score.scales = depth_scales
    if positions:
        alignment = _trajectory_alignment(np.array(positions), np.array(positions_gt),
                                          score.static_camera, float(np.median(depth_scales)))
        score.drift_rel, score.ate_rel = _trajectory_errors(
            np.array(positions), np.array(positions_gt), score.static_camera, alignment,
            first_depth)
        if trace is not None and score.metric_frames < score.frames:
            trace.metres_per_unit = float(np.median(depth_scales))
    if odometry_readings is not None and first_depth is not None:
        odometry_positions = se3_compose(se3_inverse(odometry_readings[0]),
                                         odometry_readings)[:, :3, 3]
        true_positions = se3_compose(T_world0, true_poses)[:, :3, 3]
        score.odometry_drift_rel, score.odometry_ate_rel = _trajectory_errors(
            odometry_positions, true_positions, score.static_camera,
            _trajectory_alignment(odometry_positions, true_positions, score.static_camera, 1.0),
            first_depth)
        if trace is not None:
            trace.odometry = odometry_positions
    for gid, n_seen in seen_frames.items():
        if n_seen < 3:
            continue
        score.objects_gt += 1
        if on_frames[gid] and max(on_frames[gid].values()) >= 0.5 * n_seen:
            score.objects_matched += 1
        seen = [tid for tid in majority[gid] if tid > 0]
        score.id_switches += sum(a != b for a, b in zip(seen, seen[1:]))
    for tid, gids in owners_per_track.items():
        if sum(g == 0 for g in gids) > 0.5 * len(gids):
            score.objects_spurious += 1
    if trace is not None:
        trace.track_owners = dict(owners_per_track)
    score.trace = trace
    return score


def _attach(gen: SceneGenerator, object_id: int, time_s: float, T_world0: np.ndarray,
            position: np.ndarray) -> np.ndarray:
    """The point at ``position`` (the first camera's world, metres) at ``time_s`` in the
    frame of object ``object_id``: the material point that moves with it."""
    T_obj_world0 = se3_compose(se3_inverse(gen.object_pose_at(object_id, time_s)),
                               se3_inverse(T_world0))
    return se3_apply(T_obj_world0, position)


def _attached_position(gen: SceneGenerator, object_id: int, time_s: float,
                       T_world0: np.ndarray, attached: np.ndarray) -> np.ndarray:
    """Where the material point ``attached`` (:func:`_attach`) of object ``object_id`` is
    at ``time_s``, in the first camera's world."""
    return se3_apply(se3_compose(T_world0, gen.object_pose_at(object_id, time_s)), attached)


def _material_velocity(gen: SceneGenerator, object_id: int, time_s: float,
                       T_world0: np.ndarray, position: np.ndarray,
                       half_step: float = 1e-3) -> np.ndarray:
    """True velocity (m/s, the first camera's world axes) of the material point of object
    ``object_id`` that is at ``position`` (first camera's world, metres) at ``time_s``: the
    point the published object frame's origin stands for, moved with the object's true
    motion (a central difference of ``+-half_step`` s)."""
    attached = _attach(gen, object_id, time_s, T_world0, position)
    before, after = (_attached_position(gen, object_id, time_s + step, T_world0, attached)
                     for step in (-half_step, half_step))
    return (after - before) / (2 * half_step)


def _record_frame(trace: SequenceTrace, t: int, frame, out, motion_true: np.ndarray,
                  T_world_cam_true: np.ndarray, min_pixels: int, mask: tuple[int, int],
                  moving_flow: tuple[float, float, int], depth: float) -> None:
    """Append output frame ``t`` to ``trace`` (:class:`SequenceTrace`; flow sums in units
    of ``depth``, as the metrics sum them)."""
    trace.frames.append(t)
    trace.mask_inter.append(mask[0])
    trace.mask_union.append(mask[1])
    moving_err, moving_zero, moving_n = moving_flow
    trace.moving_epe_m.append(moving_err * depth / moving_n if moving_n else float('nan'))
    trace.moving_zero_m.append(moving_zero * depth / moving_n if moving_n else float('nan'))
    trace.camera.append(out.T_world_cam[:3, 3].copy())
    trace.camera_true.append(T_world_cam_true[:3, 3].copy())
    for obj in out.objects:
        trace.tracks[obj.track_id].append((t, obj.T_world_obj[:3, 3].copy()))
    depth_true = np.where(np.isfinite(frame.depth) & (frame.depth > 0), frame.depth, np.nan)
    points_true = unproject(depth_true.astype(np.float32), frame.K).astype(np.float32)
    for gid in np.unique(frame.instance_ids[motion_true]):
        visible = (frame.instance_ids == gid) & np.isfinite(points_true[..., 2])
        if gid <= 0 or np.count_nonzero(visible & motion_true) < min_pixels:
            continue
        centroid = points_true[visible].astype(np.float64).mean(axis=0)
        trace.objects_true[int(gid)].append(
            (t, T_world_cam_true[:3, :3] @ centroid + T_world_cam_true[:3, 3]))
    trace.snapshots.append(FrameSnapshot(t, frame.rgb, out.motion_mask.copy(), motion_true,
                                         out.instance_ids.astype(np.int32)))


def _trajectory_alignment(positions: np.ndarray, true_positions: np.ndarray,
                          static_camera: bool, scale: float) -> tuple:
    """``(R, t, s)`` mapping published positions onto the true ones: Umeyama with scale
    for a moving camera (at least 3 positions), else the given ``scale`` alone (a standing
    camera's path has no shape to align; both worlds are the first camera's frame)."""
    if static_camera or len(positions) < 3:
        return np.eye(3), np.zeros(3), float(scale)
    R, translation, similarity_scale = umeyama(positions, true_positions, with_scale=True)
    return R, translation, float(similarity_scale)


def _trajectory_errors(positions: np.ndarray, true_positions: np.ndarray, static_camera: bool,
                       alignment: tuple, depth: float) -> tuple[float, float]:
    """``(drift_rel, ate_rel)`` of a trajectory (module docstring): drift for a static
    camera (largest distance from the start, scaled), ATE after the similarity
    ``alignment`` otherwise; the other one NaN."""
    R, translation, scale = alignment
    if static_camera:
        drift = float(np.max(np.linalg.norm(positions - positions[0], axis=1)))
        return drift * scale / depth, float('nan')
    if len(positions) < 3:
        return float('nan'), float('nan')
    aligned = scale * positions @ R.T + translation
    return float('nan'), float(np.sqrt(np.mean(np.sum((aligned - true_positions) ** 2,
                                                        axis=1))) / depth)


def pool_scores(scores: list[SequenceScore]) -> dict:
    """The JSON summary of ``pointmap-eval-pipeline`` (module docstring)."""
    moving = [s for s in scores if not s.static_camera]
    static = [s for s in scores if s.static_camera]

    def ratio(num, den):
        n, d = sum(num), sum(den)
        return n / d if d else float('nan')

    def mean(values):
        values = [v for v in values if np.isfinite(v)]
        return float(np.mean(values)) if values else None

    return {
        'sequences': len(scores),
        'static_camera_sequences': len(static),
        'frames': sum(s.frames for s in scores),
        'dropped_frames': sum(s.dropped for s in scores),
        'motion_iou': ratio([s.inter for s in scores], [s.union for s in scores]),
        'flow_epe': ratio([s.flow_err for s in scores], [s.flow_n for s in scores]),
        'flow_epe_zero': ratio([s.flow_zero for s in scores], [s.flow_n for s in scores]),
        'flow_epe_moving': ratio([s.moving_err for s in scores], [s.moving_n for s in scores]),
        'flow_epe_moving_zero': ratio([s.moving_zero for s in scores],
                                      [s.moving_n for s in scores]),
        'camera_ate_rel': mean([s.ate_rel for s in moving]),
        'static_camera_drift_rel': max((s.drift_rel for s in static), default=None),
        'objects_gt': sum(s.objects_gt for s in scores),
        'objects_matched': sum(s.objects_matched for s in scores),
        'objects_spurious': sum(s.objects_spurious for s in scores),
        'objects_spurious_max_per_sequence': max((s.objects_spurious for s in scores),
                                                 default=0),
        'id_switches': sum(s.id_switches for s in scores),
        'depth_absrel': ratio([s.depth_absrel for s in scores], [s.depth_n for s in scores]),
        'metric_frames': ratio([s.metric_frames for s in scores], [s.frames for s in scores]),
        'object_centroid_err_m': ratio([s.centroid_err for s in scores],
                                       [s.centroid_n for s in scores]),
        'object_velocity_err_mps': ratio([s.velocity_err for s in scores],
                                         [s.velocity_n for s in scores]),
        'object_speed_mps': ratio([s.velocity_speed for s in scores],
                                  [s.velocity_n for s in scores]),
        'object_origin_err_m': ratio([s.origin_err for s in scores],
                                     [s.origin_n for s in scores]),
        'scale_variation': mean([float(np.std(s.scales) / np.mean(s.scales))
                                 for s in scores if len(s.scales) > 1]),
        **_odometry_summary(scores, moving, static),
    }


def _odometry_summary(scores: list[SequenceScore], moving: list[SequenceScore],
                      static: list[SequenceScore]) -> dict:
    """The odometry and metric-scale part of the summary (empty keys stay None)."""
    sequence_errors = [abs(float(np.median(s.metric_scale_errors))) for s in scores
                       if s.metric_scale_errors]
    frame_errors = np.abs([error for s in scores for error in s.metric_scale_errors])
    decisions = sum((s.odometry_decisions for s in scores), collections.Counter())
    odometry_ate = [s.odometry_ate_rel for s in moving if np.isfinite(s.odometry_ate_rel)]
    return {
        'metric_scale_err': float(np.mean(sequence_errors)) if sequence_errors else None,
        'metric_scale_err_frames_p90': (float(np.percentile(frame_errors, 90))
                                        if frame_errors.size else None),
        'odometry_ate_rel': float(np.mean(odometry_ate)) if odometry_ate else None,
        'odometry_drift_rel': max((s.odometry_drift_rel for s in static
                                   if np.isfinite(s.odometry_drift_rel)), default=None),
        'odometry_decisions': dict(decisions),
    }
