"""The odometry prior (pipeline/odometry_prior.py): its pieces on poses with known answers,
then inside the pipeline with a perfect but up-to-scale engine and exact or corrupted odometry.
"""

import dataclasses

import numpy as np
import pytest

from pointmap_ros.data.odometry import ROBOT_CAMERA_MOUNT, OdometryModel, odometry_poses
from pointmap_ros.data.scenes import SceneConfig, SceneGenerator
from pointmap_ros.engines.oracle_engine import OracleEngine
from pointmap_ros.errors import ConfigError, InputError
from pointmap_ros.evaluation.true_flow import GroundTruthFlow
from pointmap_ros.geometry.transforms import (
    rotation_angle, rotvec_to_rotmat, se3_compose, se3_from_rt, se3_inverse)
from pointmap_ros.pipeline import DynamicReconPipeline, FrameInput, PipelineConfig
from pointmap_ros.pipeline.odometry_prior import (
    OdometryPrior, fuse_pose, relative_odometry, reprojection_error, scale_sample,
    window_units_per_metre)

K = np.array([[100.0, 0.0, 32.0], [0.0, 100.0, 24.0], [0.0, 0.0, 1.0]])
GATES = dict(max_angle_deg=2.0, max_translation_rel=0.02, stride=1)


def _seen_points(T_kf_cam: np.ndarray, height: int = 48, width: int = 64) -> np.ndarray:
    """``[H, W, 3]`` points in the keyframe camera that the camera at ``T_kf_cam`` sees at
    each of its pixels (a fronto-parallel wall 4 m ahead of it): exact ``P_t(t)``."""
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    rays = np.stack([(cols - K[0, 2]) / K[0, 0], (rows - K[1, 2]) / K[1, 1],
                     np.ones_like(cols)], axis=-1)
    points_cam = rays * 4.0
    return points_cam @ T_kf_cam[:3, :3].T + T_kf_cam[:3, 3]


def test_relative_odometry_ignores_the_odometry_origin():
    T_ref = se3_from_rt(rotvec_to_rotmat([0.1, 0.2, 0.0]), [1.0, 2.0, 0.5])
    T_step = se3_from_rt(rotvec_to_rotmat([0.0, 0.05, 0.0]), [0.1, 0.0, 0.3])
    origin = se3_from_rt(rotvec_to_rotmat([0.3, -0.2, 1.0]), [5.0, -3.0, 2.0])
    relative = relative_odometry(origin @ T_ref, origin @ T_ref @ T_step)
    np.testing.assert_allclose(relative, T_step, atol=1e-12)
    assert relative_odometry(None, T_ref) is None and relative_odometry(T_ref, None) is None


@pytest.mark.parametrize('units', [0.5, 3.0])
def test_scale_sample_measures_window_units_per_metre(units):
    """Exact points in window units seen from a camera the odometry moved by 30 cm: the
    parallax gives the units exactly, whatever the rotation; too small a move gives none."""
    T_odometry_m = se3_from_rt(rotvec_to_rotmat([0.02, 0.05, 0.0]), [0.3, 0.05, 0.1])
    T_window = se3_from_rt(T_odometry_m[:3, :3], units * T_odometry_m[:3, 3])
    points = _seen_points(T_window) * 1.0  # window units: the wall is 4 units ahead
    pixels = np.stack(np.meshgrid(np.arange(64.0), np.arange(48.0)), axis=-1).reshape(-1, 2)
    points = points.reshape(-1, 3)
    value, parallax_per_unit = scale_sample(points, pixels, K, T_odometry_m, 0.5)
    assert value == pytest.approx(units, rel=1e-9)
    # the wall is 4 units = 4 / units metres ahead; 30 cm sideways, f = 100 px
    assert parallax_per_unit * units == pytest.approx(100 * 0.3 * units / 4, rel=0.3)
    # the same move 100 x shorter shows as sub-pixel parallax: no sample
    short = se3_from_rt(T_odometry_m[:3, :3], 0.01 * T_odometry_m[:3, 3])
    short_points = _seen_points(se3_from_rt(short[:3, :3], units * short[:3, 3])).reshape(-1, 3)
    assert scale_sample(short_points, pixels, K, short, 0.5) is None
    # outliers (a fifth of the points moved) do not move the weighted median
    moved = points.copy()
    moved[::5] += [0.3, 0.0, 0.0]
    assert scale_sample(moved, pixels, K, T_odometry_m, 0.5)[0] == pytest.approx(units,
                                                                                rel=0.02)


def test_the_window_trusts_samples_with_more_parallax():
    assert window_units_per_metre([]) is None
    # two low-parallax samples are outweighed by one with three times their parallax
    assert window_units_per_metre([(0.45, 1.0), (0.46, 1.0), (0.5, 3.0)]) == 0.5


