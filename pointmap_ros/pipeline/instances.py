"""Instance and object stage: instances of the motion mask, their split into the rigid
bodies they hold, their rigid fits, their growth over what the motion test could not see,
and the object detections the tracker consumes.

Segmentation runs on the work grid (every ``stride``-th pixel) and full-size motion pixels
inherit their cell's label. Rigid motions are fit on at most ``max_fit_points`` of an
instance's pixels (the fit is a statistic of hundreds of points): over the published-flow
pair for the split, the flow and the growth (:func:`split_instances`,
:func:`fit_instances`, :func:`moving_object_fits`, :func:`complete_instances`), from
the keyframe time to now for the detections (:func:`detect_objects`, St4RTrack-style
anchoring in the tracker).
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

from pointmap_ros.geometry.camera import project
from pointmap_ros.geometry.transforms import se3_apply, se3_compose, se3_inverse
from pointmap_ros.pipeline.config import PipelineConfig
from pointmap_ros.pipeline.motion import ApertureMetric, pose_residual
from pointmap_ros.pipeline.pair import PairView
from pointmap_ros.tracking.rigid_motion import (
    RigidMotion, fit_affine_motion, fit_blended_motion, fit_rigid_motion, refine_rigid_motion,
    trimmed_rms)
from pointmap_ros.tracking.segmentation import motion_threshold as threshold_of_flow
from pointmap_ros.tracking.segmentation import PLACE_UNKNOWN, segment_instances
from pointmap_ros.tracking.tracker import (Detection, moves_clearly, previous_track_ids,
                                           warped_overlap)
from pointmap_ros.tracking.window import WindowFrame

__all__ = ['instance_labels', 'small_instance_labels', 'carried_track_ids',
           'detect_objects', 'split_instances', 'fit_instances', 'moving_object_fits',
           'complete_instances', 'grow_instances']

_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
_SQUARE = np.ones((3, 3), np.uint8)


def instance_labels(config: PipelineConfig, stride: int, motion: np.ndarray,
                    points_cam: np.ndarray, flow: np.ndarray,
                    flow_floor: float, carried: np.ndarray | None = None
                    ) -> tuple[np.ndarray, int, np.ndarray]:
    """Instance labels ``[H, W]`` int32 (0 = none) of the motion mask, their count, and
    the work grid's labels of the components dropped for size that still have
    ``small_birth_frac`` of it (1..m, 0 = none; :func:`small_instance_labels`).

    Args:
        config: clustering thresholds (``cluster_*``, ``min_instance_frac``).
        stride: work-grid stride.
        motion: ``[H, W]`` bool motion mask.
        points_cam: ``[H, W, 3]`` current points (NaN where invalid).
        flow: ``[H, W, 3]`` flow in any camera frame (only neighbour differences matter).
        flow_floor: absolute flow difference that always cuts a link (the motion threshold).
        carried: ``[H, W]`` int32 published track each pixel lay on a frame ago
            (:func:`carried_track_ids`), or None. An instance that alone continues a track
            (most of its pixels carry it, no instance of full size does) needs only
            ``instance_size_hysteresis`` of the smallest size: a track's object that recedes
            or leaves the image keeps its track while it can still be fitted, but no new
            object is born that small as an instance (on noisy maps small instances are
            mostly noise; small ones reach the object stage only through
            :func:`small_instance_labels`).

    On a strided grid, full-resolution motion pixels take the label of their grid cell, or
    of a neighbouring cell at object borders.
    """
    height, width = motion.shape
    min_pixels = config.min_instance_frac * height * width / stride ** 2
    small_min = max(3, int(config.small_birth_frac * min_pixels))
    coarse, count = segment_instances(
        motion[::stride, ::stride], points_cam[::stride, ::stride], flow[::stride, ::stride],
        config.cluster_jump_rel, config.cluster_flow_jump_rel, flow_floor,
        max(3, int(min_pixels)), None if carried is None else carried[::stride, ::stride],
        max(3, int(config.instance_size_hysteresis * min_pixels)),
        small_min if small_min < int(min_pixels) else None)
    small = np.maximum(-coarse, 0)
    return _full_resolution(np.maximum(coarse, 0), count, motion, stride), count, small


def small_instance_labels(small: np.ndarray, stride: int, motion: np.ndarray,
                          labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Labels ``[H, W]`` int32 (0 = none) of the mask's *small* instances, and their count:
    the components :func:`instance_labels` dropped for size (``small``, on its work grid)
    that lie on no pixel of ``labels`` (the final instances, after completion). They feed
    only the object stage: each becomes a detection when it moved as clearly as a quick
    birth needs (:func:`detect_objects`), so a small, distant or half-hidden object is
    tracked before it grows to the full size, or again after it shrank while its track
    coasted. The mask stages never see them (fits, growth and published flow stay those of
    the full-size instances): on a network's maps small components are mostly noise, and as
    instances they were grown and spread it (docs/evaluation.md, sessions 20 and 21).

    Args:
        small: work-grid labels of :func:`instance_labels`.
        stride: work-grid stride; motion: ``[H, W]`` bool the mask the instances came from.
        labels: ``[H, W]`` final instance labels.
    """
    count = int(small.max(initial=0))
    if count == 0:
        return np.zeros(motion.shape, np.int32), 0
    covered = np.bincount(small[labels[::stride, ::stride] > 0], minlength=count + 1)
    kept = covered == 0
    kept[0] = False
    relabel = np.zeros(count + 1, np.int32)
    count = int(kept.sum())
    relabel[kept] = np.arange(1, count + 1, dtype=np.int32)
    return _full_resolution(relabel[small], count, motion & (labels == 0), stride), count


def _full_resolution(coarse: np.ndarray, count: int, motion: np.ndarray,
                     stride: int) -> np.ndarray:
    """Work-grid labels ``coarse`` (1..count) on the full-resolution ``motion`` pixels: each
    takes its grid cell's label, or a neighbouring cell's at object borders."""
    if stride == 1:
        return coarse * motion
    height, width = motion.shape
    if count == 0:
        return np.zeros((height, width), np.int32)
    # OpenCV on float32 labels (exact below 2^24; the work grid has far fewer pixels): its
    # 3x3 dilation and nearest-neighbour upscaling by the integer stride give the same
    # labels as ndimage.grey_dilation and block replication, several times faster.
    assert count < 2 ** 24
    coarse = coarse.astype(np.float32)
    coarse = np.where(coarse > 0, coarse, cv2.dilate(coarse, np.ones((3, 3), np.uint8)))
    coarse_height, coarse_width = coarse.shape
    full = cv2.resize(coarse, (coarse_width * stride, coarse_height * stride),
                      interpolation=cv2.INTER_NEAREST)
    # int32 * bool: labels on motion pixels only.
    return full[:height, :width].astype(np.int32) * motion


def carried_track_ids(previous: tuple[WindowFrame, PairView] | None,
                      published_tracks: frozenset[int], where: np.ndarray
                      ) -> np.ndarray | None:
    """``[H, W]`` int32: the published track each current pixel of ``where`` lay on at the
    previous frame's time (0 = none, or not asked; :data:`PLACE_UNKNOWN` where the pair
    gives the pixel no point at that time); None without a previous frame with published
    tracks.

    Args:
        previous: ``(previous frame, its pair with the current frame)``, or None.
        published_tracks: ids of the confirmed tracks.
        where: ``[H, W]`` bool pixels to look up (the motion mask: a tenth of the image or
            less, where projecting every pixel cost 11 ms per frame at 288x512).
    """
    if previous is None or previous[0].track_ids is None or not published_tracks:
        return None
    frame, pair = previous
    carried = np.zeros(where.shape, np.int32)
    earlier = pair.j_ti[where]
    ids = previous_track_ids(earlier, frame.K, frame.track_ids)
    carried[where] = np.where(np.all(np.isfinite(earlier), axis=-1),
                              np.where(np.isin(ids, list(published_tracks)), ids, 0),
                              PLACE_UNKNOWN)
    return carried


