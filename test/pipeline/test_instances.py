"""Object detections (pipeline/instances.detect_objects) on an analytic pair: an instance
must move as a whole by the motion threshold, and one continuing a published track of the
previous frame by the mask's hysteresis of it. Instance fits (fit_instances): matches that
slid along image stripes do not bias the refined motion, nor, on a depth sensor's noisy
points, outline matches that show no motion. Growth (grow_instances) reaches an
object's outline and stops at the depth jump behind it, takes the flat faces an instance
encloses, and takes only instances with evidence that they are moving objects
(moving_object_fits, complete_instances). Small
instances (small_instance_labels) are detections only when they move clearly."""

import dataclasses

import cv2
import numpy as np
import pytest

from pointmap_ros.geometry.camera import unproject
from pointmap_ros.pipeline import PipelineConfig
from pointmap_ros.pipeline.correspondence import PixelFlow
from pointmap_ros.geometry.transforms import rotvec_to_rotmat, se3_from_rt
from pointmap_ros.pipeline.instances import (
    aperture_information, carried_track_ids, complete_instances, detect_objects, fit_instances,
    grow_instances, instance_labels, moving_object_fits, small_instance_labels)
from pointmap_ros.pipeline.motion import ApertureMetric
from pointmap_ros.pipeline.pair import PairView
from pointmap_ros.tracking.rigid_motion import RigidMotion
from pointmap_ros.tracking.segmentation import PLACE_UNKNOWN
from pointmap_ros.tracking.window import WindowFrame
from pointmap_ros.types import DynamicPointMaps, Frame

H, W = 40, 56
K = np.array([[50.0, 0, 27.5], [0, 50.0, 19.5], [0, 0, 1]])
OBJECT = (slice(10, 25), slice(10, 30))
THRESHOLD = 0.02  # the keyframe pair's 3D motion threshold, metres (RMS displacement)


def _frame(index: int, track_ids=None) -> WindowFrame:
    return WindowFrame(Frame(np.zeros((H, W, 3), np.uint8), 0.1 * index, f'k{index}'), index,
                       K, T_world_cam=np.eye(4), track_ids=track_ids)


def _pair(ref: WindowFrame, shift: float, region=OBJECT, measured_depth=False) -> PairView:
    """Static camera at the origin; the object's pixels (``region``) moved by ``shift``
    metres along x from the reference's time to now (a wall at 4 m, the object at 3 m)."""
    depth = np.full((H, W), 4.0)
    depth[region] = 3.0
    before = unproject(depth, K).astype(np.float32)
    now = before.copy()
    now[region] += np.array([shift, 0.0, 0.0], np.float32)
    return _view('keyframe', ref, before, before, now, measured_depth=measured_depth)


def _view(role: str, ref: WindowFrame, before: np.ndarray, matched: np.ndarray,
          now: np.ndarray, pixel_flow: PixelFlow | None = None,
          measured_depth: bool = False) -> PairView:
    """A confident pair 0.1 s after ``ref``: the reference's points ``before``, the current
    pixels' points ``now`` and where their correspondences put them earlier, ``matched``
    (``pixel_flow``: the pair's 2D correspondences, default zero flow; ``measured_depth``:
    the maps carry a depth sensor's measurements)."""
    ones = np.ones((H, W), np.float32)
    maps = DynamicPointMaps(pts_i_ti=before, pts_i_tj=before, pts_j_ti=matched, pts_j_tj=now,
                            conf_i_ti=ones, conf_i_tj=ones, conf_j_ti=ones, conf_j_tj=ones,
                            metric=True)
    if pixel_flow is None:
        zero = np.zeros((H, W, 2), np.float32)
        consistent = np.ones((H, W), bool)
        pixel_flow = PixelFlow(zero, zero, consistent, consistent)
    return PairView(role, ref, ref.frame.stamp + 0.1, maps, 1.0, 0.0, None,
                    pixel_flow=pixel_flow, measured_depth=measured_depth)


def _detections(shift: float, previous_track_ids=None, published=frozenset({7})):
    config = PipelineConfig()
    labels = np.zeros((H, W), np.int32)
    labels[OBJECT] = 1
    keyframe = _frame(0)
    previous = None
    if previous_track_ids is not None:
        previous_frame = _frame(1, previous_track_ids)
        previous = (previous_frame, _pair(previous_frame, 0.0))
    detections, _ = detect_objects(config, labels, 1, _pair(keyframe, shift), keyframe,
                                   previous, scene_depth=4.0, noise=0.001,
                                   motion_threshold=THRESHOLD, published_tracks=published)
    return detections


