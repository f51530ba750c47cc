"""Output building without a ROS graph: markers, TF payloads, diagnostics, QoS profiles."""

from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip('visualization_msgs.msg', reason='ROS 2 message wheels not installed')

from rclpy.qos import DurabilityPolicy, ReliabilityPolicy  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from visualization_msgs.msg import Marker  # noqa: E402

from pointmap_ros.errors import ConfigError  # noqa: E402
from pointmap_ros.geometry.transforms import se3_from_rt  # noqa: E402
from pointmap_ros.ros.conversions import transform_to_matrix  # noqa: E402
from pointmap_ros.ros.diagnostics import NodeStats, RateMeter, build_diagnostics  # noqa: E402
from pointmap_ros.ros.markers import objects_to_markers  # noqa: E402
from pointmap_ros.ros.outputs import output_transforms, world_rotation, world_up  # noqa: E402
from pointmap_ros.ros.qos import describe_qos, make_qos, tf_qos  # noqa: E402


def obj(track_id, x, v=(1.0, 0.0, 0.0)):
    return SimpleNamespace(track_id=track_id, T_world_obj=se3_from_rt(np.eye(3), [x, 0, 4]),
                           extent=np.array([0.2, 0.4, 0.0]), linear_velocity=np.array(v),
                           is_rigid=True)


def test_markers_per_track_and_deletes_for_vanished_tracks():
    header = Header(frame_id='world')
    first, ids = objects_to_markers([obj(1, 0.0), obj(2, 1.0)], header, set())
    assert ids == {1, 2}
    assert sorted((m.ns, m.id) for m in first.markers) == sorted(
        (ns, k) for ns in ('boxes', 'ids', 'velocity') for k in (1, 2))
    box = next(m for m in first.markers if m.ns == 'boxes' and m.id == 2)
    assert (box.type, box.pose.position.x, box.scale.y) == (Marker.CUBE, 1.0, 0.4)
    assert box.pose.position.z == 4.0  # the box stays on the object (label offset is its own)
    label = next(m for m in first.markers if m.ns == 'ids' and m.id == 2)
    # REP-103 world (default): labels float above the box, along +z.
    assert label.pose.position.x == 1.0 and label.pose.position.z == pytest.approx(4.0 + 0.25)
    optical, _ = objects_to_markers([obj(2, 1.0)], header, set(), up=world_up('optical'))
    label = next(m for m in optical.markers if m.ns == 'ids')
    assert (label.pose.position.y, label.pose.position.z) == (pytest.approx(-0.25), 4.0)
    assert box.scale.z > 0  # degenerate extents still draw
    arrow = next(m for m in first.markers if m.ns == 'velocity' and m.id == 1)
    assert [(p.x, p.z) for p in arrow.points] == [(0.0, 4.0), (1.0, 4.0)]  # 1 s of motion
    second, ids = objects_to_markers([obj(2, 1.1)], header, ids)
    deletes = [(m.ns, m.id) for m in second.markers if m.action == Marker.DELETE]
    assert sorted(deletes) == [('boxes', 1), ('ids', 1), ('velocity', 1)] and ids == {2}


def test_output_transforms_name_frames_and_carry_poses():
    T_cam = se3_from_rt(np.eye(3), [0.1, 0.2, 0.3])
    out = SimpleNamespace(T_world_cam=T_cam, objects=[obj(7, 2.0)])
    stamp = Header().stamp
    stamp.sec = 5
    trs = output_transforms(out, stamp, world_frame='world', camera_frame='cam_estimated',
                            object_prefix='object_')
    assert [(t.header.frame_id, t.child_frame_id) for t in trs] == [
        ('world', 'cam_estimated'), ('world', 'object_7')]
    assert all(t.header.stamp.sec == 5 for t in trs)
    np.testing.assert_allclose(transform_to_matrix(trs[0].transform), T_cam)
    assert len(output_transforms(out, stamp, world_frame='w', camera_frame='c',
                                 object_prefix='o', camera=False, objects=False)) == 0


