"""Object stage of the pipeline: instances of the motion mask and one rigid fit per instance.

Segmentation runs on the work grid (every ``stride``-th pixel) and full-size motion pixels
inherit their cell's label; each instance's rigid motion from the keyframe time to now is fit
on at most ``max_fit_points`` of its pixels (the fit is a statistic of hundreds of points).
"""

from __future__ import annotations

import cv2
import numpy as np

from pointmap_ros.geometry.camera import project
from pointmap_ros.geometry.transforms import se3_apply, se3_compose, se3_inverse
from pointmap_ros.pipeline.config import PipelineConfig
from pointmap_ros.pipeline.motion import ApertureMetric, local_mean
from pointmap_ros.pipeline.pair import PairView
from pointmap_ros.tracking.objects import RigidMotion, fit_rigid_motion
from pointmap_ros.tracking.segmentation import segment_instances
from pointmap_ros.tracking.tracker import Detection, warped_overlap
from pointmap_ros.tracking.window import WindowFrame

__all__ = ['instance_labels', 'detect_objects', 'fit_instances', 'grow_instances',
           'rigid_flow']

_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
_SQUARE = np.ones((3, 3), np.uint8)


def instance_labels(cfg: PipelineConfig, stride: int, motion: np.ndarray,
                    points_cam: np.ndarray, flow: np.ndarray,
                    flow_floor: float) -> tuple[np.ndarray, int]:
    """Instance labels ``[H, W]`` int32 (0 = none) of the motion mask, and their count.

    Args:
        cfg: clustering thresholds (``cluster_*``, ``min_instance_frac``).
        stride: work-grid stride.
        motion: ``[H, W]`` bool motion mask.
        points_cam: ``[H, W, 3]`` current points (NaN where invalid).
        flow: ``[H, W, 3]`` flow in any camera frame (only neighbour differences matter).
        flow_floor: absolute flow difference that always cuts a link (the motion threshold).

    On a strided grid, full-resolution motion pixels take the label of their grid cell, or
    of a neighbouring cell at object borders.
    """
    st = stride
    H, W = motion.shape
    small, n = segment_instances(
        motion[::st, ::st], points_cam[::st, ::st], flow[::st, ::st], cfg.cluster_jump_rel,
        cfg.cluster_flow_jump_rel, flow_floor,
        max(3, int(cfg.min_instance_frac * H * W / st ** 2)))
    if st == 1:
        return small, n
    if n == 0:
        return np.zeros((H, W), np.int32), 0
    # OpenCV on float32 labels (exact below 2^24; the work grid has far fewer pixels): its
    # 3x3 dilation and nearest-neighbour upscaling by the integer stride give the same
    # labels as ndimage.grey_dilation and block replication, several times faster.
    assert n < 2 ** 24
    small = small.astype(np.float32)
    grown = cv2.dilate(small, np.ones((3, 3), np.uint8))
    small = np.where(small > 0, small, grown)
    h, w = small.shape
    full = cv2.resize(small, (w * st, h * st), interpolation=cv2.INTER_NEAREST)
    full = full[:H, :W].astype(np.int32) * motion  # int32 * bool: labels on motion pixels only
    return full, n