def test_an_instance_must_move_by_the_threshold():
    assert len(_detections(1.2 * THRESHOLD)) == 1
    assert _detections(0.8 * THRESHOLD) == []


@pytest.mark.parametrize('multiple', [1.2, 4.0])
def test_a_detection_carries_its_motion_in_multiples_of_the_threshold(multiple):
    # The object's points all moved by the same shift: RMS displacement = the shift.
    detection, = _detections(multiple * THRESHOLD)
    assert detection.evidence == pytest.approx(multiple, rel=1e-4)


@pytest.mark.parametrize('keyframe_failed', [True, False])
def test_a_failed_keyframe_fit_sends_the_step_since_the_previous_frame(keyframe_failed):
    """Over the keyframe's gap the optical flow lost the object: 60 % of its
    correspondences read scattered other surfaces, so the fit leaves most of its points
    out. The detection is flagged and carries the object's exact motion since the previous
    frame (3 cm along x, over the previous frame's exact pair); with a sound keyframe fit
    it carries none."""
    keyframe, previous_frame = _frame(0), _frame(1, np.zeros((H, W), np.int32))
    depth = np.full((H, W), 4.0)
    depth[OBJECT] = 3.0
    now = unproject(depth, K).astype(np.float32)
    matched = now.copy()
    matched[OBJECT] -= np.array([0.1, 0.0, 0.0], np.float32)
    if keyframe_failed:
        lost = np.random.default_rng(2).random((H, W)) < 0.6
        scatter = np.random.default_rng(3).uniform(-1.0, 1.0, (H, W, 3)).astype(np.float32)
        matched = np.where((lost & (depth == 3.0))[..., None], matched + scatter, matched)
    keyframe_pair = _view('keyframe', keyframe, now, matched, now)
    step = now.copy()
    step[OBJECT] -= np.array([0.03, 0.0, 0.0], np.float32)
    previous = (previous_frame, _view('gap1', previous_frame, step, step, now))
    labels = np.zeros((H, W), np.int32)
    labels[OBJECT] = 1
    (detection,), _ = detect_objects(PipelineConfig(), labels, 1, keyframe_pair, keyframe,
                                     previous, scene_depth=4.0, noise=0.001,
                                     motion_threshold=THRESHOLD, published_tracks=frozenset())
    assert (detection.inlier_ratio < 0.5) == detection.motion_failed == keyframe_failed
    if keyframe_failed:
        np.testing.assert_allclose(detection.step_motion, se3_from_rt(np.eye(3), [0.03, 0, 0]),
                                   atol=1e-6)
        assert detection.step_from == previous_frame.stamp
    else:
        assert detection.step_motion is None


@pytest.mark.parametrize('tracked_fraction, detected', [(1.0, True), (0.3, False)])
def test_a_continuing_track_needs_only_the_hysteresis(tracked_fraction, detected):
    hysteresis = PipelineConfig().flow_hysteresis
    shift = 0.5 * (1.0 + hysteresis) * THRESHOLD  # between hysteresis x and 1 x threshold
    track_ids = np.zeros((H, W), np.int32)
    rows = OBJECT[0].stop - OBJECT[0].start
    tracked_rows = slice(OBJECT[0].start, OBJECT[0].start + round(tracked_fraction * rows))
    track_ids[tracked_rows, OBJECT[1]] = 7
    detections = _detections(shift, track_ids)
    assert bool(detections) == detected
    if detected:
        assert detections[0].overlap[7] == pytest.approx(1.0)
    assert _detections(0.8 * hysteresis * THRESHOLD, track_ids) == []
    # A tentative (unpublished) track must still pass the full threshold.
    assert _detections(shift, track_ids, published=frozenset()) == []


