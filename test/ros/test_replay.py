"""pointmap-replay: a bag in (MCAP or sqlite3) -> a bag out with the node's topics, message
counts and stamps, decodable without our package (message definitions stored in the bag)."""

import subprocess
import sys

import numpy as np
import pytest
from ros_harness import SCENE, overlay_missing

ORACLE = ['--backend', 'oracle', '-p', f"oracle_height:={SCENE['height']}",
          '-p', f"oracle_width:={SCENE['width']}", '-p', f"oracle_frames:={SCENE['frames']}"]
FRAMES = 6
OUTPUTS = ('points', 'scene_flow', 'dynamic_points', 'motion_mask', 'instance_ids', 'objects',
           'markers')


@pytest.fixture(scope='module')
def scene_bag(tmp_path_factory):
    if (reason := overlay_missing()) is not None:
        pytest.skip(reason)
    from pointmap_ros.data.bag import write_bag
    from pointmap_ros.data.scenes import SceneGenerator, live_scene_config
    gen = SceneGenerator(live_scene_config(SCENE['scene'], SCENE['height'], SCENE['width'],
                                           SCENE['frames'], SCENE['fps']), seed=SCENE['seed'])
    path = tmp_path_factory.mktemp('bags') / 'scene_mcap'
    # base time 0: the oracle finds frame t at stamp t / fps.
    write_bag(gen, path, base_time_ns=0, frames=range(FRAMES))
    return gen, path


def run_replay(*args):
    return subprocess.run([sys.executable, '-m', 'pointmap_ros.tools.replay', *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def read_all(path):
    from rosbags.highlevel import AnyReader
    with AnyReader([path]) as reader:
        return [(c.topic, t, reader.deserialize(raw, c.msgtype))
                for c, t, raw in reader.messages()]


def to_sqlite3(src, dst):
    from rosbags.highlevel import AnyReader
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore
    store = get_typestore(Stores.ROS2_KILTED)
    with AnyReader([src]) as reader, Writer(dst, version=8,
                                            storage_plugin=StoragePlugin.SQLITE3) as writer:
        conns = {c.id: writer.add_connection(c.topic, c.msgtype, typestore=store)
                 for c in reader.connections}
        for c, t, raw in reader.messages():
            writer.write(conns[c.id], t, raw)


def check_output_bag(path, gen):
    msgs = read_all(path)
    counts = {}
    for topic, _, _ in msgs:
        counts[topic] = counts.get(topic, 0) + 1
    for key in OUTPUTS:
        assert counts[f'/dynamic_recon_node/{key}'] == FRAMES - 1, (key, counts)
    assert counts['/camera/image_raw'] == FRAMES and counts['/tf'] == 2 * FRAMES - 1
    stamps = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec
              for topic, _, m in msgs if topic == '/dynamic_recon_node/points']
    assert stamps == [round(t * 1e9 / SCENE['fps']) for t in range(1, FRAMES)]
    objects = [m for topic, _, m in msgs if topic == '/dynamic_recon_node/objects']
    assert objects[-1].objects and objects[-1].header.frame_id == 'world'
    # The cloud decodes by its declared fields to the exact ground truth.
    cloud = [m for topic, _, m in msgs if topic == '/dynamic_recon_node/points'][-1]
    names = [f.name for f in cloud.fields]
    data = np.frombuffer(cloud.data, np.uint8).reshape(cloud.height, cloud.width,
                                                       cloud.point_step)
    xyz = np.stack([data[..., f.offset:f.offset + 4].copy().view('<f4')[..., 0]
                    for f in cloud.fields[:3]], axis=-1)
    assert names[:3] == ['x', 'y', 'z']
    gt = gen.pair_ground_truth(FRAMES - 2, FRAMES - 1)
    T = gt.T_cami_camj
    expected = (gt.maps.pts_j_tj - T[:3, 3]) @ T[:3, :3]
    finite = np.isfinite(xyz).all(-1)
    assert finite.mean() > 0.5
    np.testing.assert_allclose(xyz[finite], expected[finite], atol=1e-4)


def test_mcap_bag_in_bag_out(scene_bag, tmp_path):
    gen, path = scene_bag
    result = run_replay(path, tmp_path / 'out', *ORACLE)
    assert result.returncode == 0, result.stderr
    assert 'frames of outputs' in result.stdout and 'replay' in result.stderr  # tqdm bar
    check_output_bag(tmp_path / 'out', gen)


def test_sqlite3_bag_in_bag_out(scene_bag, tmp_path):
    gen, path = scene_bag
    to_sqlite3(path, tmp_path / 'sqlite_in')
    result = run_replay(tmp_path / 'sqlite_in', tmp_path / 'out', *ORACLE, '--quiet')
    assert result.returncode == 0, result.stderr
    check_output_bag(tmp_path / 'out', gen)


def test_no_inputs_writes_only_outputs(scene_bag, tmp_path):
    _, path = scene_bag
    result = run_replay(path, tmp_path / 'out', *ORACLE, '--quiet', '--no-inputs')
    assert result.returncode == 0, result.stderr
    topics = {topic for topic, _, _ in read_all(tmp_path / 'out')}
    assert topics == {f'/dynamic_recon_node/{k}' for k in OUTPUTS} | {'/tf'}


@pytest.mark.parametrize('extra,message', [
    (['-p', 'cameras:=["/elsewhere"]'], 'none of the input topics'),
    (['-p', 'max_rate_hz:=-3.0'], 'max_rate_hz'),
    (['-p', 'no_such_param:=1'], 'unknown parameters'),
    (['-p', 'max_rate_hz'], 'not name:=value'),
])
def test_errors_exit_2_with_the_reason(scene_bag, tmp_path, extra, message):
    _, path = scene_bag
    result = run_replay(path, tmp_path / 'out', *ORACLE, '--quiet', *extra)
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_existing_output_is_not_overwritten_by_default(scene_bag, tmp_path):
    _, path = scene_bag
    (tmp_path / 'out').mkdir()
    result = run_replay(path, tmp_path / 'out', *ORACLE, '--quiet')
    assert result.returncode == 2 and '--overwrite' in result.stderr
    result = run_replay(path, tmp_path / 'out', *ORACLE, '--quiet', '--overwrite')
    assert result.returncode == 2 and 'not a bag' in result.stderr  # never deletes other data
    assert (tmp_path / 'out').is_dir()


def test_odometry_prior_reads_the_bags_tf(scene_bag, tmp_path):
    """The generated bag's ground truth ``world -> camera_optical_frame`` on /tf serves as
    odometry: every frame finds its pose, and the outputs are those of the plain replay."""
    gen, path = scene_bag
    result = run_replay(path, tmp_path / 'out', *ORACLE, '--quiet', '-p', 'odom_frame:=world')
    assert result.returncode == 0, result.stderr
    expected = (f"odometry (world): {FRAMES} frames with, without: "
                "{'missing': 0, 'extrapolation': 0, 'disconnected': 0}")
    assert expected in result.stdout, result.stdout
    check_output_bag(tmp_path / 'out', gen)
    result = run_replay(path, tmp_path / 'out2', *ORACLE, '--quiet', '-p', 'odom_frame:=odom')
    assert result.returncode == 0, result.stderr
    assert f"'missing': {FRAMES}" in result.stdout  # no such frame: counted, never fatal
    assert result.stderr.count('no odometry (missing)') == 1, result.stderr
