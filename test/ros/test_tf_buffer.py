"""TfBuffer (ros/tf_buffer.py) against analytic ground truth: chains, interpolation of known
rotations, static and dynamic edges together, tf2's errors, re-parenting, cache pruning.
Pure Python (geometry_msgs message classes only), no DDS."""

import numpy as np
import pytest

from pointmap_ros.geometry.transforms import rotvec_to_rotmat, se3_from_rt, se3_inverse
from pointmap_ros.ros.conversions import matrix_to_transform, ns_to_stamp
from pointmap_ros.ros.tf_buffer import (ConnectivityError, ExtrapolationError,
                                        FrameNotFoundError, TfBuffer, TransformLookupError)

S = 1_000_000_000  # nanoseconds per second


def pose(rotvec=(0.0, 0.0, 0.0), translation=(0.0, 0.0, 0.0)) -> np.ndarray:
    return se3_from_rt(rotvec_to_rotmat(np.array(rotvec, float)), np.array(translation, float))


def about_z(angle_rad: float, translation=(0.0, 0.0, 0.0)) -> np.ndarray:
    return pose((0.0, 0.0, angle_rad), translation)


def put(buffer, parent, child, T, stamp_ns=0, static=False, authority='test'):
    return buffer.set_transform(matrix_to_transform(T, ns_to_stamp(stamp_ns), parent, child),
                                authority, is_static=static)


def buffer_with(*samples, cache_time_s=10.0):
    """A buffer with identity transforms ``(parent, child, stamp_ns)``."""
    buffer = TfBuffer(cache_time_s)
    for parent, child, stamp_ns in samples:
        put(buffer, parent, child, np.eye(4), stamp_ns)
    return buffer


# A robot's camera chain: odom -> base_link (dynamic) -> camera_link -> camera_optical.
BASE_AT_0 = about_z(0.0)
BASE_AT_1 = about_z(np.pi / 2, (2.0, 0.0, 0.0))
MOUNT = pose((0.1, -0.2, 0.3), (0.2, 0.0, 0.5))
OPTICAL = se3_from_rt(np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]),
                      np.zeros(3))  # REP-103 body -> optical axes


@pytest.fixture
def robot():
    buffer = TfBuffer()
    put(buffer, 'odom', 'base_link', BASE_AT_0, 0)
    put(buffer, 'odom', 'base_link', BASE_AT_1, 1 * S)
    put(buffer, 'base_link', 'camera_link', MOUNT, static=True)
    put(buffer, 'camera_link', 'camera_optical', OPTICAL, static=True)
    return buffer


def test_chain_of_three_edges_composes_in_order(robot):
    got = robot.lookup_transform('odom', 'camera_optical', 1 * S)
    np.testing.assert_allclose(got, BASE_AT_1 @ MOUNT @ OPTICAL, atol=1e-12)
    back = robot.lookup_transform('camera_optical', 'odom', 1 * S)
    np.testing.assert_allclose(back, se3_inverse(BASE_AT_1 @ MOUNT @ OPTICAL), atol=1e-12)


