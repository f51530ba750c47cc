"""Ray casting and shading of one frame of a procedural scene.

Z-buffered first-hit ray casting: every pixel starts at the room's wall (the room is closed, so
every ray hits something), then each object is intersected only inside the image rectangle
its bounding sphere projects into, and wins the pixel where it is nearer. Colours are
Lambertian: ``albedo(canonical) * (ambient + (1 - ambient) * max(0, n . light))`` with a fixed
world light, so appearance is a pure function of the material point and its current normal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pointmap_ros.data.surfaces import Room, SceneObject
from pointmap_ros.geometry.transforms import se3_inverse

__all__ = ['CastResult', 'cast_frame']


@dataclass(frozen=True)
class CastResult:
    """Ray-cast result of one frame, float64 where exactness matters.

    Attributes:
        depth: ``[H, W]`` float64 ray parameter = z in the camera frame, metres.
        ids: ``[H, W]`` int32 (0 = room).
        canonical: ``[H, W, 3]`` float64 rest-frame coordinates of each pixel's hit.
        valid: ``[H, W]`` bool, depth within [near, far].
        rgb: ``[H, W, 3]`` uint8.
        T_world_cam: ``[4, 4]`` camera pose the frame was cast from.
        object_poses: ``{id: T_world_obj [4, 4]}``.
    """

    depth: np.ndarray
    ids: np.ndarray
    canonical: np.ndarray
    valid: np.ndarray
    rgb: np.ndarray
    T_world_cam: np.ndarray
    object_poses: dict


def _footprint(T_cam_obj: np.ndarray, obj: SceneObject, K: np.ndarray, shape):
    """Pixel rectangle ``(v0, v1, u0, u1)`` containing the object's projection, or None.

    The bounding sphere lies inside the axis-aligned cube around it; x/z and y/z over that
    cube are extreme at its corners, which gives a conservative rectangle cheaply.
    """
    height, width = shape
    centre = T_cam_obj[:3, :3] @ obj.bound_centre + T_cam_obj[:3, 3]
    r = obj.bound_radius * 1.001 + 1e-6
    if centre[2] - r <= 1e-3:
        return 0, height, 0, width
    zs = np.array([centre[2] - r, centre[2] + r])
    xs = np.array([centre[0] - r, centre[0] + r])[:, None] / zs[None, :]
    ys = np.array([centre[1] - r, centre[1] + r])[:, None] / zs[None, :]
    u0 = max(int(np.floor(K[0, 0] * xs.min() + K[0, 2])), 0)
    u1 = min(int(np.ceil(K[0, 0] * xs.max() + K[0, 2])) + 1, width)
    v0 = max(int(np.floor(K[1, 1] * ys.min() + K[1, 2])), 0)
    v1 = min(int(np.ceil(K[1, 1] * ys.max() + K[1, 2])) + 1, height)
    if u0 >= u1 or v0 >= v1:
        return None
    return v0, v1, u0, u1


def cast_frame(room: Room, objects: list, rays_cam: np.ndarray, K: np.ndarray,
               T_world_cam: np.ndarray, time_s: float, near: float, far: float,
               light: np.ndarray, ambient: float) -> CastResult:
    """Ray-cast and shade one frame.

    Args:
        room: the static room (id 0).
        objects: the scene's :class:`SceneObject` list.
        rays_cam: ``[H, W, 3]`` float64 ``K^-1 [u, v, 1]`` (unit z).
        K: ``[3, 3]`` intrinsics. T_world_cam: ``[4, 4]`` camera pose.
        time_s: scene time in seconds.
        near, far: valid depth range, metres.
        light: ``[3]`` unit vector towards the light, world frame. ambient: in [0, 1].
    """
    shape = rays_cam.shape[:2]
    rot, origin = T_world_cam[:3, :3], T_world_cam[:3, 3]
    dirs = (rays_cam.reshape(-1, 3) @ rot.T).reshape(rays_cam.shape)
    depth, wall = room.intersect(origin, dirs.reshape(-1, 3))
    depth = depth.reshape(shape)
    ids = np.zeros(shape, dtype=np.int32)
    T_cam_world = se3_inverse(T_world_cam)
    poses = {}
    for obj in objects:
        pose = obj.pose(time_s)
        poses[obj.id] = pose
        box = _footprint(T_cam_world @ pose, obj, K, shape)
        if box is None:
            continue
        v0, v1, u0, u1 = box
        o_local = pose[:3, :3].T @ (origin - pose[:3, 3])
        d_local = dirs[v0:v1, u0:u1].reshape(-1, 3) @ pose[:3, :3]
        s = obj.intersect(o_local, d_local, time_s).reshape(v1 - v0, u1 - u0)
        nearer = (s < depth[v0:v1, u0:u1]) & (s >= near)
        depth[v0:v1, u0:u1][nearer] = s[nearer]
        ids[v0:v1, u0:u1][nearer] = obj.id

    valid = np.isfinite(depth) & (depth >= near) & (depth <= far)
    # Flat index arrays: cheaper than repeated boolean masks over [H, W, 3] images.
    flat_depth, flat_ids, flat_dirs = depth.reshape(-1), ids.reshape(-1), dirs.reshape(-1, 3)
    canonical = np.zeros((flat_depth.size, 3))
    albedo = np.zeros((flat_depth.size, 3), dtype=np.float32)
    lambert = np.zeros(flat_depth.size)
    px = np.flatnonzero(valid.reshape(-1) & (flat_ids == 0))
    points = origin + flat_depth[px, None] * flat_dirs[px]
    canonical[px] = points
    albedo[px] = room.albedo(points, wall[px])
    lambert[px] = np.maximum(room.normal(wall[px]) @ light, 0.0)
    for obj in objects:
        px = np.flatnonzero(valid.reshape(-1) & (flat_ids == obj.id))
        if px.size == 0:
            continue
        pose = poses[obj.id]
        local = (origin - pose[:3, 3] + flat_depth[px, None] * flat_dirs[px]) @ pose[:3, :3]
        canon = obj.canonical(local, time_s)
        canonical[px] = canon
        albedo[px] = obj.albedo(canon)
        cos = obj.local_normal(local, time_s) @ (pose[:3, :3].T @ light)
        lambert[px] = np.abs(cos) if obj.two_sided else np.maximum(cos, 0.0)
    shade = (255.0 * (ambient + (1.0 - ambient) * lambert)).astype(np.float32)[:, None]
    rgb = np.clip(albedo * shade + 0.5, 0, 255).astype(np.uint8)
    return CastResult(depth=depth, ids=ids, canonical=canonical.reshape(shape + (3,)),
                      valid=valid, rgb=rgb.reshape(shape + (3,)), T_world_cam=T_world_cam,
                      object_poses=poses)
