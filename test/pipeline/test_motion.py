"""The correspondence motion test's building blocks (pipeline/motion.py) on analytic inputs:
depth and free-space residuals, aperture isotropy, the decision with and without the depth
and free-space tests, the occlusion-halo trim, and the rigid/non-rigid decision of an
instance's fit."""

import cv2
import numpy as np
import pytest

from pointmap_ros.geometry.camera import unproject
from pointmap_ros.geometry.transforms import rotvec_to_rotmat, se3_apply, se3_from_rt
from pointmap_ros.pipeline import PipelineConfig
from pointmap_ros.pipeline.motion import (
    _trim_halo, _window_means, aperture_metric, depth_residual, fill_by_colour, flow_motion,
    free_space_residual, local_mean, trim_occlusion_halo)
from pointmap_ros.tracking.rigid_motion import fit_rigid_motion

H, W = 48, 64
K = np.array([[60.0, 0, 31.5], [0, 60.0, 23.5], [0, 0, 1]])
INNER = (slice(8, -8), slice(8, -8))
OBJECT = (slice(12, 30), slice(20, 40))
MIN_GRADIENT = PipelineConfig().flow_min_gradient


def test_depth_residual_is_the_relative_depth_change_and_nan_where_unknown():
    before = unproject(np.full((H, W), 2.0), K).astype(np.float32)
    now = before.copy()
    now[OBJECT] *= 1.05  # moved 5 % along the viewing ray
    now[0, 0] = np.nan
    before[1, 1, 2] = -1.0  # behind the camera
    residual = depth_residual(now, before)
    assert residual.dtype == np.float32
    assert np.allclose(residual[OBJECT], 0.05, atol=1e-6)
    assert np.isnan(residual[0, 0]) and np.isnan(residual[1, 1])
    static = np.ones((H, W), bool)
    static[OBJECT] = False
    static[0, 0] = static[1, 1] = False
    assert np.all(residual[static] == 0)


def test_isotropy_is_zero_on_stripes_and_flat_image_and_high_on_texture():
    stripes = np.tile((np.arange(W) % 8 < 4).astype(np.uint8) * 200, (H, 1))
    assert np.allclose(aperture_metric(stripes, MIN_GRADIENT).isotropy[INNER], 0, atol=1e-5)
    assert not aperture_metric(np.full((H, W), 90, np.uint8), MIN_GRADIENT).isotropy.any()
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur((rng.random((H, W)) * 255).astype(np.uint8), (0, 0), 1)
    isotropy = aperture_metric(texture, MIN_GRADIENT).isotropy[INNER]
    assert isotropy.max() <= 1.0 and np.median(isotropy) > 0.3


def test_flat_means_an_rms_gradient_below_min_gradient():
    # A grating I = 128 + A sin(2 pi x / period): RMS gradient A 2 pi / (period sqrt 2), here
    # 1.5 grey levels per pixel, i.e. low-contrast texture that optical flow still tracks.
    period = 16.0
    amplitude = 1.5 * period * np.sqrt(2) / (2 * np.pi)
    x = np.arange(W, dtype=np.float64)
    grating = np.tile(np.round(128 + amplitude * np.sin(2 * np.pi * x / period)), (H, 1))
    grating = grating.astype(np.uint8)
    assert aperture_metric(grating, min_gradient=1.0).textured[INNER].all()
    assert not aperture_metric(grating, min_gradient=2.0).textured[INNER].any()


