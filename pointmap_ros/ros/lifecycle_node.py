"""``dynamic_recon_lifecycle_node``: the same node as a managed (lifecycle) node.

Transitions (``ros2 lifecycle set /dynamic_recon_node <transition>``):

- configure: load the engine (GPU memory, sessions), build the pipelines, create the output
  publishers (lifecycle publishers: they publish only while active);
- activate: subscribe to the cameras and start inference (windows and tracks start over);
- deactivate: unsubscribe and stop inference; the engine **stays loaded**, so re-activation
  is immediate (no model reload);
- cleanup: destroy the publishers and **release the engine** (memory is freed);
  shutdown: everything.

Parameters, topics and diagnostics are those of ``dynamic_recon_node``
(docs/ros_interface.md). With ``autostart`` (a command-line flag of this entry point, on by
default) the node configures and activates itself, like yolo_ros' nodes.
"""

from __future__ import annotations

import sys

from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn

from pointmap_ros.errors import PointmapError
from pointmap_ros.ros.node import NODE_NAME, ReconCore
from pointmap_ros.ros.qos import overriding_options
from pointmap_ros.ros.runner import node_arg_parser, run_node

__all__ = ['DynamicReconLifecycleNode', 'main']


class DynamicReconLifecycleNode(ReconCore, LifecycleNode):
    """Lifecycle variant of :class:`~pointmap_ros.ros.node.DynamicReconNode`."""

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        self._setup()

    def on_configure(self, state) -> TransitionCallbackReturn:
        try:
            self._allocate()
        except PointmapError as exc:  # e.g. the model file is missing: stay unconfigured
            self.get_logger().error(f'configure failed: {exc}')
            self._release()
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        # Enable the lifecycle publishers first: the worker may publish as soon as it runs.
        result = super().on_activate(state)
        try:
            self._activate()
        except PointmapError as exc:
            self.get_logger().error(f'activate failed: {exc}')
            super().on_deactivate(state)
            return TransitionCallbackReturn.FAILURE
        return result

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self._deactivate()
        return super().on_deactivate(state)

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _create_output_publisher(self, msg_type, topic: str):
        return self.create_lifecycle_publisher(msg_type, topic, self._out_qos,
                                               qos_overriding_options=overriding_options())

    def _destroy_output_publisher(self, publisher) -> None:
        self.destroy_lifecycle_publisher(publisher)

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self._deactivate()
        self._release()
        return TransitionCallbackReturn.SUCCESS


def main(args: list[str] | None = None) -> int:
    """Console entry point ``dynamic_recon_lifecycle_node``."""
    parser = node_arg_parser('dynamic_recon_lifecycle_node', __doc__)
    parser.add_argument('--no-autostart', dest='autostart', action='store_false',
                        help='stay unconfigured and wait for a lifecycle manager (give it '
                             'before --ros-args)')

    def start(node: DynamicReconLifecycleNode, options) -> None:
        if options.autostart and node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            node.trigger_activate()

    return run_node(NODE_NAME, DynamicReconLifecycleNode, args, parser=parser, on_start=start)


if __name__ == '__main__':
    sys.exit(main())
