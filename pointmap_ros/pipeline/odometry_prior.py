"""Odometry prior: the robot's own estimate of the camera motion, fused with the maps' one.

A robot's odometry (wheels, VIO, IMU; TF ``odom -> camera`` at each image's stamp) drifts
slowly but does not fail on a scene full of movers or on a weak model, which is where the
pose from the point maps (PnP on static pixels) fails. The maps' pose is exact when the maps
are; odometry is right to within its drift. Per frame, for the keyframe pair:

1. **Relative motion**: ``T_kf_cam`` in metres from the two frames' odometry poses
   (:func:`relative_odometry`); only the relative pose is used, so the odometry frame's
   origin and its drift before the keyframe do not matter.
2. **Units**: the window's units are not metres for an up-to-scale engine.
   :func:`scale_sample` measures window units per metre on each pair whose translation
   shows as parallax: the static pixels' points against where the current camera sees them,
   under the odometry's rotation and translation direction; the window uses the median of
   its samples weighted by their parallax (one scale per window). A metric window (depth
   fused, metric engine) is 1.
3. **Fusion** (:func:`fuse_pose`): when maps and odometry agree -- rotations within
   ``odometry_max_disagreement_deg`` and translations within
   ``odometry_max_disagreement_rel`` of the scene depth -- the pose is their blend with
   weight ``odometry_weight`` on odometry (rotation on the geodesic, translation linear):
   over a keyframe interval odometry's drift is millimetres, while the maps' pose carries
   the model's noise, so odometry gets most weight by default, and the maps keep the
   estimate honest where odometry has a bias. When they disagree, one of them is wrong (a
   wheel slipped, or movers pulled PnP): the pose that better explains the static pixels'
   points -- the smaller median reprojection error of ``P_t(t)`` of the pixels judged
   static -- is used alone; the image decides, not a fixed preference. Without a scale yet
   (the first frames of an up-to-scale window) only the rotations are blended. A camera the
   images show still is handled in ego_motion.py (``_pose``): it keeps whichever of
   "unmoved" and the odometry's pose better explains its static pixels.

Frames without odometry (or whose keyframe has none) use the maps alone; so do all frames
when ``odometry_prior`` is off.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pointmap_ros.geometry.camera import project
from pointmap_ros.geometry.transforms import (
    rotation_angle, rotation_between, se3_compose, se3_from_rt, se3_inverse)
from pointmap_ros.pipeline.pair import PairView

__all__ = ['OdometryPrior', 'relative_odometry', 'scale_sample', 'parallax_points',
           'window_units_per_metre', 'fuse_pose', 'reprojection_error']

#: ``PipelineOutput.odometry`` values.
NO_ODOMETRY, FUSED, ODOMETRY_WON, MAPS_WON = 'none', 'fused', 'odometry', 'maps'


@dataclass(frozen=True)
class OdometryPrior:
    """The odometry's motion of the current camera since the keyframe.

    Attributes:
        T_kf_cam_m: ``[4, 4]`` pose of the current camera in the keyframe camera, metres.
        window_per_metre: window units per metre (None while the window has no scale yet).
    """

    T_kf_cam_m: np.ndarray
    window_per_metre: float | None

    @property
    def T_kf_cam(self) -> np.ndarray | None:
        """The prior in window units (None while the scale is unknown)."""
        if self.window_per_metre is None:
            return None
        pose = self.T_kf_cam_m.copy()
        pose[:3, 3] *= self.window_per_metre
        return pose


def relative_odometry(T_odom_ref: np.ndarray | None, T_odom_cam: np.ndarray | None
                      ) -> np.ndarray | None:
    """``T_ref_cam`` in metres from two odometry readings (None when either is missing)."""
    if T_odom_ref is None or T_odom_cam is None:
        return None
    return se3_compose(se3_inverse(T_odom_ref), T_odom_cam)


def scale_sample(points_kf: np.ndarray, pixels: np.ndarray, K: np.ndarray,
                 T_kf_cam_m: np.ndarray, min_parallax_px: float,
                 expected_units_per_metre: float | None = None
                 ) -> tuple[float, float] | None:
    """``(window units per metre, parallax px per unit of it)`` measured on one pair from
    the parallax of static points.

    ``points_kf`` ``[N, 3]`` (window units, keyframe camera) are seen at ``pixels``
    ``[N, 2]`` by the current camera, which the odometry puts at ``T_kf_cam_m`` (metres).
    With the rotation fixed by the odometry, each point's projection is linear in the one
    unknown ``lam`` (window units per metre): writing ``n`` for the normalised pixel,
    ``A = R^T X`` and ``b = R^T t``, ``n A_z - A_xy = lam (n b_z - b_xy)``. Each point
    gives ``lam``; the estimate is their median weighted by the inverse variance of a pixel
    error, ``(|n b_z - b_xy| / A_z)^2`` (far points and points near the epipole say
    little). Only the points and the odometry enter, not the maps' own relative pose (a
    PnP translation confuses a sideways step with a turn when the view is narrow).

    The second value, the median of ``f |n b_z - b_xy| / A_z``, times the scale is the
    translation's parallax in pixels; it does not depend on the estimate, so the window can
    weigh its samples by it (:func:`window_units_per_metre`) and gate them on it without
    favouring the samples that noise made large (a sample's own estimate would: a rotation
    jitter that inflates it also inflates its apparent parallax). None when fewer than 16
    points or the parallax -- with ``expected_units_per_metre`` (the window's scale so far)
    when given, else this sample's -- is below ``min_parallax_px``: the pixels would not
    measure the scale.
    """
    finite = np.all(np.isfinite(points_kf), axis=1)
    if np.count_nonzero(finite) < 16:
        return None
    rotation, translation = T_kf_cam_m[:3, :3], T_kf_cam_m[:3, 3]
    rotated = points_kf[finite].astype(np.float64) @ rotation  # rows: R^T X
    moved = rotation.T @ translation
    normalised = (pixels[finite] - K[:2, 2]) / np.diag(K)[:2]
    measured = normalised * rotated[:, 2:3] - rotated[:, :2]
    direction = normalised * moved[2] - moved[:2]
    direction_sq = np.sum(direction * direction, axis=1)
    usable = (direction_sq > 0) & (rotated[:, 2] > 0)
    if np.count_nonzero(usable) < 16:
        return None
    samples = np.sum(measured * direction, axis=1)[usable] / direction_sq[usable]
    weights = direction_sq[usable] / rotated[usable, 2] ** 2
    estimate = _weighted_median(samples, weights)
    parallax_per_unit = float(np.median(K[0, 0] * np.sqrt(weights)))
    if not np.isfinite(estimate) or estimate <= 0:
        return None
    if parallax_per_unit * (expected_units_per_metre or estimate) < min_parallax_px:
        return None
    return float(estimate), parallax_per_unit


def window_units_per_metre(samples) -> float | None:
    """The window's scale from its :func:`scale_sample` samples: their median weighted by
    the square of their parallax per unit (the inverse variance of a constant flow error;
    None without samples)."""
    if not samples:
        return None
    values, parallax = np.array(samples, np.float64).T
    return _weighted_median(values, parallax ** 2)


def parallax_points(keyframe_pair: PairView, static: np.ndarray, K: np.ndarray,
                    stride: int) -> tuple[np.ndarray, np.ndarray]:
    """``(points_kf [N, 3], pixels [N, 2])`` of :func:`scale_sample` from the static
    current pixels on the work grid.

    With correspondences: each pixel's point at the depth the maps give it in the keyframe
    camera (``P_t(t)``: the map that is published, so the metres fit what is published),
    on the exact sub-pixel ray of its match in the keyframe -- the 2D flow carries the
    parallax, the maps only the depth, not their own (weak) relative pose. DIS shrinks
    sub-pixel motions by a few percent (its smoothness term); with exact flow the scale is
    exact. Without correspondences: ``P_t(t)`` as the network placed it.
    """
    height, width = static.shape
    rows, cols = np.nonzero(static[::stride, ::stride])
    rows, cols = rows * stride, cols * stride
    pixels = np.stack([cols, rows], axis=1).astype(np.float64)
    flow = keyframe_pair.pixel_flow
    if flow is None:
        return keyframe_pair.j_tj[rows, cols], pixels
    keep = flow.backward_valid[rows, cols]
    rows, cols, pixels = rows[keep], cols[keep], pixels[keep]
    matches = pixels + flow.backward[rows, cols]
    rays = np.concatenate([(matches - K[:2, 2]) / np.diag(K)[:2],
                           np.ones((len(matches), 1))], axis=1)
    return rays * keyframe_pair.j_tj[rows, cols, 2:3], pixels


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """The value at which the cumulative weight of the sorted ``values`` reaches half."""
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, 0.5 * cumulative[-1])])


def reprojection_error(T_kf_cam: np.ndarray, points_kf: np.ndarray, static: np.ndarray,
                       K: np.ndarray, stride: int) -> float:
    """Median distance (px) between each static pixel and the projection of its point
    ``points_kf`` (``P_t(t)`` in the keyframe camera) under ``T_kf_cam``; inf without any."""
    points = points_kf[::stride, ::stride]
    mask = static[::stride, ::stride] & np.isfinite(points[..., 2])
    if not mask.any():
        return float('inf')
    rows, cols = np.nonzero(mask)
    T_cam_kf = se3_inverse(T_kf_cam)
    points_cam = points[mask].astype(np.float64) @ T_cam_kf[:3, :3].T + T_cam_kf[:3, 3]
    in_front = points_cam[:, 2] > 1e-9
    if not in_front.any():
        return float('inf')
    pixels = project(points_cam[in_front], K)
    observed = np.stack([cols, rows], axis=1)[in_front] * stride
    return float(np.median(np.linalg.norm(pixels - observed, axis=1)))


def fuse_pose(T_map: np.ndarray | None, prior: OdometryPrior, points_kf: np.ndarray,
              static: np.ndarray, K: np.ndarray, scene_depth: float, weight: float,
              max_angle_deg: float, max_translation_rel: float, stride: int
              ) -> tuple[np.ndarray | None, str]:
    """``(T_kf_cam, decision)`` from the maps' pose ``T_map`` and the odometry ``prior``
    (module docstring, step 3); ``decision`` is one of ``'fused'``, ``'odometry'``,
    ``'maps'``. ``T_map`` None (PnP failed) leaves the odometry alone when its scale is
    known, else nothing (None, ``'none'``)."""
    T_odometry = prior.T_kf_cam
    if T_map is None:
        return (T_odometry, ODOMETRY_WON) if T_odometry is not None else (None, NO_ODOMETRY)
    R_map, R_odometry = T_map[:3, :3], prior.T_kf_cam_m[:3, :3]
    angle = float(np.degrees(rotation_angle(R_map.T @ R_odometry)))
    translation_gap = (0.0 if T_odometry is None
                       else float(np.linalg.norm(T_map[:3, 3] - T_odometry[:3, 3])))
    if angle <= max_angle_deg and translation_gap <= max_translation_rel * scene_depth:
        rotation = rotation_between(R_map, R_odometry, weight)
        translation = (T_map[:3, 3] if T_odometry is None
                       else (1 - weight) * T_map[:3, 3] + weight * T_odometry[:3, 3])
        return se3_from_rt(rotation, translation), FUSED
    if T_odometry is None:  # no scale: odometry cannot stand alone; rotate the maps' pose
        T_odometry = se3_from_rt(R_odometry, T_map[:3, 3])
    map_error = reprojection_error(T_map, points_kf, static, K, stride)
    odometry_error = reprojection_error(T_odometry, points_kf, static, K, stride)
    if odometry_error <= map_error:
        return T_odometry, ODOMETRY_WON
    return T_map, MAPS_WON
