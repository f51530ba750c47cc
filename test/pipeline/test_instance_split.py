"""``instances.split_instances``: an instance that moves as several rigid bodies (objects
touching in the image) is split into them; one rigid body, a deforming one, or bodies that
move together are not. Exact maps: every expected label is known pixel for pixel."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pointmap_ros.geometry.camera import unproject
from pointmap_ros.geometry.transforms import se3_apply, se3_from_rt
from pointmap_ros.pipeline import PipelineConfig
from pointmap_ros.pipeline.correspondence import PixelFlow
from pointmap_ros.pipeline.instances import fit_instances, split_instances
from pointmap_ros.pipeline.motion import ApertureMetric
from pointmap_ros.pipeline.pair import PairView
from pointmap_ros.tracking.window import WindowFrame
from pointmap_ros.types import DynamicPointMaps, Frame

H, W = 40, 56
K = np.array([[50.0, 0, 27.5], [0, 50.0, 19.5], [0, 0, 1]])
#: Two boxes side by side at 3 m in front of a wall at 4 m, one instance together.
LEFT = (slice(10, 26), slice(8, 24))
RIGHT = (slice(10, 26), slice(24, 40))
SCENE_DEPTH = 4.0
NOISE = 0.0
#: The rigid fits' inlier distance on these maps (``ransac_threshold_rel`` x the depth).
THRESHOLD = PipelineConfig().ransac_threshold_rel * SCENE_DEPTH


def _frame(index: int) -> WindowFrame:
    return WindowFrame(Frame(np.zeros((H, W, 3), np.uint8), 0.1 * index, f'k{index}'), index,
                       K, T_world_cam=np.eye(4))


def _pair(left_motion: np.ndarray, right_motion: np.ndarray, gap: int = 1,
          deforming: bool = False, more: tuple = ()) -> PairView:
    """A static camera; the boxes' points moved by the ``[4, 4]`` motions from the
    reference time (``gap`` frames earlier) to now; the correspondences are exact.
    ``deforming``: the left box bends instead (each row moves along x by a quadratic in its
    height); ``more``: further ``(region, motion)`` boxes at 3 m."""
    depth = np.full((H, W), 4.0)
    depth[LEFT] = depth[RIGHT] = 3.0
    for region, _ in more:
        depth[region] = 3.0
    now = unproject(depth, K).astype(np.float32)
    before = now.copy()
    for region, motion in ((LEFT, left_motion), (RIGHT, right_motion)) + tuple(more):
        before[region] = se3_apply(np.linalg.inv(motion), now[region].astype(np.float64))
    if deforming:
        height = np.arange(LEFT[0].stop - LEFT[0].start, dtype=np.float32)
        before[LEFT + (0,)] = now[LEFT + (0,)] - 0.001 * height[:, None] ** 2
    ones = np.ones((H, W), np.float32)
    maps = DynamicPointMaps(pts_i_ti=before, pts_i_tj=before, pts_j_ti=before, pts_j_tj=now,
                            conf_i_ti=ones, conf_i_tj=ones, conf_j_ti=ones, conf_j_tj=ones,
                            metric=True)
    zero = np.zeros((H, W, 2), np.float32)
    consistent = np.ones((H, W), bool)
    return PairView('pair', _frame(10 - gap), 1.0, maps, 1.0, 0.0, None,
                    pixel_flow=PixelFlow(zero, zero, consistent, consistent))


def _shift(x: float = 0.0, y: float = 0.0, z: float = 0.0) -> np.ndarray:
    return se3_from_rt(np.eye(3), np.array([x, y, z]))


def _both() -> np.ndarray:
    labels = np.zeros((H, W), np.int32)
    labels[LEFT] = labels[RIGHT] = 1
    return labels


def _split(pairs, carried=None, config=None):
    config = config or PipelineConfig(min_instance_frac=0.05)  # 112 pixels; a box has 256
    return split_instances(config, _both(), 1, [(pair, NOISE, np.eye(3)) for pair in pairs],
                           SCENE_DEPTH, carried)[:2]


def _expected_split() -> np.ndarray:
    expected = _both()
    expected[RIGHT] = 2  # equal sizes: the first body (the left one) keeps the label
    return expected


def test_two_touching_boxes_moving_differently_become_two_instances():
    labels, count = _split([_pair(_shift(x=0.2), _shift(y=-0.2))])
    assert count == 2
    # Which box keeps label 1 follows from the sizes (equal here); compare as a partition.
    assert len(np.unique(labels[LEFT])) == 1 and len(np.unique(labels[RIGHT])) == 1
    assert labels[LEFT][0, 0] != labels[RIGHT][0, 0]
    np.testing.assert_array_equal(labels == 0, _both() == 0)


def test_three_bodies_with_instance_split_bodies_three():
    """A third box under the two, with a motion of its own."""
    below = (slice(26, 36), slice(8, 40))
    pair = _pair(_shift(x=0.2), _shift(y=-0.2), more=((below, _shift(z=0.3)),))
    labels = _both()
    labels[below] = 1
    config = PipelineConfig(min_instance_frac=0.05)

    def split(bodies):
        return split_instances(dataclasses.replace(config, instance_split_bodies=bodies),
                               labels, 1, [(pair, NOISE, np.eye(3))], SCENE_DEPTH, None)[:2]

    assert split(1)[1] == 1
    three, count = split(3)
    assert count == 3
    # Each box one label, every label one box.
    assert {len(np.unique(three[region])) for region in (LEFT, RIGHT, below)} == {1}
    assert len({int(three[region][0, 0]) for region in (LEFT, RIGHT, below)}) == 3


@pytest.mark.parametrize('left, right', [
    (_shift(x=0.2), _shift(x=0.2)),                       # one rigid body
    (_shift(x=0.01), _shift(x=0.03)),                     # apart by less than the fit
])
def test_one_motion_keeps_one_instance(left, right):
    labels, count = _split([_pair(left, right)])
    assert count == 1
    np.testing.assert_array_equal(labels, _both())


def test_a_deforming_body_is_not_split():
    """The left box bends (its rows move by a quadratic in their height), the right one is
    still: the instance is not rigid, but has no two rigid parts moving apart."""
    pair = _pair(_shift(), _shift(), deforming=True)
    config = PipelineConfig(min_instance_frac=0.05)
    assert not fit_instances(config, _both(), 1, pair, SCENE_DEPTH, NOISE)[1].is_rigid
    labels, count = _split([pair], config=config)
    assert count == 1


def test_instance_split_bodies_one_turns_the_split_off():
    config = PipelineConfig(min_instance_frac=0.05, instance_split_bodies=1)
    labels, count = _split([_pair(_shift(x=0.2), _shift(y=-0.2))], config=config)
    assert count == 1


def test_bodies_must_each_hold_the_smallest_instance():
    """A box of 256 pixels with two 96-pixel pieces on two of its sides, both moving with a
    motion of their own: together they are over the smallest instance (112 pixels), but
    each connected piece is under it, so neither is a body. One piece of 128 pixels is."""
    config = PipelineConfig(min_instance_frac=0.05)
    smallest = config.min_instance_frac * H * W

    def count(pieces):
        pair = _pair(_shift(x=0.2), _shift(), more=tuple((piece, _shift(y=-0.2))
                                                         for piece in pieces))
        labels = np.zeros((H, W), np.int32)
        labels[LEFT] = 1
        for piece in pieces:
            labels[piece] = 1
        return split_instances(config, labels, 1, [(pair, NOISE, np.eye(3))], SCENE_DEPTH,
                               None)[1]

    beside, below = (slice(10, 16), slice(24, 40)), (slice(26, 32), slice(8, 24))
    assert 96 < smallest < 2 * 96
    assert count([beside, below]) == 1
    assert count([(slice(10, 18), slice(24, 40))]) == 2


def test_two_tracks_that_touch_stay_apart_when_a_longer_pair_tells_their_motions_apart():
    """Over the one-frame pair the boxes move within the fit's inlier distance of one
    motion (one instance, even with both tracks carried); over the keyframe pair, three
    frames, they are apart. Both tracks carried: two instances. Without the keyframe pair,
    or without the tracks, one."""
    short = _pair(_shift(x=0.01), _shift(x=0.03))
    long = _pair(_shift(x=0.03), _shift(x=0.09), gap=3)
    assert 0.02 < THRESHOLD < 0.06
    carried = np.zeros((H, W), np.int32)
    carried[LEFT], carried[RIGHT] = 4, 9
    labels, count = _split([short, long], carried)
    assert count == 2
    np.testing.assert_array_equal(labels, _expected_split())
    assert _split([short], carried)[1] == 1
    assert _split([short, long])[1] == 1


def test_a_track_needs_the_continuing_size_to_seed_a_body():
    """A few pixels carried from another track (an occlusion's spill) seed no body."""
    short = _pair(_shift(x=0.01), _shift(x=0.03))
    long = _pair(_shift(x=0.03), _shift(x=0.09), gap=3)
    config = PipelineConfig(min_instance_frac=0.05)
    hysteresis_pixels = config.instance_size_hysteresis * config.min_instance_frac * H * W
    carried = np.zeros((H, W), np.int32)
    carried[LEFT] = 4
    carried[RIGHT] = 9
    carried[RIGHT][:, 1:] = 4  # the right box mostly carries the left one's track
    assert np.count_nonzero(carried == 9) < hysteresis_pixels
    assert _split([short, long], carried)[1] == 1


def test_the_fits_of_instances_left_whole_are_those_fit_instances_makes():
    """``split_instances`` hands ``fit_instances`` the single fits it made: identical."""
    config = PipelineConfig(min_instance_frac=0.05)
    pair = _pair(_shift(x=0.2, y=0.1), _shift(x=0.2, y=0.1))
    labels, count, whole_fits = split_instances(config, _both(), 1, [(pair, NOISE, np.eye(3))],
                                                SCENE_DEPTH, None)
    assert count == 1 and set(whole_fits) == {1}
    own = fit_instances(config, labels, count, pair, SCENE_DEPTH, NOISE)[1]
    reused = fit_instances(config, labels, count, pair, SCENE_DEPTH, NOISE,
                           fitted=whole_fits)[1]
    np.testing.assert_array_equal(reused.T, own.T)
    assert (reused.inlier_ratio, reused.is_rigid) == (own.inlier_ratio, own.is_rigid)


@pytest.mark.parametrize('left_textured, split', [(False, False), (True, True)])
def test_only_bodies_whose_texture_fixes_the_flow_can_be_seen_moving_apart(left_textured,
                                                                           split):
    """On stripes (structure tensor of rank one) a body's matches slide and its flow errs:
    its residuals do not show another motion. Two striped boxes moving apart stay one
    instance; with the left one textured they are two."""
    striped = np.zeros((H, W), np.float32)
    textured = np.where(np.arange(W)[None, :] < RIGHT[1].start, 1.0, 0.0).astype(np.float32)
    yy = np.broadcast_to(textured if left_textured else striped, (H, W)).copy()
    aperture = ApertureMetric(xx=np.ones((H, W), np.float32), xy=np.zeros((H, W), np.float32),
                              yy=yy, textured=np.ones((H, W), bool))
    config = PipelineConfig(min_instance_frac=0.05)
    pair = _pair(_shift(x=0.2), _shift(y=-0.2))
    count = split_instances(config, _both(), 1, [(pair, NOISE, np.eye(3))], SCENE_DEPTH, None,
                            aperture)[1]
    assert count == (2 if split else 1)
    assert split_instances(config, _both(), 1, [(pair, NOISE, np.eye(3))], SCENE_DEPTH,
                           None)[1] == 2  # without the metric: plain distances
