"""The middleware works here: messages cross DDS to a node in another process and back.

The echo node (test/fixtures/echo_node.py) runs as a separate Python process with the
session's environment (ROS_DOMAIN_ID from conftest.py, the overlay from scripts/env.sh); the
test publishes to it and must receive the same content on the echo topic.
"""

import os

import pytest
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy

from helpers import FIXTURES, publish_until_received, PythonProcess, wait_for

pytestmark = pytest.mark.ros

QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
# Generous: the first start of rclpy + Fast DDS on a loaded 2-core CI machine takes seconds.
STARTUP_TIMEOUT_S = 30.0


def echo_round_trip(node, msg_type, type_name: str, make_msg, topic: str):
    """Publish ``make_msg(i)`` to an echo process until one comes back.

    Returns:
        (sent messages, received messages, the echo's exit code, the echo's output).

    Messages are re-sent until the echo arrives (the reverse path may be discovered late).
    """
    topic_in, topic_out = f'{topic}/in', f'{topic}/out'
    received = []
    node.create_subscription(msg_type, topic_out, received.append, QOS)
    pub = node.create_publisher(msg_type, topic_in, QOS)
    proc = PythonProcess(script=FIXTURES / 'echo_node.py', name='echo_node',
                         args=['--type', type_name, '--in', topic_in, '--out', topic_out])
    with proc:
        wait_for(lambda: node.executor.spin_once(timeout_sec=0.05)
                 or (pub.get_subscription_count() > 0
                     and node.count_publishers(topic_out) > 0),
                 timeout=STARTUP_TIMEOUT_S, what='echo node discovered over DDS',
                 on_timeout=proc.output)
        sent = publish_until_received(node, pub, make_msg, received, STARTUP_TIMEOUT_S,
                                      what='echoed message received', on_timeout=proc.output)
        # The echo is a separate process on the ROS graph, not an in-process shortcut. Node
        # names arrive through their own discovery topic, possibly after the data path.
        wait_for(lambda: ('pm_echo', '/') in node.get_node_names_and_namespaces(),
                 timeout=STARTUP_TIMEOUT_S, what='echo node listed on the ROS graph',
                 on_timeout=proc.output)
        exit_code = proc.stop()
        output = proc.output()
    return sent, received, exit_code, output


def test_string_round_trip_through_separate_process(ros_node):
    from std_msgs.msg import String

    token = f'pointmap-{os.getpid()}'
    sent, received, exit_code, output = echo_round_trip(
        ros_node, String, 'std_msgs/msg/String', lambda i: String(data=f'{token}-{i}'),
        '/pm_test/echo_string')

    assert received[0].data in {m.data for m in sent}
    assert received[0].data.startswith(token)
    assert exit_code == 0, f'echo node did not exit cleanly on SIGINT:\n{output}'


def test_custom_message_round_trip_through_separate_process(ros_node):
    """Our generated TrackedObjectArray loads in both processes and survives the trip."""
    from pointmap_ros.msg import TrackedObject, TrackedObjectArray

    def make(i: int) -> TrackedObjectArray:
        msg = TrackedObjectArray(metric_scale=True)
        msg.header.frame_id = 'world'
        msg.header.stamp.sec = 100 + i
        # Values exactly representable as float32, so equality holds after the trip.
        obj = TrackedObject(id=7, point_count=1234, confidence=0.75, is_rigid=True,
                            rigid_residual=0.0625, metric_scale=True, age=i)
        obj.pose.position.x, obj.pose.position.y, obj.pose.position.z = 1.0, -2.0, 3.5
        obj.pose.orientation.z, obj.pose.orientation.w = 0.6, 0.8
        obj.twist.linear.x = 0.25
        obj.extent.x, obj.extent.y, obj.extent.z = 0.5, 0.4, 0.3
        msg.objects = [obj]
        return msg

    sent, received, exit_code, output = echo_round_trip(
        ros_node, TrackedObjectArray, 'pointmap_ros/msg/TrackedObjectArray', make,
        '/pm_test/echo_objects')

    got = received[0]
    assert got == sent[got.header.stamp.sec - 100]
    assert got.objects[0].pose.orientation.z == pytest.approx(0.6)
    assert got.objects[0].confidence == pytest.approx(0.75)
    assert exit_code == 0, output


def test_rmw_is_fastrtps():
    """The suite runs on the middleware the set-up installs (scripts/env.sh sets it)."""
    assert rclpy.get_rmw_implementation_identifier() == 'rmw_fastrtps_cpp'
