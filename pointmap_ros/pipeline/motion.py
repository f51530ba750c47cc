"""Motion from correspondences: a pixel moves when its observed 2D motion disagrees with the
motion the camera induces (MonST3R's test, online and per pair).

For the current frame's pixel ``v`` and a reference frame, the optical flow says where ``v``
was in the reference image: ``v + F(v)``. Were the point static, it would have been at
``pi(K T_ref_cam X(v))``, with ``X(v)`` the current frame's own-frame point (its depth) and
``T_ref_cam`` the camera motion estimated from static pixels only. The distance between the
two, in pixels, is the *pose residual*: 0 for static points whatever the camera did, the
2D projection of the object's own motion otherwise. Depth errors along the viewing ray move
the induced position only by ``baseline / depth`` of them, so the test is far less
sensitive to poor maps than a 3D flow threshold.

Where the maps are unreliable even for that, the test falls back to the epipolar residual
of a RANSAC homography / fundamental-matrix fit of the flow itself
(:mod:`pointmap_ros.geometry.epipolar`), which needs no depth at all. The choice is made
per pair: the maps are trusted when the pose residual of the pixels the epipolar fit calls
static is small (``reliable_px``).

Thresholds adapt to the pair: ``max(min_px, noise_mult * median residual)`` over observed
pixels (most pixels are static, so the median is the noise level).

Motion along the viewing ray barely moves a point in the image (an object approaching the
camera by 1 % of its depth shifts by 1 % of its distance from the principal point): on the
held-out scenes two thirds of the moving pixels the 2D test missed moved mostly in depth.
Where the maps are trusted, the *depth residual* catches it: the relative difference
between the depth the pair's same-time map gives the current pixel in the reference camera
and the reference's own depth at the corresponding pixel, ``|z_j(t_j) - z_j(t_i)| / z``,
with its own noise-adaptive threshold. It is a statement about the maps, so it is not used
when the test falls back to the epipolar fit.

The aperture problem: optical flow is only measured across the image gradient. Along a
stripe (a floor pattern, a striped ball) the flow's component parallel to the stripe is a
guess, and a residual in that direction is no evidence of motion. The pose residual
vector ``r`` is therefore measured in the metric of the local structure tensor ``J``
(gradients summed over a small window), ``|r|_J = sqrt(r^T J r / lambda_max(J))``: the full
length on isotropic texture, only the component across the stripes on a 1D pattern, and
no evidence at all (unobserved) where the image is flat.

Flat, untextured surfaces (a plain-coloured box's faces), occlusions and the image border
leave the optical flow with nothing to say, but where the maps are precise the geometry
still does: the *free-space test* puts each such pixel's point where it would have been
had it stood still, in the reference camera, and asks whether the reference saw *past*
that place (its nearest recorded depth there is farther by more than the depth test's
threshold). Then the point was not there: it moved. The test is one-sided: a reference that
saw something nearer may just have had the point hidden (a background pixel an object
uncovered), which is no evidence either way. It judges where an object moved onto ground
the reference saw empty and where it moved towards the camera; a face sliding within its
own plane shows no free space inside its outline, and the instance stage completes it
(``pipeline.instances``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from pointmap_ros.geometry.camera import pixel_grid, project
from pointmap_ros.geometry.epipolar import CameraFlowModel, fit_camera_flow
from pointmap_ros.geometry.pointmap import median, vector_norm
from pointmap_ros.geometry.transforms import se3_apply

__all__ = ['FlowMotion', 'ApertureMetric', 'aperture_metric', 'camera_flow_model',
           'epipolar_residual', 'pose_residual', 'depth_residual', 'flow_motion',
           'camera_still', 'trim_occlusion_halo', 'fill_by_colour', 'local_mean']


@dataclass(frozen=True)
class FlowMotion:
    """The correspondence-based motion decision of one pair (current frame's pixels).

    Attributes:
        moving: ``[H, W]`` bool, within ``observed``.
        observed: ``[H, W]`` bool, pixels the test could judge (valid point, consistent flow).
        residual: ``[H, W]`` float32 pixels, the residual the decision used (NaN elsewhere).
        threshold: pixels.
        test: ``'pose'`` (depth + estimated camera motion) or ``'epipolar'``.
        seen_through: ``[H, W]`` bool, pixels outside ``observed`` the free-space test
            calls moving (None when it did not run: no residual, or not the pose test).
        precise: the pose test decided on maps as precise as the optical flow (their
            static pixels' pose residual no larger than its own noise).
    """

    moving: np.ndarray
    observed: np.ndarray
    residual: np.ndarray
    threshold: float
    test: str
    seen_through: np.ndarray | None = None
    precise: bool = False


@dataclass(frozen=True)
class ApertureMetric:
    """The structure tensor of an image, normalised by its largest eigenvalue.

    Attributes:
        xx, xy, yy: ``[H, W]`` float32 components of ``J / lambda_max(J)``.
        textured: ``[H, W]`` bool, the window has a gradient at all (else flow is a guess).
    """

    xx: np.ndarray
    xy: np.ndarray
    yy: np.ndarray
    textured: np.ndarray

    @property
    def isotropy(self) -> np.ndarray:
        """``[H, W]`` ``lambda_min / lambda_max`` of ``J``: 0 on stripes and flat image, 1 on
        texture that fixes both flow components."""
        return np.clip(self.xx + self.yy - 1.0, 0.0, 1.0)

    def resized(self, size: tuple[int, int]) -> 'ApertureMetric':
        """The metric at ``size = (H, W)`` pixels: tensor components averaged down (bilinear
        up); a pixel is textured when most of the area it covers is."""
        height, width = size
        if self.textured.shape == (height, width):
            return self
        interpolation = (cv2.INTER_AREA if width < self.textured.shape[1]
                         else cv2.INTER_LINEAR)
        xx, xy, yy = (cv2.resize(component, (width, height), interpolation=interpolation)
                      for component in (self.xx, self.xy, self.yy))
        textured = cv2.resize(self.textured.astype(np.float32), (width, height),
                              interpolation=interpolation) >= 0.5
        return ApertureMetric(xx, xy, yy, textured)

    def length(self, vectors: np.ndarray) -> np.ndarray:
        """``[H, W]`` float32 ``|r|_J`` of ``[H, W, 2]`` vectors (module docstring)."""
        x, y = vectors[..., 0], vectors[..., 1]
        squared = self.xx * x * x + 2 * self.xy * x * y + self.yy * y * y
        return np.sqrt(np.maximum(squared, 0)).astype(np.float32)


def aperture_metric(grey: np.ndarray, min_gradient: float,
                    window: int = 7) -> ApertureMetric:
    """:class:`ApertureMetric` of a uint8 grey image (the one the optical flow was measured
    on: flatness is a property of the flow's pixels; :meth:`ApertureMetric.resized` brings it
    to the decisions' resolution).

    ``min_gradient``: RMS intensity gradient (grey levels per pixel) over the window below
    which the window counts as flat (``PipelineConfig.flow_min_gradient``).
    """
    image = grey.astype(np.float32)
    gx = cv2.Sobel(image, cv2.CV_32F, 1, 0, ksize=3) / 8
    gy = cv2.Sobel(image, cv2.CV_32F, 0, 1, ksize=3) / 8
    size = (window, window)
    jxx = cv2.boxFilter(gx * gx, -1, size)
    jxy = cv2.boxFilter(gx * gy, -1, size)
    jyy = cv2.boxFilter(gy * gy, -1, size)
    trace = jxx + jyy
    largest = 0.5 * (trace + np.sqrt(np.square(jxx - jyy) + 4 * np.square(jxy)))
    textured = largest > min_gradient ** 2
    scale = np.where(textured, 1.0 / np.maximum(largest, 1e-12), 0.0).astype(np.float32)
    return ApertureMetric(jxx * scale, jxy * scale, jyy * scale, textured)


#: Correspondences a camera model is fitted to (:func:`camera_flow_model`).
_FIT_POINTS = 2000


def camera_flow_model(flow: np.ndarray, observed: np.ndarray, stride: int,
                      threshold_px: float, seed: int) -> CameraFlowModel | None:
    """RANSAC camera model of ``flow`` ``[H, W, 2]`` on the observed pixels of the work grid.

    The fit uses a random 2000 of them (:data:`_FIT_POINTS`), drawn before any coordinates
    are gathered (gathering all of them cost as much as the fit). Fewer would be faster and
    scored the same on the generated sequences (shipped model, validation: motion IoU 0.558
    with 500, 0.560 with 2000), but not on the real clips: with 500 or 1000 the car clip,
    where the camera pans with the car, lost the car's mask in its middle frame (5.9 % of
    the image moving -> 4.8 %) and the stroller clip's mask grew (8.5 % -> 10.9 %).
    """
    sub = observed[::stride, ::stride]
    picked = np.flatnonzero(sub)
    if len(picked) > _FIT_POINTS:
        picked = picked[np.random.default_rng(seed).choice(len(picked), _FIT_POINTS,
                                                           replace=False)]
    rows, cols = np.divmod(picked, sub.shape[1])
    rows, cols = rows * stride, cols * stride
    src = np.stack([cols, rows], axis=-1).astype(np.float64)
    dst = src + flow[rows, cols].astype(np.float64)
    return fit_camera_flow(src, dst, threshold_px)


def epipolar_residual(model: CameraFlowModel, flow: np.ndarray) -> np.ndarray:
    """``[H, W]`` float32 residual (pixels) of every pixel's flow under ``model``."""
    src = pixel_grid(*flow.shape[:2], np.float32)
    return model.residual(src, src + flow).astype(np.float32)


def pose_residual(points_cam: np.ndarray, T_ref_cam: np.ndarray, K: np.ndarray,
                  flow_to_ref: np.ndarray, aperture: ApertureMetric) -> np.ndarray:
    """``[H, W]`` float32 pixels between where the flow puts each current pixel in the
    reference image and where a static point at ``points_cam`` would be, measured across the
    image structure (``aperture``); NaN where the point is invalid or behind the reference
    camera."""
    H, W = flow_to_ref.shape[:2]
    # float32 throughout: its rounding (~1e-5 px at these depths) is far below any threshold.
    induced = project(se3_apply(T_ref_cam, points_cam.astype(np.float32, copy=False)), K)
    observed = pixel_grid(H, W, np.float32) + flow_to_ref
    return aperture.length((induced - observed).astype(np.float32, copy=False))


def depth_residual(points_now: np.ndarray, points_before: np.ndarray) -> np.ndarray:
    """``[H, W]`` float32 relative depth change ``|z_now - z_before| / z_before`` of the
    current pixels, both ``[H, W, 3]`` in the reference camera (NaN where either is invalid
    or not in front of it)."""
    depth_now = points_now[..., 2].astype(np.float32)
    depth_before = points_before[..., 2].astype(np.float32)
    with np.errstate(invalid='ignore', divide='ignore'):
        relative = np.abs(depth_now - depth_before) / depth_before
    return np.where((depth_before > 0) & (depth_now > 0), relative, np.float32(np.nan))


def free_space_residual(points_ref: np.ndarray, reference_depth: np.ndarray,
                        K: np.ndarray) -> np.ndarray:
    """``[...]`` float32 how far the reference camera saw *past* each point had it stood
    still: ``(z_seen - z) / z``, with ``z`` the depth of ``points_ref`` (current points in
    the reference camera, ``[..., 3]``: an image or the few pixels to judge) and ``z_seen``
    the nearest depth the reference recorded (``reference_depth``, ``[H, W]``, NaN =
    unknown) within one pixel of where the point projects. NaN where the point is invalid,
    behind the camera or projects outside the reference image or onto no known depth.

    Positive values say the reference looked through the place the point would occupy, so
    the point was not there: it moved (or the maps err). Negative values carry no evidence
    (the point may have been hidden behind something nearer), and the nearest depth of the
    neighbourhood keeps a static point next to a depth edge from reading the far side of
    the edge after sub-pixel rounding. Unlike the other residuals it needs no optical flow,
    so it judges flat, untextured surfaces too.
    """
    height, width = reference_depth.shape
    nearest_seen = cv2.erode(np.where(np.isfinite(reference_depth), reference_depth,
                                      np.float32(np.inf)).astype(np.float32, copy=False),
                             np.ones((3, 3), np.uint8))
    points = np.asarray(points_ref, np.float32)
    depth = points[..., 2]
    # The projection inline (camera.project stacks both coordinates in float64).
    with np.errstate(divide='ignore', invalid='ignore'):
        inverse = np.where(depth > 0, np.float32(1.0) / depth, np.float32(np.nan))
        columns = np.rint((K[0, 0] * points[..., 0] + K[0, 1] * points[..., 1]) * inverse
                          + K[0, 2])
        rows = np.rint(K[1, 1] * points[..., 1] * inverse + K[1, 2])
        inside = (columns >= 0) & (columns < width) & (rows >= 0) & (rows < height)
    seen = np.full(depth.shape, np.inf, np.float32)
    seen[inside] = nearest_seen[rows[inside].astype(np.intp), columns[inside].astype(np.intp)]
    with np.errstate(invalid='ignore', divide='ignore'):
        residual = (seen - depth) * inverse
    return np.where(np.isfinite(seen), residual, np.float32(np.nan)).astype(np.float32,
                                                                          copy=False)


def camera_still(flow: np.ndarray, static: np.ndarray, stride: int, still_px: float) -> bool:
    """True when the static pixels' flow is below ``still_px`` (median magnitude): the
    camera did not move between the two frames, whatever a noisy pose estimate says."""
    sub = flow[::stride, ::stride][static[::stride, ::stride]]
    if len(sub) < 16:
        return False
    return median(vector_norm(sub)) < still_px


#: :func:`flow_motion`: maps whose static pixels miss the induced flow by more than this
#: multiple of the optical flow's own noise (the :func:`_static_noise` ratio) have an error
#: of their own, which for a network's maps stays on the same surface from frame to frame.
#: Validation pairs (oracle-two-map, shipped model): exact maps 0.5 (median), 97 % at most
#: 1.5; the shipped model 4.7, 99 % above 1.5.
_STEADY_ERROR_RATIO = 1.5


def flow_motion(pose_res: np.ndarray | None, epipolar_res: np.ndarray | None,
                observed: np.ndarray, *, stride: int, reliable_px: float,
                inlier_px: float, noise_mult: float, min_px: float,
                filter_size: int = 5, was_moving: np.ndarray | None = None,
                hysteresis: float = 1.0, depth_res: np.ndarray | None = None,
                min_depth_rel: float = 0.01,
                reliable_ratio: float | None = None,
                min_depth_rel_precise: float | None = None,
                free_space_res: Callable[[], np.ndarray] | None = None,
                measured_depth: bool = False) -> FlowMotion:
    """Decide motion from the residuals (any may be None when unavailable).

    The pose residual is used when the maps are reliable: its median over the pixels the
    epipolar fit calls static (``epipolar_res < inlier_px``) is at most ``reliable_px`` and,
    when ``reliable_ratio`` is given, at most that multiple of the epipolar residual's median
    over the same pixels; else the epipolar residual. The epipolar fit's residual is the
    optical flow's own noise floor: maps that miss the static pixels' flow by several times
    that floor have depth errors the test would flag as motion (on validation sequences the
    ratio was 0.2-1.0 with exact maps, up to 3 with a pose fused with odometry, and 1.9-8 with
    the shipped model, whose pose test produced three times the false motion of the epipolar
    test at no gain in recall).
    Threshold ``max(min_px, noise_mult * median)`` over ``observed``.
    With the pose test, a pixel also moves when its depth residual exceeds
    ``max(min_depth_rel, noise_mult * median)``, and pixels without a pose residual (no
    confident point) are judged by the epipolar residual against its own threshold. Where
    the maps are precise, their static pixels' pose residual no larger than the optical
    flow's own noise (the ratio above at most 1), the depth test's floor is
    ``min_depth_rel_precise`` instead (when given): the depth residual is then as exact as
    the correspondence that reads it, and a slow object moving along the viewing rays
    changes its depth by less than ``min_depth_rel`` per frame (validation: oracle-two-map
    motion IoU 0.952 -> 0.958 at 1 % against 2 %, shipped model with a depth camera 0.839 ->
    0.842; the shipped model's outputs without one identical).
    Where the maps are precise, pixels outside ``observed`` are judged by the free-space
    residual (:func:`free_space_residual`; ``free_space_res`` computes it, called only
    then: on other pairs it would be work thrown away), against the depth test's threshold
    (both measure how far two frames' depths of a static point disagree; the depth
    residual's noise is measured on textured pixels, where static ones dominate, while the
    unobserved ones may be mostly a plain object's faces): ``seen_through``. It reads the
    maps' depths where no correspondence checks them, so merely trusted maps do not run it
    (validation, shipped model: flow error over zero flow's 1.50 -> 1.69 when they did;
    every row with exact maps or a depth camera gained either way).
    Pixels in ``was_moving`` need only ``hysteresis`` of each threshold, except in the pose
    and depth tests on trusted maps whose static pixels miss the induced flow by more than
    :data:`_STEADY_ERROR_RATIO` times the flow's own noise and that carry no depth sensor's
    measurements (``measured_depth``): a network's estimate, whose errors stay on the same
    static surface from frame to frame (validation, shipped model: motion IoU 0.723 ->
    0.730, flow error over zero flow's 1.50 -> 1.34; exact maps within 0.002 of before, a
    depth camera identical).
    """
    test, residual = 'pose', pose_res
    noise = None  # (pose, optical flow) noise of the static pixels, when both are known
    if epipolar_res is not None:
        if pose_res is None:
            test, residual = 'epipolar', epipolar_res
        else:
            noise = _static_noise(pose_res, epipolar_res, observed, stride, inlier_px)
            if not _maps_reliable(noise, reliable_px, reliable_ratio):
                test, residual = 'epipolar', epipolar_res
    if residual is None:
        return FlowMotion(np.zeros_like(observed), np.zeros_like(observed),
                          np.full(observed.shape, np.nan, np.float32), float('inf'), 'none')
    judged = observed & np.isfinite(residual)
    residual, threshold = _filtered_threshold(residual, judged, stride, filter_size,
                                              noise_mult, min_px)
    precise = (min_depth_rel_precise is not None and noise is not None
               and noise[0] <= noise[1])
    # Hysteresis holds a slow object through frames where its residual dips below the
    # threshold. The flow's own noise changes from frame to frame, and so does a depth
    # sensor's; a network's depth error does not: it sits on the same static surface frame
    # after frame, and hysteresis would keep a place it once pushed over the threshold
    # moving (shipped model, a wall beside a moving picture, 20 frames). So the pose and
    # depth tests on maps with an error of their own decide frame by frame.
    steady_map_error = (test == 'pose' and noise is not None
                        and noise[0] > _STEADY_ERROR_RATIO * noise[1] and not measured_depth)
    map_hysteresis = 1.0 if steady_map_error else hysteresis
    moving = _exceeds(residual, judged, threshold, was_moving, map_hysteresis)
    depth_floor = min_depth_rel_precise if precise else min_depth_rel
    depth_threshold, seen_through = depth_floor, None
    if test == 'pose' and depth_res is not None:
        judged_depth = observed & np.isfinite(depth_res)
        depth_res, depth_threshold = _filtered_threshold(depth_res, judged_depth, stride,
                                                         filter_size, noise_mult, depth_floor)
        moving |= _exceeds(depth_res, judged_depth, depth_threshold, was_moving,
                           map_hysteresis)
    if test == 'pose' and precise and free_space_res is not None:
        seen_through = _seen_through(free_space_res(), observed, depth_threshold, was_moving,
                                     hysteresis)
    if test == 'pose' and epipolar_res is not None:
        # Pixels without a pose residual (no confident point: often the moving object a
        # weak model is unsure of) are judged by the epipolar residual, at its own noise.
        without_point = observed & ~judged & np.isfinite(epipolar_res)
        if without_point.any():
            epipolar_res, epipolar_threshold = _filtered_threshold(
                epipolar_res, observed & np.isfinite(epipolar_res), stride, filter_size,
                noise_mult, min_px)
            moving |= _exceeds(epipolar_res, without_point, epipolar_threshold, was_moving,
                               hysteresis)
            judged = judged | without_point
    return FlowMotion(moving, judged, np.where(judged, residual, np.float32(np.nan)),
                      threshold, test, seen_through, test == 'pose' and precise)


def _seen_through(free_space_res: np.ndarray, observed: np.ndarray, threshold: float,
                  was_moving: np.ndarray | None, hysteresis: float) -> np.ndarray:
    """:func:`flow_motion`'s free-space decision on the pixels outside ``observed``: the
    positive side of the residual over the depth test's ``threshold`` (unfiltered: a
    median filter erased the few-pixel band an object uncovers per frame, and exact maps
    have no speckle to remove; the mask's small-region rule removes what noise leaves)."""
    unobserved = np.isfinite(free_space_res) & ~observed
    residual = np.where(unobserved, free_space_res, np.float32(0))
    return _exceeds(residual, unobserved, threshold, was_moving, hysteresis)
def _static_noise(pose_res: np.ndarray, epipolar_res: np.ndarray, observed: np.ndarray,
                  stride: int, inlier_px: float) -> tuple[float, float] | None:
    """``(pose, epipolar)`` median residuals over the observed pixels the epipolar fit calls
    static (``epipolar_res < inlier_px``) that have a pose residual, on the work grid; None
    with fewer than 32 such pixels."""
    static = observed[::stride, ::stride] & (epipolar_res[::stride, ::stride] < inlier_px)
    pose_static = pose_res[::stride, ::stride][static]
    with_point = np.isfinite(pose_static)
    if np.count_nonzero(with_point) < 32:
        return None
    return (median(pose_static[with_point]),
            median(epipolar_res[::stride, ::stride][static][with_point]))


def _maps_reliable(noise: tuple[float, float] | None, reliable_px: float,
                   reliable_ratio: float | None) -> bool:
    """:func:`flow_motion`'s choice of the pose test, from :func:`_static_noise`."""
    if noise is None:
        return False
    pose_noise, flow_noise = noise
    if pose_noise > reliable_px:
        return False
    return reliable_ratio is None or pose_noise <= reliable_ratio * flow_noise


def _filtered_threshold(residual: np.ndarray, judged: np.ndarray, stride: int,
                        filter_size: int, noise_mult: float, floor: float
                        ) -> tuple[np.ndarray, float]:
    """(median-filtered residual, ``max(floor, noise_mult * median)`` over ``judged``)."""
    if filter_size > 1:
        # Optical flow errors are heavy-tailed speckle; real motion covers whole surfaces.
        # A median over a small window keeps object borders and drops isolated misses.
        residual = _median_blur(np.where(judged, residual, np.float32(0)), filter_size, floor)
    sub = residual[::stride, ::stride][judged[::stride, ::stride]]
    noise = median(sub) if sub.size else 0.0
    return residual, max(floor, noise_mult * noise)


def _median_blur(residual: np.ndarray, filter_size: int, floor: float) -> np.ndarray:
    """``filter_size`` median filter of a non-negative ``[H, W]`` residual, in 16-bit steps
    of 1/256 of the decision ``floor`` (OpenCV's 16-bit median is 2-3x faster than its float
    one at these sizes): the steps are far below any threshold, and the values saturate at
    256 floors, far above any."""
    if not floor > 0:
        return cv2.medianBlur(residual.astype(np.float32), filter_size)
    unit = floor / 256.0
    steps = np.clip(residual * np.float32(1.0 / unit) + np.float32(0.5), 0, 65535)
    filtered = cv2.medianBlur(steps.astype(np.uint16), filter_size)
    return filtered.astype(np.float32) * np.float32(unit)


def _exceeds(residual: np.ndarray, judged: np.ndarray, threshold: float,
             was_moving: np.ndarray | None, hysteresis: float) -> np.ndarray:
    """Judged pixels over the threshold, or over ``hysteresis`` of it where they moved
    in the previous frame."""
    moving = judged & (residual > threshold)
    if was_moving is not None and hysteresis < 1.0:
        moving |= judged & was_moving & (residual > hysteresis * threshold)
    return moving


def trim_occlusion_halo(moving: np.ndarray, depth: np.ndarray, flow: np.ndarray,
                        jump_rel: float, width: int, drag_ratio: float = 1.5) -> np.ndarray:
    """``moving`` without the background ring optical flow drags along with a moving object.

    Flow is smooth across an object's silhouette, so the background within a few pixels of
    a moving object appears to move with it (on the held-out scenes 85 % of the false
    positives lay within 4 px of an object). Those pixels are *behind* the object and their
    flow is a blend of the object's and the background's: a mask pixel within ``width`` px
    of the mask's border whose depth exceeds the nearest depth of the mask within ``width``
    px by more than ``jump_rel`` of it, that lies as deep as the static pixels around (not
    the far side of a curved object's own limb), and whose flow is no farther from the
    nearer moving pixels' (mean within ``2 width``) than ``drag_ratio`` times their distance
    from the static pixels' around, is removed (1.5: a blend lies within 1 of it). An
    object's own border pixels have no nearer moving neighbour, and a farther object moving
    on its own (two objects crossing) has a flow of its own: both stay.

    Args:
        moving: ``[H, W]`` bool.
        depth: ``[H, W]`` depth of the current pixels (NaN or <= 0 where unknown).
        flow: ``[H, W, 2]`` the current pixels' optical flow (to any one reference frame).
        jump_rel: relative depth jump of an occluding edge.
        width: pixels; the halo's width.
        drag_ratio: see above.
    """
    if not moving.any():
        return moving
    # Every filter below reaches at most 2 width pixels from a mask pixel, so the work is
    # done on the mask's bounding box with that margin: same result, a fraction of the cost.
    margin = 2 * width
    rows = np.flatnonzero(moving.any(axis=1))
    cols = np.flatnonzero(moving.any(axis=0))
    box = (slice(max(0, rows[0] - margin), rows[-1] + margin + 1),
           slice(max(0, cols[0] - margin), cols[-1] + margin + 1))
    trimmed = moving.copy()
    trimmed[box] = _trim_halo(moving[box], depth[box], flow[box], jump_rel, width, drag_ratio)
    return trimmed


def _trim_halo(moving: np.ndarray, depth: np.ndarray, flow: np.ndarray, jump_rel: float,
               width: int, drag_ratio: float) -> np.ndarray:
    """:func:`trim_occlusion_halo` on a crop that holds the whole mask and its margin."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
    known = np.isfinite(depth) & (depth > 0)
    masked_depth = np.where(moving & known, depth, np.inf).astype(np.float32)
    nearest = cv2.erode(masked_depth, kernel, borderValue=np.inf)  # min filter
    interior = cv2.erode(moving.view(np.uint8), kernel, borderValue=1).view(bool)
    behind = moving & known & ~interior & (depth > nearest * (1 + jump_rel))
    if not behind.any():
        return moving
    window = 4 * width + 1
    front_flow = local_mean(flow, moving & ~behind, window)
    static_flow = local_mean(flow, ~moving, window)
    static_depth = local_mean(depth[..., None], ~moving & known, window)[..., 0]
    with np.errstate(invalid='ignore'):
        dragged = (behind & (depth >= static_depth * (1 - jump_rel))
                   & (vector_norm(flow - front_flow)
                      <= drag_ratio * vector_norm(front_flow - static_flow)))
    return moving & ~dragged


def fill_by_colour(moving: np.ndarray, fillable: np.ndarray, static: np.ndarray,
                   image: np.ndarray, reach: int) -> np.ndarray:
    """``moving`` plus the ``fillable`` pixels within ``reach`` px of it whose colour is
    nearer the mean colour of the moving pixels around them than that of the ``static``
    ones around them (both over a ``4 reach + 1`` square).

    Where the optical flow fails its forward-backward check or has no texture to follow, no
    motion test says anything; on a moving subject that is mostly its outline (occlusion
    boundaries) and flat patches. A pixel between a subject and the background it occludes
    belongs to whichever it looks like: the flow cannot tell, the image often can.

    Args:
        moving: ``[H, W]`` bool motion mask.
        fillable: ``[H, W]`` bool pixels that may be added (the pipeline's: those without a
            confident point, which no test judged or only the epipolar one, blind along the
            epipolar line).
        static: ``[H, W]`` bool pixels judged static, the colour reference of the other side.
        image: ``[H, W, 3]`` the current image (any colour space, any range).
        reach: pixels; 0 returns ``moving`` unchanged.
    """
    if reach <= 0 or not moving.any():
        return moving
    distance = cv2.distanceTransform((~moving).view(np.uint8), cv2.DIST_L2, 3)
    rows, cols = np.nonzero(fillable & ~moving & (distance <= reach))
    if rows.size == 0:
        return moving
    colour = image.astype(np.float32)
    own = colour[rows, cols]
    window = 4 * reach + 1
    to_moving = vector_norm(own - _window_means(colour, moving, window, rows, cols))
    to_static = vector_norm(own - _window_means(colour, static, window, rows, cols))
    # NaN (no such pixel in the window) compares false: a pixel with no judged static one
    # around has nothing to be told apart from. In a flat region (sky, a wall, a
    # pillarbox band) that is every pixel, and taking them grew false motion there on the
    # real clips (small holes inside a subject are filled by the mask's clean-up anyway).
    with np.errstate(invalid='ignore'):
        takes = to_moving < to_static
    filled = moving.copy()
    filled[rows[takes], cols[takes]] = True
    return filled


def _window_means(values: np.ndarray, known: np.ndarray, window: int, rows: np.ndarray,
                  cols: np.ndarray) -> np.ndarray:
    """``[N, C]`` mean of ``values`` ``[H, W, C]`` over the ``known`` pixels of the
    ``window``-square around each pixel ``(rows, cols)`` (clipped at the image border; NaN
    where the window holds none). Integral images of the pixels' windows' bounding box: a
    thin band of pixels costs one pass over that box, not a box filter of every channel
    over the image (~7 ms per :func:`local_mean` at 288x512)."""
    height, width = known.shape
    half = window // 2
    # The box holding every window; indices below are relative to it.
    row0, col0 = max(int(rows.min()) - half, 0), max(int(cols.min()) - half, 0)
    row1 = min(int(rows.max()) + half + 1, height)
    col1 = min(int(cols.max()) + half + 1, width)
    crop_known = known[row0:row1, col0:col1]
    total = cv2.integral(np.where(crop_known[..., None], values[row0:row1, col0:col1],
                                  np.float32(0)), sdepth=cv2.CV_64F)
    count = cv2.integral(crop_known.view(np.uint8), sdepth=cv2.CV_64F)
    top, bottom = np.maximum(rows - half, row0) - row0, np.minimum(rows + half + 1, row1) - row0
    left, right = np.maximum(cols - half, col0) - col0, np.minimum(cols + half + 1, col1) - col0

    def box(integral: np.ndarray) -> np.ndarray:
        return (integral[bottom, right] - integral[top, right] - integral[bottom, left]
                + integral[top, left])

    with np.errstate(invalid='ignore', divide='ignore'):
        return box(total) / box(count)[:, None]


def local_mean(values: np.ndarray, known: np.ndarray, window: int) -> np.ndarray:
    """``[H, W, C]`` mean of ``values`` over the ``known`` pixels of each ``window``-square
    (normalised box filter; NaN where the window holds no known pixel).

    Channel by channel into OpenCV's interleaved layout: NumPy broadcasts of an ``[H, W, 1]``
    mask over the channels cost twice the filters themselves.
    """
    size = (window, window)
    channels = values.shape[-1]
    planes = [np.where(known, values[..., channel], np.float32(0)).astype(np.float32)
              for channel in range(channels)]
    total = cv2.boxFilter(cv2.merge(planes) if channels > 1 else planes[0], -1, size,
                          normalize=False, borderType=cv2.BORDER_CONSTANT)
    count = cv2.boxFilter(known.astype(np.float32), -1, size, normalize=False,
                          borderType=cv2.BORDER_CONSTANT)
    if channels > 1:
        count = cv2.merge([count] * channels)
    with np.errstate(invalid='ignore', divide='ignore'):
        # (The box filter's running sums may leave a rounding residue where no pixel is.)
        mean = np.where(count > 0, total / count, np.float32(np.nan))
    return mean.reshape(values.shape)
