"""The robot sensors a generated scene is observed with: odometry and a depth camera.

The scene generator knows the truth; a robot does not. It has odometry that drifts
(:mod:`~pointmap_ros.data.odometry`) and a depth camera with noise and holes
(:mod:`~pointmap_ros.data.depth_sensor`). A :class:`SensorRig` says which of the two are
simulated and how; :meth:`SensorRig.start` begins one run, whose :meth:`SensorRun.read` turns
each rendered frame played into the readings a robot would publish with it. The synthetic
camera node and the bag writer both play scenes through a run, so a live camera and a bag
with the same settings carry the same readings.

A run is a sequence of readings, not a function of the frame index: odometry integrates
every frame read so far (a camera looping its scene keeps drifting, as a robot driving the
same route again does), and each reading gets fresh depth noise (a sensor's noise does not
repeat when the scene does). Same rig, same frames read, same readings.

Frames (REP-105 names): the odometry reports the camera's optical frame in ``odom``, a
fixed frame in which the pose is continuous but drifts. :func:`world_to_odom` is the
correction that maps ``odom`` onto the ground-truth world, what a perfect localiser
publishes as ``map -> odom``; with it ``world -> odom -> camera`` is the true camera pose.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pointmap_ros.data.depth_sensor import DepthSensorModel, degrade_depth
from pointmap_ros.data.odometry import ROBOT_CAMERA_MOUNT, OdometryModel, OdometrySensor
from pointmap_ros.geometry.transforms import se3_compose, se3_inverse

__all__ = ['SensorRig', 'SensorRun', 'SensorReading', 'depth_seed', 'world_to_odom']


@dataclass(frozen=True)
class SensorRig:
    """Which sensors observe a generated scene, and their error models.

    Attributes:
        odometry: the odometry's error model; None = no odometry.
        depth: the depth camera's error model; None = the renderer's exact depth.
        seed: seed of the odometry error and of the depth noise (independent of the scene's
            seed: the same scene can be observed with different sensor errors).
    """

    odometry: OdometryModel | None = None
    depth: DepthSensorModel | None = None
    seed: int = 0

    def start(self, base: np.ndarray = ROBOT_CAMERA_MOUNT) -> 'SensorRun':
        """A new run: odometry starts at ``base`` (``T_odom_cam`` of the first reading)."""
        return SensorRun(self, base)


@dataclass(frozen=True)
class SensorReading:
    """What the sensors report with one played frame.

    Attributes:
        index: position of the reading in its run (0, 1, ...; not the scene frame).
        depth: ``[H, W]`` float32 metres, 0 = no data (exact without a depth model).
        T_odom_cam: ``[4, 4]`` odometry pose of the camera's optical frame; None without
            odometry.
    """

    index: int
    depth: np.ndarray
    T_odom_cam: np.ndarray | None


class SensorRun:
    """One run of a :class:`SensorRig`: reads the frames played, in order."""

    def __init__(self, rig: SensorRig, base: np.ndarray = ROBOT_CAMERA_MOUNT):
        self.rig = rig
        self._odometry = (None if rig.odometry is None
                          else OdometrySensor(rig.odometry, rig.seed, base))
        self._count = 0

    @property
    def count(self) -> int:
        """Readings taken so far."""
        return self._count

    def read(self, frame) -> SensorReading:
        """The readings for the next played ``frame`` (a
        :class:`~pointmap_ros.data.render.RenderedFrame`)."""
        index = self._count
        self._count += 1
        depth = frame.depth
        if self.rig.depth is not None:
            depth = degrade_depth(depth, self.rig.depth, seed=depth_seed(self.rig.seed, index))
        T_odom_cam = None if self._odometry is None else self._odometry.read(frame.T_world_cam)
        return SensorReading(index, depth, T_odom_cam)


def depth_seed(seed: int, index: int) -> int:
    """Seed of :func:`~pointmap_ros.data.depth_sensor.degrade_depth` for reading ``index``
    of a run seeded ``seed``: every reading gets its own noise, reproducibly."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def world_to_odom(T_world_cam: np.ndarray, T_odom_cam: np.ndarray) -> np.ndarray:
    """``T_world_odom`` ``[4, 4]``: where the drifting ``odom`` frame lies in the world when
    the camera truly is at ``T_world_cam`` and the odometry reads ``T_odom_cam``."""
    return se3_compose(np.asarray(T_world_cam, np.float64), se3_inverse(T_odom_cam))
