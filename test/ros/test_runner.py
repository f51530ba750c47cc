"""ros/runner.py: the entry points' shared main(): --help, own flags, start-up failures."""

import pytest

from pointmap_ros.errors import ConfigError
from pointmap_ros.ros import lifecycle_node, node, synthetic_camera
from pointmap_ros.ros.runner import run_node

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
