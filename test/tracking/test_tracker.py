"""ObjectTracker: velocities, birth/death hysteresis (quick births), occlusion coasting,
association."""

import dataclasses

import numpy as np
import pytest

from pointmap_ros.geometry.transforms import (
    rotvec_to_rotmat, se3_apply, se3_compose, se3_from_rt, se3_inverse)
from pointmap_ros.tracking.tracker import (
    _UNMATCHED_COST, Detection, ObjectTracker, TrackerConfig, _assignment, is_fragment,
    moves_clearly)

RNG = np.random.default_rng(0)
CUBE = RNG.uniform(-0.2, 0.2, size=(200, 3))
V = np.array([0.5, 0.0, -0.2])     # m/s
OMEGA = np.array([0.0, 0.8, 0.0])  # rad/s


def pose(t, start):
    """Constant-twist motion: rotation about the moving centre + linear velocity."""
    return se3_from_rt(rotvec_to_rotmat(OMEGA * t), start + V * t)


def detection(t, start, anchor_t=0.0):
    T = pose(t, start)
    motion = se3_compose(T, se3_inverse(pose(anchor_t, start)))
    return Detection(points=se3_apply(T, CUBE), motion=motion, inlier_ratio=1.0,
                     is_rigid=True, residual_rel=0.0)


@pytest.mark.parametrize('alpha', [1.0, 0.5])
def test_velocity_recovered_and_pose_follows_anchor(alpha):
    tr = ObjectTracker(TrackerConfig(min_hits=2, velocity_alpha=alpha))
    start = np.array([0.0, 0.0, 3.0])
    for k in range(6):
        ids, objs = tr.update([detection(0.1 * k, start)], 0.1 * k, 3.0)
        assert ids == [1]
    (o,) = objs
    np.testing.assert_allclose(o.angular_velocity, OMEGA, atol=1e-9)
    # The object origin is its centroid at birth and moves rigidly with the object.
    m = CUBE.mean(0)
    np.testing.assert_allclose(o.T_world_obj[:3, 3], se3_apply(pose(0.5, start), m), atol=1e-9)
    # Its velocity is V + omega x (R m): a finite difference, exact when unfiltered.
    fd = (se3_apply(pose(0.5, start), m) - se3_apply(pose(0.4, start), m)) / 0.1
    if alpha == 1.0:
        np.testing.assert_allclose(o.linear_velocity, fd, atol=1e-9)
    np.testing.assert_allclose(o.linear_velocity, V, atol=0.02)
    assert o.point_count == 200 and o.confidence == 1.0 and o.age == 5
    assert np.all(o.extent > 0.3) and np.all(o.extent < 0.7)


def test_a_fit_that_jumps_away_from_the_prediction_gives_way_to_it():
    """One frame's fit is wrong (a 40-degree turn about a point 4 m away, as a handful of
    mismatched pixels give): the track keeps its constant-velocity pose for that frame, the
    next right fit takes over, and the frame never leaves the object (it used to jump by
    metres and, re-anchored at the next keyframe, stay there)."""
    tr = ObjectTracker(TrackerConfig(min_hits=2, velocity_alpha=1.0))
    start = np.array([0.0, 0.0, 3.0])
    for k in range(4):
        tr.update([detection(0.1 * k, start)], 0.1 * k, 3.0)
    wrong = _turned_about(detection(0.4, start), np.array([4.0, 0.0, 3.0]), 40.0)
    ids, (o,) = tr.update([wrong], 0.4, 3.0)
    assert ids == [1]  # still associated: its points are where the track is
    origin = CUBE.mean(0)
    true_origin = se3_apply(pose(0.4, start), origin)
    # The constant-velocity prediction: the origin off its arc by 0.1 mm at this turn rate.
    np.testing.assert_allclose(o.T_world_obj[:3, 3], true_origin, atol=1e-3)
    np.testing.assert_allclose(o.linear_velocity, V, atol=0.02)
    tr.reanchor()  # a keyframe switch right after the wrong fit keeps the right pose
    ids, (o,) = tr.update([detection(0.5, start, anchor_t=0.4)], 0.5, 3.0)
    np.testing.assert_allclose(o.T_world_obj[:3, 3], se3_apply(pose(0.5, start), origin),
                               atol=1e-3)


