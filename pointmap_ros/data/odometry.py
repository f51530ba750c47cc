"""What a robot's odometry makes of the scene generator's exact camera trajectory.

Wheel odometry, VIO and IMU integration do not jump; they drift. Their pose is the integral
of measured increments, each slightly wrong in the same way (a wheel radius off by a
percent, a gyro bias), so the error grows with the distance travelled, plus a small jitter
per reading that does not accumulate (timestamp and sensor noise). :func:`odometry_poses`
reproduces that, deterministically by seed, so the odometry prior
(pipeline/odometry_prior.py) is evaluated on the kind of TF a robot publishes
(``pointmap-eval-pipeline --odometry-noise``, the synthetic camera's ``odom`` frame).

Conventions: poses ``T_odom_cam`` ``[4, 4]`` float64, metres, of the camera's optical frame
(REP-103 ``_optical``: x right, y down, z forward) in the odometry frame. The odometry frame
is REP-105's ``odom``: a fixed frame in which the robot's pose is continuous but drifts; it
starts where the robot starts, here at ``base`` (by default a camera 1 m above the origin
looking along the odometry frame's x axis, as a forward-facing robot camera does).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pointmap_ros.geometry.transforms import (
    rotation_angle, rotvec_to_rotmat, se3_compose, se3_from_rt, se3_inverse)

__all__ = ['OdometryModel', 'OdometrySensor', 'odometry_poses', 'odometry_drift',
           'ROBOT_CAMERA_MOUNT']

#: ``T_odom_cam`` of a forward-looking camera 1 m above the odometry origin: optical z
#: along the body x axis, optical x along body -y, optical y along body -z (REP-103).
ROBOT_CAMERA_MOUNT = np.array([[0.0, 0.0, 1.0, 0.0],
                               [-1.0, 0.0, 0.0, 0.0],
                               [0.0, -1.0, 0.0, 1.0],
                               [0.0, 0.0, 0.0, 1.0]])


@dataclass(frozen=True)
class OdometryModel:
    """Parameters of :func:`odometry_poses` (defaults: decent wheel odometry, 1 % drift).

    Attributes:
        drift_rel: drift per metre travelled: the measured translation is off by a scale
            error of ``+-drift_rel`` (a wrong wheel radius: error along the track) and the
            heading turns by ``drift_rel`` radians per metre about an axis fixed per
            sequence (a gyro bias: error across the track). Over the first metres the
            end-point error is about ``drift_rel`` times the distance.
        jitter_m: standard deviation of each reading's translation noise, metres (does not
            accumulate).
        jitter_deg: standard deviation of each reading's rotation noise, degrees (does not
            accumulate).
    """

    drift_rel: float = 0.01
    jitter_m: float = 0.001
    jitter_deg: float = 0.05

    def scaled(self, drift_rel: float) -> 'OdometryModel':
        """The same sensor with drift ``drift_rel`` and jitter scaled in proportion."""
        factor = drift_rel / self.drift_rel if self.drift_rel else 0.0
        return OdometryModel(drift_rel, self.jitter_m * factor, self.jitter_deg * factor)


class OdometrySensor:
    """The odometry of :func:`odometry_poses`, one reading at a time, for runs of unknown
    length (a synthetic camera looping its scene keeps integrating, as a robot driving the
    same route again does).

    Readings equal :func:`odometry_poses` over the poses read so far, exactly: the random
    draws (scale error and drift axis at construction, then one jitter per reading after
    the first) come in the same order.
    """

    def __init__(self, model: OdometryModel = OdometryModel(), seed: int = 0,
                 base: np.ndarray = ROBOT_CAMERA_MOUNT):
        self.model = model
        self._rng = np.random.default_rng(seed)
        self._scale_error = model.drift_rel * self._rng.choice([-1.0, 1.0])
        axis = self._rng.standard_normal(3)
        self._drift_axis = axis / np.linalg.norm(axis)
        self._integrated = np.asarray(base, np.float64)
        self._previous_true: np.ndarray | None = None

    def read(self, T_world_cam: np.ndarray) -> np.ndarray:
        """``T_odom_cam`` ``[4, 4]`` reported for the next true pose ``T_world_cam``: the
        first reading is ``base`` exactly, later ones integrate the measured increment from
        the previous true pose, plus this reading's jitter."""
        T_world_cam = np.asarray(T_world_cam, np.float64)
        previous, self._previous_true = self._previous_true, T_world_cam
        if previous is None:
            return self._integrated.copy()
        self._integrated = se3_compose(self._integrated,
                                       self._measured_increment(previous, T_world_cam))
        rotation_noise = rotvec_to_rotmat(np.deg2rad(self.model.jitter_deg)
                                          * self._rng.standard_normal(3))
        jitter = se3_from_rt(rotation_noise, self.model.jitter_m * self._rng.standard_normal(3))
        return se3_compose(self._integrated, jitter)

    def _measured_increment(self, previous: np.ndarray, current: np.ndarray) -> np.ndarray:
        """The true increment with its translation scaled by ``1 + scale_error``, followed
        by the heading drift (``drift_rel`` radians per metre) for the distance covered."""
        increment = se3_compose(se3_inverse(previous), current)
        distance = float(np.linalg.norm(increment[:3, 3]))
        measured = increment.copy()
        measured[:3, 3] *= 1.0 + self._scale_error
        drift = rotvec_to_rotmat(self._drift_axis * self.model.drift_rel * distance)
        return se3_compose(measured, se3_from_rt(drift, np.zeros(3)))


def odometry_poses(T_world_cam: np.ndarray, model: OdometryModel = OdometryModel(),
                   seed: int = 0, base: np.ndarray = ROBOT_CAMERA_MOUNT) -> np.ndarray:
    """``[N, 4, 4]`` ``T_odom_cam`` the odometry reports for the true poses ``T_world_cam``.

    The first reading is ``base`` exactly; each later one composes the true increment
    between consecutive frames, its translation scaled by ``1 + scale_error`` and followed
    by the heading drift for the distance it covers, then adds the reading's jitter.
    Same seed, same result (:class:`OdometrySensor` reads the same one pose at a time).
    """
    sensor = OdometrySensor(model, seed, base)
    return np.stack([sensor.read(pose) for pose in np.asarray(T_world_cam, np.float64)])


def odometry_drift(T_odom_cam: np.ndarray, T_world_cam: np.ndarray) -> tuple[float, float]:
    """``(position error m, rotation error rad)`` of the odometry's last reading relative to
    its first, against the truth: the drift the odometry itself accumulated over the run."""
    measured = se3_compose(se3_inverse(T_odom_cam[0]), T_odom_cam[-1])
    true = se3_compose(se3_inverse(T_world_cam[0]), T_world_cam[-1])
    error = se3_compose(se3_inverse(true), measured)
    return float(np.linalg.norm(error[:3, 3])), float(rotation_angle(error[:3, :3]))
