"""Helpers shared by the tests: polling with a deadline, and Python child processes.

``import helpers`` works from any test file (pytest puts ``test/`` on ``sys.path`` because
``test/conftest.py`` lives there). Typical ROS use::

    with PythonProcess(script=FIXTURES / 'echo_node.py', args=['--type', 'std_msgs/msg/String'],
                       name='echo') as proc:
        wait_for(lambda: node.count_subscribers('/in') > 0, timeout=15, what='echo subscribes',
                 on_timeout=proc.output)
"""

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence, TypeVar, Union

__all__ = ['FIXTURES', 'PythonProcess', 'wait_for']

FIXTURES = Path(__file__).resolve().parent / 'fixtures'

T = TypeVar('T')


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
