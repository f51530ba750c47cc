"""The main job, pointmap-demo, end to end (oracle engine, small scene): real node process,
real DDS, an output bag, the pictures and the one-screen summary."""

import subprocess
import sys

import pytest
from ros_harness import overlay_missing

# ros: needs rclpy and DDS; slow: pointmap-demo end to end.
pytestmark = [pytest.mark.ros, pytest.mark.slow]


def demo(*args, timeout=240):
    return subprocess.run([sys.executable, '-m', 'pointmap_ros.tools.demo', *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def test_demo_runs_the_node_and_leaves_bag_pictures_and_summary(tmp_path):
    if (reason := overlay_missing()) is not None:
        pytest.skip(reason)
    result = demo('--backend', 'oracle', '--frames', 6, '--size', '96x128', '--out', tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert '6 sent, 5 with outputs' in out and 'stamps equal input stamps: True' in out
    assert 'objects    ' in out and 'tracked' in out
    for name in ('summary.png', 'summary.gif', 'node.log', 'bag/metadata.yaml'):
        assert (tmp_path / name).is_file() and (tmp_path / name).stat().st_size > 0, name
    assert (tmp_path / 'summary.png').read_bytes()[:4] == b'\x89PNG'
    assert (tmp_path / 'summary.gif').read_bytes()[:3] == b'GIF'
    from rosbags.highlevel import AnyReader
    with AnyReader([tmp_path / 'bag']) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
    assert counts['/camera/image_raw'] == 6
    for key in ('points', 'scene_flow', 'objects', 'markers', 'motion_mask'):
        assert counts[f'/dynamic_recon_node/{key}'] == 5, counts
    assert counts['/tf'] > 0 and counts['/diagnostics'] > 0


def test_missing_model_says_how_to_run_with_oracle(tmp_path):
    missing = tmp_path / 'missing.safetensors'
    result = demo('--model', missing, '--out', tmp_path, timeout=60)
    assert result.returncode == 2
    assert str(missing) in result.stderr and '--backend oracle' in result.stderr
