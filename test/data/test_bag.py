"""ROS 2 bag writer/reader and the pointmap-generate CLI: round trips through real bag files,
with and without the simulated robot sensors (odometry on /tf, degraded depth)."""

import numpy as np
import pytest

pytest.importorskip('rosbags', reason='rosbags (the pure-Python bag library) is not installed')

from pointmap_ros.data import bag  # noqa: E402
from pointmap_ros.data.depth_sensor import DepthSensorModel, degrade_depth  # noqa: E402
from pointmap_ros.data.odometry import OdometryModel, odometry_poses  # noqa: E402
from pointmap_ros.data.scenes import SceneConfig, SceneGenerator  # noqa: E402
from pointmap_ros.data.sensor_rig import SensorRig, depth_seed  # noqa: E402
from pointmap_ros.errors import ConfigError, InputError  # noqa: E402
from pointmap_ros.frames import GROUND_TRUTH_OBJECT_PREFIX, object_frame  # noqa: E402
from pointmap_ros.geometry.transforms import quat_xyzw_to_rotmat, se3_compose  # noqa: E402
from pointmap_ros.tools import generate  # noqa: E402

CFG = SceneConfig(height=36, width=52, num_frames=5, fps=8.0, preset='demo')


@pytest.fixture(scope='module')
def written(tmp_path_factory):
    gen = SceneGenerator(CFG, seed=2)
    path = tmp_path_factory.mktemp('bags') / 'seq'
    seen = []
    summary = bag.write_bag(gen, path, include_depth=True, on_frame=seen.append)
    return gen, path, summary, seen


def pose_of(transform):
    t, q = transform.translation, transform.rotation
    pose = np.eye(4)
    pose[:3, :3] = quat_xyzw_to_rotmat(np.array([q.x, q.y, q.z, q.w]))
    pose[:3, 3] = [t.x, t.y, t.z]
    return pose


def test_bag_layout(written):
    _, path, summary, seen = written
    assert (path / 'metadata.yaml').is_file() and list(path.glob('*.mcap'))
    assert seen == list(range(5)) and summary.num_frames == 5
    assert summary.topics == {bag.TOPIC_IMAGE: 5, bag.TOPIC_CAMERA_INFO: 5, bag.TOPIC_TF: 5,
                              bag.TOPIC_DEPTH: 5}


def test_round_trip_images_stamps_and_intrinsics(written):
    gen, path, _, _ = written
    images = list(bag.read_bag(path, topics=[bag.TOPIC_IMAGE]))
    assert len(images) == 5
    for t, m in enumerate(images):
        f = gen.render(t)
        expected_ns = bag.DEFAULT_BASE_TIME_NS + round(t / 8.0 * 1e9)
        assert m.stamp_ns == expected_ns
        stamp = m.msg.header.stamp
        assert stamp.sec * 10**9 + stamp.nanosec == expected_ns
        assert m.msg.header.frame_id == bag.CAMERA_FRAME and m.msg.encoding == 'rgb8'
        assert (m.msg.height, m.msg.width, m.msg.step) == (36, 52, 52 * 3)
        np.testing.assert_array_equal(m.msg.data.reshape(36, 52, 3), f.rgb)
    info = next(bag.read_bag(path, topics=[bag.TOPIC_CAMERA_INFO])).msg
    np.testing.assert_array_equal(info.k.reshape(3, 3), gen.K)
    np.testing.assert_array_equal(info.p.reshape(3, 4)[:, :3], gen.K)
    assert info.distortion_model == 'plumb_bob' and not info.d.any()
    depth = next(bag.read_bag(path, topics=[bag.TOPIC_DEPTH])).msg
    assert depth.encoding == '32FC1'
    np.testing.assert_array_equal(depth.data.view(np.float32).reshape(36, 52), gen.render(0).depth)


def test_round_trip_ground_truth_tf(written):
    gen, path, _, _ = written
    for t, m in enumerate(bag.read_bag(path, topics=[bag.TOPIC_TF])):
        by_child = {tr.child_frame_id: tr for tr in m.msg.transforms}
        expected = {bag.CAMERA_FRAME} | {object_frame(GROUND_TRUTH_OBJECT_PREFIX, o.id)
                                         for o in gen.objects}
        assert set(by_child) == expected
        assert all(tr.header.frame_id == bag.WORLD_FRAME for tr in m.msg.transforms)
        np.testing.assert_allclose(pose_of(by_child[bag.CAMERA_FRAME].transform),
                                   gen.camera_pose(t), atol=1e-12)
        for o in gen.objects:
            frame_name = object_frame(GROUND_TRUTH_OBJECT_PREFIX, o.id)
            np.testing.assert_allclose(pose_of(by_child[frame_name].transform),
                                       gen.object_pose(o.id, t), atol=1e-12)


ODOMETRY = OdometryModel(drift_rel=0.05, jitter_m=0.01, jitter_deg=0.5)
DEPTH = DepthSensorModel(noise_rel=0.02, dropout=0.1)


@pytest.fixture(scope='module')
def with_sensors(tmp_path_factory):
    gen = SceneGenerator(CFG, seed=2)
    path = tmp_path_factory.mktemp('bags') / 'robot'
    rig = SensorRig(odometry=ODOMETRY, depth=DEPTH, seed=4)
    bag.write_bag(gen, path, include_depth=True, sensors=rig)
    return gen, path


