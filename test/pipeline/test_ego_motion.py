"""The motion stage's final mask (pipeline/ego_motion._correspondence_mask) on an analytic
frame: the occlusion halo dragged along with a moving object is trimmed by the confident
depths of the keyframe pair's maps only, and the colour fill completes the subject the
maps have no confident point on; one pair's verdict (pipeline/ego_motion._verdict) on a
plain square, with and without the free-space test."""

import cv2
import numpy as np
import pytest

from pointmap_ros.geometry.camera import unproject
from pointmap_ros.pipeline import PipelineConfig
from pointmap_ros.pipeline.correspondence import PixelFlow
from pointmap_ros.pipeline.ego_motion import _correspondence_mask, _verdict, _Verdict
from pointmap_ros.pipeline.motion import aperture_metric
from pointmap_ros.pipeline.pair import PairView, WorkGrid
from pointmap_ros.tracking.window import WindowFrame
from pointmap_ros.types import DynamicPointMaps, Frame

H, W = 48, 64
K = np.array([[60.0, 0, 31.5], [0, 60.0, 23.5], [0, 0, 1]])
OBJECT = (slice(12, 30), slice(20, 40))


@pytest.mark.parametrize('object_confidence', [9.0, 1.0])
def test_halo_is_trimmed_by_confident_depths_only(object_confidence):
    """An object at 2 m moved 2 px in front of a wall at 5 m; the motion test flagged it
    and a 3 px ring of wall whose flow blends the two. Maps confident of the object (as of
    the wall): the ring goes (it lies behind the object, as deep as the wall). Maps unsure
    of the object (confidence 1, as the shipped model on moving things): the depth that
    would tell the ring from the object is in doubt, so the mask stays as the test made it."""
    depth = np.full((H, W), 5.0)
    depth[OBJECT] = 2.0
    on_object = np.zeros((H, W), bool)
    on_object[OBJECT] = True
    ring_kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))
    flagged = cv2.dilate(on_object.view(np.uint8), ring_kernel).view(bool)
    backward = np.zeros((H, W, 2), np.float32)
    backward[on_object] = (-2.0, 0.0)
    backward[flagged & ~on_object] = (-1.2, 0.1)
    points = unproject(depth, K).astype(np.float32)
    confidence = np.full((H, W), 9.0, np.float32)
    confidence[OBJECT] = object_confidence
    everywhere = np.ones((H, W), bool)
    maps = DynamicPointMaps(pts_i_ti=points, pts_i_tj=points, pts_j_ti=points, pts_j_tj=points,
                            conf_i_ti=confidence, conf_i_tj=confidence,
                            conf_j_ti=confidence, conf_j_tj=confidence, metric=True)
    keyframe = WindowFrame(Frame(np.zeros((H, W, 3), np.uint8), 0.0, 'k0'), 0, K,
                           T_world_cam=np.eye(4))
    config = PipelineConfig()
    keyframe_pair = PairView('keyframe', keyframe, 0.1, maps, 1.0, config.conf_threshold,
                             config.conf_keep_quantile,
                             pixel_flow=PixelFlow(-backward, backward, everywhere, everywhere))
    verdict = _Verdict(moving=flagged, observed=everywhere, maps_trusted=True)
    mask = _correspondence_mask([verdict], [], keyframe_pair, points, config,
                                WorkGrid((H, W), 1), fused=False, image=None)
    np.testing.assert_array_equal(mask, on_object if object_confidence > 3 else flagged)