def test_aperture_resized_to_the_model_grid_keeps_directions_and_flat_regions():
    # Vertical stripes on the left half, flat grey on the right, at twice the model size.
    big = np.full((2 * H, 2 * W), 90, np.uint8)
    big[:, :W] = np.tile((np.arange(W) % 8 < 4).astype(np.uint8) * 200, (2 * H, 1))
    metric = aperture_metric(big, MIN_GRADIENT).resized((H, W))
    assert metric.textured.shape == (H, W)
    striped, flat = (slice(4, -4), slice(4, W // 2 - 4)), (slice(4, -4), slice(W // 2 + 4, -4))
    assert metric.textured[striped].all() and not metric.textured[flat].any()
    along = np.zeros((H, W, 2), np.float32)
    along[..., 1] = 2.0
    across = np.zeros((H, W, 2), np.float32)
    across[..., 0] = 2.0
    assert np.allclose(metric.length(along)[striped], 0.0, atol=1e-3)
    assert np.allclose(metric.length(across)[striped], 2.0, atol=1e-3)
    assert metric.resized((H, W)) is metric


def _decision_inputs(seed: int = 0):
    """A pair whose object moves along the viewing ray: no 2D evidence, 5 % depth change."""
    rng = np.random.default_rng(seed)
    pose_residual = np.abs(rng.normal(0.0, 0.2, (H, W))).astype(np.float32)
    depth_res = np.abs(rng.normal(0.0, 0.002, (H, W))).astype(np.float32)
    depth_res[OBJECT] = 0.05
    return pose_residual, depth_res, np.ones((H, W), bool)


def test_depth_test_catches_motion_along_the_ray_that_the_image_test_misses():
    pose_res, depth_res, observed = _decision_inputs()
    args = dict(stride=1, reliable_px=1.5, inlier_px=1.0, noise_mult=3.0, min_px=1.0)
    image_only = flow_motion(pose_res, None, observed, **args)
    assert image_only.test == 'pose' and not image_only.moving.any()
    with_depth = flow_motion(pose_res, None, observed, depth_res=depth_res,
                             min_depth_rel=0.02, **args)
    truth = np.zeros((H, W), bool)
    truth[OBJECT] = True
    # Exactly the object, less the corners the 5x5 median filter rounds off.
    assert not (with_depth.moving & ~truth).any()
    assert with_depth.moving.sum() >= truth.sum() - 4 * 3
    # A depth change below min_depth_rel is noise, whatever the pair's median says.
    assert not flow_motion(pose_res, None, observed, depth_res=depth_res,
                           min_depth_rel=0.06, **args).moving.any()


@pytest.mark.parametrize('pose_over_flow_noise, moving', [(0.9, True), (2.0, False)])
def test_precise_maps_read_a_smaller_depth_change(pose_over_flow_noise, moving):
    """An object moving along the rays by 1.5 % of its depth per frame: under the 2 % floor,
    over the 1 % one that maps as precise as the optical flow (static pixels' pose residual
    at most the flow's own noise) get; maps twice as noisy keep 2 %."""
    pose_res, depth_res, observed = _decision_inputs()
    depth_res[OBJECT] = 0.015
    epipolar_res = (pose_res / pose_over_flow_noise).astype(np.float32)
    decision = flow_motion(pose_res, epipolar_res, observed, stride=1, reliable_px=1.5,
                           inlier_px=1.0, noise_mult=3.0, min_px=1.0, depth_res=depth_res,
                           min_depth_rel=0.02, min_depth_rel_precise=0.01,
                           reliable_ratio=3.0)
    assert decision.test == 'pose'
    assert decision.moving[OBJECT].mean() > 0.9 if moving else not decision.moving.any()


def test_depth_test_is_not_used_when_the_maps_are_not_trusted():
    pose_res, depth_res, observed = _decision_inputs()
    pose_res = pose_res + 5.0  # the static pixels miss the induced flow: maps unreliable
    epipolar_res = np.abs(np.random.default_rng(1).normal(0.0, 0.2, (H, W))).astype(np.float32)
    decision = flow_motion(pose_res, epipolar_res, observed, stride=1, reliable_px=1.5,
                           inlier_px=1.0, noise_mult=3.0, min_px=1.0, depth_res=depth_res,
                           min_depth_rel=0.02)
    assert decision.test == 'epipolar' and not decision.moving.any()


def test_maps_far_noisier_than_the_flow_are_not_trusted():
    """A network's depth errors are smooth blobs: here the static pixels miss the induced
    flow by 0.8 px (median; under ``reliable_px``) where the flow's own epipolar fit leaves
    0.16 px, and a wall patch misses it by 4 px. Trusted in absolute terms only, the pose
    test calls the patch moving; relative to the flow's noise floor the maps are not
    trusted, and the epipolar test (which the patch does not fool) decides."""
    rng = np.random.default_rng(3)
    pose_res = np.abs(rng.normal(0.0, 1.0, (H, W))).astype(np.float32)
    patch = (slice(2, 10), slice(30, 40))
    pose_res[patch] = 4.0
    epipolar_res = np.abs(rng.normal(0.0, 0.2, (H, W))).astype(np.float32)
    observed = np.ones((H, W), bool)
    args = dict(stride=1, reliable_px=1.5, inlier_px=1.0, noise_mult=3.0, min_px=1.0)
    absolute = flow_motion(pose_res, epipolar_res, observed, **args)
    assert absolute.test == 'pose' and absolute.moving[patch].mean() > 0.8  # (corners: filter)
    ratio = PipelineConfig().flow_reliable_ratio
    relative = flow_motion(pose_res, epipolar_res, observed, reliable_ratio=ratio, **args)
    assert relative.test == 'epipolar' and not relative.moving.any()
    # Exact maps: their residual is the flow's own noise, so they stay trusted.
    exact = flow_motion(epipolar_res * 1.1, epipolar_res, observed, reliable_ratio=ratio, **args)
    assert exact.test == 'pose'


@pytest.mark.parametrize('pose_over_flow_noise, measured_depth, held', [
    (0.5, False, True),   # precise maps: their noise changes from frame to frame
    (1.2, False, True),   # nearly so: 97 % of exact maps' pairs are within 1.5
    (2.0, True, True),    # a depth sensor's noise does too
    (2.0, False, False),  # a network's depth error sits on the same surface every frame
])
def test_hysteresis_holds_motion_except_on_a_networks_steady_map_error(
        pose_over_flow_noise, measured_depth, held):
    """A patch that moved a frame ago now misses the induced flow by 0.7 of the threshold
    (between it and ``hysteresis`` 0.5 of it). Maps about as precise as the flow, and a
    depth sensor's, keep it moving (an object slowing at a turning point); on a network's
    maps, whose static pixels miss the induced flow by more than ``_STEADY_ERROR_RATIO``
    (1.5) times the flow's noise, the pose test decides frame by frame, so a depth error it
    once pushed over the threshold does not stay moving."""
    rng = np.random.default_rng(4)
    pose_res = np.abs(rng.normal(0.0, 0.1, (H, W))).astype(np.float32)
    threshold = 1.0  # min_px: three times the median residual is far below it
    pose_res[OBJECT] = 0.7 * threshold
    # The maps miss the flow's noise floor by the same factor everywhere, so that factor
    # is what flow_motion measures on the static pixels.
    epipolar_res = (pose_res / pose_over_flow_noise).astype(np.float32)
    observed = np.ones((H, W), bool)
    was_moving = np.zeros((H, W), bool)
    was_moving[OBJECT] = True
    args = dict(stride=1, reliable_px=1.5, inlier_px=1.0, noise_mult=3.0, min_px=threshold,
                reliable_ratio=3.0, min_depth_rel_precise=0.01, hysteresis=0.5)
    decision = flow_motion(pose_res, epipolar_res, observed, was_moving=was_moving,
                           measured_depth=measured_depth, **args)
    assert decision.test == 'pose' and decision.threshold == threshold
    assert decision.moving[OBJECT].mean() > 0.9 if held else not decision.moving.any()
    # Without the previous frame's motion nothing moves, whatever the maps.
    assert not flow_motion(pose_res, epipolar_res, observed, measured_depth=measured_depth,
                           **args).moving.any()


def test_pixels_without_a_point_are_judged_by_the_epipolar_residual():
    # A weak model is unsure of the moving object: no point, hence no pose residual there.
    rng = np.random.default_rng(2)
    pose_res = np.abs(rng.normal(0.0, 0.2, (H, W))).astype(np.float32)
    pose_res[OBJECT] = np.nan
    epipolar_res = np.abs(rng.normal(0.0, 0.2, (H, W))).astype(np.float32)
    epipolar_res[OBJECT] = 3.0  # its flow contradicts the camera's
    observed = np.ones((H, W), bool)
    decision = flow_motion(pose_res, epipolar_res, observed, stride=1, reliable_px=1.5,
                           inlier_px=1.0, noise_mult=3.0, min_px=1.0)
    truth = np.zeros((H, W), bool)
    truth[OBJECT] = True
    assert decision.test == 'pose' and decision.observed[OBJECT].all()
    assert not (decision.moving & ~truth).any()
    assert decision.moving.sum() >= truth.sum() - 4 * 3  # the median filter rounds corners


def test_halo_trim_removes_the_dragged_background_and_keeps_the_object():
    depth = np.full((H, W), 5.0, np.float32)
    depth[OBJECT] = 2.0
    obj = np.zeros((H, W), bool)
    obj[OBJECT] = True
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))
    with_halo = cv2.dilate(obj.view(np.uint8), kernel).view(bool)  # a 3 px ring at 5 m
    halo = with_halo & ~obj
    # Flow: the object moves 2 px, the background not; the ring carries a blend of both.
    flow = np.zeros((H, W, 2), np.float32)
    flow[obj] = (-2.0, 0.0)
    flow[halo] = (-1.2, 0.1)
    assert np.array_equal(trim_occlusion_halo(with_halo, depth, flow, 0.1, 4), obj)
    # A farther object moving on its own (crossing the near one the other way) stays whole.
    crossing = flow.copy()
    crossing[halo] = (2.0, 0.0)
    assert np.array_equal(trim_occlusion_halo(with_halo, depth, crossing, 0.1, 4), with_halo)
    # The far side of a curved object's own limb (10 % deeper than its front, far in front
    # of the background) moves with it and stays.
    limb = depth.copy()
    limb[halo] = 2.2
    assert np.array_equal(trim_occlusion_halo(with_halo, limb, flow, 0.05, 4), with_halo)
    # Nothing nearer: a moving wall is the moving thing itself, and stays whole.
    wall = np.zeros((H, W), bool)
    wall[5:40, 5:25] = True
    assert np.array_equal(
        trim_occlusion_halo(wall, np.full((H, W), 5.0, np.float32), flow, 0.1, 4), wall)
    # Unknown depth is never removed.
    unknown = np.where(halo, np.float32(np.nan), depth)
    assert np.array_equal(trim_occlusion_halo(with_halo, unknown, flow, 0.1, 4), with_halo)
    assert not trim_occlusion_halo(np.zeros((H, W), bool), depth, flow, 0.1, 4).any()