def test_reprojection_error_is_zero_under_the_true_pose_only():
    true_pose = se3_from_rt(rotvec_to_rotmat([0.0, 0.03, 0.0]), [0.3, 0.0, 0.2])
    points = _seen_points(true_pose)
    static = np.ones(points.shape[:2], bool)
    assert reprojection_error(true_pose, points, static, K, 1) == pytest.approx(0, abs=1e-9)
    wrong = se3_from_rt(true_pose[:3, :3], true_pose[:3, 3] + [0.2, 0.0, 0.0])
    # 0.2 m sideways at 4 m with f = 100 px: 5 px
    assert reprojection_error(wrong, points, static, K, 1) == pytest.approx(5.0, rel=0.05)
    assert reprojection_error(true_pose, points, ~static, K, 1) == float('inf')


@pytest.mark.parametrize('weight', [0.0, 0.8, 1.0])
def test_agreeing_poses_are_blended_by_the_weight(weight):
    units = 0.5  # window units per metre
    T_odometry_m = se3_from_rt(rotvec_to_rotmat([0.0, 0.01, 0.0]), [0.4, 0.0, 0.2])
    T_map = se3_from_rt(rotvec_to_rotmat([0.0, 0.012, 0.0]),
                        units * T_odometry_m[:3, 3] + [0.002, 0.0, 0.0])
    prior = OdometryPrior(T_odometry_m, units)
    points = _seen_points(prior.T_kf_cam)
    static = np.ones(points.shape[:2], bool)
    fused, decision = fuse_pose(T_map, prior, points, static, K, scene_depth=2.0,
                                weight=weight, **GATES)
    assert decision == 'fused'
    np.testing.assert_allclose(fused[:3, 3], (1 - weight) * T_map[:3, 3]
                               + weight * prior.T_kf_cam[:3, 3], atol=1e-12)
    angle = rotation_angle(fused[:3, :3] @ rotvec_to_rotmat([0.0, -0.012, 0.0]))
    assert angle == pytest.approx(weight * 0.002, abs=1e-9)


@pytest.mark.parametrize('truth', ['odometry', 'maps'])
def test_disagreeing_poses_are_judged_by_the_static_pixels(truth):
    units = 0.5
    T_odometry_m = se3_from_rt(rotvec_to_rotmat([0.0, 0.02, 0.0]), [0.6, 0.0, 0.2])
    prior = OdometryPrior(T_odometry_m, units)
    T_map = se3_from_rt(rotvec_to_rotmat([0.0, 0.02, 0.0]), [0.1, 0.0, 0.1])  # far apart
    true_pose = prior.T_kf_cam if truth == 'odometry' else T_map
    points = _seen_points(true_pose)
    static = np.ones(points.shape[:2], bool)
    fused, decision = fuse_pose(T_map, prior, points, static, K, scene_depth=2.0,
                                weight=0.8, **GATES)
    assert decision == truth
    np.testing.assert_allclose(fused, true_pose, atol=1e-12)


def test_failed_maps_leave_the_odometry_once_it_has_a_scale():
    T_odometry_m = se3_from_rt(np.eye(3), [0.2, 0.0, 0.0])
    points = _seen_points(np.eye(4))
    static = np.ones(points.shape[:2], bool)
    fused, decision = fuse_pose(None, OdometryPrior(T_odometry_m, 2.0), points, static, K,
                                2.0, 0.8, **GATES)
    assert decision == 'odometry'
    np.testing.assert_allclose(fused[:3, 3], [0.4, 0.0, 0.0])
    assert fuse_pose(None, OdometryPrior(T_odometry_m, None), points, static, K, 2.0, 0.8,
                     **GATES) == (None, 'none')


# -- inside the pipeline --------------------------------------------------------------------

SCENE = SceneConfig(height=96, width=128, num_frames=10, fps=10.0, preset='random',
                    num_objects=3, camera_amplitude=0.3)


def _run(odometry: np.ndarray | None, units_per_metre: float = 0.5, seed: int = 3,
         config: PipelineConfig = PipelineConfig(), exact_flow: bool = False,
         camera_scale: int = 1):
    """Outputs of the pipeline over SCENE with a perfect up-to-scale engine and the given
    odometry readings (one per frame, or None); DIS optical flow unless ``exact_flow``,
    on camera images ``camera_scale`` times the model's size (as real cameras are)."""
    gen = SceneGenerator(SCENE, seed=seed)
    camera = gen if camera_scale == 1 else SceneGenerator(dataclasses.replace(
        SCENE, height=SCENE.height * camera_scale, width=SCENE.width * camera_scale), seed=seed)
    engine = OracleEngine.from_scene(SCENE, seed=seed, two_map=True,
                                     units_per_metre=units_per_metre)
    pipe = DynamicReconPipeline(engine, config,
                                flow_source=GroundTruthFlow(gen) if exact_flow else None)
    outputs = []
    for t in range(SCENE.num_frames):
        frame = gen.render(t)
        image = frame.rgb if camera is gen else camera.render(t).rgb
        out = pipe.process(FrameInput(image=image, stamp=frame.stamp, K=camera.K,
                                      T_odom_cam=None if odometry is None else odometry[t]))
        if out is not None:
            outputs.append((t, frame, out))
    return gen, outputs


