"""The depth-prior stage (pipeline/depth_prior.py) against a generated scene's exact maps.

Exactness: with the scene's exact depth, its exact same-time maps come back (up to float32
rounding), however wrong the network's map is where the depth is reliable, and the
network's points fill holes and edges scaled to the depth.
"""

import dataclasses

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from pointmap_ros.data.scenes import SceneConfig, SceneGenerator
from pointmap_ros.engines.oracle_engine import OracleEngine, in_other_units
from pointmap_ros.errors import ConfigError
from pointmap_ros.evaluation.true_flow import GroundTruthFlow
from pointmap_ros.geometry.camera import pixel_grid, project, unproject
from pointmap_ros.geometry.transforms import se3_apply, se3_inverse
from pointmap_ros.pipeline import DynamicReconPipeline, FrameInput, PipelineConfig
from pointmap_ros.pipeline.correspondence import PixelFlow
from pointmap_ros.pipeline.depth_prior import (
    depth_odometry, fuse_depth_prior, reliable_depth)
from pointmap_ros.pipeline.preprocess import make_frame
from pointmap_ros.tracking.window import WindowFrame

FUSE = dict(min_m=0.1, max_m=100.0, edge_rel=0.08, measured_confidence=3.0)


@pytest.fixture(scope='module')
def scene_pair():
    gen = SceneGenerator(SceneConfig(height=96, width=128, num_frames=6, fps=10.0,
                                     preset='random', num_objects=3,
                                     camera_amplitude=0.3), seed=3)
    i, j = 0, 4
    return gen, gen.pair_ground_truth(i, j), gen.render(i).depth, gen.render(j).depth


def _fuse(maps, depth_i, depth_j, K, valid_i, valid_j):
    return fuse_depth_prior(maps, depth_i, depth_j, K, valid_i, valid_j, **FUSE)


def test_unproject_is_the_scene_map(scene_pair):
    gen, gt, depth_i, _ = scene_pair
    points = unproject(depth_i, gen.K)
    ok = gt.valid_i
    np.testing.assert_allclose(points[ok], gt.maps.pts_i_ti[ok], atol=1e-5, rtol=1e-5)


def test_exact_depth_and_exact_maps_give_the_true_maps(scene_pair):
    gen, gt, depth_i, depth_j = scene_pair
    fusion = _fuse(gt.maps, depth_i, depth_j, gen.K, gt.valid_i, gt.valid_j)
    assert fusion.maps.metric
    assert fusion.scale_i == pytest.approx(1.0, abs=1e-6)
    assert fusion.scale_j == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(fusion.T_i_j, gt.T_cami_camj, atol=1e-5)
    for name, valid in (('i_ti', gt.valid_i), ('j_tj', gt.valid_j)):
        np.testing.assert_allclose(fusion.maps.pts(name)[valid], gt.maps.pts(name)[valid],
                                   atol=2e-5, rtol=1e-5, err_msg=name)


