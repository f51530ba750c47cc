"""Fixtures of the ROS tests (the harness itself is ros_harness.py)."""

import pytest
from ros_harness import overlay_missing, rclpy


@pytest.fixture(scope='module')
def ros_node():
    """An rclpy context + node for this module (separate from the node under test)."""
    if (reason := overlay_missing()) is not None:
        pytest.skip(reason)
    from rclpy.node import Node
    rclpy.init()
    node = Node('pointmap_test_probe')
    yield node
    node.destroy_node()
    rclpy.shutdown()
