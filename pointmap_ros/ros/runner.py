"""The ``main()`` every node entry point shares: ``--help``, start-up errors, spin, shutdown.

Follows ``demo_nodes_py``: ``rclpy.init`` as a context manager, ``KeyboardInterrupt`` and
``ExternalShutdownException`` end the process quietly (exit code 0). A start-up failure the
user can fix (a :class:`~pointmap_ros.errors.PointmapError` such as a missing model file, or
an invalid parameter) is logged as fatal and exits with code 1 instead of a traceback.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
from typing import Callable

import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.utilities import remove_ros_args

from pointmap_ros.errors import PointmapError

__all__ = ['SignalSeen', 'node_arg_parser', 'run_node']

_EPILOG = ('ROS arguments follow --ros-args, e.g.\n'
           '  --ros-args -p name:=value -r __ns:=/robot --params-file file.yaml\n'
           'Parameters and topics: docs/ros_interface.md.')


class SignalSeen:
    """Context manager: whether signal ``signum`` arrived while it was open (call it).

    Reads Python's wakeup fd (:func:`signal.set_wakeup_fd`), which sees every signal Python
    handles without replacing any handler: rclpy's own SIGINT handler chains to Python's.
    Another wakeup fd set before is restored on exit (signals in between go to this one).
    Off the main thread, where Python allows no wakeup fd, it never reports a signal.
    """

    def __init__(self, signum: int):
        self._signum = int(signum)
        self._seen = False
        self._ends: tuple[socket.socket, socket.socket] | None = None
        self._previous = -1

    def __enter__(self) -> 'SignalSeen':
        read_end, write_end = socket.socketpair()
        read_end.setblocking(False)
        write_end.setblocking(False)
        try:
            self._previous = signal.set_wakeup_fd(write_end.fileno(), warn_on_full_buffer=False)
        except ValueError:  # not the main thread
            read_end.close()
            write_end.close()
            return self
        self._ends = (read_end, write_end)
        return self

    def __call__(self) -> bool:
        while not self._seen and self._ends is not None:
            try:
                signals = self._ends[0].recv(64)
            except BlockingIOError:
                break
            if not signals:
                break
            self._seen = self._signum in signals
        return self._seen

    def __exit__(self, *exc_info) -> None:
        if self._ends is not None:
            self()  # read what arrived before the fd goes back
            signal.set_wakeup_fd(self._previous)
            for end in self._ends:
                end.close()
            self._ends = None


def node_arg_parser(name: str, description: str) -> argparse.ArgumentParser:
    """Parser of a node's own (non-ROS) command-line flags; ``--help`` prints ``description``."""
    return argparse.ArgumentParser(prog=name, description=description, epilog=_EPILOG,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def run_node(name: str, make_node: Callable[[], object], args: list[str] | None = None, *,
             parser: argparse.ArgumentParser | None = None,
             on_start: Callable[[object, argparse.Namespace], None] | None = None) -> int:
    """Parse the node's flags, create the node, spin it until shutdown and destroy it.

    Args:
        name: node name, used for ``--help`` and the fatal start-up log line.
        make_node: callable returning the node.
        args: command line like ``sys.argv`` (``args[0]`` is the program), passed to
            ``rclpy.init``; None: ``sys.argv``.
        parser: the node's own flags (default: none besides ``--help``); flags it does not
            know are left to rclpy, as ROS nodes usually do.
        on_start: optional ``on_start(node, options)`` run before spinning (e.g. lifecycle
            autostart).

    Returns:
        The process exit code: 1 when the node could not be created, else 0.
    """
    argv = list(sys.argv if args is None else args)
    parser = parser or node_arg_parser(name, '')
    # argv[0] is the program; ROS arguments are rclpy's. --help exits here (SystemExit 0).
    options, _ = parser.parse_known_args(remove_ros_args(argv)[1:])
    try:
        with rclpy.init(args=argv):
            try:
                node = make_node()
            except (PointmapError, ParameterException) as exc:
                rclpy.logging.get_logger(name).fatal(
                    f'cannot start: {type(exc).__name__}: {exc}')
                return 1
            if on_start is not None:
                on_start(node, options)
            executor = SingleThreadedExecutor()
            executor.add_node(node)
            with SignalSeen(signal.SIGINT) as interrupted:
                try:
                    executor.spin()
                except RuntimeError:
                    # A SIGINT that lands while rclpy converts a received message surfaces
                    # as pybind11's RuntimeError ("Unable to convert call argument") instead
                    # of KeyboardInterrupt, sometimes before rclpy has shut the context down
                    # (a clean-clone CI run, session 14); one that lands in a finaliser is
                    # swallowed there, and the next wait raises RCLError, a RuntimeError too
                    # ("the given context is not valid"). After a SIGINT, or once shutdown
                    # has begun, that is the interrupt, not a bug.
                    if node.context.ok() and not interrupted():
                        raise
                finally:
                    node.destroy_node()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    return 0
