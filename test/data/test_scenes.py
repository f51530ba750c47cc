"""Scene generator: API, determinism, configuration errors and the 'demo' choreography."""

import numpy as np
import pytest

from pointmap_ros.data.layout import build_layout
from pointmap_ros.data.scenes import SceneConfig, SceneGenerator
from pointmap_ros.errors import ConfigError, InputError
from pointmap_ros.types import DynamicPointMaps


def small(**kwargs):
    base = dict(height=48, width=64, num_frames=8, fps=10.0)
    base.update(kwargs)
    return SceneConfig(**base)


def test_render_fields_and_shapes():
    gen = SceneGenerator(small(), seed=3)
    f = gen.render(2)
    assert f.rgb.shape == (48, 64, 3) and f.rgb.dtype == np.uint8
    assert f.depth.shape == (48, 64) and f.depth.dtype == np.float32
    assert f.instance_ids.dtype == np.int32
    assert set(np.unique(f.instance_ids)) <= {0} | {o.id for o in gen.objects}
    assert set(f.object_poses) == {o.id for o in gen.objects}
    assert f.stamp == pytest.approx(0.2) and f.index == 2 and f.key == 'cam0/2'
    assert f.frame().key == f.key
    assert np.all(f.depth > 0)                      # the room is closed: every pixel hits
    assert gen.K[0, 2] != (64 - 1) / 2 and gen.K[1, 2] != (48 - 1) / 2  # off-centre on purpose
    assert any(not o.rigid for o in gen.objects)


def test_world_frame_is_camera_zero():
    gen = SceneGenerator(small(camera_amplitude=0.5), seed=1)
    np.testing.assert_allclose(gen.render(0).T_world_cam, np.eye(4), atol=1e-12)
    assert not np.allclose(gen.render(5).T_world_cam, np.eye(4))


def test_deterministic_by_seed():
    a, b = SceneGenerator(small(), seed=7), SceneGenerator(small(), seed=7)
    np.testing.assert_array_equal(a.render(4).rgb, b.render(4).rgb)
    ga, gb = a.pair_ground_truth(1, 5), b.pair_ground_truth(1, 5)
    np.testing.assert_array_equal(ga.maps.pts_j_ti, gb.maps.pts_j_ti)
    c = SceneGenerator(small(), seed=8)
    assert not np.array_equal(a.render(4).rgb, c.render(4).rgb)


def test_plain_objects_keep_the_scene_and_remove_only_the_objects_texture():
    """Same seed, same layout and motion; every object one albedo, so within one flat face
    of a box the colour is constant, while the room keeps its texture."""
    textured = SceneGenerator(small(height=96, width=128), seed=5)
    plain = SceneGenerator(small(height=96, width=128, plain_objects=True), seed=5)
    a, b = textured.render(3), plain.render(3)
    np.testing.assert_array_equal(a.depth, b.depth)
    np.testing.assert_array_equal(a.instance_ids, b.instance_ids)
    room = a.instance_ids == 0
    np.testing.assert_array_equal(a.rgb[room], b.rgb[room])
    assert not np.array_equal(a.rgb[~room], b.rgb[~room])
    layouts = [build_layout(generator.config, np.random.default_rng(5), 0.5)
               for generator in (textured, plain)]
    for obj_t, obj_p in zip(layouts[0].objects, layouts[1].objects):
        assert np.ptp(obj_p.texture.reshape(-1, 3), axis=0).max() == 0
        np.testing.assert_allclose(obj_p.texture[0, 0], obj_t.texture.reshape(-1, 3).mean(0, dtype=np.float64),
                                   rtol=1e-5)


def test_pair_ground_truth_types():
    gen = SceneGenerator(small(), seed=0)
    gt = gen.pair_ground_truth(0, 3)
    assert isinstance(gt.maps, DynamicPointMaps) and gt.maps.metric
    assert gt.maps.key_i == 'cam0/0' and gt.maps.key_j == 'cam0/3'
    for name in ('i_ti', 'i_tj', 'j_ti', 'j_tj'):
        assert gt.maps.pts(name).dtype == np.float32 and gt.maps.pts(name).shape == (48, 64, 3)
        assert np.isfinite(gt.maps.pts(name)).all()
        np.testing.assert_array_equal(gt.maps.conf(name) == 1.0,
                                      gt.valid_i if name.startswith('i') else gt.valid_j)
    assert gt.motion_i.dtype == bool and gt.instance_j.dtype == np.int32
    assert gt.motion_i.any() and not gt.motion_i.all()


