"""The published scene flow (pipeline/scene_flow.py) on an analytic pair: zero on static
pixels, the fitted rigid motion on rigid instances (affine on a pulsing one), blended rigid
pieces on non-rigid ones, unknown on moving pixels outside every fitted instance; only the flow
across the viewing rays where nothing vouches for the pair's depths."""

import numpy as np
import pytest

from pointmap_ros.errors import ConfigError
from pointmap_ros.geometry.camera import unproject
from pointmap_ros.geometry.transforms import rotvec_to_rotmat, se3_apply, se3_from_rt
from pointmap_ros.pipeline.config import PipelineConfig
from pointmap_ros.pipeline.correspondence import PixelFlow
from pointmap_ros.pipeline.instances import fit_instances
from pointmap_ros.pipeline.motion import local_mean
from pointmap_ros.pipeline.pair import PairView
from pointmap_ros.pipeline.scene_flow import (
    across_rays, keeps_flow_along_ray, published_flow, rigid_flow)
from pointmap_ros.tracking.rigid_motion import RigidMotion, fit_blended_motion
from pointmap_ros.tracking.window import WindowFrame
from pointmap_ros.types import DynamicPointMaps, Frame

H, W = 40, 56
K = np.array([[50.0, 0, 27.5], [0, 50.0, 19.5], [0, 0, 1]])
RIGID = (slice(5, 20), slice(5, 25))
SHEET = (slice(22, 36), slice(30, 50))
BLOB = (slice(2, 5), slice(50, 54))  # moving, in no instance


def _pair(now: np.ndarray, before: np.ndarray) -> PairView:
    """A pair whose current pixels are ``now`` at t_j and ``before`` at t_i (camera i's
    frame; the reference frame is static and at the origin), with pixel flow."""
    ones = np.ones((H, W), np.float32)
    maps = DynamicPointMaps(pts_i_ti=before, pts_i_tj=before, pts_j_ti=before, pts_j_tj=now,
                            conf_i_ti=ones, conf_i_tj=ones, conf_j_ti=ones, conf_j_tj=ones,
                            metric=True)
    ref = WindowFrame(Frame(np.zeros((H, W, 3), np.uint8), 0.0, 'k0'), 0, K,
                      T_world_cam=np.eye(4))
    zero_flow = np.zeros((H, W, 2), np.float32)
    consistent = np.ones((H, W), bool)
    flow = PixelFlow(zero_flow, zero_flow, consistent, consistent)
    return PairView('gap1', ref, 0.1, maps, 1.0, 0.0, None, pixel_flow=flow)


def _scene():
    before = unproject(np.full((H, W), 4.0), K).astype(np.float32)
    now = before.copy()
    T = se3_from_rt(rotvec_to_rotmat(np.array([0.0, 0.1, 0.0])), [0.05, 0.0, -0.02])
    now[RIGID] = se3_apply(T, before[RIGID].reshape(-1, 3).astype(np.float64)).reshape(
        15, 20, 3)
    rng = np.random.default_rng(0)
    now[SHEET] += np.array([0.03, 0.0, 0.0], np.float32) + rng.normal(
        0.0, 0.002, (14, 20, 3)).astype(np.float32)
    now[BLOB] += np.float32(0.05)
    labels = np.zeros((H, W), np.int32)
    labels[RIGID], labels[SHEET] = 1, 2
    # The rigid fit is exact; the sheet's fit is flagged non-rigid, with its blended pieces.
    fits = {1: RigidMotion(T=T, rms=0.0, residual_rel=0.0, inlier_ratio=1.0, is_rigid=True,
                           size=0.5),
            2: _deforming_fit(before[SHEET], now[SHEET])}
    return now, before, labels, fits


def _deforming_fit(before: np.ndarray, now: np.ndarray, threshold: float = 0.01
                   ) -> RigidMotion:
    """A non-rigid fit (identity single motion) with its blended pieces."""
    blended = fit_blended_motion(before.reshape(-1, 3), now.reshape(-1, 3), threshold,
                                 pieces=4, fallback=np.eye(4))
    return RigidMotion(T=np.eye(4), rms=0.01, residual_rel=0.2, inlier_ratio=0.4,
                       is_rigid=False, size=0.5, blended=blended)


def test_rigid_instances_move_with_their_fit_and_sheets_with_their_pieces():
    now, before, labels, fits = _scene()
    flow = rigid_flow(labels, fits, _pair(now, before))
    np.testing.assert_allclose(flow[RIGID], (now - before)[RIGID], atol=1e-5)
    # Locally rigid: the sheet's pieces average its per-pixel noise (2 mm) around the 3 cm
    # motion.
    sheet_flow = flow[SHEET].reshape(-1, 3)
    assert np.abs(sheet_flow - [0.03, 0.0, 0.0]).max() < 0.002
    assert np.std(sheet_flow[:, 0]) < 0.5 * np.std((now - before)[SHEET][..., 0])


