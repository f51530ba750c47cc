"""The odometry prior's pieces in this process: what is counted and logged
(OdometryStats), how /diagnostics shows it, OdometrySource over real rclpy and DDS (our
TfBuffer behind /tf and /tf_static where tf2_ros is missing, as here), and CameraStream
handing the looked-up pose to the pipeline."""

import threading

import numpy as np
import pytest
from ros_harness import spin_until
from test_camera_stream import feed, oracle_parameters, oracle_stream, scene  # noqa: F401

pytest.importorskip('diagnostic_msgs.msg', reason='ROS 2 message wheels not installed')

from std_msgs.msg import Header  # noqa: E402

from pointmap_ros.geometry.transforms import rotvec_to_rotmat, se3_from_rt  # noqa: E402
from pointmap_ros.pipeline import DynamicReconPipeline  # noqa: E402
from pointmap_ros.ros.diagnostics import NodeStats, build_diagnostics  # noqa: E402
from pointmap_ros.ros.odometry_source import OdometryStats  # noqa: E402

S = 1_000_000_000
OK, WARN = b'\x00', b'\x01'


# -- counting and logging -----------------------------------------------------------------
def test_each_outage_logs_once_per_reason_and_once_when_odometry_returns():
    stats = OdometryStats(recent_frames=4)
    assert stats.record_success() is None  # nothing to say while odometry flows
    first = stats.record_failure('extrapolation', 'TF is late')
    assert first.startswith('no odometry (extrapolation): TF is late')
    assert stats.record_failure('extrapolation', 'TF is late') is None
    assert stats.record_failure('missing', 'no odom frame') is not None  # a new reason
    assert stats.record_success() == 'odometry is back after 3 frame(s) without it'
    assert stats.record_success() is None
    assert stats.record_failure('extrapolation', 'again') is not None  # a new outage
    snap = stats.snapshot()
    assert snap['with'] == 3
    assert snap['without'] == {'missing': 1, 'extrapolation': 3, 'disconnected': 0}
    assert (snap['recent_without'], snap['recent']) == (2, 4)  # F, ok, ok, F
    assert snap['last_error'] == 'extrapolation: again'


def odometry_snapshot(**overrides) -> dict:
    snap = {'frame': 'odom', 'source': 'TfBuffer (/tf, /tf_static)', 'with': 7,
            'without': {'missing': 0, 'extrapolation': 2, 'disconnected': 0},
            'recent_without': 2, 'recent': 9, 'last_error': 'extrapolation: late'}
    snap.update(overrides)
    return snap


def test_diagnostics_show_the_prior_and_warn_while_recent_frames_lack_it():
    stats = NodeStats()
    for decision in ('fused', 'fused', 'maps', 'odometry', 'none'):
        stats.on_odometry_decision('front', decision)
    snap = stats.snapshot(1.0)
    snap['odometry'] = odometry_snapshot()
    msg = build_diagnostics('recon', snap, Header().stamp)
    status = msg.status[3]
    values = {kv.key: kv.value for kv in status.values}
    assert status.name == 'recon: odometry' and status.level == WARN
    assert 'no odometry on 2 of the last 9 frames' in status.message
    assert values['odometry frame'] == 'odom'
    assert values['frames with odometry'] == '7'
    assert values['frames without odometry'] == '2'
    assert values['frames without odometry (extrapolation)'] == '2'
    assert values['front odometry fused'] == '2'
    assert values['front odometry rejected (maps won)'] == '1'
    assert values['front odometry used (odometry won)'] == '1'
    assert values['front odometry not used'] == '1'
    snap['odometry'] = odometry_snapshot(recent_without=0, last_error='')
    recovered = build_diagnostics('recon', snap, Header().stamp).status[3]
    assert recovered.level == OK and recovered.message == 'odometry on recent frames'
    snap['odometry'] = None  # the prior is off: no odometry status at all
    assert len(build_diagnostics('recon', snap, Header().stamp).status) == 3


# -- OdometrySource over DDS --------------------------------------------------------------
def transform(T, stamp_ns, parent, child):
    from pointmap_ros.ros.conversions import matrix_to_transform, ns_to_stamp
    return matrix_to_transform(T, ns_to_stamp(stamp_ns), parent, child)


