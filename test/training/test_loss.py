"""Properties of the DPM objective (training/loss.py)."""

import pytest
import torch

from pointmap_ros.errors import ConfigError, InputError
from pointmap_ros.training.loss import (DPMLoss, DPMLossConfig, metrics_to_floats,
                                        shared_norm_factor)
from pointmap_ros.types import MAP_NAMES

torch.set_num_threads(1)


def _batch(B=2, H=6, W=8, seed=0):
    """Random GT maps with a moving patch: cross-time maps differ on motion pixels only."""
    g = torch.Generator().manual_seed(seed)
    base_i = torch.randn(B, H, W, 3, generator=g) + torch.tensor([0.0, 0.0, 5.0])
    base_j = torch.randn(B, H, W, 3, generator=g) + torch.tensor([0.0, 0.0, 5.0])
    motion = torch.zeros(B, H, W, dtype=torch.bool)
    motion[:, 2:4, 3:6] = True
    flow = torch.where(motion[..., None], torch.tensor([0.3, 0.0, -0.2]), torch.zeros(3))
    batch = {'pts_i_ti': base_i, 'pts_i_tj': base_i + flow,
             'pts_j_ti': base_j - flow, 'pts_j_tj': base_j,
             'valid_i': torch.ones(B, H, W, dtype=torch.bool),
             'valid_j': torch.ones(B, H, W, dtype=torch.bool),
             'motion_i': motion, 'motion_j': motion}
    return batch


def _run(loss, pred, batch):
    """The loss and its metrics as floats."""
    value, metrics = loss(pred, batch)
    return value, metrics_to_floats(metrics)


# The pre-issue-11 objective: plain DUSt3R map loss, no flow term.
PLAIN = DPMLossConfig(flow_weight=0.0)


def _pred_from(batch, scale=1.0, conf=1.0):
    pred = {}
    for m in MAP_NAMES:
        pred[f'pts_{m}'] = scale * batch[f'pts_{m}'].clone()
        pred[f'conf_{m}'] = torch.full(batch[f'pts_{m}'].shape[:-1], conf)
    return pred


def test_perfect_prediction_has_zero_regression_error():
    batch = _batch()
    loss, metrics = _run(DPMLoss(), _pred_from(batch, scale=3.7), batch)
    for m in MAP_NAMES:
        assert metrics[f'reg_{m}'] == pytest.approx(0.0, abs=1e-6)
    assert metrics['flow_err'] == pytest.approx(0.0, abs=1e-6)
    assert float(loss) == pytest.approx(0.0, abs=1e-5)  # conf = 1: log term is 0 too


def test_loss_is_invariant_to_prediction_and_gt_scale():
    batch = _batch(seed=1)
    pred = _pred_from(batch, conf=2.0)
    pred['pts_i_tj'] = pred['pts_i_tj'] + 0.1 * torch.randn(pred['pts_i_tj'].shape)
    ref, _ = DPMLoss()(pred, batch)
    scaled_pred = {k: v * 5.0 if k.startswith('pts') else v for k, v in pred.items()}
    scaled_gt = {k: v * 0.2 if k.startswith('pts') else v for k, v in batch.items()}
    assert float(DPMLoss()(scaled_pred, batch)[0]) == pytest.approx(float(ref), rel=1e-5)
    assert float(DPMLoss()(pred, scaled_gt)[0]) == pytest.approx(float(ref), rel=1e-5)


def test_shared_normalisation_keeps_flow_differences():
    # Predicting the cross-time map as a scaled copy of the same-time map is wrong (it invents
    # flow everywhere); per-map normalisation would hide it, the shared factor must not.
    batch = _batch(seed=2)
    batch['pts_i_tj'] = batch['pts_i_ti'].clone()
    pred = _pred_from(batch)
    pred['pts_i_tj'] = 1.2 * pred['pts_i_ti']
    _, metrics = _run(DPMLoss(), pred, batch)
    assert metrics['reg_i_tj'] > 0.05
    assert metrics['flow_err'] > 0.05
    assert metrics['reg_i_ti'] < metrics['reg_i_tj']


