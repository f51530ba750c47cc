"""Property and round-trip tests of pointmap_ros.geometry.transforms (float64 and float32)."""

import numpy as np
import pytest

from pointmap_ros.geometry.transforms import (
    pose_error, quat_xyzw_to_rotmat, rotation_angle, rotmat_to_quat_xyzw, rotmat_to_rotvec,
    rotvec_to_rotmat, se3_apply, se3_compose, se3_from_rt, se3_inverse, skew)


def random_rotvecs(n, seed=0):
    rng = np.random.default_rng(seed)
    axes = rng.normal(size=(n, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    angles = np.concatenate([rng.uniform(0, np.pi - 1e-3, n - 4), [0.0, 1e-10, 1e-5, np.pi]])
    return axes * angles[:, None]


def test_rotvec_rotmat_round_trip_and_orthonormal():
    v = random_rotvecs(64)
    R = rotvec_to_rotmat(v)
    np.testing.assert_allclose(R @ np.swapaxes(R, 1, 2), np.broadcast_to(np.eye(3), R.shape),
                               atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-12)
    np.testing.assert_allclose(rotvec_to_rotmat(rotmat_to_rotvec(R)), R, atol=1e-9)
    np.testing.assert_allclose(rotation_angle(R), np.linalg.norm(v, axis=1), atol=1e-9)


def test_quaternion_order_is_xyzw():
    # 90 degrees about z: (x, y, z, w) = (0, 0, sin 45, cos 45); maps x axis to y axis.
    q = np.array([0.0, 0.0, np.sqrt(0.5), np.sqrt(0.5)])
    R = quat_xyzw_to_rotmat(q)
    np.testing.assert_allclose(R @ [1.0, 0, 0], [0, 1.0, 0], atol=1e-15)
    np.testing.assert_allclose(rotmat_to_quat_xyzw(R), q, atol=1e-15)


@pytest.mark.parametrize('dtype', [np.float64, np.float32])
def test_quat_round_trip_sign_canonical(dtype):
    R = rotvec_to_rotmat(random_rotvecs(64, seed=1)).astype(dtype)
    q = rotmat_to_quat_xyzw(R)
    assert q.dtype == dtype and np.all(q[:, 3] >= 0)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(quat_xyzw_to_rotmat(q), R, atol=tol)
    np.testing.assert_allclose(rotmat_to_quat_xyzw(quat_xyzw_to_rotmat(-q)), q, atol=tol)


def test_se3_inverse_compose_apply():
    rng = np.random.default_rng(2)
    T_a_b = se3_from_rt(rotvec_to_rotmat(random_rotvecs(8, 3)), rng.normal(size=(8, 3)))
    T_b_c = se3_from_rt(rotvec_to_rotmat(random_rotvecs(8, 4)), rng.normal(size=(8, 3)))
    np.testing.assert_allclose(se3_compose(T_a_b, se3_inverse(T_a_b)),
                               np.broadcast_to(np.eye(4), T_a_b.shape), atol=1e-12)
    p_c = rng.normal(size=(5, 3))
    T_a_c = se3_compose(T_a_b, T_b_c)
    np.testing.assert_allclose(se3_apply(T_a_c[0], p_c),
                               se3_apply(T_a_b[0], se3_apply(T_b_c[0], p_c)), atol=1e-12)
    p32 = p_c.astype(np.float32)
    assert se3_apply(T_a_c[0], p32).dtype == np.float32


def test_pose_error_reports_translation_and_degrees():
    T = se3_from_rt(rotvec_to_rotmat(np.array([0, 0, np.radians(2.0)])), [0.0, 0.003, 0.004])
    t_err, r_err = pose_error(T, np.eye(4))
    assert t_err == pytest.approx(0.005)
    assert r_err == pytest.approx(2.0)


def test_skew_is_the_cross_product_matrix():
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    np.testing.assert_allclose(skew(a) @ b[..., None], np.cross(a, b)[..., None], atol=1e-12)
    np.testing.assert_allclose(skew(a[0]), -skew(a[0]).T)