def test_a_lookup_waits_for_tf_that_arrives_after_the_image(ros_node):
    from tf2_msgs.msg import TFMessage

    from pointmap_ros.ros.odometry_source import OdometrySource
    from pointmap_ros.ros.qos import tf_qos, tf_static_qos
    source = OdometrySource.from_node(ros_node, 'odom', timeout_s=30.0)
    assert source.kind == 'TfBuffer (/tf, /tf_static)'  # tf2_ros has no wheel
    dynamic = ros_node.create_publisher(TFMessage, '/tf', tf_qos())
    static = ros_node.create_publisher(TFMessage, '/tf_static', tf_static_qos())
    spin_until(ros_node, lambda: dynamic.get_subscription_count() > 0
               and static.get_subscription_count() > 0, 10, 'TF publishers matched')
    mount = se3_from_rt(rotvec_to_rotmat(np.array([-1.2, 1.2, -1.2])), [0.1, 0.0, 0.4])
    static.publish(TFMessage(transforms=[transform(mount, 0, 'base_link', 'cam_optical')]))
    dynamic.publish(TFMessage(transforms=[transform(np.eye(4), 1 * S, 'odom', 'base_link')]))

    source.timeout_s = 0.0
    spin_until(ros_node, lambda: source.pose_at('cam_optical', 1 * S) is not None, 10,
               'both transforms received')
    np.testing.assert_allclose(source.pose_at('cam_optical', 1 * S), mount, atol=1e-12)

    # 1.5 s lies after the only odometry sample: the lookup must wait for the next one, and
    # it runs off the spinning thread, as on the node's inference worker.
    source.timeout_s = 30.0
    results = []
    lookup = threading.Thread(target=lambda: results.append(
        source.pose_at('cam_optical', 3 * S // 2)))
    lookup.start()
    later = se3_from_rt(np.eye(3), [2.0, 0.0, 0.0])
    dynamic.publish(TFMessage(transforms=[transform(later, 2 * S, 'odom', 'base_link')]))
    spin_until(ros_node, lambda: not lookup.is_alive(), 30, 'the waiting lookup returns')
    expected = se3_from_rt(np.eye(3), [1.0, 0.0, 0.0]) @ mount  # halfway, then the mount
    np.testing.assert_allclose(results[0], expected, atol=1e-9)

    source.timeout_s = 0.0
    before = source.snapshot()['without']
    assert source.pose_at('no_such_frame', 2 * S) is None
    assert source.pose_at('cam_optical', 5 * S) is None  # TF stopped: into the future
    without = source.snapshot()['without']
    assert without['missing'] == before['missing'] + 1
    assert without['extrapolation'] == before['extrapolation'] + 1
    assert 'extrapolation into the future' in source.snapshot()['last_error']
    source.close()
    ros_node.destroy_publisher(dynamic)
    ros_node.destroy_publisher(static)


# -- CameraStream -------------------------------------------------------------------------
class RecordingPipeline(DynamicReconPipeline):
    """The real pipeline, remembering the FrameInput of each call."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.inputs = []

    def process(self, frame, skipped=0):
        self.inputs.append(frame)
        return super().process(frame, skipped)


def _pose_marking(stamp_ns: int) -> np.ndarray:
    """A rigid pose that tells which stamp it was looked up for (x = the stamp in s)."""
    pose = np.eye(4)
    pose[0, 3] = stamp_ns * 1e-9
    return pose


@pytest.mark.parametrize('odom_camera_frame, looked_up', [
    ('', 'camera_optical_frame'), ('camera_link', 'camera_link')])
def test_stream_gives_the_pipeline_the_pose_of_the_frame_looked_up(
        scene, odom_camera_frame, looked_up):
    values = oracle_parameters(odom_camera_frame=odom_camera_frame)
    stream = oracle_stream(values)
    stream.attach(RecordingPipeline(stream.pipeline.engine, stream.pipeline.config))
    calls = []

    def lookup(frame_id, stamp_ns):
        calls.append((frame_id, stamp_ns))
        return None if stamp_ns == 0 else _pose_marking(stamp_ns)

    stream.attach_odometry(lookup)
    frames = [feed(stream, scene, index) for index in (0, 1)]
    for frame in frames:
        stream.process(frame)
    assert calls == [(looked_up, 0), (looked_up, frames[1].stamp_ns)]
    received = stream.pipeline.inputs
    assert received[0].T_odom_cam is None  # no odometry for that frame
    np.testing.assert_array_equal(received[1].T_odom_cam, _pose_marking(frames[1].stamp_ns))
    assert frames[1].frame.T_odom_cam is None  # the StreamFrame stays as received
    stream.attach_odometry(None)
    stream.process(feed(stream, scene, 2))
    assert len(calls) == 2 and received[2].T_odom_cam is None