def test_exact_at_sample_stamps_and_slerp_between(robot):
    np.testing.assert_allclose(robot.lookup_transform('odom', 'base_link', 1 * S), BASE_AT_1,
                               atol=1e-12)
    later = TfBuffer()  # stamp 0 means "latest", so check the oldest sample's exactness here
    first, second = pose((0.3, -0.1, 0.2), (1, 2, 3)), pose((-0.4, 0.5, 0.1), (4, 5, 6))
    put(later, 'odom', 'base_link', first, 2 * S)
    put(later, 'odom', 'base_link', second, 3 * S)
    # (up to the quaternion round trip of the message)
    np.testing.assert_allclose(later.lookup_transform('odom', 'base_link', 2 * S), first,
                               atol=1e-12)
    np.testing.assert_allclose(later.lookup_transform('odom', 'base_link', 3 * S), second,
                               atol=1e-12)
    for fraction in (0.25, 0.5, 0.75):
        expected = about_z(fraction * np.pi / 2, (2.0 * fraction, 0.0, 0.0))
        got = robot.lookup_transform('odom', 'base_link', int(fraction * S))
        np.testing.assert_allclose(got, expected, atol=1e-12)
    put(robot, 'odom', 'base_link', about_z(0.1), 1 * S)  # same stamp: replaces the sample
    np.testing.assert_allclose(robot.lookup_transform('odom', 'base_link', 1 * S),
                               about_z(0.1), atol=1e-12)
    put(robot, 'odom', 'base_link', BASE_AT_1, 1 * S)
    mid = robot.lookup_transform('odom', 'camera_optical', S // 2)
    np.testing.assert_allclose(mid, about_z(np.pi / 4, (1.0, 0, 0)) @ MOUNT @ OPTICAL,
                               atol=1e-12)


def test_interpolation_takes_the_short_arc_through_pi():
    buffer = TfBuffer()
    put(buffer, 'a', 'b', about_z(np.deg2rad(170)), 0)
    put(buffer, 'a', 'b', about_z(np.deg2rad(-170)), 2 * S)
    np.testing.assert_allclose(buffer.lookup_transform('a', 'b', S), about_z(np.pi),
                               atol=1e-12)
    # A general axis: halfway along 1.2 rad about (1, 2, 3)/|.| is 0.6 rad about it.
    axis = np.array([1.0, 2.0, 3.0]) / np.sqrt(14.0)
    put(buffer, 'a', 'c', pose(0.3 * axis), 0)
    put(buffer, 'a', 'c', pose(1.5 * axis), 2 * S)
    np.testing.assert_allclose(buffer.lookup_transform('a', 'c', S), pose(0.9 * axis),
                               atol=1e-12)


def test_siblings_meet_at_their_common_ancestor():
    buffer = TfBuffer()
    left, right = pose((0.1, 0.2, 0.3), (1, 2, 3)), pose((-0.3, 0.0, 0.5), (0, -1, 0.5))
    put(buffer, 'base', 'left', left, static=True)
    put(buffer, 'base', 'right', right, static=True)
    put(buffer, 'odom', 'base', about_z(0.7, (5, 5, 0)), 3 * S)
    np.testing.assert_allclose(buffer.lookup_transform('left', 'right', 3 * S),
                               se3_inverse(left) @ right, atol=1e-12)
    np.testing.assert_allclose(buffer.lookup_transform('right', 'right', 7 * S), np.eye(4))


def test_static_edges_hold_at_every_time_and_stamp_zero_is_latest_common_time():
    buffer = TfBuffer()
    put(buffer, 'base', 'camera', MOUNT, stamp_ns=5 * S, static=True)
    for stamp_ns in (1, 5 * S, 10**18):
        np.testing.assert_allclose(buffer.lookup_transform('base', 'camera', stamp_ns), MOUNT)
    put(buffer, 'odom', 'base', about_z(0.0), 1 * S)
    put(buffer, 'odom', 'base', about_z(0.4), 2 * S)
    put(buffer, 'odom', 'base', about_z(0.8), 3 * S)
    put(buffer, 'odom', 'other', about_z(0.0), 1 * S)
    put(buffer, 'odom', 'other', about_z(1.0), 2 * S)
    # Latest time both dynamic edges cover: 2 s (not 3 s).
    np.testing.assert_allclose(buffer.lookup_transform('other', 'camera', 0),
                               se3_inverse(about_z(1.0)) @ about_z(0.4) @ MOUNT, atol=1e-12)
    np.testing.assert_allclose(buffer.lookup_transform('odom', 'camera', 0),
                               about_z(0.8) @ MOUNT, atol=1e-12)


def test_extrapolation_into_past_and_future_is_refused_like_tf2(robot):
    with pytest.raises(ExtrapolationError, match='into the future') as future:
        robot.lookup_transform('odom', 'camera_optical', S + 1)
    assert future.value.reason == 'extrapolation'
    assert 'latest data is at time 1.000000' in str(future.value)
    with pytest.raises(ExtrapolationError, match='into the past'):
        buffer_with(('odom', 'x', 2 * S), ('odom', 'x', 3 * S)).lookup_transform(
            'odom', 'x', S)
    single = buffer_with(('odom', 'x', 2 * S))
    np.testing.assert_allclose(single.lookup_transform('odom', 'x', 2 * S), np.eye(4))
    with pytest.raises(ExtrapolationError, match='only data is at time 2.0'):
        single.lookup_transform('odom', 'x', 2 * S + 1)


def test_unknown_frames_and_separate_trees(robot):
    with pytest.raises(FrameNotFoundError, match='"camera_optical_frame" passed to') as missing:
        robot.lookup_transform('odom', 'camera_optical_frame', S)
    assert missing.value.reason == 'missing'
    put(robot, 'map', 'landmark', np.eye(4), static=True)
    with pytest.raises(ConnectivityError, match='not part of the same tree') as apart:
        robot.lookup_transform('landmark', 'camera_optical', S)
    assert apart.value.reason == 'disconnected'
    assert all(issubclass(e, TransformLookupError)
               for e in (FrameNotFoundError, ConnectivityError, ExtrapolationError))


def test_a_new_parent_replaces_the_old_one(robot):
    assert robot.parent_of('base_link') == 'odom'
    put(robot, 'map', 'base_link', about_z(0.3, (1, 1, 0)), 5 * S)
    assert robot.parent_of('base_link') == 'map'
    np.testing.assert_allclose(robot.lookup_transform('map', 'camera_optical', 5 * S),
                               about_z(0.3, (1, 1, 0)) @ MOUNT @ OPTICAL, atol=1e-12)
    # The old edge's samples went with it: the new edge has only its own.
    with pytest.raises(ExtrapolationError):
        robot.lookup_transform('map', 'base_link', S)
    assert 'odom' not in robot.frames()


def test_cache_keeps_cache_time_behind_the_newest_sample():
    buffer = buffer_with(*[('odom', 'base', k * S // 2) for k in range(8)], cache_time_s=1.0)
    # Newest at 3.5 s: samples from 2.5 s on remain.
    with pytest.raises(ExtrapolationError, match='earliest data is at time 2.5'):
        buffer.lookup_transform('odom', 'base', 2 * S)
    buffer.lookup_transform('odom', 'base', 3 * S)
    assert put(buffer, 'odom', 'base', np.eye(4), 2 * S) is False  # older than the window
    assert put(buffer, 'odom', 'base', np.eye(4), 3 * S - 1) is True


def test_loops_and_malformed_transforms_are_rejected():
    buffer = buffer_with(('a', 'b', S), ('b', 'a', S))
    with pytest.raises(ConnectivityError, match='loop'):
        buffer.lookup_transform('a', 'b', S)
    with pytest.raises(ValueError, match='frame ids'):
        put(buffer, 'c', 'c', np.eye(4))
    nan_pose = np.eye(4)
    nan_pose[0, 3] = np.nan
    with pytest.raises(ValueError, match='not finite'):
        put(buffer, 'c', 'd', nan_pose)


def test_clear_forgets_dynamic_transforms_but_keeps_static_ones(robot):
    robot.clear()
    np.testing.assert_allclose(robot.lookup_transform('base_link', 'camera_optical', 5 * S),
                               MOUNT @ OPTICAL, atol=1e-12)
    with pytest.raises(FrameNotFoundError):
        robot.lookup_transform('odom', 'base_link', S)
