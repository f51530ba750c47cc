"""Persistent 3D object tracks: association, birth/death hysteresis, poses and velocities.

Object poses are anchored St4RTrack-style: each track stores its pose ``A`` at the current
keyframe's time, and each frame's keyframe pair measures the object's motion ``M`` from the
keyframe time to now directly, so ``T_world_obj(t) = M @ A`` does not accumulate drift within
a keyframe. On a keyframe change the anchor becomes the pose at the new keyframe's time.

Convention: world frame = the first keyframe's optical frame; poses ``T_<to>_<from>`` float64;
velocities in world axes (linear of the object origin, angular as a rotation vector rate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from pointmap_ros.geometry.camera import project
from pointmap_ros.geometry.transforms import (
    rotmat_to_rotvec, rotvec_to_rotmat, se3_apply, se3_compose, se3_from_rt, se3_inverse)
from pointmap_ros.tracking.window import STAMP_TOLERANCE_S

__all__ = ['TrackedObject', 'Detection', 'TrackerConfig', 'ObjectTracker', 'previous_track_ids',
           'warped_overlap', 'is_fragment', 'moves_clearly']


@dataclass
class TrackedObject:
    """One tracked moving object as published (see docs/architecture.md).

    Attributes:
        track_id: persistent id (>= 1).
        T_world_obj: ``[4, 4]`` pose of the object frame (origin at the centroid when first
            seen, axes = principal axes of its points) in the world frame.
        linear_velocity: ``[3]`` velocity of the object origin, world axes, units/s.
        angular_velocity: ``[3]`` rad/s, world axes.
        extent: ``[3]`` size along the object axes (2nd-98th percentile span).
        point_count: pixels observed this frame (0 while occluded).
        confidence: in [0, 1]: rigid-fit inlier ratio, decaying while unobserved.
        is_rigid: last rigid fit's verdict; rigid_residual its relative residual.
        age: frames since birth.
    """

    track_id: int
    T_world_obj: np.ndarray
    linear_velocity: np.ndarray
    angular_velocity: np.ndarray
    extent: np.ndarray
    point_count: int
    confidence: float
    is_rigid: bool
    rigid_residual: float
    age: int


@dataclass
class Detection:
    """One instance seen in the current frame (world frame, current time).

    Attributes:
        points: ``[N, 3]`` the instance's points now (possibly a subsample).
        motion: ``[4, 4]`` its rigid motion from the keyframe time to now (world frame).
        inlier_ratio, is_rigid, residual_rel: from the rigid fit.
        overlap: ``{track_id: fraction}`` of its pixels that map onto each track's pixels in
            the previous frame (from the short-gap pair), empty when unknown.
        pixel_count: pixels of the instance (default: ``len(points)``).
        evidence: how far its fitted motion moved it as a whole, in multiples of the
            pair's motion threshold (RMS displacement over threshold; 0 = not measured).
            Only quick births read it (:attr:`TrackerConfig.quick_birth_evidence`).
        motion_failed: ``motion`` measured nothing (the keyframe is several frames back
            and the correspondences lost a fast object over that gap): no track is born
            on it, since a track's anchor at the keyframe time is that motion taken back
            from its pose (a track born so at 30 fps took a 4 m/s velocity from its first
            update and followed it off its object).
        step_motion: ``[4, 4]`` its rigid motion from the previous frame's time
            ``step_from`` to now (world frame), given where ``motion`` failed: a track last
            updated at ``step_from`` takes its pose from it. None: there is none.
        step_from: the time ``step_motion`` starts from.
    """

    points: np.ndarray
    motion: np.ndarray
    inlier_ratio: float
    is_rigid: bool
    residual_rel: float
    overlap: dict = field(default_factory=dict)
    pixel_count: int = -1
    evidence: float = 0.0
    motion_failed: bool = False
    step_motion: np.ndarray | None = None
    step_from: float = math.nan

    def __post_init__(self):
        if self.pixel_count < 0:
            self.pixel_count = len(self.points)


def previous_track_ids(points_prev: np.ndarray, K_prev: np.ndarray,
                       prev_track_ids: np.ndarray) -> np.ndarray:
    """The track each point lands on in the previous frame.

    Args:
        points_prev: ``[N, 3]`` points at the previous frame's time in the previous camera
            frame (``P_t(t_prev)`` of the pair (prev, t)); NaN where unknown.
        K_prev: ``[3, 3]`` previous intrinsics.
        prev_track_ids: ``[H, W]`` int track id per pixel of the previous frame (0 = none).

    Returns:
        ``[N]`` int32 track id under each point's projection (0 = none, unknown, or outside
        the previous image). A point hidden behind another object at the previous time lands
        on that object.
    """
    ids = np.zeros(len(points_prev), np.int32)
    if len(points_prev) == 0:
        return ids
    uv = np.rint(project(points_prev, K_prev))
    h, w = prev_track_ids.shape
    inside = np.isfinite(uv).all(1)
    inside[inside] = ((uv[inside, 0] >= 0) & (uv[inside, 0] < w)
                      & (uv[inside, 1] >= 0) & (uv[inside, 1] < h))
    uv = uv[inside].astype(np.int64)
    ids[inside] = prev_track_ids[uv[:, 1], uv[:, 0]]
    return ids


def warped_overlap(points_prev: np.ndarray, K_prev: np.ndarray,
                   prev_track_ids: np.ndarray) -> dict:
    """Which previous tracks a detection's pixels came from.

    Args:
        points_prev, K_prev, prev_track_ids: as :func:`previous_track_ids`, for the
            detection's ``N`` pixels.

    Returns:
        ``{track_id: fraction of the N pixels that project onto that track}``. A pixel
        hidden behind another object at the previous time lands on that object: the fraction
        is a soft cue, combined with 3D distance in the assignment.
    """
    if len(points_prev) == 0:
        return {}
    hit = previous_track_ids(points_prev, K_prev, prev_track_ids)
    ids, counts = np.unique(hit[hit > 0], return_counts=True)
    return {int(i): float(c) / len(points_prev) for i, c in zip(ids, counts)}


def _quantile(points: np.ndarray, q: float) -> np.ndarray:
    """Per-axis ``np.quantile(points, q, axis=0)`` (linear) by partition, for ``[N, 3]``.

    About 5x cheaper than ``np.quantile`` at a few hundred points, and it runs per track
    per frame.
    """
    pos = q * (len(points) - 1)
    k = int(pos)
    k1 = min(k + 1, len(points) - 1)
    part = np.partition(points, (k, k1), axis=0)
    return part[k] + (pos - k) * (part[k1] - part[k])


@dataclass
class TrackerConfig:
    """Association and lifetime parameters.

    Attributes:
        gate_rel: a detection farther than ``gate_rel * scene_scale + extent / 2`` from a
            track cannot be assigned to it.
        overlap_weight: weight of the warped overlap (fraction) against the normalised
            distance in the assignment cost.
        min_hits: consecutive detections before a track is confirmed (published).
        max_misses: unobserved frames a confirmed track coasts through before it dies.
        velocity_alpha: exponential filter weight of a new velocity measurement (1 = none).
        extent_decay: per-update decay of the running-max extent (forgets a bad frame).
        quick_birth_evidence, quick_birth_inliers: a birth is confirmed one detection
            early (``min_hits - 1``, at least 2) when each of its detections moved by at
            least ``quick_birth_evidence`` times the motion threshold
            (:attr:`Detection.evidence`) with at least ``quick_birth_inliers`` of its points
            on one rigid motion, and none of them lay on a published object a frame ago
            (:meth:`_Track.note_birth_evidence`; 0 = never). A clearly moving object is
            then published a frame sooner: on the validation sequences oracle-two-map
            matched 28 of 30 objects instead of 27 (also with odometry; static camera 12 / 12
            instead of 11), with no other change in any row. The spurious tracks the rule
            would have confirmed early without the inlier bound (shipped model with a depth
            camera: patches on no moving object, at 3.8-8.3 times the threshold) had 52-56 %
            inliers, the objects 73-99 % (docs/evaluation.md, session 20).
    """

    gate_rel: float = 0.15
    overlap_weight: float = 1.0
    min_hits: int = 3
    max_misses: int = 10
    velocity_alpha: float = 0.5
    extent_decay: float = 0.9
    quick_birth_evidence: float = 3.0
    quick_birth_inliers: float = 2.0 / 3.0


#: How far (times the object's extent) a fitted pose's origin may land from the track's
#: constant-velocity prediction (:meth:`_Track._measured_pose`), besides half the track's
#: own displacement. Chosen on validation sequences (oracle-two-map / shipped model + depth
#: camera; published origins' drift from their objects, no test: 0.66 / 0.63 m): 0.15 ->
#: 0.14 / 0.10 m; 0.1 with a quarter of the displacement 0.07 / 0.11 m but one object fewer
#: with the depth camera, whose noisier fits it rejected.
_JUMP_TOLERANCE = 0.15

#: Fraction of a detection's pixels on a published object a frame ago (warped overlap) above
#: which it is a fragment of that object, not a new one (:func:`is_fragment`).
_FRAGMENT_OVERLAP = 0.1


def is_fragment(det: Detection, published: frozenset[int]) -> bool:
    """Whether ``det`` lay on one of the ``published`` objects a frame ago (more than
    ``_FRAGMENT_OVERLAP`` of its pixels warped onto it): a fragment split off a tracked
    object moves as clearly as the object, but it is not a new one."""
    return max((fraction for track_id, fraction in det.overlap.items()
                if track_id in published), default=0.0) > _FRAGMENT_OVERLAP


def _clear_motion(evidence: float, inlier_ratio: float, config: TrackerConfig) -> bool:
    """Moved by ``quick_birth_evidence`` times the pair's motion threshold with
    ``quick_birth_inliers`` of the points on one rigid motion; never with quick births off
    (``quick_birth_evidence`` 0)."""
    return (config.quick_birth_evidence > 0 and evidence >= config.quick_birth_evidence
            and inlier_ratio >= config.quick_birth_inliers)


def moves_clearly(det: Detection, published: frozenset[int], config: TrackerConfig) -> bool:
    """Whether ``det`` alone is as clear a new object as a quick birth needs of each of
    its detections (:func:`_clear_motion`) and no fragment of a published object."""
    return (_clear_motion(det.evidence, det.inlier_ratio, config)
            and not is_fragment(det, published))


#: :func:`_assignment`'s cost of leaving one track or one detection without a partner: half
#: the cost of a pair at the gate (:meth:`ObjectTracker._cost` is at most 1 inside it), so
#: any possible pair is worth more than leaving both unmatched.
_UNMATCHED_COST = 0.5


def _assignment(cost: np.ndarray) -> list[tuple[int, int]]:
    """Minimum-cost pairs ``(row, column)`` of ``cost`` (``[tracks, detections]``; infinite
    entries are impossible pairs), each row and column unmatched at :data:`_UNMATCHED_COST`.

    The unmatched option is part of the problem (``linear_sum_assignment`` on the matrix
    padded with one "unmatched" row per detection and column per track), not a filter on a
    complete assignment: with impossible pairs as a large constant, the solver preferred any
    assignment that paired every detection, and a coasting track took a tracked object's
    detection while the object's own track took a fragment of it (varied validation scenes,
    oracle-two-map: a box segmented whole in all 23 frames changed its id at frame 13).
    """
    n_rows, n_columns = cost.shape
    impossible = 1e6
    padded = np.full((n_rows + n_columns, n_columns + n_rows), impossible)
    padded[:n_rows, :n_columns] = np.where(np.isfinite(cost), cost, impossible)
    padded[:n_rows, n_columns:][np.diag_indices(n_rows)] = _UNMATCHED_COST
    padded[n_rows:, :n_columns][np.diag_indices(n_columns)] = _UNMATCHED_COST
    padded[n_rows:, n_columns:] = 0.0
    rows, columns = linear_sum_assignment(padded)
    return [(r, c) for r, c in zip(rows, columns)
            if r < n_rows and c < n_columns and np.isfinite(cost[r, c])]


def _seated_pose(det: Detection) -> np.ndarray:
    """An object frame on a detection's points: origin at their centroid, axes their
    principal axes (right-handed)."""
    centroid = det.points.mean(0)
    _, _, vt = np.linalg.svd(det.points - centroid, full_matrices=False)
    R = vt.T.copy() if len(det.points) >= 3 else np.eye(3)
    if np.linalg.det(R) < 0:
        R[:, 2] *= -1
    return se3_from_rt(R, centroid)


class _Track:
    """Internal state of one track: pose, anchor at the keyframe time, filters, counters."""

    def __init__(self, track_id: int, det: Detection, stamp: float):
        self.id = track_id
        self.pose = _seated_pose(det)
        self.anchor = se3_compose(se3_inverse(det.motion), self.pose)
        self.stamp = stamp
        self.v = np.zeros(3)
        self.w = np.zeros(3)
        self.extent = np.zeros(3)
        self.centroid_obj = np.zeros(3)  # last observed centroid in the object frame
        self.hits, self.misses, self.age, self.updates = 1, 0, 0, 0
        self.confirmed = False
        # The weakest of the detections since birth (what a quick birth is judged on;
        # note_birth_evidence).
        self.weakest_evidence, self.weakest_inliers = math.inf, math.inf
        self.det = det
        self._observe(det)

    def _observe(self, det: Detection) -> None:
        local = se3_apply(se3_inverse(self.pose), det.points)
        self.centroid_obj = local.mean(0)
        span = _quantile(local, 0.98) - _quantile(local, 0.02)
        self.extent = np.maximum(span, self.extent)
        self.det = det

    def predict(self, stamp: float) -> np.ndarray:
        """Constant-velocity pose at ``stamp``."""
        dt = stamp - self.stamp
        R = rotvec_to_rotmat(self.w * dt) @ self.pose[:3, :3]
        return se3_from_rt(R, self.pose[:3, 3] + self.v * dt)

    def update(self, det: Detection, stamp: float, alpha: float, decay: float) -> None:
        new, afresh = self._measured_pose(det, stamp)
        if new is None:  # the frame is seated on the object afresh, as at birth
            new = _seated_pose(det)
            self.anchor = se3_compose(se3_inverse(det.motion), new)
            self.extent = np.zeros(3)  # spans along the old axes say nothing about the new
        dt = stamp - self.stamp
        if afresh:  # no velocity to go by: measured from the next fit on
            self.v, self.w, self.updates = np.zeros(3), np.zeros(3), 0
        elif dt > 0:
            v = (new[:3, 3] - self.pose[:3, 3]) / dt
            w = rotmat_to_rotvec(new[:3, :3] @ self.pose[:3, :3].T) / dt
            first = self.updates == 0
            self.v = v if first else alpha * v + (1 - alpha) * self.v
            self.w = w if first else alpha * w + (1 - alpha) * self.w
            self.updates += 1
        self.pose, self.stamp = new, stamp
        self.extent *= decay
        self._observe(det)
        self.hits += 1
        self.misses = 0

    def _measured_pose(self, det: Detection, stamp: float) -> tuple[np.ndarray | None, bool]:
        """The pose ``det`` gives the track: its motion since the keyframe applied to the
        anchor, unless that pose jumps away from where the track was heading; then the
        constant-velocity prediction. And whether the track's velocity is to be measured
        afresh.

        The fitted pose's origin may differ from the predicted one by
        :data:`_JUMP_TOLERANCE` of the object's extent plus half the distance the track's
        own velocity covers meanwhile (a change of speed). A fit beyond that is wrong (a
        handful of mismatched points, a fast turn the optical flow missed): on validation
        sequences single fits threw a box's frame 4 m off, and re-anchoring at the next
        keyframe kept it there. An exact fit passes whatever the camera sees of the object
        (an occlusion moves the visible centroid, not the motion). A track without a
        velocity yet (its first update) takes the fit if it stays on the object.

        Staying on the object: the origin, a material point of the object, lies within the
        object's extent (the diagonal of its observed span) plus that tolerance of the
        detection's points. A track's first fit and a prediction that has to stand in for
        a rejected fit must pass that too. On a test sequence a first fit of 33 mismatched
        points turned a sphere's frame by 131 degrees and threw its origin 5 m off, where
        every later fit agreed with it; a prediction is only as good as the velocity, and
        a wrong one carries the frame off its object while each later fit is rejected as a
        jump from it. A first fit off the object gives way to the pose at birth (no
        velocity yet), and a prediction off the object to the fit; either way the track has
        no velocity to go by (``True``): it is measured afresh from the next fit.

        When neither the fit nor the prediction lies on the object the track's frame is
        seated on the detection afresh (None: :func:`_seated_pose`, the anchor with it).
        Taking the fit there, as until 2026-12-07, threw a lost small object's frame 2.4 m
        off its points on its first fit after a reset, with a velocity of 27 m/s
        (a validation sequence, shipped model + depth camera).
        """
        pose = self.hypothesis(det)
        predicted = self.predict(stamp)
        size = float(np.linalg.norm(self.extent))
        tolerance = (_JUMP_TOLERANCE * size
                     + 0.5 * float(np.linalg.norm(self.v)) * (stamp - self.stamp))
        centroid = det.points.mean(0)

        def on_object(candidate: np.ndarray) -> bool:
            return bool(np.linalg.norm(candidate[:3, 3] - centroid) <= size + tolerance)

        if self.updates == 0:
            if on_object(pose):
                return pose, False
            if on_object(predicted):
                return predicted, True  # still no velocity: the next fit is a first one again
            return None, True
        if np.linalg.norm(pose[:3, 3] - predicted[:3, 3]) <= tolerance:
            return pose, False
        if on_object(predicted):
            return predicted, False
        return (pose if on_object(pose) else None), True

    def hypothesis(self, det: Detection) -> np.ndarray:
        """The pose ``det`` measures for this track: its motion since the keyframe applied
        to the anchor, or, where that motion failed, its motion since the previous frame
        applied to the pose then (when this track was updated at that frame; else the
        failed motion, which the jump test rejects)."""
        if det.step_motion is not None and abs(self.stamp - det.step_from) < STAMP_TOLERANCE_S:
            return se3_compose(det.step_motion, self.pose)
        return se3_compose(det.motion, self.anchor)

    def coast(self, stamp: float) -> None:
        self.pose, self.stamp = self.predict(stamp), stamp
        self.misses += 1
        self.hits = 0 if not self.confirmed else self.hits

    def note_birth_evidence(self, det: Detection, published: frozenset[int]) -> None:
        """Take ``det`` (just assigned to this tentative track) into the weakest evidence a
        quick birth is judged on. A fragment of one of the ``published`` objects
        (:func:`is_fragment`) lends none."""
        evidence = 0.0 if is_fragment(det, published) else det.evidence
        self.weakest_evidence = min(self.weakest_evidence, evidence)
        self.weakest_inliers = min(self.weakest_inliers, det.inlier_ratio)

    def birth_due(self, config: TrackerConfig) -> bool:
        """Whether this tentative track has the detections to be confirmed: ``min_hits``
        of them, or one fewer that all clearly moved as one rigid whole (quick birth; never
        a single detection: persistence is what tells an object from a flicker of noise)."""
        if self.hits >= config.min_hits:
            return True
        return (self.hits >= max(2, config.min_hits - 1)
                and _clear_motion(self.weakest_evidence, self.weakest_inliers, config))

    def as_object(self, max_misses: int) -> TrackedObject:
        seen = self.misses == 0
        return TrackedObject(
            track_id=self.id, T_world_obj=self.pose.copy(), linear_velocity=self.v.copy(),
            angular_velocity=self.w.copy(), extent=self.extent.copy(),
            point_count=self.det.pixel_count if seen else 0,
            confidence=float(self.det.inlier_ratio * (1 - self.misses / (max_misses + 1))),
            is_rigid=self.det.is_rigid, rigid_residual=float(self.det.residual_rel),
            age=self.age)


class ObjectTracker:
    """Assigns detections to persistent tracks (Hungarian on 3D distance and overlap;
    confirmed tracks first, then tentative ones on the detections left).

    Births need ``min_hits`` consecutive detections before a track is confirmed (published),
    one fewer when they all clearly moved as one rigid whole (``quick_birth_*``);
    confirmed tracks coast on constant velocity for up to ``max_misses`` unobserved frames
    (temporary occlusion) before they die. Ids are never reused.
    """

    def __init__(self, config: TrackerConfig | None = None):
        self.config = config or TrackerConfig()
        self._tracks: list[_Track] = []
        self._next_id = 1

    @property
    def tracks(self) -> list[_Track]:
        return list(self._tracks)

    @property
    def published_ids(self) -> frozenset[int]:
        """Ids of the confirmed tracks, the ones :meth:`update` publishes."""
        return frozenset(tr.id for tr in self._tracks if tr.confirmed)

    def reanchor(self) -> None:
        """The current frame became the keyframe: anchors = poses now (no jump)."""
        for tr in self._tracks:
            tr.anchor = tr.pose.copy()

    def _cost(self, tr: _Track, c_pred: np.ndarray, det: Detection, c_det: np.ndarray,
              scale: float) -> float:
        # The detection's motion applied to the track's anchor gives the pose the track
        # would have if the detection were it; its centroid must match the observation too.
        c_hyp = se3_apply(tr.hypothesis(det), tr.centroid_obj)
        d = min(np.linalg.norm(c_det - c_pred), np.linalg.norm(c_det - c_hyp))
        size = max(float(np.linalg.norm(tr.extent)), 1e-9)
        gate = self.config.gate_rel * scale + 0.5 * size
        if d > gate:
            return np.inf
        return d / gate - self.config.overlap_weight * det.overlap.get(tr.id, 0.0)

    def update(self, detections: list[Detection], stamp: float,
               scene_scale: float) -> tuple[list[int], list[TrackedObject]]:
        """Advance all tracks to ``stamp``.

        Args:
            detections: this frame's instances.
            stamp: current time (s).
            scene_scale: median scene depth (units of the points), scales the gate.

        Returns:
            ``(track id per detection, published tracks)``: confirmed tracks, including
            those coasting through an occlusion. Unconfirmed tracks get their id in the first
            list (for overlap bookkeeping) but are not published.
        """
        cfg = self.config
        published = self.published_ids
        n_t, n_d = len(self._tracks), len(detections)
        ids = [0] * n_d
        matched_t, matched_d = set(), set()
        if n_t and n_d:
            c_dets = [det.points.mean(0) for det in detections]
            c_preds = [se3_apply(tr.predict(stamp), tr.centroid_obj) for tr in self._tracks]
            cost = np.array([[self._cost(tr, cp, det, cd, scene_scale)
                              for det, cd in zip(detections, c_dets)]
                             for tr, cp in zip(self._tracks, c_preds)])
            # Confirmed tracks choose first, as in DeepSORT's matching cascade: a tentative
            # track born on a fragment of a published object must not take the object over
            # when the fragments merge again (a test sequence: the merged detection lay
            # 0.38 m from the fragment's track and 0.49 m from the object's, whose last
            # centroid was the other fragment's, and the object changed its id).
            confirmed = [k for k, tr in enumerate(self._tracks) if tr.confirmed]
            tentative = [k for k, tr in enumerate(self._tracks) if not tr.confirmed]
            for rows in (confirmed, tentative):
                columns = [c for c in range(n_d) if c not in matched_d]
                if not rows or not columns:
                    continue
                for r, c in _assignment(cost[np.ix_(rows, columns)]):
                    track, det = self._tracks[rows[r]], detections[columns[c]]
                    track.update(det, stamp, cfg.velocity_alpha, cfg.extent_decay)
                    if not track.confirmed:
                        track.note_birth_evidence(det, published)
                    ids[columns[c]] = track.id
                    matched_t.add(rows[r])
                    matched_d.add(columns[c])
        survivors = []
        for k, tr in enumerate(self._tracks):
            tr.age += 1
            if k not in matched_t:
                tr.coast(stamp)
                if not tr.confirmed or tr.misses > cfg.max_misses:
                    continue
            tr.confirmed = tr.confirmed or tr.birth_due(cfg)
            survivors.append(tr)
        for c, det in enumerate(detections):
            if c not in matched_d and len(det.points) >= 3 and not det.motion_failed:
                tr = _Track(self._next_id, det, stamp)
                self._next_id += 1
                tr.note_birth_evidence(det, published)
                tr.confirmed = tr.birth_due(cfg)
                survivors.append(tr)
                ids[c] = tr.id
        self._tracks = survivors
        published = [tr.as_object(cfg.max_misses) for tr in self._tracks if tr.confirmed]
        return ids, published
