"""``dynamic_recon_lifecycle_node``: the same node as a managed (lifecycle) node.

Transitions (``ros2 lifecycle set /dynamic_recon_node <transition>``):

- configure: load the engine (GPU memory, sessions), build the pipelines, create publishers;
- activate: subscribe to the cameras and start inference (reloads the engine if released);
- deactivate: unsubscribe, stop inference and **release the engine** (memory is freed while
  inactive; windows and tracks start over on the next activation);
- cleanup: destroy the publishers; shutdown: everything.

Parameters, topics and diagnostics are those of ``dynamic_recon_node``
(docs/ros_interface.md). With ``autostart`` (a command-line flag of this entry point, on by
default) the node configures and activates itself, like yolo_ros' nodes.
"""

from __future__ import annotations

import sys

from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn

from pointmap_ros.errors import PointmapError
from pointmap_ros.ros.node import NODE_NAME, ReconCore
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
        try:
            self._activate()
        except PointmapError as exc:
            self.get_logger().error(f'activate failed: {exc}')
            return TransitionCallbackReturn.FAILURE
        return super().on_activate(state)

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self._deactivate()
        self._release_engine()
        return super().on_deactivate(state)

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

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
