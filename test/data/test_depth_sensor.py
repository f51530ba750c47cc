"""The simulated depth camera (data/depth_sensor.py): its noise, holes and range."""

import numpy as np
import pytest

from pointmap_ros.data.depth_sensor import DepthSensorModel, degrade_depth, edge_neighbourhood
from pointmap_ros.data.scenes import SceneConfig, SceneGenerator


@pytest.fixture(scope='module')
def exact_depth():
    gen = SceneGenerator(SceneConfig(height=120, width=160, num_frames=2, preset='random',
                                     num_objects=3), seed=7)
    return gen.render(0).depth


def test_same_seed_same_depth_other_seed_other_depth(exact_depth):
    a = degrade_depth(exact_depth, seed=1)
    np.testing.assert_array_equal(a, degrade_depth(exact_depth, seed=1))
    assert not np.array_equal(a, degrade_depth(exact_depth, seed=2))
    assert a.dtype == np.float32 and a.shape == exact_depth.shape


def test_noise_is_relative_with_the_requested_spread(exact_depth):
    model = DepthSensorModel(noise_rel=0.01, dropout=0.0, edge_hole_prob=0.0, flying_prob=0.0,
                             min_m=0.0, max_m=np.inf)
    noisy = degrade_depth(exact_depth, model, seed=3)
    ratio = noisy / exact_depth - 1
    assert abs(np.mean(ratio)) < 1e-3
    assert np.std(ratio) == pytest.approx(0.01, rel=0.05)


def test_holes_at_edges_random_dropouts_and_range(exact_depth):
    model = DepthSensorModel(noise_rel=0.0, dropout=0.05, edge_hole_prob=1.0,
                             min_m=0.2, max_m=float(np.quantile(exact_depth, 0.9)))
    out = degrade_depth(exact_depth, model, seed=4)
    edge = edge_neighbourhood(exact_depth, model.edge_rel)[0]
    assert edge.any()
    assert np.all(out[edge] == 0)  # every edge pixel is a hole
    assert np.all(out[exact_depth > model.max_m] == 0)
    inside = ~edge & (exact_depth <= model.max_m)
    assert np.mean(out[inside] == 0) == pytest.approx(0.05, abs=0.01)
    kept = out > 0
    np.testing.assert_array_equal(out[kept], exact_depth[kept])  # no noise asked


def test_flying_pixels_lie_between_the_surfaces(exact_depth):
    model = DepthSensorModel(noise_rel=0.0, dropout=0.0, edge_hole_prob=0.0, flying_prob=1.0,
                             min_m=0.0, max_m=np.inf)
    out = degrade_depth(exact_depth, model, seed=5)
    edge, nearest, farthest = edge_neighbourhood(exact_depth, model.edge_rel)
    assert np.all((out[edge] >= nearest[edge]) & (out[edge] <= farthest[edge]))
    assert np.mean(out[edge] != exact_depth[edge]) > 0.9
    np.testing.assert_array_equal(out[~edge], exact_depth[~edge])