def test_odometry_tf_keeps_one_parent_per_frame_and_the_ground_truth(with_sensors):
    gen, path = with_sensors
    truth = np.stack([gen.camera_pose(t) for t in range(5)])
    expected = odometry_poses(truth, ODOMETRY, seed=4)
    for t, m in enumerate(bag.read_bag(path, topics=[bag.TOPIC_TF])):
        parents = {tr.child_frame_id: tr.header.frame_id for tr in m.msg.transforms}
        assert len(parents) == len(m.msg.transforms)  # one parent per child
        assert parents.pop(bag.CAMERA_FRAME) == bag.ODOM_FRAME
        assert set(parents.values()) == {bag.WORLD_FRAME} and bag.ODOM_FRAME in parents
        pose = {tr.child_frame_id: pose_of(tr.transform) for tr in m.msg.transforms}
        np.testing.assert_allclose(pose[bag.CAMERA_FRAME], expected[t], atol=1e-12)
        np.testing.assert_allclose(se3_compose(pose[bag.ODOM_FRAME], pose[bag.CAMERA_FRAME]),
                                   truth[t], atol=1e-9)


def test_depth_is_the_sensors_reading(with_sensors):
    gen, path = with_sensors
    for t, m in enumerate(bag.read_bag(path, topics=[bag.TOPIC_DEPTH])):
        depth = m.msg.data.view(np.float32).reshape(36, 52)
        exact = gen.render(t).depth
        np.testing.assert_array_equal(depth, degrade_depth(exact, DEPTH, depth_seed(4, t)))
        assert (depth[exact > 0] == 0).mean() > 0.08


def test_depth_model_needs_the_depth_topic(tmp_path):
    with pytest.raises(ConfigError, match='include_depth'):
        bag.write_bag(SceneGenerator(CFG, seed=2), tmp_path / 'b', sensors=SensorRig(depth=DEPTH))


def test_reads_sqlite3_bags(tmp_path):
    from rosbags.rosbag2 import StoragePlugin, Writer
    store = bag.typestore()
    string = store.types['std_msgs/msg/String']
    with Writer(tmp_path / 'sq', version=8, storage_plugin=StoragePlugin.SQLITE3) as writer:
        conn = writer.add_connection('/chatter', 'std_msgs/msg/String', typestore=store)
        for k in range(3):
            writer.write(conn, 1000 + k, store.serialize_cdr(string(data=f'm{k}'),
                                                            'std_msgs/msg/String'))
    got = [(m.topic, m.stamp_ns, m.msg.data) for m in bag.read_bag(tmp_path / 'sq')]
    assert got == [('/chatter', 1000, 'm0'), ('/chatter', 1001, 'm1'), ('/chatter', 1002, 'm2')]


def test_existing_path_needs_overwrite(written, tmp_path):
    gen, path, _, _ = written
    with pytest.raises(ConfigError, match='already exists'):
        bag.write_bag(gen, path)
    plain = tmp_path / 'not_a_bag'
    plain.mkdir()
    (plain / 'keep.txt').write_text('x')
    with pytest.raises(ConfigError, match='not a bag directory'):
        bag.write_bag(gen, plain, overwrite=True)
    assert (plain / 'keep.txt').is_file()


def test_read_missing_bag_raises(tmp_path):
    with pytest.raises(InputError, match='cannot open ROS 2 bag') as info:
        list(bag.read_bag(tmp_path / 'nothing'))
    assert info.value.reason == 'bag'


def test_cli_writes_and_overwrites(tmp_path, capsys):
    out = tmp_path / 'cli_bag'
    args = ['--out', str(out), '--frames', '3', '--width', '40', '--height', '30', '--quiet',
            '--preset', 'random', '--seed', '4']
    assert generate.main(args) == 0
    assert 'wrote 3 frames' in capsys.readouterr().out
    assert generate.main(args) == 2
    assert 'already exists' in capsys.readouterr().err
    assert generate.main(args + ['--overwrite', '--depth']) == 0
    topics = {m.topic for m in bag.read_bag(out)}
    assert topics == {bag.TOPIC_IMAGE, bag.TOPIC_CAMERA_INFO, bag.TOPIC_TF, bag.TOPIC_DEPTH}
    assert generate.main(args[:-4] + ['--overwrite', '--preset', 'demo', '--objects', '2']) == 2
    assert 'num_objects >= 3' in capsys.readouterr().err


def test_cli_writes_the_robot_sensors(tmp_path, capsys):
    out = tmp_path / 'robot_bag'
    args = ['--out', str(out), '--frames', '3', '--width', '40', '--height', '30', '--quiet',
            '--preset', 'random', '--odometry', '--depth', '--depth-noise', '0.02']
    assert generate.main(args) == 0
    children = {tr.child_frame_id: tr.header.frame_id
                for m in bag.read_bag(out, topics=[bag.TOPIC_TF]) for tr in m.msg.transforms}
    assert children[bag.CAMERA_FRAME] == bag.ODOM_FRAME
    assert children[bag.ODOM_FRAME] == bag.WORLD_FRAME
    depth = next(bag.read_bag(out, topics=[bag.TOPIC_DEPTH])).msg.data.view(np.float32)
    assert (depth == 0).mean() > 0.05
    with pytest.raises(SystemExit) as exit_info:
        generate.main(['--out', str(tmp_path / 'x'), '--depth-noise', '0.02'])
    assert exit_info.value.code == 2 and '--depth-noise needs --depth' in capsys.readouterr().err