def test_deforming_pieces_reject_patches_of_wrong_matches():
    """Optical flow fails in patches (a repeated texture matched one period off): here 2.5
    cm of error on a blob of the sheet's matches. A 7x7 mean of the correspondences (the
    rule before the blended pieces) spreads it over its neighbours; each piece's RANSAC fit
    rejects its core (its faint rim stays within the inlier distance and biases the fits by
    under a millimetre)."""
    now, before, labels, fits = _scene()
    now[SHEET] = before[SHEET] + np.array([0.03, 0.0, 0.0], np.float32)
    rows, cols = np.mgrid[SHEET]
    blob = np.exp(-0.5 * ((rows - 29.0) ** 2 + (cols - 40.0) ** 2) / 2.0 ** 2)
    matched = before.copy()
    matched[SHEET] += (0.025 * blob[..., None] * np.array([1.0, 0.0, 0.0])).astype(np.float32)
    fits[2] = _deforming_fit(matched[SHEET], now[SHEET], threshold=0.005)
    pair = _pair(now, matched)
    flow = rigid_flow(labels, fits, pair)[SHEET].reshape(-1, 3)
    mean_flow = local_mean(pair.flow_j, labels == 2, 7)[SHEET].reshape(-1, 3)
    error = np.linalg.norm(flow - [0.03, 0.0, 0.0], axis=1)
    mean_error = np.linalg.norm(mean_flow - [0.03, 0.0, 0.0], axis=1)
    assert mean_error.max() > 0.005
    assert error.max() < 0.002 and error.max() < 0.2 * mean_error.max()


def test_published_flow_is_zero_on_static_pixels_and_unknown_outside_instances():
    now, before, labels, fits = _scene()
    motion = labels > 0
    motion[BLOB] = True
    valid = np.ones((H, W), bool)
    flow, flow_valid = published_flow(_pair(now, before), np.eye(3), 0.1, valid, motion,
                                      labels, fits)
    static = ~motion
    assert (flow[static] == 0).all() and flow_valid[static].all()
    assert not flow_valid[BLOB].any() and np.isnan(flow[BLOB]).all()
    assert flow_valid[RIGID].all() and flow_valid[SHEET].all()
    # Per second: the pair's gap is 0.1 s.
    np.testing.assert_allclose(flow[RIGID], (now - before)[RIGID] / 0.1, atol=1e-4)
    # An instance whose fit was not kept (no evidence of a moving object) is a moving
    # region like the blob: its pixels have no flow.
    flow, flow_valid = published_flow(_pair(now, before), np.eye(3), 0.1, valid, motion,
                                      labels, {2: fits[2]})
    assert not flow_valid[RIGID].any() and np.isnan(flow[RIGID]).all()
    assert flow_valid[SHEET].all() and (flow[static] == 0).all()


def test_a_pulsing_instance_moves_with_its_affine_fit_and_a_noisy_rigid_one_does_not():
    """The rigid instance's matches carry 3 mm of noise; the other one stretches by 2 %
    across and shrinks by 1 % down while it moves (a breathing ball seen face on). Both pass
    as rigid (the stretch is small next to its size); only the second keeps an affine fit,
    and its published flow is then exact where the rigid fit's is not."""
    before = unproject(np.full((H, W), 4.0), K).astype(np.float64)
    now = before.copy()
    rng = np.random.default_rng(2)
    T = se3_from_rt(rotvec_to_rotmat(np.array([0.0, 0.05, 0.0])), [0.05, 0.0, -0.02])
    now[RIGID] = se3_apply(T, before[RIGID]) + rng.normal(0.0, 0.003, (15, 20, 3))
    centre = before[SHEET].reshape(-1, 3).mean(axis=0)
    stretch = np.diag([1.02, 0.99, 1.0])
    now[SHEET] = (before[SHEET] - centre) @ stretch.T + centre + [0.08, 0.0, 0.02]
    labels = np.zeros((H, W), np.int32)
    labels[RIGID], labels[SHEET] = 1, 2
    pair = _pair(now.astype(np.float32), before.astype(np.float32))
    fits = fit_instances(PipelineConfig(), labels, 2, pair, scene_depth=4.0, noise=0.003)
    assert fits[1].is_rigid and fits[1].affine is None
    assert fits[2].is_rigid and fits[2].affine is not None
    flow = rigid_flow(labels, fits, pair)
    np.testing.assert_allclose(flow[SHEET], (now - before)[SHEET], atol=1e-5)
    without = fit_instances(PipelineConfig(affine_residual_frac=0.0), labels, 2, pair,
                            scene_depth=4.0, noise=0.003)
    assert without[2].affine is None
    rigid_error = np.abs(rigid_flow(labels, without, pair)[SHEET] - (now - before)[SHEET])
    assert rigid_error.max() > 5e-3


def test_across_rays_removes_exactly_the_moving_pixels_component_along_their_rays():
    """Moving pixels keep their flow's component across the ray through their point (the
    part the optical flow measures), in full; static pixels keep all of it."""
    rng = np.random.default_rng(0)
    points = unproject(rng.uniform(1.0, 5.0, (H, W)), K).astype(np.float32)
    flow = rng.normal(0.0, 0.05, (H, W, 3)).astype(np.float32)
    moving = rng.random((H, W)) < 0.5
    across = across_rays(flow, points, moving)
    rays = points / np.linalg.norm(points, axis=-1, keepdims=True)
    np.testing.assert_allclose(np.sum(across * rays, axis=-1)[moving], 0.0, atol=1e-7)
    # What is left is the flow minus a multiple of the ray: the same across the ray.
    removed = flow - across
    np.testing.assert_allclose(np.cross(removed, rays)[moving], 0.0, atol=1e-7)
    np.testing.assert_array_equal(across[~moving], flow[~moving])


def test_flow_along_the_ray_is_kept_where_measured_or_trusted_depths_vouch_for_it():
    assert keeps_flow_along_ray('trusted', measured_depth=True, maps_trusted=False)
    assert keeps_flow_along_ray('trusted', measured_depth=False, maps_trusted=True)
    assert not keeps_flow_along_ray('trusted', measured_depth=False, maps_trusted=False)
    assert keeps_flow_along_ray('always', measured_depth=False, maps_trusted=False)
    with pytest.raises(ConfigError, match='flow_along_ray'):
        PipelineConfig(flow_along_ray='never').validate()
