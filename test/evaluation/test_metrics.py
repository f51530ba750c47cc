"""Evaluation metrics and baselines against analytic cases (evaluation/metrics.py)."""

import dataclasses

import numpy as np
import pytest

from pointmap_ros.errors import InputError
from pointmap_ros.evaluation.metrics import (ConfidenceGate, MotionRule, PairTruth, aggregate,
                                             median_scale, pair_metrics, plane_baseline,
                                             zero_flow_baseline)
from pointmap_ros.types import DynamicPointMaps

H, W = 32, 48
K = np.array([[40.0, 0, 23.5], [0, 40.0, 15.5], [0, 0, 1]])
FLOW = np.array([0.5, 0.0, 0.0])


def _rays():
    u, v = np.meshgrid(np.arange(W, dtype=float), np.arange(H, dtype=float))
    return np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(K).T


def _truth(plane_only=False, T=np.eye(4)):
    """A wall at z = 4 and (unless plane_only) a box at z = 2 moving by FLOW; camera j = T."""
    depth = np.full((H, W), 4.0)
    motion = np.zeros((H, W), bool)
    if not plane_only:
        depth[10:20, 15:30] = 2.0
        motion[10:20, 15:30] = True
    p = depth[..., None] * _rays()
    flow = np.where(motion[..., None], FLOW, 0.0)
    p_j = p @ T[:3, :3].T + T[:3, 3]  # image j's points (same pixels) seen from camera j
    ones = np.ones((H, W), np.float32)
    maps = DynamicPointMaps((p).astype(np.float32), (p + flow).astype(np.float32),
                            (p_j - flow).astype(np.float32), p_j.astype(np.float32),
                            ones, ones, ones, ones, metric=True)
    valid = np.ones((H, W), bool)
    return PairTruth(maps, valid, valid.copy(), motion, motion.copy(), T, K, dt=0.1)


def _scaled(maps, s):
    return dataclasses.replace(maps, **{f'pts_{m}': s * maps.pts(m)
                                        for m in ('i_ti', 'i_tj', 'j_ti', 'j_tj')})


def test_perfect_prediction_up_to_scale():
    truth = _truth()
    pred = _scaled(truth.maps, 0.25)
    assert median_scale(pred, truth) == pytest.approx(4.0)
    m = aggregate([pair_metrics(pred, truth)])
    for key in ('pt_i_ti', 'pt_i_tj', 'pt_j_ti', 'pt_j_tj', 'absrel', 'epe', 'epe_dyn'):
        assert m[key] == pytest.approx(0.0, abs=1e-6), key
    assert m['delta'] == 1.0
    assert m['iou'] == 1.0


def test_zero_flow_baseline_epe_is_the_mean_gt_flow_and_iou_zero():
    truth = _truth()
    m = aggregate([pair_metrics(zero_flow_baseline(truth), truth)])
    frac = truth.motion_i.mean()
    assert m['epe_m'] == pytest.approx(frac * np.linalg.norm(FLOW), rel=1e-5)
    assert m['epe_dyn'] * _mean_dist(truth) == pytest.approx(np.linalg.norm(FLOW), rel=1e-5)
    assert m['iou'] == 0.0
    assert m['absrel'] == pytest.approx(0.0, abs=1e-7)


def _mean_dist(truth):
    return np.mean([np.linalg.norm(truth.maps.pts(n), axis=-1).mean()
                    for n in ('i_ti', 'i_tj', 'j_ti', 'j_tj')])


def test_plane_baseline_is_exact_on_a_plane_and_not_on_the_box():
    T = np.eye(4)
    T[:3, 3] = [0.2, 0.0, -0.1]
    flat = _truth(plane_only=True, T=T)
    m = pair_metrics(plane_baseline(flat), flat)
    assert m['pt_i_ti'] == pytest.approx(0.0, abs=1e-6)
    assert m['pt_j_tj'] == pytest.approx(0.0, abs=1e-6)
    assert m['absrel_j'] == pytest.approx(0.0, abs=1e-6)
    box = _truth()
    m = pair_metrics(plane_baseline(box), box)
    # The box covers 150 of 1536 pixels at depth 2 where the plane says 4: AbsRel = frac * 1.
    assert m['absrel_i'] == pytest.approx(150 / (H * W), rel=1e-5)


