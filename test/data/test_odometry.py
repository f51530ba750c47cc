"""The odometry error model (data/odometry.py) against trajectories with known answers."""

import numpy as np
import pytest

from pointmap_ros.data.odometry import (
    ROBOT_CAMERA_MOUNT, OdometryModel, odometry_drift, odometry_poses)
from pointmap_ros.geometry.transforms import (
    rotation_angle, rotvec_to_rotmat, se3_compose, se3_from_rt, se3_inverse)


def _straight_line(length_m: float, steps: int) -> np.ndarray:
    """Camera poses along the optical axis, turning slowly (a robot driving a curve)."""
    return np.stack([se3_from_rt(rotvec_to_rotmat([0.0, 0.02 * k, 0.0]),
                                 [0.0, 0.0, length_m * k / steps]) for k in range(steps + 1)])


def test_without_error_the_relative_poses_are_the_truth():
    truth = _straight_line(2.0, 20)
    readings = odometry_poses(truth, OdometryModel(0.0, 0.0, 0.0), seed=4)
    np.testing.assert_allclose(readings[0], ROBOT_CAMERA_MOUNT)
    for reading, true_pose in zip(readings, truth):
        relative = se3_compose(se3_inverse(readings[0]), reading)
        np.testing.assert_allclose(relative, se3_compose(se3_inverse(truth[0]), true_pose),
                                   atol=1e-12)
    assert odometry_drift(readings, truth) == pytest.approx((0.0, 0.0), abs=1e-12)


@pytest.mark.parametrize('drift', [0.01, 0.03])
def test_drift_grows_with_the_distance_travelled(drift):
    """The scale error alone puts the end ``drift * D`` along the track; the heading drift
    adds at most about as much across it over a few metres."""
    model = OdometryModel(drift, 0.0, 0.0)
    for length in (1.0, 3.0):
        truth = _straight_line(length, 30)
        position_error, rotation_error = odometry_drift(odometry_poses(truth, model, seed=1),
                                                        truth)
        assert drift * length * 0.9 <= position_error <= drift * length * 2.5
        # heading: drift radians per metre of path
        assert rotation_error == pytest.approx(drift * length, rel=0.05)


def test_a_still_camera_only_jitters():
    truth = np.stack([np.eye(4)] * 50)
    model = OdometryModel(0.01, jitter_m=0.002, jitter_deg=0.1)
    readings = odometry_poses(truth, model, seed=2)
    offsets = se3_compose(se3_inverse(readings[0]), readings)
    distances = np.linalg.norm(offsets[:, :3, 3], axis=1)
    # no accumulation: every reading within a few sigma of the start, none wandering off
    assert distances.max() < 6 * 0.002
    assert np.degrees(rotation_angle(offsets[:, :3, :3])).max() < 6 * 0.1


def test_same_seed_same_readings_and_scaled_model():
    truth = _straight_line(1.0, 10)
    first = odometry_poses(truth, OdometryModel(), seed=7)
    np.testing.assert_array_equal(first, odometry_poses(truth, OdometryModel(), seed=7))
    assert not np.array_equal(first, odometry_poses(truth, OdometryModel(), seed=8))
    doubled = OdometryModel().scaled(0.02)
    assert doubled == OdometryModel(0.02, 2 * OdometryModel.jitter_m,
                                    2 * OdometryModel.jitter_deg)
