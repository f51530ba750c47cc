"""The pipeline with cross-time maps from correspondences, against exact ground truth.

Exactness: with the oracle's exact same-time maps and the scene's exact 2D correspondences
(``GroundTruthFlow``) in place of optical flow, the correspondence path must give what the
oracle's exact four maps give: the same camera poses, the same objects and tracks, the same
motion masks (up to the pixels no correspondence can judge: occlusion borders, flat texture
beyond an object's border rings) and the same
flow up to bilinear sampling.
"""

import dataclasses
import json
import threading

import cv2
import numpy as np
import pytest

from pointmap_ros.assets import SHIPPED_MODEL
from pointmap_ros.data.dataset import split_seeds
from pointmap_ros.data.scenes import SceneGenerator, varied_motion
from pointmap_ros.engines.factory import create_engine
from pointmap_ros.engines.oracle_engine import OracleEngine
from pointmap_ros.errors import PoseError
from pointmap_ros.evaluation.pipeline_eval import eval_scene, evaluate_sequence
from pointmap_ros.evaluation.true_flow import GroundTruthFlow
from pointmap_ros.geometry.epipolar import fit_camera_flow
from pointmap_ros.pipeline import DynamicReconPipeline, FrameInput, PipelineConfig
from pointmap_ros.pipeline.correspondence import DenseFlow
from pointmap_ros.pipeline.motion import aperture_metric
from pointmap_ros.tools import eval_pipeline
from pointmap_ros.tools.noise_study import EXACT_CONFIG, demo_scene
from pointmap_ros.tracking.tracker import TrackerConfig

# Exact inputs: any residual is real motion (thresholds only beat float rounding), no camera
# motion is "below the noise floor", no hysteresis (the four-map rule has none), and the same
# keyframe policy as the four-map run (exact correspondences do not degrade with the gap).
EXACT_CORRESPONDENCE = dict(EXACT_CONFIG, flow_min_px=0.01, flow_noise_mult=0.0,
                            camera_still_px=0.0, flow_hysteresis=1.0, flow_keyframe_max_age=0,
                            flow_keyframe_max_age_s=0.0)

MIN_GRADIENT = PipelineConfig().flow_min_gradient


@pytest.fixture(scope='module')
def exact_pair_of_runs():
    scene = demo_scene(height=120, width=160, num_frames=14)
    gen = SceneGenerator(scene, seed=0)
    four_map = DynamicReconPipeline(OracleEngine.from_scene(scene, seed=0),
                                    PipelineConfig(**EXACT_CONFIG))
    two_map = DynamicReconPipeline(OracleEngine.from_scene(scene, seed=0, two_map=True),
                                   PipelineConfig(**EXACT_CORRESPONDENCE),
                                   flow_source=GroundTruthFlow(gen))
    assert two_map.cross_time_source == 'correspondence'  # auto, withheld heads
    runs = []
    for t in range(scene.num_frames):
        frame = gen.render(t)
        inp = FrameInput(image=frame.rgb, stamp=frame.stamp, K=gen.K)
        runs.append((four_map.process(inp), two_map.process(inp)))
    return runs[1:]


def test_true_flow_gives_the_oracle_poses_and_tracks(exact_pair_of_runs):
    confirmed = TrackerConfig().min_hits - 1
    for index, (oracle, corr) in enumerate(exact_pair_of_runs):
        np.testing.assert_allclose(corr.T_world_cam, oracle.T_world_cam, atol=1e-6)
        assert corr.keyframe_index == oracle.keyframe_index
        if index >= confirmed:
            # Every oracle track exists with the same id. After the demo's full occlusion the
            # correspondence run may open one extra track for the re-emerging object: its
            # first frames back have no correspondence in the frame before (it was hidden).
            oracle_ids = {o.track_id for o in oracle.objects}
            corr_ids = {o.track_id for o in corr.objects}
            assert len(oracle_ids) == 4 and oracle_ids <= corr_ids
            assert len(corr_ids - oracle_ids) <= 1
        for a, b in zip(sorted(oracle.objects, key=lambda o: o.track_id),
                        sorted(corr.objects, key=lambda o: o.track_id)):
            # Object frames follow the visible mask's centroid and shape, and the masks differ
            # by the occlusion-border pixels no correspondence can judge (the demo's crossing
            # hides most of one object): the objects' motions must agree, not their origins,
            # wherever both runs observed the object (not coasting through the crossing). The
            # velocity is filtered over frames, so the coasting frames' history stays in it;
            # a newborn track's first velocity is a difference of two mask centroids.
            if not (a.point_count and b.point_count) or a.age < 4:
                continue
            speed = np.linalg.norm(a.linear_velocity)
            assert np.linalg.norm(a.linear_velocity - b.linear_velocity) < 0.1 * speed + 0.01


