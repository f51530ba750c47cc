"""ros/runner.py: the entry points' shared main(): --help, own flags, start-up failures."""

import os
import signal
import threading

import pytest

from pointmap_ros.errors import ConfigError
from pointmap_ros.ros import lifecycle_node, node, synthetic_camera
from pointmap_ros.ros.runner import SignalSeen, run_node

pytestmark = pytest.mark.ros


@pytest.mark.parametrize('module, prog', [
    (node, 'dynamic_recon_node'), (lifecycle_node, 'dynamic_recon_lifecycle_node'),
    (synthetic_camera, 'synthetic_camera_node')])
def test_help_prints_usage_and_exits_without_starting(module, prog, capsys):
    with pytest.raises(SystemExit) as exit_info:
        module.main([prog, '--help', '--ros-args', '-p', 'backend:=oracle'])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f'usage: {prog}') and '--ros-args' in text
    assert ('--no-autostart' in text) == (module is lifecycle_node)


def test_unusable_start_up_is_logged_and_exits_1():
    def make_node():
        raise ConfigError('invalid parameters: window_size = 0, expected >= 1')

    assert run_node('test_runner_node', make_node, ['prog', '--some-flag-for-rclpy']) == 1


def test_signal_seen_reports_only_its_signal_and_restores_the_wakeup_fd():
    """The runner tells a SIGINT's RuntimeError from a bug by this (SIGUSR1 here: a SIGINT
    would end the test run)."""
    previous = signal.signal(signal.SIGUSR1, lambda *_: None)
    other = signal.signal(signal.SIGUSR2, lambda *_: None)
    try:
        before = signal.set_wakeup_fd(-1)
        signal.set_wakeup_fd(before)
        with SignalSeen(signal.SIGUSR1) as seen:
            os.kill(os.getpid(), signal.SIGUSR2)
            assert not seen()
            os.kill(os.getpid(), signal.SIGUSR1)
            assert seen() and seen()
        assert signal.set_wakeup_fd(before) == before
        off_main = []
        thread = threading.Thread(target=lambda: off_main.append(SignalSeen(1).__enter__()()))
        thread.start()
        thread.join()
        assert off_main == [False]
    finally:
        signal.signal(signal.SIGUSR1, previous)
        signal.signal(signal.SIGUSR2, other)