def detect_objects(config: PipelineConfig, labels: np.ndarray, count: int,
                   keyframe_pair: PairView, keyframe: WindowFrame,
                   previous: tuple[WindowFrame, PairView] | None, scene_depth: float,
                   noise: float, motion_threshold: float,
                   published_tracks: frozenset[int] = frozenset(),
                   small_from: int | None = None
                   ) -> tuple[list[Detection], list[int]]:
    """One :class:`Detection` per instance with >= 3 pixels of valid flow.

    Args:
        config: fit parameters (``ransac_*``, ``max_fit_points``, ``rigid_residual_rel``,
            seed).
        labels: ``[H, W]`` instance labels 1..count.
        keyframe_pair: ``P_t(t_k)`` and ``P_t(t)`` are the correspondences.
        keyframe: its world pose places the detections.
        previous: ``(previous frame, its pair with the current frame)`` for the warped
            overlap, or None.
        scene_depth: median scene depth (scales the inlier threshold).
        noise: the keyframe pair's flow noise (median static flow magnitude).
        motion_threshold: the keyframe pair's 3D motion threshold: an instance whose fitted
            rigid motion moves its points less than this (RMS) is not an object. With noisy
            maps the per-pixel tests flag patches of static structure; as a whole they do not
            move (shipped model, held-out sequences: 33 spurious tracks -> 1, no object lost
            on the validation scenes; twice the threshold lost one). An instance whose
            pixels mostly came from one published track of the previous frame
            (``previous``, ``published_tracks``) needs only ``config.flow_hysteresis`` of it.
            On maps that carry a depth sensor's measurements the threshold's noise part is
            scaled for the fit's own noise (:func:`_sensor_fit_threshold`). A detection's
            ``evidence`` is its displacement over this threshold (the full one, whatever
            threshold it passed), which a quick birth reads
            (:attr:`~pointmap_ros.tracking.tracker.TrackerConfig.quick_birth_evidence`).
        published_tracks: ids of the tracks published (confirmed) so far: a tentative
            track must keep passing the full threshold until it is confirmed.
        small_from: labels from this one on are small instances
            (:func:`small_instance_labels`), detections only when they move clearly
            (:func:`~pointmap_ros.tracking.tracker.moves_clearly`: a new object, not noise
            or a fragment of a tracked one). None: there are none.

    Returns:
        ``(detections, label of each detection)``.
    """
    T_world_kf = keyframe.T_world_cam
    T_kf_world = se3_inverse(T_world_kf)
    source, target = keyframe_pair.j_ti.reshape(-1, 3), keyframe_pair.j_tj.reshape(-1, 3)
    confidence = keyframe_pair.maps.conf_j_tj.ravel()
    use_previous = previous is not None and previous[0].track_ids is not None
    detections, detection_labels = [], []
    for label, pixels, members in _instance_pixels(labels, count, keyframe_pair.valid_flow,
                                                    config):
        pixel_count = len(members)
        destination = target[pixels].astype(np.float64)
        fit = _fit(config, source[pixels], destination, confidence[pixels], scene_depth,
                   noise, label, keyframe_pair.measured_depth)
        overlap = {}
        if use_previous:
            overlap = warped_overlap(previous[1].j_ti.reshape(-1, 3)[pixels], previous[0].K,
                                     previous[0].track_ids)
        # Mostly a published object a frame ago: it keeps being one down to the mask's
        # hysteresis of the threshold (right after a keyframe switch the keyframe pair spans
        # one frame, and a slow object moves less than a fresh detection must).
        continuing = max((fraction for track, fraction in overlap.items()
                          if track in published_tracks), default=0.0) >= 0.5
        hysteresis = config.flow_hysteresis if continuing else 1.0
        threshold = motion_threshold * hysteresis
        if keyframe_pair.measured_depth:
            threshold = _sensor_fit_threshold(config, threshold, pixel_count, labels.size,
                                              scene_depth, keyframe_pair.dt, hysteresis)
        displacement = _displacement(fit, source[pixels])
        if displacement < threshold:
            continue  # did not move as a whole: static structure noisy pixels flagged
        failed, step_motion = _fit_failed(fit), None
        if failed and use_previous and previous[1] is not keyframe_pair:
            step_motion = _step_motion(config, labels == label, previous, scene_depth,
                                       noise, label)
        detection = Detection(
            points=se3_apply(T_world_kf, destination),
            motion=se3_compose(se3_compose(T_world_kf, fit.T), T_kf_world),
            inlier_ratio=fit.inlier_ratio, is_rigid=fit.is_rigid,
            residual_rel=fit.residual_rel, overlap=overlap, pixel_count=pixel_count,
            evidence=displacement / motion_threshold if motion_threshold > 0 else 0.0,
            motion_failed=failed, step_motion=step_motion,
            step_from=previous[0].stamp if use_previous else math.nan)
        if small_from is not None and label >= small_from and not moves_clearly(
                detection, published_tracks, config.tracker):
            continue
        detections.append(detection)
        detection_labels.append(label)
    return detections, detection_labels


def _fit_failed(fit: RigidMotion) -> bool:
    """Whether a rigid fit measured no motion of its instance: fewer than half of the
    points agree with it, or its residual exceeds :data:`_FAILED_RESIDUAL_SIZES` times the
    instance's size (over several frames a fast object's optical flow reads other surfaces
    for much of it; held-out scenes: keyframe fits of a 0.15 m arm link with a 1.9 m
    residual)."""
    return fit.inlier_ratio < 0.5 or fit.rms > _FAILED_RESIDUAL_SIZES * fit.size


def _step_motion(config: PipelineConfig, region: np.ndarray,
                 previous: tuple[WindowFrame, PairView], scene_depth: float, noise: float,
                 label: int) -> np.ndarray | None:
    """``[4, 4]`` the rigid motion (world frame) of the instance at ``region`` since the
    previous frame, over ``previous`` (that frame and its pair with the current one), or
    None where that fit failed too (:func:`_fit_failed`) or has under 3 points. ``noise``
    is the keyframe pair's (the longer gap's, so no smaller): it only sets the inlier
    distance, as for the keyframe fit."""
    frame, pair = previous
    pixels = next((pixels for _, pixels, _ in _instance_pixels(
        region.astype(np.int32), 1, pair.valid_flow, config)), None)
    if pixels is None:
        return None
    fit = _fit(config, pair.j_ti.reshape(-1, 3)[pixels], pair.j_tj.reshape(-1, 3)[pixels],
               None, scene_depth, noise, label, pair.measured_depth)
    if _fit_failed(fit):
        return None
    return se3_compose(se3_compose(frame.T_world_cam, fit.T), se3_inverse(frame.T_world_cam))


#: A sensor-depth instance's motion threshold is lowered by its fit's standard error down to
#: this fraction of the per-pixel one (an instance of 4 x ``min_instance_frac`` or larger).
_SENSOR_FIT_MIN_FRAC = 0.5