def test_colour_fill_completes_an_unsure_subject_and_leaves_confident_pixels_alone():
    """A red subject at 2 m before a grey wall at 5 m; the test judged its core moving, the
    wall beyond a 3 px band static, and nothing in the band (the flow failed there). The
    band's subject pixels join the mask when the maps have no confident point on them (the
    shipped model on a moving subject); with confident points, the 3D completion of the
    instance stage decides, so the mask stays as the test made it."""
    rng = np.random.default_rng(0)
    image = np.clip(rng.normal(120, 15, (H, W, 3)), 0, 255).astype(np.uint8)
    subject = np.zeros((H, W), bool)
    subject[OBJECT] = True
    image[subject] = (200, 40, 40)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))
    core = cv2.erode(subject.view(np.uint8), kernel).view(bool)
    band = cv2.dilate(subject.view(np.uint8), kernel).view(bool) & ~core
    depth = np.where(subject, 2.0, 5.0)
    points = unproject(depth, K).astype(np.float32)
    backward = np.zeros((H, W, 2), np.float32)
    backward[subject] = (-2.0, 0.0)
    config = PipelineConfig(flow_colour_fill_px=5, flow_halo_px=0)
    keyframe = WindowFrame(Frame(image, 0.0, 'k0'), 0, K, T_world_cam=np.eye(4))
    verdict = _Verdict(moving=core, observed=~band, maps_trusted=False)
    for subject_confidence, expected in ((1.0, subject), (9.0, core)):
        confidence = np.where(subject, subject_confidence, 9.0).astype(np.float32)
        maps = DynamicPointMaps(pts_i_ti=points, pts_i_tj=points, pts_j_ti=points,
                                pts_j_tj=points, conf_i_ti=confidence, conf_i_tj=confidence,
                                conf_j_ti=confidence, conf_j_tj=confidence, metric=True)
        keyframe_pair = PairView('keyframe', keyframe, 0.1, maps, 1.0, config.conf_threshold,
                                 config.conf_keep_quantile,
                                 pixel_flow=PixelFlow(-backward, backward, ~band, ~band))
        mask = _correspondence_mask([verdict], [], keyframe_pair, points, config,
                                    WorkGrid((H, W), 1), fused=False, image=image)
        np.testing.assert_array_equal(mask, expected)
        assert np.array_equal(_correspondence_mask([verdict], [], keyframe_pair, points,
                                                   config, WorkGrid((H, W), 1), fused=False,
                                                   image=None), core)


@pytest.mark.parametrize('measured_depth', [False, True])
def test_small_regions_vanish_below_the_fraction_for_the_pairs_depths(measured_depth):
    """A 4x4 blob beside a flagged object, and a 4x4 hole in it, vanish under
    ``min_region_frac`` (network depths: such blobs are mostly static structure their errors
    flagged) and stay under the smaller ``min_region_frac_measured`` (a depth camera's)."""
    on_object = np.zeros((H, W), bool)
    on_object[OBJECT] = True
    flagged = on_object.copy()
    flagged[20:24, 28:32] = False     # a hole in the object
    flagged[36:40, 50:54] = True      # a blob away from it
    points = unproject(np.full((H, W), 4.0), K).astype(np.float32)
    confidence = np.full((H, W), 9.0, np.float32)
    maps = DynamicPointMaps(pts_i_ti=points, pts_i_tj=points, pts_j_ti=points, pts_j_tj=points,
                            conf_i_ti=confidence, conf_i_tj=confidence,
                            conf_j_ti=confidence, conf_j_tj=confidence, metric=True)
    config = PipelineConfig(min_region_frac=0.01, min_region_frac_measured=0.001,
                            flow_halo_px=0, flow_colour_fill_px=0)  # 30 px, 3 px
    keyframe = WindowFrame(Frame(np.zeros((H, W, 3), np.uint8), 0.0, 'k0'), 0, K,
                           T_world_cam=np.eye(4))
    everywhere = np.ones((H, W), bool)
    still = np.zeros((H, W, 2), np.float32)
    keyframe_pair = PairView('keyframe', keyframe, 0.1, maps, 1.0, config.conf_threshold,
                             config.conf_keep_quantile,
                             pixel_flow=PixelFlow(still, still, everywhere, everywhere),
                             measured_depth=measured_depth)
    verdict = _Verdict(moving=flagged, observed=everywhere, maps_trusted=True)
    mask = _correspondence_mask([verdict], [], keyframe_pair, points, config,
                                WorkGrid((H, W), 1), fused=False, image=None)
    np.testing.assert_array_equal(mask, flagged if measured_depth else on_object)


