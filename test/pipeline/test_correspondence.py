"""The correspondence stage: forward-backward occlusion handling, cross-time maps from flow,
the fused rule, and the choice of ``cross_time_source: auto``.

Property tests use flows whose correct answer is known analytically (a square translating
over a static background: the pixels it covers and uncovers have no correspondence).
"""

import dataclasses

import numpy as np
import pytest

from pointmap_ros.engines.oracle_engine import OracleEngine
from pointmap_ros.model.checkpoint import cross_time_heads
from pointmap_ros.pipeline.correspondence import (
    FLOW_PRESETS, DenseFlow, PixelFlow, _chain_or_extend, _screened_start, compose_flow,
    consistent_flow, correspondence_cross_time, fuse_cross_time, resolve_cross_time_source,
    sample_map)
from pointmap_ros.pipeline.preprocess import make_frame
from pointmap_ros.tracking.window import WindowFrame
from pointmap_ros.types import DynamicPointMaps

H, W = 40, 60
SQUARE = (slice(10, 22), slice(15, 27))  # rows, cols of the moving square in image i
SHIFT = (5, 3)  # (dx, dy) pixels from image i to image j


def square_flows():
    """(forward i->j, backward j->i) of a square moving by SHIFT over a still background."""
    dx, dy = SHIFT
    forward = np.zeros((H, W, 2), np.float32)
    forward[SQUARE] = (dx, dy)
    backward = np.zeros((H, W, 2), np.float32)
    rows, cols = SQUARE
    backward[rows.start + dy:rows.stop + dy, cols.start + dx:cols.stop + dx] = (-dx, -dy)
    return forward, backward


def square_masks():
    """(square in image i, square in image j) bool masks."""
    dx, dy = SHIFT
    rows, cols = SQUARE
    in_i = np.zeros((H, W), bool)
    in_i[SQUARE] = True
    in_j = np.zeros((H, W), bool)
    in_j[rows.start + dy:rows.stop + dy, cols.start + dx:cols.stop + dx] = True
    return in_i, in_j


def test_forward_backward_marks_exactly_the_occluded_background():
    forward, backward = square_flows()
    in_i, in_j = square_masks()
    valid_forward = consistent_flow(forward, backward)
    # Background pixels of image i covered by the square in image j have no partner.
    occluded = in_j & ~in_i
    assert not valid_forward[occluded].any()
    assert valid_forward[~occluded].all()
    valid_backward = consistent_flow(backward, forward)
    uncovered = in_i & ~in_j  # background of image j that the square hid in image i
    assert not valid_backward[uncovered].any()
    assert valid_backward[~uncovered].all()


def test_targets_outside_the_image_are_invalid():
    flow = np.zeros((H, W, 2), np.float32)
    flow[..., 0] = 10.0  # everything moves 10 px right: the last 10 columns leave
    reverse = -flow
    valid = consistent_flow(flow, reverse)
    assert not valid[:, W - 10 + 1:].any()
    assert valid[:, :W - 10].all()


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_random_flows_are_valid_only_where_the_round_trip_closes(seed):
    rng = np.random.default_rng(seed)
    forward = rng.normal(0, 3, (H, W, 2)).astype(np.float32)
    valid = consistent_flow(forward, -forward)  # reverse = minus: closes only where smooth
    x = np.arange(W)[None, :] + forward[..., 0]
    y = np.arange(H)[:, None] + forward[..., 1]
    inside = (x >= -0.5) & (x <= W - 0.5) & (y >= -0.5) & (y <= H - 0.5)
    assert not valid[~inside].any()


def _maps(depth_i: np.ndarray, depth_j: np.ndarray) -> DynamicPointMaps:
    """Same-time maps from depth images (unit focal, so x = u z, y = v z), cross-time copies."""
    v, u = np.mgrid[0:H, 0:W].astype(np.float32)

    def points(z):
        return np.stack([u * z, v * z, z], axis=-1).astype(np.float32)

    ones = np.ones((H, W), np.float32)
    p_i, p_j = points(depth_i), points(depth_j)
    return DynamicPointMaps(p_i, p_i.copy(), p_j.copy(), p_j, 5 * ones, 5 * ones,
                            5 * ones, 5 * ones)


