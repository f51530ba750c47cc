"""Rigid-motion refinement in each correspondence's own metric, the affine motion of a
stretching instance and the locally rigid (blended) motion of deforming instances, against
analytic ground truth."""

import numpy as np

from pointmap_ros.geometry.transforms import (
    pose_error, rotvec_to_rotmat, se3_apply, se3_from_rt, se3_inverse)
from pointmap_ros.tracking.rigid_motion import (
    BlendedMotion, RigidMotion, fit_affine_motion, fit_blended_motion, fit_rigid_motion,
    refine_rigid_motion)

TRUE_MOTION = se3_from_rt(rotvec_to_rotmat(np.array([0.05, -0.2, 0.1])), [0.08, -0.03, 0.02])


def _blob(count: int = 400, seed: int = 0) -> np.ndarray:
    """Points of an object 0.3 m across, 3 m in front of the camera (time b)."""
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, 0.15, (count, 3)) + np.array([0.2, -0.1, 3.0])


def _stripes(count: int, seed: int = 1) -> np.ndarray:
    """``[N, 3]`` unit stripe directions in the image plane, a few orientations (a curved
    striped surface seen in perspective)."""
    angles = np.random.default_rng(seed).choice([0.0, 0.5, 1.2, 2.0], count)
    return np.stack([np.cos(angles), np.sin(angles), np.zeros(count)], axis=1)


def test_refinement_is_least_squares_with_identity_metric():
    now = _blob()
    before = se3_apply(se3_inverse(TRUE_MOTION), now)
    start = se3_from_rt(rotvec_to_rotmat(np.array([0.0, 0.05, 0.0])), [0.02, 0.0, 0.0]) \
        @ TRUE_MOTION
    refined = refine_rigid_motion(start, before, now, np.broadcast_to(np.eye(3), (400, 3, 3)),
                                  scale=0.05, iterations=10)
    np.testing.assert_allclose(refined, TRUE_MOTION, atol=1e-5)


def test_refinement_ignores_matches_slid_along_stripes():
    """Optical flow on a stripe underestimates the motion along it (the aperture problem):
    each earlier point slides along its stripe by half the true motion's component there.
    Umeyama's isotropic cost follows the slides; the stripe-blind metric recovers the
    exact motion from the components across the stripes and along the ray."""
    now = _blob()
    before = se3_apply(se3_inverse(TRUE_MOTION), now)
    stripes = _stripes(len(now))
    along = np.sum((now - before) * stripes, axis=1)
    observed = before + 0.5 * along[:, None] * stripes  # slid halfway back towards `now`
    umeyama = fit_rigid_motion(observed, now, None, threshold=0.05,
                               rigid_residual_rel=0.5).T
    information = np.eye(3) - stripes[:, :, None] * stripes[:, None, :]
    # The slid points are the measurements: their residual, in their own frame, is
    # T^-1 now - observed (T^-1 is refined; T = its inverse).
    refined = se3_inverse(refine_rigid_motion(se3_inverse(umeyama), now, observed,
                                              information, scale=0.05, iterations=10))
    umeyama_error = pose_error(umeyama, TRUE_MOTION)
    refined_error = pose_error(refined, TRUE_MOTION)
    assert umeyama_error[0] > 0.005  # metres: the slides bias the isotropic fit
    assert refined_error[0] < 1e-3 * umeyama_error[0] and refined_error[1] < 1e-4


def test_refinement_keeps_the_start_where_nothing_is_observed():
    """All stripes horizontal: no point constrains a translation along x, so the
    refinement leaves the start's x translation as it was (damping, no drift)."""
    now = _blob()
    before = se3_apply(se3_inverse(TRUE_MOTION), now)
    information = np.broadcast_to(np.diag([0.0, 1.0, 1.0]), (len(now), 3, 3))
    start = TRUE_MOTION.copy()
    start[0, 3] += 0.04
    refined = refine_rigid_motion(start, before, now, information, scale=0.05, iterations=10)
    assert abs(refined[0, 3] - start[0, 3]) < 1e-3
    np.testing.assert_allclose(refined[1:3, 3], TRUE_MOTION[1:3, 3], atol=1e-3)


def test_blended_motion_follows_a_bending_object():
    """Two halves of a sheet 1.2 m wide move differently (a fold): each piece recovers its
    half's motion exactly, where one rigid fit leaves centimetres of error."""
    rng = np.random.default_rng(3)
    before = np.stack([rng.uniform(-0.6, 0.6, 600), rng.uniform(-0.3, 0.3, 600),
                       np.full(600, 3.0)], axis=1)
    left = before[:, 0] < 0
    hinge = se3_from_rt(np.eye(3), [0.0, 0.0, 3.0])  # the fold line: x = 0 on the sheet
    fold = hinge @ se3_from_rt(rotvec_to_rotmat(np.array([0.0, 0.15, 0.0])), np.zeros(3)) \
        @ se3_inverse(hinge)
    now = before + np.array([0.05, 0.0, 0.0])
    now[~left] = se3_apply(fold, before[~left]) + np.array([0.05, 0.0, 0.0])
    true_flow = now - before
    single = fit_rigid_motion(before, now, None, threshold=0.01, rigid_residual_rel=0.05)
    blended = fit_blended_motion(before, now, threshold=0.01, pieces=2, fallback=single.T)
    error = np.linalg.norm(blended.displacement(now) - true_flow, axis=1)
    single_error = np.linalg.norm(now - se3_apply(se3_inverse(single.T), now) - true_flow,
                                  axis=1)
    inner = np.abs(before[:, 0]) > 0.3  # away from the fold, one piece dominates
    assert np.mean(error[inner]) < 0.1 * np.mean(single_error[inner])
    assert np.mean(error) < 0.5 * np.mean(single_error)
    # Deterministic (no global RNG).
    again = fit_blended_motion(before, now, threshold=0.01, pieces=2, fallback=single.T)
    np.testing.assert_array_equal(again.motions, blended.motions)


