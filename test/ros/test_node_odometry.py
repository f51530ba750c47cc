"""The odometry prior over real DDS: the node (own process, oracle engine, ``odom_frame:=odom``)
reads the camera's pose in ``odom`` from TF at every image stamp, reports it on
/diagnostics, and keeps publishing when TF stops.

This process plays the robot: ``odom -> base_link`` on /tf at each image stamp (what
``odometry_poses`` makes of the scene's true camera trajectory, i.e. drifting wheel
odometry, with the camera mounted as ``ROBOT_CAMERA_MOUNT``) and a static
``base_link -> camera_optical_frame`` on /tf_static. Each frame's TF goes out just before
its image, so every lookup of the first phase finds its transform at once; then TF stops
and the later frames have none (their stamps lie after the last odometry sample: tf2's
extrapolation into the future).

The pipeline's decisions (``PipelineOutput.odometry``, counted on /diagnostics) show the
prior was used: the oracle's exact maps and 1 % drifting odometry agree over these few
frames, so they are fused. Each frame also comes with its depth image, which the depth prior
fuses (counted on /diagnostics too): both priors at once, as on an RGB-D robot.
"""

import numpy as np
import pytest
from ros_harness import (NODE, Collector, ScenePublisher, oracle_args, recon_process,
                         spin_until, wait_for_node)

import helpers

from pointmap_ros.data.odometry import ROBOT_CAMERA_MOUNT, odometry_poses
from pointmap_ros.geometry.transforms import se3_compose, se3_inverse

pytestmark = pytest.mark.ros  # needs rclpy and DDS

FRAMES_WITH_TF = 6
FRAMES_WITHOUT_TF = 5
CAMERA_FRAME = 'camera_optical_frame'


class RobotTf:
    """Publishes the robot's odometry TF for the scene's frames, as a robot would."""

    def __init__(self, node, scene, num_frames: int):
        from tf2_msgs.msg import TFMessage

        from pointmap_ros.ros.qos import tf_qos, tf_static_qos
        self._node = node
        self._message = TFMessage
        self._dynamic = node.create_publisher(TFMessage, '/tf', tf_qos())
        self._static = node.create_publisher(TFMessage, '/tf_static', tf_static_qos())
        true_poses = np.stack([scene.camera_pose(t) for t in range(num_frames)])
        #: T_odom_cam the odometry reports per frame (drifts like wheel odometry).
        self.T_odom_cam = odometry_poses(true_poses, seed=0, base=ROBOT_CAMERA_MOUNT)

    def matched(self) -> bool:
        """The node under test subscribes to /tf and /tf_static (this process's Collectors
        also subscribe to /tf, so a bare subscription count would not tell)."""
        return all(any(info.node_name == NODE[1:] for info in
                       self._node.get_subscriptions_info_by_topic(topic))
                   and publisher.get_subscription_count() > 0
                   for topic, publisher in (('/tf', self._dynamic),
                                            ('/tf_static', self._static)))

    def publish_static(self) -> None:
        from pointmap_ros.ros.conversions import matrix_to_transform, ns_to_stamp
        mount = matrix_to_transform(ROBOT_CAMERA_MOUNT, ns_to_stamp(0), 'base_link',
                                    CAMERA_FRAME)
        self._static.publish(self._message(transforms=[mount]))

    def publish_odometry(self, t: int, stamp_ns: int) -> None:
        """``odom -> base_link`` of frame t: the camera's odometry pose minus the mount."""
        from pointmap_ros.ros.conversions import matrix_to_transform, ns_to_stamp
        T_odom_base = se3_compose(self.T_odom_cam[t], se3_inverse(ROBOT_CAMERA_MOUNT))
        self._dynamic.publish(self._message(transforms=[matrix_to_transform(
            T_odom_base, ns_to_stamp(stamp_ns), 'odom', 'base_link')]))


def odometry_status(collector):
    """The latest ``<node>: odometry`` DiagnosticStatus, or None."""
    for msg in reversed(collector.msgs['diagnostics']):
        for status in msg.status:
            if status.name.endswith(': odometry'):
                return status
    return None


def decision_counts(diagnostics: dict) -> dict[str, int]:
    prefix = 'odometry/camera odometry '
    return {key[len(prefix):]: int(value) for key, value in diagnostics.items()
            if key.startswith(prefix)}


