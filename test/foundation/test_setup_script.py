"""scripts/setup.sh is re-runnable: a second run skips pip and colcon.

Its duration is printed, not asserted: on a shared machine wall time measures the
neighbours as much as the script."""

import os
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # runs scripts/setup.sh twice

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get('POINTMAP_VENV', ROOT / '.venv'))


@pytest.mark.skipif(not (VENV / '.pointmap-pip.sha256').is_file(),
                    reason=f'{VENV} was not made by scripts/setup.sh (e.g. a ROS-native '
                           'workspace); nothing to re-run')
def test_second_run_skips_pip_and_colcon():
    def run():
        start = time.monotonic()
        proc = subprocess.run(['bash', str(ROOT / 'scripts' / 'setup.sh')], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              stdin=subprocess.DEVNULL, timeout=600)
        assert proc.returncode == 0, proc.stdout
        return proc.stdout, time.monotonic() - start

    run()  # brings the stamps up to date if a file was added since the last set-up
    out, seconds = run()
    assert 'pip: requirements unchanged, skipping' in out, out
    assert 'colcon: overlay up to date, skipping' in out, out
    print(f'second set-up run took {seconds:.1f} s')
