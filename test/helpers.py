"""Helpers shared by the tests: polling with a deadline, child processes, paths, launch files.

``import helpers`` works from any test file (pytest puts ``test/`` on ``sys.path`` because
``test/conftest.py`` lives there). Typical ROS use::

    with PythonProcess(script=FIXTURES / 'echo_node.py', args=['--type', 'std_msgs/msg/String'],
                       name='echo') as proc:
        wait_for(lambda: node.count_subscribers('/in') > 0, timeout=15, what='echo subscribes',
                 on_timeout=proc.output)
"""

import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence, TypeVar, Union

__all__ = ['FIXTURES', 'REPO_ROOT', 'PythonProcess', 'ci_strict', 'load_launch_module',
           'publish_until_received', 'ros_launch_available', 'shared_path', 'skip_or_fail',
           'use_vendored_ros', 'wait_for']

FIXTURES = Path(__file__).resolve().parent / 'fixtures'
REPO_ROOT = Path(__file__).resolve().parent.parent

T = TypeVar('T')


def shared_path() -> Path:
    """The team's shared data folder: $POINTMAP_SHARED, else ``<repo>/../shared`` (may not exist).

    The ``shared_dir`` fixture (conftest.py) skips when it is missing; module-level code
    (test parametrisation) calls this directly.
    """
    env = os.environ.get('POINTMAP_SHARED')
    return Path(env) if env else REPO_ROOT.parent / 'shared'


def ci_strict() -> bool:
    """True in CI: ``.ci/run`` exports ``POINTMAP_CI=1``, and CI services set ``CI=true``.

    There, a prerequisite CI must have (``../shared``, the vendored ROS libraries, the
    package registry) failing is an error, not a reason to skip: a skipped golden or launch
    test would let CI pass without running it.
    """
    flags = (os.environ.get('POINTMAP_CI', ''), os.environ.get('CI', ''))
    return any(flag.strip().lower() in ('1', 'true', 'yes') for flag in flags)


def skip_or_fail(reason: str):
    """``pytest.skip(reason)`` on a developer machine, ``pytest.fail`` in CI (:func:`ci_strict`)."""
    import pytest
    if ci_strict():
        pytest.fail(f'{reason} [CI: POINTMAP_CI/CI is set, so this fails instead of skipping]')
    pytest.skip(reason)


def use_vendored_ros() -> Optional[Path]:
    """Put ``<shared>/vendor/python`` (unmodified ROS 2 launch, launch_ros, launch_testing,
    sensor_msgs_py, message_filters; see its README) on ``sys.path`` when it exists, *after*
    the entries already there, so a real ROS 2 installation keeps precedence. Returns the
    folder, or None when absent. The project itself never imports from it."""
    vendor = shared_path() / 'vendor' / 'python'
    if not vendor.is_dir():
        return None
    if str(vendor) not in sys.path:
        sys.path.append(str(vendor))
    return vendor


def ros_launch_available() -> bool:
    """True where ROS 2 `launch` and `launch_ros` are installed (no PyPI wheels exist).

    `import launch` alone is not proof: with the repository root on sys.path, our own launch/
    directory imports as an empty namespace package.
    """
    try:
        from launch import LaunchDescription  # noqa: F401
        from launch_ros.actions import Node  # noqa: F401
    except ImportError:
        return False
    return True


def load_launch_module(path: Path):
    """Import a ``*.launch.py`` file as a module (its name has dots, so not via import)."""
    spec = importlib.util.spec_from_file_location(path.name.split('.')[0] + '_launch', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.05,
             what: str = 'condition', on_timeout: Optional[Callable[[], str]] = None) -> T:
    """Call ``predicate`` until it returns something truthy, and return that value.

    Args:
        predicate: Polled with no arguments; may do work itself (e.g. ``rclpy.spin_once``).
        timeout: Seconds before giving up.
        interval: Seconds slept between calls.
        what: Description used in the timeout message.
        on_timeout: Optional callable whose string (e.g. a child process's output) is
            appended to the timeout message.

    Raises:
        TimeoutError: ``predicate`` stayed falsy for ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            detail = f'\n--- details ---\n{on_timeout()}' if on_timeout is not None else ''
            raise TimeoutError(f'{what} not reached within {timeout:.1f} s{detail}')
        time.sleep(interval)


def publish_until_received(node, pub, make_msg: Callable[[int], object], received: list,
                           timeout: float, what: str,
                           on_timeout: Optional[Callable[[], str]] = None) -> list:
    """Publish ``make_msg(i)`` and spin ``node`` until ``received`` fills; return what was sent.

    ``received`` is the list a subscription of ``node`` appends to. Messages are re-sent
    every loop: discovery may complete after the first publication, and volatile QoS does
    not replay missed samples.
    """
    sent = []

    def publish_and_poll():
        sent.append(make_msg(len(sent)))
        pub.publish(sent[-1])
        node.executor.spin_once(timeout_sec=0.1)
        return received

    wait_for(publish_and_poll, timeout=timeout, interval=0.0, what=what, on_timeout=on_timeout)
    return sent


class PythonProcess:
    """A Python module or script run in a child process with this test session's environment.

    The child inherits ``os.environ`` (so ROS_DOMAIN_ID, PYTHONPATH, LD_LIBRARY_PATH and
    RMW_IMPLEMENTATION set by scripts/env.sh and conftest.py) plus ``env``; its stdout and
    stderr go to a temporary file (no pipe to fill up and block it) readable with
    :meth:`output`. :meth:`stop` sends SIGINT (rclpy shuts down cleanly on it) and kills the
    process if it has not exited within the grace period. Use it as a context manager.
    """

    def __init__(self, module: Optional[str] = None, script: Union[str, Path, None] = None,
                 args: Sequence[str] = (), env: Optional[Mapping[str, str]] = None,
                 name: str = 'child', cwd: Union[str, Path, None] = None):
        """Describe the process; :meth:`start` (or ``with``) runs it.

        Args:
            module: Run as ``python -m module`` (exactly one of module/script).
            script: Path of a Python file to run.
            args: Command-line arguments after the module/script.
            env: Extra environment variables (override the inherited ones).
            name: Label for error messages.
            cwd: Working directory (default: the current one).

        Raises:
            ValueError: Neither or both of ``module`` and ``script`` were given.
        """
        if (module is None) == (script is None):
            raise ValueError(f'give exactly one of module and script, got module={module!r} '
                             f'script={script!r}')
        target = ['-m', module] if module is not None else [str(script)]
        self.argv = [sys.executable, '-u', *target, *args]
        self.name = name
        self.cwd = cwd
        self.env = {**os.environ, 'PYTHONUNBUFFERED': '1', **(env or {})}
        self._log = None
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> 'PythonProcess':
        """Start the child process (no-op if already started)."""
        if self.proc is None:
            self._log = tempfile.TemporaryFile(mode='w+', prefix=f'{self.name}-')
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd,
                                         stdout=self._log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        return self

    @property
    def running(self) -> bool:
        """True while the child is alive."""
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        """Everything the child printed so far (stdout and stderr interleaved)."""
        if self._log is None:
            return ''
        self._log.flush()
        self._log.seek(0)
        return f'[{self.name}: {" ".join(self.argv)}]\n{self._log.read()}'

    def stop(self, grace: float = 5.0) -> Optional[int]:
        """Stop the child: SIGINT, then SIGKILL after ``grace`` seconds; returns its exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def close(self) -> None:
        """Stop the child and release its output file."""
        self.stop()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> 'PythonProcess':
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
