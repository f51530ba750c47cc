"""Simulated robot sensors over a generated scene: the streaming odometry equals
odometry_poses, a run keeps integrating past a loop, the world -> odom correction restores
the truth, and depth is exact without a model and noisy with holes with one."""

import numpy as np
import pytest

from pointmap_ros.data.depth_sensor import DepthSensorModel, degrade_depth
from pointmap_ros.data.odometry import (ROBOT_CAMERA_MOUNT, OdometryModel, OdometrySensor,
                                        odometry_poses)
from pointmap_ros.data.scenes import SceneConfig, SceneGenerator
from pointmap_ros.data.sensor_rig import SensorRig, depth_seed, world_to_odom
from pointmap_ros.geometry.transforms import se3_compose

MODEL = OdometryModel(drift_rel=0.05, jitter_m=0.01, jitter_deg=0.5)


@pytest.fixture(scope='module')
def scene():
    return SceneGenerator(SceneConfig(height=30, width=40, num_frames=6, preset='demo'), seed=1)


def true_poses(scene, frames):
    return np.stack([scene.camera_pose(t) for t in frames])


def test_sensor_reads_exactly_what_odometry_poses_returns(scene):
    poses = true_poses(scene, range(scene.num_frames))
    sensor = OdometrySensor(MODEL, seed=7)
    streamed = np.stack([sensor.read(pose) for pose in poses])
    np.testing.assert_array_equal(streamed, odometry_poses(poses, MODEL, seed=7))
    np.testing.assert_array_equal(streamed[0], ROBOT_CAMERA_MOUNT)


def test_run_keeps_integrating_when_the_scene_loops(scene):
    frames = list(range(scene.num_frames)) * 2 + [0, 1]
    run = SensorRig(odometry=MODEL, seed=3).start()
    readings = [run.read(scene.render(t)) for t in frames]
    assert [r.index for r in readings] == list(range(len(frames))) and run.count == len(frames)
    expected = odometry_poses(true_poses(scene, frames), MODEL, seed=3)
    np.testing.assert_array_equal(np.stack([r.T_odom_cam for r in readings]), expected)
    # Drift keeps growing: the second pass does not repeat the first one's readings.
    assert not np.allclose(readings[scene.num_frames].T_odom_cam, readings[0].T_odom_cam)


def test_world_to_odom_restores_the_true_pose(scene):
    run = SensorRig(odometry=MODEL, seed=0).start()
    for t in range(scene.num_frames):
        frame = scene.render(t)
        reading = run.read(frame)
        T_world_odom = world_to_odom(frame.T_world_cam, reading.T_odom_cam)
        np.testing.assert_allclose(se3_compose(T_world_odom, reading.T_odom_cam),
                                   frame.T_world_cam, atol=1e-12)


def test_depth_is_exact_without_a_model_and_degraded_with_one(scene):
    frame = scene.render(2)
    exact = SensorRig().start().read(frame)
    assert exact.T_odom_cam is None
    np.testing.assert_array_equal(exact.depth, frame.depth)
    model = DepthSensorModel(noise_rel=0.02, dropout=0.1)
    run = SensorRig(depth=model, seed=5).start()
    first, second = run.read(frame), run.read(frame)
    np.testing.assert_array_equal(first.depth, degrade_depth(frame.depth, model, depth_seed(5, 0)))
    valid = frame.depth > 0
    assert (first.depth[valid] == 0).mean() > 0.05  # holes
    kept = valid & (first.depth > 0)
    assert np.abs(first.depth[kept] / frame.depth[kept] - 1).std() > 0.005  # noise
    assert not np.array_equal(first.depth, second.depth)  # fresh noise per reading
    assert depth_seed(5, 0) != depth_seed(5, 1) and depth_seed(5, 0) == depth_seed(5, 0)
