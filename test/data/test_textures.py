"""Textures: seeded, seamless, photos read from matplotlib's installed sample data."""

import numpy as np
import pytest

from pointmap_ros.data import textures
from pointmap_ros.data.scenes import SceneConfig, SceneGenerator


def test_bank_is_deterministic_by_seed():
    a = textures.TextureBank(np.random.default_rng(5), use_photos=False)
    b = textures.TextureBank(np.random.default_rng(5), use_photos=False)
    c = textures.TextureBank(np.random.default_rng(6), use_photos=False)
    for ta, tb, tc in zip(a.procedural, b.procedural, c.procedural):
        assert ta.shape == (textures.TEXTURE_SIZE, textures.TEXTURE_SIZE, 3)
        assert ta.dtype == np.float32 and 0.0 <= ta.min() and ta.max() <= 1.0
        np.testing.assert_array_equal(ta, tb)
        assert not np.array_equal(ta, tc)
        assert ta.std() > 0.02                     # textured, not flat


def test_sample_mirrors_and_tiles():
    tex = np.random.default_rng(0).random((8, 8, 3)).astype(np.float32)
    uv = np.array([[0.0, 0.0], [0.99, 0.0], [1.01, 0.0], [2.0, 0.0], [-0.01, 0.0], [0.55, 1.45]])
    out = textures.sample(tex, uv)
    np.testing.assert_array_equal(out[0], tex[0, 0])
    np.testing.assert_array_equal(out[1], tex[0, 7])
    np.testing.assert_array_equal(out[2], tex[0, 7])     # mirrored: no seam at the tile edge
    np.testing.assert_array_equal(out[3], tex[0, 0])     # period 2 tiles
    np.testing.assert_array_equal(out[4], tex[0, 0])
    np.testing.assert_array_equal(out[5], tex[4, 4])


def test_photos_come_from_matplotlib_sample_data():
    pytest.importorskip('matplotlib', reason='matplotlib (ships the sample images) not installed')
    pytest.importorskip('PIL', reason='Pillow not installed')
    photos = textures.sample_photos()
    assert len(photos) >= 2
    for photo in photos:
        assert photo.shape == (textures.TEXTURE_SIZE, textures.TEXTURE_SIZE, 3)
        assert photo.std() > 0.05


def test_scene_without_photos_still_renders():
    cfg = SceneConfig(height=30, width=40, num_frames=2, use_photos=False)
    a, b = SceneGenerator(cfg, seed=1), SceneGenerator(cfg, seed=1)
    np.testing.assert_array_equal(a.render(1).rgb, b.render(1).rgb)
    assert a.render(1).rgb.std() > 5