def test_invalid_pixels_are_zero_not_nan():
    # A near plane beyond the far wall invalidates every pixel.
    gen = SceneGenerator(small(near=20.0, far=50.0), seed=0)
    gt = gen.pair_ground_truth(0, 1)
    assert not gt.valid_i.any() and not gt.motion_i.any()
    assert np.all(gt.maps.pts_i_tj == 0.0) and np.all(gt.maps.conf_i_ti == 0.0)
    assert np.all(gen.render(0).depth == 0.0)


@pytest.mark.parametrize('field,value', [
    ('height', 2), ('num_frames', 0), ('fps', 0.0), ('preset', 'nope'), ('fov_deg', 200.0),
    ('camera_amplitude', -1.0), ('fx', -5.0), ('near', 0.0), ('cache_frames', 1),
    ('object_speed', -1.0), ('num_objects', -1), ('motion_epsilon', 0.0), ('width', 4)])
def test_config_errors_name_the_field(field, value):
    with pytest.raises(ConfigError, match=field) as info:
        SceneGenerator(small(**{field: value}))
    assert info.value.name == field


def test_demo_needs_three_objects():
    with pytest.raises(ConfigError, match='num_objects >= 3'):
        SceneGenerator(small(preset='demo', num_objects=2))


def test_bad_frame_index_and_object_id():
    gen = SceneGenerator(small(), seed=0)
    with pytest.raises(InputError, match=r'out of range \[0, 8\)') as info:
        gen.render(8)
    assert info.value.reason == 'frame_index'
    with pytest.raises(InputError):
        gen.pair_ground_truth(0, -1)
    with pytest.raises(InputError, match='no object with id 99'):
        gen.object_pose(99, 0)


def test_cache_is_bounded():
    gen = SceneGenerator(small(cache_frames=2), seed=0)
    for t in range(5):
        gen.render(t)
    assert len(gen._cache) == 2


def _centroid_u(ids, obj_id):
    cols = np.nonzero(ids == obj_id)[1]
    return cols.mean() if cols.size else None


@pytest.mark.parametrize('deformable,seed', [(True, 0), (False, 0), (True, 5), (True, 11)])
def test_demo_preset_has_crossing_and_occlusion(deformable, seed):
    cfg = SceneConfig(height=72, width=96, num_frames=21, preset='demo',
                      include_deformable=deformable)
    gen = SceneGenerator(cfg, seed=seed)
    ev = gen.events
    assert ev.crossing_frame == 10 and (ev.occluder_id, ev.occluded_id) == (1, 2)
    assert len(gen.objects) >= 3
    assert [o.rigid for o in gen.objects][:3] == [True, True, not deformable]
    first, cross, last = (gen.render(t).instance_ids for t in (0, ev.crossing_frame, 20))
    # Both visible at the ends, on opposite sides, order swapped: they cross in the image.
    d0 = _centroid_u(first, 1) - _centroid_u(first, 2)
    d1 = _centroid_u(last, 1) - _centroid_u(last, 2)
    assert d0 * d1 < 0
    # At the crossing the near box hides the far cylinder completely, and is itself visible.
    assert (cross == 2).sum() == 0 and (cross == 1).sum() > 100
    assert (first == 2).sum() > 20 and (last == 2).sum() > 20
    for t in range(cfg.num_frames):          # everything but the occluded one stays in view
        ids = gen.render(t).instance_ids
        assert all((ids == o.id).sum() > 5 for o in gen.objects if o.id != ev.occluded_id)
    depth = gen.render(ev.crossing_frame).depth
    assert np.median(depth[cross == 1]) < 3.5


def test_the_eval_scenes_move_the_same_way_in_time_at_any_frame_rate():
    """``eval_scene(fps=30)``: the same seed's layout and motion as at 10 fps, sampled three
    times as often: frame 3t at 30 fps is frame t at 10 fps, pixel for pixel."""
    from pointmap_ros.evaluation.pipeline_eval import eval_scene
    slow = SceneGenerator(eval_scene(48, 64, num_frames=4), seed=7)
    fast = SceneGenerator(eval_scene(48, 64, num_frames=10, fps=30.0), seed=7)
    assert fast.config.fps == 30.0 and fast.stamp(9) == pytest.approx(slow.stamp(3))
    for t in (1, 3):
        a, b = slow.render(t), fast.render(3 * t)
        np.testing.assert_array_equal(a.depth, b.depth)
        np.testing.assert_array_equal(a.rgb, b.rgb)
    assert not np.array_equal(slow.render(1).depth, fast.render(1).depth)  # a smaller step