def test_cross_time_maps_read_the_other_image_and_leave_occlusions_nan():
    forward, backward = square_flows()
    in_i, in_j = square_masks()
    depth_i = np.where(in_i, 2.0, 5.0).astype(np.float32)
    depth_j = np.where(in_j, 2.0, 5.0).astype(np.float32)
    flow = PixelFlow(forward, backward, consistent_flow(forward, backward),
                     consistent_flow(backward, forward))
    maps = correspondence_cross_time(_maps(depth_i, depth_j), flow)
    # Integer shifts: P_i(t_j)(u) is exactly P_j(t_j)(u + F), wherever it is defined.
    dx, dy = SHIFT
    rows, cols = SQUARE
    np.testing.assert_array_equal(
        maps.pts_i_tj[SQUARE],
        maps.pts_j_tj[rows.start + dy:rows.stop + dy, cols.start + dx:cols.stop + dx])
    background = ~in_i & flow.forward_valid
    np.testing.assert_array_equal(maps.pts_i_tj[background], maps.pts_j_tj[background])
    # Occluded: NaN point, floor confidence; the same-time maps are untouched.
    assert np.isnan(maps.pts_i_tj[~flow.forward_valid]).all()
    assert (maps.conf_i_tj[~flow.forward_valid] == 1.0).all()
    assert np.isnan(maps.pts_j_ti[~flow.backward_valid]).all()
    assert np.isfinite(maps.pts_j_ti[flow.backward_valid]).all()
    assert maps.pts_i_ti is not None and np.isfinite(maps.pts_i_ti).all()
    # Scene flow of the square's pixels in image j: zero depth change, the shift in x/y.
    flow_j = maps.pts_j_tj - maps.pts_j_ti
    assert np.allclose(flow_j[in_j][:, 2], 0)
    assert np.allclose(flow_j[~in_j & flow.backward_valid], 0)


def test_sampling_never_blends_across_a_depth_edge():
    depth = np.where(np.arange(W)[None, :] < 30, 1.0, 10.0) * np.ones((H, 1))
    points = _maps(depth.astype(np.float32), depth.astype(np.float32)).pts_i_ti
    flow = np.zeros((H, W, 2), np.float32)
    flow[..., 0] = 0.5  # every read falls half-way between two pixels
    sampled = sample_map(points, flow)
    z = sampled[..., 2]
    # Next to the edge: one of the two depths, never a point floating between them.
    assert np.isin(np.round(z[:, 28:31], 5), [1.0, 10.0]).all()
    # Inside a surface: bilinear (x half-way between two pixels).
    np.testing.assert_allclose(sampled[:, 5, 0], (5.5 * 1.0), rtol=1e-6)


def test_fused_prefers_observed_correspondences():
    forward, backward = square_flows()
    in_i, in_j = square_masks()
    depth = np.full((H, W), 4.0, np.float32)
    network = _maps(depth, depth)
    network = dataclasses.replace(network, pts_i_tj=network.pts_i_tj + 1.0)
    flow = PixelFlow(forward, backward, consistent_flow(forward, backward),
                     consistent_flow(backward, forward))
    corr = correspondence_cross_time(network, flow)
    fused = fuse_cross_time(network, corr)
    observed = flow.forward_valid
    np.testing.assert_array_equal(fused.pts_i_tj[observed], corr.pts_i_tj[observed])
    np.testing.assert_array_equal(fused.pts_i_tj[~observed], network.pts_i_tj[~observed])
    np.testing.assert_array_equal(fused.conf_i_tj[~observed], network.conf_i_tj[~observed])


