"""scripts/device_check.sh runs without ROS (PYTHONPATH=<repo> only) and writes its JSON.

The CPU --quick mode with the tiny preset; the full GPU run is documented in
docs/benchmarks.md. Nothing here asserts a speed: only that every step ran and parity holds.
"""

import json
import os
import subprocess
import sys


def test_device_check_quick_cpu_run(repo_root, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'AMENT_PREFIX_PATH')}
    env['PYTHON'] = sys.executable
    proc = subprocess.run(['bash', str(repo_root / 'scripts' / 'device_check.sh'), '--device',
                           'cpu', '--quick', '--sizes', 'tiny', '--threads', '1', '--out',
                           str(tmp_path)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads((tmp_path / 'device_check.json').read_text())
    assert report['errors'] == [] and report['pipeline']['s_per_frame'] > 0
    assert {(r['precision'], r['mode']) for r in report['speed']} == {('fp32', 'eager'),
                                                                        ('bf16', 'eager')}
    assert all(r['ms_per_pair'] > 0 for r in report['speed'])
    for row in report['parity']:
        bound = 0.0 if row['precision'] == 'fp32' else 1.5e-2   # docs/engines.md
        for name, err in row['outputs'].items():
            assert err['finite'] and err['pts_rel_median'] <= bound, (row['precision'], name)
