"""Sending dynamic TF (``world`` -> estimated camera, ``world`` -> one frame per object).

The transforms themselves are built by :func:`pointmap_ros.ros.outputs.output_transforms`.

Wire format is ``tf2_msgs/TFMessage`` on ``/tf`` with tf2's QoS, whichever way it is sent:
through ``tf2_ros.TransformBroadcaster`` where tf2_ros is installed, otherwise by publishing
TFMessage ourselves (tf2_msgs from a ROS install or from the project's overlay). All
transforms of one output go out in one message. TF has no "delete": a track that vanishes
simply stops being broadcast and tf2 buffers forget it after their cache time (10 s).
"""

from __future__ import annotations

from geometry_msgs.msg import TransformStamped

from pointmap_ros.ros.qos import tf_qos

__all__ = ['TfPublisher']


class TfPublisher:
    """Sends TransformStamped lists on ``/tf``; ``kind`` says how (for diagnostics/logs)."""

    def __init__(self, node):
        self._broadcaster = None
        self._publisher = None
        try:
            from tf2_ros import TransformBroadcaster
            self._broadcaster = TransformBroadcaster(node, qos=tf_qos())
            self.kind = 'tf2_ros'
        except ImportError:
            try:
                from tf2_msgs.msg import TFMessage
            except ImportError:
                self.kind = 'unavailable'
                node.get_logger().error(
                    'neither tf2_ros nor tf2_msgs is importable: no TF will be published '
                    '(source scripts/env.sh or a ROS 2 installation)')
                return
            self._message = TFMessage
            self._publisher = node.create_publisher(TFMessage, '/tf', tf_qos())
            self.kind = 'tf2_msgs'

    def send(self, transforms: list[TransformStamped]) -> None:
        if not transforms:
            return
        if self._broadcaster is not None:
            self._broadcaster.sendTransform(transforms)
        elif self._publisher is not None:
            self._publisher.publish(self._message(transforms=transforms))
