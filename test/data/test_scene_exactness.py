"""Ground truth of the scene generator is exact: checked against independent computations."""

import numpy as np
import pytest

from pointmap_ros.data.scenes import SceneConfig, SceneGenerator

CFG = SceneConfig(height=60, width=80, num_frames=12, fps=10.0, preset='demo', num_objects=4)
# Issue 11's training scenes: an articulated object (base + two hinged links), a static
# camera and fast objects. Same image size, so the tests below share CFG's width/height.
ARTICULATED = SceneConfig(height=60, width=80, num_frames=12, fps=10.0, preset='random',
                          num_objects=3, num_articulated=1, camera_amplitude=0.0,
                          object_speed=2.5)
ARTICULATED_SEED = 8  # all three links well visible at 80 x 60 (seed 1 hides the arm)


@pytest.fixture(scope='module')
def demo_gen():
    return SceneGenerator(CFG, seed=0)


@pytest.fixture(scope='module', params=['demo', 'articulated'])
def gen(request, demo_gen):
    """Every exactness test below runs on the demo scene and on an articulated one."""
    if request.param == 'demo':
        return demo_gen
    return SceneGenerator(ARTICULATED, seed=ARTICULATED_SEED)


def project(K, pts):
    return pts[..., :2] / pts[..., 2:] * np.diag(K)[:2] + K[:2, 2]


def to_frame(T, pts):
    return pts @ T[:3, :3].T + T[:3, 3]


def kabsch_residual(a, b):
    """RMS residual of the best rigid fit b ~ R a + t."""
    ca, cb = a.mean(0), b.mean(0)
    u, _, vt = np.linalg.svd((a - ca).T @ (b - cb))
    d = np.sign(np.linalg.det(vt.T @ u.T))
    rot = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    return np.sqrt(np.mean(np.sum((a - ca) @ rot.T + cb - b, axis=1) ** 2))


def test_pi_ti_projects_to_pixel_centres(gen):
    gt = gen.pair_ground_truth(2, 7, dtype=np.float64)
    uv = project(gen.K, gt.maps.pts_i_ti)
    v, u = np.mgrid[0:CFG.height, 0:CFG.width]
    err = np.abs(uv - np.stack([u, v], -1))[gt.valid_i]
    assert err.max() < 1e-6
    # float32 output: the rounding of the points only.
    uv32 = project(gen.K, gen.pair_ground_truth(2, 7).maps.pts_i_ti.astype(np.float64))
    assert np.abs(uv32 - np.stack([u, v], -1))[gt.valid_i].max() < 1e-3


def test_depth_equals_z_of_pi_ti(gen):
    gt = gen.pair_ground_truth(4, 1)
    np.testing.assert_array_equal(gen.render(4).depth, gt.maps.pts_i_ti[..., 2])


def test_flow_is_the_analytic_object_motion(gen):
    i, j = 3, 9
    gt = gen.pair_ground_truth(i, j, dtype=np.float64)
    T_wci = gen.camera_pose(i)
    T_ciw = np.linalg.inv(T_wci)
    for obj in gen.objects:
        sel = gt.instance_i == obj.id
        if not obj.rigid or sel.sum() < 10:
            continue
        world_i = to_frame(T_wci, gt.maps.pts_i_ti[sel])
        motion = gen.object_pose(obj.id, j) @ np.linalg.inv(gen.object_pose(obj.id, i))
        expected = to_frame(T_ciw, to_frame(motion, world_i))
        np.testing.assert_allclose(gt.maps.pts_i_tj[sel], expected, atol=1e-9)
        assert gt.motion_i[sel].all()


def test_static_background_flow_exactly_zero(gen):
    gt = gen.pair_ground_truth(0, 11)
    for inst, flow, motion, tj, ti in (
            (gt.instance_i, gt.flow_i, gt.motion_i, gt.maps.pts_i_tj, gt.maps.pts_i_ti),
            (gt.instance_j, gt.flow_j, gt.motion_j, gt.maps.pts_j_tj, gt.maps.pts_j_ti)):
        static = inst == 0
        assert static.sum() > 1000
        assert np.all(flow[static] == 0.0) and not motion[static].any()
        np.testing.assert_array_equal(tj[static], ti[static])
    np.testing.assert_array_equal(gt.maps.flow_i()[gt.instance_i == 0], 0.0)


def test_same_frame_pair_has_no_motion(gen):
    gt = gen.pair_ground_truth(5, 5)
    assert not gt.motion_i.any()
    np.testing.assert_array_equal(gt.maps.pts_i_ti, gt.maps.pts_j_tj)
    np.testing.assert_allclose(gt.T_cami_camj, np.eye(4), atol=1e-12)


def test_pj_tj_is_camera_j_depth_moved_into_camera_i(gen):
    i, j = 1, 8
    gt = gen.pair_ground_truth(i, j, dtype=np.float64)
    np.testing.assert_allclose(gt.T_cami_camj,
                               np.linalg.inv(gen.camera_pose(i)) @ gen.camera_pose(j), atol=1e-12)
    fj = gen.render(j)
    v, u = np.mgrid[0:CFG.height, 0:CFG.width]
    rays = np.stack([(u - gen.K[0, 2]) / gen.K[0, 0], (v - gen.K[1, 2]) / gen.K[1, 1],
                     np.ones(u.shape)], -1)
    cam_j = rays * fj.depth[..., None].astype(np.float64)
    np.testing.assert_allclose(gt.maps.pts_j_tj, to_frame(gt.T_cami_camj, cam_j), atol=1e-5)