@pytest.mark.parametrize('step_from', [0.3, 0.2, None])
def test_a_failed_keyframe_fit_gives_way_to_the_step_since_the_previous_frame(step_from):
    """The keyframe is four frames back and the fit over that gap failed (the same wrong
    turn as above), while the object swerved 3 cm off its constant-velocity path: the fit
    since the previous frame (exact here) puts the track on the object. A step from a
    frame the track was not updated at, or none, leaves the prediction."""
    tr = ObjectTracker(TrackerConfig(min_hits=2, velocity_alpha=1.0))
    start = np.array([0.0, 0.0, 3.0])
    for k in range(4):
        tr.update([detection(0.1 * k, start)], 0.1 * k, 3.0)
    swerve = se3_from_rt(np.eye(3), [0.0, 0.03, 0.0])
    true_pose = se3_compose(swerve, pose(0.4, start))
    failed = _turned_about(detection(0.4, start), np.array([4.0, 0.0, 3.0]), 40.0)
    failed = dataclasses.replace(failed, points=se3_apply(true_pose, CUBE))
    if step_from is not None:
        failed = dataclasses.replace(
            failed, step_from=step_from,
            step_motion=se3_compose(true_pose, se3_inverse(pose(step_from, start))))
    ids, (o,) = tr.update([failed], 0.4, 3.0)
    assert ids == [1]
    origin = CUBE.mean(0)
    expected = true_pose if step_from == 0.3 else pose(0.4, start)
    np.testing.assert_allclose(o.T_world_obj[:3, 3], se3_apply(expected, origin), atol=1e-3)
    assert np.linalg.norm(se3_apply(true_pose, origin) - se3_apply(pose(0.4, start), origin)
                          ) == pytest.approx(0.03)


def test_no_track_is_born_on_a_failed_keyframe_fit():
    """A detection whose keyframe motion failed starts no track (the anchor would be that
    motion taken back from the pose), while it still updates a track that exists."""
    start = np.array([0.0, 0.0, 3.0])
    tr = ObjectTracker(TrackerConfig(min_hits=1))
    failed = dataclasses.replace(detection(0.0, start), motion_failed=True)
    assert tr.update([failed], 0.0, 3.0) == ([0], [])  # 0: no track
    ids, _ = tr.update([detection(0.1, start)], 0.1, 3.0)
    assert ids == [1]
    ids, (o,) = tr.update([dataclasses.replace(detection(0.2, start), motion_failed=True)],
                          0.2, 3.0)
    assert ids == [1] and o.point_count == 200


def _turned_about(det: Detection, pivot: np.ndarray, degrees: float) -> Detection:
    """``det`` with its motion followed by a turn about the y axis through ``pivot``: the
    fit a handful of mismatched pixels give (same points, wrong motion)."""
    at_pivot = se3_from_rt(np.eye(3), pivot)
    turn = se3_compose(se3_compose(at_pivot, se3_from_rt(rotvec_to_rotmat(
        np.array([0.0, np.radians(degrees), 0.0])), np.zeros(3))), se3_inverse(at_pivot))
    return Detection(points=det.points, motion=se3_compose(turn, det.motion),
                     inlier_ratio=0.2, is_rigid=False, residual_rel=0.3)


def test_a_first_fit_that_leaves_the_object_gives_way_to_the_pose_at_birth():
    """A track's first update has no velocity to check its fit against; a fit that throws
    the origin (a material point of the object) off the object's points is still wrong:
    the track keeps its pose at birth, and the right fits after it take over."""
    tr = ObjectTracker(TrackerConfig(min_hits=2))
    start = np.array([0.0, 0.0, 3.0])
    tr.update([detection(0.0, start)], 0.0, 3.0)
    wrong = _turned_about(detection(0.1, start), np.array([4.0, 0.0, 3.0]), 130.0)
    ids, (o,) = tr.update([wrong], 0.1, 3.0)
    assert ids == [1]
    origin = CUBE.mean(0)
    np.testing.assert_allclose(o.T_world_obj[:3, 3], se3_apply(pose(0.0, start), origin),
                               atol=1e-9)
    for k in range(2, 5):
        _, (o,) = tr.update([detection(0.1 * k, start)], 0.1 * k, 3.0)
    # On its object again: the right motion applied to the anchor.
    np.testing.assert_allclose(o.T_world_obj[:3, 3], se3_apply(pose(0.4, start), origin),
                               atol=1e-9)