def test_shared_norm_factor_is_mean_distance_over_valid_points_of_all_maps():
    pts = {m: torch.zeros(1, 2, 2, 3) for m in MAP_NAMES}
    pts['i_ti'][0, 0, 0, 2] = 2.0
    pts['j_tj'][0, 1, 1, 2] = 4.0
    pts['j_tj'][0, 0, 0, 2] = 1000.0  # invalid below: must not count
    valid = {m: torch.zeros(1, 2, 2, dtype=torch.bool) for m in MAP_NAMES}
    valid['i_ti'][0, 0, 0] = True
    valid['j_tj'][0, 1, 1] = True
    assert float(shared_norm_factor(pts, valid)[0]) == pytest.approx(3.0)


def test_invalid_pixels_do_not_change_the_loss():
    batch = _batch(seed=3)
    batch['valid_i'][:, 0, :] = False
    pred = _pred_from(batch, conf=1.5)
    pred['pts_i_ti'] = pred['pts_i_ti'] + 0.05
    ref, _ = DPMLoss()(pred, batch)
    pred['pts_i_ti'][:, 0, :] = 1e4
    batch['pts_i_tj'][:, 0, :] = float('nan')
    assert float(DPMLoss()(pred, batch)[0]) == pytest.approx(float(ref), rel=1e-6)


def test_confidence_term_and_alpha():
    batch = _batch(seed=4)
    pred = _pred_from(batch, conf=3.0)
    loss, _ = DPMLoss(DPMLossConfig(alpha=0.2, flow_weight=0.0))(pred, batch)
    assert float(loss) == pytest.approx(-4 * 0.2 * torch.log(torch.tensor(3.0)).item(), rel=1e-5)


def test_dynamic_weight_fixes_the_weight_of_moving_pixels():
    batch = _batch(seed=5)
    pred = _pred_from(batch)
    for m in MAP_NAMES:
        pred[f'pts_{m}'] = pred[f'pts_{m}'] + 0.1
        pred[f'conf_{m}'] = torch.full_like(pred[f'conf_{m}'], 2.0).requires_grad_(True)
    loss, _ = DPMLoss(DPMLossConfig(dynamic_weight=5.0, flow_weight=0.0))(pred, batch)
    loss.backward()
    grad = pred['conf_i_tj'].grad
    # Moving pixels: weight is fixed (no gradient to their confidence); static ones learn it.
    assert torch.all(grad[batch['motion_i']] == 0)
    assert torch.all(grad[~batch['motion_i']] != 0)
    plain, _ = DPMLoss(PLAIN)(pred, batch)
    assert float(loss.detach()) > float(plain.detach())


def test_dynamic_confidence_keeps_learning_the_moving_pixels_confidence():
    batch = _batch(seed=5)
    pred = _pred_from(batch)
    for m in MAP_NAMES:
        pred[f'pts_{m}'] = (pred[f'pts_{m}'] + 0.1).requires_grad_(True)
        pred[f'conf_{m}'] = torch.full_like(pred[f'conf_{m}'], 2.0).requires_grad_(True)
    fixed_only = DPMLoss(DPMLossConfig(dynamic_weight=5.0, flow_weight=0.0))
    learned = DPMLoss(DPMLossConfig(dynamic_weight=5.0, dynamic_confidence=True,
                                    flow_weight=0.0))
    grads = []
    for loss_fn in (fixed_only, learned, DPMLoss(PLAIN)):
        loss, _ = loss_fn(pred, batch)
        grads.append(torch.autograd.grad(loss, [pred['pts_i_tj'], pred['conf_i_tj']]))
    moving = batch['motion_i']
    # The points keep the fixed weight: the confidence term sees a detached error.
    assert torch.equal(grads[0][0], grads[1][0])
    assert not torch.allclose(grads[1][0][moving], grads[2][0][moving])
    # The moving pixels' confidence gets the plain objective's gradient (err - alpha / conf),
    # where the fixed weight alone gives it none.
    assert torch.all(grads[0][1][moving] == 0)
    assert torch.allclose(grads[1][1], grads[2][1], rtol=1e-5, atol=1e-9)
    with pytest.raises(ConfigError, match='dynamic_confidence'):
        DPMLoss(DPMLossConfig(dynamic_confidence=True, flow_weight=0.0))


