"""synthetic_camera_node plays the scene like a driver: image, camera_info, depth, ground-truth
TF and /clock with stamps t / fps (``stamp_source: scene``), then exits when asked to; with
``wait_for_ready`` it plays only after a latched ``true``, stamping with its clock. With the
simulated robot sensors it publishes odometry (``odom -> camera``, exactly odometry_poses)
under a ground truth that keeps one parent per frame, and depth with holes and noise."""

import numpy as np
import pytest
from ros_harness import REPO, SCENE, spin_until

import helpers

pytestmark = pytest.mark.ros  # needs rclpy and DDS

FRAMES = 5


def test_plays_every_frame_with_exact_stamps(ros_node):
    from pointmap_ros.ros.conversions import camera_info_to_K, image_to_depth, image_to_rgb
    got = play(ros_node, '/sim', {'publish_depth': True, 'publish_clock': True,
                                  'encoding': 'bgr8'}, with_clock=True)
    stamps = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in got['image']]
    assert stamps == [round(t * 1e9 / SCENE['fps']) for t in range(FRAMES)]
    assert [m.header.stamp for m in got['info']] == [m.header.stamp for m in got['image']]
    assert len(got['depth']) == FRAMES and len(got['clock']) == FRAMES
    image, info, depth = got['image'][-1], got['info'][-1], got['depth'][-1]
    assert (image.encoding, image.header.frame_id) == ('bgr8', 'camera_optical_frame')
    assert image_to_rgb(image).shape == (SCENE['height'], SCENE['width'], 3)
    assert np.isfinite(image_to_depth(depth)).mean() > 0.9
    K = camera_info_to_K(info, (SCENE['height'], SCENE['width']))
    assert K[0, 0] > 0 and K[2, 2] == 1
    children = {tr.child_frame_id for tr in got['tf'][-1].transforms}
    assert 'camera_optical_frame' in children and 'gt_object_1' in children
    # depth_noise 0 (default): the renderer's exact depth, NaN where there is none.
    exact = scene().render(FRAMES - 1).depth
    np.testing.assert_array_equal(image_to_depth(depth), np.where(exact > 0, exact, np.nan))


def scene():
    """The scene the camera plays in these tests (FRAMES frames; default scene and seed)."""
    from pointmap_ros.data.scenes import SceneGenerator, live_scene_config
    return SceneGenerator(live_scene_config('demo', SCENE['height'], SCENE['width'], FRAMES,
                                            SCENE['fps']), seed=0)


def play(ros_node, namespace: str, params: dict, with_clock: bool = False) -> dict:
    """Run the camera over FRAMES frames (stamps t / fps) with ``params``; returns what it
    published (it waits for a subscriber on each of its topics), /clock too ``with_clock``."""
    from rclpy.qos import QoSProfile
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import CameraInfo, Image
    from tf2_msgs.msg import TFMessage
    topics = [('image', Image, f'{namespace}/image_raw'),
              ('info', CameraInfo, f'{namespace}/camera_info'),
              ('depth', Image, f'{namespace}/depth'), ('tf', TFMessage, '/tf')]
    topics += [('clock', Clock, '/clock')] * with_clock
    got = {key: [] for key, _, _ in topics}
    qos = QoSProfile(depth=50)
    for key, cls, topic in topics:
        ros_node.create_subscription(cls, topic, lambda m, k=key: got[k].append(m), qos)
    params = {'namespace': namespace, 'frames': FRAMES, 'height': SCENE['height'],
              'width': SCENE['width'], 'rate_hz': 20.0, 'shutdown_when_done': True,
              'stamp_source': 'scene', 'wait_for_subscribers': True, 'start_delay_s': 0.5,
              **params}
    args = ['--ros-args'] + [a for k, v in params.items() for a in ('-p', f'{k}:={v}')]
    with helpers.PythonProcess(script=REPO / 'scripts' / 'nodes' / 'synthetic_camera_node',
                               args=args, name='synthetic_camera') as proc:
        spin_until(ros_node, lambda: not proc.running, 60, 'camera finished', proc)
        spin_until(ros_node, lambda: len(got['image']) == FRAMES, 5, 'all frames', proc)
        assert proc.proc.returncode == 0, proc.output()
    return got


def test_publishes_odometry_under_one_parent_and_degraded_depth(ros_node):
    from pointmap_ros.data.depth_sensor import DepthSensorModel, degrade_depth
    from pointmap_ros.data.odometry import OdometryModel, odometry_poses
    from pointmap_ros.data.sensor_rig import depth_seed
    from pointmap_ros.geometry.transforms import se3_compose
    from pointmap_ros.ros.conversions import image_to_depth, transform_to_matrix
    from pointmap_ros.ros.outputs import world_rotation
    got = play(ros_node, '/odo', {
        'publish_depth': True, 'depth_noise': 0.03, 'depth_dropout': 0.1,
        'publish_odometry': True, 'odometry_drift': 0.05, 'odometry_jitter_m': 0.01,
        'odometry_jitter_deg': 0.5, 'noise_seed': 3})
    tf = [msg for msg in got['tf'] if any(tr.child_frame_id == 'camera_optical_frame'
                                          for tr in msg.transforms)]
    assert len(tf) == FRAMES and len(got['depth']) == FRAMES
    parents = {}
    for msg in tf:
        for tr in msg.transforms:
            parents.setdefault(tr.child_frame_id, set()).add(tr.header.frame_id)
    assert parents.pop('camera_optical_frame') == {'odom'}
    assert parents.pop('odom') == {'world'}
    assert all(p == {'world'} for p in parents.values()) and 'gt_object_1' in parents
    generated = scene()
    truth = np.stack([generated.camera_pose(t) for t in range(FRAMES)])
    expected = odometry_poses(truth, OdometryModel(0.05, 0.01, 0.5), seed=3)
    T_world_optical = np.eye(4)
    T_world_optical[:3, :3] = world_rotation('rep103')
    for t, msg in enumerate(tf):
        pose = {tr.child_frame_id: transform_to_matrix(tr.transform) for tr in msg.transforms}
        np.testing.assert_allclose(pose['camera_optical_frame'], expected[t], atol=1e-12)
        # The ground truth is still world -> camera_optical_frame, through odom.
        np.testing.assert_allclose(se3_compose(pose['odom'], pose['camera_optical_frame']),
                                   T_world_optical @ truth[t], atol=1e-9)
    model = DepthSensorModel(noise_rel=0.03, dropout=0.1)
    for t, msg in enumerate(got['depth']):
        exact = generated.render(t).depth
        degraded = degrade_depth(exact, model, seed=depth_seed(3, t))
        np.testing.assert_array_equal(image_to_depth(msg),
                                      np.where(degraded > 0, degraded, np.nan))
        assert (degraded[exact > 0] == 0).mean() > 0.08  # holes
        assert not np.array_equal(degraded[degraded > 0], exact[degraded > 0])  # noise