def test_a_prediction_that_leaves_the_object_gives_way_to_the_fit():
    """A wrong velocity (here planted: 20 m/s) carries the constant-velocity prediction off
    the object; each right fit then looks like a jump from it. The prediction may only
    stand in for a fit while it stays on the object's points: else the fit is taken and the
    velocity measured afresh."""
    tr = ObjectTracker(TrackerConfig(min_hits=2, velocity_alpha=1.0))
    start = np.array([0.0, 0.0, 3.0])
    for k in range(3):
        tr.update([detection(0.1 * k, start)], 0.1 * k, 3.0)
    (track,) = tr._tracks
    track.v = np.array([20.0, 0.0, 0.0])
    _, (o,) = tr.update([detection(0.3, start)], 0.3, 3.0)
    origin = CUBE.mean(0)
    np.testing.assert_allclose(o.T_world_obj[:3, 3], se3_apply(pose(0.3, start), origin),
                               atol=1e-9)
    np.testing.assert_array_equal(o.linear_velocity, np.zeros(3))  # measured afresh...
    _, (o,) = tr.update([detection(0.4, start)], 0.4, 3.0)
    fd = (se3_apply(pose(0.4, start), origin) - se3_apply(pose(0.3, start), origin)) / 0.1
    np.testing.assert_allclose(o.linear_velocity, fd, atol=1e-9)  # ...from the next fit


def test_a_frame_neither_fit_nor_prediction_keeps_on_the_object_is_seated_on_it():
    """The track's object turns up 1 m from where the track had it (within the gate), with
    a fit that puts the frame back where it was: neither lies on the points, so the frame
    is seated on them as at birth (centroid, no velocity) and follows the next fits."""
    tr = ObjectTracker(TrackerConfig(min_hits=2))
    start, elsewhere = np.array([0.0, 0.0, 3.0]), np.array([1.0, 0.0, 3.0])
    tr.update([detection(0.0, start)], 0.0, 6.0)
    found = detection(0.1, elsewhere)
    ids, (o,) = tr.update([found], 0.1, 6.0)
    assert ids == [1]
    centroid = found.points.mean(0)
    np.testing.assert_allclose(o.T_world_obj[:3, 3], centroid, atol=1e-9)
    np.testing.assert_array_equal(o.linear_velocity, np.zeros(3))
    _, (o,) = tr.update([detection(0.2, elsewhere)], 0.2, 6.0)
    moved = se3_compose(pose(0.2, elsewhere), se3_inverse(pose(0.1, elsewhere)))
    np.testing.assert_allclose(o.T_world_obj[:3, 3], se3_apply(moved, centroid), atol=1e-9)
    np.testing.assert_allclose(o.linear_velocity,
                               (se3_apply(moved, centroid) - centroid) / 0.1, atol=1e-6)


def test_a_published_track_chooses_before_a_tentative_one():
    """An object splits for a frame: the published track keeps one fragment, the other
    starts a tentative track. When the fragments merge, the detection lies a little nearer
    the tentative track's centroid; the published track takes it all the same (DeepSORT's
    matching cascade) and the object keeps its id."""
    tr = ObjectTracker(TrackerConfig(min_hits=2))
    start = np.array([0.0, 0.0, 3.0])
    for k in range(3):
        tr.update([detection(0.1 * k, start)], 0.1 * k, 3.0)
    fragment = start + np.array([0.5, 0.0, 0.0])
    ids, _ = tr.update([detection(0.3, start), detection(0.3, fragment)], 0.3, 3.0)
    assert ids == [1, 2] and tr.published_ids == {1}
    merged = detection(0.4, start + np.array([0.3, 0.0, 0.0]))
    ids, objects = tr.update([merged], 0.4, 3.0)
    assert ids == [1] and [o.track_id for o in objects] == [1]


