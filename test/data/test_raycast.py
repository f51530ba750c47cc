"""Analytic ray casting: hits lie on the surfaces, misses are inf, the nearest hit wins."""

import numpy as np

from pointmap_ros.data import raycast
from pointmap_ros.data.surfaces import WavingSheet
from pointmap_ros.data.trajectories import LookAtTrajectory, look_at

ORIGIN = np.array([0.1, -0.2, -4.0])


def directions(n=4000, spread=0.4, seed=0):
    rng = np.random.default_rng(seed)
    d = np.column_stack([rng.uniform(-spread, spread, (n, 2)), np.ones(n)])
    return d


def hits(s, d):
    ok = np.isfinite(s)
    return ORIGIN + s[ok, None] * d[ok], ok


def test_sphere_and_ellipsoid_hits_on_surface():
    d = directions()
    p, ok = hits(raycast.ray_sphere(ORIGIN, d, 1.0), d)
    assert 0.1 < ok.mean() < 0.9
    np.testing.assert_allclose(np.linalg.norm(p, axis=1), 1.0, atol=1e-12)
    radii = np.array([1.2, 0.5, 0.8])
    p, ok = hits(raycast.ray_ellipsoid(ORIGIN, d, radii), d)
    np.testing.assert_allclose(np.sum((p / radii) ** 2, axis=1), 1.0, atol=1e-12)
    # First hit: the front half, facing the origin.
    assert np.all(p[:, 2] < 0.0)


def test_box_hits_on_faces():
    half = np.array([0.6, 0.4, 0.3])
    d = directions()
    p, ok = hits(raycast.ray_box(ORIGIN, d, half), d)
    assert ok.any()
    assert np.all(np.abs(p) <= half + 1e-12)
    np.testing.assert_allclose(np.max(np.abs(p) / half, axis=1), 1.0, atol=1e-12)
    n = raycast.box_normal(p, half)
    assert np.all(np.sum(n * d[ok], axis=1) < 0.0)      # the visible faces face the ray


def test_cylinder_side_and_caps():
    d = directions(spread=0.6)
    origin_above = np.array([0.0, 0.0, -4.0])          # looking down the axis: caps
    s = raycast.ray_cylinder(origin_above, d, 0.5, 1.0)
    p = origin_above + s[np.isfinite(s), None] * d[np.isfinite(s)]
    np.testing.assert_allclose(p[:, 2], -1.0, atol=1e-12)
    assert np.all(np.hypot(p[:, 0], p[:, 1]) <= 0.5 + 1e-12)
    side_origin = np.array([-4.0, 0.0, 0.0])
    d_side = np.column_stack([np.ones(2000), directions(2000, 0.5)[:, :2]])
    s = raycast.ray_cylinder(side_origin, d_side, 0.5, 1.0)
    p = side_origin + s[np.isfinite(s), None] * d_side[np.isfinite(s)]
    on_side = np.abs(np.hypot(p[:, 0], p[:, 1]) - 0.5) < 1e-9
    on_cap = np.abs(np.abs(p[:, 2]) - 1.0) < 1e-9
    assert on_side.any() and np.all(on_side | on_cap)
    n = raycast.cylinder_normal(p, 0.5, 1.0)
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-12)


def test_room_exit_is_on_a_wall():
    rng = np.random.default_rng(1)
    d = rng.normal(size=(3000, 3))
    lo, hi = np.array([-3.0, -1.5, -2.0]), np.array([3.0, 1.3, 7.5])
    d[:5, 0] = 0.0                                  # axis-parallel rays too
    s, face = raycast.ray_room_exit(np.zeros(3), d, lo, hi)
    p = s[:, None] * d
    assert np.all(np.isfinite(s) & (s > 0))
    wall = np.where(face % 2 == 1, hi[face // 2], lo[face // 2])
    assert np.abs(p[np.arange(len(p)), face // 2] - wall).max() < 1e-9
    assert np.all((p >= lo - 1e-9) & (p <= hi + 1e-9))


def test_heightfield_hit_below_a_micrometre():
    sheet = WavingSheet(1, None, np.zeros((4, 4, 3), np.float32), length=1.2, half_width=0.4,
                        amplitude=0.2, wavenumber=6.0, omega=4.0)
    origin = np.array([0.6, 0.0, -3.0])
    d = directions(4000, 0.3)
    s = sheet.intersect(origin, d, 0.37)
    ok = np.isfinite(s)
    assert ok.mean() > 0.2
    p = origin + s[ok, None] * d[ok]
    # First hit: a dense brute-force march finds no earlier crossing of the surface.
    steps = np.linspace(2.0, 4.0, 20001)
    march = origin + steps[None, :, None] * d[ok][:200, None, :]
    g = march[..., 2] - sheet.height(march[..., 0], march[..., 1], 0.37)
    inside = (march[..., 0] >= 0) & (march[..., 0] <= 1.2) & (np.abs(march[..., 1]) <= 0.4)
    crossing = inside[:, 1:] & inside[:, :-1] & (np.signbit(g[:, 1:]) != np.signbit(g[:, :-1]))
    first = steps[np.argmax(crossing, axis=1)]
    np.testing.assert_allclose(s[ok][:200], first, atol=2e-4)
    err = np.abs(p[:, 2] - sheet.height(p[:, 0], p[:, 1], 0.37))
    assert err.max() < 1e-6
    assert np.all((p[:, 0] >= 0) & (p[:, 0] <= 1.2) & (np.abs(p[:, 1]) <= 0.4))
    np.testing.assert_allclose(sheet.deform(sheet.canonical(p, 0.37), 0.37), p, atol=1e-6)
    # Rays that miss the rectangle stay misses.
    assert np.all(np.isinf(sheet.intersect(origin, np.array([[5.0, 0.0, 1.0]]), 0.0)))


def test_zero_direction_components_do_not_break_slabs():
    d = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    s = raycast.ray_box(np.array([0.0, 0.0, -2.0]), d, [0.5, 0.5, 0.5])
    assert s[0] == 1.5 and np.isinf(s[1])


def test_camera_trajectory_is_identity_at_zero_and_orthonormal():
    np.testing.assert_array_equal(look_at(np.zeros(3), [0.0, 0.0, 5.0]), np.eye(3))
    cam = LookAtTrajectory(np.full(3, 0.2), np.ones(3), np.array([0.0, 0.0, 5.0]),
                           np.full(3, 0.3), np.ones(3))
    np.testing.assert_allclose(cam.pose(0.0), np.eye(4), atol=1e-15)
    pose_t = cam.pose(1.3)
    np.testing.assert_allclose(pose_t[:3, :3] @ pose_t[:3, :3].T, np.eye(3), atol=1e-12)
    assert np.linalg.det(pose_t[:3, :3]) > 0
    # The optical axis points at the target.
    target = np.array([0.0, 0.0, 5.0]) + 0.3 * np.sin(1.3)
    to_target = target - pose_t[:3, 3]
    np.testing.assert_allclose(pose_t[:3, 2], to_target / np.linalg.norm(to_target), atol=1e-12)