def test_true_flow_gives_the_oracle_masks_and_flow(exact_pair_of_runs):
    for oracle, corr in exact_pair_of_runs:
        inter = np.count_nonzero(oracle.motion_mask & corr.motion_mask)
        union = np.count_nonzero(oracle.motion_mask | corr.motion_mask)
        # The difference: occlusion borders and flat texture no correspondence can judge.
        assert inter / union > 0.92
        both = oracle.motion_mask & corr.motion_mask & oracle.flow_valid & corr.flow_valid
        error = np.linalg.norm(oracle.flow[both] - corr.flow[both], axis=-1)
        speed = np.median(np.linalg.norm(oracle.flow[both], axis=-1))
        # Bilinear reads on curved surfaces: ~1 mm per frame (0.01 m/s at 10 fps).
        assert np.median(error) < 0.01 + 0.02 * speed
        assert np.percentile(error, 95) < 0.03 + 0.06 * speed
        # Static pixels: exactly zero flow, and published wherever a point is.
        static = corr.valid & ~corr.motion_mask
        assert (corr.flow[static] == 0).all()
        assert corr.flow_valid[static].all()


@pytest.mark.parametrize('fps, frames, keyframes', [
    (10.0, 10, [0, 0, 0, 0, 4, 4, 4, 4, 8]),
    (30.0, 14, [0] * 12 + [12]),  # 0.4 s is 12 frames at 30 fps
    (2.0, 10, [0, 0, 0, 0, 4, 4, 4, 4, 8]),  # and never fewer than 4 frames
])
def test_static_camera_stays_put_with_estimated_flow(fps, frames, keyframes):
    scene = eval_scene(96, 128, static_camera=True, num_frames=frames, fps=fps)
    gen = SceneGenerator(scene, seed=3)
    pipe = DynamicReconPipeline(OracleEngine.from_scene(scene, seed=3, two_map=True))
    poses, output_keyframes, masked_frames = [], [], 0
    for t in range(scene.num_frames):
        frame = gen.render(t)
        out = pipe.process(FrameInput(image=frame.rgb, stamp=frame.stamp, K=gen.K))
        if out is not None:
            poses.append(out.T_world_cam)
            output_keyframes.append(out.keyframe_index)
            masked_frames += bool(out.motion_mask.any())
    # The objects still move: masked in every frame at 10 fps, the rate the thresholds were
    # chosen at; elsewhere up to 3 frames are not (at 30 fps the motion since the keyframe
    # starts below the motion threshold after the start and after each switch).
    assert masked_frames >= len(output_keyframes) - (0 if fps == 10.0 else 3)
    # Keyframes switch by age with correspondences (once 4 frames and 0.4 s old,
    # flow_keyframe_max_age[_s], whatever the frame rate), and a still camera keeps its pose
    # exactly across the switches: no drift accumulates.
    assert output_keyframes == keyframes
    assert all(np.array_equal(pose, np.eye(4)) for pose in poses)


def test_aperture_metric_ignores_motion_along_stripes():
    stripes = np.tile((np.arange(64) % 8 < 4).astype(np.uint8) * 200, (48, 1))  # vertical
    metric = aperture_metric(stripes, MIN_GRADIENT)
    along = np.zeros((48, 64, 2), np.float32)
    along[..., 1] = 2.0  # parallel to the stripes: unobservable
    across = np.zeros((48, 64, 2), np.float32)
    across[..., 0] = 2.0
    inner = (slice(8, -8), slice(8, -8))
    assert np.allclose(metric.length(along)[inner], 0, atol=1e-5)
    assert np.allclose(metric.length(across)[inner], 2.0, atol=1e-4)
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur((rng.random((48, 64)) * 255).astype(np.uint8), (0, 0), 1)
    isotropic = aperture_metric(texture, MIN_GRADIENT).length(along)[inner]
    assert np.median(isotropic) > 1.0  # textured: most of the length counts
    assert not aperture_metric(np.full((48, 64), 90, np.uint8), MIN_GRADIENT).textured.any()


