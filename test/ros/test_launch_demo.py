"""The ROS-native launch path, for real: ``launch_test`` runs
test/fixtures/dynamic_recon_demo_launch_test.py, which starts the *installed*
``dynamic_recon.launch.py demo:=true rviz:=false`` through a real ``LaunchService`` (the
unmodified ROS 2 launch / launch_ros / launch_testing sources in ../shared/vendor/python) and
checks that every output, /tf and /diagnostics arrive with source stamps and that both
processes exit cleanly.

Needs ../shared (the vendored sources) and the overlay's composition_interfaces (built by
scripts/setup.sh from ../shared): skipped with the reason on a developer machine without them,
a failure in CI (POINTMAP_CI / CI, see helpers.ci_strict).
"""

import os
from pathlib import Path
import xml.etree.ElementTree as ET

from ros_harness import overlay_missing

import helpers

import pytest

# ros: needs rclpy and DDS; slow: a launch_testing run of the whole demo graph.
pytestmark = [pytest.mark.ros, pytest.mark.slow]

LAUNCH_TEST = helpers.FIXTURES / 'dynamic_recon_demo_launch_test.py'
TESTS = {'test_outputs_tf_and_diagnostics_arrive_with_source_stamps',
         'test_processes_exit_cleanly'}


def vendored_launch_env() -> dict:
    """Environment of a child that imports the vendored ROS 2 launch packages (after ours)."""
    vendor = helpers.use_vendored_ros()
    if vendor is None:
        helpers.skip_or_fail(f'vendored ROS 2 launch sources not found in '
                             f'{helpers.shared_path() / "vendor" / "python"}')
    if (reason := overlay_missing()) is not None:
        helpers.skip_or_fail(reason)
    try:
        import composition_interfaces.srv  # noqa: F401 (launch_ros imports it)
        from launch_ros.actions import Node  # noqa: F401
        import launch_testing.launch_test  # noqa: F401
    except ImportError as exc:
        helpers.skip_or_fail(f'launch_ros / launch_testing not importable ({exc}); run '
                             'scripts/setup.sh (it builds composition_interfaces from '
                             '../shared) and source scripts/env.sh')
    return {'PYTHONPATH': os.pathsep.join(filter(None, [os.environ.get('PYTHONPATH'),
                                                        str(vendor)]))}


def test_launch_demo_under_launch_testing(tmp_path: Path):
    env = vendored_launch_env()
    report = tmp_path / 'launch_test.xml'
    with helpers.PythonProcess(module='launch_testing.launch_test',
                               args=[str(LAUNCH_TEST), '--junit-xml', str(report)],
                               env=env, name='launch_test') as proc:
        # The launch test bounds its own waits (POINTMAP_LAUNCH_TEST_TIMEOUT_S, 240 s).
        helpers.wait_for(lambda: not proc.running, timeout=420, interval=0.2,
                         what='launch_test finished', on_timeout=proc.output)
        assert proc.proc.returncode == 0, proc.output()
        output = proc.output()
    suite = ET.parse(report).getroot()
    cases = {case.get('name'): case for case in suite.iter('testcase')}
    assert set(cases) == TESTS, output
    for name, case in cases.items():
        assert not list(case), f'{name}: {[child.tag for child in case]}\n{output}'
    # Launch's own view of the shutdown, besides the exit codes the post-shutdown test checks.
    assert 'process has finished cleanly' in output
    # No ANSI colour codes in redirected logs (the launch file does not emulate a tty).
    assert '\x1b[' not in output