def test_colour_fill_takes_the_unjudged_outline_of_the_subject_and_not_the_background():
    # A red subject on a noisy grey background. The motion test judged the subject's core
    # (moving) and the background beyond a 3 px band (static); the band (the subject's
    # outline and the background next to it) and a flat patch inside were not judged.
    rng = np.random.default_rng(0)
    image = np.clip(rng.normal(120, 15, (H, W, 3)), 0, 255).astype(np.uint8)
    subject = np.zeros((H, W), bool)
    subject[OBJECT] = True
    image[subject] = np.clip(rng.normal((200, 40, 40), 15, (np.count_nonzero(subject), 3)),
                             0, 255).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))
    core = cv2.erode(subject.view(np.uint8), kernel).view(bool)
    patch = np.zeros((H, W), bool)
    patch[15:18, 28:31] = True
    core &= ~patch  # a flat patch inside the subject, unjudged
    band = cv2.dilate(subject.view(np.uint8), kernel).view(bool) & ~core
    judged = ~band
    # (Reach 5: the rectangle's corners lie 3 sqrt(2) px and more from the eroded core.)
    filled = fill_by_colour(core, band, judged & ~core, image, 5)
    assert np.array_equal(filled, subject)
    # Only the fillable pixels are candidates, and only within reach of the mask.
    assert np.array_equal(fill_by_colour(core, np.zeros((H, W), bool), judged & ~core, image,
                                         5), core)
    near = fill_by_colour(core, band, judged & ~core, image, 1)
    assert near.sum() < subject.sum() and not (near & ~subject).any()
    # Without judged static pixels around there is nothing to tell the subject from (a
    # flat region): nothing joins.
    assert np.array_equal(fill_by_colour(core, band, np.zeros((H, W), bool), image, 5), core)
    # Nothing to grow from, or no reach: unchanged.
    nothing = np.zeros((H, W), bool)
    assert not fill_by_colour(nothing, band, judged, image, 5).any()
    assert np.array_equal(fill_by_colour(core, band, judged & ~core, image, 0), core)
    # The subject's outline, painted the background's grey, stays out; the patch stays in.
    grey = image.copy()
    grey[band & subject & ~patch] = 120
    assert np.array_equal(fill_by_colour(core, band, judged & ~core, grey, 5), core | patch)