def test_a_coasting_track_never_takes_an_object_from_its_own_track():
    """An object's detection and a fragment of it, both on its track's pixels; a coasting
    track beside it can reach only the object's detection. The object keeps its track and
    the fragment is new: pairing every detection (the fragment with the object's track,
    the object with the coasting one) is the worse assignment. It happened on a varied
    validation scene, where a box segmented whole changed its id."""
    tr = ObjectTracker(TrackerConfig(min_hits=2, max_misses=3))
    a, b = np.array([0.0, 0.0, 3.0]), np.array([0.7, 0.0, 3.0])
    for k in range(3):
        tr.update([detection(0.1 * k, a), detection(0.1 * k, b)], 0.1 * k, 3.0)
    tr.update([detection(0.3, a)], 0.3, 3.0)  # b hidden: its track coasts
    assert tr.published_ids == {1, 2}
    whole, fragment = detection(0.4, a), detection(0.4, a + [-0.6, 0.0, 0.0])
    whole.overlap = fragment.overlap = {1: 1.0}
    ids, objects = tr.update([whole, fragment], 0.4, 3.0)
    assert ids == [1, 3]
    assert {o.track_id: o.point_count for o in objects} == {1: len(CUBE), 2: 0}


def _best_partial_matching(cost: np.ndarray) -> float:
    """Brute force: the least total cost over every partial matching of possible pairs,
    each row and column left alone at ``_UNMATCHED_COST``."""
    rows, columns = cost.shape
    best = (rows + columns) * _UNMATCHED_COST

    def extend(row: int, used: frozenset, total: float, pairs: int) -> None:
        nonlocal best
        if row == rows:
            best = min(best, total + (rows + columns - 2 * pairs) * _UNMATCHED_COST)
            return
        extend(row + 1, used, total, pairs)
        for column in range(columns):
            if column not in used and np.isfinite(cost[row, column]):
                extend(row + 1, used | {column}, total + cost[row, column], pairs + 1)

    extend(0, frozenset(), 0.0, 0)
    return best


