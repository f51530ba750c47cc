"""The node's latched ``~/ready`` and the smallest useful stream: two frames sent back to back
(no pacing) give the outputs of the second one. The first frame of a camera only opens its
window; the worker never lets the second replace it (pipeline/worker.py)."""

import pytest
from ros_harness import (NODE, OUTPUTS, Collector, ScenePublisher, oracle_args, recon_process,
                         spin_until, wait_for_node)

pytestmark = pytest.mark.ros  # needs rclpy and DDS


@pytest.mark.slow
def test_ready_is_latched_and_two_frames_give_output(ros_node):
    from std_msgs.msg import Bool

    from pointmap_ros.ros.qos import latched_qos
    collector = Collector(ros_node)
    publisher = ScenePublisher(ros_node)
    with recon_process(oracle_args()) as proc:
        wait_for_node(ros_node, proc, publisher)
        # Subscribed only now, after the node published: transient local delivers the value.
        ready = []
        ros_node.create_subscription(Bool, f'{NODE}/ready', lambda m: ready.append(m.data),
                                     latched_qos())
        spin_until(ros_node, lambda: ready, 15, 'latched ~/ready', proc)
        assert ready[-1] is True
        publisher.publish_frame(0)
        stamp = publisher.publish_frame(1)  # right behind frame 0, before inference starts
        spin_until(ros_node, lambda: all(stamp in collector.stamps(k) for k in OUTPUTS
                                         if k != 'markers'), 30, 'outputs of frame 1', proc)
        assert collector.stamps('points') == [stamp]
        assert proc.stop() == 0, proc.output()