def _exact_odometry(seed: int = 3) -> np.ndarray:
    gen = SceneGenerator(SCENE, seed=seed)
    truth = np.stack([gen.camera_pose(t) for t in range(gen.num_frames)])
    return odometry_poses(truth, OdometryModel(0.0, 0.0, 0.0))


@pytest.mark.parametrize('exact_flow, scale_rtol', [(True, 0.01), (False, 0.03)])
def test_exact_odometry_makes_an_up_to_scale_engine_metric(exact_flow, scale_rtol):
    """Exact maps in half metres + exact odometry: metric points and poses, the scale
    measured from the odometry's parallax alone. With the true 2D flow the metres are right
    to the depth sampling (nearest pixel: 1 %); with DIS flow on a camera of twice the
    model's size (the flow runs at 256 pixels across) within the 3 % the issue asks. (At
    128 pixels DIS shrinks this slow scene's sub-pixel parallax by up to 4 %.)"""
    gen, outputs = _run(_exact_odometry(), exact_flow=exact_flow,
                        camera_scale=1 if exact_flow else 2)
    T_world0 = se3_inverse(gen.camera_pose(0))
    metric = [(t, frame, out) for t, frame, out in outputs if out.metric_scale]
    assert len(metric) >= len(outputs) - 2  # the scale needs parallax first
    assert all(out.odometry == 'fused' for _, _, out in outputs)
    for t, frame, out in metric:
        assert out.scale == pytest.approx(2.0, rel=scale_rtol)  # metres per window unit
        ok = out.valid & np.isfinite(frame.depth)
        depth_ratio = np.median(out.points_cam[..., 2][ok] / frame.depth[ok])
        assert depth_ratio == pytest.approx(1.0, rel=scale_rtol + 1e-3)
        true_position = (T_world0 @ frame.T_world_cam)[:3, 3]
        assert np.linalg.norm(out.T_world_cam[:3, 3] - true_position) <= (
            scale_rtol * np.linalg.norm(true_position) + 2e-3)


def test_without_odometry_the_output_stays_up_to_scale():
    _, outputs = _run(None)
    assert outputs and all(not out.metric_scale and out.odometry == 'none'
                           for _, _, out in outputs)


def test_a_jump_in_the_odometry_is_outvoted_by_the_images():
    """One reading 30 cm off (a wheel slip): that frame uses the maps' pose (they explain
    the static pixels), and the trajectory stays on the truth."""
    odometry = _exact_odometry()
    slipped = 6
    odometry[slipped] = se3_compose(odometry[slipped], se3_from_rt(np.eye(3), [0.3, 0, 0]))
    gen, outputs = _run(odometry)
    T_world0 = se3_inverse(gen.camera_pose(0))
    decisions = {t: out.odometry for t, _, out in outputs}
    assert decisions[slipped] == 'maps'
    assert all(decision == 'fused' for t, decision in decisions.items() if t != slipped)
    _, frame, out = next(item for item in outputs if item[0] == slipped)
    estimated = out.T_world_cam[:3, 3]
    np.testing.assert_allclose(estimated, (T_world0 @ frame.T_world_cam)[:3, 3], atol=5e-3)


def test_the_prior_can_be_switched_off():
    _, outputs = _run(_exact_odometry(), config=PipelineConfig(odometry_prior=False))
    assert all(out.odometry == 'none' and not out.metric_scale for _, _, out in outputs)


@pytest.mark.parametrize('pose', [np.full((4, 4), np.nan), np.eye(3),
                                  np.diag([1.0, 1.0, -1.0, 1.0]),
                                  se3_from_rt(2 * np.eye(3), np.zeros(3))])
def test_bad_odometry_is_input_error(pose):
    gen = SceneGenerator(SCENE, seed=3)
    pipe = DynamicReconPipeline(OracleEngine.from_scene(SCENE, seed=3), PipelineConfig())
    frame = gen.render(0)
    with pytest.raises(InputError) as error:
        pipe.process(FrameInput(image=frame.rgb, stamp=frame.stamp, K=gen.K, T_odom_cam=pose))
    assert error.value.reason == 'odometry'


@pytest.mark.parametrize('field, value', [('odometry_weight', 1.5),
                                          ('odometry_max_disagreement_deg', 0.0),
                                          ('odometry_min_parallax_px', float('nan'))])
def test_odometry_parameters_are_validated(field, value):
    with pytest.raises(ConfigError) as error:
        dataclasses.replace(PipelineConfig(), **{field: value}).validate()
    assert error.value.name == field


def test_robot_mount_is_rep103_optical():
    """The mount's optical z looks along the odometry x axis, optical y points down."""
    np.testing.assert_allclose(ROBOT_CAMERA_MOUNT[:3, 2], [1, 0, 0])
    np.testing.assert_allclose(ROBOT_CAMERA_MOUNT[:3, 1], [0, 0, -1])
    np.testing.assert_allclose(ROBOT_CAMERA_MOUNT[:3, :3] @ ROBOT_CAMERA_MOUNT[:3, :3].T,
                               np.eye(3))
