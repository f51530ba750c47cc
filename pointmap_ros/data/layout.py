"""Scene layouts: where the room, the camera and the objects are and how they move.

``build_layout`` turns a :class:`~pointmap_ros.data.scenes.SceneConfig` and a seeded generator
into a :class:`Layout`. Two presets:

- ``'random'``: objects of random kinds, sizes, textures and smooth oscillating motions placed in
  the camera's view, each kept inside the room at all times.
- ``'demo'``: deterministic choreography for identity-tracking tests. Object 1 (a near box) and
  object 2 (a far cylinder) move in opposite directions across the image and cross exactly on
  the optical axis at frame ``(num_frames - 1) // 2``, where the box completely hides the
  cylinder. Object 3 is the deformable one (a waving sheet, or a sphere when
  ``include_deformable`` is off), up and to the right; further objects roll near the floor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pointmap_ros.data.surfaces import (Box, Cylinder, PulsingEllipsoid, Room, SceneObject,
                                        Sphere, WavingSheet)
from pointmap_ros.data.textures import TextureBank, uniform
from pointmap_ros.data.trajectories import (HingeTrajectory, LookAtTrajectory,
                                           OscillatingTrajectory)
from pointmap_ros.geometry.transforms import rotvec_to_rotmat

__all__ = ['Layout', 'SceneEvents', 'build_layout', 'ROOM_LO', 'ROOM_HI']

# Closed room around the start camera (world = camera-0 optical frame, y down): the floor is
# 1.3 m below the camera, the far wall 7.5 m ahead.
ROOM_LO = np.array([-3.0, -1.5, -2.0])
ROOM_HI = np.array([3.0, 1.3, 7.5])
_MARGIN = 0.05


@dataclass(frozen=True)
class SceneEvents:
    """Scripted events of the 'demo' preset.

    Attributes:
        crossing_frame: frame at which the two objects cross on the optical axis.
        occluder_id: the near object, in front at the crossing.
        occluded_id: the far object, completely hidden at ``crossing_frame``.
    """

    crossing_frame: int
    occluder_id: int
    occluded_id: int


@dataclass
class Layout:
    room: Room
    objects: list
    camera: LookAtTrajectory
    events: SceneEvents | None


def _camera(config, rng: np.random.Generator) -> LookAtTrajectory:
    amp = config.camera_amplitude
    return LookAtTrajectory(
        amplitude=amp * np.array([1.0, 0.3, 0.5]) * rng.uniform(0.7, 1.0, 3),
        omega=rng.uniform(0.4, 0.9, 3),
        target0=np.array([0.0, 0.0, 5.0]),
        drift=amp * np.array([1.0, 0.5, 0.0]) * rng.uniform(0.5, 1.0, 3),
        omega_target=rng.uniform(0.3, 0.7, 3))


def _trajectory(centre, rotation0, spin, amplitude=None, omega=None, phase=None):
    return OscillatingTrajectory(
        centre=np.asarray(centre, dtype=np.float64),
        amplitude=np.zeros(3) if amplitude is None else np.asarray(amplitude, dtype=np.float64),
        omega=np.zeros(3) if omega is None else np.asarray(omega, dtype=np.float64),
        phase=np.zeros(3) if phase is None else np.asarray(phase, dtype=np.float64),
        rotation0=rotation0, spin=np.asarray(spin, dtype=np.float64))


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    return rotvec_to_rotmat(rng.normal(size=3) * 1.5)


def _deformable(obj_id, kind, trajectory, bank, rng, speed) -> SceneObject:
    if kind == 'sheet':
        return WavingSheet(obj_id, trajectory, bank.photo_or_procedural(int(rng.integers(8))),
                           length=rng.uniform(1.0, 1.5), half_width=rng.uniform(0.35, 0.55),
                           amplitude=rng.uniform(0.12, 0.2), wavenumber=rng.uniform(4.0, 7.0),
                           omega=speed * rng.uniform(3.0, 5.0))
    return PulsingEllipsoid(obj_id, trajectory, bank.procedural_texture(int(rng.integers(8))),
                            radii=rng.uniform(0.3, 0.5, 3), amplitude=0.25,
                            omega=speed * rng.uniform(2.0, 3.5),
                            phase=rng.uniform(0, 2 * np.pi, 3),
                            texture_scale=3.0)


def _rigid(obj_id, kind, trajectory, bank, rng) -> SceneObject:
    texture = (bank.photo_or_procedural(int(rng.integers(8))) if rng.uniform() < 0.3
               else bank.procedural_texture(int(rng.integers(8))))
    if kind == 'box':
        return Box(obj_id, trajectory, texture, rng.uniform(0.2, 0.5, 3), texture_scale=1.5)
    if kind == 'sphere':
        return Sphere(obj_id, trajectory, texture, rng.uniform(0.25, 0.5))
    return Cylinder(obj_id, trajectory, texture, rng.uniform(0.2, 0.4), rng.uniform(0.25, 0.55),
                    texture_scale=1.5)


def _keep_inside(obj: SceneObject, camera: LookAtTrajectory, extra_reach: float = 0.0) -> None:
    """Shift the trajectory's centre so the bounding sphere never leaves the room or reaches
    the camera (rotation can swing an off-centre bound around the origin, hence the norm).
    ``extra_reach`` widens the sphere, for links hinged onto the object."""
    traj = obj.trajectory
    reach = obj.bound_radius + float(np.linalg.norm(obj.bound_centre)) + _MARGIN + extra_reach
    lo = ROOM_LO + np.abs(traj.amplitude) + reach
    hi = ROOM_HI - np.abs(traj.amplitude) - reach
    lo[2] = max(lo[2], camera.max_offset() + traj.max_offset() + reach + 0.5)
    centre = np.clip(traj.centre, lo, np.maximum(lo, hi))
    obj.trajectory = OscillatingTrajectory(centre, traj.amplitude, traj.omega, traj.phase,
                                           traj.rotation0, traj.spin)


def _random_objects(config, rng, bank, camera, tan_half_fov) -> list:
    objects = []
    speed = config.object_speed
    # One depth lane per object (shuffled) with little depth motion: objects pass in front of
    # each other in the image (crossings, occlusions) but rarely interpenetrate.
    lanes = 2.0 + (rng.permutation(config.num_objects) + 0.5) * 3.5 / max(config.num_objects, 1)
    for index in range(config.num_objects):
        obj_id = index + 1
        depth = lanes[index]
        centre = np.array([rng.uniform(-0.7, 0.7) * depth * tan_half_fov,
                           rng.uniform(-0.5, 0.7), depth])
        trajectory = OscillatingTrajectory(
            centre=centre, amplitude=rng.uniform(0.3, 1.0, 3) * np.array([1.0, 0.4, 0.15]),
            omega=speed * rng.uniform(0.4, 1.2, 3), phase=rng.uniform(0, 2 * np.pi, 3),
            rotation0=_random_rotation(rng), spin=speed * rng.uniform(-1.0, 1.0, 3))
        if config.include_deformable and index == config.num_objects - 1:
            kind = ('sheet', 'ellipsoid')[int(rng.integers(2))]
            if kind == 'sheet':
                # Face the camera (local z towards -z) with the pole vertical; turn slowly.
                trajectory = OscillatingTrajectory(
                    centre=centre, amplitude=trajectory.amplitude * 0.5, omega=trajectory.omega,
                    phase=trajectory.phase, spin=np.array([0.0, 0.15 * speed, 0.0]),
                    rotation0=rotvec_to_rotmat([0.0, np.pi + rng.uniform(-0.4, 0.4), 0.0]))
            obj = _deformable(obj_id, kind, trajectory, bank, rng, speed)
        else:
            kind = ('box', 'sphere', 'cylinder')[int(rng.integers(3))]
            obj = _rigid(obj_id, kind, trajectory, bank, rng)
        _keep_inside(obj, camera)
        objects.append(obj)
    for _ in range(config.num_articulated):
        objects.extend(_articulated(len(objects) + 1, config, rng, bank, camera, tan_half_fov))
    return objects


def _articulated(first_id, config, rng, bank, camera, tan_half_fov) -> list:
    """An articulated object: a base box moving about the floor half of the room with an upper
    arm and a forearm hinged on it (two revolute joints about the base's local z axis, so the
    arm swings in the base's x-y plane and never folds down through the base).

    Each link is a rigid :class:`Box` with its own id; the links' poses chain through
    :class:`HingeTrajectory`, so the three parts move differently but stay attached.
    """
    speed = config.object_speed
    half = rng.uniform([0.2, 0.15, 0.2], [0.35, 0.25, 0.35])
    depth = rng.uniform(2.5, 5.5)
    upper, fore = rng.uniform(0.35, 0.6), rng.uniform(0.25, 0.45)
    thick = rng.uniform(0.05, 0.09)
    base_traj = OscillatingTrajectory(
        centre=np.array([rng.uniform(-0.6, 0.6) * depth * tan_half_fov, rng.uniform(0.2, 0.8),
                         depth]),
        amplitude=rng.uniform(0.2, 0.8, 3) * np.array([1.0, 0.1, 0.2]),
        omega=speed * rng.uniform(0.3, 0.9, 3), phase=rng.uniform(0, 2 * np.pi, 3),
        rotation0=rotvec_to_rotmat([0.0, rng.uniform(0, 2 * np.pi), 0.0]),
        spin=np.array([0.0, speed * rng.uniform(-0.6, 0.6), 0.0]))
    base = Box(first_id, base_traj, bank.procedural_texture(int(rng.integers(8))), half,
               texture_scale=1.5)
    # World y points down: the base's top face is at local y = -half[1].
    _keep_inside(base, camera, extra_reach=upper + fore)
    z_axis = np.array([0.0, 0.0, 1.0])
    arm_traj = HingeTrajectory(base.trajectory, joint=np.array([0.0, -half[1], 0.0]),
                               axis=z_axis, offset=np.array([0.0, -upper / 2, 0.0]),
                               angle0=rng.uniform(-0.3, 0.3), amplitude=rng.uniform(0.4, 1.0),
                               omega=speed * rng.uniform(1.5, 3.0),
                               phase=rng.uniform(0, 2 * np.pi))
    arm = Box(first_id + 1, arm_traj, bank.procedural_texture(int(rng.integers(8))),
              (thick, upper / 2, thick), texture_scale=1.5)
    fore_traj = HingeTrajectory(arm_traj, joint=np.array([0.0, -upper / 2, 0.0]), axis=z_axis,
                                offset=np.array([0.0, -fore / 2, 0.0]),
                                angle0=rng.uniform(-0.5, 0.5), amplitude=rng.uniform(0.5, 1.2),
                                omega=speed * rng.uniform(2.0, 4.0),
                                phase=rng.uniform(0, 2 * np.pi))
    forearm = Box(first_id + 2, fore_traj, bank.procedural_texture(int(rng.integers(8))),
                  (0.8 * thick, fore / 2, 0.8 * thick), texture_scale=1.5)
    return [base, arm, forearm]


def _demo_objects(config, rng, bank, camera) -> tuple[list, SceneEvents]:
    crossing = (config.num_frames - 1) // 2
    t_cross = crossing / config.fps
    duration = (config.num_frames - 1) / config.fps
    # Half a period over the sequence keeps each motion monotonic from start to end.
    omega = 0.9 * np.pi / max(duration, 1e-9)
    omega3 = np.full(3, omega)
    phase3 = np.full(3, -omega * t_cross)
    cam = camera.pose(t_cross)
    right = cam[:3, 0]

    def on_axis(depth):
        return cam[:3, :3] @ np.array([0.0, 0.0, depth]) + cam[:3, 3]

    # Same frequency and phase: both pass the optical axis of the crossing camera at t_cross.
    near_path = _trajectory(on_axis(3.0), rotvec_to_rotmat([0.0, 0.3, 0.0]), [0.0, 0.5, 0.0],
                            amplitude=1.2 * right, omega=omega3, phase=phase3)
    near = Box(1, near_path, bank.procedural_texture(0), half_extents=(0.35, 0.35, 0.35),
               texture_scale=1.5)
    # A vertical cylinder (local z -> world -y) spinning about its axis; its bounding sphere
    # (0.5 m at 5 m) subtends less than the box's inscribed sphere (0.35 m at 3 m).
    far_path = _trajectory(on_axis(5.0), rotvec_to_rotmat([np.pi / 2, 0.0, 0.0]),
                           [0.0, 0.0, 0.8], amplitude=-1.6 * right, omega=omega3, phase=phase3)
    far = Cylinder(2, far_path, bank.photo_or_procedural(0), radius=0.3, half_height=0.4,
                   texture_scale=1.5)
    objects = [near, far]
    if config.include_deformable:
        # The flag hangs to the left of its pole (local x -> world -x), high on the right.
        pole = _trajectory([1.9, -1.1, 4.5], rotvec_to_rotmat([0.0, np.pi - 0.2, 0.0]),
                           [0.0, 0.05, 0.0], amplitude=[0.1, 0.05, 0.1], omega=[0.7, 0.9, 0.5])
        objects.append(WavingSheet(3, pole, bank.photo_or_procedural(1), length=1.4,
                                   half_width=0.35, amplitude=0.15, wavenumber=5.0, omega=4.0))
    else:
        ball = _trajectory([1.3, -1.0, 4.5], np.eye(3), [0.0, 0.4, 0.0],
                           amplitude=[0.1, 0.05, 0.1], omega=[0.7, 0.9, 0.5])
        objects.append(Sphere(3, ball, bank.procedural_texture(1), radius=0.3))
    for index in range(3, config.num_objects):
        side = -1.0 if index % 2 else 1.0
        radius = 0.3
        speed = config.object_speed
        traj = _trajectory([side * rng.uniform(1.2, 2.2), ROOM_HI[1] - radius - 0.01,
                            rng.uniform(3.5, 5.5)], np.eye(3), [0.0, 0.0, -side * speed * 1.5],
                           amplitude=[0.5, 0.0, 0.3], omega=[speed * 0.8, 0.0, speed * 0.6],
                           phase=rng.uniform(0, 2 * np.pi, 3))
        objects.append(Sphere(index + 1, traj, bank.procedural_texture(index + 2), radius))
    return objects, SceneEvents(crossing, occluder_id=1, occluded_id=2)


def build_layout(config, rng: np.random.Generator, tan_half_fov: float) -> Layout:
    """Build room, camera trajectory and objects for ``config`` (see module docstring).

    Args:
        config: a validated ``SceneConfig``.
        rng: the scene's seeded generator (consumed in a fixed order: determinism by seed).
        tan_half_fov: tangent of the horizontal half field of view, to place objects in view.
    """
    bank = TextureBank(rng, use_photos=config.use_photos)
    faces = rng.permutation(len(bank.procedural))[:5]
    room = Room(ROOM_LO.copy(), ROOM_HI.copy(),
                textures=[bank.procedural_texture(int(k)) for k in faces]
                + [bank.photo_or_procedural(int(rng.integers(8)))])
    camera = _camera(config, rng)
    if config.preset == 'demo':
        objects, events = _demo_objects(config, rng, bank, camera)
    else:
        objects, events = _random_objects(config, rng, bank, camera, tan_half_fov), None
    if config.plain_objects:  # after every draw: the same seed gives the same scene
        for obj in objects:
            obj.texture = uniform(obj.texture)
    return Layout(room, objects, camera, events)
