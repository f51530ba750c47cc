"""Pipeline accuracy against exact ground truth, and the noise study (``pointmap-noise-study``).

``evaluate_oracle`` runs :class:`~pointmap_ros.pipeline.DynamicReconPipeline` over a generated
scene through the :class:`~pointmap_ros.engines.oracle_engine.OracleEngine` and measures every
published quantity against the generator's exact ground truth; the oracle tests use it with
exact maps. ``main`` repeats it with Gaussian noise of several sizes on the maps and writes the
table of how each error grows to ``docs/pipeline_noise.md``.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pointmap_ros.data.scenes import SceneConfig
from pointmap_ros.engines.oracle_engine import OracleEngine
from pointmap_ros.geometry.transforms import pose_error, se3_apply, se3_compose, se3_inverse
from pointmap_ros.pipeline import DynamicReconPipeline, FrameInput, PipelineConfig

__all__ = ['EXACT_CONFIG', 'SequenceErrors', 'evaluate_oracle', 'id_switches', 'summarize',
           'demo_scene', 'main']

# Exact maps: any displacement is real motion, so the thresholds only need to beat float32
# rounding (the defaults are tuned for network noise).
EXACT_CONFIG = dict(motion_speed_rel=0.0, motion_min_rel=1e-4)


@dataclass
class SequenceErrors:
    """Per-frame errors of one run (lists over output frames)."""

    cam_trans: list = field(default_factory=list)      # metres
    cam_rot: list = field(default_factory=list)        # degrees
    flow: list = field(default_factory=list)           # metres (per pair gap), max over pixels
    flow_rms: list = field(default_factory=list)       # metres, RMS over valid pixels
    iou: list = field(default_factory=list)
    obj_trans: dict = field(default_factory=dict)      # gt id -> [metres]
    obj_rot: dict = field(default_factory=dict)        # gt id -> [degrees]
    # gt id -> per frame: majority published track id over its pixels (0 = none), or -1
    # when fewer than min_pixels of it are visible
    track_of: dict = field(default_factory=dict)
    keyframes: list = field(default_factory=list)
    outputs: list = field(default_factory=list)


def evaluate_oracle(scene: SceneConfig, config: PipelineConfig, frames=None, noise_std=0.0,
                    with_k=True, keep_outputs=False, min_pixels=30) -> SequenceErrors:
    """Run the pipeline over ``frames`` (default all) of ``scene`` and collect errors.

    Object pose errors compare the motion since a track's first frame,
    ``T(t) @ T(t0)^-1``, with the ground truth's: it does not depend on where the pipeline put
    the object frame. Only frames where the object is visible with >= ``min_pixels`` count.
    """
    engine = OracleEngine.from_scene(scene, seed=0, noise_std=noise_std, noise_seed=1)
    gen = engine.scene
    pipe = DynamicReconPipeline(engine, config)
    frames = list(range(gen.num_frames)) if frames is None else list(frames)
    err = SequenceErrors()
    first_pose: dict = {}
    rigid = {o.id for o in gen.objects if o.rigid}
    prev = None
    for t in frames:
        f = gen.render(t)
        out = pipe.process(FrameInput(image=f.rgb, stamp=f.stamp, camera_id='cam0',
                                      K=gen.K if with_k else None))
        if out is None:
            prev = t
            continue
        if keep_outputs:
            err.outputs.append(out)
        err.keyframes.append(out.keyframe_index)
        t_kf = frames[out.keyframe_index]
        T_world_cam_gt = se3_compose(se3_inverse(gen.camera_pose(frames[0])), f.T_world_cam)
        te, re = pose_error(out.T_world_cam, T_world_cam_gt)
        err.cam_trans.append(te)
        err.cam_rot.append(re)
        # Scene flow of the current pixels over the shortest pair, in the current camera.
        gt_prev = gen.pair_ground_truth(prev, t, dtype=np.float64)
        R_cam_prev = gt_prev.T_cami_camj[:3, :3].T
        flow_gt = gt_prev.flow_j @ R_cam_prev.T / out.flow_dt
        ok = out.valid & np.isfinite(out.flow).all(-1)
        d = np.linalg.norm(out.flow[ok] - flow_gt[ok], axis=1) * out.flow_dt
        err.flow.append(float(d.max()))
        err.flow_rms.append(float(np.sqrt(np.mean(d ** 2))))
        gt_motion = gt_prev.motion_j | gen.pair_ground_truth(t_kf, t).motion_j
        inter = np.count_nonzero(out.motion_mask & gt_motion)
        union = np.count_nonzero(out.motion_mask | gt_motion)
        err.iou.append(inter / union if union else 1.0)
        objects = {o.track_id: o for o in out.objects}
        for gid in sorted(o.id for o in gen.objects):
            sel = f.instance_ids == gid
            ids, counts = np.unique(out.instance_ids[sel], return_counts=True)
            tid = int(ids[np.argmax(counts)]) if sel.sum() >= min_pixels else -1
            err.track_of.setdefault(gid, []).append(tid)
            if gid not in rigid or tid <= 0 or tid not in objects:
                continue
            T_gt = se3_compose(se3_inverse(gen.camera_pose(frames[0])), f.object_poses[gid])
            T_est = objects[tid].T_world_obj
            if (gid, tid) not in first_pose:
                first_pose[(gid, tid)] = (T_est, T_gt)
                continue
            T_est0, T_gt0 = first_pose[(gid, tid)]
            _, re = pose_error(se3_compose(T_est, se3_inverse(T_est0)),
                               se3_compose(T_gt, se3_inverse(T_gt0)))
            # A motion's translation depends on the origin it is expressed at: compare where
            # both motions take the estimated object origin (the object's centroid at birth).
            c0 = T_est0[:3, 3]
            m_est = se3_apply(se3_compose(T_est, se3_inverse(T_est0)), c0)
            m_gt = se3_apply(se3_compose(T_gt, se3_inverse(T_gt0)), c0)
            err.obj_trans.setdefault(gid, []).append(float(np.linalg.norm(m_est - m_gt)))
            err.obj_rot.setdefault(gid, []).append(re)
        prev = t
    return err


def id_switches(track_of: dict) -> int:
    """Changes of the majority track id of each ground-truth object over frames it is seen."""
    n = 0
    for ids in track_of.values():
        seen = [i for i in ids if i > 0]
        n += sum(a != b for a, b in zip(seen, seen[1:]))
    return n


def summarize(err: SequenceErrors) -> dict:
    """Scalar summary of one run (lengths in mm, angles in degrees)."""
    def flat(d):
        vals = [v for vs in d.values() for v in vs]
        return np.array(vals) if vals else np.array([np.nan])

    ot, orr = flat(err.obj_trans), flat(err.obj_rot)
    missed = [i for ids in err.track_of.values() for i in ids if i >= 0]
    return {
        'cam_t_mean': 1e3 * np.mean(err.cam_trans), 'cam_t_max': 1e3 * np.max(err.cam_trans),
        'cam_r_max': np.max(err.cam_rot), 'flow_rms': 1e3 * np.mean(err.flow_rms),
        'iou_mean': np.mean(err.iou), 'iou_min': np.min(err.iou),
        'obj_t_med': 1e3 * np.median(ot), 'obj_t_max': 1e3 * np.max(ot),
        'obj_r_med': np.median(orr), 'obj_r_max': np.max(orr),
        'id_switches': id_switches(err.track_of),
        'untracked': float(np.mean([i == 0 for i in missed])) if missed else 0.0,
    }


def demo_scene(height=160, width=224, num_frames=24) -> SceneConfig:
    """The study's scene: 'demo' preset, 4 rigid objects, crossing + temporary occlusion."""
    return SceneConfig(height=height, width=width, num_frames=num_frames, fps=10.0,
                       preset='demo', num_objects=4, include_deformable=False)