def test_depth_metrics_analytic():
    truth = _truth(plane_only=True)
    pred = dataclasses.replace(truth.maps, pts_i_ti=truth.maps.pts_i_ti.copy())
    # Half of view i's depths 30 % too far; the single alignment factor s (medians over all
    # four maps) then scales every map.
    pred.pts_i_ti[:, :W // 2] *= 1.3
    m = pair_metrics(pred, truth)
    s = m['scale']
    assert 0.95 < s <= 1.0
    assert m['absrel_i'] == pytest.approx(0.5 * abs(1.3 * s - 1) + 0.5 * abs(s - 1), rel=1e-5)
    assert m['delta_i'] == pytest.approx(0.5 if 1.3 * s >= 1.25 else 1.0)
    assert m['absrel_j'] == pytest.approx(abs(s - 1), rel=1e-4)


def test_moving_pixel_depth_and_the_gate_analytic():
    """The box (moving) drawn 50 % too far in view i where the gate keeps it, exact where its
    confidence is under the gate: the moving pixels' AbsRel, the kept ones', and the kept
    fractions, exactly."""
    truth = _truth()
    assert truth.motion_i.sum() == 150
    conf = np.full((H, W), 5.0, np.float32)
    conf[10:20, 15:22] = 2.0  # 70 of the box's 150 pixels, under min(3, median = 5)
    pred = dataclasses.replace(truth.maps, pts_i_ti=truth.maps.pts_i_ti.copy(), conf_i_ti=conf)
    pred.pts_i_ti[10:20, 22:30] *= 1.5  # the kept 80 pixels too far; the unkept ones exact
    m = pair_metrics(_scaled(pred, 0.5), truth)
    assert m['scale'] == pytest.approx(2.0)  # medians over all four maps: the wall decides
    assert m['absrel_dyn_i'] == pytest.approx(0.5 * 80 / 150, rel=1e-5)
    assert m['absrel_dyn_kept_i'] == pytest.approx(0.5, rel=1e-5)
    assert m['kept_dyn_i'] == pytest.approx(80 / 150)
    assert m['kept_static_i'] == 1.0
    # View j: exact, every pixel kept (confidence 1 everywhere, the gate's quantile is 1).
    assert m['absrel_dyn_j'] == pytest.approx(0.0, abs=1e-6)
    assert m['kept_dyn_j'] == 1.0 and m['kept_static_j'] == 1.0
    # An absolute gate (no quantile) drops every pixel under it.
    strict = pair_metrics(_scaled(pred, 0.5), truth, gate=ConfidenceGate(6.0, None))
    assert strict['kept_dyn_i'] == 0.0 and np.isnan(strict['absrel_dyn_kept_i'])


def test_confidence_gate_defaults_match_the_pipeline():
    from pointmap_ros.pipeline import PipelineConfig
    gate, cfg = ConfidenceGate(), PipelineConfig()
    assert (gate.threshold, gate.keep_quantile) == (cfg.conf_threshold, cfg.conf_keep_quantile)


def test_flow_error_of_a_constant_offset():
    truth = _truth()
    offset = np.array([0.0, 0.1, 0.0], np.float32)
    pred = dataclasses.replace(truth.maps, pts_i_tj=truth.maps.pts_i_tj + offset)
    m = pair_metrics(pred, truth)
    assert m['epe_m_i'] == pytest.approx(0.1, rel=0.02)
    assert m['epe_m_j'] == pytest.approx(0.0, abs=0.002)


def test_motion_rule_defaults_match_the_pipeline():
    from pointmap_ros.pipeline import PipelineConfig
    rule, cfg = MotionRule(), PipelineConfig()
    assert (rule.speed_rel, rule.min_rel, rule.noise_mult, rule.smooth_radius,
            rule.min_region_frac) == (cfg.motion_speed_rel, cfg.motion_min_rel,
                                      cfg.motion_noise_mult, cfg.flow_smooth_radius,
                                      cfg.min_region_frac)


def test_aggregate_pools_iou_and_ignores_missing_values():
    rows = [{'epe_i': 1.0, 'iou_inter_i': 2.0, 'iou_union_i': 4.0},
            {'epe_i': 3.0, 'iou_inter_i': 0.0, 'iou_union_i': 0.0},
            {'epe_i': float('nan'), 'iou_inter_i': 6.0, 'iou_union_i': 8.0}]
    m = aggregate(rows)
    assert m['epe_i'] == 2.0 and m['epe'] == 2.0
    assert m['iou_i'] == pytest.approx(8 / 12) and m['iou'] == pytest.approx(8 / 12)


def test_same_time_only_truth_skips_flow():
    truth = dataclasses.replace(_truth(), has_dynamic=False, motion_i=None, motion_j=None)
    m = pair_metrics(_scaled(truth.maps, 2.0), truth)
    assert 'epe_i' not in m and 'pt_i_tj' not in m
    assert m['pt_i_ti'] == pytest.approx(0.0, abs=1e-6)


def test_shape_mismatch_raises():
    truth = _truth()
    pred = dataclasses.replace(truth.maps, pts_j_ti=truth.maps.pts_j_ti[:-1])
    with pytest.raises(InputError, match='pts_j_ti'):
        pair_metrics(pred, truth)
