"""Smooth SE(3) trajectories for the scene generator's camera and objects.

Every trajectory is an analytic function of time in seconds, so the pose at any instant is
exact and any two calls with the same time return bit-identical matrices (the generator relies
on this to make static points have exactly zero flow).

Frames follow REP-103 optical conventions (x right, y down, z forward); a pose ``T_world_x``
maps points from frame x into the world frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pointmap_ros.geometry.transforms import rotvec_to_rotmat, se3_from_rt

__all__ = ['look_at', 'OscillatingTrajectory', 'LookAtTrajectory', 'HingeTrajectory']

# World "down" is +y in an optical world frame (camera 0 looks along +z with y down).
_DOWN = np.array([0.0, 1.0, 0.0])


def look_at(position, target) -> np.ndarray:
    """Optical-frame rotation ``R_world_cam`` whose z axis points from position to target.

    The camera's y axis is kept as close as possible to world +y (down), so a camera at the
    origin looking at ``(0, 0, z > 0)`` gets exactly the identity.
    """
    z = np.asarray(target, dtype=np.float64) - np.asarray(position, dtype=np.float64)
    z = z / np.linalg.norm(z)
    x = np.cross(_DOWN, z)
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    return np.stack([x, y, z], axis=1)


@dataclass(frozen=True)
class OscillatingTrajectory:
    """``T_world_obj(t) = [R0 Exp(spin t) | centre + amplitude * sin(omega t + phase)]``.

    Attributes:
        centre: ``[3]`` metres, mean position in the world frame.
        amplitude: ``[3]`` metres, per-axis oscillation amplitude.
        omega: ``[3]`` rad/s, per-axis angular frequency of the translation.
        phase: ``[3]`` radians.
        rotation0: ``[3, 3]`` orientation at t = 0.
        spin: ``[3]`` rotation vector per second (rad/s) in the object's own frame.
    """

    centre: np.ndarray
    amplitude: np.ndarray
    omega: np.ndarray
    phase: np.ndarray
    rotation0: np.ndarray
    spin: np.ndarray

    def pose(self, t: float) -> np.ndarray:
        """``T_world_obj`` ``[4, 4]`` float64 at time ``t`` seconds."""
        translation = self.centre + self.amplitude * np.sin(self.omega * t + self.phase)
        return se3_from_rt(self.rotation0 @ rotvec_to_rotmat(self.spin * t), translation)

    def max_offset(self) -> float:
        """Largest distance of the object's origin from ``centre`` over all times, metres."""
        return float(np.linalg.norm(self.amplitude))


@dataclass(frozen=True)
class LookAtTrajectory:
    """Camera moving on a Lissajous curve while looking at a slowly drifting target.

    ``position(t) = amplitude * sin(omega t)`` and
    ``target(t) = target0 + drift * sin(omega_target t)``, both zero-phase, so
    ``T_world_cam(0)`` is the identity when ``target0 = (0, 0, z)``: the world frame is camera
    0's optical frame at t = 0.
    """

    amplitude: np.ndarray
    omega: np.ndarray
    target0: np.ndarray
    drift: np.ndarray
    omega_target: np.ndarray

    def pose(self, t: float) -> np.ndarray:
        """``T_world_cam`` ``[4, 4]`` float64 at time ``t`` seconds."""
        position = self.amplitude * np.sin(self.omega * t)
        target = self.target0 + self.drift * np.sin(self.omega_target * t)
        return se3_from_rt(look_at(position, target), position)

    def max_offset(self) -> float:
        """Largest distance of the camera centre from the world origin, metres."""
        return float(np.linalg.norm(self.amplitude))


@dataclass(frozen=True)
class HingeTrajectory:
    """A link of an articulated object: rigidly attached to a parent through a revolute joint.

    ``T_world_link(t) = T_world_parent(t) @ [I | joint] @ [Exp(axis * angle(t)) | 0]
    @ [I | offset]`` with ``angle(t) = angle0 + amplitude * sin(omega t + phase)``. The parent
    is any trajectory (an :class:`OscillatingTrajectory` or another hinge: chains work), so
    every pose is still an analytic function of time and the ground truth stays exact.

    Attributes:
        parent: trajectory of the parent link.
        joint: ``[3]`` joint position in the parent's frame, metres.
        axis: ``[3]`` unit rotation axis in the parent's frame.
        offset: ``[3]`` position of this link's origin relative to the joint (link frame).
        angle0, amplitude, omega, phase: joint angle law (radians, rad/s).
    """

    parent: object
    joint: np.ndarray
    axis: np.ndarray
    offset: np.ndarray
    angle0: float
    amplitude: float
    omega: float
    phase: float

    def angle(self, t: float) -> float:
        """Joint angle at ``t`` seconds (radians)."""
        return self.angle0 + self.amplitude * np.sin(self.omega * t + self.phase)

    def pose(self, t: float) -> np.ndarray:
        """``T_world_link`` ``[4, 4]`` float64 at time ``t`` seconds."""
        hinge = se3_from_rt(rotvec_to_rotmat(np.asarray(self.axis) * self.angle(t)),
                            np.asarray(self.joint, dtype=np.float64))
        return self.parent.pose(t) @ hinge @ se3_from_rt(np.eye(3), np.asarray(self.offset,
                                                                                dtype=np.float64))
