"""Preprocessing to the engine resolution and PipelineConfig validation."""

import numpy as np
import pytest

from pointmap_ros.pipeline.preprocess import frame_key, make_frame, resize_crop, resize_depth
from pointmap_ros.errors import ConfigError, InputError
from pointmap_ros.geometry.camera import project, unproject
from pointmap_ros.pipeline import PipelineConfig
from pointmap_ros.tracking.tracker import TrackerConfig

K_RAW = np.array([[500.0, 0, 331.0], [0, 480.0, 236.0], [0, 0, 1]])


@pytest.mark.parametrize('size', [(224, 224), (288, 512), (100, 80)])
def test_resize_crop_keeps_rays(size):
    h, w = 480, 640
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    depth = np.full((h, w), 2.0, np.float32)
    out, K, d = resize_crop(img, size, K_RAW, depth)
    assert out.shape == size + (3,) and out.dtype == np.uint8 and d.shape == size
    # A 3D point seen at some pixel of the raw image is seen at the mapped pixel after
    # resize + crop: compare through the output K with the scale/offset applied by hand.
    s = max(size[0] / h, size[1] / w)
    rh, rw = max(size[0], round(h * s)), max(size[1], round(w * s))
    y0, x0 = (rh - size[0]) // 2, (rw - size[1]) // 2
    p = np.array([0.1, -0.05, 2.0])
    u, v = project(p, K_RAW)
    np.testing.assert_allclose(project(p, K), [(u + 0.5) * rw / w - 0.5 - x0,
                                               (v + 0.5) * rh / h - 0.5 - y0], atol=1e-9)
    np.testing.assert_allclose(d, 2.0, rtol=1e-6)  # area averages round in float32


def test_depth_resize_never_blends_surfaces_and_identity_is_exact():
    img = np.zeros((40, 60, 3), np.uint8)
    depth = np.zeros((40, 60), np.float32)
    depth[:, 30:] = 5.0  # a depth edge must not be blended into 2.5 m
    _, _, d = resize_crop(img, (20, 30), None, depth)
    assert set(np.unique(d)) <= {0.0, 5.0}
    # Holes (NaN) are not blended either.
    holed = np.full((40, 60), 3.0, np.float32)
    holed[::2, ::2] = np.nan
    _, _, d = resize_crop(img, (20, 30), None, holed)
    assert np.all(np.isnan(d) | (d == 3.0))
    out, K, _ = resize_crop(img, (40, 60), K_RAW)
    np.testing.assert_array_equal(out, img)
    np.testing.assert_allclose(K, K_RAW)
    pts = unproject(np.ones((40, 60)), K)
    np.testing.assert_allclose(project(pts, K_RAW)[5, 7], [7, 5])


def test_shrunk_depth_is_centred_on_a_slanted_plane():
    """A plane whose depth grows along the rows: the model pixel's depth is the camera's at
    its centre (the 2x2 block average), not the sample a quarter pixel off."""
    rows = np.arange(40, dtype=np.float32)
    depth = np.tile((2.0 + 0.05 * rows)[:, None], (1, 60))  # linear in the row
    d = resize_depth(depth, (20, 30))
    centre_rows = 2 * np.arange(20) + 0.5  # model row r covers camera rows 2r, 2r + 1
    np.testing.assert_allclose(d[:, 0], 2.0 + 0.05 * centre_rows, rtol=1e-6)


def test_bad_images_rejected():
    with pytest.raises(InputError):
        resize_crop(np.zeros((10, 10), np.uint8), (8, 8))
    with pytest.raises(InputError):
        resize_crop(np.zeros((10, 10, 3), np.float32), (8, 8))
    with pytest.raises(InputError):
        resize_crop(np.zeros((10, 10, 3), np.uint8), (8, 8), depth=np.zeros((9, 10)))


def test_frame_keys_are_unique_per_stamp():
    f = make_frame(np.zeros((4, 4, 3), np.uint8), 12.3456789012, 'cam1')
    assert f.key == 'cam1/12345678901' and f.camera_id == 'cam1'
    assert frame_key('cam1', 0.1) != frame_key('cam1', 0.1000001)


def test_default_config_is_valid():
    config = PipelineConfig()
    assert config.validate() is config  # no ConfigError; returns itself for chaining


@pytest.mark.parametrize('field, value', [
    ('input_size', (8, 224)), ('window_size', 0), ('pair_gaps', (0,)), ('pair_gaps', (9,)),
    ('keyframe_min_overlap', 1.5), ('conf_keep_quantile', 1.0), ('conf_threshold', -1.0),
    ('motion_noise_mult', float('nan')), ('cluster_jump_rel', 0.0), ('ransac_iterations', 0),
    ('max_fit_points', 2), ('work_pixels', 0), ('flow_smooth_radius', -1),
    ('fixed_scale', 0.0), ('tracker', TrackerConfig(min_hits=0)),
    ('tracker', TrackerConfig(quick_birth_evidence=float('nan'))),
    ('tracker', TrackerConfig(quick_birth_inliers=1.5)), ('small_birth_frac', 0.0),
    ('small_birth_frac', 1.5), ('instance_split_bodies', 0),
])
def test_config_errors_name_the_field(field, value):
    with pytest.raises(ConfigError) as err:
        PipelineConfig(**{field: value}).validate()
    assert err.value.name == field and field in str(err.value)