def test_flow_weight_adds_the_flow_term():
    batch = _batch(seed=6)
    pred = _pred_from(batch)
    pred['pts_i_tj'] = pred['pts_i_ti'].clone()  # zero predicted flow
    plain, metrics = _run(DPMLoss(PLAIN), pred, batch)
    old_style = DPMLossConfig(flow_weight=2.0, flow_scale='geometry', flow_moving_share=None)
    with_flow, _ = DPMLoss(old_style)(pred, batch)
    assert metrics['flow_err'] > 0
    assert float(with_flow) == pytest.approx(float(plain) + 2.0 * metrics['flow_err'], rel=1e-5)


def _flow_batch(flow_size, seed=7):
    """One sample: static scene at 5 m with a moving patch of true |flow| = flow_size (m)."""
    batch = _batch(B=1, seed=seed)
    motion = batch['motion_i']
    flow = torch.where(motion[..., None], torch.tensor([flow_size, 0.0, 0.0]), torch.zeros(3))
    batch['pts_i_tj'] = batch['pts_i_ti'] + flow
    batch['pts_j_ti'] = batch['pts_j_tj'] - flow
    return batch


def test_flow_term_is_measured_against_the_flows_own_scale():
    """Predicting zero flow costs the same whether objects move 1 cm or 1 m: the error is
    divided by the mean true |flow| on moving pixels. Under the geometry's scale alone the
    small motion would be ~100x cheaper to ignore."""
    costs, old_costs = [], []
    for size in (0.01, 1.0):
        batch = _flow_batch(size)
        pred = _pred_from(batch)
        pred['pts_i_tj'] = pred['pts_i_ti'].clone()
        pred['pts_j_ti'] = pred['pts_j_tj'].clone()
        cfg = DPMLossConfig(flow_scale_floor=1e-4)
        costs.append(_run(DPMLoss(cfg), pred, batch)[1]['flow_loss'])
        old = DPMLossConfig(flow_scale='geometry', flow_moving_share=None)
        old_costs.append(_run(DPMLoss(old), pred, batch)[1]['flow_loss'])
    # Zero flow on the moving half of the balanced term: error / scale = 1, weight 0.5.
    assert costs == pytest.approx([0.5, 0.5], rel=1e-3)
    assert old_costs[1] / old_costs[0] > 50


def test_flow_term_balances_moving_and_static_pixels_and_ignores_confidence():
    batch = _flow_batch(0.2)
    moving = batch['motion_i']
    n_mov, n_all = int(moving[0].sum()), moving[0].numel()
    pred = _pred_from(batch, conf=7.0)
    # Predicted flow: exact on moving pixels, a 0.02 m ripple along x on static ones.
    ripple = torch.where(moving[..., None], torch.zeros(3), torch.tensor([0.02, 0.0, 0.0]))
    pred['pts_i_tj'] = batch['pts_i_tj'] + ripple
    pred['pts_j_ti'] = batch['pts_j_ti'] + ripple
    scale = float(shared_norm_factor({m: batch[f'pts_{m}'] for m in MAP_NAMES},
                                     {m: torch.ones(1, 6, 8, dtype=torch.bool)
                                      for m in MAP_NAMES})[0])
    _, metrics = _run(DPMLoss(DPMLossConfig(flow_scale_floor=1e-4)), pred, batch)
    # Static mean error 0.02 / (flow scale 0.2): weight 0.5 whatever the pixel counts (the
    # ripple shifts the prediction's normalisation factor by ~1e-4, hence rel=1e-3).
    assert metrics['flow_loss'] == pytest.approx(0.5 * 0.02 / 0.2, rel=1e-3)
    # The plain mean would dilute it by the static share instead (and the metric does).
    assert metrics['flow_err'] == pytest.approx(0.02 / scale * (n_all - n_mov) / n_all,
                                                rel=1e-3)
    assert metrics['flow_err_dyn'] == pytest.approx(0.0, abs=1e-6)
    # Confidence does not weight the flow term: conf 1 or 7 gives the same value.
    pred_low = {k: (torch.ones_like(v) if k.startswith('conf') else v) for k, v in pred.items()}
    _, low = _run(DPMLoss(DPMLossConfig(flow_scale_floor=1e-4)), pred_low, batch)
    assert low['flow_loss'] == pytest.approx(metrics['flow_loss'], rel=1e-6)