@pytest.mark.parametrize('preset', FLOW_PRESETS)
def test_dis_flow_recovers_a_textured_translation(preset):
    rng = np.random.default_rng(0)
    import cv2
    texture = cv2.GaussianBlur(rng.random((H * 4, W * 4)).astype(np.float32), (0, 0), 2)
    texture = ((texture - texture.min()) / np.ptp(texture) * 255).astype(np.uint8)
    image_i = texture[20:20 + H * 2, 20:20 + W * 2]
    image_j = texture[20:20 + H * 2, 17:17 + W * 2]  # content moves 3 px right
    flow = DenseFlow(preset).estimate(image_i, image_j, (H, W))
    inner = (slice(5, -5), slice(5, -5))
    # Measured at twice the model resolution: 3 px there are 1.5 model pixels.
    assert abs(np.median(flow.forward[inner][..., 0]) - 1.5) < 0.1
    assert abs(np.median(flow.backward[inner][..., 0]) + 1.5) < 0.1
    assert flow.pixel_scale == 0.5
    assert flow.forward_valid[inner].mean() > 0.95


class _Engine:
    def __init__(self, heads):
        self.cross_time_heads = heads


@pytest.mark.parametrize('heads, expected', [('validated', 'network'), ('exact', 'network'),
                                              ('trained', 'fused'),
                                              ('initialised', 'correspondence'),
                                              ('withheld', 'correspondence')])
def test_auto_trusts_the_network_only_as_far_as_it_was_shown_to_work(heads, expected):
    assert resolve_cross_time_source('auto', _Engine(heads))[0] == expected
    assert resolve_cross_time_source('fused', _Engine(heads))[0] == 'fused'


def test_checkpoint_provenance_marks_converted_heads():
    converted = {'source': {'heads': {'downstream_head1': 'trained from source head1',
                                      'downstream_head3': 'init from source head1',
                                      'downstream_head4': 'init from source head2'}}}
    assert cross_time_heads(converted) == 'initialised'
    assert cross_time_heads({'source': {'kind': 'trained'}}) == 'trained'
    better = {'epe': 0.002, 'epe_zero': 0.003, 'epe_dyn': 0.01, 'epe_dyn_zero': 0.02}
    assert cross_time_heads({'source': {'cross_time_validation': better}}) == 'validated'
    # Worse than zero flow on the moving pixels (or an unreadable record): not validated.
    worse = dict(better, epe_dyn=0.03)
    assert cross_time_heads({'source': {'cross_time_validation': worse}}) == 'trained'
    assert cross_time_heads({'source': {'cross_time_validation': {'epe': 'x'}}}) == 'trained'
    assert OracleEngine(lambda a, b: None, (8, 8), two_map=True).cross_time_heads == 'withheld'
    assert OracleEngine(lambda a, b: None, (8, 8)).cross_time_heads == 'exact'


def test_skipping_the_forward_direction_leaves_the_backward_maps_unchanged():
    """``forward=False`` (the pipeline's pairs without keyframe tracks) skips ``P_i(t_j)``
    only: image j's cross-time map is the full computation's, the skipped map invalid, and
    ``fused`` then keeps the network's ``P_i(t_j)``."""
    forward, backward = square_flows()
    in_i, in_j = square_masks()
    depth_i = np.where(in_i, 2.0, 5.0).astype(np.float32)
    depth_j = np.where(in_j, 2.0, 5.0).astype(np.float32)
    network = _maps(depth_i, depth_j)
    flow = PixelFlow(forward, backward, consistent_flow(forward, backward),
                     consistent_flow(backward, forward))
    full = correspondence_cross_time(network, flow)
    skipped = correspondence_cross_time(network, flow, forward=False)
    np.testing.assert_array_equal(skipped.pts_j_ti, full.pts_j_ti)
    np.testing.assert_array_equal(skipped.conf_j_ti, full.conf_j_ti)
    assert np.isnan(skipped.pts_i_tj).all() and (skipped.conf_i_tj == 1.0).all()
    fused = fuse_cross_time(network, skipped, forward=False)
    np.testing.assert_array_equal(fused.pts_i_tj, network.pts_i_tj)
    np.testing.assert_array_equal(fused.pts_j_ti, fuse_cross_time(network, full).pts_j_ti)