def test_epipolar_fit_separates_static_and_moving_correspondences():
    rng = np.random.default_rng(1)
    K = np.array([[200.0, 0, 64], [0, 200.0, 48], [0, 0, 1]])
    points = rng.uniform([-2, -1.5, 3], [2, 1.5, 8], (400, 3))
    t = np.array([0.3, 0.0, 0.05])  # camera translation between the frames

    def project(p):
        return (p[:, :2] / p[:, 2:]) * 200.0 + [64, 48]

    src, dst = project(points), project(points - t)
    moving = np.arange(400) < 40
    dst[moving] += [0.0, 6.0]  # objects moving vertically: off the epipolar lines
    model = fit_camera_flow(src, dst, threshold_px=0.5)
    assert model.kind == 'fundamental'
    residual = model.residual(src, dst)
    assert np.percentile(residual[~moving], 95) < 0.5
    assert np.median(residual[moving]) > 2.0
    still = fit_camera_flow(src, src + rng.normal(0, 0.05, src.shape))
    assert still.kind == 'homography'


def test_eval_pipeline_scores_the_exact_oracle_perfectly(tmp_path):
    out = tmp_path / 'eval.json'
    eval_pipeline.main(['--engine', 'oracle', '--sequences', '1', '--static-sequences', '1',
                        '--frames', '8', '--size', '96x128', '--no-progress', '--json',
                        str(out)])
    result = json.loads(out.read_text())
    for key in ('motion_iou', 'flow_epe', 'flow_epe_zero', 'flow_epe_moving',
                'flow_epe_moving_zero', 'camera_ate_rel', 'static_camera_drift_rel',
                'objects_matched', 'objects_gt', 'objects_spurious', 'id_switches'):
        assert key in result, key
    assert result['motion_iou'] == 1.0
    assert result['flow_epe'] < 1e-6 < result['flow_epe_zero']
    assert result['camera_ate_rel'] < 1e-6 and result['static_camera_drift_rel'] < 1e-6
    assert result['objects_matched'] == result['objects_gt'] > 0
    assert result['objects_spurious'] == 0 and result['id_switches'] == 0
    assert result['split'] == 'test' and result['seeds'][0] == split_seeds('test', 1, 500)[0]
    eval_pipeline.main(['--engine', 'oracle', '--split', 'val', '--sequences', '1',
                        '--static-sequences', '0', '--frames', '6', '--size', '96x128',
                        '--no-progress', '--json', str(out)])
    assert json.loads(out.read_text())['seeds'] == split_seeds('val', 1, 500)


def test_eval_pipeline_varied_scenes_score_the_exact_oracle_perfectly(tmp_path):
    """``--vary-scenes``: each sequence's motion drawn from its seed, on seeds of their own;
    a drawn static camera is scored as one (its drift, no ATE)."""
    out = tmp_path / 'varied.json'
    eval_pipeline.main(['--engine', 'oracle', '--split', 'val', '--vary-scenes',
                        '--sequences', '2', '--static-sequences', '0', '--frames', '6',
                        '--size', '96x128', '--no-progress', '--json', str(out)])
    result = json.loads(out.read_text())
    seeds = split_seeds('val', 2, eval_pipeline.VARIED_SEED_OFFSET)
    assert result['vary_scenes'] is True and result['seeds'] == seeds
    assert varied_motion(seeds[0])['camera_amplitude'] == 0.0  # the static one
    # The mask fills holes under ``min_region_frac``: here a one-pixel gap in an object,
    # through which the static room shows, is masked in three frames.
    assert result['motion_iou'] > 0.999 and result['flow_epe'] < 1e-6
    assert result['objects_matched'] == result['objects_gt'] > 0
    assert result['static_camera_drift_rel'] < 1e-6 and result['camera_ate_rel'] < 1e-6