def main(argv=None) -> int:
    """Write the noise table (markdown) to ``--out`` and print it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--levels', type=float, nargs='+',
                        default=[0.0, 0.0025, 0.005, 0.01, 0.02],
                        help='noise std as a fraction of the median depth')
    parser.add_argument('--out', type=Path, default=Path('docs/pipeline_noise.md'))
    parser.add_argument('--frames', type=int, default=24)
    args = parser.parse_args(argv)
    scene = demo_scene(num_frames=args.frames)
    rows = []
    for level in args.levels:
        tick = time.perf_counter()
        err = evaluate_oracle(scene, PipelineConfig(), noise_std=level)
        s = summarize(err)
        rows.append((level, s))
        print(f'noise {100 * level:.2f} %: {s} ({time.perf_counter() - tick:.1f} s)')
    depth = float(np.median(OracleEngine.from_scene(scene).scene.render(0).depth))
    lines = [
        '# Pipeline accuracy versus point-map noise',
        '',
        'Generated by `python -m pointmap_ros.tools.noise_study` (the oracle engine adds i.i.d.',
        'Gaussian noise of std = level x median depth to every coordinate of every map of every',
        f'pair). Scene: `demo_scene()`: {scene.height}x{scene.width}, {scene.num_frames} frames',
        f'at {scene.fps:g} fps, 4 rigid objects (crossing + temporary full occlusion), moving',
        f'camera, median depth {depth:.2f} m; default `PipelineConfig()`, K from CameraInfo.',
        '',
        'Columns: camera trajectory error (world = first frame) mean / max in mm and max in deg;',
        'RMS scene-flow error per pair gap (mm); motion-mask IoU mean / min; object motion',
        'error since each track\'s first frame, median / max (mm, deg), over frames the object is',
        'visible; ID switches over the sequence; fraction of visible object-frames without a',
        'published track.',
        '',
        '| noise (% depth) | sigma (mm) | cam mm mean / max | cam deg max | flow RMS mm '
        '| IoU mean / min | obj mm med / max | obj deg med / max | ID switches | untracked |',
        '|---|---|---|---|---|---|---|---|---|---|',
    ]
    for level, s in rows:
        lines.append(
            f'| {100 * level:.2f} | {1e3 * level * depth:.1f} '
            f'| {s["cam_t_mean"]:.2f} / {s["cam_t_max"]:.2f} | {s["cam_r_max"]:.3f} '
            f'| {s["flow_rms"]:.2f} | {s["iou_mean"]:.3f} / {s["iou_min"]:.3f} '
            f'| {s["obj_t_med"]:.2f} / {s["obj_t_max"]:.2f} '
            f'| {s["obj_r_med"]:.3f} / {s["obj_r_max"]:.3f} | {s["id_switches"]} '
            f'| {s["untracked"]:.2f} |')
    lines += [
        '',
        'Reading the table: the camera pose (PnP on thousands of static pixels) degrades',
        'gracefully, about linearly in sigma up to 1 %, faster beyond. Scene flow is a per-',
        'pixel difference of two noisy maps, so its RMS error is ~sqrt(6) sigma (sqrt(2) per',
        'coordinate) and no better: the published flow is not smoothed. Motion masks are the',
        'weak point: objects moving a few cm per frame fall below the noise floor, so when the',
        'flow is noisy the decision uses a 5x5 box-filtered flow, eroded by one pixel to limit',
        'the spread onto static borders; slow objects at the start and end of the sequence',
        '(where the scripted motions slow down) are then missed (IoU min 0 = an empty mask on',
        'such a frame). Object motions come from RANSAC + Umeyama on hundreds of',
        'correspondences (pixel pairing exact by construction, positions noisy) and stay within',
        'about a centimetre and a few degrees up to 0.5 %. Track identities survive the',
        'crossing and occlusion at every level; at 2 % most object-frames go untracked because',
        'the masks vanish. The 0 % row uses the default thresholds (tuned for noise), which',
        'miss a few very slow pixels; with `EXACT_CONFIG` (the oracle tests) IoU is 1.0 and all',
        'errors are ~1e-7.',
    ]
    text = '\n'.join(lines) + '\n'
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