def _sensor_fit_threshold(config: PipelineConfig, threshold: float, pixel_count: int,
                          image_pixels: int, scene_depth: float, dt: float,
                          hysteresis: float) -> float:
    """The motion ``threshold`` an instance's rigid fit over ``pixel_count`` pixels of
    depth-sensor points must pass.

    The pair's threshold (:func:`~pointmap_ros.tracking.segmentation.motion_threshold`) is
    set for one pixel: with a depth sensor its noise part is the sensor's noise, independent
    from pixel to pixel, and a rigid fit averages it over the instance, so its displacement
    noise falls as ``1 / sqrt(pixels)``. The threshold is scaled by ``sqrt(n_min / pixels)``
    (``n_min`` = ``min_instance_frac`` of the image, the smallest instance, which keeps the
    per-pixel threshold), at most down to :data:`_SENSOR_FIT_MIN_FRAC` of it, and never
    below the pair's speed and displacement floors (times ``hysteresis``), which say what
    counts as motion at all. A network's errors are correlated over whole regions, where
    averaging gains nothing: its maps keep the per-pixel threshold. On validation sequences
    (shipped model + depth camera) a large ball rolling slowly at 2.3 m was masked in every
    frame but detected in few; objects matched 18 -> 22 of 30 with 0 spurious tracks
    (oracle-two-map + depth 23 -> 24), docs/pipeline.md step 9.
    """
    smallest = config.min_instance_frac * image_pixels
    factor = min(1.0, max(_SENSOR_FIT_MIN_FRAC, math.sqrt(smallest / max(pixel_count, 1))))
    floor = threshold_of_flow(0.0, scene_depth, dt, config.motion_speed_rel,
                              config.motion_min_rel, config.motion_noise_mult)
    return max(hysteresis * floor, factor * threshold)


def _displacement(fit: RigidMotion, points: np.ndarray, along_ray: bool = True) -> float:
    """RMS distance ``fit`` moves ``points`` ``[N, 3]`` (a camera's frame); without its
    component along each point's viewing ray unless ``along_ray``."""
    points = points.astype(np.float64)
    moved = se3_apply(fit.T, points) - points
    if not along_ray:
        rays = points / np.linalg.norm(points, axis=1, keepdims=True)
        moved -= np.sum(moved * rays, axis=1, keepdims=True) * rays
    return float(np.sqrt(np.mean(np.sum(np.square(moved), axis=1))))


def fit_instances(config: PipelineConfig, labels: np.ndarray, count: int, view: PairView,
                  scene_depth: float, noise: float, aperture: ApertureMetric | None = None,
                  R_ref_cam: np.ndarray | None = None,
                  fitted: dict[int, RigidMotion] | None = None) -> dict[int, RigidMotion]:
    """Rigid motion of each instance over ``view``'s pair (reference frame, t_ref -> t).

    RANSAC + Umeyama on at most ``max_fit_points`` of the instance's pixels with known flow
    (the same fit as the object stage, and rigid only when the residual is also small next
    to the displacement, ``rigid_motion_residual_frac``); instances with fewer than 3 such
    pixels are left out. ``noise``: the pair's flow noise. Instances that are not rigid get
    a locally rigid motion of up to ``deforming_pieces`` pieces (:func:`fit_blended_motion`).

    With ``aperture`` (the current image's structure metric) and ``R_ref_cam`` (the
    current camera's orientation in the reference frame), rigid fits are then refined in
    each pixel's own metric (:func:`aperture_information`): a correspondence on an image
    stripe slides along it, so Umeyama's isotropic cost pulls the motion towards the
    slides (on a striped ball, towards no motion along the stripes); the refinement counts
    only the residual across the stripe and along the viewing ray. A rigid instance keeps
    an affine motion besides when that explains its residual (``affine_residual_frac``, a
    pulsing or stretching object): its published flow follows it.

    ``fitted``: single rigid fits already made of some instances' pixels, as this function
    makes them (:func:`split_instances`); they are not fitted again.
    """
    source, target = view.j_ti.reshape(-1, 3), view.j_tj.reshape(-1, 3)
    threshold = _fit_threshold(config, scene_depth, noise, view.measured_depth)
    fits = {}
    fitted = fitted or {}
    for label, pixels, _ in _instance_pixels(labels, count, view.valid_flow, config):
        if label in fitted:
            fit = fitted[label]
        else:
            fit = _fit(config, source[pixels], target[pixels], None, scene_depth, noise, label,
                       view.measured_depth, config.rigid_motion_residual_frac)
        if not fit.is_rigid:
            fit = dataclasses.replace(fit, blended=fit_blended_motion(
                source[pixels], target[pixels], threshold, config.deforming_pieces, fit.T,
                config.ransac_iterations, config.seed + label))
        else:
            information = None
            if aperture is not None and R_ref_cam is not None:
                # The matched points (source) carry the slides: residuals in their frame.
                information = aperture_information(aperture, pixels, R_ref_cam,
                                                   _fit_surface(view))
                earlier = refine_rigid_motion(se3_inverse(fit.T), target[pixels],
                                              source[pixels], information, threshold)
                fit = dataclasses.replace(fit, T=se3_inverse(earlier))
            fit = _with_affine(config, fit, source[pixels], target[pixels], threshold,
                               information)
        fits[label] = fit
    return fits


def split_instances(config: PipelineConfig, labels: np.ndarray, count: int,
                    pairs: list[tuple[PairView, float, np.ndarray]], scene_depth: float,
                    carried: np.ndarray | None, aperture: ApertureMetric | None = None
                    ) -> tuple[np.ndarray, int, dict[int, RigidMotion]]:
    """``labels`` with every instance that moves as several rigid bodies split into them,
    the new count (the split-off bodies numbered ``count + 1..``), and the single rigid
    fits it made of the instances it left whole, as :func:`fit_instances` makes them
    (which then reuses them).

    The link graph (:func:`~pointmap_ros.tracking.segmentation.segment_instances`) cuts
    only where neighbouring pixels jump in depth or in flow. Two objects that touch in the
    image at about the same depth stay one instance when the optical flow, smooth across
    boundaries, blends their motions there; the tracker then follows them as one object.
    Each instance's candidate motions, over the first of ``pairs`` (the published-flow
    pair), come from one of two sources:

    - *tracks*: the published tracks its pixels continue (``carried``,
      :func:`carried_track_ids`), each with ``instance_size_hysteresis`` of the smallest
      instance, their motions fitted on their own pixels. Two tracked objects that come to
      touch keep their tracks.
    - *residuals* (sequential RANSAC), when its single rigid fit is not rigid: a second fit
      on the first one's outliers, a third on what both leave, up to
      ``instance_split_bodies``. This separates objects that merged before either was
      tracked, or after a track was lost.

    Every pixel with a known flow goes to the motion that explains it best, and each
    motion's largest connected piece is a body. A split is kept only when it explains the
    instance: at least two bodies of the size their source needs (the smallest size for
    residual bodies, which are new objects), each rigid on its own, and moving apart from
    each other over one of ``pairs`` at least (:func:`_moving_apart`; the keyframe pair's
    longer baseline separates objects whose motions differ by little in one frame), judged
    where the optical flow measures motion (with ``aperture``: the matches' own metric, and
    only bodies whose texture fixes both flow components). Residual bodies pass
    :func:`fit_instances`' rigidity test; track bodies only its part relative to their size
    (a slow object's residual is not small next to its displacement in one frame, and its
    track already says it is one object). A rigid object the optical flow cut into two
    tracks earlier moves with one motion: its pieces merge again. A deforming object (a
    waving sheet) rarely has rigid parts of that size moving apart (on the validation
    scenes once in 230 frames, a sheet for one frame, with no track changed).

    Args:
        pairs: ``(pair, its flow noise, R_ref_cam)`` of the current frame (``R_ref_cam``
            rotates the current camera into the pair's reference camera), the
            published-flow pair first.
        aperture: the current image's structure metric (None: plain distances).
    """
    if count == 0 or config.instance_split_bodies < 2:
        return labels, count, {}
    view, noise, _ = pairs[0]
    height, width = labels.shape
    min_pixels = config.min_instance_frac * height * width
    fitter = _BodyFitter(config, view, scene_depth, noise)
    result = labels.copy()
    new_count = count
    whole_fits = {}
    for label, pixels, members in _instance_pixels(labels, count, view.valid_flow, config):
        known_count = len(members)
        motions, body_min = _track_motions(members, carried, config, min_pixels, fitter,
                                           label)
        from_tracks = len(motions) >= 2
        if not from_tracks:
            if known_count < 2 * min_pixels:
                continue
            whole_fits[label] = fitter.fit(pixels, label)
            motions, body_min = _residual_motions(whole_fits[label], pixels, known_count,
                                                  config, min_pixels, fitter, label), min_pixels
        if len(motions) < 2:
            continue
        bodies, body_motions = _rigid_bodies(members, motions, body_min, (height, width),
                                             fitter, label, against_motion=not from_tracks)
        if len(bodies) < 2 or not _moving_apart(bodies, body_motions, pairs, config,
                                                scene_depth, label, aperture):
            continue
        for body in bodies[1:]:
            new_count += 1
            result.ravel()[body] = new_count
        whole_fits.pop(label, None)
    return result, new_count, whole_fits


