"""``pointmap-eval-pipeline --depth``: the simulated RGB-D camera through the pipeline."""

import json

import pytest

from pointmap_ros.tools import eval_pipeline


def _run(tmp_path, *extra):
    out = tmp_path / 'eval.json'
    eval_pipeline.main(['--engine', 'oracle-two-map', '--sequences', '1',
                        '--static-sequences', '0', '--frames', '6', '--size', '96x128',
                        '--no-progress', '--json', str(out), *extra])
    return json.loads(out.read_text())


@pytest.mark.parametrize('noise', [0.0, 0.01])
def test_depth_makes_the_output_metric_within_the_sensor_noise(tmp_path, noise):
    result = _run(tmp_path, '--depth', '--depth-noise', str(noise))
    assert result['depth_sensor']['noise_rel'] == noise
    assert result['metric_frames'] == 1.0
    # Measured pixels carry the sensor's noise (mean |N(0, s)| = 0.8 s); the rest is exact.
    assert result['depth_absrel'] <= 0.8 * noise + 2e-3
    assert result['object_centroid_err_m'] < 0.05


def test_without_depth_the_oracles_exact_geometry_is_scored_exact(tmp_path):
    result = _run(tmp_path)
    assert result['depth_sensor'] is None
    assert result['metric_frames'] == 1.0  # the oracle serves metres
    assert result['depth_absrel'] < 1e-4