def _depth_of(camera_x: float, square_x: tuple[float, float]) -> np.ndarray:
    """``[H, W]`` depth seen by a camera at ``(camera_x, 0, 0)`` (no rotation) of a square
    at z = 2 m spanning ``square_x`` (world x), y in [-0.3, 0.3], before a wall at 4 m."""
    rays = unproject(np.ones((H, W)), K)
    at_square = camera_x + 2.0 * rays[..., 0]
    hit = ((at_square >= square_x[0]) & (at_square <= square_x[1])
           & (np.abs(2.0 * rays[..., 1]) <= 0.3))
    return np.where(hit, 2.0, 4.0)


@pytest.mark.parametrize('free_space', [True, False])
def test_free_space_masks_a_plain_square_where_the_flow_sees_only_its_outline(free_space):
    """A plain grey square 2 m away moved 0.4 m (12 px) right while the camera moved 0.1 m,
    before a textured wall at 4 m; the same-time maps and the optical flow are exact. The
    flow's tests judge only the wall and the square's outline; the free-space test also
    calls moving the square's flat part where the reference saw the wall (beyond its old
    right edge), and no static pixel."""
    camera = np.array([0.1, 0.0, 0.0])
    depth = _depth_of(camera[0], (0.1, 0.7))
    square = depth < 3
    points_cam = unproject(depth, K)
    points = (points_cam + camera).astype(np.float32)  # the reference's (= world) frame
    reference = unproject(_depth_of(0.0, (-0.3, 0.3)), K).astype(np.float32)
    earlier = points - np.where(square[..., None], np.float32([0.4, 0, 0]), np.float32(0))
    grid = np.stack(np.meshgrid(np.arange(W), np.arange(H)), axis=-1).astype(np.float32)
    backward = (K[:2, :2] @ (earlier[..., :2] / earlier[..., 2:]).reshape(-1, 2).T).T
    backward = (backward.reshape(H, W, 2) + K[:2, 2] - grid).astype(np.float32)
    inside = np.all((grid + backward >= 0) & (grid + backward <= (W - 1, H - 1)), axis=-1)
    confidence = np.full((H, W), 9.0, np.float32)
    # The correspondence stage's cross-time map of the current pixels: where the flow says
    # they were (the maps' own cross-time heads are copies, as a DUSt3R checkpoint's).
    maps = DynamicPointMaps(pts_i_ti=reference, pts_i_tj=reference, pts_j_ti=earlier,
                            pts_j_tj=points, conf_i_ti=confidence, conf_i_tj=confidence,
                            conf_j_ti=confidence, conf_j_tj=confidence, metric=True)
    config = PipelineConfig(flow_free_space=free_space, flow_border_px=0)
    keyframe = WindowFrame(Frame(np.zeros((H, W, 3), np.uint8), 0.0, 'k0'), 0, K,
                           T_world_cam=np.eye(4))
    view = PairView('keyframe', keyframe, 0.1, maps, 1.0, config.conf_threshold,
                    config.conf_keep_quantile,
                    pixel_flow=PixelFlow(np.zeros_like(backward), backward, inside, inside))
    wall = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 255, (H, W)).astype(np.uint8),
                            (0, 0), 1.0)
    aperture = aperture_metric(np.where(square, np.uint8(128), wall), config.flow_min_gradient)
    epipolar = np.abs(np.random.default_rng(1).normal(0.0, 0.2, (H, W))).astype(np.float32)
    T_world_cam = np.eye(4)
    T_world_cam[:3, 3] = camera
    verdict = _verdict(view, points_cam, T_world_cam, K, epipolar, None, aperture, 4.0, config,
                       WorkGrid((H, W), 1))
    assert verdict.maps_trusted
    assert not (verdict.moving & ~square).any()
    flat = square & ~aperture.textured
    beyond_old_edge = square & (points[..., 0] > 0.3 + 2.0 * 2.0 / K[0, 0])
    assert (flat & beyond_old_edge).sum() >= 5 * 10  # the band: 12 px, less the outline
    assert verdict.moving[square & aperture.textured].mean() > 0.5  # the outline, by the flow
    if free_space:
        assert verdict.moving[flat & beyond_old_edge].all()
    else:
        assert not verdict.moving[flat].any()