def test_a_piece_torn_away_from_its_instance_takes_the_rigid_motion():
    """A sheet translates 5 cm, but the optical flow lost its right quarter: those pixels'
    correspondences read a wall 4 m behind, consistently (one consensus RANSAC finds). The
    piece fitted to them would carry its points 4 m; it leaves the 1.2 m sheet by far more
    than the sheet's size, so it moves with the instance's rigid fit, exactly."""
    rng = np.random.default_rng(5)
    now = np.stack([rng.uniform(-0.6, 0.6, 800), rng.uniform(-0.3, 0.3, 800),
                    np.full(800, 3.0)], axis=1)
    shift = np.array([0.05, 0.0, 0.0])
    before = now - shift
    lost = now[:, 0] > 0.3
    before[lost] += np.array([0.0, 0.0, 4.0])
    single = fit_rigid_motion(before, now, None, threshold=0.01, rigid_residual_rel=0.05)
    np.testing.assert_allclose(single.T[:3, 3], shift, atol=1e-9)  # 3 / 4 of the sheet
    blended = fit_blended_motion(before, now, threshold=0.01, pieces=4, fallback=single.T)
    assert len(blended.motions) == 4
    np.testing.assert_allclose(blended.displacement(now), np.broadcast_to(shift, now.shape),
                               atol=1e-9)
    # The torn piece is replaced, not dropped: its own fit did explain its points.
    torn_piece = np.argmax(blended.centres[:, 0])
    np.testing.assert_array_equal(blended.motions[torn_piece], single.T)


def test_blended_motion_of_one_piece_is_the_rigid_flow():
    now = _blob(30)
    one = fit_blended_motion(se3_apply(se3_inverse(TRUE_MOTION), now), now, threshold=0.01,
                             pieces=4, fallback=TRUE_MOTION, min_points=20)
    assert isinstance(one, BlendedMotion) and len(one.motions) == 1
    np.testing.assert_allclose(one.displacement(now),
                               now - se3_apply(se3_inverse(TRUE_MOTION), now), atol=1e-12)


def _pulsing_motion() -> np.ndarray:
    """``[4, 4]`` TRUE_MOTION after a stretch of +6 / -4 / +2 % along the object's own axes
    about its centre (a breathing ball: affine, not rigid)."""
    centre = np.array([0.2, -0.1, 3.0])
    stretch = se3_from_rt(np.eye(3), centre) @ np.diag([1.06, 0.96, 1.02, 1.0]) \
        @ se3_from_rt(np.eye(3), -centre)
    return TRUE_MOTION @ stretch


def test_affine_motion_is_exact_for_a_pulsing_object():
    before = _blob()
    motion = _pulsing_motion()
    now = se3_apply(motion, before)
    rigid = fit_rigid_motion(before, now, None, threshold=0.2, rigid_residual_rel=0.05)
    affine = fit_affine_motion(before, now, rigid.T, threshold=0.2)
    np.testing.assert_allclose(affine, motion, atol=1e-12)
    # What the published flow gets: the affine displacement, exact; the rigid one is not.
    fitted = RigidMotion(**{**rigid.__dict__, 'affine': affine})
    np.testing.assert_allclose(fitted.displacement(now), now - before, atol=1e-12)
    assert np.abs(rigid.displacement(now) - (now - before)).max() > 5e-3


def test_affine_motion_keeps_the_rigid_rotation_across_a_flat_object():
    """A flat instance (a sheet facing the camera) says nothing about a stretch along its
    normal: there the fit keeps the rigid rotation, in its plane it is least squares."""
    before = _blob()
    before[:, 2] = 3.0
    motion = _pulsing_motion()
    now = se3_apply(motion, before)
    rigid = fit_rigid_motion(before, now, None, threshold=0.2, rigid_residual_rel=0.05)
    affine = fit_affine_motion(before, now, rigid.T, threshold=0.2)
    np.testing.assert_allclose(affine[:3, :3] @ [0.0, 0.0, 1.0],
                               rigid.T[:3, :3] @ [0.0, 0.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(se3_apply(affine, before), now, atol=1e-12)


def test_affine_motion_of_too_few_inliers_is_the_rigid_one():
    before = _blob(count=11)
    now = se3_apply(_pulsing_motion(), before)
    np.testing.assert_array_equal(fit_affine_motion(before, now, TRUE_MOTION, 0.2),
                                  TRUE_MOTION)


def test_affine_motion_ignores_matches_slid_along_stripes():
    """Matches slid along horizontal stripes by 5 % of their distance from the centre look
    like a stretch to a plain least-squares fit; in the aperture metric (blind along the
    stripes, in the frame of the matched points: the pipeline fits from now back to them)
    the fit stays rigid."""
    now = _blob()
    before = se3_apply(se3_inverse(TRUE_MOTION), now)
    slid = before.copy()
    slid[:, 0] += 0.05 * (before[:, 0] - before[:, 0].mean())
    blind_along_x = np.broadcast_to(np.diag([0.0, 1.0, 1.0]), (len(now), 3, 3))
    backward = se3_inverse(TRUE_MOTION)
    plain = fit_affine_motion(now, slid, backward, threshold=0.2)
    aperture = fit_affine_motion(now, slid, backward, threshold=0.2,
                                 information=blind_along_x)
    assert np.abs(se3_apply(plain, now) - before).max() > 1e-3
    np.testing.assert_allclose(se3_apply(aperture, now), before, atol=1e-9)
