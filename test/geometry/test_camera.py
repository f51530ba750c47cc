"""Tests of intrinsics handling, projection and the Weiszfeld focal fit (asymmetric cameras)."""

import numpy as np
import pytest

from pointmap_ros.errors import CalibrationError, InputError
from pointmap_ros.geometry.camera import (
    crop_intrinsics, estimate_focal, intrinsics_from_camera_info, pixel_grid, project,
    scale_intrinsics, unproject, unproject_at)

# Asymmetric on purpose (fx != fy, cx != cy, H != W) so a transpose cannot pass by symmetry.
K_ASYM = np.array([[210.0, 0.0, 70.3], [0.0, 190.0, 41.7], [0.0, 0.0, 1.0]])
H, W = 90, 150


def test_camera_info_valid_and_flat():
    np.testing.assert_array_equal(intrinsics_from_camera_info(K_ASYM.ravel(), W, H), K_ASYM)


@pytest.mark.parametrize('k, reason', [
    (np.zeros(9), 'calibration_zero'),
    (np.r_[-1.0, K_ASYM.ravel()[1:]], 'calibration_invalid'),
    (np.r_[np.nan, K_ASYM.ravel()[1:]], 'calibration_nonfinite'),
    (np.ones(6), 'calibration_values'),
    (np.r_[K_ASYM.ravel()[:6], 0.0, 0.0, 0.0], 'calibration_form'),
    (np.r_[K_ASYM.ravel()[:2], 500.0, K_ASYM.ravel()[3:]], 'calibration_principal_point'),
])
def test_camera_info_rejects_bad_k(k, reason):
    with pytest.raises(CalibrationError) as err:
        intrinsics_from_camera_info(k, W, H)
    assert err.value.reason == reason


def test_project_unproject_round_trip():
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 4.0, size=(H, W))
    pts = unproject(depth, K_ASYM)
    np.testing.assert_allclose(pts[..., 2], depth)
    np.testing.assert_allclose(project(pts, K_ASYM), pixel_grid(H, W), atol=1e-10)
    # Convention pin: the principal point pixel back-projects onto the optical axis.
    np.testing.assert_allclose(project(np.array([0.0, 0.0, 2.0]), K_ASYM), [70.3, 41.7])


def test_unproject_at_inverts_project_at_sub_pixel_positions_with_skew():
    K = K_ASYM.copy()
    K[0, 1] = 3.5  # a skewed camera: x depends on y
    rng = np.random.default_rng(1)
    pixels = rng.uniform([-5.0, -5.0], [W + 5.0, H + 5.0], size=(7, 11, 2))
    depth = rng.uniform(0.3, 9.0, size=(7, 11))
    points = unproject_at(pixels, depth, K)
    assert points.shape == (7, 11, 3) and points.dtype == np.float64
    np.testing.assert_allclose(points[..., 2], depth)
    np.testing.assert_allclose(project(points, K), pixels, atol=1e-9)
    # The whole-image form is the same rays on the integer pixel grid.
    np.testing.assert_array_equal(unproject(depth, K)[2, 5],
                                  unproject_at(np.array([5.0, 2.0]), depth[2, 5], K))


def test_unproject_rejects_wrong_shape_and_masks_bad_depth():
    with pytest.raises(InputError):
        unproject(np.ones((2, 3, 1)), K_ASYM)
    d = np.ones((H, W))
    d[0, 0], d[0, 1] = 0.0, np.nan
    pts = unproject(d, K_ASYM)
    assert np.isnan(pts[0, :2]).all() and np.isfinite(pts[1:]).all()


def test_resize_and_crop_keep_rays():
    # Resizing by 2 maps pixel-centre u to 2u + 0.5; the ray through that point is unchanged.
    K2 = scale_intrinsics(K_ASYM, 2.0, 3.0)
    p = np.array([0.3, -0.2, 1.7])
    u, v = project(p, K_ASYM)
    np.testing.assert_allclose(project(p, K2), [(u + 0.5) * 2 - 0.5, (v + 0.5) * 3 - 0.5])
    np.testing.assert_allclose(project(p, crop_intrinsics(K_ASYM, 10, 4)), [u - 10, v - 4])


def test_focal_fit_exact_and_robust():
    f = 180.0
    K = np.array([[f, 0, (W - 1) / 2], [0, f, (H - 1) / 2], [0, 0, 1]])
    rng = np.random.default_rng(1)
    pts = unproject(rng.uniform(1.0, 3.0, size=(H, W)), K)
    assert estimate_focal(pts) == pytest.approx(f, rel=1e-9)
    # 10 % of pixels with grossly wrong points: the L1 (Weiszfeld) fit barely moves.
    bad = rng.random((H, W)) < 0.1
    pts[bad] *= np.array([3.0, 3.0, 1.0])
    assert estimate_focal(pts) == pytest.approx(f, rel=0.02)
    with pytest.raises(InputError):
        estimate_focal(pts, mask=np.zeros((H, W), bool))