def test_waits_for_ready_then_stamps_with_its_clock(ros_node):
    import time

    from sensor_msgs.msg import Image
    from std_msgs.msg import Bool

    from pointmap_ros.ros.conversions import stamp_to_ns
    from pointmap_ros.ros.qos import latched_qos
    images = []
    ros_node.create_subscription(Image, '/ready_cam/image_raw', images.append, 10)
    ready = ros_node.create_publisher(Bool, '/ready_cam_consumer/ready', latched_qos())
    ready.publish(Bool(data=False))
    params = {'namespace': '/ready_cam', 'frames': FRAMES, 'height': SCENE['height'],
              'width': SCENE['width'], 'rate_hz': 20.0, 'loop': True, 'publish_tf': False,
              'wait_for_ready': '/ready_cam_consumer/ready', 'start_delay_s': 0.0}
    args = ['--ros-args'] + [a for k, v in params.items() for a in ('-p', f'{k}:={v}')]
    with helpers.PythonProcess(script=REPO / 'scripts' / 'nodes' / 'synthetic_camera_node',
                               args=args, name='synthetic_camera') as proc:
        spin_until(ros_node, lambda: 'ready_cam_consumer/ready: ' in proc.output()
                   or 'starting after' in proc.output(), 30, 'camera started', proc)
        spin_until(ros_node, lambda: ros_node.count_subscribers('/ready_cam_consumer/ready'),
                   30, 'camera subscribed to ready', proc)
        assert not images  # false (latched): nothing is played
        sent_after_ns = time.time_ns()
        ready.publish(Bool(data=True))
        # Looping: more frames than the scene has, stamps still increasing.
        spin_until(ros_node, lambda: len(images) > FRAMES + 1, 30, 'looped frames', proc)
        assert proc.stop() == 0, proc.output()
    stamps = [stamp_to_ns(m.header.stamp) for m in images]
    assert stamps == sorted(set(stamps))
    assert stamps[0] >= sent_after_ns - 1_000_000_000  # the node's (wall) clock, not t / fps


def camera_defaults() -> dict:
    from pointmap_ros.ros import params as P
    return {spec.name: P.ros_value(spec.default) for spec in P.CAMERA_PARAMS}


def test_camera_table_defaults_are_valid_and_the_sensors_off():
    from pointmap_ros.data.depth_sensor import DepthSensorModel
    from pointmap_ros.data.odometry import OdometryModel
    from pointmap_ros.ros import params as P
    from pointmap_ros.ros.synthetic_camera import sensor_rig
    values = camera_defaults()
    assert P.validate_camera(values) is None
    for spec in P.CAMERA_PARAMS:
        assert spec.description, spec.name
        if spec.range is not None:
            assert spec.range[0] <= spec.default <= spec.range[1], spec.name
    assert sensor_rig(values).odometry is None and sensor_rig(values).depth is None
    # Depth noise only applies to a published depth image.
    assert sensor_rig({**values, 'depth_noise': 0.02}).depth is None
    rig = sensor_rig({**values, 'publish_odometry': True, 'publish_depth': True,
                      'depth_noise': 0.02, 'noise_seed': 9})
    assert rig.odometry == OdometryModel() and rig.seed == 9
    assert rig.depth == DepthSensorModel(noise_rel=0.02)


@pytest.mark.parametrize('override,reason', [
    ({'odometry_drift': 2.0}, 'odometry_drift=2.0 is outside'),
    ({'depth_noise': -0.1}, 'depth_noise=-0.1 is outside'),
    ({'depth_encoding': 'mono8'}, 'depth_encoding'),
    ({'odom_frame': 'odom frame'}, 'not a valid frame name'),
    ({'publish_odometry': True, 'odom_frame': 'world'}, 'must differ'),
    ({'depth_min_m': 9.0, 'depth_max_m': 8.0}, 'must be below'),
])
def test_camera_validation_reasons(override, reason):
    from pointmap_ros.ros import params as P
    assert reason in P.validate_camera({**camera_defaults(), **override})


def test_out_of_range_sensor_parameter_stops_the_camera(ros_node):
    args = ['--ros-args', '-p', 'publish_odometry:=true', '-p', 'odometry_jitter_deg:=90.0']
    with helpers.PythonProcess(script=REPO / 'scripts' / 'nodes' / 'synthetic_camera_node',
                               args=args, name='bad_camera') as proc:
        spin_until(ros_node, lambda: not proc.running, 60, 'camera exits', proc)
        assert proc.proc.returncode != 0
        assert 'odometry_jitter_deg' in proc.output(), proc.output()