def test_window_means_at_pixels_equal_the_box_filtered_local_mean():
    rng = np.random.default_rng(3)
    values = rng.uniform(0, 255, (H, W, 3)).astype(np.float32)
    known = rng.random((H, W)) < 0.3
    known[:, :10] = False  # windows without a known pixel: NaN in both
    rows, cols = np.nonzero(rng.random((H, W)) < 0.2)
    for window in (3, 13):
        np.testing.assert_allclose(_window_means(values, known, window, rows, cols),
                                   local_mean(values, known, window)[rows, cols], rtol=1e-5,
                                   atol=1e-3)
    # A band of pixels far from the border: the integral of their windows' box only.
    rows, cols = np.nonzero(np.pad(np.ones((4, 6), bool), ((20, H - 24), (30, W - 36))))
    np.testing.assert_allclose(_window_means(values, known, 5, rows, cols),
                               local_mean(values, known, 5)[rows, cols], rtol=1e-5, atol=1e-3)


def test_local_mean_averages_known_pixels_only():
    values = np.zeros((H, W, 3), np.float32)
    values[:, W // 2:] = 1.0
    known = np.zeros((H, W), bool)
    known[:, W // 2:] = True
    mean = local_mean(values, known, 5)
    assert np.allclose(mean[:, W // 2 - 2:], 1.0)  # unknown zeros never pull it down
    assert np.isnan(mean[:, :W // 2 - 2]).all()


def _sheet(n: int = 400, seed: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(-0.3, 0.3, size=(n, 2))
    return np.column_stack([xy, np.full(n, 3.0)])


def test_waving_sheet_is_non_rigid_only_relative_to_its_displacement():
    before = _sheet()
    shift = np.array([0.02, 0.0, 0.0])
    # A 1 cm wave across a 0.6 m sheet moving 2 cm: small next to its size (the size test
    # calls it rigid), half its displacement (it is not one rigid motion).
    now = before + shift
    now[:, 2] += 0.01 * np.sin(before[:, 0] * 2 * np.pi / 0.3)
    size_only = fit_rigid_motion(before, now, None, threshold=0.05, rigid_residual_rel=0.05)
    assert size_only.is_rigid
    assert not fit_rigid_motion(before, now, None, threshold=0.05, rigid_residual_rel=0.05,
                                motion_residual_frac=0.2).is_rigid
    # A truly rigid motion of the same size passes both tests.
    T = se3_from_rt(rotvec_to_rotmat(np.array([0.0, 0.05, 0.0])), shift)
    rigid = fit_rigid_motion(before, se3_apply(T, before), None, threshold=0.05,
                             rigid_residual_rel=0.05, motion_residual_frac=0.2)
    assert rigid.is_rigid and rigid.rms == pytest.approx(0.0, abs=1e-9)


def test_halo_trim_on_the_mask_bounding_box_equals_the_whole_frame():
    """The trim works on the mask's bounding box plus the filters' reach: exactly the
    whole-frame result, for masks anywhere (image borders included)."""
    rng = np.random.default_rng(3)
    removed = 0
    for _ in range(20):
        depth = rng.uniform(2.0, 6.0, (H, W)).astype(np.float32)
        depth[rng.random((H, W)) < 0.05] = np.nan
        flow = rng.normal(0.0, 1.0, (H, W, 2)).astype(np.float32)
        moving = np.zeros((H, W), bool)
        for _ in range(rng.integers(1, 3)):
            top, left = rng.integers(-5, H), rng.integers(-5, W)
            height, width = rng.integers(3, 20, size=2)
            moving[max(0, top):top + height, max(0, left):left + width] = True
        halo_width = int(rng.integers(1, 4))
        trimmed = trim_occlusion_halo(moving, depth, flow, 0.1, halo_width)
        assert np.array_equal(trimmed, _trim_halo(moving, depth, flow, 0.1, halo_width, 1.5))
        removed += np.count_nonzero(moving & ~trimmed)
    assert removed > 0  # the comparison covered real trims


def test_16_bit_median_filter_matches_the_float_one_to_its_step():
    """The motion test's median filter runs in 16-bit steps of 1/256 of the decision floor:
    within half a step of OpenCV's float filter below saturation (256 floors), and
    saturated values stay above every threshold."""
    from pointmap_ros.pipeline.motion import _median_blur
    rng = np.random.default_rng(4)
    floor = 0.5
    residual = np.abs(rng.standard_cauchy((H, W))).astype(np.float32)  # heavy-tailed
    exact = cv2.medianBlur(residual, 5)
    fast = _median_blur(residual, 5, floor)
    below = exact < 255 * floor
    assert below.mean() > 0.9
    np.testing.assert_allclose(fast[below], exact[below], atol=floor / 512 + 1e-6)
    assert (fast[~below] >= 255 * floor).all()


def _square_scene(camera_x: float, square_x: tuple[float, float]) -> np.ndarray:
    """``[H, W]`` depth of a camera at ``(camera_x, 0, 0)`` looking down +z (no rotation)
    at a fronto-parallel square at z = 2 m spanning ``square_x`` (world x) and y in
    [-0.25, 0.25], before a wall at z = 4 m."""
    rays = unproject(np.ones((H, W)), K)
    at_square = camera_x + 2.0 * rays[..., 0]
    hit = ((at_square >= square_x[0]) & (at_square <= square_x[1])
           & (np.abs(2.0 * rays[..., 1]) <= 0.25))
    return np.where(hit, 2.0, 4.0)


def _free_space_of_a_square_moved_by(shift: float, camera_x: float = 0.1,
                                     square_x: tuple[float, float] = (-0.3, 0.3)):
    """The camera moved ``camera_x`` m to the right and the square ``shift`` m: (the
    free-space residual of the current points, their world x, the current square pixels)."""
    reference_depth = _square_scene(0.0, square_x).astype(np.float32)
    depth = _square_scene(camera_x, (square_x[0] + shift, square_x[1] + shift))
    points_cam = unproject(depth, K)
    T_ref_cam = se3_from_rt(np.eye(3), np.array([camera_x, 0.0, 0.0]))
    points_ref = se3_apply(T_ref_cam, points_cam).astype(np.float32)
    return free_space_residual(points_ref, reference_depth, K), points_ref[..., 0], depth < 3


def test_a_static_scene_shows_no_free_space_even_at_its_depth_edges():
    """The camera's 0.11 m step moves the square 3.3 px, and its left edge lies 0.2 px right
    of a pixel centre in the reference: a square point projecting there rounds onto a wall
    pixel, which the nearest depth of the neighbourhood (the square's) answers for."""
    residual, _, square = _free_space_of_a_square_moved_by(0.0, 0.11, (-0.31, 0.29))
    assert residual.dtype == np.float32
    known = np.isfinite(residual)
    # Only what the camera's step (1.65 px at the wall) brought into view is unknown.
    assert known[:, :-3].all() and not known[:, -1:].any()
    assert residual[known].max() <= 1e-6
    assert square.any()


def test_a_moved_square_shows_free_space_where_the_reference_saw_the_wall():
    """Moved 0.2 m right: its points beyond the square's old right edge (x > 0.3 m) lie
    where the reference saw the wall 2 m behind them, (4 - 2) / 2 = 1; its points over
    its old place (x < 0.3 m), and the wall it uncovered (the reference saw the square in
    front of it: maybe just hidden), give no evidence."""
    residual, world_x, square = _free_space_of_a_square_moved_by(0.2)
    pixel_m = 2.0 / K[0, 0]  # one pixel at the square's depth
    beyond = square & (world_x > 0.3 + 1.5 * pixel_m)
    over = square & (world_x < 0.3 - 0.5 * pixel_m)
    assert beyond.sum() >= 5 * 8 and over.sum() >= 10 * 8
    np.testing.assert_allclose(residual[beyond], 1.0, atol=1e-5)
    assert np.nanmax(residual[over]) <= 1e-6
    assert np.nanmax(residual[~square]) <= 1e-6


def _free_space_decision_inputs(seed: int = 4):
    """Pose, epipolar and depth residuals of precise maps (static pose residual at most the
    flow's noise) and a free-space residual of 0.05 on an unobserved object."""
    rng = np.random.default_rng(seed)
    pose_res = np.abs(rng.normal(0.0, 0.1, (H, W))).astype(np.float32)
    epipolar_res = np.abs(rng.normal(0.0, 0.2, (H, W))).astype(np.float32)
    depth_res = np.abs(rng.normal(0.0, 0.002, (H, W))).astype(np.float32)
    free_space = -np.abs(rng.normal(0.0, 0.003, (H, W))).astype(np.float32)
    free_space[OBJECT] = 0.05
    observed = np.ones((H, W), bool)
    observed[OBJECT] = False  # flat: the optical flow cannot judge it
    return pose_res, epipolar_res, depth_res, free_space, observed


def test_free_space_judges_only_what_the_flow_cannot_and_only_on_precise_maps():
    pose_res, epipolar_res, depth_res, free_space, observed = _free_space_decision_inputs()
    args = dict(stride=1, reliable_px=1.5, inlier_px=1.0, noise_mult=3.0, min_px=1.0,
                depth_res=depth_res, min_depth_rel=0.02, min_depth_rel_precise=0.01,
                reliable_ratio=3.0)
    truth = np.zeros((H, W), bool)
    truth[OBJECT] = True
    decision = flow_motion(pose_res, epipolar_res, observed,
                           free_space_res=lambda: free_space, **args)
    assert decision.test == 'pose'
    np.testing.assert_array_equal(decision.seen_through, truth)
    assert not decision.moving.any()  # (``moving`` stays the flow's verdict)
    # Observed pixels are the flow's to judge, whatever their free space says.
    everywhere = np.ones((H, W), bool)
    assert not flow_motion(pose_res, epipolar_res, everywhere,
                           free_space_res=lambda: free_space, **args).seen_through.any()
    # Trusted but not precise maps (static pose residual twice the flow's noise): not run.
    computed = []

    def counted_free_space():
        computed.append(1)
        return free_space

    noisy = flow_motion(pose_res, epipolar_res / 4, observed, free_space_res=counted_free_space,
                        **args)
    assert noisy.test == 'pose' and noisy.seen_through is None
    assert not computed  # (nor is the residual computed for nothing)
    assert flow_motion(pose_res, epipolar_res, observed, **args).seen_through is None


def test_free_space_threshold_is_the_depth_tests():
    """A free-space residual of 0.05 passes the 1 % floor of precise maps, but not when the
    depth test's own noise (median 0.02 over textured pixels) sets its threshold at 0.06."""
    pose_res, epipolar_res, depth_res, free_space, observed = _free_space_decision_inputs()
    args = dict(stride=1, reliable_px=1.5, inlier_px=1.0, noise_mult=3.0, min_px=1.0,
                min_depth_rel=0.02, min_depth_rel_precise=0.01, reliable_ratio=3.0,
                free_space_res=lambda: free_space)
    assert flow_motion(pose_res, epipolar_res, observed, depth_res=depth_res,
                       **args).seen_through[OBJECT].all()
    noisy_depths = np.full((H, W), 0.02, np.float32)
    assert not flow_motion(pose_res, epipolar_res, observed, depth_res=noisy_depths,
                           **args).seen_through.any()
