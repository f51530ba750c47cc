"""Parameters of :class:`~pointmap_ros.pipeline.DynamicReconPipeline` and their validation.

The ROS node reads defaults from this dataclass and swaps a validated instance in at run
time (dynamic parameters), so the pipeline reads ``config`` on every frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from pointmap_ros.errors import ConfigError
from pointmap_ros.pipeline.correspondence import CROSS_TIME_SOURCES, FLOW_PRESETS
from pointmap_ros.pipeline.scene_flow import FLOW_ALONG_RAY
from pointmap_ros.tracking.tracker import TrackerConfig

__all__ = ['PipelineConfig']


@dataclass
class PipelineConfig:
    """Parameters of :class:`DynamicReconPipeline` (``*_rel`` = relative to median depth).

    Attributes:
        input_size: ``(H, W)`` model resolution when the engine accepts any size.
        window_size: processed frames kept besides the keyframe.
        pair_gaps: pair each frame with the frames this many positions back.
        keyframe_min_overlap: switch keyframe when fewer of the current pixels fall inside it.
        keyframe_min_confidence: switch when the keyframe pair's mean confidence is lower.
        keyframe_max_age: switch after this many frames (0 = never by age).
        flow_keyframe_max_age, flow_keyframe_max_age_s: with correspondences, also switch
            once the keyframe is both this many frames and this many seconds old (0 turns
            either limit off; both 0 = never). Optical flow across a long gap degrades
            (network cross-time maps relate any two frames directly, St4RTrack-style, and do
            not need it): on the validation scenes (10 fps) 4 frames gave motion IoU 0.93 and
            24/27 objects matched with 3 id switches, against 0.86, 13/27 and 31 without (2:
            0.91; 8: 0.91, 19/27). Both, since session 24: the keyframe pair is the motion
            tests' longest baseline, and what they need is how far things moved, so at a
            camera's 30 fps 4 frames were too short (validation, 72 frames: IoU 0.854 with
            4 frames, 0.913 with 8, 0.928 with 12 = 0.4 s; 0.966 at 10 fps); and a
            keyframe pair that spans a single frame leaves the tests one pair, so at 1 fps
            (the real clips) a limit in seconds alone switched every frame and lost most of
            the stroller's mask.
        flow_motion_baseline_s: with correspondences on maps as precise as the optical
            flow (the last frame's keyframe pair), a frame whose keyframe is younger than
            this (seconds) is also paired with the newest window frame at least this much
            older (the oldest one when none is; 0 = never): right after a keyframe switch
            the keyframe pair spans a frame or two, and a slow object moves less than the
            motion tests can see over that. Validation (oracle-two-map): at 30 fps (72
            frames, with ``flow_keyframe_max_age_s`` 0.4) motion IoU 0.928 -> 0.958, at
            10 fps 0.965 -> 0.970. On a network's noisy maps the noise floor limits the
            tests, not the baseline: the pair cost the shipped model flow accuracy (moving
            pixels 1.117 -> 1.138 of zero flow's) for +0.002 IoU, so it is not made there.
        conf_threshold, conf_keep_quantile: confidence gate (see geometry/pointmap.py).
        motion_speed_rel: moving = faster than this fraction of the scene depth per second...
        motion_min_rel: ...and displaced more than this fraction of the scene depth...
        motion_noise_mult: ...and more than this multiple of the median flow (noise floor).
        flow_smooth_radius: when that noise floor dominates, decide on flow box-filtered
            over ``2r + 1`` pixels (0 = never).
        min_region_frac: motion blobs/holes smaller than this fraction of the image vanish
            (a network's depths: its errors flag small patches of static structure, ~20
            pixels at 96x128; on validation 598 such blobs, 47 on moving objects).
        min_region_frac_measured: the same where a depth sensor measured the keyframe
            pair's depths (its noise is per pixel, and small blobs there are mostly the
            first pieces of real objects).
        cluster_jump_rel, cluster_flow_jump_rel: 3D / flow discontinuity splitting instances.
        min_instance_frac: smallest instance, as a fraction of the image.
        instance_size_hysteresis: an instance that alone continues a published track (most
            of its pixels lay on it a frame ago) needs only this fraction of
            ``min_instance_frac`` (a receding object keeps its track; births keep the full
            size).
        small_birth_frac: a smaller instance, down to this fraction of
            ``min_instance_frac``, is still a detection when it moves as clearly as a quick
            birth needs (``tracker.quick_birth_*``) and is no fragment of a tracked object: a
            small, distant or half-hidden object is tracked before it grows to the full size
            (1 = never). The mask stages never see such instances.
        ransac_threshold_rel, ransac_iterations: rigid fit of each instance.
        max_fit_points: random subset of an instance's pixels used for its fit.
        deforming_pieces: an instance that is not rigid moves as up to this many rigid
            pieces blended by distance (its published flow; 1 = one rigid motion).
        instance_split_bodies: an instance that moves as up to this many rigid bodies
            (objects touching in the image) is split into them, from the published tracks
            it continues or from its fit's residuals (1 = never;
            ``instances.split_instances``). On the varied validation scenes
            (``pointmap-eval-pipeline --vary-scenes``) 2 brought oracle-two-map from 68 to
            70 of 94 objects matched and its id switches from 42 to 32.
        affine_residual_frac: a rigid instance's published flow follows its affine fit
            instead when that leaves at most this fraction of the rigid fit's residual (a
            pulsing or stretching object; 0 = never). On the validation scenes 0.6 brought
            the moving-pixel flow error of oracle-two-map from 0.224 to 0.211 of zero flow
            (0.7 and 0.8 within 0.001 of it; docs/pipeline.md step 8).
        work_pixels: statistics and segmentation run on a grid strided to about this many
            pixels (1 = full resolution up to 256x256; 2 at 512x288).
        rigid_residual_rel: an instance whose residual exceeds this fraction of its size is
            flagged non-rigid...
        rigid_motion_residual_frac: ...or whose residual (above the map noise) exceeds this
            fraction of how far it moved between the pair's frames (a waving sheet is close
            to one rigid motion relative to its size, not relative to its displacement).
        pnp_reprojection_px: PnP-RANSAC inlier threshold in pixels.
        pose_reset_after: the frame that makes this many consecutive frames without a pose
            (:class:`~pointmap_ros.errors.PoseError`, e.g. PnP failed) becomes the keyframe
            at the last good pose and the window restarts (re-anchoring); the ones before
            raise.
        focal_min_rel, focal_max_rel: plausible focal fits lie in
            ``[focal_min_rel, focal_max_rel] * max(H, W)`` pixels (without CameraInfo);
            others are rejected and counted (``'focal_rejected'``).
        focal_prior_fov_deg: when no fit was plausible yet, the focal of this field of view
            across the longer image side, ``0.5 * max(H, W) / tan(fov / 2)`` (60 deg:
            0.866 max(H, W)).
        tracker: association and lifetime parameters.
        flow_per_second: publish flow in units/s (else per pair gap).
        keyframe_tracks: also output ``keyframe_points_world`` (one more full-size transform).
        fixed_scale: metres per model unit when known a priori (None = not given).
        seed: seed of every random choice (results are deterministic).
        cross_time_source: where P_i(t_j) and P_j(t_i) come from: ``'network'`` (the
            engine's cross-time heads), ``'correspondence'`` (dense optical flow + same-time
            maps, pipeline/correspondence.py), ``'fused'`` (correspondences where observed,
            the network elsewhere) or ``'auto'`` (trust the network's cross-time maps only
            as far as they were shown to work: :func:`resolve_cross_time_source`).
            With correspondences, motion is decided in the image (pipeline/motion.py).
        flow_preset: optical-flow preset, ``'fast'``, ``'balanced'``, ``'accurate'`` or
            ``'dense'`` (``'accurate'`` with denser patches: more accurate moving objects
            for about a quarter more flow time; pipeline/correspondence.py has the measured
            accuracy and cost of each).
        flow_along_ray: ``'trusted'``: moving pixels publish their flow along the viewing
            ray only on pairs whose depths a depth sensor measured or the camera test
            trusted; elsewhere only the flow across the ray (a network's depths of a moving
            object err independently per frame by more than it moves:
            :func:`~pointmap_ros.pipeline.scene_flow.across_rays`). ``'always'``: as
            measured.
        flow_warm_start: start each pair's optical flow from the flows measured for the
            previous frame, kept per pixel where they match better than no motion
            (:class:`~pointmap_ros.pipeline.correspondence.DenseFlow`): keyframe pairs
            several frames apart then follow moving objects that DIS alone loses at its
            coarse levels.
        flow_width: optical flow runs on the model crop at this many pixels across (at most
            the camera's width), then is resampled to the model resolution: with
            ``flow_preset``, the knob between flow accuracy and its cost. 256 against 224
            on the validation scenes (oracle-two-map): motion IoU 0.929 -> 0.934,
            moving-pixel flow error 0.212 -> 0.190 of zero flow, id switches 4 -> 0
            (288: 0.931 / 0.183; 320: 0.917 / 0.174), ~4 ms more per pair at 288x512.
        flow_min_px: a pixel moves when its flow misses the camera-induced position by
            more than this many pixels (of the flow's images, see ``flow_width``; all
            ``flow_*_px`` and ``camera_still_px`` are in those pixels)...
        flow_noise_mult: ...and by more than this multiple of the pair's median miss.
        flow_depth_min_rel: ...or, where the maps are trusted, its depth in the reference
            camera differs from the reference's depth at the corresponding pixel by more
            than this fraction (and ``flow_noise_mult`` times the pair's median): motion
            along the viewing ray, which barely moves a pixel.
        flow_depth_min_rel_precise: the same floor where the maps are precise (their static
            pixels' camera-induced flow misses the optical flow by no more than the optical
            flow's own noise): a slow object's depth changes by less than 2 % per frame.
        flow_free_space: where the maps are precise, the pixels the optical flow cannot judge
            (flat texture, occlusions, the border) move when the reference camera saw past
            the place their point would have held standing still (the free-space test,
            pipeline/motion.py; the depth test's threshold). Untextured objects were masked
            only along their edges without it (validation, oracle-two-map,
            ``--plain-objects``: motion IoU 0.64 -> 0.79 with it and enclosed regions).
        flow_depth_min_isotropy: the depth test is only applied where the image texture fixes
            both flow components (structure-tensor ``lambda_min / lambda_max`` at least this;
            on a stripe the correspondence, hence the depth it reads, slides along it); the
            instance split likewise judges only such bodies' motion.
        flow_min_gradient: windows (7x7) of the image the optical flow ran on whose RMS
            intensity gradient is below this many grey levels per pixel count as flat: their
            flow is interpolated from the surroundings, so the motion test does not judge
            them. At 2.0 (on the model image), most of a low-contrast object (a
            noise-textured cylinder on a held-out scene) went unjudged and unmasked.
        flow_halo_px: moving pixels within this distance of the motion mask's border that
            lie behind a nearer moving pixel (by ``cluster_jump_rel``) are background the
            flow dragged along; 0 keeps them.
        flow_colour_fill_px: pixels without a confident point (judged by no motion test, or
            by the epipolar one alone, blind along the epipolar line) join the mask within
            this distance of it (pixels of the flow's images) when their colour is nearer
            that of the moving pixels around than of the judged static ones (0 = never).
            Validation, shipped model with odometry: motion IoU 0.666 -> 0.715
            (docs/pipeline.md, correspondences step 5).
        flow_border_px: the motion test does not judge pixels this close to the image border
            (optical flow there matches patches that leave the image; 4: half a DIS patch).
        flow_hysteresis: pixels that moved in the reference frame keep moving down to this
            fraction of the threshold (an object slowing at a turning point stays moving);
            not in the pose and depth tests on maps without a depth sensor's measurements
            that miss the static pixels' induced flow by over 1.5x the flow's own noise: a
            network's error, which stays on the same surface (``motion.flow_motion``).
        flow_reliable_px: the maps are trusted for the induced flow when the pixels the
            epipolar fit calls static miss it by at most this (median)...
        flow_reliable_ratio: ...and by at most this multiple of the epipolar fit's own
            median residual on them (the flow's noise floor); else the epipolar residual
            decides.
        flow_inlier_px: RANSAC threshold of the epipolar / homography fit.
        camera_still_px: the camera did not move when the static pixels' median flow is
            below this; its pose is then kept exactly.
        depth_prior: when frames come with a registered depth image, fuse it into the
            same-time maps of every pair whose two frames have one (pipeline/depth_prior.py):
            the geometry becomes metric and correspondence flow metric scene flow. False
            uses depth only for the metric scale (median depth ratio).
        depth_min_m, depth_max_m: depth outside this range (metres) is not trusted (the
            sensor's working range); the network fills those pixels.
        depth_edge_rel: depth pixels whose inverse depth departs from the mean of their two
            neighbours along a row or column by more than this fraction are at a depth edge
            (flying pixels) and not trusted; planes at any slant pass (8 % is over 3 sigma of
            1 % depth noise, and far below the jumps at an object's silhouette).
        odometry_prior: when frames carry the odometry's camera pose
            (``FrameInput.T_odom_cam``), fuse it with the maps' pose and take the metric
            scale from it (pipeline/odometry_prior.py); False ignores odometry.
        odometry_weight: weight of the odometry in the blended pose while maps and odometry
            agree (0: maps only, 1: odometry only).
        odometry_max_disagreement_deg, odometry_max_disagreement_rel: maps and odometry
            agree when their rotations differ by at most this angle and their translations
            by at most this fraction of the scene depth; beyond, the one with the smaller
            reprojection error of the static pixels is used alone.
        odometry_min_parallax_px: pairs whose translation moves the static pixels by less
            than this (median, model pixels) do not measure the window's metric scale (flow
            noise and the odometry's rotation jitter would dominate).
    """

    input_size: tuple = (224, 224)
    window_size: int = 8
    pair_gaps: tuple = (1,)
    keyframe_min_overlap: float = 0.5
    keyframe_min_confidence: float = 0.0
    keyframe_max_age: int = 0
    flow_keyframe_max_age: int = 4
    flow_keyframe_max_age_s: float = 0.4
    flow_motion_baseline_s: float = 0.2
    conf_threshold: float = 3.0
    conf_keep_quantile: float | None = 0.5
    motion_speed_rel: float = 0.01
    motion_min_rel: float = 0.001
    motion_noise_mult: float = 4.0
    flow_smooth_radius: int = 2
    min_region_frac: float = 2e-3
    min_region_frac_measured: float = 5e-4
    cluster_jump_rel: float = 0.05
    cluster_flow_jump_rel: float = 2.0
    min_instance_frac: float = 4e-3
    instance_size_hysteresis: float = 0.25
    small_birth_frac: float = 0.5
    ransac_threshold_rel: float = 0.01
    ransac_iterations: int = 64
    max_fit_points: int = 500
    deforming_pieces: int = 4
    instance_split_bodies: int = 2
    affine_residual_frac: float = 0.6
    work_pixels: int = 65536
    rigid_residual_rel: float = 0.05
    rigid_motion_residual_frac: float = 0.2
    pnp_reprojection_px: float = 5.0
    pose_reset_after: int = 3
    focal_min_rel: float = 0.2
    focal_max_rel: float = 5.0
    focal_prior_fov_deg: float = 60.0
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    flow_per_second: bool = True
    keyframe_tracks: bool = False
    fixed_scale: float | None = None
    seed: int = 0
    cross_time_source: str = 'auto'
    flow_preset: str = 'accurate'
    flow_along_ray: str = 'trusted'
    flow_warm_start: bool = True
    flow_width: int = 256
    flow_min_px: float = 1.0
    flow_noise_mult: float = 3.0
    flow_depth_min_rel: float = 0.02
    flow_depth_min_rel_precise: float = 0.01
    flow_free_space: bool = True
    flow_depth_min_isotropy: float = 0.2
    flow_min_gradient: float = 1.0
    flow_halo_px: int = 4
    flow_colour_fill_px: int = 6
    flow_border_px: int = 4
    flow_hysteresis: float = 0.5
    flow_reliable_px: float = 1.5
    flow_reliable_ratio: float = 3.0
    flow_inlier_px: float = 1.0
    camera_still_px: float = 0.25
    depth_prior: bool = True
    depth_min_m: float = 0.1
    depth_max_m: float = 10.0
    depth_edge_rel: float = 0.08
    odometry_prior: bool = True
    odometry_weight: float = 0.8
    odometry_max_disagreement_deg: float = 2.0
    odometry_max_disagreement_rel: float = 0.02
    odometry_min_parallax_px: float = 0.5

    @property
    def prior_focal_rel(self) -> float:
        """Focal of ``focal_prior_fov_deg`` across the longer side, in units of that side."""
        return 0.5 / math.tan(math.radians(self.focal_prior_fov_deg) / 2)

    def validate(self, patch_size: int | None = None) -> 'PipelineConfig':
        """Check every field; raises :class:`ConfigError` naming the first bad one.

        Args:
            patch_size: the engine's patch size when known; ``input_size`` must then be a
                multiple of it (checked by the pipeline when the engine accepts any size).
        """
        def bad(name, why):
            raise ConfigError(f'PipelineConfig.{name} = {getattr(self, name)!r}: {why}',
                              name=name, value=getattr(self, name))

        if (len(self.input_size) != 2
                or not all(isinstance(v, int) and v >= 16 for v in self.input_size)):
            bad('input_size', 'expected (H, W) integers >= 16')
        if patch_size and any(v % patch_size for v in self.input_size):
            bad('input_size', f'expected multiples of the engine patch size {patch_size}')
        if not isinstance(self.window_size, int) or self.window_size < 1:
            bad('window_size', 'expected an integer >= 1')
        if any(not isinstance(g, int) or not 1 <= g <= self.window_size for g in self.pair_gaps):
            bad('pair_gaps', f'gaps must be integers in [1, window_size={self.window_size}]')
        if self.conf_keep_quantile is not None and not 0.0 <= self.conf_keep_quantile < 1.0:
            bad('conf_keep_quantile', 'expected None or a value in [0, 1)')
        for names, accepts, expected in _VALUE_RULES:
            for name in names:
                if not accepts(getattr(self, name)):
                    bad(name, expected)
        for name, lowest in _INTEGER_MINIMA:
            if not isinstance(getattr(self, name), int) or getattr(self, name) < lowest:
                bad(name, f'expected an integer >= {lowest}')
        self._check_focal(bad)
        if self.fixed_scale is not None and not _positive(self.fixed_scale):
            bad('fixed_scale', 'expected None or a finite value > 0')
        if not (_positive(self.depth_min_m) and self.depth_min_m < self.depth_max_m
                and math.isfinite(self.depth_max_m)):
            bad('depth_min_m', f'expected 0 < depth_min_m < depth_max_m = '
                f'{self.depth_max_m!r}, both finite')
        if self.cross_time_source not in CROSS_TIME_SOURCES:
            bad('cross_time_source', f'expected one of {CROSS_TIME_SOURCES}')
        if self.flow_preset not in FLOW_PRESETS:
            bad('flow_preset', f'expected one of {FLOW_PRESETS}')
        if self.flow_along_ray not in FLOW_ALONG_RAY:
            bad('flow_along_ray', f'expected one of {FLOW_ALONG_RAY}')
        t = self.tracker
        if t.min_hits < 1 or t.max_misses < 0 or not 0 < t.velocity_alpha <= 1 or t.gate_rel <= 0:
            bad('tracker', 'need min_hits >= 1, max_misses >= 0, 0 < velocity_alpha <= 1, '
                'gate_rel > 0')
        if not t.quick_birth_evidence >= 0 or not 0 <= t.quick_birth_inliers <= 1:
            bad('tracker', 'need quick_birth_evidence >= 0, 0 <= quick_birth_inliers <= 1')
        return self

    def _check_focal(self, bad) -> None:
        """The focal bounds and the prior between them."""
        if not (math.isfinite(self.focal_min_rel) and 0 < self.focal_min_rel
                < self.focal_max_rel and math.isfinite(self.focal_max_rel)):
            bad('focal_min_rel', f'expected 0 < focal_min_rel < focal_max_rel = '
                f'{self.focal_max_rel!r}, both finite')
        if not 0 < self.focal_prior_fov_deg < 180:
            bad('focal_prior_fov_deg', 'expected a field of view in (0, 180) degrees')
        if not self.focal_min_rel <= self.prior_focal_rel <= self.focal_max_rel:
            bad('focal_prior_fov_deg', f'its focal {self.prior_focal_rel:.3g} max(H, W) is '
                f'outside [focal_min_rel, focal_max_rel] = [{self.focal_min_rel}, '
                f'{self.focal_max_rel}]')


def _non_negative(value) -> bool:
    return math.isfinite(value) and value >= 0


def _positive(value) -> bool:
    return math.isfinite(value) and value > 0


#: (fields, accepts(value), what is expected) for the scalar fields.
_VALUE_RULES = (
    (('keyframe_min_overlap', 'min_region_frac', 'min_region_frac_measured',
      'min_instance_frac'),
     lambda value: 0.0 <= value < 1.0, 'expected a value in [0, 1)'),
    (('keyframe_min_confidence', 'conf_threshold', 'motion_speed_rel', 'motion_min_rel',
      'motion_noise_mult', 'flow_min_px', 'flow_reliable_px', 'flow_reliable_ratio',
      'flow_inlier_px', 'flow_noise_mult', 'flow_depth_min_rel', 'flow_depth_min_rel_precise',
      'camera_still_px', 'flow_min_gradient', 'flow_keyframe_max_age_s',
      'flow_motion_baseline_s'),
     _non_negative, 'expected a finite value >= 0'),
    (('cluster_jump_rel', 'cluster_flow_jump_rel', 'ransac_threshold_rel',
      'rigid_residual_rel', 'pnp_reprojection_px', 'depth_edge_rel'),
     _positive, 'expected a finite value > 0'),
    (('flow_hysteresis', 'rigid_motion_residual_frac', 'instance_size_hysteresis',
      'small_birth_frac'),
     lambda value: 0.0 < value <= 1.0, 'expected a value in (0, 1]'),
    (('flow_depth_min_isotropy', 'odometry_weight', 'affine_residual_frac'),
     lambda value: 0.0 <= value <= 1.0,
     'expected a value in [0, 1]'),
    (('odometry_max_disagreement_deg', 'odometry_max_disagreement_rel',
      'odometry_min_parallax_px'), _positive, 'expected a finite value > 0'),
)

#: (integer field, smallest value).
_INTEGER_MINIMA = (('keyframe_max_age', 0), ('flow_keyframe_max_age', 0),
                   ('ransac_iterations', 1), ('flow_smooth_radius', 0), ('pose_reset_after', 1),
                   ('max_fit_points', 3), ('deforming_pieces', 1), ('instance_split_bodies', 1),
                   ('work_pixels', 1),
                   ('flow_halo_px', 0), ('flow_colour_fill_px', 0), ('flow_border_px', 0),
                   ('flow_width', 16))