def _texture(rng: np.random.Generator, shape: tuple[int, int], blur: float) -> np.ndarray:
    import cv2
    texture = cv2.GaussianBlur(rng.random(shape).astype(np.float32), (0, 0), blur)
    return ((texture - texture.min()) / np.ptp(texture) * 255).astype(np.uint8)


# A textured patch crossing a still textured background fast: PATCH_STEP px per frame, so 4
# frames apart it has moved 0.8 times its own size (at the pipeline's flow width).
FAST_H, FAST_W, PATCH, PATCH_STEP = 192, 256, 40, 8


def _fast_patch_frames(count: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(grey images, patch masks) of the patch moving PATCH_STEP px right per frame."""
    rng = np.random.default_rng(3)
    background, patch = _texture(rng, (FAST_H, FAST_W), 3.0), _texture(rng, (PATCH, PATCH), 3.0)
    images, masks = [], []
    for t in range(count):
        image, mask = background.copy(), np.zeros((FAST_H, FAST_W), bool)
        left = 30 + PATCH_STEP * t
        image[60:60 + PATCH, left:left + PATCH] = patch
        mask[60:60 + PATCH, left:left + PATCH] = True
        images.append(image)
        masks.append(mask)
    return images, masks


def _window_frames(images: list[np.ndarray], camera_id: str = 'cam0') -> list:
    return [WindowFrame(make_frame(np.repeat(image[..., None], 3, axis=-1), 0.1 * t, camera_id),
                        t, flow_image=image) for t, image in enumerate(images)]


def _keyframe_flows(source: DenseFlow, frames: list) -> list[PixelFlow]:
    """The flows of each frame t >= 2 against frame 0, asked after (t-1, t) as the pipeline
    asks them (nearest reference first)."""
    size = (FAST_H, FAST_W)
    flows = []
    for t in range(1, len(frames)):
        source.pair_flow(frames[t - 1], frames[t], size)
        if t >= 2:
            flows.append(source.pair_flow(frames[0], frames[t], size))
    return flows


def test_warm_start_follows_an_object_that_moved_farther_than_its_size():
    images, masks = _fast_patch_frames(5)
    frames = _window_frames(images)
    warm = _keyframe_flows(DenseFlow('accurate'), frames)[-1]
    cold = _keyframe_flows(DenseFlow('accurate', warm_start=False), frames)[-1]
    # Frame 4's patch was 4 * PATCH_STEP px to the left in frame 0.
    inner = masks[4] & np.roll(masks[4], 3, axis=1) & np.roll(masks[4], -3, axis=1)
    truth = np.array([-4 * PATCH_STEP, 0.0])
    warm_error = np.linalg.norm(warm.backward[inner] - truth, axis=1)
    cold_error = np.linalg.norm(cold.backward[inner] - truth, axis=1)
    assert np.median(warm_error) < 0.5
    assert np.median(cold_error) > 5.0  # DIS from zero loses it (why the chain exists)
    assert warm.backward_valid[inner].mean() > 0.9
    # The still background keeps its zero flow.
    still = ~masks[0] & ~masks[4]
    assert np.median(np.linalg.norm(warm.backward[still], axis=1)) < 0.1


def test_a_cold_pair_after_a_warm_one_gets_what_a_fresh_source_gets():
    # OpenCV's DIS changes how it treats a None start once it was given a start flow:
    # the warm starts must not touch the instance the cold ones use.
    images, _ = _fast_patch_frames(4)
    source = DenseFlow('accurate')
    _keyframe_flows(source, _window_frames(images))  # ends with a warm-started pair
    other = _window_frames(images, 'other')  # a camera without measured flows: cold
    after = source.pair_flow(other[2], other[3], (FAST_H, FAST_W))
    fresh = DenseFlow('accurate').pair_flow(other[2], other[3], (FAST_H, FAST_W))
    np.testing.assert_array_equal(after.backward, fresh.backward)
    np.testing.assert_array_equal(after.forward, fresh.forward)


def test_the_chain_keeps_two_frames_per_camera_and_never_mixes_cameras():
    images, _ = _fast_patch_frames(6)
    source = DenseFlow('accurate')
    frames_a, frames_b = _window_frames(images, 'a'), _window_frames(images[::-1], 'b')
    for t in range(1, 6):
        for frames in (frames_a, frames_b):  # interleaved cameras
            source.pair_flow(frames[t - 1], frames[t], (FAST_H, FAST_W))
            source.pair_flow(frames[0], frames[t], (FAST_H, FAST_W))
    chain = source._chain
    for camera, frames in (('a', frames_a), ('b', frames_b)):
        assert chain._current[camera].key == frames[5].frame.key
        assert chain._previous[camera].key == frames[4].frame.key
        assert set(chain._current[camera].pairs) == {frames[4].frame.key, frames[0].frame.key}
    # Another camera's frames are never a chain's link.
    assert chain.initial(frames_a[0].frame, frames_b[5].frame, images[0].shape) is None


def test_composed_flow_is_the_chain_of_its_parts():
    # Affine flows compose exactly (bilinear reads of a linear field are exact inside).
    grid = np.stack(np.meshgrid(np.arange(W, dtype=np.float32),
                                np.arange(H, dtype=np.float32)), axis=-1)
    first = (0.05 * grid[..., ::-1] + np.float32([2.0, -1.0])).astype(np.float32)
    second = (-0.03 * grid + np.float32([1.0, 0.5])).astype(np.float32)
    composed = compose_flow(first, second)
    middle = grid + first
    expected = first + (-0.03 * middle + np.float32([1.0, 0.5]))
    inside = ((middle[..., 0] >= 0) & (middle[..., 0] <= W - 1)
              & (middle[..., 1] >= 0) & (middle[..., 1] <= H - 1))
    np.testing.assert_allclose(composed[inside], expected[inside], atol=1e-3)


def test_a_chain_whose_first_link_leaves_the_image_extends_that_link():
    # Content moving 4 px right per frame: the last columns of the reference leave the
    # middle image, which never saw them; their chained start is the first link carried on
    # at the same image velocity (3 frames in all, the first link spans 1).
    first = np.zeros((H, W, 2), np.float32)
    first[..., 0] = 4.0
    second = np.zeros((H, W, 2), np.float32)
    second[..., 0] = 8.0
    second[:, -5:, 0] = 100.0  # the border the first link's outside targets would read
    chained = _chain_or_extend(first, second, 3.0)
    np.testing.assert_array_equal(chained[:, :W - 10, 0], 12.0)  # 4 + 8, read inside
    np.testing.assert_array_equal(chained[:, W - 4:, 0], 12.0)  # 3 * 4: left the image
    np.testing.assert_array_equal(chained[..., 1], 0.0)


def test_a_start_is_kept_only_where_it_matches_better_than_no_motion():
    # A start that moves everything with the patch: right on the patch, wrong on the still
    # background (the case of a start carried over from motion that has since changed).
    images, masks = _fast_patch_frames(2)
    start = np.zeros((FAST_H, FAST_W, 2), np.float32)
    start[..., 0] = PATCH_STEP
    screened = _screened_start(images[0], images[1], start)
    inner = masks[0] & np.roll(masks[0], 4, axis=1) & np.roll(masks[0], -4, axis=1)
    inner &= np.roll(inner, 4, axis=0) & np.roll(inner, -4, axis=0)
    np.testing.assert_array_equal(screened[inner], start[inner])
    far = ~(np.roll(masks[0], 12, axis=1) | np.roll(masks[0], -12, axis=1)
            | np.roll(masks[0], 12, axis=0) | np.roll(masks[0], -12, axis=0) | masks[0])
    # (A few background pixels whose neighbourhood happens to match as well keep it.)
    assert np.mean(screened[far] == 0.0) > 0.999
