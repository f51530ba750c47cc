"""Motion masks, instance splitting and per-instance rigid fits on analytic maps."""

import numpy as np
import pytest

from pointmap_ros.errors import InputError
from pointmap_ros.geometry.camera import unproject
from pointmap_ros.geometry.transforms import pose_error, rotvec_to_rotmat, se3_apply, se3_from_rt
from pointmap_ros.tracking.rigid_motion import fit_rigid_motion, object_size
from pointmap_ros.tracking.segmentation import (
    PLACE_UNKNOWN, flow_noise, motion_threshold, pair_motion, remove_small_regions,
    segment_instances, smooth_flow)

H, W = 48, 64
K = np.array([[60.0, 0, 30.5], [0, 55.0, 25.0], [0, 0, 1]])


def scene():
    """Wall at 5 m; object A (near, 2 m) and object B (3 m) touching in the image."""
    depth = np.full((H, W), 5.0)
    depth[10:30, 10:32] = 2.0
    depth[10:30, 32:50] = 3.0
    ids = np.zeros((H, W), int)
    ids[10:30, 10:32], ids[10:30, 32:50] = 1, 2
    return unproject(depth, K), ids


def test_static_scene_has_zero_flow_and_no_motion():
    pts, _ = scene()
    flow = pts - pts
    valid = np.ones((H, W), bool)
    thr = motion_threshold(flow_noise(np.linalg.norm(flow, axis=-1), valid), 5.0, 0.1,
                           0.0, 1e-4, 4.0)
    assert thr == pytest.approx(5e-4)
    assert not pair_motion(flow, valid, 5.0, 0.1, 0.0, 1e-4, 4.0, 2).moving.any()


def test_threshold_scales_with_depth_gap_and_noise():
    assert motion_threshold(0.0, 4.0, 0.5, 0.02, 0.001, 4) == pytest.approx(0.04)
    assert motion_threshold(0.0, 4.0, 0.01, 0.02, 0.001, 4) == pytest.approx(0.004)
    assert motion_threshold(0.1, 4.0, 0.5, 0.02, 0.001, 4) == pytest.approx(0.4)


def test_motion_mask_and_touching_objects_split_by_depth():
    pts, ids = scene()
    flow = np.zeros_like(pts)
    flow[ids == 1] = [0.05, 0, 0]
    flow[ids == 2] = [0.05, 0, 0]  # same motion: only the depth jump separates them
    flow[0, 0] = [1.0, 0, 0]  # isolated speck: removed by the small-region cleanup
    mask = remove_small_regions(
        pair_motion(flow, np.ones((H, W), bool), 5.0, 0.1, 0.0, 0.002, 4.0, 2).moving, 5)
    np.testing.assert_array_equal(mask, ids > 0)
    labels, n = segment_instances(mask, pts, flow, 0.05, 0.5, 0.01, 5)
    assert n == 2
    assert len(np.unique(labels[ids == 1])) == 1 and len(np.unique(labels[ids == 2])) == 1
    assert labels[ids == 1][0] != labels[ids == 2][0] and (labels[ids == 0] == 0).all()


def _continuing_scene():
    """A 440-pixel component (rows 10-29, columns 10-31) and two 12-pixel ones apart from
    it and from each other (rows 30-33, columns 40-42; rows 36-37, columns 50-55)."""
    pts, _ = scene()
    mask = np.zeros((H, W), bool)
    mask[10:30, 10:32] = True
    mask[30:34, 40:43] = True
    mask[36:38, 50:56] = True
    return mask, pts, np.zeros_like(pts)


@pytest.mark.parametrize('carried_rows, carried_min, kept', [
    (None, 0, False),              # under min_pixels: dropped
    (slice(30, 34), 10, True),     # all 12 pixels continue a track
    (slice(30, 31), 10, False),    # a quarter of them: a new, too small instance
    (slice(30, 34), 13, False),    # continuing, but under the carried minimum
])
def test_small_components_survive_only_when_they_continue_a_track(carried_rows, carried_min,
                                                                   kept):
    mask, pts, flow = _continuing_scene()
    carried = None
    if carried_rows is not None:
        carried = np.zeros((H, W), np.int32)
        carried[carried_rows, 40:43] = 7
        carried[10:30, 10:32] = 3  # the large one continues another track: no matter
    labels, n = segment_instances(mask, pts, flow, 0.05, 0.5, 0.01, 20, carried, carried_min)
    assert n == (2 if kept else 1)
    assert labels[15, 15] == 1  # largest first
    assert (labels[30:34, 40:43] == 2).all() if kept else (labels[30:34, 40:43] == 0).all()
    assert (labels[36:38, 50:56] == 0).all()


@pytest.mark.parametrize('unknown_columns, kept', [
    (slice(41, 43), True),    # 4 pixels known, all on track 7; 8 unknown: no evidence
    (slice(40, 43), False),   # no pixel known: nothing continues
])
def test_pixels_with_an_unknown_place_are_no_evidence_against_continuing(unknown_columns,
                                                                         kept):
    """A small, fast object's flow fails on most of it: of its 12 pixels only a third have
    a place a frame ago, all on its track. Counted as "on no track" those 8 outvoted the 4
    that are; unknown, they do not. A majority still needs ``carried_min`` known pixels."""
    mask, pts, flow = _continuing_scene()
    carried = np.zeros((H, W), np.int32)
    carried[30:34, 40:43] = 7
    carried[30:34, unknown_columns] = PLACE_UNKNOWN
    labels, n = segment_instances(mask, pts, flow, 0.05, 0.5, 0.01, 20, carried, 4)
    assert n == (2 if kept else 1)
    assert (labels[30:34, 40:43] == 2).all() if kept else (labels[30:34, 40:43] == 0).all()
    # The same 4 known pixels under a minimum of 5: too little evidence.
    labels, n = segment_instances(mask, pts, flow, 0.05, 0.5, 0.01, 20, carried, 5)
    assert n == 1
    # And with those 8 pixels known to be on no track, the third is no majority.
    carried[30:34, unknown_columns] = 0
    labels, n = segment_instances(mask, pts, flow, 0.05, 0.5, 0.01, 20, carried, 4)
    assert n == 1