class _BodyFitter:
    """Rigid fits of pixel sets (flat indices) over one pair, on at most ``max_fit_points``
    of them (deterministic by the seed given), as :func:`fit_instances` fits instances."""

    def __init__(self, config: PipelineConfig, view: PairView, scene_depth: float,
                 noise: float):
        self.config, self.view = config, view
        self.scene_depth, self.noise = scene_depth, noise
        self.source, self.target = view.j_ti.reshape(-1, 3), view.j_tj.reshape(-1, 3)
        self.threshold = _fit_threshold(config, scene_depth, noise, view.measured_depth)

    def fit(self, points: np.ndarray, seed: int, against_motion: bool = True) -> RigidMotion:
        """The rigid fit of ``points``; ``against_motion``: rigid also needs the residual
        to be small next to the displacement (``rigid_motion_residual_frac``), not only
        next to the size."""
        if len(points) > self.config.max_fit_points:
            rng = np.random.default_rng(self.config.seed + seed)
            points = np.sort(rng.choice(points, self.config.max_fit_points, replace=False))
        return _fit(self.config, self.source[points], self.target[points], None,
                    self.scene_depth, self.noise, seed, self.view.measured_depth,
                    self.config.rigid_motion_residual_frac if against_motion else None)

    def residuals(self, motion: np.ndarray, points: np.ndarray,
                  information: np.ndarray | None = None) -> np.ndarray:
        """``[N]`` how far ``motion`` taken back from ``points``' current points lands
        from their matched earlier points, in the metric ``information`` (``[N, 3, 3]``,
        the matched points' frame; None: plain distance, which a rigid motion keeps: the
        same as ``|target - motion source|``)."""
        error = se3_apply(se3_inverse(motion), self.target[points].astype(np.float64))
        error -= self.source[points]
        if information is None:
            return np.linalg.norm(error, axis=1)
        return np.sqrt(np.einsum('ni,nij,nj->n', error, information, error))


def _track_motions(members: np.ndarray, carried: np.ndarray | None, config: PipelineConfig,
                   min_pixels: float, fitter: _BodyFitter, label: int
                   ) -> tuple[list[np.ndarray], float]:
    """:func:`split_instances`' candidate motions from the published tracks that the
    instance's pixels ``members`` (flat indices, known flow) continue, and the size a body
    then needs (a continuing instance's)."""
    body_min = max(3.0, config.instance_size_hysteresis * min_pixels)
    if carried is None:
        return [], body_min
    ids = carried.ravel()[members]
    tracks, counts = np.unique(ids[ids > 0], return_counts=True)
    tracks = tracks[counts >= body_min]
    if len(tracks) < 2:
        return [], body_min
    motions = [fitter.fit(members[ids == track], _seed(label, index)).T
               for index, track in enumerate(tracks)]
    return motions, body_min


def _residual_motions(first: RigidMotion, pixels: np.ndarray, known_count: int,
                      config: PipelineConfig, min_pixels: float, fitter: _BodyFitter,
                      label: int) -> list[np.ndarray]:
    """:func:`split_instances`' candidate motions by sequential RANSAC on the instance's
    fit sample ``pixels``, whose single rigid fit is ``first``: none when that is rigid;
    else each further motion fitted on what the earlier ones leave unexplained, while that
    is at least the smallest instance (the sample's share of ``known_count`` pixels)."""
    if first.is_rigid:
        return []
    motions = [first.T]
    unexplained = pixels
    while len(motions) < config.instance_split_bodies:
        residual = np.min([fitter.residuals(motion, unexplained) for motion in motions],
                          axis=0)
        unexplained = unexplained[residual > fitter.threshold]
        if len(unexplained) < 3 or len(unexplained) * known_count < min_pixels * len(pixels):
            break
        motions.append(fitter.fit(unexplained, _seed(label, len(motions))).T)
    return motions


