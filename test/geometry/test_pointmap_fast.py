"""The fast full-size map helpers equal their straightforward NumPy definitions."""

import numpy as np
import pytest

from pointmap_ros.geometry.alignment import ransac_umeyama
from pointmap_ros.geometry.camera import estimate_focal, unproject
from pointmap_ros.geometry.pointmap import (
    confidence_mask, confidence_threshold, invalid_as_nan, set_invalid_nan, squared_norm,
    valid_mask, vector_norm)
from pointmap_ros.geometry.pose import relative_pose_pnp
from pointmap_ros.geometry.transforms import (
    pose_error, rotvec_to_rotmat, se3_apply, se3_from_rt)

T = se3_from_rt(rotvec_to_rotmat(np.array([0.3, -0.2, 0.1])), [0.5, -1.0, 2.0])


@pytest.mark.parametrize('shape', [(7, 33, 3), (40, 3), (3,)])
def test_norms_and_transform_match_reference(shape):
    v = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    v.reshape(-1)[0] = np.nan
    np.testing.assert_array_equal(np.isnan(vector_norm(v)), np.isnan(v).any(-1))
    ok = ~np.isnan(v).any(-1)
    np.testing.assert_allclose(vector_norm(v)[ok], np.linalg.norm(v, axis=-1)[ok], rtol=1e-6)
    np.testing.assert_allclose(squared_norm(v)[ok], np.sum(v * v, -1)[ok], rtol=1e-6)
    out = se3_apply(T, v)
    assert out.dtype == np.float32 and out.shape == v.shape
    ref = v.astype(np.float64) @ T[:3, :3].T + T[:3, 3]
    np.testing.assert_allclose(out[ok], ref[ok], rtol=1e-5, atol=1e-5)


def test_invalid_as_nan_and_valid_mask():
    rng = np.random.default_rng(1)
    pts = rng.normal(size=(6, 9, 3)).astype(np.float32)
    pts[0, 0, 2], pts[0, 1, 2], pts[0, 2, 2] = np.inf, -1.0, np.nan
    valid = valid_mask(pts)
    np.testing.assert_array_equal(valid, np.isfinite(pts[..., 2]) & (pts[..., 2] > 0))
    masked = pts + invalid_as_nan(valid)
    np.testing.assert_array_equal(masked[valid], pts[valid])  # bit-exact where valid
    assert np.isnan(masked[~valid]).all()
    for v in (valid, rng.random((6, 9)) < 0.3):  # few invalid pixels (index write) or many
        out = set_invalid_nan(pts.copy(), v)
        np.testing.assert_array_equal(out[v], pts[v])
        assert np.isnan(out[~v]).all()


def test_confidence_threshold_is_the_mask_threshold():
    conf = np.random.default_rng(2).uniform(1, 5, size=(50, 60)).astype(np.float32)
    conf[0, 0] = np.inf
    thr = confidence_threshold(conf, 4.0, 0.5)
    assert thr == pytest.approx(3.0, abs=0.1)  # min(4, median of U(1, 5))
    np.testing.assert_array_equal(confidence_mask(conf, 4.0, 0.5),
                                  np.isfinite(conf) & (conf >= thr))
    assert confidence_threshold(conf, 3.0) == 3.0


def test_strided_pnp_and_focal_stay_exact():
    H, W = 60, 100
    K = np.array([[95.0, 0, (W - 1) / 2], [0, 95.0, (H - 1) / 2], [0, 0, 1]])
    pts_j = unproject(np.random.default_rng(3).uniform(2.0, 5.0, size=(H, W)), K)
    T_i_j = se3_from_rt(rotvec_to_rotmat(np.array([0.02, -0.05, 0.01])), [0.1, 0.02, -0.05])
    pts = se3_apply(T_i_j, pts_j)
    mask = np.ones((H, W), bool)
    mask[:10] = False
    pts[:10] = 99.0
    for m in (mask, mask[::3, ::3]):  # full-size or strided mask
        T_est, _ = relative_pose_pnp(pts, K, m, stride=3)
        t_err, r_err = pose_error(T_est, T_i_j)
        assert t_err < 1e-6 and r_err < 1e-5
    assert estimate_focal(pts_j, stride=4) == pytest.approx(95.0, rel=1e-9)


def test_ransac_reports_residuals_of_all_points():
    rng = np.random.default_rng(4)
    src = rng.normal(size=(200, 3))
    dst = se3_apply(T, src)
    dst[:10] += 1.0
    res = ransac_umeyama(src, dst, threshold=0.05)
    np.testing.assert_allclose(res.residuals, np.linalg.norm(dst - se3_apply(res.T, src), axis=1))
    assert res.inliers.sum() == 190 and res.residuals[10:].max() < 1e-9


@pytest.mark.parametrize('dtype', [np.float32, np.float64])
def test_private_quantile_equals_numpy_quantile(dtype):
    """The confidence gate's fast quantile must be np.quantile ('linear') bit for bit."""
    from pointmap_ros.geometry.pointmap import _quantile
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 17, 1000, 4096):
        values = (rng.standard_normal(n) * 3 + 2).astype(dtype)
        for q in (0.0, 0.1, 0.25, 0.5, 0.77, 0.9, 1.0):
            assert _quantile(values, q) == float(np.quantile(values, q)), (n, q)


@pytest.mark.parametrize('dtype', [np.float32, np.float64, np.int64])
def test_median_equals_numpy_median(dtype):
    from pointmap_ros.geometry.pointmap import median
    rng = np.random.default_rng(5)
    for n in [*range(1, 40), 999, 1000, 8191, 8192]:
        values = (rng.normal(0.0, 1.0, n) * rng.uniform(0.1, 100.0)).astype(dtype)
        assert median(values) == float(np.median(values)), n
        if dtype != np.int64 and n > 2:
            values[rng.integers(n)] = np.nan  # NaN propagates, as in NumPy
            assert np.isnan(median(values)) and np.isnan(np.median(values))
