"""End to end over real DDS: a generated sequence in, every output topic out, checked against
exact ground truth (oracle engine), with stamps equal to the input stamps.

One node process (backend oracle, 96x128 scene) for the whole module; the sequence is played
once, frame by frame: frame 1 is sent once the node has taken frame 0 (it opens the window;
/diagnostics ``processed frames``), every later frame once the previous one's cloud arrived,
so with ``max_rate_hz: 0`` every frame after the first produces outputs. The world frame is
REP-103 (the default ``world_frame_convention``): ground truth, given in the scene's optical
world, is rotated into it.
"""

import numpy as np
import pytest
from ros_harness import (NODE, OUTPUTS, Collector, ScenePublisher, decode_points, oracle_args,
                      recon_process, spin_until, wait_for_node)

from pointmap_ros.geometry.transforms import rotation_angle, se3_inverse
from pointmap_ros.ros.outputs import world_rotation
from pointmap_ros.ros.conversions import (cloud_to_array, image_to_array, stamp_to_ns,
                                          transform_to_matrix)

pytestmark = pytest.mark.ros  # needs rclpy and DDS

FRAMES = 10
TOL_M = 1e-4  # oracle: exact up to float32 rounding of metre-scale points
# Scene (optical) world -> the published REP-103 world.
R_WORLD = np.eye(4)
R_WORLD[:3, :3] = world_rotation('rep103')


@pytest.fixture(scope='module')
def run(ros_node):
    """Play FRAMES frames through the node; return (collector, scene publisher, stamps)."""
    collector = Collector(ros_node)
    publisher = ScenePublisher(ros_node)
    with recon_process(oracle_args(diagnostics_period_s=0.2)) as proc:
        wait_for_node(ros_node, proc, publisher)
        stamps = []
        for t in range(FRAMES):
            stamps.append(publisher.publish_frame(t))
            if t == 0:  # the node must have taken frame 0 before frame 1 could replace it
                spin_until(ros_node, lambda: collector.diagnostics().get(
                    'processing/processed frames') == '1', 30, 'frame 0 taken', proc)
            else:
                spin_until(ros_node, lambda: stamps[-1] in collector.stamps('points'), 30,
                           f'points of frame {t}', proc)
        spin_until(ros_node, lambda: all(
            stamps[-1] in collector.stamps(k) for k in OUTPUTS if k != 'markers'), 10,
            'all outputs of the last frame', proc)
        spin_until(ros_node, lambda: collector.diagnostics().get('processing/published')
                   == str(FRAMES - 1), 10, 'diagnostics of all frames', proc)
        yield collector, publisher, stamps
        assert proc.stop() == 0, proc.output()


def test_every_output_topic_is_received(run):
    collector, _, _ = run
    for key in OUTPUTS + ('tf', 'diagnostics'):
        assert collector.msgs[key], f'nothing received on {key}'


def test_output_stamps_equal_input_stamps(run):
    collector, _, stamps = run
    for key in ('points', 'scene_flow', 'dynamic_points', 'motion_mask', 'instance_ids',
                'objects'):
        assert collector.stamps(key) == stamps[1:], key  # frame 0 only starts the window
    tf_stamps = {stamp_to_ns(tr.header.stamp) for m in collector.msgs['tf']
                 for tr in m.transforms}
    assert tf_stamps == set(stamps[1:])
    for msg in collector.msgs['markers']:
        assert {stamp_to_ns(m.header.stamp) for m in msg.markers} <= set(stamps[1:])


def gt_points_cam(scene, t):
    """Exact points of frame t in its own optical frame, and their validity."""
    gt = scene.pair_ground_truth(t - 1, t)
    T = gt.T_cami_camj  # camera t -> camera t-1
    return (gt.maps.pts_j_tj - T[:3, 3]) @ T[:3, :3], gt.valid_j, gt.flow_j @ T[:3, :3]


def test_points_decode_by_fields_and_equal_ground_truth(run):
    collector, publisher, _ = run
    for t, msg in enumerate(collector.msgs['points'], start=1):
        assert msg.header.frame_id == 'camera_optical_frame'
        assert [f.name for f in msg.fields] == ['x', 'y', 'z', 'rgb', 'confidence']
        points = decode_points(msg)
        expected, valid, _ = gt_points_cam(publisher.scene, t)
        finite = np.isfinite(points).all(-1)
        assert finite.mean() > 0.5, f'frame {t}: only {finite.mean():.0%} valid points'
        assert not (finite & ~valid).any()
        np.testing.assert_allclose(points[finite], expected[finite], atol=TOL_M)
        colours = cloud_to_array(msg)['rgb']
        assert colours.shape == (msg.height, msg.width)