def test_corrupted_network_map_is_corrected_and_holes_are_scale_aligned(scene_pair):
    """A network map in half the units with garbage on a patch: measured pixels take the
    depth (patch corrected), pixels without depth (holes, out of range) take the network's
    point times the fitted scale, which joins the truth without a step."""
    gen, gt, depth_i, depth_j = scene_pair
    network = in_other_units(gt.maps, 0.5)
    garbage = np.zeros(depth_i.shape, bool)
    garbage[10:30, 20:50] = True
    rng = np.random.default_rng(0)
    network.pts_i_ti[garbage] += rng.normal(0, 1.0, (np.count_nonzero(garbage), 3)
                                            ).astype(np.float32)
    network.pts_j_tj[garbage] += rng.normal(0, 1.0, (np.count_nonzero(garbage), 3)
                                            ).astype(np.float32)
    holes = np.zeros(depth_i.shape, bool)
    holes[50:80, 60:100] = True
    holes[::7, ::5] = True
    depth_i, depth_j = depth_i.copy(), depth_j.copy()
    depth_i[holes], depth_j[holes] = 0.0, np.nan
    # The network's confidence: low on its garbage, so the fits ignore it (as the gate does).
    confident_i, confident_j = gt.valid_i & ~garbage, gt.valid_j & ~garbage
    fusion = _fuse(network, depth_i, depth_j, gen.K, confident_i, confident_j)
    assert fusion.scale_i == pytest.approx(2.0, rel=1e-5)
    assert fusion.scale_j == pytest.approx(2.0, rel=1e-4)
    np.testing.assert_allclose(fusion.T_i_j, gt.T_cami_camj, atol=1e-4)
    for name, valid, measured in (('i_ti', gt.valid_i, fusion.measured_i),
                                  ('j_tj', gt.valid_j, fusion.measured_j)):
        assert not np.any(measured & holes)
        corrected = valid & garbage & measured
        assert np.count_nonzero(corrected) > 300
        np.testing.assert_allclose(fusion.maps.pts(name)[corrected],
                                   gt.maps.pts(name)[corrected], atol=1e-4, err_msg=name)
        filled = valid & holes & ~garbage
        assert np.count_nonzero(filled) > 300
        np.testing.assert_allclose(fusion.maps.pts(name)[filled], gt.maps.pts(name)[filled],
                                   atol=2e-4, rtol=1e-4, err_msg=name)
    # The cross-time maps take their image's scale (no depth shows them).
    np.testing.assert_allclose(fusion.maps.pts_i_tj[gt.valid_i], gt.maps.pts_i_tj[gt.valid_i],
                               atol=1e-4, rtol=1e-4)


def test_measured_points_pass_the_confidence_gate(scene_pair):
    gen, gt, depth_i, depth_j = scene_pair
    fusion = _fuse(gt.maps, depth_i, depth_j, gen.K, gt.valid_i, gt.valid_j)
    assert np.all(fusion.maps.conf_i_ti[fusion.measured_i] >= 3.0)
    assert np.all(fusion.maps.conf_j_tj[fusion.measured_j] >= 3.0)


def test_too_little_depth_leaves_the_pair_unfused(scene_pair):
    gen, gt, depth_i, depth_j = scene_pair
    empty = np.zeros_like(depth_j)
    assert _fuse(gt.maps, depth_i, empty, gen.K, gt.valid_i, gt.valid_j) is None


def test_reliable_depth_rejects_holes_range_and_edges():
    depth = np.full((20, 20), 2.0, np.float32)
    depth[:, 10:] = 4.0  # a depth edge between columns 9 and 10
    depth[2, 2], depth[3, 3], depth[15, 3] = 0.0, np.nan, 50.0
    depth[12, 5] = 3.0  # a flying pixel halfway between two surfaces
    ok = reliable_depth(depth, 0.1, 10.0, 0.08)
    assert not ok[2, 2] and not ok[3, 3] and not ok[15, 3]
    assert not ok[:, 9].any() and not ok[:, 10].any()  # both sides of the edge
    assert not ok[12, 5]
    assert ok[10, 5] and ok[10, 15] and ok[:, 11:].all()
    # Holes do not make their neighbours edges.
    assert ok[2, 1] and ok[1, 2]
    # A neighbour out of range is still data: its jump makes an edge.
    assert not ok[15, 4]


def test_reliable_depth_keeps_planes_at_a_grazing_angle():
    """A floor seen from 1 m above: depth grows 10x from the bottom row to the top one, and
    its inverse depth is affine in the row, so none of it is an edge."""
    rows = np.arange(40, dtype=np.float32)
    inverse = 1.0 - rows / 44  # affine in the row, 1 m to 11 m
    floor = np.tile((1.0 / inverse)[:, None], (1, 30))
    assert reliable_depth(floor, 0.1, 20.0, 0.08).all()


# -- the stage inside the pipeline ------------------------------------------------------------