@pytest.mark.parametrize('seed', range(40))
def test_assignment_is_the_least_cost_partial_matching(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(rng.integers(1, 5, size=2))
    cost = rng.uniform(-1.0, 1.0, size=shape)
    cost[rng.uniform(size=shape) < 0.4] = np.inf
    pairs = _assignment(cost)
    assert len({r for r, _ in pairs}) == len(pairs) == len({c for _, c in pairs})
    assert all(np.isfinite(cost[r, c]) for r, c in pairs)
    total = (sum(cost[r, c] for r, c in pairs)
             + (sum(shape) - 2 * len(pairs)) * _UNMATCHED_COST)
    assert total == pytest.approx(_best_partial_matching(cost))


def test_birth_needs_min_hits_and_single_false_detection_dies():
    tr = ObjectTracker(TrackerConfig(min_hits=3))
    start = np.array([0.0, 0.0, 3.0])
    assert tr.update([detection(0.0, start)], 0.0, 3.0)[1] == []
    assert tr.update([detection(0.1, start)], 0.1, 3.0)[1] == []
    assert tr.published_ids == frozenset()  # tentative: tracked, not published
    ids, objs = tr.update([detection(0.2, start)], 0.2, 3.0)
    assert [o.track_id for o in objs] == [1]
    assert tr.published_ids == {1}
    tr2 = ObjectTracker(TrackerConfig(min_hits=2))
    tr2.update([detection(0.0, start)], 0.0, 3.0)
    tr2.update([], 0.1, 3.0)  # unconfirmed track missed once: gone
    assert tr2.tracks == []


def _with(det: Detection, evidence: float, inlier_ratio: float = 1.0) -> Detection:
    return dataclasses.replace(det, evidence=evidence, inlier_ratio=inlier_ratio)


@pytest.mark.parametrize('evidence, inliers, confirmed_at', [
    (4.0, 0.9, 2),   # clearly moving, one rigid whole: one detection early
    (2.0, 0.9, 3),   # moved, but not clearly: min_hits
    (4.0, 0.55, 3),  # "moved" far, but half its points disagree (a noise patch): min_hits
])
def test_quick_birth_needs_clear_rigid_motion_in_every_detection(evidence, inliers,
                                                                  confirmed_at):
    tr = ObjectTracker(TrackerConfig(min_hits=3))
    start = np.array([0.0, 0.0, 3.0])
    published = []
    for k in range(3):
        _, objects = tr.update([_with(detection(0.1 * k, start), evidence, inliers)],
                               0.1 * k, 3.0)
        published.append(bool(objects))
    assert published == [hits >= confirmed_at for hits in (1, 2, 3)]


def test_quick_birth_judges_the_weakest_detection_and_never_a_single_one():
    start = np.array([0.0, 0.0, 3.0])
    tr = ObjectTracker(TrackerConfig(min_hits=3))
    tr.update([_with(detection(0.0, start), 1.5)], 0.0, 3.0)  # a weak first detection
    assert tr.update([_with(detection(0.1, start), 10.0)], 0.1, 3.0)[1] == []
    assert tr.update([_with(detection(0.2, start), 10.0)], 0.2, 3.0)[1] != []
    # min_hits 2: one detection early would be a single one, which is never enough.
    tr = ObjectTracker(TrackerConfig(min_hits=2))
    assert tr.update([_with(detection(0.0, start), 10.0)], 0.0, 3.0)[1] == []
    # quick_birth_evidence 0: off.
    tr = ObjectTracker(TrackerConfig(min_hits=3, quick_birth_evidence=0.0))
    for k in range(2):
        _, objects = tr.update([_with(detection(0.1 * k, start), 10.0)], 0.1 * k, 3.0)
    assert objects == []


def test_a_fragment_of_a_published_object_is_no_quick_birth():
    tr = ObjectTracker(TrackerConfig(min_hits=3))
    a, b = np.array([-1.0, 0.0, 3.0]), np.array([1.0, 0.0, 3.0])
    for k in range(3):
        tr.update([detection(0.1 * k, a)], 0.1 * k, 3.0)
    assert tr.published_ids == {1}
    # b moves clearly, but its pixels lay on the published object a frame ago.
    fragment = [dataclasses.replace(_with(detection(0.1 * k, b), 10.0), overlap={1: 0.4})
                for k in range(3, 6)]
    for k, det in zip(range(3, 6), fragment):
        tr.update([detection(0.1 * k, a), det], 0.1 * k, 3.0)
        assert tr.published_ids == ({1} if k < 5 else {1, 2})


@pytest.mark.parametrize('evidence, inliers, overlap, quick_birth_evidence, clear', [
    (4.0, 0.9, {}, 3.0, True),
    (2.0, 0.9, {}, 3.0, False),          # not far enough
    (4.0, 0.55, {}, 3.0, False),         # half its points disagree
    (4.0, 0.9, {1: 0.4}, 3.0, False),    # on the published object 1 a frame ago
    (4.0, 0.9, {2: 0.4}, 3.0, True),     # on a tentative track: not a fragment
    (4.0, 0.9, {}, 0.0, False),          # quick births off
])
def test_a_detection_moves_clearly_as_a_quick_birth_needs_of_each(
        evidence, inliers, overlap, quick_birth_evidence, clear):
    det = dataclasses.replace(_with(detection(0.0, np.zeros(3)), evidence, inliers),
                              overlap=overlap)
    config = TrackerConfig(quick_birth_evidence=quick_birth_evidence)
    assert moves_clearly(det, frozenset({1}), config) == clear
    assert is_fragment(det, frozenset({1})) == (overlap == {1: 0.4})


def test_occlusion_coasts_then_reacquires_same_id_and_dies_after_max_misses():
    tr = ObjectTracker(TrackerConfig(min_hits=2, max_misses=3))
    a, b = np.array([-1.0, 0.0, 3.0]), np.array([1.0, 0.0, 4.0])
    for k in range(3):
        ids, _ = tr.update([detection(0.1 * k, a), detection(0.1 * k, b)], 0.1 * k, 3.0)
    assert ids == [1, 2]
    for k in range(3, 5):  # b hidden for two frames
        ids, objs = tr.update([detection(0.1 * k, a)], 0.1 * k, 3.0)
        coasting = {o.track_id: o for o in objs}[2]
        assert coasting.point_count == 0 and coasting.confidence < 1
        # Coasting pose = constant-velocity prediction, close to the truth.
        assert np.linalg.norm(coasting.T_world_obj[:3, 3]
                              - se3_apply(pose(0.1 * k, b), CUBE.mean(0))) < 0.05
    ids, _ = tr.update([detection(0.5, b), detection(0.5, a)], 0.5, 3.0)
    assert ids == [2, 1]
    for k in range(6, 10):
        _, objs = tr.update([detection(0.1 * k, a)], 0.1 * k, 3.0)
    assert [o.track_id for o in objs] == [1]


def test_far_detection_is_a_new_track_and_reanchor_keeps_pose():
    tr = ObjectTracker(TrackerConfig(min_hits=1, gate_rel=0.1))
    start = np.array([0.0, 0.0, 3.0])
    tr.update([detection(0.0, start)], 0.0, 3.0)
    ids, _ = tr.update([detection(0.1, start + [2.0, 0, 0])], 0.1, 3.0)
    assert ids == [2]
    before = [t.pose.copy() for t in tr.tracks]
    tr.reanchor()
    for t, p in zip(tr.tracks, before):
        np.testing.assert_array_equal(t.anchor, p)


@pytest.mark.parametrize('overlap_first', [True, False])
def test_overlap_breaks_ties(overlap_first):
    tr = ObjectTracker(TrackerConfig(min_hits=1, gate_rel=1.0))
    start = np.array([0.0, 0.0, 3.0])
    tr.update([detection(0.0, start), detection(0.0, start + [0.05, 0, 0])], 0.0, 3.0)
    d1, d2 = detection(0.1, start + [0.025, 0, 0]), detection(0.1, start + [0.025, 0, 0])
    d1.overlap = {1: 1.0} if overlap_first else {2: 1.0}
    d2.overlap = {2: 1.0} if overlap_first else {1: 1.0}
    ids, _ = tr.update([d1, d2], 0.1, 3.0)
    assert ids == ([1, 2] if overlap_first else [2, 1])


def test_warped_overlap_counts_previous_track_pixels():
    from pointmap_ros.geometry.camera import unproject
    from pointmap_ros.tracking.tracker import warped_overlap

    K = np.array([[40.0, 0, 15.5], [0, 38.0, 11.0], [0, 0, 1]])
    ids = np.zeros((24, 32), np.int32)
    ids[:, :16], ids[:, 16:] = 3, 5
    pts = unproject(np.full((24, 32), 2.0), K)
    # 12 pixels from the left half, 4 from the right half, 4 behind the camera.
    sample = np.concatenate([pts[5, 2:14], pts[5, 20:24], -pts[5, 0:4]])
    out = warped_overlap(sample, K, ids)
    assert out == {3: 12 / 20, 5: 4 / 20}
    assert warped_overlap(np.zeros((0, 3)), K, ids) == {}


def test_previous_track_ids_per_point():
    from pointmap_ros.geometry.camera import unproject
    from pointmap_ros.tracking.tracker import previous_track_ids

    K = np.array([[40.0, 0, 15.5], [0, 38.0, 11.0], [0, 0, 1]])
    ids = np.zeros((24, 32), np.int32)
    ids[4:8, 10:20] = 9
    pts = unproject(np.full((24, 32), 2.0), K)
    # On the track, beside it, unknown, behind the camera, outside the image.
    sample = np.stack([pts[5, 12], pts[12, 12], np.full(3, np.nan), -pts[5, 12],
                       pts[5, 12] + [5.0, 0.0, 0.0]])
    np.testing.assert_array_equal(previous_track_ids(sample, K, ids), [9, 0, 0, 0, 0])
    assert previous_track_ids(np.zeros((0, 3)), K, ids).shape == (0,)