def test_carried_track_ids_are_the_published_tracks_pixels_lay_on_a_frame_ago():
    track_ids = np.zeros((H, W), np.int32)
    track_ids[OBJECT] = 7
    track_ids[30:35, 40:50] = 8  # a tentative track: not carried
    previous_frame = _frame(1, track_ids)
    # Each current pixel's point lay 0.08 m further right at the previous time: at 4 m and
    # 50 px / m that is one pixel to the right in the previous image.
    before = unproject(np.full((H, W), 4.0), K).astype(np.float32)
    came_from = before + np.array([0.08, 0.0, 0.0], np.float32)
    previous = (previous_frame, _view('previous', previous_frame, before, came_from, before))
    expected = np.zeros((H, W), np.int32)
    expected[OBJECT[0], OBJECT[1].start - 1:OBJECT[1].stop - 1] = 7
    everywhere = np.ones((H, W), bool)
    np.testing.assert_array_equal(carried_track_ids(previous, frozenset({7}), everywhere),
                                  expected)
    left_half = np.zeros((H, W), bool)
    left_half[:, :W // 2] = True  # only the pixels asked for
    np.testing.assert_array_equal(carried_track_ids(previous, frozenset({7}), left_half),
                                  np.where(left_half, expected, 0))
    # A pixel the pair gives no point at the previous time has no known place there.
    came_from[OBJECT[0].start, OBJECT[1]] = np.nan
    previous = (previous_frame, _view('previous', previous_frame, before, came_from, before))
    expected[OBJECT[0].start, OBJECT[1]] = PLACE_UNKNOWN
    np.testing.assert_array_equal(carried_track_ids(previous, frozenset({7}), everywhere),
                                  expected)
    assert carried_track_ids(previous, frozenset(), everywhere) is None
    assert carried_track_ids(None, frozenset({7}), everywhere) is None
    assert carried_track_ids((_frame(1), previous[1]), frozenset({7}), everywhere) is None


def test_small_instances_only_when_they_continue_a_published_track():
    """Under ``min_instance_frac`` of the image an instance must continue a published track
    and hold ``instance_size_hysteresis`` of that size."""
    config = PipelineConfig()
    smallest = config.min_instance_frac * H * W  # 9 pixels
    points = unproject(np.full((H, W), 3.0), K).astype(np.float32)
    flow = np.zeros((H, W, 3), np.float32)
    motion = np.zeros((H, W), bool)
    motion[5:7, 5:8] = True  # 6 pixels

    def count(carried, config=config):
        return instance_labels(config, 1, motion, points, flow, THRESHOLD, carried)[1]

    assert 0.25 * smallest <= 6 < smallest
    track = np.where(motion, 7, 0).astype(np.int32)
    assert count(None) == 0
    assert count(track) == 1
    assert count(np.zeros((H, W), np.int32)) == 0
    assert count(track, dataclasses.replace(config, instance_size_hysteresis=1.0)) == 0


def test_small_instances_are_the_components_the_size_limit_dropped():
    """``small_instance_labels``: the components ``instance_labels`` dropped with
    ``small_birth_frac`` of ``min_instance_frac`` or more that no final instance covers;
    none with ``small_birth_frac`` 1."""
    config = PipelineConfig()
    smallest = config.min_instance_frac * H * W  # 9 pixels; small ones from 4
    points = unproject(np.full((H, W), 3.0), K).astype(np.float32)
    flow = np.zeros((H, W, 3), np.float32)
    motion = np.zeros((H, W), bool)
    motion[5:7, 5:8] = True     # 6 pixels: small
    motion[20:22, 5:8] = True   # 6 pixels, covered by a final instance below
    motion[30, 5:8] = True      # 3 pixels: under small_birth_frac
    motion[10:15, 30:40] = True  # 50 pixels: an instance's business, not small
    assert config.small_birth_frac * smallest <= 6 < smallest
    instances = np.zeros((H, W), np.int32)
    instances[20:23, 4:9] = 1   # grown over the second blob

    def small(config=config):
        dropped = instance_labels(config, 1, motion, points, flow, THRESHOLD)[2]
        return small_instance_labels(dropped, 1, motion, instances)

    labels, count = small()
    assert count == 1
    np.testing.assert_array_equal(labels > 0, np.pad(np.ones((2, 3), bool),
                                                     ((5, H - 7), (5, W - 8))))
    assert small(dataclasses.replace(config, small_birth_frac=1.0))[1] == 0


@pytest.mark.parametrize('multiple, on_published_track, detected', [
    (4.0, False, True),    # moved clearly: a new object
    (2.0, False, False),   # moved, but not clearly: noise as often as an object
    (4.0, True, False)])   # a fragment of a published object a frame ago
def test_small_instances_are_detections_only_when_they_move_clearly(
        multiple, on_published_track, detected):
    """A small instance (label >= ``small_from``) passes where a quick birth would: by
    ``quick_birth_evidence`` times the threshold and not on a published track. A full-size
    instance needs only the threshold."""
    config = PipelineConfig()
    assert config.tracker.quick_birth_evidence == 3.0
    labels = np.zeros((H, W), np.int32)
    labels[OBJECT] = 2
    keyframe = _frame(0)
    track_ids = np.zeros((H, W), np.int32)
    if on_published_track:
        track_ids[OBJECT] = 7
    previous_frame = _frame(1, track_ids)
    previous = (previous_frame, _pair(previous_frame, 0.0))

    def detections(small_from):
        return detect_objects(config, labels, 2, _pair(keyframe, multiple * THRESHOLD),
                              keyframe, previous, scene_depth=4.0, noise=0.001,
                              motion_threshold=THRESHOLD, published_tracks=frozenset({7}),
                              small_from=small_from)[0]

    assert len(detections(small_from=2)) == int(detected)
    assert len(detections(small_from=None)) == 1


@pytest.mark.parametrize('region, needed', [
    (OBJECT, 0.5),                            # 300 pixels: the fit's noise is small
    ((slice(10, 13), slice(10, 13)), 1.0)])   # 9 pixels, the smallest instance
def test_depth_sensor_instances_need_the_threshold_scaled_by_their_fits_noise(region, needed):
    """With a depth sensor's points (independent noise per pixel) a rigid fit over n pixels
    is sqrt(n) times less noisy than one pixel: a large instance needs half the per-pixel
    threshold, the smallest one (``min_instance_frac`` of the image) all of it. A network's
    maps keep the per-pixel threshold whatever the size."""
    config = PipelineConfig()
    assert config.min_instance_frac * H * W == pytest.approx(9, abs=0.1)
    labels = np.zeros((H, W), np.int32)
    labels[region] = 1
    keyframe = _frame(0)

    def detected(shift, measured_depth):
        detections, _ = detect_objects(
            config, labels, 1, _pair(keyframe, shift, region, measured_depth), keyframe,
            None, scene_depth=4.0, noise=0.001, motion_threshold=THRESHOLD)
        return len(detections) == 1

    assert detected(1.1 * needed * THRESHOLD, measured_depth=True)
    assert not detected(0.9 * needed * THRESHOLD, measured_depth=True)
    assert detected(1.1 * THRESHOLD, measured_depth=False)
    assert not detected(0.9 * THRESHOLD, measured_depth=False)


def _assert_refinement_recovers(view: PairView, aperture: ApertureMetric,
                                motion: np.ndarray) -> None:
    """The instance at ``OBJECT`` translated by ``motion``: Umeyama's fit is biased by the
    slid matches, the refinement in ``aperture``'s metric recovers the exact motion."""
    labels = np.zeros((H, W), np.int32)
    labels[OBJECT] = 1
    config = PipelineConfig()
    plain = fit_instances(config, labels, 1, view, scene_depth=4.0, noise=0.001)[1]
    refined = fit_instances(config, labels, 1, view, scene_depth=4.0, noise=0.001,
                            aperture=aperture, R_ref_cam=np.eye(3))[1]
    assert plain.is_rigid and refined.is_rigid
    assert np.linalg.norm(plain.T[:3, 3] - motion) > 0.005  # biased by the slides
    np.testing.assert_allclose(refined.T[:3, 3], motion, atol=1e-4)
    np.testing.assert_allclose(refined.T[:3, :3], np.eye(3), atol=1e-4)


def test_instance_fit_ignores_matches_slid_along_stripes():
    """The object moves 5 cm right and 3 cm down. Its left half has horizontal stripes,
    where optical flow sees only vertical motion, its right half vertical ones; each
    half's matches slid back along its stripes by 30 % of the motion there (optical flow on
    stripes underestimates it). Umeyama follows the slides; the stripe-aware refinement
    recovers the exact motion from what each half does measure."""
    motion = np.array([0.05, 0.03, 0.0], np.float32)
    left = np.zeros((H, W), bool)
    left[:, :20] = True
    depth = np.full((H, W), 4.0)
    depth[OBJECT] = 3.0
    now = unproject(depth, K).astype(np.float32)
    before = now.copy()
    before[OBJECT] -= motion
    on_object = np.zeros((H, W), bool)
    on_object[OBJECT] = True
    slid = before.copy()
    slid[on_object & left] += np.array([0.3 * motion[0], 0.0, 0.0], np.float32)
    slid[on_object & ~left] += np.array([0.0, 0.3 * motion[1], 0.0], np.float32)
    view = _view('gap1', _frame(0), before, slid, now)
    # Stripes: horizontal on the left (gradient along y), vertical on the right.
    aperture = ApertureMetric(xx=np.where(left, 0.0, 1.0).astype(np.float32),
                              xy=np.zeros((H, W), np.float32),
                              yy=np.where(left, 1.0, 0.0).astype(np.float32),
                              textured=np.ones((H, W), bool))
    _assert_refinement_recovers(view, aperture, motion)


def _slanted_plane(normal: np.ndarray, through: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` points of the plane ``normal . X = normal . through`` seen by ``K``."""
    rays = unproject(np.ones((H, W)), K)
    return (rays * (normal @ through / (rays @ normal))[..., None]).astype(np.float32)


def test_instance_fit_ignores_matches_slid_within_a_plain_slanted_face():
    """A plain face turned 50 degrees from the camera moves 5 cm right and 3 cm down. Inside
    its outline the image is flat, and its matches slid back within the face by 30 % of the
    motion (optical flow on a flat face interpolates). On a slanted face such a slide also
    changes the point's depth, which the camera-facing model counted as measured; the
    face's own plane (point-to-plane inside, full information on the textured outline)
    recovers the exact motion."""
    motion = np.array([0.05, 0.03, 0.0], np.float32)
    normal = np.array([np.sin(np.radians(50.0)), 0.0, -np.cos(np.radians(50.0))])
    face = _slanted_plane(normal, np.array([0.0, 0.0, 3.0]))
    now = unproject(np.full((H, W), 4.0), K).astype(np.float32)
    now[OBJECT] = face[OBJECT]
    before = now.copy()
    before[OBJECT] -= motion
    inside = np.zeros((H, W), bool)
    inside[OBJECT[0].start + 2:OBJECT[0].stop - 2, OBJECT[1].start + 2:OBJECT[1].stop - 2] = True
    in_plane = motion - (motion @ normal) * normal
    slid = before.copy()
    slid[inside] += (0.3 * in_plane).astype(np.float32)
    view = _view('gap1', _frame(0), before, slid, now)
    aperture = ApertureMetric(xx=np.where(inside, 0.0, 1.0).astype(np.float32),
                              xy=np.zeros((H, W), np.float32),
                              yy=np.where(inside, 0.0, 1.0).astype(np.float32),
                              textured=~inside)
    _assert_refinement_recovers(view, aperture, motion)


def test_aperture_information_follows_the_surface_and_faces_the_camera_without_one():
    """Flat image on a slanted plane: only the plane's normal is measured (a slide within
    the plane costs nothing). Texture: everything. Across a depth edge, beside a pixel
    without a point or without a surface at all: the camera-facing model."""
    normal = np.array([np.sin(np.radians(50.0)), 0.0, -np.cos(np.radians(50.0))])
    surface = _slanted_plane(normal, np.array([0.0, 0.0, 3.0]))
    surface[:, 40:] = unproject(np.full((H, 16), 8.0), K)[:, :16]  # a depth edge at column 40
    surface[5, 5] = np.nan
    flat = ApertureMetric(*(np.zeros((H, W), np.float32) for _ in range(3)),
                          textured=np.zeros((H, W), bool))
    textured = ApertureMetric(np.ones((H, W), np.float32), np.zeros((H, W), np.float32),
                              np.ones((H, W), np.float32), np.ones((H, W), bool))
    on_plane, at_edge, beside_hole = 20 * W + 20, 20 * W + 40, 5 * W + 6
    pixels = np.array([on_plane, at_edge, beside_hole])
    information = aperture_information(flat, pixels, np.eye(3), surface)
    np.testing.assert_allclose(information[0], np.outer(normal, normal), atol=1e-6)
    facing = np.diag([0.0, 0.0, 1.0])
    np.testing.assert_allclose(information[1], facing, atol=1e-12)
    np.testing.assert_allclose(information[2], facing, atol=1e-12)
    np.testing.assert_allclose(aperture_information(textured, pixels, np.eye(3), surface),
                               np.broadcast_to(np.eye(3), (3, 3, 3)), atol=1e-6)
    # No surface given (a depth sensor's noisy points): the camera-facing model, rotated.
    turn = rotvec_to_rotmat(np.array([0.0, 0.3, 0.0]))
    np.testing.assert_allclose(aperture_information(flat, pixels, turn, None),
                               np.broadcast_to(turn @ facing @ turn.T, (3, 3, 3)), atol=1e-12)


def test_sensor_depth_fits_reject_outline_matches_that_show_no_motion():
    """The object (3 m; the wall 4 m) moves 6 cm right; every depth carries 1 % sensor noise,
    independent per pixel, and the pair's noise is measured on the wall as the pipeline
    does. The optical flow of the object's one-pixel outline followed the background: those
    matches show no motion. A threshold raised to the noise (network maps: their errors are
    correlated, so a correct fit keeps them) takes the outline in and the published flow
    falls short by about its share of the pixels; on measured depths the fit averages the
    noise and the scene-relative threshold rejects the outline."""
    motion = np.array([0.06, 0.0, 0.0])
    rng = np.random.default_rng(0)
    depth = np.full((H, W), 4.0)
    depth[OBJECT] = 3.0
    exact_now = unproject(depth, K)
    on_object = np.zeros((H, W), bool)
    on_object[OBJECT] = True
    outline = on_object & ~np.pad(on_object[1:-1, 1:-1] & on_object[:-2, 1:-1]
                                  & on_object[2:, 1:-1] & on_object[1:-1, :-2]
                                  & on_object[1:-1, 2:], 1)

    def measured(points: np.ndarray) -> np.ndarray:
        noise = 1.0 + 0.01 * rng.standard_normal((H, W))
        return (points * noise[..., None]).astype(np.float32)

    now = measured(exact_now)
    before = measured(exact_now - np.where(on_object[..., None], motion, 0.0))
    matched = before.copy()
    matched[outline] = measured(exact_now)[outline]
    noise = float(np.median(np.linalg.norm(now - measured(exact_now), axis=-1)[~on_object]))
    labels = on_object.astype(np.int32)

    def published_motion(measured_depth: bool) -> np.ndarray:
        view = _view('gap1', _frame(0), before, matched, now, measured_depth=measured_depth)
        fit = fit_instances(PipelineConfig(), labels, 1, view, scene_depth=4.0, noise=noise)[1]
        return fit.displacement(now[on_object]).mean(axis=0)

    assert published_motion(measured_depth=False)[0] < 0.85 * motion[0]
    sensor = published_motion(measured_depth=True)
    assert abs(sensor[0] - motion[0]) < 0.05 * motion[0]
    # Across the motion only the depth noise's average remains (3 cm per point at 3 m).
    assert np.all(np.abs(sensor[1:]) < 0.01)


def _growth_scene(wall_depth: float, object_flow_on_wall: bool,
                  textured: np.ndarray | None = None, pole_columns: slice | None = None,
                  measured_depth: bool = False):
    """An instance made of the object less its outline (1 pixel ring, as the motion test
    leaves it) on a wall at ``wall_depth``; the object (3 m) moved 6 cm right. The wall's
    optical flow is the object's (``object_flow_on_wall``: only the surface test can stop
    the growth) or zero (it is static). ``pole_columns``: a static pole at 2 m hides these
    columns. The object's extent covers the image. ``measured_depth``: the maps carry a
    depth sensor's measurements.
    Returns ``(labels, {1: fit}, view, aperture, object mask)``."""
    motion = np.array([0.06, 0.0, 0.0])
    depth = np.full((H, W), wall_depth)
    depth[OBJECT] = 3.0
    on_object = np.zeros((H, W), bool)
    on_object[OBJECT] = True
    if pole_columns is not None:
        depth[:, pole_columns] = 2.0
        on_object[:, pole_columns] = False
    now = unproject(depth, K).astype(np.float32)
    before = np.where(on_object[..., None], now - motion.astype(np.float32), now)
    backward = np.zeros((H, W, 2), np.float32)
    moved = np.ones((H, W), bool) if object_flow_on_wall else on_object
    backward[moved, 0] = -K[0, 0] * motion[0] / 3.0  # where the object's pixels were
    valid = np.ones((H, W), bool)
    view = _view('gap1', _frame(0), before, before, now,
                 PixelFlow(-backward, backward, valid, valid), measured_depth)
    labels = cv2.erode(on_object.view(np.uint8), np.ones((3, 3), np.uint8)).astype(np.int32)
    fit = RigidMotion(T=se3_from_rt(np.eye(3), motion), rms=0.0, residual_rel=0.0,
                      inlier_ratio=1.0, is_rigid=True, size=10.0)
    aperture = ApertureMetric(np.ones((H, W), np.float32), np.zeros((H, W), np.float32),
                              np.ones((H, W), np.float32),
                              valid if textured is None else textured)
    return labels, {1: fit}, view, aperture, on_object


def _grown(wall_depth: float, object_flow_on_wall: bool, textured: np.ndarray | None = None,
           border_steps: int = 0, pole_columns: slice | None = None,
           maps_trusted: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """:func:`grow_instances` in :func:`_growth_scene`: ``(grown instance mask, object
    mask)``."""
    labels, fits, view, aperture, on_object = _growth_scene(
        wall_depth, object_flow_on_wall, textured, pole_columns)
    grown = grow_instances(labels, fits, view, K, np.full((H, W), np.nan, np.float32),
                           aperture, threshold_px=0.5, jump_rel=0.05, max_steps=8,
                           border_steps=border_steps, maps_trusted=maps_trusted)
    return grown == 1, on_object


@pytest.mark.parametrize('measured_depth, maps_trusted, motion_threshold, continues, grows', [
    (True, True, 0.1, False, True),     # trusted sensor depths: every instance grows
    (True, False, 0.1, False, False),   # ...not when the camera test distrusted them
    (False, True, 0.1, False, False),   # a network's maps: no evidence of an object
    (False, True, 0.03, False, True),   # it moves as a whole (6 cm >= the threshold)
    (False, False, 0.03, False, True),
    (False, True, 0.1, True, True),     # it continues a published track
])
def test_instances_grow_with_evidence_that_they_are_moving_objects(
        measured_depth, maps_trusted, motion_threshold, continues, grows):
    """moving_object_fits keeps the fit of an instance made of the middle of an object
    that moved 6 cm, and complete_instances grows it over the object, only with evidence
    that it is a moving object (trusted sensor depths, a motion of the whole by the pair's
    3D threshold, or a published track it continues); without, it stays as the motion test
    made it (on a network's maps such patches are mostly static structure flagged by depth
    or flow errors). Grown, it reaches the object's outline at least (which joins only on
    trusted maps), never beyond."""
    _, fits, view, aperture, on_object = _growth_scene(4.0, object_flow_on_wall=False,
                                                       measured_depth=measured_depth)
    middle = cv2.erode(on_object.view(np.uint8), np.ones((7, 7), np.uint8))
    labels = middle.astype(np.int32)
    carried = np.where(on_object, 7, 0).astype(np.int32) if continues else None
    kept = moving_object_fits(labels, fits, view, maps_trusted, motion_threshold, carried)
    assert set(kept) == ({1} if grows else set())
    completed = complete_instances(labels, kept, view, np.eye(4), K, view.j_tj, aperture,
                                   PipelineConfig(), (H, W), maps_trusted)
    if grows:
        inside_outline = cv2.erode(on_object.view(np.uint8), np.ones((3, 3), np.uint8))
        assert np.all(completed[inside_outline > 0] == 1)
        assert not np.any(completed[~on_object])
    else:
        np.testing.assert_array_equal(completed, labels)


def test_motion_along_the_viewing_rays_is_no_evidence_where_nothing_vouches_for_the_depths():
    """An instance whose fit moves it 6 cm towards the camera (along its viewing rays, as the
    difference of a network's two depths of a static patch would) is a moving object only
    where the pair's motion along the rays counts; 6 cm to the side, in either case."""
    labels, _, view, _, _ = _growth_scene(4.0, object_flow_on_wall=False)
    for motion, along_ray, kept in [((0.0, 0.0, -0.06), True, True),
                                    ((0.0, 0.0, -0.06), False, False),
                                    ((0.06, 0.0, 0.0), False, True)]:
        fit = RigidMotion(T=se3_from_rt(np.eye(3), np.array(motion)), rms=0.0,
                          residual_rel=0.0, inlier_ratio=1.0, is_rigid=True, size=10.0)
        fits = moving_object_fits(labels, {1: fit}, view, False, 0.03, None, along_ray)
        assert (1 in fits) == kept, (motion, along_ray)


@pytest.mark.parametrize('wall_depth', [4.0, 3.1])
def test_growth_takes_the_outline_and_stops_at_the_depth_jump(wall_depth):
    """The outline joins: it is on the object's surface although it borders the far wall.
    The wall 1 m behind does not, though its flow agrees with the object's motion; a wall
    10 cm behind (3 %, under ``jump_rel``) is one surface with the object."""
    grown, on_object = _grown(wall_depth, object_flow_on_wall=True)
    if wall_depth == 4.0:
        np.testing.assert_array_equal(grown, on_object)
    else:
        assert np.all(grown[on_object]) and np.count_nonzero(grown[~on_object]) > 0


def test_growth_reaches_the_object_beside_a_nearer_occluder_on_trusted_maps():
    """The object's pixels next to a pole in front of it lie behind a depth edge (the pole
    is a metre nearer), yet on the object's surface: on trusted maps they join through
    their depth link to the instance; the pole, whose flow contradicts the motion, and the
    wall behind the object's other outline stay out. On maps the camera test did not trust
    every pixel on a depth edge stays out, the object's too."""
    pole = slice(OBJECT[1].start + 5, OBJECT[1].start + 8)
    grown, on_object = _grown(4.0, object_flow_on_wall=False, pole_columns=pole)
    np.testing.assert_array_equal(grown, on_object)
    beside_pole = on_object.copy()
    beside_pole[:, :pole.stop] = False
    beside_pole[:, pole.stop + 1:] = False
    untrusted, _ = _grown(4.0, object_flow_on_wall=False, pole_columns=pole,
                          maps_trusted=False)
    assert beside_pole.any() and not (untrusted & beside_pole).any()


def test_border_rings_take_unjudged_pixels_never_contradicting_ones():
    """A static wall 10 cm behind the object (one surface by depth): its pixels, whose flow
    contradicts the object's motion, stay out even within the border rings; a flat patch of
    it (no flow evidence) next to the object joins within them, and only within them (the
    first ring is the object's outline, so 4 rings reach 3 columns beyond it)."""
    flat = np.zeros((H, W), bool)
    flat[OBJECT[0], OBJECT[1].stop:OBJECT[1].stop + 6] = True  # 6 columns right of the object
    grown, on_object = _grown(3.1, object_flow_on_wall=False, textured=~flat, border_steps=4)
    taken = grown & ~on_object
    assert np.all(grown[on_object])
    np.testing.assert_array_equal(
        np.nonzero(taken.any(axis=0))[0], np.arange(OBJECT[1].stop, OBJECT[1].stop + 3))
    assert np.all(flat[taken])


@pytest.mark.parametrize('maps_trusted', [True, False])
def test_an_instance_takes_the_flat_faces_its_outline_encloses_on_trusted_maps(maps_trusted):
    """A plain object (only a 3-pixel band inside its outline is textured, so the motion
    test flagged that band alone) and a flat patch of the wall 10 cm behind it, one surface
    with it by depth, right of it. With no border rings, growth alone stops at the flat
    face; the face, enclosed by the instance, joins on trusted maps. The wall patch, whose
    judged surroundings are mostly static wall, stays out. On untrusted maps nothing flat
    joins."""
    on_object = np.zeros((H, W), bool)
    on_object[OBJECT] = True
    face = cv2.erode(on_object.view(np.uint8), np.ones((7, 7), np.uint8)).view(bool)
    patch = np.zeros((H, W), bool)
    patch[OBJECT[0], OBJECT[1].stop:OBJECT[1].stop + 6] = True
    labels, fits, view, aperture, _ = _growth_scene(3.1, object_flow_on_wall=False,
                                                    textured=~(face | patch))
    band = cv2.erode(on_object.view(np.uint8), np.ones((3, 3), np.uint8)).view(bool) & ~face
    grown = grow_instances(band.astype(np.int32), fits, view, K,
                           np.full((H, W), np.nan, np.float32), aperture, threshold_px=0.5,
                           jump_rel=0.05, max_steps=8, border_steps=0,
                           maps_trusted=maps_trusted) == 1
    assert face.sum() == 9 * 14 and not (grown & patch).any()
    if maps_trusted:
        np.testing.assert_array_equal(grown, on_object)
    else:
        assert not (grown & face).any()


@pytest.mark.parametrize('measured_depth', [True, False])
def test_a_fit_that_explains_nothing_is_no_moving_object(measured_depth):
    """A fit that moves its instance far (6 cm, over the threshold) but leaves a residual
    of three times the instance's size (its correspondences mostly wrong: a fast object the
    optical flow lost) is dropped, also on trusted sensor depths; at twice the size it is
    kept."""
    labels, _, view, _, _ = _growth_scene(4.0, object_flow_on_wall=False,
                                          measured_depth=measured_depth)
    for residual_sizes, kept in [(3.0, False), (2.0, True)]:
        fit = RigidMotion(T=se3_from_rt(np.eye(3), np.array([0.06, 0.0, 0.0])),
                          rms=residual_sizes * 0.2, residual_rel=residual_sizes,
                          inlier_ratio=0.3, is_rigid=False, size=0.2)
        fits = moving_object_fits(labels, {1: fit}, view, True, 0.03, None)
        assert (1 in fits) == kept, residual_sizes