def test_diagnostics_snapshot_and_message():
    stats = NodeStats()
    for k in range(5):
        stats.on_input('cam', 10.0 + 0.1 * k)
    stats.on_output(10.5, 40.0, {'inference': 30.0, 'total': 35.0})
    stats.on_drop('encoding')
    stats.set_engine('ready', {'backend': 'onnxruntime', 'device': 'cpu'})
    snap = stats.snapshot(10.5, {'unmatched_image': 2})
    snap['superseded'] = {'cam': 4}  # as DynamicReconNode fills it from its worker
    assert snap['input_hz']['cam'] == pytest.approx(10.0)
    assert snap['dropped'] == {'encoding': 1, 'unmatched_image': 2}
    msg = build_diagnostics('recon', snap, Header().stamp, hardware_id='cpu')
    values = {f'{s.name}/{kv.key}': kv.value for s in msg.status for kv in s.values}
    assert values['recon: processing/dropped encoding'] == '1'
    assert values['recon: processing/dropped total'] == '3'
    assert values['recon: processing/cam superseded before inference'] == '4'
    assert values['recon: processing/stage inference (ms)'] == '30.000'
    assert values['recon: engine/backend'] == 'onnxruntime'
    assert [s.level for s in msg.status] == [b'\x00'] * 3
    # Stamps from another clock (bag without use_sim_time) raise a warning that says so.
    stats.on_output(11.0, 3.6e9, {})
    msg = build_diagnostics('recon', stats.snapshot(11.0), Header().stamp)
    assert msg.status[1].level == b'\x01' and 'use_sim_time' in msg.status[1].message
    stats.set_engine('error', error='boom')
    assert build_diagnostics('recon', stats.snapshot(11.0), Header().stamp).status[2].level \
        == b'\x02'


def test_rate_meter_forgets_old_events():
    meter = RateMeter(window_s=1.0)
    assert meter.rate(0.0) == 0.0
    for k in range(11):
        meter.tick(k * 0.05)
    assert meter.rate(0.5) == pytest.approx(20.0)
    assert meter.rate(5.0) == 0.0


def test_qos_profiles():
    sensor = make_qos('sensor_data', 3)
    assert (sensor.reliability, sensor.depth) == (ReliabilityPolicy.BEST_EFFORT, 3)
    assert make_qos('reliable', 2).reliability == ReliabilityPolicy.RELIABLE
    tf = tf_qos()
    assert (tf.reliability, tf.durability, tf.depth) == (
        ReliabilityPolicy.RELIABLE, DurabilityPolicy.VOLATILE, 100)
    assert describe_qos(sensor) == 'best_effort/volatile/keep_last(3)'
    with pytest.raises(ConfigError, match='one of'):
        make_qos('fast', 1)
    with pytest.raises(ConfigError, match='depth'):
        make_qos('reliable', 0)


def test_world_conventions_rep103_and_optical():
    R = world_rotation('rep103')
    # Optical forward (z) is REP-103 forward (x); right (x) is -left (-y); down (y) is -up.
    np.testing.assert_array_equal(R @ [0, 0, 1], [1, 0, 0])
    np.testing.assert_array_equal(R @ [1, 0, 0], [0, -1, 0])
    np.testing.assert_array_equal(R @ [0, 1, 0], [0, 0, -1])
    assert np.linalg.det(R) == pytest.approx(1.0)
    np.testing.assert_array_equal(world_rotation('optical'), np.eye(3))
    with pytest.raises(ValueError, match='world_frame_convention'):
        world_rotation('enu')


def test_engine_cache_use_reports_hit_miss_and_key(tmp_path):
    import os
    import time

    from pointmap_ros.ros.node import engine_cache_use
    values = {'onnx_dir': '', 'engine_path': '', 'engine_cache_dir': str(tmp_path)}
    sidecar = tmp_path / 'onnx' / 'dpm_small-96x128-8d622916.json'
    sidecar.parent.mkdir()
    sidecar.write_text('{}')
    old = time.time() - 3600
    os.utime(sidecar, (old, old))
    info = {'backend': 'onnxruntime', 'onnx': str(sidecar)}
    assert engine_cache_use(info, values, started_s=time.time()) == \
        f'hit (key dpm_small-96x128-8d622916; {sidecar})'
    assert engine_cache_use(info, values, started_s=old - 1).startswith(
        'miss (key dpm_small-96x128-8d622916;')  # written after the engine was requested
    # No cache involved: a given export, or a backend without files.
    assert engine_cache_use(info, {**values, 'onnx_dir': str(tmp_path)}, time.time()) is None
    assert engine_cache_use({'backend': 'torch'}, values, time.time()) is None
    elsewhere = {'backend': 'onnxruntime', 'onnx': __file__}  # not inside the cache folder
    assert engine_cache_use(elsewhere, values, time.time()) is None