def test_a_small_component_does_not_compete_with_its_tracks_instance():
    """A fragment continuing the track a full-size instance continues is dropped; of two
    fragments continuing a lost track only the larger one is kept."""
    mask, pts, flow = _continuing_scene()
    carried = np.zeros((H, W), np.int32)
    carried[10:30, 10:32] = 7
    carried[30:34, 40:43] = 7
    labels, n = segment_instances(mask, pts, flow, 0.05, 0.5, 0.01, 20, carried, 10)
    assert n == 1 and (labels[30:34, 40:43] == 0).all()
    carried[10:30, 10:32] = 0
    mask[36:38, 56] = True     # the second fragment grows to 14 pixels: the larger one
    carried[36:38, 50:57] = 7
    labels, n = segment_instances(mask, pts, flow, 0.05, 0.5, 0.01, 20, carried, 10)
    assert n == 2 and (labels[36:38, 50:57] == 2).all() and (labels[30:34, 40:43] == 0).all()


def test_same_depth_objects_split_by_flow():
    depth = np.full((H, W), 3.0)
    pts = unproject(depth, K)
    flow = np.zeros_like(pts)
    flow[10:30, 10:32] = [0.05, 0, 0]
    flow[10:30, 32:50] = [-0.05, 0, 0]
    mask = np.linalg.norm(flow, axis=-1) > 0
    labels, n = segment_instances(mask, pts, flow, 0.05, 0.5, 0.01, 5)
    assert n == 2 and labels[15, 20] != labels[15, 40]


def test_remove_small_regions_fills_holes():
    m = np.zeros((20, 20), bool)
    m[2:12, 2:12] = True
    m[5, 5] = False  # hole
    m[18, 18] = True  # speck
    out = remove_small_regions(m, 4)
    assert out[5, 5] and not out[18, 18] and out[2:12, 2:12].all()


def test_smooth_flow_reduces_noise_and_ignores_invalid():
    rng = np.random.default_rng(0)
    flow = rng.normal(scale=1.0, size=(H, W, 3)).astype(np.float32)
    valid = np.ones((H, W), bool)
    valid[:, :5] = False
    flow[:, :5] = 100.0  # invalid pixels must not leak in
    sm = smooth_flow(flow, valid, 2)
    assert np.abs(sm[:, 5:]).max() < 3.0 and sm[:, 8:].std() < 0.3


def test_rigid_fit_recovers_object_motion_and_flags_non_rigid():
    rng = np.random.default_rng(1)
    a = rng.uniform(-0.3, 0.3, size=(500, 3)) + [0.5, 0.2, 3.0]
    T = se3_from_rt(rotvec_to_rotmat(np.array([0.1, -0.2, 0.05])), [0.03, -0.01, 0.02])
    b = se3_apply(T, a)
    b[:20] += 0.5  # a few wrong correspondences
    fit = fit_rigid_motion(a, b, None, threshold=0.01, rigid_residual_rel=0.05)
    t_err, r_err = pose_error(fit.T, T)
    assert t_err < 1e-9 and r_err < 1e-7 and fit.is_rigid and fit.inlier_ratio == 0.96
    # Bending: displacement grows with x^2, no rigid motion explains it.
    bent = b.copy()
    bent[:, 2] += 3.0 * (a[:, 0] - 0.5) ** 2
    fit = fit_rigid_motion(a, bent, None, threshold=0.01, rigid_residual_rel=0.05)
    assert not fit.is_rigid and fit.residual_rel > 0.05
    assert object_size(np.zeros((1, 3))) == 0.0
    with pytest.raises(InputError):
        fit_rigid_motion(a[:2], b[:2], None, 0.01, 0.05)


def test_pair_motion_exact_keeps_borders_noisy_smooths_and_erodes():
    flow = np.zeros((H, W, 3), np.float32)
    flow[10:30, 10:40] = [0.08, 0, 0]  # 8 cm in a 5 m scene
    valid = np.ones((H, W), bool)
    exact = pair_motion(flow, valid, 5.0, 0.1, 0.01, 0.001, 4.0, 2)
    assert exact.noise == 0 and exact.flow is flow
    np.testing.assert_array_equal(exact.moving, np.linalg.norm(flow, axis=-1) > 0)
    noisy_flow = flow + np.random.default_rng(0).normal(0, 0.03, flow.shape).astype(np.float32)
    # Per pixel, 8 cm of motion is lost in 3 cm noise per axis...
    raw = pair_motion(noisy_flow, valid, 5.0, 0.1, 0.01, 0.001, 4.0, 0).moving
    noisy = pair_motion(noisy_flow, valid, 5.0, 0.1, 0.01, 0.001, 4.0, 2)
    assert noisy.noise > 0.03 and noisy.flow is not noisy_flow
    truth = np.linalg.norm(flow, axis=-1) > 0
    # ...but the smoothed decision recovers most of the block (its border, where the box
    # filter halves the flow, is lost) and does not spread onto the static pixels around it.
    assert (noisy.moving & truth).sum() > 0.65 * truth.sum() > (raw & truth).sum()
    near = np.zeros_like(truth)
    near[9:31, 9:41] = True
    assert not (noisy.moving & ~near).any()