def test_eval_scene_takes_the_varied_motion_of_its_seed():
    varied = eval_scene(96, 128, varied_seed=1000701)
    drawn = varied_motion(1000701)
    assert {name: getattr(varied, name) for name in drawn} == drawn
    assert eval_scene(96, 128, static_camera=True, varied_seed=1000701).camera_amplitude == 0
    assert eval_scene(96, 128) == eval_scene(96, 128, varied_seed=None)
    assert eval_scene(96, 128).camera_amplitude == 0.3


def test_evaluate_sequence_counts_a_zero_flow_method_as_the_baseline():
    """The zero-flow baseline is what a pipeline publishing no motion scores."""
    scene = eval_scene(96, 128, num_frames=6)

    def zero_flow(scene_config, seed):
        return OracleEngine.from_scene(scene_config, seed=seed, two_map=True)

    score = evaluate_sequence(zero_flow, scene, 4, PipelineConfig(cross_time_source='network'))
    assert score.flow_err == pytest.approx(score.flow_zero, rel=1e-6)
    assert score.inter == 0  # nothing moves: no true positive


def test_shipped_model_tracks_nothing_on_static_structure():
    # The shipped model's maps are noisy enough that the per-pixel tests flag patches of
    # static structure; an object must move as a whole (detect_objects' motion_threshold).
    engine = create_engine('torch', checkpoint=str(SHIPPED_MODEL), device='cpu')
    height, width = engine.input_shape
    scene = dataclasses.replace(eval_scene(height, width, num_frames=12), num_objects=0,
                                include_deformable=False)
    score = evaluate_sequence(lambda *_: engine, scene, split_seeds('val', 1, 600)[0],
                              PipelineConfig(), camera_scale=2)
    assert score.frames == 11 and score.objects_spurious == 0


class _ThreadRecordingFlow:
    """DIS flow that notes the thread of each call, declared safe beside inference or not."""

    def __init__(self, concurrent: bool):
        self.dense = DenseFlow()
        self.concurrent_with_inference = concurrent
        self.threads = set()

    def pair_flow(self, ref, current, size):
        self.threads.add(threading.current_thread())  # objects: idents are reused
        return self.dense.pair_flow(ref, current, size)


def test_image_and_keyframe_work_run_beside_inference_with_identical_outputs():
    scene, seed = eval_scene(96, 128, num_frames=8), split_seeds('val', 1)[0]
    gen = SceneGenerator(scene, seed=seed)
    inputs = [FrameInput(image=f.rgb, stamp=f.stamp, K=gen.K)
              for f in (gen.render(t) for t in range(scene.num_frames))]
    runs = {}
    for concurrent in (False, True):
        source = _ThreadRecordingFlow(concurrent)
        pipeline = DynamicReconPipeline(
            OracleEngine.from_scene(scene, seed=seed, two_map=True), PipelineConfig(),
            flow_source=source)
        runs[concurrent] = [pipeline.process(inp) for inp in inputs[:5]]
        pipeline.close()  # ends the flow thread; the pipeline stays usable
        runs[concurrent] += [pipeline.process(inp) for inp in inputs[5:]]
        helper_threads = source.threads - {threading.current_thread()}
        # Beside inference: on a helper thread (a new one after close), never the caller's.
        assert len(helper_threads) == (2 if concurrent else 0)
        assert (threading.current_thread() in source.threads) != concurrent
    for serial, beside in zip(runs[False][1:], runs[True][1:]):
        np.testing.assert_array_equal(beside.T_world_cam, serial.T_world_cam)
        np.testing.assert_array_equal(beside.motion_mask, serial.motion_mask)
        np.testing.assert_array_equal(beside.flow, serial.flow)
        assert [o.track_id for o in beside.objects] == [o.track_id for o in serial.objects]
        # The keyframe stage ran beside the second pair's inference wherever there was one
        # (the keyframe is not the previous frame), its milliseconds reported apart.
        two_pairs = beside.keyframe_index < beside.frame_index - 1
        assert ('beside_inference' in beside.timings_ms) == two_pairs
        assert 'beside_inference' not in serial.timings_ms


