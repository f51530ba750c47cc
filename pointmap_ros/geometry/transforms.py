"""Rigid transforms (SE(3)) and rotation conversions in NumPy.

Convention:
    Poses are ``[..., 4, 4]`` homogeneous matrices named ``T_<to>_<from>``: ``T_world_cam``
    maps points expressed in the camera frame into the world frame. Quaternions are
    ``(x, y, z, w)`` as in ``geometry_msgs/Quaternion``; rotation vectors are axis * angle in
    radians. Conversions are named ``<from>_to_<to>`` (roma style). All functions accept
    arbitrary leading batch dimensions and keep the input float dtype (float32 or float64).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    'se3_from_rt', 'se3_inverse', 'se3_compose', 'se3_apply', 'rotmat_to_quat_xyzw',
    'quat_xyzw_to_rotmat', 'rotvec_to_rotmat', 'rotmat_to_rotvec', 'rotation_angle',
    'rotation_between', 'pose_error', 'skew',
]

_EPS = 1e-12


def _float(a) -> np.ndarray:
    a = np.asarray(a)
    return a if np.issubdtype(a.dtype, np.floating) else a.astype(np.float64)


def se3_from_rt(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Build ``[..., 4, 4]`` poses from rotations ``[..., 3, 3]`` and translations ``[..., 3]``."""
    R, t = _float(R), _float(t)
    T = np.zeros(R.shape[:-2] + (4, 4), dtype=np.result_type(R, t))
    T[..., :3, :3] = R
    T[..., :3, 3] = t
    T[..., 3, 3] = 1.0
    return T


def se3_inverse(T: np.ndarray) -> np.ndarray:
    """Inverse of rigid poses ``[..., 4, 4]`` (``T_b_a`` from ``T_a_b``), using R^T, not inv()."""
    T = _float(T)
    Rt = np.swapaxes(T[..., :3, :3], -1, -2)
    return se3_from_rt(Rt, -np.einsum('...ij,...j->...i', Rt, T[..., :3, 3]))


def se3_compose(T_a_b: np.ndarray, T_b_c: np.ndarray) -> np.ndarray:
    """``T_a_c = T_a_b @ T_b_c`` for ``[..., 4, 4]`` poses (broadcasting batch dims)."""
    return _float(T_a_b) @ _float(T_b_c)


def se3_apply(T_a_b: np.ndarray, points_b: np.ndarray) -> np.ndarray:
    """Map points ``[..., 3]`` from frame b into frame a with one pose ``[4, 4]``.

    NaN points stay NaN. The result has the dtype of ``points_b`` (poses are kept in float64
    elsewhere; casting the 3x4 block first keeps float32 maps float32 and fast).
    """
    points_b = _float(points_b)
    T = np.asarray(T_a_b, dtype=points_b.dtype)
    # A C-contiguous R^T keeps matmul on BLAS (a transposed view falls back to a loop ~5x
    # slower), and adding t tiled along a long row avoids NumPy's slow broadcast of a
    # length-3 inner axis (~4x) on [H, W, 3] maps.
    out = points_b @ np.ascontiguousarray(T[:3, :3].T)
    if out.ndim >= 2 and out.flags.c_contiguous and out.shape[-2] > 8:
        rows = out.reshape(-1, out.shape[-2] * 3)
        rows += np.tile(T[:3, 3], out.shape[-2])
    else:
        out += T[:3, 3]
    return out


def rotmat_to_quat_xyzw(R: np.ndarray) -> np.ndarray:
    """Rotation matrices ``[..., 3, 3]`` -> unit quaternions ``[..., 4]`` (x, y, z, w), w >= 0.

    Uses the largest-diagonal branch (Shepperd) so no branch divides by a value near zero.
    """
    R = _float(R)
    batch = R.shape[:-2]
    m = R.reshape(-1, 3, 3)
    tr = np.trace(m, axis1=1, axis2=2)
    # Candidates 4*q_k^2 for k = x, y, z, w; pick the largest per matrix for stability.
    cand = np.stack([1 + 2 * m[:, 0, 0] - tr, 1 + 2 * m[:, 1, 1] - tr,
                     1 + 2 * m[:, 2, 2] - tr, 1 + tr], axis=1)
    k = np.argmax(cand, axis=1)
    q = np.empty((m.shape[0], 4), dtype=R.dtype)
    s = 2 * np.sqrt(np.maximum(cand[np.arange(len(k)), k], _EPS))  # = 4 |q_k|
    for idx in range(4):
        sel = k == idx
        if not np.any(sel):
            continue
        ms, ss = m[sel], s[sel]
        x = np.empty((len(ss), 4), dtype=R.dtype)
        if idx == 0:
            x[:, 0] = ss / 4
            x[:, 1] = (ms[:, 0, 1] + ms[:, 1, 0]) / ss
            x[:, 2] = (ms[:, 0, 2] + ms[:, 2, 0]) / ss
            x[:, 3] = (ms[:, 2, 1] - ms[:, 1, 2]) / ss
        elif idx == 1:
            x[:, 0] = (ms[:, 0, 1] + ms[:, 1, 0]) / ss
            x[:, 1] = ss / 4
            x[:, 2] = (ms[:, 1, 2] + ms[:, 2, 1]) / ss
            x[:, 3] = (ms[:, 0, 2] - ms[:, 2, 0]) / ss
        elif idx == 2:
            x[:, 0] = (ms[:, 0, 2] + ms[:, 2, 0]) / ss
            x[:, 1] = (ms[:, 1, 2] + ms[:, 2, 1]) / ss
            x[:, 2] = ss / 4
            x[:, 3] = (ms[:, 1, 0] - ms[:, 0, 1]) / ss
        else:
            x[:, 0] = (ms[:, 2, 1] - ms[:, 1, 2]) / ss
            x[:, 1] = (ms[:, 0, 2] - ms[:, 2, 0]) / ss
            x[:, 2] = (ms[:, 1, 0] - ms[:, 0, 1]) / ss
            x[:, 3] = ss / 4
        q[sel] = x
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q[q[:, 3] < 0] *= -1  # canonical hemisphere: q and -q are the same rotation
    return q.reshape(batch + (4,))


