"""Umeyama/RANSAC recover known transforms; PnP recovers a known relative camera pose."""

import numpy as np
import pytest

from pointmap_ros.errors import InputError, PoseError
from pointmap_ros.geometry.alignment import ransac_umeyama, umeyama
from pointmap_ros.geometry.camera import unproject
from pointmap_ros.geometry.pointmap import confidence_mask, scale_from_depth
from pointmap_ros.geometry.pose import relative_pose_pnp
from pointmap_ros.geometry.transforms import (
    pose_error, rotvec_to_rotmat, se3_apply, se3_from_rt, se3_inverse)

T_KNOWN = se3_from_rt(rotvec_to_rotmat(np.array([0.2, -0.5, 0.9])), [0.4, -1.2, 2.5])


@pytest.mark.parametrize('with_scale', [False, True])
def test_umeyama_recovers_transform(with_scale):
    rng = np.random.default_rng(0)
    src = rng.normal(size=(50, 3))
    s = 1.7 if with_scale else 1.0
    dst = s * se3_apply(T_KNOWN, src) - (s - 1) * T_KNOWN[:3, 3]
    R, t, s_est = umeyama(src, dst, rng.uniform(0.5, 2, 50), with_scale)
    assert s_est == pytest.approx(s)
    np.testing.assert_allclose(s_est * src @ R.T + t, dst, atol=1e-10)
    assert np.linalg.det(R) == pytest.approx(1.0)


def test_umeyama_errors():
    with pytest.raises(InputError):
        umeyama(np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(InputError):
        umeyama(np.zeros((4, 3)), np.zeros((5, 3)))
    with pytest.raises(InputError):
        umeyama(np.ones((4, 3)), np.ones((4, 3)), weights=np.zeros(4))


def test_ransac_rejects_outliers_deterministically():
    rng = np.random.default_rng(1)
    src = rng.normal(size=(400, 3))
    dst = se3_apply(T_KNOWN, src)
    out = rng.random(400) < 0.3
    dst[out] += rng.normal(scale=2.0, size=(out.sum(), 3))
    res = ransac_umeyama(src, dst, threshold=0.05, seed=3)
    t_err, r_err = pose_error(res.T, T_KNOWN)
    assert t_err < 1e-9 and r_err < 1e-7 and res.rms < 1e-9
    assert np.array_equal(res.inliers, ~out)
    again = ransac_umeyama(src, dst, threshold=0.05, seed=3)
    np.testing.assert_array_equal(res.T, again.T)


def test_pnp_recovers_relative_pose_with_asymmetric_k():
    H, W = 60, 100
    K = np.array([[95.0, 0, 47.2], [0, 88.0, 31.9], [0, 0, 1]])
    rng = np.random.default_rng(2)
    pts_j = unproject(rng.uniform(2.0, 5.0, size=(H, W)), K)
    T_i_j = se3_from_rt(rotvec_to_rotmat(np.array([0.02, -0.05, 0.01])), [0.1, 0.02, -0.05])
    pts_j_in_i = se3_apply(T_i_j, pts_j)
    mask = np.ones((H, W), bool)
    mask[:10] = False
    pts_j_in_i[:10] = 99.0  # garbage the mask must exclude (e.g. moving pixels)
    T_est, n_inl = relative_pose_pnp(pts_j_in_i, K, mask)
    t_err, r_err = pose_error(T_est, T_i_j)
    assert t_err < 1e-6 and r_err < 1e-5 and n_inl > 400
    with pytest.raises(PoseError) as err:  # valid input, no pose: not an InputError
        relative_pose_pnp(pts_j_in_i, K, np.zeros((H, W), bool))
    assert err.value.reason == 'pnp_too_few_points' and not isinstance(err.value, InputError)
    rng_pts = np.random.default_rng(5).uniform(-1, 1, size=(H, W, 3))  # no consistent pose
    with pytest.raises(PoseError) as err:
        relative_pose_pnp(rng_pts, K, reprojection_error_px=0.01)
    assert err.value.reason == 'pnp_failed'
    with pytest.raises(InputError):
        relative_pose_pnp(pts_j_in_i[..., :2], K)
    assert np.allclose(se3_inverse(se3_inverse(T_est)), T_est)


def test_scale_from_depth_and_confidence_gate():
    K = np.array([[95.0, 0, 47.2], [0, 88.0, 31.9], [0, 0, 1]])
    depth = np.random.default_rng(3).uniform(1, 3, size=(20, 30))
    pts = unproject(depth, K) / 2.5  # model units: 2.5 m per unit
    assert scale_from_depth(pts, depth) == pytest.approx(2.5)
    with pytest.raises(InputError):
        scale_from_depth(pts, depth[:-1])
    with pytest.raises(InputError):
        scale_from_depth(pts, np.zeros_like(depth))
    conf = np.linspace(1, 2, 600).reshape(20, 30)
    assert confidence_mask(conf, 3.0).sum() == 0
    assert confidence_mask(conf, 3.0, relative_quantile=0.5).mean() == pytest.approx(0.5, abs=0.01)
