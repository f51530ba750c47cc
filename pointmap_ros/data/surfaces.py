"""The surfaces of a procedural scene: the static room and the moving (deforming) objects.

Every surface point has *canonical* coordinates in its object's rest frame. A point's position
at time t is ``T_world_obj(t) @ deform(canonical, t)``; rigid objects do not deform, the room
is the world frame itself. Ray casting returns local hit points which :meth:`canonical` maps
back, so ground truth at any other time is an exact function evaluation, never a re-render.
Texture coordinates are computed from canonical points only (textures stick to material).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np

from pointmap_ros.data import raycast
from pointmap_ros.data.textures import sample
from pointmap_ros.data.trajectories import OscillatingTrajectory

__all__ = ['SceneObject', 'Box', 'Sphere', 'Cylinder', 'PulsingEllipsoid', 'WavingSheet', 'Room']


def _sphere_uv(unit: np.ndarray) -> np.ndarray:
    """Longitude/latitude texture coordinates of unit vectors ``[N, 3]`` (local z = pole)."""
    lon = np.arctan2(unit[:, 1], unit[:, 0]) / np.pi
    lat = np.arccos(np.clip(unit[:, 2], -1.0, 1.0)) / np.pi
    return np.stack([lon, lat], axis=1)


class SceneObject(abc.ABC):
    """Base class of a moving object; subclasses define shape, deformation and texture mapping.

    Attributes:
        id: instance id (>= 1) written to ``instance_ids``.
        kind: shape name ('box', 'sphere', 'cylinder', 'ellipsoid', 'sheet').
        rigid: False when the object deforms.
        trajectory: pose of the object's local frame over time.
        texture: ``[S, S, 3]`` float32 albedo texture.
        bound_centre, bound_radius: a sphere (local frame, metres) containing the object at all
            times; used to cull pixels and to keep objects inside the room.
        two_sided: shade both faces alike (open surfaces).
    """

    kind = ''
    rigid = True
    two_sided = False

    def __init__(self, obj_id: int, trajectory: OscillatingTrajectory, texture: np.ndarray,
                 texture_scale: float = 1.0):
        self.id = obj_id
        self.trajectory = trajectory
        self.texture = texture
        self.texture_scale = texture_scale
        self.bound_centre = np.zeros(3)
        self.bound_radius = 1.0

    def pose(self, t: float) -> np.ndarray:
        """``T_world_obj`` ``[4, 4]`` at ``t`` seconds."""
        return self.trajectory.pose(t)

    @abc.abstractmethod
    def intersect(self, o: np.ndarray, d: np.ndarray, t: float) -> np.ndarray:
        """Ray parameters ``[N]`` of the first hits (local frame; see :mod:`raycast`)."""

    @abc.abstractmethod
    def local_normal(self, p: np.ndarray, t: float) -> np.ndarray:
        """Unit outward normals ``[N, 3]`` of local surface points ``p`` at time ``t``."""

    @abc.abstractmethod
    def uv(self, canonical: np.ndarray) -> np.ndarray:
        """Texture coordinates ``[N, 2]`` (tiles) of canonical points ``[N, 3]``."""

    def canonical(self, p: np.ndarray, t: float) -> np.ndarray:
        """Rest-frame coordinates ``[N, 3]`` of local surface points at time ``t``."""
        return p

    def deform(self, canonical: np.ndarray, t: float) -> np.ndarray:
        """Local coordinates ``[N, 3]`` at time ``t`` of canonical points (inverse of above)."""
        return canonical

    def albedo(self, canonical: np.ndarray) -> np.ndarray:
        return sample(self.texture, self.uv(canonical) * self.texture_scale)


class Box(SceneObject):
    kind = 'box'

    def __init__(self, obj_id, trajectory, texture, half_extents, texture_scale=1.0):
        super().__init__(obj_id, trajectory, texture, texture_scale)
        self.half = np.asarray(half_extents, dtype=np.float64)
        self.bound_radius = float(np.linalg.norm(self.half))

    def intersect(self, o, d, t):
        return raycast.ray_box(o, d, self.half)

    def local_normal(self, p, t):
        return raycast.box_normal(p, self.half)

    def uv(self, canonical):
        axis = np.argmax(np.abs(canonical) / self.half, axis=1)
        # The two in-face coordinates, plus a per-face offset so faces show different texels.
        u = np.where(axis == 0, canonical[:, 1], canonical[:, 0])
        v = np.where(axis == 2, canonical[:, 1], canonical[:, 2])
        offset = 0.37 * axis + 0.21 * (canonical[np.arange(len(axis)), axis] > 0)
        return np.stack([u + offset, v + offset], axis=1)


class Sphere(SceneObject):
    kind = 'sphere'

    def __init__(self, obj_id, trajectory, texture, radius, texture_scale=1.0):
        super().__init__(obj_id, trajectory, texture, texture_scale)
        self.radius = float(radius)
        self.bound_radius = self.radius

    def intersect(self, o, d, t):
        return raycast.ray_sphere(o, d, self.radius)

    def local_normal(self, p, t):
        return p / np.linalg.norm(p, axis=1, keepdims=True)

    def uv(self, canonical):
        return _sphere_uv(canonical / np.linalg.norm(canonical, axis=1, keepdims=True))


class Cylinder(SceneObject):
    kind = 'cylinder'

    def __init__(self, obj_id, trajectory, texture, radius, half_height, texture_scale=1.0):
        super().__init__(obj_id, trajectory, texture, texture_scale)
        self.radius = float(radius)
        self.half_height = float(half_height)
        self.bound_radius = float(np.hypot(radius, half_height))

    def intersect(self, o, d, t):
        return raycast.ray_cylinder(o, d, self.radius, self.half_height)

    def local_normal(self, p, t):
        return raycast.cylinder_normal(p, self.radius, self.half_height)

    def uv(self, canonical):
        angle = np.arctan2(canonical[:, 1], canonical[:, 0]) / np.pi
        on_cap = np.abs(canonical[:, 2]) >= self.half_height * (1.0 - 1e-9)
        u = np.where(on_cap, canonical[:, 0], angle)
        v = np.where(on_cap, canonical[:, 1] + 0.5, canonical[:, 2])
        return np.stack([u, v], axis=1)


class PulsingEllipsoid(SceneObject):
    """Non-rigid: an ellipsoid whose three radii oscillate with different phases.

    ``radii(t) = radii0 * (1 + amplitude * sin(omega t + phase))``; the deformation is the
    anisotropic scaling ``diag(radii(t) / radii0)``, so material points move non-rigidly.
    """

    kind = 'ellipsoid'
    rigid = False

    def __init__(self, obj_id, trajectory, texture, radii, amplitude, omega, phase,
                 texture_scale=1.0):
        super().__init__(obj_id, trajectory, texture, texture_scale)
        self.radii0 = np.asarray(radii, dtype=np.float64)
        self.amplitude = float(amplitude)
        self.omega = float(omega)
        self.phase = np.asarray(phase, dtype=np.float64)
        self.bound_radius = float(self.radii0.max() * (1.0 + self.amplitude))

    def scale(self, t: float) -> np.ndarray:
        """Per-axis stretch ``radii(t) / radii0`` ``[3]``."""
        return 1.0 + self.amplitude * np.sin(self.omega * t + self.phase)

    def intersect(self, o, d, t):
        return raycast.ray_ellipsoid(o, d, self.radii0 * self.scale(t))

    def local_normal(self, p, t):
        radii = self.radii0 * self.scale(t)
        n = p / radii ** 2
        return n / np.linalg.norm(n, axis=1, keepdims=True)

    def canonical(self, p, t):
        return p / self.scale(t)

    def deform(self, canonical, t):
        return canonical * self.scale(t)

    def uv(self, canonical):
        unit = canonical / self.radii0
        return _sphere_uv(unit / np.linalg.norm(unit, axis=1, keepdims=True))


class WavingSheet(SceneObject):
    """Non-rigid: a flag on a pole (local y axis) waving as a travelling wave.

    Material point ``(x, y, 0)``, ``x in [0, length]``, ``|y| <= half_width`` sits at
    ``(x, y, h(x, y, t))`` with ``h = A (x / length) sin(k x - omega t + c y)``: pinned at the
    pole, growing towards the free edge. Ray casting brackets and bisects the height field.
    """

    kind = 'sheet'
    rigid = False
    two_sided = True

    def __init__(self, obj_id, trajectory, texture, length, half_width, amplitude,
                 wavenumber, omega, twist=1.5, texture_scale=1.0):
        super().__init__(obj_id, trajectory, texture, texture_scale)
        self.length = float(length)
        self.half_width = float(half_width)
        self.amplitude = float(amplitude)
        self.wavenumber = float(wavenumber)
        self.omega = float(omega)
        self.twist = float(twist)
        self.bound_centre = np.array([0.5 * self.length, 0.0, 0.0])
        self.bound_radius = float(np.linalg.norm([0.5 * length, half_width, amplitude]))

    def _phase(self, x, y, t):
        return self.wavenumber * x - self.omega * t + self.twist * y

    def height(self, x: np.ndarray, y: np.ndarray, t: float) -> np.ndarray:
        return self.amplitude * (x / self.length) * np.sin(self._phase(x, y, t))

    def intersect(self, o, d, t):
        lo = (0.0, -self.half_width, -self.amplitude)
        hi = (self.length, self.half_width, self.amplitude)
        return raycast.ray_heightfield(o, d, lo, hi, lambda x, y: self.height(x, y, t))

    def local_normal(self, p, t):
        x, y = p[:, 0], p[:, 1]
        phase = self._phase(x, y, t)
        envelope = self.amplitude * x / self.length
        dh_dx = (self.amplitude / self.length * np.sin(phase)
                 + envelope * self.wavenumber * np.cos(phase))
        dh_dy = envelope * self.twist * np.cos(phase)
        n = np.stack([-dh_dx, -dh_dy, np.ones_like(x)], axis=1)
        return n / np.linalg.norm(n, axis=1, keepdims=True)

    def canonical(self, p, t):
        return np.stack([p[:, 0], p[:, 1], np.zeros(len(p))], axis=1)

    def deform(self, canonical, t):
        x, y = canonical[:, 0], canonical[:, 1]
        return np.stack([x, y, self.height(x, y, t)], axis=1)

    def uv(self, canonical):
        # Upright and unmirrored for a flag facing the camera with its pole on the right.
        return np.stack([1.0 - canonical[:, 0] / self.length,
                         0.5 + canonical[:, 1] / (2.0 * self.half_width)], axis=1)


@dataclass
class Room:
    """The static, closed box every ray ends in (id 0); canonical coordinates = world.

    Attributes:
        lo, hi: ``[3]`` corners in the world frame (y down: ``hi[1]`` is the floor).
        textures: six ``[S, S, 3]`` textures for the faces ordered (-x, +x, -y, +y, -z, +z).
        texture_scale: tiles per metre.
    """

    lo: np.ndarray
    hi: np.ndarray
    textures: list
    texture_scale: float = 0.25

    def intersect(self, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exit parameters ``[N]`` and faces ``[N]`` (0..5, see :meth:`normal`) of rays from
        inside the room."""
        return raycast.ray_room_exit(o, d, self.lo, self.hi)

    @staticmethod
    def normal(face: np.ndarray) -> np.ndarray:
        """Inward unit normals ``[N, 3]`` of faces 0..5 (-x, +x, -y, +y, -z, +z)."""
        n = np.zeros((len(face), 3))
        n[np.arange(len(face)), face // 2] = np.where(face % 2 == 0, 1.0, -1.0)
        return n

    def albedo(self, p: np.ndarray, face: np.ndarray) -> np.ndarray:
        """Colours ``[N, 3]`` of wall points ``p`` ``[N, 3]`` (world = canonical) on ``face``."""
        out = np.empty((len(p), 3), dtype=np.float32)
        in_plane = ((1, 2), (1, 2), (0, 2), (0, 2), (0, 1), (0, 1))
        for k in range(6):
            sel = np.flatnonzero(face == k)
            if sel.size == 0:
                continue
            a, b = in_plane[k]
            uv = np.stack([p[sel, a] - self.lo[a], p[sel, b] - self.lo[b]], axis=1)
            scale = self.texture_scale
            if k == 5:
                # The far wall shows one whole picture instead of a tiling.
                scale = 1.0 / float(max(self.hi[a] - self.lo[a], self.hi[b] - self.lo[b]))
            out[sel] = sample(self.textures[k], uv * scale)
        return out