def detect_objects(cfg: PipelineConfig, labels: np.ndarray, n_inst: int, pk: PairView,
                   kf: WindowFrame, prev: tuple[WindowFrame, PairView] | None,
                   scene_depth: float) -> tuple[list[Detection], list[int]]:
    """One :class:`Detection` per instance with >= 3 pixels of valid flow.

    Args:
        cfg: fit parameters (``ransac_*``, ``max_fit_points``, ``rigid_residual_rel``, seed).
        labels: ``[H, W]`` instance labels 1..n_inst.
        pk: the keyframe pair (``P_t(t_k)`` and ``P_t(t)`` are the correspondences).
        kf: the keyframe (its world pose).
        prev: ``(previous frame, its pair with the current frame)`` for the warped overlap,
            or None.
        scene_depth: median scene depth (scales the inlier threshold).

    Returns:
        ``(detections, label of each detection)``.
    """
    T_w_kf = kf.T_world_cam
    T_kf_w = se3_inverse(T_w_kf)
    # Labelled pixels with valid flow (a small part of the image), then one comparison per
    # instance (a handful): cheaper than sorting them by label.
    nz = np.flatnonzero(labels)
    nz = nz[pk.valid_flow.ravel()[nz]]
    nz_labels = labels.ravel()[nz]
    rng = np.random.default_rng(cfg.seed)
    src_all, dst_all = pk.j_ti.reshape(-1, 3), pk.j_tj.reshape(-1, 3)
    conf = pk.maps.conf_j_tj.ravel()
    use_prev = prev is not None and prev[0].track_ids is not None
    dets, det_labels = [], []
    for lab in range(1, n_inst + 1):
        pix = nz[nz_labels == lab]
        n_pix = len(pix)
        if n_pix < 3:
            continue
        if n_pix > cfg.max_fit_points:  # the fit needs far fewer points than pixels
            pix = np.sort(rng.choice(pix, cfg.max_fit_points, replace=False))
        src = src_all[pix].astype(np.float64)
        dst = dst_all[pix].astype(np.float64)
        # Residuals of a correct fit are differences of two noisy points, like the flow of
        # static pixels: its median (pk.noise) scales the inlier threshold, and its RMS
        # (1.13 x the median for a 3D Gaussian difference) is what noise alone explains.
        fit = fit_rigid_motion(src, dst, conf[pix],
                               max(cfg.ransac_threshold_rel * scene_depth, 2.5 * pk.noise),
                               cfg.rigid_residual_rel, cfg.ransac_iterations, cfg.seed + lab,
                               noise_rms=1.13 * pk.noise)
        overlap = {}
        if use_prev:
            overlap = warped_overlap(prev[1].j_ti.reshape(-1, 3)[pix], prev[0].K,
                                     prev[0].track_ids)
        dets.append(Detection(
            points=se3_apply(T_w_kf, dst),
            motion=se3_compose(se3_compose(T_w_kf, fit.T), T_kf_w),
            inlier_ratio=fit.inlier_ratio, is_rigid=fit.is_rigid,
            residual_rel=fit.residual_rel, overlap=overlap, pixel_count=n_pix))
        det_labels.append(lab)
    return dets, det_labels



def fit_instances(cfg: PipelineConfig, labels: np.ndarray, n_inst: int, view: PairView,
                  scene_depth: float) -> dict[int, RigidMotion]:
    """Rigid motion of each instance over ``view``'s pair (reference frame, t_ref -> t).

    RANSAC + Umeyama on at most ``max_fit_points`` of the instance's pixels with known flow
    (the same fit as the object stage); instances with fewer than 3 such pixels are left out.
    """
    fits = {}
    flat_labels = labels.ravel()
    known = view.valid_flow.ravel()
    rng = np.random.default_rng(cfg.seed)
    source, target = view.j_ti.reshape(-1, 3), view.j_tj.reshape(-1, 3)
    for label in range(1, n_inst + 1):
        fit_pixels = np.flatnonzero((flat_labels == label) & known)
        if len(fit_pixels) < 3:
            continue
        if len(fit_pixels) > cfg.max_fit_points:
            fit_pixels = np.sort(rng.choice(fit_pixels, cfg.max_fit_points, replace=False))
        fits[label] = fit_rigid_motion(
            source[fit_pixels].astype(np.float64), target[fit_pixels].astype(np.float64), None,
            max(cfg.ransac_threshold_rel * scene_depth, 2.5 * view.noise),
            cfg.rigid_residual_rel, cfg.ransac_iterations, cfg.seed + label,
            noise_rms=1.13 * view.noise, motion_residual_frac=cfg.rigid_motion_residual_frac)
    return fits