@pytest.mark.parametrize('with_depth', [True, False])
def test_pipeline_with_depth_publishes_metric_geometry(with_depth):
    """Up-to-scale exact maps + exact depth: metric points, poses and flow, equal to the
    scene's; without depth the same run stays up to scale."""
    config = SceneConfig(height=96, width=128, num_frames=6, fps=10.0, preset='random',
                         num_objects=3, camera_amplitude=0.3)
    gen = SceneGenerator(config, seed=3)
    # Exact four maps in half metres, flagged up-to-scale: a perfect network's geometry.
    pipe = DynamicReconPipeline(OracleEngine.from_scene(config, seed=3, units_per_metre=0.5),
                                PipelineConfig())
    T_world0 = se3_inverse(gen.camera_pose(0))
    outputs = []
    for t in range(config.num_frames):
        frame = gen.render(t)
        out = pipe.process(FrameInput(image=frame.rgb, stamp=frame.stamp, K=gen.K,
                                      depth=frame.depth if with_depth else None))
        if out is not None:
            outputs.append((t, frame, out))
    assert len(outputs) == config.num_frames - 1
    for t, frame, out in outputs:
        assert out.metric_scale is with_depth
        if not with_depth:
            continue
        assert out.scale == 1.0
        ok = out.valid
        assert np.count_nonzero(ok) > 0.9 * ok.size
        np.testing.assert_allclose(out.points_cam[ok], unproject(frame.depth, gen.K)[ok],
                                   atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(out.T_world_cam[:3, 3],
                                   (T_world0 @ frame.T_world_cam)[:3, 3], atol=1e-4)
        # Scene flow in metres per second, in the current camera.
        gt = gen.pair_ground_truth(t - 1, t, dtype=np.float64)
        flow_gt = gt.flow_j @ gt.T_cami_camj[:3, :3]  # rotate camera i -> camera t
        known = out.flow_valid & gt.valid_j
        np.testing.assert_allclose(out.flow[known] * out.flow_dt, flow_gt[known], atol=1e-3)


@pytest.mark.parametrize('kw, name', [
    ({'depth_min_m': 0.0}, 'depth_min_m'), ({'depth_min_m': 20.0}, 'depth_min_m'),
    ({'depth_max_m': float('inf')}, 'depth_min_m'), ({'depth_edge_rel': 0.0}, 'depth_edge_rel'),
])
def test_depth_parameters_are_validated(kw, name):
    with pytest.raises(ConfigError) as err:
        PipelineConfig(**kw).validate()
    assert err.value.name == name


def test_with_correspondences_the_pose_is_the_sensors_not_the_networks(scene_pair):
    """A network whose P_j(t_j) carries a pose error (2 degrees, 10 cm): with the pair's
    optical flow (here exact) the relative pose comes from the two depth images, so the
    measured points are true; the network's own (wrong) pose would misplace them."""
    gen, gt, depth_i, depth_j = scene_pair
    i, j = 0, 4
    wrong = np.eye(4)
    wrong[:3, :3] = Rotation.from_euler('y', 2.0, degrees=True).as_matrix()
    wrong[:3, 3] = (0.1, 0.0, 0.0)
    network = dataclasses.replace(gt.maps, pts_j_tj=se3_apply(wrong, gt.maps.pts_j_tj
                                                             .astype(np.float64)
                                                             ).astype(np.float32))
    frames = [WindowFrame(make_frame(gen.render(t).rgb, gen.stamp(t)), t) for t in (i, j)]
    flow = GroundTruthFlow(gen).pair_flow(*frames, depth_i.shape)
    with_flow = fuse_depth_prior(network, depth_i, depth_j, gen.K, gt.valid_i, gt.valid_j,
                                 pixel_flow=flow, **FUSE)
    np.testing.assert_allclose(with_flow.T_i_j, gt.T_cami_camj, atol=1e-3)
    measured = with_flow.measured_j & gt.valid_j
    np.testing.assert_allclose(with_flow.maps.pts_j_tj[measured], gt.maps.pts_j_tj[measured],
                               atol=1e-3)
    network_pose = _fuse(network, depth_i, depth_j, gen.K, gt.valid_i, gt.valid_j)
    assert np.abs(network_pose.T_i_j[:3, 3] - gt.T_cami_camj[:3, 3]).max() > 0.05


def _box_before_wall(T_i_cam: np.ndarray, box_shift: np.ndarray, K: np.ndarray,
                     size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ray-cast a camera at ``T_i_cam`` (in camera i) viewing a wall at z = 3 m and a box face
    at z = 2 m (1.2 x 0.9 m, centred on camera i's axis at t_i) moved by ``box_shift``
    (camera i's axes): the camera's z-depth ``[H, W]``, which pixels see the box, and the
    points ``[H, W, 3]`` in camera i."""
    rays = unproject(np.ones(size), K)  # z = 1: K^-1 [u, v, 1]
    directions, origin = rays @ T_i_cam[:3, :3].T, T_i_cam[:3, 3]
    along_face = (2.0 - origin[2]) / directions[..., 2]
    on_face = origin + along_face[..., None] * directions - box_shift
    on_box = (np.abs(on_face[..., 0]) < 0.6) & (np.abs(on_face[..., 1]) < 0.45)
    depth = np.where(on_box, along_face, (3.0 - origin[2]) / directions[..., 2])
    return depth, on_box, origin + depth[..., None] * directions


@pytest.mark.parametrize('seed', range(4))
def test_depth_odometry_does_not_follow_an_object_moving_inside_the_depth_noise(seed):
    """A box filling a fifth of the view moves 3 cm across the camera between the frames:
    within a 1 % depth sensor's noise along the ray (2-3 cm at 2-3 m), 1.5 px in the image.
    A 3D inlier test keeps the box's points, and the camera's fitted motion followed the box
    by two thirds of its motion; the flow sees the box move across the ray, so the
    reprojection test rejects it and the pose keeps to the static wall's (within a fifth of
    the box's motion; the wall alone gives 1-2 mm here)."""
    size, K = (96, 128), np.array([[100.0, 0.0, 63.5], [0.0, 100.0, 47.5], [0.0, 0.0, 1.0]])
    T_i_j = np.eye(4)
    T_i_j[:3, :3] = Rotation.from_euler('y', 1.0, degrees=True).as_matrix()
    T_i_j[:3, 3] = (0.05, 0.0, 0.01)
    box_motion = np.array([0.03, 0.0, 0.0])
    depth_i, _, _ = _box_before_wall(np.eye(4), np.zeros(3), K, size)
    depth_j, on_box, points_j_in_i = _box_before_wall(T_i_j, box_motion, K, size)
    # Exact backward flow: where each of image j's points was at t_i, in image i.
    earlier = np.where(on_box[..., None], points_j_in_i - box_motion, points_j_in_i)
    earlier_pixels = project(earlier, K)
    backward = (earlier_pixels - pixel_grid(*size, dtype=np.float64)).astype(np.float32)
    in_frame = ((earlier_pixels >= 0) & (earlier_pixels <= np.array(size[::-1]) - 1)).all(-1)
    flow = PixelFlow(np.zeros_like(backward), backward, np.zeros(size, bool), in_frame)
    rng = np.random.default_rng(seed)
    noisy_i, noisy_j = ((depth * (1 + 0.01 * rng.standard_normal(size))).astype(np.float32)
                        for depth in (depth_i, depth_j))
    T = depth_odometry(noisy_i, reliable_depth(noisy_i, 0.1, 10.0, 0.08),
                       unproject(noisy_j, K), reliable_depth(noisy_j, 0.1, 10.0, 0.08), K,
                       flow, seed=seed)
    assert 0.15 < on_box.mean() < 0.3
    assert np.linalg.norm(T[:3, 3] - T_i_j[:3, 3]) < 0.2 * np.linalg.norm(box_motion)