def test_flow_scale_floor_applies_to_static_samples():
    batch = _batch(B=1, seed=8)
    for key in ('pts_i_tj', 'pts_j_ti'):
        batch[key] = batch[key.replace('tj', 'ti') if key == 'pts_i_tj' else 'pts_j_tj'].clone()
    batch['motion_i'] = torch.zeros_like(batch['motion_i'])
    batch['motion_j'] = torch.zeros_like(batch['motion_j'])
    pred = _pred_from(batch)
    scale = float(shared_norm_factor({m: batch[f'pts_{m}'] for m in MAP_NAMES},
                                     {m: torch.ones(1, 6, 8, dtype=torch.bool)
                                      for m in MAP_NAMES})[0])
    pred['pts_i_tj'] = pred['pts_i_ti'] + torch.tensor([0.01 * scale, 0.0, 0.0])
    pred['pts_j_ti'] = pred['pts_j_tj'] + torch.tensor([0.01 * scale, 0.0, 0.0])
    _, metrics = _run(DPMLoss(DPMLossConfig(flow_scale_floor=0.005)), pred, batch)
    # No moving pixels: all weight on the static mean (0.01 normalised) / floor 0.005.
    assert metrics['flow_loss'] == pytest.approx(2.0, rel=1e-4)


def test_flow_term_trains_only_the_offsets_of_a_residual_model():
    """With residual maps the flow gradient reaches the cross-time offsets, not P_i(t_i)."""
    batch = _flow_batch(0.3)
    pred = _pred_from(batch)
    base_i = pred['pts_i_ti'].clone().requires_grad_(True)
    offset = torch.zeros_like(base_i, requires_grad=True)
    pred['pts_i_ti'], pred['pts_i_tj'] = base_i, base_i + offset
    cfg = DPMLossConfig(map_weights=(0.0, 0.0, 0.0, 0.0), flow_scale_floor=1e-4)
    loss, _ = DPMLoss(cfg)(pred, batch)
    loss.backward()
    moving = batch['motion_i'][0]
    assert offset.grad[0][moving].abs().sum() > 0
    # The base only changes the prediction's normalisation factor: far weaker gradient.
    assert base_i.grad.abs().sum() < 0.1 * offset.grad.abs().sum()


def test_missing_motion_masks_raise_when_needed():
    batch = _batch()
    del batch['motion_i'], batch['motion_j']
    with pytest.raises(InputError, match='motion'):
        DPMLoss()(_pred_from(batch), batch)
    loss, _ = DPMLoss(PLAIN)(_pred_from(batch), batch)
    assert float(loss) == pytest.approx(0.0, abs=1e-5)


def test_shape_mismatch_and_bad_config_raise():
    batch = _batch()
    pred = _pred_from(batch)
    pred['pts_j_ti'] = pred['pts_j_ti'][:, :-1]
    with pytest.raises(InputError, match='pts_j_ti'):
        DPMLoss()(pred, batch)
    with pytest.raises(ConfigError, match='alpha'):
        DPMLoss(DPMLossConfig(alpha=0.0))
    with pytest.raises(ConfigError, match='map_weights'):
        DPMLoss(DPMLossConfig(map_weights=(1.0, 1.0)))
    with pytest.raises(ConfigError, match='flow_weight'):
        DPMLoss(DPMLossConfig(flow_weight=-1.0))
    with pytest.raises(ConfigError, match='flow_scale'):
        DPMLoss(DPMLossConfig(flow_scale='pixels'))
    with pytest.raises(ConfigError, match='flow_scale_floor'):
        DPMLoss(DPMLossConfig(flow_scale_floor=0.0))
    with pytest.raises(ConfigError, match='flow_moving_share'):
        DPMLoss(DPMLossConfig(flow_moving_share=1.5))
