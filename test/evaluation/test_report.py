"""Report tables and figures (evaluation/report.py)."""

import math

import numpy as np

from pointmap_ros.evaluation.report import markdown_report, save_pair_figure, target_rows
from pointmap_ros.types import DynamicPointMaps

BASE = {'zero_flow': {'epe': 0.01, 'absrel': 0.0}, 'plane': {'absrel': 0.3, 'delta': 0.4}}


def test_targets_are_judged_against_the_right_thresholds():
    rows = {r['key']: r for r in target_rows({'epe': 0.0029, 'iou': 0.7, 'absrel': 0.11}, BASE)}
    assert rows['epe']['met'] and math.isclose(rows['epe']['limit'], 0.003)
    assert rows['iou']['met']
    assert not rows['absrel']['met']
    missing = {r['key']: r for r in target_rows({'epe': 0.001}, BASE)}
    assert not missing['iou']['met'] and not missing['absrel']['met']


def test_report_without_dynamic_ground_truth_has_no_flow_section():
    model = {'pt_i_ti': 0.1, 'pt_m_i_ti': 0.5, 'absrel_i': 0.2, 'absrel': 0.2}
    text = markdown_report('t', model, BASE, {'pairs': 3})
    assert '- pairs: 3' in text and '| P_i(t_i) | 0.1000 | 0.5000 |' in text
    assert '## Scene flow' not in text and '| depth AbsRel | 0.2000 | <= 0.1 | no |' in text


def test_pair_figure_is_written(tmp_path):
    H, W = 16, 24
    pts = np.random.default_rng(0).normal(size=(H, W, 3)).astype(np.float32) + [0, 0, 4]
    ones = np.ones((H, W), np.float32)
    maps = DynamicPointMaps(pts, pts + 0.1, pts, pts, ones, ones, ones, ones)
    mask = np.zeros((H, W), bool)
    mask[4:8, 4:8] = True
    path = save_pair_figure(str(tmp_path / 'f.png'), np.zeros((H, W, 3), np.uint8), maps, maps,
                            np.ones((H, W), bool), mask, mask, 1.0, title='x')
    assert (tmp_path / 'f.png').stat().st_size > 1000 and path.endswith('f.png')