def test_same_time_maps_agree_across_images(gen):
    """A point of image i, moved to t_j and seen at pixel v of image j, is where P_j(t_i)(v)
    says image j's pixel was at t_i: both maps describe the same scene at t_i."""
    i, j = 2, 6
    gt = gen.pair_ground_truth(i, j, dtype=np.float64)
    T_cj_ci = np.linalg.inv(gt.T_cami_camj)
    uv = project(gen.K, to_frame(T_cj_ci, gt.maps.pts_i_tj))
    col, row = np.rint(uv[..., 0]).astype(int), np.rint(uv[..., 1]).astype(int)
    inside = gt.valid_i & (col >= 0) & (col < CFG.width) & (row >= 0) & (row < CFG.height)
    rows, cols = np.nonzero(inside)
    vr, vc = row[rows, cols], col[rows, cols]
    same = gt.instance_j[vr, vc] == gt.instance_i[rows, cols]
    # Visible in j (not occluded): image j's depth at v matches the reprojected depth.
    z_j = to_frame(T_cj_ci, gt.maps.pts_i_tj)[rows, cols, 2]
    visible = same & (np.abs(gen.render(j).depth[vr, vc] - z_j) < 0.02 * z_j)
    assert visible.sum() > 0.5 * inside.sum()
    dist = np.linalg.norm(gt.maps.pts_j_ti[vr, vc] - gt.maps.pts_i_ti[rows, cols], axis=1)[visible]
    depth = gt.maps.pts_i_ti[rows, cols, 2][visible]
    # Pixel discretisation: nearest pixel is <= 0.71 px away; allow slanted surfaces.
    assert np.median(dist / depth) < 1.0 / gen.K[0, 0]
    assert np.percentile(dist / depth, 95) < 4.0 / gen.K[0, 0]


def test_deformable_flow_is_not_rigid(demo_gen):
    gen = demo_gen
    i, j = 0, 6
    gt = gen.pair_ground_truth(i, j, dtype=np.float64)
    sheet = next(o for o in gen.objects if not o.rigid)
    sel = gt.instance_i == sheet.id
    assert sel.sum() > 30
    assert kabsch_residual(gt.maps.pts_i_ti[sel], gt.maps.pts_i_tj[sel]) > 0.01
    box = gt.instance_i == 1
    assert kabsch_residual(gt.maps.pts_i_ti[box], gt.maps.pts_i_tj[box]) < 1e-9


def test_pulsing_ellipsoid_is_exact_and_non_rigid():
    # In 'random' scenes the deformable is a sheet or an ellipsoid; find a seed with the latter.
    cfg = SceneConfig(height=60, width=80, num_frames=6, num_objects=3)
    gen = next(g for g in (SceneGenerator(cfg, seed=s) for s in range(20))
               if any(o.kind == 'ellipsoid' for o in g.objects))
    blob = next(o for o in gen._objects if o.kind == 'ellipsoid')
    gt = gen.pair_ground_truth(0, 5, dtype=np.float64)
    sel = gt.instance_i == blob.id
    assert sel.sum() > 30
    # Points at t_j lie exactly on the ellipsoid with the radii of t_j.
    world = to_frame(gen.camera_pose(0), gt.maps.pts_i_tj[sel])
    local = to_frame(np.linalg.inv(gen.object_pose(blob.id, 5)), world)
    radii = blob.radii0 * blob.scale(gen.stamp(5))
    np.testing.assert_allclose(np.sum((local / radii) ** 2, axis=1), 1.0, atol=1e-9)
    assert kabsch_residual(gt.maps.pts_i_ti[sel], gt.maps.pts_i_tj[sel]) > 1e-3


def _articulated_links(gen):
    """(base, upper arm, forearm) ids: the last three objects of an articulated scene."""
    return [o.id for o in gen.objects[-3:]]


def test_articulated_links_stay_attached_and_move_differently():
    gen = SceneGenerator(ARTICULATED, seed=ARTICULATED_SEED)
    base, arm, fore = _articulated_links(gen)
    link_traj = gen._object(arm).trajectory
    fore_traj = gen._object(fore).trajectory
    for t in range(ARTICULATED.num_frames):
        # The hinge point, computed from the parent's pose and from the child's, coincides.
        for parent, child, traj in ((base, arm, link_traj), (arm, fore, fore_traj)):
            from_parent = gen.object_pose(parent, t) @ np.append(traj.joint, 1.0)
            from_child = gen.object_pose(child, t) @ np.append(-np.asarray(traj.offset), 1.0)
            np.testing.assert_allclose(from_parent, from_child, atol=1e-12)
    # The relative pose of base and arm changes over time (a joint, not one rigid body).
    rel = [np.linalg.inv(gen.object_pose(base, t)) @ gen.object_pose(arm, t) for t in (0, 6)]
    assert np.abs(rel[0] - rel[1]).max() > 0.05


def test_articulated_scene_is_visible_and_moves():
    gen = SceneGenerator(ARTICULATED, seed=ARTICULATED_SEED)
    gt = gen.pair_ground_truth(0, 8, dtype=np.float64)
    base, arm, fore = _articulated_links(gen)
    for link in (base, arm, fore):
        sel = gt.instance_i == link
        assert sel.sum() >= 5, f'link {link} barely visible'
        assert gt.motion_i[sel].all()
    # Static camera: every pair's relative pose is the identity.
    np.testing.assert_allclose(gt.T_cami_camj, np.eye(4), atol=1e-12)
    # The links' flows differ: no single rigid motion explains base and forearm together.
    sel = (gt.instance_i == base) | (gt.instance_i == fore)
    assert kabsch_residual(gt.maps.pts_i_ti[sel], gt.maps.pts_i_tj[sel]) > 1e-3
