"""Our generated interfaces and tf2_msgs/TFMessage load, serialise and cross a pub/sub.

tf2_msgs is either the real package (a ROS installation) or the stand-in that
scripts/setup.sh generates into the overlay from the standard one-line definition; either way
its type hash must equal the real one, or TF from our node would be rejected by RViz/tf2 as
a different type.
"""

import json
from pathlib import Path

import pytest
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message, serialize_message

from helpers import publish_until_received

pytestmark = pytest.mark.ros

QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
# tf2_msgs/msg/TFMessage as every Iron/Jazzy/Kilted installation announces it
# (`ros2 topic info -v /tf`, rosbag2 metadata `type_description_hash`).
TFMESSAGE_REAL_HASH = 'RIHS01_e369d0f05a23ae52508854b66f6aa0437f3449d652e8cbf22d5abe85d020f087'
TFMESSAGE_STANDARD_DEFINITION = 'geometry_msgs/TransformStamped[] transforms\n'


def make_objects(stamp_sec: int = 42):
    from pointmap_ros.msg import TrackedObject, TrackedObjectArray

    msg = TrackedObjectArray(metric_scale=False)
    msg.header.frame_id = 'world'
    msg.header.stamp.sec = stamp_sec
    msg.objects = [TrackedObject(id=i + 1, point_count=10 * (i + 1), confidence=0.5,
                                 is_rigid=bool(i % 2), age=i) for i in range(3)]
    msg.objects[2].twist.angular.z = -1.5
    return msg


def make_tf(stamp_sec: int = 42):
    from geometry_msgs.msg import TransformStamped
    from tf2_msgs.msg import TFMessage

    t = TransformStamped()
    t.header.frame_id = 'world'
    t.header.stamp.sec = stamp_sec
    t.child_frame_id = 'pointmap/object_3'
    t.transform.translation.x = 1.25
    t.transform.rotation.w = 1.0
    return TFMessage(transforms=[t])


def pubsub_round_trip(node, msg_type, topic: str, make_msg):
    """Publish ``make_msg(i)`` until a subscription of the same node receives one."""
    received = []
    node.create_subscription(msg_type, topic, received.append, QOS)
    pub = node.create_publisher(msg_type, topic, QOS)
    sent = publish_until_received(node, pub, make_msg, received, 20.0, what=f'message on {topic}')
    return sent, received


def test_generated_message_fields_match_msg_files():
    from pointmap_ros.msg import TrackedObject, TrackedObjectArray

    assert TrackedObjectArray.get_fields_and_field_types() == {
        'header': 'std_msgs/Header', 'metric_scale': 'boolean',
        'objects': 'sequence<pointmap_ros/TrackedObject>'}
    fields = TrackedObject.get_fields_and_field_types()
    assert list(fields) == ['id', 'pose', 'twist', 'extent', 'point_count', 'confidence',
                            'is_rigid', 'rigid_residual', 'metric_scale', 'age']
    assert fields['pose'] == 'geometry_msgs/Pose'


def test_tracked_objects_serialise_and_round_trip_through_pubsub(ros_node):
    from pointmap_ros.msg import TrackedObjectArray

    original = make_objects()
    assert deserialize_message(serialize_message(original), TrackedObjectArray) == original

    sent, received = pubsub_round_trip(ros_node, TrackedObjectArray, '/pm_test/objects',
                                       lambda i: make_objects(100 + i))
    got = received[0]
    assert got == sent[got.header.stamp.sec - 100]
    assert [o.id for o in got.objects] == [1, 2, 3]
    assert got.objects[2].twist.angular.z == -1.5


def test_tf_message_round_trips_with_the_real_type_hash(ros_node):
    from tf2_msgs.msg import TFMessage

    assert TFMessage.get_fields_and_field_types() == {
        'transforms': 'sequence<geometry_msgs/TransformStamped>'}
    original = make_tf()
    assert deserialize_message(serialize_message(original), TFMessage) == original

    sent, received = pubsub_round_trip(ros_node, TFMessage, '/pm_test/tf',
                                       lambda i: make_tf(100 + i))
    got = received[0]
    assert got == sent[got.transforms[0].header.stamp.sec - 100]
    assert got.transforms[0].child_frame_id == 'pointmap/object_3'

    # The hash the middleware announces for our publisher is what other nodes match against.
    infos = ros_node.get_publishers_info_by_topic('/pm_test/tf')
    assert infos, 'own publisher not in the graph'
    assert {str(i.topic_type_hash) for i in infos} == {TFMESSAGE_REAL_HASH}


def _share_dir(package: str) -> Path:
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory(package))


def test_tf_message_hash_is_rosidl_hash_of_standard_definition(tmp_path):
    """Recompute the hash from the one-line definition with rosidl's own tools.

    Independent of how tf2_msgs was built: the definition text is this test's, converted to
    IDL and parsed by rosidl, and its referenced types come from the installed geometry_msgs.
    """
    from rosidl_adapter.msg import convert_msg_to_idl
    from rosidl_generator_type_description import (
        calculate_type_hash, extract_full_type_description,
        serialize_individual_type_description)
    from rosidl_parser.definition import IdlLocator, Message
    from rosidl_parser.parser import parse_idl_file

    pkg_dir = tmp_path / 'tf2_msgs'
    (pkg_dir / 'msg').mkdir(parents=True)
    (pkg_dir / 'msg' / 'TFMessage.msg').write_text(TFMESSAGE_STANDARD_DEFINITION)
    idl = convert_msg_to_idl(pkg_dir, 'tf2_msgs', Path('msg/TFMessage.msg'), tmp_path / 'idl')
    idl_file = parse_idl_file(IdlLocator(tmp_path / 'idl', idl.relative_to(tmp_path / 'idl')))
    message = next(e for e in idl_file.content.elements if isinstance(e, Message))
    own = serialize_individual_type_description(message.structure.namespaced_type,
                                                message.structure.members)

    dep = json.loads((_share_dir('geometry_msgs') / 'msg' / 'TransformStamped.json')
                     .read_text())['type_description_msg']
    type_map = {own['type_name']: own, dep['type_description']['type_name']:
                dep['type_description']}
    type_map.update({t['type_name']: t for t in dep['referenced_type_descriptions']})
    computed = calculate_type_hash(extract_full_type_description(own['type_name'], type_map))
    assert computed == TFMESSAGE_REAL_HASH

    # The installed tf2_msgs (overlay stand-in or real) records the same hash.
    installed = json.loads((_share_dir('tf2_msgs') / 'msg' / 'TFMessage.json').read_text())
    recorded = {h['type_name']: h['hash_string'] for h in installed['type_hashes']}
    assert recorded['tf2_msgs/msg/TFMessage'] == computed


def test_tracked_object_array_hash_matches_its_type_description(ros_node):
    """The overlay's generated code and its type description JSON agree (one consistent build)."""
    from pointmap_ros.msg import TrackedObjectArray

    described = json.loads((_share_dir('pointmap_ros') / 'msg' / 'TrackedObjectArray.json')
                           .read_text())
    recorded = {h['type_name']: h['hash_string'] for h in described['type_hashes']}
    ros_node.create_publisher(TrackedObjectArray, '/pm_test/hash_objects', QOS)
    infos = ros_node.get_publishers_info_by_topic('/pm_test/hash_objects')
    assert {str(i.topic_type_hash) for i in infos} == {
        recorded['pointmap_ros/msg/TrackedObjectArray']}