def play(ros_node, proc, collector, publisher, frames, before_image=None):
    """Publish ``frames`` one by one, each once the previous one's cloud arrived (frame 0
    once the node took it: it only opens the window); return their stamps."""
    stamps = []
    for t in frames:
        stamp_ns = publisher.stamp_ns(t)
        if before_image is not None:
            before_image(t, stamp_ns)
        publisher.publish_frame(t)
        stamps.append(stamp_ns)
        if t == 0:
            spin_until(ros_node, lambda: collector.diagnostics().get(
                'processing/processed frames') == '1', 30, 'frame 0 taken', proc)
        else:
            spin_until(ros_node, lambda: stamp_ns in collector.stamps('points'), 30,
                       f'points of frame {t}', proc)
    return stamps


def node_process(kind: str, args: list[str]) -> helpers.PythonProcess:
    """The plain node as installed, or the lifecycle node (configures and activates
    itself): both share ReconCore, so both must read odometry the same way."""
    if kind == 'lifecycle':
        return helpers.PythonProcess(module='pointmap_ros.ros.lifecycle_node', args=args,
                                     name='lifecycle')
    return recon_process(args)


@pytest.mark.slow
@pytest.mark.parametrize('kind', ['node', 'lifecycle'])
def test_odometry_from_tf_is_used_then_missing_tf_is_counted_and_warned(ros_node, kind):
    collector = Collector(ros_node)
    publisher = ScenePublisher(ros_node, depth=True)
    robot = RobotTf(ros_node, publisher.scene, FRAMES_WITH_TF + FRAMES_WITHOUT_TF)
    # TF and images travel on different topics, so a frame's TF, sent first, may still
    # arrive after its image: odom_timeout_s covers that even on a loaded machine.
    args = oracle_args(odom_frame='odom', odom_timeout_s=0.5, diagnostics_period_s=0.2,
                       use_depth=True)
    with node_process(kind, args) as proc:
        wait_for_node(ros_node, proc, publisher)
        spin_until(ros_node, robot.matched, 30, "the node's /tf and /tf_static subscriptions",
                   proc)
        robot.publish_static()
        play(ros_node, proc, collector, publisher, range(FRAMES_WITH_TF),
             before_image=robot.publish_odometry)
        spin_until(ros_node, lambda: collector.diagnostics().get(
            'odometry/frames with odometry') == str(FRAMES_WITH_TF), 10,
            'every frame with odometry on /diagnostics', proc)
        with_tf = collector.diagnostics()
        assert with_tf['odometry/odometry frame'] == 'odom'
        assert with_tf['odometry/frames without odometry'] == '0'
        assert odometry_status(collector).level == b'\x00'  # OK
        spin_until(ros_node, lambda: sum(decision_counts(collector.diagnostics()).values())
                   == FRAMES_WITH_TF - 1, 10, 'decisions of every published frame', proc)
        decisions = decision_counts(collector.diagnostics())
        assert decisions.get('fused', 0) + decisions.get('used (odometry won)', 0) > 0, \
            decisions
        assert 'not used' not in decisions, decisions
        # ... and the depth prior too: every published frame fused its depth image.
        assert collector.diagnostics()['processing/camera frames with depth fused'] == str(
            FRAMES_WITH_TF - 1)

        # TF stops: the node goes on publishing, counts the frames and warns.
        last = FRAMES_WITH_TF + FRAMES_WITHOUT_TF
        stamps = play(ros_node, proc, collector, publisher, range(FRAMES_WITH_TF, last))
        assert collector.stamps('points')[-FRAMES_WITHOUT_TF:] == stamps
        spin_until(ros_node, lambda: collector.diagnostics().get(
            'odometry/frames without odometry') == str(FRAMES_WITHOUT_TF), 10,
            'frames without odometry on /diagnostics', proc)
        without_tf = collector.diagnostics()
        assert without_tf['odometry/frames with odometry'] == str(FRAMES_WITH_TF)
        assert without_tf['odometry/frames without odometry (extrapolation)'] == \
            str(FRAMES_WITHOUT_TF)
        assert 'extrapolation into the future' in without_tf['odometry/last lookup error']
        status = odometry_status(collector)
        assert status.level == b'\x01' and 'no odometry' in status.message  # WARN
        assert proc.running
        assert proc.stop() == 0, proc.output()
        log = proc.output()
    # Logged once for the outage, not once per frame.
    assert log.count('no odometry (extrapolation)') == 1, log