def quat_xyzw_to_rotmat(q: np.ndarray) -> np.ndarray:
    """Quaternions ``[..., 4]`` (x, y, z, w), normalised here, -> rotations ``[..., 3, 3]``."""
    q = _float(q)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    x, y, z, w = np.moveaxis(q, -1, 0)
    R = np.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], axis=-1)
    return R.reshape(q.shape[:-1] + (3, 3))


def skew(vectors: np.ndarray) -> np.ndarray:
    """Cross-product matrices ``[..., 3, 3]`` of vectors ``[..., 3]``: ``skew(a) @ b ==
    cross(a, b)``."""
    v = _float(vectors)
    x, y, z = np.moveaxis(v, -1, 0)
    zero = np.zeros_like(x)
    return np.stack([zero, -z, y, z, zero, -x, -y, x, zero], axis=-1).reshape(
        v.shape[:-1] + (3, 3))


def rotvec_to_rotmat(rotvec: np.ndarray) -> np.ndarray:
    """Rotation vectors ``[..., 3]`` (radians) -> rotations ``[..., 3, 3]`` (Rodrigues).

    Below 1e-8 rad the series sin(a)/a ~ 1, (1-cos a)/a^2 ~ 1/2 avoids 0/0.
    """
    v = _float(rotvec)
    a = np.linalg.norm(v, axis=-1)[..., None, None]
    small = a < 1e-8
    a_safe = np.where(small, 1.0, a)
    s = np.where(small, 1.0, np.sin(a_safe) / a_safe)
    c = np.where(small, 0.5, (1 - np.cos(a_safe)) / a_safe ** 2)
    Kx = skew(v)
    eye = np.broadcast_to(np.eye(3, dtype=v.dtype), Kx.shape)
    return eye + s * Kx + c * (Kx @ Kx)


def rotmat_to_rotvec(R: np.ndarray) -> np.ndarray:
    """Rotations ``[..., 3, 3]`` -> rotation vectors ``[..., 3]`` with angle in [0, pi].

    Goes through the quaternion, whose ``2 * atan2(|xyz|, w)`` is accurate at every angle
    (arccos of the trace loses precision near 0 and pi).
    """
    q = rotmat_to_quat_xyzw(R)
    n = np.linalg.norm(q[..., :3], axis=-1, keepdims=True)
    angle = 2 * np.arctan2(n, q[..., 3:])
    # angle / sin(angle / 2) -> 2 as n -> 0
    factor = np.where(n < 1e-12, 2.0, angle / np.maximum(n, 1e-300))
    return q[..., :3] * factor


def rotation_angle(R: np.ndarray) -> np.ndarray:
    """Rotation angle in radians, ``[...]``, of rotation matrices ``[..., 3, 3]``."""
    return np.linalg.norm(rotmat_to_rotvec(R), axis=-1)


def rotation_between(R_a: np.ndarray, R_b: np.ndarray, fraction: float) -> np.ndarray:
    """The rotation ``fraction`` of the way from ``R_a`` (0) to ``R_b`` (1) along the SO(3)
    geodesic, ``[3, 3]``: quaternion slerp along the shortest arc (as tf2 interpolates)."""
    R_a = _float(R_a)
    return R_a @ rotvec_to_rotmat(fraction * rotmat_to_rotvec(R_a.T @ _float(R_b)))


def pose_error(T_est: np.ndarray, T_ref: np.ndarray) -> tuple[float, float]:
    """Translation error (units of the poses) and rotation error (degrees) of one pose."""
    dT = se3_compose(se3_inverse(T_ref), T_est)
    return (float(np.linalg.norm(np.asarray(T_est)[:3, 3] - np.asarray(T_ref)[:3, 3])),
            float(np.degrees(rotation_angle(dT[:3, :3]))))