class _OrderRecordingFlow:
    """DIS flow that notes, per current frame, the reference stamps in the order asked."""

    concurrent_with_inference = True

    def __init__(self):
        self.dense = DenseFlow()
        self.asked: dict[float, list[float]] = {}

    def pair_flow(self, ref, current, size):
        self.asked.setdefault(current.stamp, []).append(ref.stamp)
        return self.dense.pair_flow(ref, current, size)


def test_pairs_are_asked_nearest_reference_first_and_warm_started():
    scene, seed = eval_scene(96, 128, num_frames=8), split_seeds('val', 1)[0]
    gen = SceneGenerator(scene, seed=seed)
    source = _OrderRecordingFlow()
    pipeline = DynamicReconPipeline(OracleEngine.from_scene(scene, seed=seed, two_map=True),
                                    PipelineConfig(flow_keyframe_max_age_s=0.4), flow_source=source)
    warm_starts, chain_initial = [], source.dense._chain.initial

    def recorded_initial(*args):
        start = chain_initial(*args)
        warm_starts.append(start)
        return start

    source.dense._chain.initial = recorded_initial
    for t in range(scene.num_frames):
        frame = gen.render(t)
        pipeline.process(FrameInput(image=frame.rgb, stamp=frame.stamp, K=gen.K))
    pipeline.close()
    two_pairs = [stamps for stamps in source.asked.values() if len(stamps) == 2]
    assert two_pairs, 'the keyframe stayed behind the previous frame at least once'
    for stamps in source.asked.values():
        assert stamps == sorted(stamps, reverse=True)
    # Every pair but the first started from measured flows: the nearest ones from the
    # previous frame's motion, the keyframe ones (2+ frames back) from the chain.
    assert len(warm_starts) == sum(len(stamps) for stamps in source.asked.values())
    assert warm_starts[0] is None
    assert all(start is not None for start in warm_starts[1:])


class _NoPointsAt:
    """An engine whose pairs ending at the stamps in ``bad`` have no finite point."""

    def __init__(self, engine, bad_stamps):
        self._engine, self._bad = engine, set(bad_stamps)

    def infer(self, frame_i, frame_j):
        maps = self._engine.infer(frame_i, frame_j)
        if frame_j.stamp not in self._bad:
            return maps
        return dataclasses.replace(maps, **{name: np.full_like(getattr(maps, name), np.nan)
                                            for name in ('pts_i_ti', 'pts_i_tj',
                                                         'pts_j_ti', 'pts_j_tj')})

    def __getattr__(self, name):
        return getattr(self._engine, name)


def test_pose_error_raised_beside_inference_is_the_same_drop():
    """A keyframe pair without points fails on the helper thread: the caller gets the same
    PoseError as without the helper, and the next frames' outputs are unchanged."""
    scene, seed = eval_scene(96, 128, num_frames=8), split_seeds('val', 1)[0]
    gen = SceneGenerator(scene, seed=seed)
    frames = [gen.render(t) for t in range(scene.num_frames)]
    bad = {frames[3].stamp, frames[4].stamp}
    runs = {}
    for concurrent in (False, True):
        pipeline = DynamicReconPipeline(
            _NoPointsAt(OracleEngine.from_scene(scene, seed=seed, two_map=True), bad),
            PipelineConfig(), flow_source=_ThreadRecordingFlow(concurrent))
        results = []
        for frame in frames:
            try:
                results.append(pipeline.process(FrameInput(frame.rgb, frame.stamp, K=gen.K)))
            except PoseError as exc:
                results.append(exc)
        pipeline.close()
        runs[concurrent] = results
    for t, (serial, beside) in enumerate(zip(runs[False], runs[True])):
        if frames[t].stamp in bad:
            assert isinstance(serial, PoseError) and isinstance(beside, PoseError)
            assert beside.reason == serial.reason == 'no_points'
        elif t > 0:
            np.testing.assert_array_equal(beside.T_world_cam, serial.T_world_cam)
            np.testing.assert_array_equal(beside.motion_mask, serial.motion_mask)