def test_scene_flow_is_metres_per_second_and_exact(run):
    collector, publisher, _ = run
    for t, msg in enumerate(collector.msgs['scene_flow'], start=1):
        arr = cloud_to_array(msg)
        flow = np.stack([arr['vx'], arr['vy'], arr['vz']], axis=-1)
        _, valid, gt_flow = gt_points_cam(publisher.scene, t)
        finite = np.isfinite(flow).all(-1)
        assert finite.any()
        np.testing.assert_allclose(flow[finite], gt_flow[finite] * publisher.scene.config.fps,
                                   atol=1e-3)


def test_motion_mask_instances_and_dynamic_points(run):
    collector, publisher, _ = run
    for t, (mask_msg, ids_msg, dyn_msg) in enumerate(zip(
            collector.msgs['motion_mask'], collector.msgs['instance_ids'],
            collector.msgs['dynamic_points']), start=1):
        assert (mask_msg.encoding, ids_msg.encoding) == ('mono8', '32SC1')
        mask = image_to_array(mask_msg) == 255
        gt = publisher.scene.pair_ground_truth(t - 1, t).motion_j
        iou = (mask & gt).sum() / max((mask | gt).sum(), 1)
        assert iou > 0.75, f'frame {t}: motion mask IoU {iou:.2f}'
        ids = image_to_array(ids_msg)
        assert not ((ids > 0) & ~mask).any()  # instances are moving pixels
        assert dyn_msg.height == 1 and dyn_msg.width == int(mask.sum())


def object_tracks(collector):
    """{child frame: [(stamp_ns, T_world_obj)]} from /tf."""
    tracks = {}
    for msg in collector.msgs['tf']:
        for tr in msg.transforms:
            assert tr.header.frame_id == 'world'
            tracks.setdefault(tr.child_frame_id, []).append(
                (stamp_to_ns(tr.header.stamp), transform_to_matrix(tr.transform)))
    return tracks


def test_object_tf_frames_follow_ground_truth_trajectories(run):
    collector, publisher, _ = run
    scene, fps = publisher.scene, publisher.scene.config.fps
    tracks = {k: v for k, v in object_tracks(collector).items() if k.startswith('object_')}
    assert tracks
    for obj in (o for o in scene.objects if o.rigid):
        # A rigid object's frame is its ground-truth frame times a constant offset.
        matches = []
        for child, seq in tracks.items():
            offsets = [se3_inverse(R_WORLD @ scene.object_pose(obj.id, round(ns * 1e-9 * fps)))
                       @ T for ns, T in seq]
            drift = max(np.abs(C[:3, 3] - offsets[0][:3, 3]).max() for C in offsets)
            turn = max(rotation_angle(C[:3, :3] @ offsets[0][:3, :3].T) for C in offsets)
            if len(seq) >= 3 and drift < TOL_M and turn < 1e-3:
                matches.append(child)
        assert len(matches) == 1, f'{obj}: tracks following it: {matches}'


def test_camera_tf_is_the_estimated_trajectory(run):
    collector, publisher, _ = run
    seq = object_tracks(collector)['camera_optical_frame_estimated']
    assert len(seq) == FRAMES - 1
    for ns, T in seq:
        t = round(ns * 1e-9 * publisher.scene.config.fps)
        np.testing.assert_allclose(T, R_WORLD @ publisher.scene.camera_pose(t), atol=TOL_M)


def test_objects_message_matches_tf_and_markers(run):
    collector, _, stamps = run
    last = collector.msgs['objects'][-1]
    assert last.header.frame_id == 'world' and last.metric_scale
    tf_children = {tr.child_frame_id for tr in collector.msgs['tf'][-1].transforms}
    assert {f'object_{o.id}' for o in last.objects} == tf_children - {
        'camera_optical_frame_estimated'}
    assert any(obj.point_count > 0 for obj in last.objects)  # 0 = coasting, unseen now
    for obj in last.objects:
        assert 0.0 <= obj.confidence <= 1.0 and obj.metric_scale and obj.age >= 1
        assert min(obj.extent.x, obj.extent.y, obj.extent.z) > 0
    boxes = [m for m in collector.msgs['markers'][-1].markers if m.ns == 'boxes']
    assert {m.id for m in boxes if m.action == m.ADD} == {o.id for o in last.objects}
    assert stamp_to_ns(last.header.stamp) == stamps[-1]


def test_diagnostics_report_rates_stages_and_engine(run):
    collector, _, _ = run
    diag = collector.diagnostics()
    assert diag['engine/backend'] == 'oracle' and diag['engine/state'] == 'ready'
    assert diag['processing/published'] == str(FRAMES - 1)
    assert diag['processing/units (lengths; flow and velocities)'] == 'm; flow per second'
    for key in ('processing/output rate (Hz)', 'processing/latency from stamp (ms)',
                'processing/stage inference (ms)', 'processing/stage publish (ms)',
                'processing/dropped total', 'processing/camera superseded before inference',
                'input/camera received'):
        assert key in diag, sorted(diag)
    names = {s.name for s in collector.msgs['diagnostics'][-1].status}
    assert names == {f'{NODE[1:]}: {k}' for k in ('input', 'processing', 'engine')}
