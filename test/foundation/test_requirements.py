"""The ROS-native install path: requirements.txt resolves to binary wheels for the Python of
every supported ROS 2 distribution (Humble 3.10, Kilted wheels 3.11, Jazzy / Kilted 3.12),
asked of the public registry by scripts/check_requirements.py (pip --dry-run, metadata only).

Needs the registry: skipped where it cannot be reached, a failure in CI (helpers.ci_strict).
The exact pins the wheel-based set-up installs are checked against these ranges in
test_package_xml.py.
"""

import subprocess
import sys

import pytest

import helpers

pytestmark = pytest.mark.slow  # resolves requirements against PyPI, ~7 s per Python version

ROOT = helpers.REPO_ROOT


@pytest.mark.slow
@pytest.mark.parametrize('python', ['3.10', '3.11', '3.12'])
def test_ros_path_requirements_resolve(python):
    proc = subprocess.run([sys.executable, str(ROOT / 'scripts' / 'check_requirements.py'),
                           '--python', python], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=600,
                          stdin=subprocess.DEVNULL)
    if proc.returncode == 2:
        helpers.skip_or_fail(f'package registry unreachable:\n{proc.stdout[-2000:]}')
    assert proc.returncode == 0, proc.stdout
    assert f'Python {python}: OK' in proc.stdout
