"""Session-wide test set-up shared by every test directory.

- ROS isolation: several developers (and CI) run ROS tests on one machine at once, so a
  pytest session without an exported ROS_DOMAIN_ID gets its own (from its pid, 1..100), and
  discovery stays on the local host unless ROS_AUTOMATIC_DISCOVERY_RANGE says otherwise. An
  exported ROS_DOMAIN_ID is respected (pick your own domain, or run against a real graph).
  Both are set at import time, before any test calls ``rclpy.init`` or starts a node process
  (subprocesses inherit them).
- CPU: one intra-op thread for numpy/torch/onnxruntime in this process and its children; the
  CI machine has two cores.
- ``shared_dir``: the team's read-only data folder beside the repository (skips when absent;
  fails in CI, see ``helpers.ci_strict``).
- ``ros_node``: an rclpy node in a private context with its own executor.

Helpers used by the tests (``wait_for``, ``PythonProcess``) live in ``test/helpers.py``;
pytest puts this directory on ``sys.path``, so tests import them with ``import helpers``.
"""

import itertools
import os
from pathlib import Path

from helpers import REPO_ROOT, ci_strict, shared_path, skip_or_fail
import pytest

_NODE_COUNTER = itertools.count()

# setdefault: an exported ROS_DOMAIN_ID is the user's choice; isolate only when it is unset.
os.environ.setdefault('ROS_DOMAIN_ID', str(1 + os.getpid() % 100))
os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
for _var in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS'):
    os.environ.setdefault(_var, '1')


def pytest_configure(config):
    """In CI (``helpers.ci_strict``), refuse to run without ``../shared``: the golden tests
    (reference vectors, vendored ROS launch/launch_testing, message_filters, sensor_msgs_py)
    would otherwise all skip and CI would pass without them."""
    if not ci_strict():
        return
    vendor = shared_path() / 'vendor' / 'python'
    if not vendor.is_dir():
        raise pytest.UsageError(
            f'CI run (POINTMAP_CI/CI set) but {vendor} does not exist: the golden and launch '
            'tests need the shared folder beside the repository (or POINTMAP_SHARED). '
            'Unset POINTMAP_CI and CI to run the suite with those tests skipped.')


def pytest_report_header(config):
    """Show the ROS isolation settings in pytest's header (helps when a DDS test misbehaves)."""
    return (f'CI strict (missing ../shared fails): {ci_strict()} '
            f'ROS_DOMAIN_ID={os.environ["ROS_DOMAIN_ID"]} '
            f'ROS_AUTOMATIC_DISCOVERY_RANGE={os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"]} '
            f'RMW_IMPLEMENTATION={os.environ.get("RMW_IMPLEMENTATION", "<unset>")}')


@pytest.fixture(scope='session')
def repo_root() -> Path:
    """The repository root (the directory holding package.xml)."""
    return REPO_ROOT


@pytest.fixture(scope='session')
def shared_dir() -> Path:
    """The team's shared data folder: $POINTMAP_SHARED, else ``<repo>/../shared``.

    Skips the test (with the paths tried) where neither exists, e.g. a clone without shared/;
    in CI (``helpers.ci_strict``) that fails instead, so golden tests cannot silently vanish.
    """
    path = shared_path()
    if not path.is_dir():
        skip_or_fail(f'shared data folder not found at {path} '
                     '(set POINTMAP_SHARED or place shared/ beside the repository)')
    return path


@pytest.fixture
def ros_node():
    """An rclpy node (unique name) in a private context, added to its own executor.

    Spin it with ``ros_node.executor.spin_once(timeout_sec=...)``, e.g. inside
    ``helpers.wait_for``. The context is shut down after the test, whatever it left behind.
    """
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node(f'pm_test_{os.getpid()}_{next(_NODE_COUNTER)}', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        yield node
    finally:
        executor.shutdown()
        node.destroy_node()
        context.try_shutdown()