def _rigid_bodies(members: np.ndarray, motions: list[np.ndarray], body_min: float,
                  shape: tuple[int, int], fitter: _BodyFitter, label: int,
                  against_motion: bool) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each motion's pixels among ``members`` (the one that explains them best), their
    largest 4-connected piece, kept when it holds ``body_min`` pixels and is rigid on its
    own (``against_motion``: as :meth:`_BodyFitter.fit`): the bodies of
    :func:`split_instances` (flat pixel indices, largest first) and their own motions."""
    best = np.argmin([fitter.residuals(motion, members) for motion in motions], axis=0)
    bodies = []
    for index in range(len(motions)):
        region = np.zeros(shape[0] * shape[1], np.uint8)
        region[members[best == index]] = 1
        pieces_count, pieces, stats, _ = cv2.connectedComponentsWithStats(
            region.reshape(shape), connectivity=4)
        if pieces_count < 2:
            continue
        largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        body = np.flatnonzero(pieces.ravel() == largest)
        if len(body) < body_min:
            continue
        fit = fitter.fit(body, _seed(label, index, 1), against_motion)
        if fit.is_rigid:
            bodies.append((body, fit.T))
    bodies.sort(key=lambda body: len(body[0]), reverse=True)
    return [body for body, _ in bodies], [motion for _, motion in bodies]


def _moving_apart(bodies: list[np.ndarray], motions: list[np.ndarray],
                  pairs: list[tuple[PairView, float, np.ndarray]], config: PipelineConfig,
                  scene_depth: float, label: int, aperture: ApertureMetric | None) -> bool:
    """Whether every two of ``bodies`` move apart over at least one of ``pairs``: one's
    points lie off the other's rigid motion (median residual above the fit's inlier
    distance). Either direction counts: a rotation about a point of one body barely moves
    that body's points, but does move the other's. ``motions``: the bodies' motions over
    the first pair (all their pixels have a known flow there).

    Residuals are measured as the rigid fits' refinement measures them (each matched
    point's own metric, :func:`aperture_information`, when ``aperture`` is given): a match
    slid along an image stripe is no evidence of another motion. And a body counts as off
    another's motion only where its texture fixes both flow components (median
    structure-tensor isotropy at least ``flow_depth_min_isotropy``, as for the depth
    test): on a striped ball DIS errs across the stripes too, by more than the fit's inlier
    distance (without this, a test sequence's striped ball, 2000501, came out as two bodies
    moving apart, which kept two tracks)."""
    textured = [aperture is None or np.median(aperture.isotropy.ravel()[body])
                >= config.flow_depth_min_isotropy for body in bodies]
    apart = np.eye(len(bodies), dtype=bool)
    for pair_index, (view, noise, R_ref_cam) in enumerate(pairs):
        fitter = _BodyFitter(config, view, scene_depth, noise)
        known = [body[view.valid_flow.ravel()[body]] for body in bodies]
        if any(len(points) < 3 for points in known):
            continue
        if pair_index > 0:
            motions = [fitter.fit(points, _seed(label, index, 2)).T
                       for index, points in enumerate(known)]
        off = np.zeros((len(bodies), len(bodies)), bool)
        for row, points in enumerate(known):
            information = (None if aperture is None
                           else aperture_information(aperture, points, R_ref_cam,
                                                     _fit_surface(view)))
            for column, motion in enumerate(motions):
                residual = fitter.residuals(motion, points, information)
                off[row, column] = textured[row] and np.median(residual) > fitter.threshold
        apart |= off | off.T
    return bool(apart.all())


def _seed(label: int, index: int, stage: int = 0) -> int:
    """A distinct RANSAC seed per instance, candidate and stage of :func:`split_instances`."""
    return label + 1000 * (1 + index + 10 * stage)


def _with_affine(config: PipelineConfig, fit: RigidMotion, source: np.ndarray,
                 target: np.ndarray, threshold: float,
                 information: np.ndarray | None) -> RigidMotion:
    """``fit`` with its affine motion kept when that leaves at most
    ``affine_residual_frac`` of the rigid motion's residual (trimmed RMS over the same
    points): a deformation of the whole instance, not noise, which an affine fit with 6 more
    unknowns would also reduce, but by far less on hundreds of points.

    Fit and residuals are measured as the pose refinement measures them
    (``information``, the matched points' frame): the earlier time's points ``source`` are
    the ones that slide with their matches, so the affine motion is fitted backwards
    (``target -> source``) and inverted. Without that metric, a striped ball's matches slid
    along its stripes look like a stretch.
    """
    if config.affine_residual_frac <= 0:
        return fit
    source, target = source.astype(np.float64), target.astype(np.float64)
    backward = se3_inverse(fit.T)
    affine_backward = fit_affine_motion(target, source, backward, threshold, information)

    def residual(motion: np.ndarray) -> float:
        error = se3_apply(motion, target) - source
        if information is None:
            return trimmed_rms(np.linalg.norm(error, axis=1))
        return trimmed_rms(np.sqrt(np.einsum('ni,nij,nj->n', error, information, error)))

    if residual(affine_backward) <= config.affine_residual_frac * residual(backward):
        return dataclasses.replace(fit, affine=np.linalg.inv(affine_backward))
    return fit


#: :func:`aperture_information`: a central difference of the surface's points longer than
#: this fraction of the point's distance spans a depth edge, not one surface (a pixel spans
#: about 1 % of the distance at the shipped model's field of view and resolution).
_SURFACE_STEP = 0.05


def _fit_surface(view: PairView) -> np.ndarray | None:
    """The surface :func:`aperture_information` reads ``view``'s matches on: its current
    points, or None on maps that carry a depth sensor's measurements, whose per-pixel noise
    (1 % of the depth is about the spacing of neighbouring points) turns the normal of a
    central difference at random (test seeds, oracle-two-map + depth camera: moving-pixel
    flow error 0.210 -> 0.214 of zero flow's with it)."""
    return None if view.measured_depth else view.j_tj


def aperture_information(aperture: ApertureMetric, pixels: np.ndarray,
                         R_ref_cam: np.ndarray, surface: np.ndarray | None) -> np.ndarray:
    """``[N, 3, 3]`` information matrices of the correspondence points of ``pixels``
    (flattened indices; reference camera frame), for :func:`refine_rigid_motion`.

    A correspondence's point moves with its match, along the surface it lies on: a match
    slid by ``d`` pixels moves it by ``A d``, ``A`` (``[3, 2]``) the derivative of that
    surface along the image axes. ``surface`` (``[H, W, 3]``) is the pair's current points
    ``j_tj``: the same surface turned by the object's motion since the reference time (a
    few degrees over a window's gaps), and unlike the matched points themselves free of the
    optical flow's error. The optical flow measures the slide only across the image
    structure (the normalised structure tensor ``J``, :class:`ApertureMetric`), so the
    information is ``n n^T + Q J Q^T``: full along the surface normal ``n`` (a slide keeps
    the point on its surface) and, within the tangent plane, what ``J`` measures, carried
    onto the plane by ``Q = A (A^T A)^(-1/2)``. On texture that is the identity; on a flat
    face the normal alone (point-to-plane, as in ICP); on a stripe the normal and the
    direction across it. Where ``surface`` gives no plane (None, a neighbour without a
    point, or a depth edge between the neighbours, :data:`_SURFACE_STEP`) the plane facing
    the camera stands in: the structure tensor in the current camera's axes, full along
    the optical axis, rotated into the reference frame.
    On a slanted plain face the camera-facing plane counted a slid match's change of depth
    as a measured one (validation, oracle-two-map: moving-pixel flow error over zero flow's,
    plain objects 0.577 -> 0.556, textured 0.150 -> 0.149).
    """
    structure = np.zeros((len(pixels), 2, 2))
    structure[:, 0, 0] = aperture.xx.ravel()[pixels]
    structure[:, 0, 1] = structure[:, 1, 0] = aperture.xy.ravel()[pixels]
    structure[:, 1, 1] = aperture.yy.ravel()[pixels]
    facing = np.zeros((len(pixels), 3, 3))
    facing[:, :2, :2] = structure
    facing[:, 2, 2] = 1.0
    rotation = np.asarray(R_ref_cam, np.float64)
    facing = rotation @ facing @ rotation.T
    if surface is None:
        return facing
    tangents, on_surface = _surface_tangents(surface, pixels)
    if not on_surface.any():
        return facing
    along_columns, along_rows = tangents[on_surface, :, 0], tangents[on_surface, :, 1]
    # Q = A (A^T A)^(-1/2), with the 2 x 2 square root in closed form: for the Gram matrix
    # G, sqrt(G) = (G + s I) / t, s = sqrt(det G) = |a x b|, t = sqrt(trace G + 2 s).
    gram_11 = np.einsum('ni,ni->n', along_columns, along_columns)
    gram_12 = np.einsum('ni,ni->n', along_columns, along_rows)
    gram_22 = np.einsum('ni,ni->n', along_rows, along_rows)
    normal = np.cross(along_columns, along_rows)
    root_det = np.linalg.norm(normal, axis=1)
    normal /= root_det[:, None]
    scale = (root_det * np.sqrt(gram_11 + gram_22 + 2 * root_det))[:, None]
    plane_x = (along_columns * (gram_22 + root_det)[:, None]
               - along_rows * gram_12[:, None]) / scale
    plane_y = (along_rows * (gram_11 + root_det)[:, None]
               - along_columns * gram_12[:, None]) / scale

    def outer(left: np.ndarray, right: np.ndarray) -> np.ndarray:
        return left[:, :, None] * right[:, None, :]

    structure = structure[on_surface]
    information = facing  # a local array: the surface's pixels are written over in place
    information[on_surface] = (
        outer(normal, normal) + structure[:, 0, 0, None, None] * outer(plane_x, plane_x)
        + structure[:, 0, 1, None, None] * (outer(plane_x, plane_y) + outer(plane_y, plane_x))
        + structure[:, 1, 1, None, None] * outer(plane_y, plane_y))
    return information


def _surface_tangents(points: np.ndarray, pixels: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(``[N, 3, 2]`` central differences of ``points`` (``[H, W, 3]``) along the image
    columns and rows at ``pixels``, ``[N]`` bool where they describe one surface: inside the
    image, every neighbour with a point, each difference shorter than
    :data:`_SURFACE_STEP` of the point's distance and the two not parallel)."""
    height, width = points.shape[:2]
    rows, columns = np.divmod(np.asarray(pixels), width)
    inside = (rows > 0) & (rows < height - 1) & (columns > 0) & (columns < width - 1)
    rows, columns = np.clip(rows, 1, height - 2), np.clip(columns, 1, width - 2)

    def at(row_offset: int, column_offset: int) -> np.ndarray:
        return points[rows + row_offset, columns + column_offset].astype(np.float64)

    along_columns = (at(0, 1) - at(0, -1)) / 2
    along_rows = (at(1, 0) - at(-1, 0)) / 2
    tangents = np.stack([along_columns, along_rows], axis=-1)
    distance = np.linalg.norm(at(0, 0), axis=1)
    with np.errstate(invalid='ignore'):
        step = np.linalg.norm(tangents, axis=1).max(axis=1)
        area = np.linalg.norm(np.cross(along_columns, along_rows), axis=1)
        on_surface = inside & (step < _SURFACE_STEP * distance) & (area > 1e-6 * step ** 2)
    return np.where(on_surface[:, None, None], tangents, 0.0), on_surface


def _instance_pixels(labels: np.ndarray, count: int, known: np.ndarray,
                     config: PipelineConfig):
    """Per instance with >= 3 pixels of known flow: ``(label, flat pixel indices, all
    such pixels)``, the indices a sorted random subset of ``max_fit_points`` at most (the
    fit needs far fewer points than pixels; deterministic by ``config.seed``)."""
    rng = np.random.default_rng(config.seed)
    # Labelled pixels with known flow (a small part of the image), then one comparison per
    # instance (a handful): cheaper than sorting them by label.
    labelled = np.flatnonzero(labels)
    labelled = labelled[known.ravel()[labelled]]
    labelled_as = labels.ravel()[labelled]
    for label in range(1, count + 1):
        members = labelled[labelled_as == label]
        pixels = members
        if len(members) < 3:
            continue
        if len(members) > config.max_fit_points:
            pixels = np.sort(rng.choice(members, config.max_fit_points, replace=False))
        yield label, pixels, members


def _fit(config: PipelineConfig, source: np.ndarray, target: np.ndarray,
         weights: np.ndarray | None, scene_depth: float, noise: float, label: int,
         measured_depth: bool, motion_residual_frac: float | None = None) -> RigidMotion:
    """One instance's rigid fit. Residuals of a correct fit are differences of two noisy
    points, like the flow of static pixels: its median (``noise``) scales the inlier
    threshold (:func:`_fit_threshold`), and its RMS (1.13 x the median for a 3D Gaussian
    difference) is what noise alone explains."""
    return fit_rigid_motion(
        source.astype(np.float64), target.astype(np.float64), weights,
        _fit_threshold(config, scene_depth, noise, measured_depth), config.rigid_residual_rel,
        config.ransac_iterations, config.seed + label, noise_rms=1.13 * noise,
        motion_residual_frac=motion_residual_frac)


def _fit_threshold(config: PipelineConfig, scene_depth: float, noise: float,
                   measured_depth: bool) -> float:
    """Inlier distance (and robust scale) of a rigid fit: relative to the scene, and on
    network maps at least 2.5 x the pair's noise.

    A network's depth errors are correlated over whole regions, so a correct fit leaves
    residuals of the noise's size that no averaging removes: the threshold must admit them.
    A depth sensor's noise (``measured_depth``) is independent from pixel to pixel and the
    fit averages it over the instance (as :func:`_sensor_fit_threshold` says); what the
    threshold must then reject are correspondences that slid, mostly at the instance's
    outline, where the optical flow mixes the object's motion with the background's. A
    threshold raised to the sensor's noise let them in and pulled the motion towards the
    background's. Without the noise term, on validation sequences (shipped model + depth
    camera; docs/pipeline.md, correspondences step 7) the moving pixels' flow error fell
    0.308 -> 0.305 of the zero-flow error (0.363 -> 0.349 with 2 % depth noise) and the
    objects' origin error by 12 %.
    """
    relative = config.ransac_threshold_rel * scene_depth
    return relative if measured_depth else max(relative, 2.5 * noise)


def moving_object_fits(labels: np.ndarray, fits: dict[int, RigidMotion], view: PairView,
                       maps_trusted: bool, motion_threshold: float,
                       carried: np.ndarray | None,
                       along_ray: bool = True) -> dict[int, RigidMotion]:
    """The fits of the instances with evidence that they are moving objects: all of them
    when a depth sensor measured ``view``'s depths and the camera test trusted them (then
    the tests that made the instances read real geometry); else those whose fit moves their
    points by ``motion_threshold`` (RMS, the pair's 3D motion threshold: the rule
    :func:`detect_objects` applies to objects), or most of whose pixels continue a
    published track (``carried``, :func:`carried_track_ids`; None without one).

    ``along_ray``: the pair's motion along the viewing rays counts
    (:func:`~pointmap_ros.pipeline.scene_flow.keeps_flow_along_ray`). Where nothing vouches
    for the pair's depths it does not: a network's two depths of a patch err independently,
    so along the rays its fit "moves" by their difference, and the published flow drops
    that component (:func:`~pointmap_ros.pipeline.scene_flow.across_rays`); the motion of
    the whole is then measured across the rays (validation, shipped model + odometry:
    motion IoU 0.715 -> 0.717, flow error over zero flow's 1.46 -> 1.29; oracle-two-map
    0.163 -> 0.162, with odometry unchanged).

    Never a fit whose residual exceeds :data:`_MAX_RESIDUAL_SIZES` times its size: it
    explains nothing of its points.

    Only these instances are completed (:func:`complete_instances`) and publish their fitted
    motion as flow. On a network's maps the tests flag static structure where the depth or
    the optical flow errs, and such a patch neither moves as a whole nor continues a track:
    grown, it spread over the static surface around it (on validation the shipped model's
    growth added 0.058 of the moving pixels' count as false motion for 0.004 true), and its
    fit, the depth errors of its two frames, was published as the static pixels' flow (on
    validation 54 % of the shipped model's flow error, docs/pipeline.md step 8). Trusted
    sensor pairs keep every instance: there a fragment of a slow object, before its track is
    published, may move less than the threshold in one frame (the rule on them cost the
    shipped model with a depth camera 0.816 -> 0.802 motion IoU).
    """
    explained = {label: fit for label, fit in fits.items()
                 if fit.rms <= _MAX_RESIDUAL_SIZES * fit.size}
    if maps_trusted and view.measured_depth:
        return explained
    return {label: fit for label, fit in explained.items()
            if _is_moving_object(labels == label, fit, view, motion_threshold, carried,
                                 along_ray)}


def complete_instances(labels: np.ndarray, fits: dict[int, RigidMotion], view: PairView,
                       T_ref_cam: np.ndarray, K: np.ndarray, points_cam: np.ndarray,
                       aperture: ApertureMetric, config: PipelineConfig,
                       size: tuple[int, int], maps_trusted: bool) -> np.ndarray:
    """:func:`grow_instances` on ``view`` (the published-flow pair) for the instances of
    ``fits`` (those :func:`moving_object_fits` kept: growth takes an instance for a moving
    object and completes it), with the camera test's residual under the current pose
    ``T_ref_cam`` and growth ranges from the image size: an eighth of the image at most, a
    third of that through pixels the flow cannot judge.

    ``maps_trusted``: the camera test trusted this pair's depths (see
    :func:`_growth_surface`).
    """
    camera_residual = pose_residual(points_cam, T_ref_cam, K, view.pixel_flow.backward,
                                    aperture)
    max_steps = max(size) // 8
    return grow_instances(labels, fits, view, K, camera_residual, aperture,
                          config.flow_min_px * view.pixel_flow.pixel_scale,
                          config.cluster_jump_rel, max_steps, max(2, max_steps // 3),
                          maps_trusted)


#: A fit whose residual exceeds this many times the instance's own size (its points' RMS
#: radius) explains nothing: its correspondences are mostly wrong (a fast object's first
#: frames, where the optical flow lost it; the free-space test flags such pixels although
#: no flow matches them), and its motion, or the blended pieces of a non-rigid one, sent
#: flow metres off (varied validation scenes, oracle-two-map: moving-pixel ratio 0.224 ->
#: 0.200 with the rule; the default scenes unchanged at 2, 0.1543 -> 0.1549 at 1).
_MAX_RESIDUAL_SIZES = 2.0

#: A keyframe fit whose residual exceeds this many times the instance's size measured no
#: motion (:func:`_fit_failed`). Stricter than :data:`_MAX_RESIDUAL_SIZES`, which decides
#: whether a fit's flow is published at all: here a stand-in exists (the fit since the
#: previous frame), so a doubtful keyframe fit gives way to it.
_FAILED_RESIDUAL_SIZES = 1.0


def _is_moving_object(region: np.ndarray, fit: RigidMotion, view: PairView,
                      motion_threshold: float, carried: np.ndarray | None,
                      along_ray: bool) -> bool:
    """:func:`moving_object_fits`' evidence that the instance at ``region`` (``[H, W]``
    bool) is a moving object: it moves as a whole, or it continues a published track."""
    if _displacement(fit, view.j_ti[region & view.valid_flow], along_ray) >= motion_threshold:
        return True
    if carried is None:
        return False
    # Most of its pixels with a known place a frame ago lay on a published track.
    region_carried = carried[region]
    return 2 * np.count_nonzero(region_carried > 0) > np.count_nonzero(
        region_carried != PLACE_UNKNOWN)


def grow_instances(labels: np.ndarray, fits: dict[int, RigidMotion], view: PairView,
                   K: np.ndarray, camera_residual: np.ndarray, aperture: ApertureMetric,
                   threshold_px: float, jump_rel: float, max_steps: int,
                   border_steps: int, maps_trusted: bool) -> np.ndarray:
    """Instance labels extended over the parts of each rigid object the camera test missed.

    The camera test cannot see motion along image stripes (aperture) or on flat texture.
    A rigid object's pixels share one motion, so a pixel next to instance k joins it when
    its image motion does not contradict k's rigid motion -- the position it had in the
    reference image if it moved with k, ``pi(K T_k^-1 P_j(t_j))``, is within
    ``max(threshold_px, camera residual)`` of where the flow says it was, measured across the
    image structure; where the flow is unknown (flat texture, occlusion) only within
    ``border_steps`` rings -- and it lies on the same surface (growth never enters a pixel
    behind a depth jump of more than ``jump_rel``: the object's own outline joins, the
    background just behind it does not, and growth cannot pass that ring) within the object's
    extent (twice its RMS radius from its centroid: a floor under a ball whose stripes hide
    the ball's motion is not the ball). At most ``max_steps`` one-pixel rings are added.
    Non-rigid instances (no motion model to check the flow against) only close their border.
    On trusted maps an instance also takes the flat regions it encloses (most of the judged
    pixels around them are its own; :meth:`_FlatRegions.enclosed_by`): the plain faces of
    an object whose outline alone the motion test could judge.

    Args:
        labels: ``[H, W]`` int32 instances (0 = static).
        fits: fits of the instances (:func:`fit_instances`).
        view: the pair the fits belong to (with its pixel flow).
        K: intrinsics.
        camera_residual: ``[H, W]`` the camera test's residual for this pair (NaN where it
            could not judge).
        aperture: the current image's structure metric.
        maps_trusted: the maps' depths are reliable (:func:`_growth_surface`).
    """
    if not fits:
        return labels
    surface = _growth_surface(view, jump_rel, maps_trusted)
    # On trusted maps a pixel behind a depth edge may still join through a link to the
    # region itself: an object's pixels next to a nearer occluder are on its surface.
    linked = None
    if maps_trusted:
        linked = _Linked.of(view.valid_j & ~surface, view.j_tj[..., 2], jump_rel)
    judged = view.pixel_flow.backward_valid & aperture.textured
    unjudged, everywhere = ~judged, np.ones_like(judged)
    flat_regions = _FlatRegions.of(unjudged & surface) if maps_trusted else None
    allowed_residual = np.maximum(
        threshold_px, np.where(np.isfinite(camera_residual), camera_residual, np.float32(0)))
    grown = labels.copy()
    points = view.j_tj.astype(np.float64)
    for label, fit in fits.items():
        centroid = np.nanmean(points[labels == label], axis=0)
        near = np.sum(np.square(points - centroid), axis=-1) <= (2.0 * fit.size) ** 2
        if fit.is_rigid:
            consistent = judged & (_object_residual(fit, view, K, aperture) <= allowed_residual)
            unknown = unjudged
        else:  # no motion to check the flow against: the border closes over any pixel
            consistent, unknown = np.zeros_like(judged), everywhere
        free = near & (grown == 0)
        region = _grow_region(grown == label, surface & free, consistent, unknown, max_steps,
                              border_steps, linked, free)
        if flat_regions is not None:
            region |= flat_regions.enclosed_by(region, judged) & free
        grown[region & (grown == 0)] = label
    return grown


@dataclasses.dataclass(frozen=True)
class _FlatRegions:
    """The 4-connected regions of pixels without flow evidence on a growth surface (flat
    texture, occlusion), for :meth:`enclosed_by`."""

    components: np.ndarray  # [H, W] int32, 0 = none
    boxes: np.ndarray       # [n, 4] left, top, width, height (OpenCV's stats)

    #: Share of a flat region's judged outline that must lie on the instance.
    ENCLOSED_SHARE = 0.5

    @classmethod
    def of(cls, flat: np.ndarray) -> '_FlatRegions':
        _, components, stats, _ = cv2.connectedComponentsWithStats(
            flat.view(np.uint8), connectivity=4, ltype=cv2.CV_32S)
        return cls(components, stats[:, :4])

    def enclosed_by(self, region: np.ndarray, judged: np.ndarray) -> np.ndarray:
        """``[H, W]`` the flat regions next to ``region`` (an instance, ``[H, W]`` bool)
        that it encloses: at least :attr:`ENCLOSED_SHARE` of the judged pixels around each
        lie in ``region`` rather than on static structure or another instance.

        A plain face of a moving object shows no motion inside its outline (nothing to
        match, and a face sliding within its own plane leaves no free space either), so only
        its outline is judged, and the border rings of growth cross just a few pixels of it.
        A face is bounded by its own edges; a flat floor or wall next to an object mostly by
        static texture.
        """
        enclosed = np.zeros_like(region)
        touching = self.components[cv2.dilate(region.view(np.uint8), _CROSS) > 0]
        height, width = region.shape
        for index in np.unique(touching[touching > 0]):
            left, top, box_width, box_height = self.boxes[index]
            rows = slice(max(top - 1, 0), min(top + box_height + 1, height))
            cols = slice(max(left - 1, 0), min(left + box_width + 1, width))
            piece = self.components[rows, cols] == index
            around = (cv2.dilate(piece.view(np.uint8), _SQUARE) > 0) & ~piece
            on_instance = np.count_nonzero(around & region[rows, cols])
            elsewhere = np.count_nonzero(around & judged[rows, cols] & ~region[rows, cols])
            if on_instance and on_instance >= self.ENCLOSED_SHARE * (on_instance + elsewhere):
                enclosed[rows, cols] |= piece
        return enclosed


def _growth_surface(view: PairView, jump_rel: float, maps_trusted: bool) -> np.ndarray:
    """``[H, W]`` pixels growth may enter: valid ones not behind a depth edge (no 8-neighbour
    nearer by more than ``jump_rel``); on maps the camera test did not trust, only pixels
    off any depth edge (4-neighbours within ``jump_rel`` of each other).

    Growth is by 8-neighbour rings, so the ring of background pixels next to an object's
    outline is a wall it cannot pass. The outline itself lies next to the far background,
    yet it is on the object's surface: testing every pixel for an edge, the rule until
    2026-12-06, kept it out, one pixel ring of each object (on validation sequences,
    oracle-two-map and the shipped model with a depth sensor, 40 % of the moving pixels the
    growth could not reach). A network whose maps the camera test did not trust blurs depth
    edges into ramps of small steps, which a one-sided test climbs into the background (a
    link test between neighbours, measured on validation for every pair: shipped model motion
    IoU 0.601 -> 0.588), so there both sides of an edge stay out.
    """
    depth = view.j_tj[..., 2]
    known = np.isfinite(depth)
    if maps_trusted:
        nearest = cv2.erode(np.where(known, depth, np.float32(np.inf)), _SQUARE)
        return view.valid_j & (depth - nearest <= jump_rel * depth)
    depth = np.where(known, depth, np.float32(0))
    spread = cv2.dilate(depth, _CROSS) - cv2.erode(depth, _CROSS)
    return view.valid_j & (spread <= jump_rel * np.maximum(depth, 1e-9))


def _object_residual(fit: RigidMotion, view: PairView, K: np.ndarray,
                     aperture: ApertureMetric) -> np.ndarray:
    """``[H, W]`` distance (across the image structure) between where each current pixel
    was in the reference image had it moved with ``fit`` and where the flow says it was."""
    height, width = view.j_tj.shape[:2]
    grid = np.stack(np.meshgrid(np.arange(width, dtype=np.float32),
                                np.arange(height, dtype=np.float32)), axis=-1)
    earlier = project(se3_apply(se3_inverse(fit.T), view.j_tj.astype(np.float64)), K)
    return aperture.length((earlier - (grid + view.pixel_flow.backward)).astype(np.float32))


#: The 8-neighbourhood as (row, column) offsets.
_EIGHT = np.array([(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx])


@dataclasses.dataclass(frozen=True)
class _Linked:
    """Pixels that join a growing region only through a depth link to it: each of
    ``pixels`` (flat indices) joins when one of its 8-neighbours (``neighbours``, flat
    indices) is in the region and ``close`` (its depth within ``jump_rel`` of the pixel's).

    Built once per frame for the few pixels behind a depth edge (object outlines), so each
    growth ring costs a gather over them, not a pass over the image.
    """

    pixels: np.ndarray      # [n] int64
    neighbours: np.ndarray  # [n, 8] int64 (the pixel itself outside the image)
    close: np.ndarray       # [n, 8] bool

    @classmethod
    def of(cls, candidates: np.ndarray, depth: np.ndarray, jump_rel: float) -> '_Linked':
        """The links of ``candidates`` (``[H, W]`` bool) on ``depth`` (``[H, W]``, NaN =
        unknown: no link)."""
        height, width = candidates.shape
        rows, cols = np.nonzero(candidates)
        neighbour_rows = rows[:, None] + _EIGHT[:, 0]
        neighbour_cols = cols[:, None] + _EIGHT[:, 1]
        inside = ((neighbour_rows >= 0) & (neighbour_rows < height)
                  & (neighbour_cols >= 0) & (neighbour_cols < width))
        pixels = rows.astype(np.int64) * width + cols
        neighbours = np.where(inside, neighbour_rows * width + neighbour_cols, pixels[:, None])
        flat_depth = depth.reshape(-1)
        here = flat_depth[pixels][:, None]
        # NaN depths compare False: no link through unknown geometry.
        close = inside & (np.abs(flat_depth[neighbours] - here) <= jump_rel * np.abs(here))
        return cls(pixels, neighbours, close)

    def ring(self, region: np.ndarray, *allowed: np.ndarray) -> np.ndarray:
        """Flat indices of the pixels allowed by every ``allowed`` (``[H, W]`` bool), linked
        to ``region`` (``[H, W]`` bool) and not in it (read at the pixels only: a growth
        ring calls this once per instance)."""
        flat_region = region.reshape(-1)
        pending = ~flat_region[self.pixels]
        for mask in allowed:
            pending &= mask.reshape(-1)[self.pixels]
        if not pending.any():
            return self.pixels[:0]
        linked = (flat_region[self.neighbours[pending]] & self.close[pending]).any(axis=1)
        return self.pixels[pending][linked]


def _grow_region(region: np.ndarray, candidates: np.ndarray, consistent: np.ndarray,
                 unknown: np.ndarray, max_steps: int, border_steps: int,
                 linked: _Linked | None = None,
                 linked_allowed: np.ndarray | None = None) -> np.ndarray:
    """``region`` grown by one-pixel rings over ``candidates``: ``consistent`` ones (flow that
    agrees with the motion), and for the first ``border_steps`` rings also those whose flow
    is ``unknown`` (closing the object's border: pixels the flow cannot judge). ``linked``:
    more candidates (where ``linked_allowed``), on the same evidence, that join only through
    a depth link to the region (:class:`_Linked`).

    Until 2026-12-06 the border rings took any candidate, also pixels whose flow contradicts
    the motion: with the outline joining (:func:`_growth_surface`), that took the floor
    under an object hovering a few centimetres above it (within ``jump_rel`` of its depth).
    """
    region = region.view(np.uint8)
    for step in range(max_steps):
        evidence = (consistent | unknown) if step < border_steps else consistent
        ring = (cv2.dilate(region, _SQUARE) > 0) & candidates & evidence
        if linked is not None:
            ring.reshape(-1)[linked.ring(region.view(bool), evidence, linked_allowed)] = True
        if not ring.any():
            break
        candidates = candidates & ~ring
        region = (region.view(bool) | ring).view(np.uint8)
    return region.view(bool)
