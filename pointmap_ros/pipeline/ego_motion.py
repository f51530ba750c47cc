"""Motion stage: which of the current pixels move, and how the camera moved.

The two questions are answered together, because each needs the other: the camera pose is
estimated from static pixels only, and a pixel is static when the camera explains its motion.

- Network cross-time maps: a pixel moves when its 3D scene flow beats the pair's
  noise-adaptive threshold (:func:`~pointmap_ros.tracking.segmentation.pair_motion`); the
  pose is PnP on the remaining pixels of the keyframe pair.
- Correspondences (MonST3R's test, run online inside the window): static candidates from
  the epipolar fit of the keyframe pair's flow (no pose needed), less the pixels the
  previous frames' final masks put on moving things (carried along the flow), a pose from
  them, then motion from the pose residual of every pair
  (:mod:`~pointmap_ros.pipeline.motion`). MonST3R alternates pose-from-static and
  motion-under-pose offline over a whole video; here each frame takes one step of that
  alternation, starting from where the previous frames left it (a second round inside the
  frame changed no validation score). The pose and the keyframe pair's own test need that
  pair alone (:func:`keyframe_motion`), so the pipeline computes them while the engine
  infers the other pairs. A camera whose static pixels do not move in the
  image keeps its keyframe pose exactly (no drift of a still camera from noisy maps).
- Odometry (when the frames carry it): every pose estimate is fused with the odometry's
  (:mod:`~pointmap_ros.pipeline.odometry_prior`), so the motion test runs under the fused
  pose, and PnP failing is not fatal once the window has a scale.

docs/pipeline.md gives the measured reasons for each step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pointmap_ros.errors import PoseError
from pointmap_ros.geometry.camera import pixel_grid
from pointmap_ros.geometry.pose import relative_pose_pnp
from pointmap_ros.geometry.transforms import se3_apply, se3_compose, se3_inverse
from pointmap_ros.pipeline.config import PipelineConfig
from pointmap_ros.pipeline.motion import (
    ApertureMetric, camera_flow_model, camera_still, depth_residual, epipolar_residual,
    fill_by_colour, flow_motion, free_space_residual, pose_residual, trim_occlusion_halo)
from pointmap_ros.pipeline.odometry_prior import (
    FUSED, NO_ODOMETRY, OdometryPrior, fuse_pose, reprojection_error)
from pointmap_ros.pipeline.pair import PairView, WorkGrid
from pointmap_ros.tracking.segmentation import PairMotion, pair_motion, remove_small_regions

__all__ = ['Continuing', 'KeyframeMotion', 'MotionResult', 'estimate_motion_and_pose',
           'keyframe_motion']

#: Which of the given ``[H, W]`` bool pixels continue a published object track (their point
#: lay on one a frame ago), or None when there is no such track: the mask's small-region
#: rule asks it about the pixels of the blobs under its size and keeps those that do
#: (:func:`_clean`).
Continuing = Callable[[np.ndarray], 'np.ndarray | None']


@dataclass(frozen=True)
class MotionResult:
    """What the motion stage found for the current frame.

    Attributes:
        mask: ``[H, W]`` bool, the current pixels judged moving: pixels with a confident
            point (the caller drops those behind the camera under the final pose) and,
            with correspondences, pixels without one that the image-space test judged.
        T_kf_cam: ``[4, 4]`` the current camera's pose in the keyframe's camera frame.
        pair_motions: the 3D-flow decision of each pair, in the order of the views (its
            noise and threshold scale the rigid fits and the instance split).
        odometry: how the odometry prior entered ``T_kf_cam`` (``PipelineOutput.odometry``).
        maps_trusted: for each pair (views' order) with correspondences, whether the camera
            test trusted its maps' depths (the pose test, not the epipolar fallback); empty
            without correspondences.
        maps_precise: for each such pair, whether the maps were as precise as the optical
            flow besides (:attr:`~pointmap_ros.pipeline.motion.FlowMotion.precise`).
    """

    mask: np.ndarray
    T_kf_cam: np.ndarray
    pair_motions: tuple[PairMotion, ...]
    odometry: str = NO_ODOMETRY
    maps_trusted: tuple[bool, ...] = ()
    maps_precise: tuple[bool, ...] = ()


@dataclass(frozen=True)
class _Verdict:
    """One pair's correspondence motion test under the frame's pose."""

    moving: np.ndarray  # [H, W] moving in the image-space test and displaced in 3D
    observed: np.ndarray  # [H, W] pixels the image-space test could judge
    maps_trusted: bool  # the pose test decided (the maps' depths were reliable)
    maps_precise: bool = False  # ...on maps as precise as the optical flow


@dataclass(frozen=True)
class KeyframeMotion:
    """The keyframe pair's share of the correspondence motion stage: the frame's pose and
    that pair's motion test under it.

    It needs the keyframe pair alone (and the previous frames' masks), so the pipeline
    computes it while the engine infers the frame's other pairs.

    Attributes:
        T_kf_cam, odometry: the frame's pose, as in :class:`MotionResult`.
        points_cam: ``[H, W, 3]`` the keyframe pair's current points under that pose.
        pair_motion: the pair's 3D-flow decision.
        verdict: the pair's correspondence test under the pose.
    """

    T_kf_cam: np.ndarray
    odometry: str
    points_cam: np.ndarray
    pair_motion: PairMotion
    verdict: _Verdict


def estimate_motion_and_pose(views: list[PairView], K: np.ndarray, scene_depth: float,
                             aperture: ApertureMetric | None, config: PipelineConfig,
                             grid: WorkGrid, fused: bool,
                             prior: OdometryPrior | None = None,
                             keyframe: KeyframeMotion | None = None,
                             image: np.ndarray | None = None,
                             continuing: Continuing | None = None) -> MotionResult:
    """Motion mask and ``T_kf_cam`` of the current frame (module docstring).

    Args:
        views: the frame's pairs, the keyframe pair first.
        K: intrinsics at model resolution.
        scene_depth: median depth of the keyframe pair (window units).
        aperture: the current image's structure metric (None without correspondences).
        config: thresholds.
        grid: model size and work-grid stride.
        fused: ``'fused'`` cross-time maps: pixels no correspondence can judge keep the
            network's 3D decision (else they are static).
        prior: the odometry's motion since the keyframe, when the frames carry odometry.
        keyframe: :func:`keyframe_motion` of ``views[0]`` when it was computed already
            (correspondences only); computed here otherwise.
        image: ``[H, W, 3]`` the current image at model size, for the colour fill of the
            mask (correspondences only; None: no fill).
        continuing: which mask pixels continue a published track (None: no track yet).

    Raises:
        PoseError: PnP failed and no odometry with a known scale stands in.
    """
    keyframe_pair = views[0]
    if keyframe_pair.pixel_flow is None:
        pair_motions = tuple(_pair_3d_motion(view, scene_depth, config, grid) for view in views)
        motion_3d = _clean(np.logical_or.reduce([decision.moving for decision in pair_motions]),
                           config, grid, keyframe_pair.measured_depth, continuing)
        # PnP samples a few hundred static pixels; candidates stay full-size (~0.3 ms more
        # than the work grid at 512x288) because with noisy maps the pose error is dominated
        # by which slow movers the sample happens to contain, and the full-size draw keeps
        # results identical to the measured noise study.
        pose = _pose(keyframe_pair, K, keyframe_pair.valid_j & ~motion_3d, scene_depth,
                     config, grid, prior)
        return MotionResult(motion_3d, pose.T_kf_cam, pair_motions, pose.odometry)
    if keyframe is None:
        keyframe = keyframe_motion(keyframe_pair, K, scene_depth, aperture, config, grid, prior)
    T_world_cam = se3_compose(keyframe_pair.ref.T_world_cam, keyframe.T_kf_cam)
    pair_motions, verdicts = [keyframe.pair_motion], [keyframe.verdict]
    for view in views[1:]:
        observed = view.valid_j & view.pixel_flow.backward_valid & aperture.textured
        pair_motions.append(_pair_3d_motion(view, scene_depth, config, grid))
        verdicts.append(_verdict(view, keyframe.points_cam, T_world_cam, K,
                                 _epipolar(view, observed, config, grid), _warped_motion(view),
                                 aperture, scene_depth, config, grid))
    mask = _correspondence_mask(verdicts, pair_motions, keyframe_pair, keyframe.points_cam,
                                config, grid, fused, image, continuing)
    return MotionResult(mask, keyframe.T_kf_cam, tuple(pair_motions), keyframe.odometry,
                        tuple(verdict.maps_trusted for verdict in verdicts),
                        tuple(verdict.maps_precise for verdict in verdicts))


def keyframe_motion(keyframe_pair: PairView, K: np.ndarray, scene_depth: float,
                    aperture: ApertureMetric, config: PipelineConfig, grid: WorkGrid,
                    prior: OdometryPrior | None = None) -> KeyframeMotion:
    """The pose by MonST3R's alternation, one step of it per frame (module docstring), and
    the keyframe pair's motion test under that pose (correspondences only).

    Raises:
        PoseError: PnP failed and no odometry with a known scale stands in.
    """
    flow = keyframe_pair.pixel_flow
    inlier_px = config.flow_inlier_px * flow.pixel_scale  # thresholds: flow-image pixels
    observed = keyframe_pair.valid_j & flow.backward_valid
    epipolar = _epipolar(keyframe_pair, observed, config, grid)
    was_moving = _warped_motion(keyframe_pair)
    static = observed if epipolar is None else observed & (epipolar < inlier_px)
    if was_moving is not None:
        # The previous frames' final masks, carried along the flow, leave the static set:
        # MonST3R's pose-from-static / motion-under-pose alternation, one step per frame.
        static &= ~was_moving
    still = camera_still(flow.backward, static, grid.stride,
                         config.camera_still_px * flow.pixel_scale)
    pose = _pose(keyframe_pair, K, static, scene_depth, config, grid, prior, still)
    points_cam = se3_apply(se3_inverse(pose.T_kf_cam), keyframe_pair.j_tj)
    T_world_cam = se3_compose(keyframe_pair.ref.T_world_cam, pose.T_kf_cam)
    return KeyframeMotion(
        pose.T_kf_cam, pose.odometry, points_cam,
        _pair_3d_motion(keyframe_pair, scene_depth, config, grid),
        _verdict(keyframe_pair, points_cam, T_world_cam, K, epipolar, was_moving, aperture,
                 scene_depth, config, grid))


@dataclass(frozen=True)
class _Pose:
    """One pose estimate: the pose used and how odometry entered it."""

    T_kf_cam: np.ndarray
    odometry: str


def _pose(keyframe_pair: PairView, K: np.ndarray, static: np.ndarray, scene_depth: float,
          config: PipelineConfig, grid: WorkGrid, prior: OdometryPrior | None,
          still: bool = False) -> _Pose:
    """The frame's pose from the maps (PnP on ``static`` pixels, or the keyframe's pose
    exactly when the images show the camera ``still``), fused with the odometry ``prior``.

    "Still" only bounds the image motion (below ``camera_still_px``): a slow robot moves a
    few centimetres before that shows, while a robot standing still reports its odometry's
    jitter. While the odometry agrees (the gates of
    :func:`~pointmap_ros.pipeline.odometry_prior.fuse_pose`), the still camera takes
    whichever of the two poses -- unmoved, or the odometry's -- better explains the static
    pixels' points: a standing robot stays exactly put, a creeping one is followed.
    """
    try:
        map_pose = np.eye(4) if still else _pnp(keyframe_pair, K, static, config)
    except PoseError:
        if prior is None or prior.T_kf_cam is None:
            raise
        map_pose = None
    if prior is None:  # (the pipeline passes none when odometry_prior is off)
        return _Pose(map_pose, NO_ODOMETRY)
    static_points = static & keyframe_pair.valid_j
    T_kf_cam, decision = fuse_pose(
        map_pose, prior, keyframe_pair.j_tj, static_points, K, scene_depth,
        1.0 if still else config.odometry_weight, config.odometry_max_disagreement_deg,
        config.odometry_max_disagreement_rel, grid.stride)
    if still and decision == FUSED and (
            reprojection_error(map_pose, keyframe_pair.j_tj, static_points, K, grid.stride)
            <= reprojection_error(T_kf_cam, keyframe_pair.j_tj, static_points, K,
                                  grid.stride)):
        T_kf_cam = map_pose
    return _Pose(T_kf_cam, decision)


def _pair_3d_motion(view: PairView, scene_depth: float, config: PipelineConfig,
                    grid: WorkGrid) -> PairMotion:
    """The pair's decision from its 3D scene flow alone (noise-adaptive threshold)."""
    return pair_motion(view.flow_j, view.valid_flow, scene_depth, view.dt,
                       config.motion_speed_rel, config.motion_min_rel, config.motion_noise_mult,
                       config.flow_smooth_radius, grid.stride, flow_sq=view.flow_sq)


def _correspondence_mask(verdicts: list[_Verdict], pair_motions: list[PairMotion],
                         keyframe_pair: PairView, points_cam: np.ndarray,
                         config: PipelineConfig, grid: WorkGrid, fused: bool,
                         image: np.ndarray | None,
                         continuing: Continuing | None = None) -> np.ndarray:
    """Union over pairs of the correspondence motion test, cleaned up.

    Pixels without a consistent correspondence (occluded, out of view) keep the 3D-flow
    decision of the network's cross-time maps when ``fused``, and are static otherwise
    (their cross-time points are unknown). Then the occlusion halo is trimmed, and the
    pixels without a confident point are filled by colour from the moving pixels next to
    them (``flow_colour_fill_px``, :func:`fill_by_colour`).
    """
    moving = np.logical_or.reduce([verdict.moving for verdict in verdicts])
    judged = np.logical_or.reduce([verdict.observed for verdict in verdicts])
    if fused:
        motion_3d = _clean(np.logical_or.reduce([decision.moving for decision in pair_motions]),
                           config, grid, keyframe_pair.measured_depth)
        moving |= motion_3d & ~judged
    if config.flow_halo_px:
        halo_width = int(round(config.flow_halo_px * keyframe_pair.pixel_flow.pixel_scale))
        # Only confident depths: the trim tells object from background by depth, and a
        # network unsure of a moving object puts it at the wrong depth (docs/pipeline.md).
        confident_depth = np.where(keyframe_pair.valid_j, points_cam[..., 2],
                                   np.float32(np.nan))
        moving = trim_occlusion_halo(moving, confident_depth,
                                     keyframe_pair.pixel_flow.backward,
                                     config.cluster_jump_rel, max(1, halo_width))
    if image is not None and config.flow_colour_fill_px:
        # Only pixels without a confident point: no test judged them, or only the epipolar
        # one, which is blind to motion along the epipolar line. Those with a point are
        # completed in 3D by their instance's rigid motion (instances.complete_instances);
        # filled by colour, static ones took their instance's flow (docs/pipeline.md).
        moving = fill_by_colour(
            moving, ~keyframe_pair.valid_j, judged & ~moving, image,
            int(round(config.flow_colour_fill_px * keyframe_pair.pixel_flow.pixel_scale)))
    return _clean(moving, config, grid, keyframe_pair.measured_depth, continuing)


def _verdict(view: PairView, points_cam: np.ndarray, T_world_cam: np.ndarray, K: np.ndarray,
             epipolar: np.ndarray | None, was_moving: np.ndarray | None,
             aperture: ApertureMetric, scene_depth: float, config: PipelineConfig,
             grid: WorkGrid) -> _Verdict:
    """One pair's correspondence motion test (pose, epipolar and depth tests of
    :func:`~pointmap_ros.pipeline.motion.flow_motion`) for the current points
    ``points_cam`` of a camera at ``T_world_cam``.

    The pose and depth tests need the pixel's point, so they judge only pixels with a
    confident one; the epipolar test needs only the flow, so where the maps are unreliable
    it also judges the pixels the maps gave up on (a real subject a weak model is unsure
    of is exactly what should be segmented). A pixel must also be displaced by more than
    ``motion_min_rel`` of the scene depth in 3D, where the pair's maps give a 3D flow.
    Pixels with a point that the flow cannot judge (flat texture, occlusion, border) are
    judged by the free-space test where the maps are precise.
    """
    T_ref_cam = se3_compose(se3_inverse(view.ref.T_world_cam), T_world_cam)
    backward = view.pixel_flow.backward
    pixel_scale = view.pixel_flow.pixel_scale
    observed = _inside_border(view.pixel_flow.backward_valid & aperture.textured,
                              int(round(config.flow_border_px * pixel_scale)))
    pose = np.where(view.valid_j, pose_residual(points_cam, T_ref_cam, K, backward, aperture),
                    np.float32(np.nan))
    # The depth test reads the depth at the matched pixel: only where the texture fixes
    # both flow components (on a stripe the match slides along it).
    depth_change = np.where((aperture.isotropy >= config.flow_depth_min_isotropy)
                            & view.valid_flow,
                            depth_residual(view.j_tj, view.j_ti), np.float32(np.nan))

    def free_space() -> np.ndarray:
        """The free-space residual of the pixels with a point that the flow cannot judge
        (a small part of a textured image: the cost stays with them); NaN elsewhere."""
        candidates = np.flatnonzero(view.valid_j & ~observed)
        reference_depth = np.where(view.valid_i, view.i_ti[..., 2], np.float32(np.nan))
        residual = np.full(observed.shape, np.nan, np.float32)
        residual.reshape(-1)[candidates] = free_space_residual(
            se3_apply(T_ref_cam, points_cam.reshape(-1, 3)[candidates]), reference_depth, K)
        return residual

    decision = flow_motion(
        pose, epipolar, observed,
        stride=grid.stride, reliable_px=config.flow_reliable_px * pixel_scale,
        # The relative test is for what a network estimated: a depth sensor's per-pixel
        # noise raises the ratio on long baselines while its pose and depth tests still pay
        # (docs/pipeline.md, step 5).
        reliable_ratio=None if view.measured_depth else config.flow_reliable_ratio,
        inlier_px=config.flow_inlier_px * pixel_scale, noise_mult=config.flow_noise_mult,
        min_px=config.flow_min_px * pixel_scale, was_moving=was_moving,
        hysteresis=config.flow_hysteresis, depth_res=depth_change,
        min_depth_rel=config.flow_depth_min_rel,
        min_depth_rel_precise=config.flow_depth_min_rel_precise,
        free_space_res=free_space if config.flow_free_space else None,
        measured_depth=view.measured_depth)
    # The 3D displacement check needs the pair's 3D flow; where the maps have none the
    # image-space decision stands alone. A point the reference saw past was displaced by
    # the free-space test's own evidence (the flow its pair interpolated over a flat face
    # says nothing).
    displaced = (view.flow_sq > (config.motion_min_rel * scene_depth) ** 2) | ~view.valid_flow
    moving = decision.moving & displaced
    if decision.seen_through is not None:
        moving |= decision.seen_through
    return _Verdict(moving, decision.observed, decision.test == 'pose', decision.precise)


def _inside_border(mask: np.ndarray, border: int) -> np.ndarray:
    """``mask`` without its outer ``border`` pixels: optical flow there matches patches
    that leave the image (DIS's 8-pixel patches), and its errors read as motion."""
    if border <= 0:
        return mask
    inside = np.zeros_like(mask)
    inside[border:-border, border:-border] = mask[border:-border, border:-border]
    return inside


def _clean(moving: np.ndarray, config: PipelineConfig, grid: WorkGrid,
           measured_depth: bool, continuing: Continuing | None = None) -> np.ndarray:
    """``moving`` without blobs and holes smaller than ``min_region_frac`` of the image
    (``min_region_frac_measured`` where a depth sensor ``measured_depth`` the pair's depths).

    A network's depth errors flag small patches of static structure as moving: on validation
    (shipped model + odometry, no depth camera) 598 blobs under 60 pixels at 96x128 lay on
    no moving object, 47 on one; removing blobs under 0.2 % of the image instead of 0.05 %
    raised motion IoU 0.717 -> 0.732 (oracle-two-map 0.953 -> 0.952, its objects kept; at
    0.3 % it lost one). With a depth sensor the same change lost one object and added a
    spurious track: there small blobs are the first pieces of real objects.

    A blob made mostly of ``continuing`` pixels (their point lay on a published object track
    a frame ago) stays whatever its size: it is a tracked object that shrank, receded or
    slowed, not noise (a test sequence's receding box kept its track one frame longer, which
    matched it; docs/evaluation.md, session 21).
    """
    height, width = grid.size
    fraction = config.min_region_frac_measured if measured_depth else config.min_region_frac
    return remove_small_regions(moving, max(1, int(fraction * height * width)), continuing)


def _pnp(keyframe_pair: PairView, K: np.ndarray, static: np.ndarray,
         config: PipelineConfig) -> np.ndarray:
    """``T_kf_cam`` by PnP on ``static`` pixels (all valid ones when too few remain)."""
    if np.count_nonzero(static) < 50:
        static = keyframe_pair.valid_j
    T_kf_cam, _ = relative_pose_pnp(keyframe_pair.j_tj, K, static, config.pnp_reprojection_px,
                                    seed=config.seed)
    return T_kf_cam


def _epipolar(view: PairView, observed: np.ndarray, config: PipelineConfig,
              grid: WorkGrid) -> np.ndarray | None:
    """Epipolar residual of a pair's backward flow under the camera model fitted to its
    ``observed`` pixels (None when no model fits).

    The fit samples only pixels with a confident point: on validation sequences with the
    shipped model, sampling every consistent textured pixel instead (the maps' low-confidence
    pixels are mostly the moving objects) cut motion IoU from 0.56 to 0.33, and excluding
    only the previous frame's mask recovered 0.50.
    """
    flow = view.pixel_flow
    model = camera_flow_model(flow.backward, observed, grid.stride,
                              config.flow_inlier_px * flow.pixel_scale, config.seed)
    return None if model is None else epipolar_residual(model, flow.backward)


def _warped_motion(view: PairView) -> np.ndarray | None:
    """``[H, W]`` bool: the reference frame's motion mask read at each current pixel's
    correspondence (None when the reference has no mask or the pair no flow)."""
    previous = view.ref.motion_mask
    if previous is None or view.pixel_flow is None:
        return None
    height, width = previous.shape
    target = np.rint(pixel_grid(height, width, np.float32) + view.pixel_flow.backward)
    target_cols = np.clip(target[..., 0], 0, width - 1).astype(np.intp)
    target_rows = np.clip(target[..., 1], 0, height - 1).astype(np.intp)
    return previous[target_rows, target_cols] & view.pixel_flow.backward_valid