def grow_instances(labels: np.ndarray, fits: dict[int, RigidMotion], view: PairView,
                   K: np.ndarray, camera_residual: np.ndarray, aperture: ApertureMetric,
                   threshold_px: float, jump_rel: float, max_steps: int,
                   border_steps: int) -> np.ndarray:
    """Instance labels extended over the parts of each rigid object the camera test missed.

    The camera test cannot see motion along image stripes (aperture) or on flat texture.
    A rigid object's pixels share one motion, so a pixel next to instance k joins it when
    its image motion does not contradict k's rigid motion -- the position it had in the
    reference image if it moved with k, ``pi(K T_k^-1 P_j(t_j))``, is within
    ``max(threshold_px, camera residual)`` of where the flow says it was, measured across the
    image structure; where the flow is unknown (flat texture, occlusion) only within
    ``border_steps`` rings -- and it lies on the same surface (growth never crosses a depth
    jump of more than ``jump_rel`` between neighbours) within the object's extent (twice its
    RMS radius from its centroid: a floor under a ball whose stripes hide the ball's motion
    is not the ball). At most ``max_steps`` one-pixel rings are added.

    Args:
        labels: ``[H, W]`` int32 instances (0 = static).
        fits: rigid motions of the instances (:func:`fit_instances`); non-rigid ones only
            close their border (``border_steps``).
        view: the pair the fits belong to (with its pixel flow).
        K: intrinsics.
        camera_residual: ``[H, W]`` the camera test's residual for this pair (NaN where it
            could not judge).
        aperture: the current image's structure metric.
    """
    if not fits:
        return labels
    H, W = labels.shape
    depth = np.where(np.isfinite(view.j_tj[..., 2]), view.j_tj[..., 2], np.float32(0))
    # A pixel on a depth edge (a 4-neighbour more than jump_rel nearer or farther) stops
    # growth: object outlines against the background are such edges.
    spread = (cv2.dilate(depth, _CROSS) - cv2.erode(depth, _CROSS))
    smooth = view.valid_j & (spread <= jump_rel * np.maximum(depth, 1e-9))
    grid = np.stack(np.meshgrid(np.arange(W, dtype=np.float32),
                                np.arange(H, dtype=np.float32)), axis=-1)
    observed_position = grid + view.pixel_flow.backward
    judged = view.pixel_flow.backward_valid & aperture.textured
    allowed_camera = np.where(np.isfinite(camera_residual), camera_residual, np.float32(0))
    grown = labels.copy()
    points = view.j_tj.astype(np.float64)
    for label, fit in fits.items():
        members = labels == label
        centroid = np.nanmean(points[members], axis=0)
        near = np.sum(np.square(points - centroid), axis=-1) <= (2.0 * fit.size) ** 2
        if fit.is_rigid:
            earlier = project(se3_apply(se3_inverse(fit.T), points), K)
            object_residual = aperture.length((earlier - observed_position).astype(np.float32))
            consistent = judged & (object_residual <= np.maximum(threshold_px, allowed_camera))
        else:  # no motion model to check the flow against: border closing only
            consistent = np.zeros_like(judged)
        candidates = smooth & near & (grown == 0)
        region = (grown == label).view(np.uint8)
        for step in range(max_steps):
            # Pixels the flow cannot judge (flat texture, occlusion) only close the object's
            # border; deeper growth needs flow that agrees with the object's motion.
            allowed = candidates if step < border_steps else candidates & consistent
            ring = (cv2.dilate(region, _SQUARE) > 0) & allowed
            if not ring.any():
                break
            candidates &= ~ring
            region = (region.view(bool) | ring).view(np.uint8)
        grown[region.view(bool) & (grown == 0)] = label
    return grown


def rigid_flow(labels: np.ndarray, fits: dict[int, RigidMotion],
               view: PairView, smooth_window: int = 7) -> np.ndarray:
    """``view``'s scene flow ``[H, W, 3]`` (its reference camera's frame) with every rigid
    instance's pixels moved by the instance's rigid motion.

    Correspondence flow is a difference of two points read at two pixels, so each pixel
    carries the optical flow's error times the depth, worst at the object's borders. A rigid
    object moves as one: its fit (:func:`fit_instances`) averages those errors over hundreds
    of pixels, and gives every pixel of the instance the flow ``x - T^-1 x`` (``x`` = its
    point now). Instances flagged non-rigid (a waving sheet) are only locally rigid: each
    pixel gets the mean correspondence flow of the instance's pixels within
    ``smooth_window`` (which also fills pixels without a correspondence; NaN where none is
    near).
    """
    flow = view.flow_j.copy()
    flat_flow, flat_labels = flow.reshape(-1, 3), labels.ravel()
    target = view.j_tj.reshape(-1, 3)
    for label, fit in fits.items():
        if not fit.is_rigid:
            members = labels == label
            flow[members] = local_mean(view.flow_j, members & view.valid_flow,
                                       smooth_window)[members]
            continue
        members = np.flatnonzero(flat_labels == label)
        now = target[members].astype(np.float64)
        flat_flow[members] = (now - se3_apply(se3_inverse(fit.T), now)).astype(np.float32)
    return flow

