"""The DPM training objective: confidence-weighted 3D regression over four maps plus a
scene-flow term that is measured against the flow's own scale.

For a pair (I_i, I_j) the network predicts four point maps, all in camera i's frame
(``MAP_NAMES`` order: P_i(t_i), P_i(t_j), P_j(t_i), P_j(t_j)).

**Map term** (DUSt3R's ``ConfLoss(Regr3D(L21, norm_mode='avg_dis'), alpha=0.2)`` over the four
maps). The scale normalisation is computed **once per sample over all four maps** (one factor
for the ground truth, one for the prediction): separate factors per map would rescale P_i(t_j)
and P_i(t_i) differently and destroy the scene flow P_i(t_j) - P_i(t_i). Per sample b and map
m, with valid pixels V_m and normalised points x = X / s::

    err(p)  = || x_pred(p) - x_gt(p) ||_2                            (L21)
    L_m(b)  = mean_{p in V_m} ( conf(p) * err(p) - alpha * log conf(p) )

averaged per sample before the batch, so samples with few valid pixels are not drowned out.
``dynamic_weight`` > 0 replaces the learned weight of moving pixels by a fixed
``dynamic_weight * max(conf of static pixels)`` (detached, no log-conf term; St4RTrack).
With ``dynamic_confidence`` the moving pixels' confidence is still learned, from their detached
error (``conf * sg(err) - alpha * log conf``, the same optimum ``alpha / err`` as any other
pixel): the node gates points by confidence, and a fixed weight alone leaves the confidence of
moving pixels untrained, so points the network learned to place would still be dropped.

**Flow term** (``flow_weight`` > 0; issue 11). The confidence-weighted map term alone lets the
network give up on moving pixels (it learned conf ~10 on static and ~1.1 on moving pixels, so
moving pixels carried ~2 % of the loss), and the geometry's normalisation shrinks the flow to
~0.3 % of the point error it sits next to. The flow term therefore

- compares the predicted flows P_i(t_j) - P_i(t_i) and P_j(t_i) - P_j(t_j) (differences of
  the two maps of the same image, both normalised by the prediction's shared factor) with the
  true ones, per pixel by L21;
- divides by the **flow's own scale**: the sample's mean true |flow| over moving pixels (in
  normalised units), floored at ``flow_scale_floor`` so a sample without motion does not divide
  by zero and its static ripple is measured against a small but finite motion;
- is **not confidence-weighted**;
- **balances moving against static pixels**: ``flow_moving_share`` of the term is the mean over
  moving pixels, the rest the mean over static ones (a sample without moving pixels puts it all
  on the static mean). With ``flow_moving_share = None`` the term is the plain mean over valid
  pixels and ``flow_scale = 'geometry'`` skips the flow-scale division: together that is the
  pre-issue-11 flow term.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pointmap_ros.errors import ConfigError, InputError
from pointmap_ros.types import MAP_NAMES

__all__ = ['DPMLossConfig', 'DPMLoss', 'shared_norm_factor', 'map_validity', 'FLOW_SCALES',
           'metrics_to_floats']

_EPS = 1e-8

#: What the flow error is divided by: 'flow' (the sample's mean true |flow| on moving pixels,
#: floored) or 'geometry' (nothing beyond the shared point normalisation).
FLOW_SCALES = ('flow', 'geometry')

#: (same-time map, cross-time map) of each image: the flow of image i is P_i(t_j) - P_i(t_i),
#: that of image j is P_j(t_i) - P_j(t_j) (from t_j back to t_i, as the GT defines it).
_FLOW_PAIRS = (('i_ti', 'i_tj'), ('j_tj', 'j_ti'))


@dataclass
class DPMLossConfig:
    """Settings of :class:`DPMLoss`.

    Attributes:
        alpha: weight of the ``-log conf`` regulariser (DUSt3R: 0.2).
        map_weights: loss weight per map, in ``MAP_NAMES`` order.
        dynamic_weight: St4RTrack-style fixed weight for moving pixels in the map term, as a
            multiple of the sample's maximum static confidence; 0 disables it.
        dynamic_confidence: with ``dynamic_weight``, keep learning the moving pixels'
            confidence from their detached error (module docstring).
        flow_weight: weight of the scene-flow term; 0 disables it.
        flow_scale: 'flow' (divide by the flow's own scale) or 'geometry' (see module doc).
        flow_scale_floor: lower bound of the flow scale, in units of the shared point
            normalisation (mean distance to camera i): 0.005 = 5 mm at 1 m.
        flow_moving_share: share of the flow term given to the mean over moving pixels
            (the rest: static pixels); None = plain mean over all valid pixels.
        flow_charbonnier: c > 0 replaces the per-pixel scaled error e by
            ``sqrt(e^2 + c^2) - c`` (quadratic below c, L1 above). With a pure L1 error and
            a balanced term, zero offsets are a stationary point as long as the features do
            not yet tell moving from static pixels (the static half's pull equals the moving
            half's); the quadratic zone lets small offsets grow. 0: plain L21.
    """

    alpha: float = 0.2
    map_weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    dynamic_weight: float = 0.0
    dynamic_confidence: bool = False
    flow_weight: float = 1.0
    flow_scale: str = 'flow'
    flow_scale_floor: float = 0.005
    flow_moving_share: float | None = 0.5
    flow_charbonnier: float = 0.0

    def validate(self) -> None:
        if self.alpha <= 0:
            raise ConfigError(f'alpha must be > 0, got {self.alpha}', name='alpha',
                              value=self.alpha)
        if len(self.map_weights) != len(MAP_NAMES) or min(self.map_weights) < 0:
            raise ConfigError(f'map_weights must be 4 non-negative numbers, got '
                              f'{self.map_weights}', name='map_weights', value=self.map_weights)
        if self.dynamic_weight < 0 or self.flow_weight < 0:
            raise ConfigError('dynamic_weight and flow_weight must be >= 0, got '
                              f'{self.dynamic_weight} and {self.flow_weight}')
        if self.dynamic_confidence and self.dynamic_weight == 0:
            raise ConfigError('dynamic_confidence needs dynamic_weight > 0 (without the fixed '
                              'weight every pixel already learns its confidence)',
                              name='dynamic_confidence', value=self.dynamic_confidence)
        if self.flow_scale not in FLOW_SCALES:
            raise ConfigError(f'flow_scale={self.flow_scale!r}; expected one of {FLOW_SCALES}',
                              name='flow_scale', value=self.flow_scale)
        if not self.flow_scale_floor > 0:
            raise ConfigError(f'flow_scale_floor must be > 0, got {self.flow_scale_floor}',
                              name='flow_scale_floor', value=self.flow_scale_floor)
        if self.flow_charbonnier < 0:
            raise ConfigError(f'flow_charbonnier must be >= 0, got {self.flow_charbonnier}',
                              name='flow_charbonnier', value=self.flow_charbonnier)
        if self.flow_moving_share is not None and not 0.0 <= self.flow_moving_share <= 1.0:
            raise ConfigError(f'flow_moving_share must be None or in [0, 1], got '
                              f'{self.flow_moving_share}', name='flow_moving_share',
                              value=self.flow_moving_share)


def map_validity(valid_i: torch.Tensor, valid_j: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-map validity: both maps of image i use ``valid_i``, both of image j ``valid_j``."""
    return {'i_ti': valid_i, 'i_tj': valid_i, 'j_ti': valid_j, 'j_tj': valid_j}


def shared_norm_factor(pts: dict[str, torch.Tensor],
                       valid: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean distance to the origin over the valid points of all four maps, per sample.

    Args:
        pts: map name -> ``[B, H, W, 3]`` points.
        valid: map name -> ``[B, H, W]`` bool.

    Returns:
        ``[B]`` factor, clipped to >= 1e-8 (DUSt3R's 'avg_dis').
    """
    total = 0.0
    count = 0.0
    for name in MAP_NAMES:
        mask = valid[name].to(pts[name].dtype)
        dist = torch.linalg.vector_norm(torch.nan_to_num(pts[name]), dim=-1)
        total = total + (dist * mask).flatten(1).sum(1)
        count = count + mask.flatten(1).sum(1)
    return (total / count.clamp(min=1.0)).clamp(min=_EPS)


def _masked_sum_count(values: torch.Tensor, mask: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample sum of ``values`` ``[B, H, W]`` over ``mask`` and the pixel count."""
    mask = mask.to(values.dtype)
    return (values * mask).flatten(1).sum(1), mask.flatten(1).sum(1)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sample mean of ``values`` ``[B, H, W]`` over ``mask``; 0 for empty masks."""
    total, count = _masked_sum_count(values, mask)
    return total / count.clamp(min=1.0)


def metrics_to_floats(metrics: dict) -> dict[str, float]:
    """The loss metrics as Python floats (one host synchronisation for all of them)."""
    tensors = {k: v for k, v in metrics.items() if torch.is_tensor(v)}
    out = {k: float(v) for k, v in metrics.items() if not torch.is_tensor(v)}
    if tensors:
        stacked = torch.stack([v.detach().float().reshape(()) for v in tensors.values()])
        out.update(zip(tensors, stacked.cpu().tolist()))
    return out


class DPMLoss(torch.nn.Module):
    """Shared-scale-normalised map regression plus the flow term (see the module doc)."""

    def __init__(self, config: DPMLossConfig | None = None):
        super().__init__()
        self.config = config or DPMLossConfig()
        self.config.validate()

    def forward(self, pred: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Compute the loss.

        Args:
            pred: the model output: ``pts_<m>`` ``[B, H, W, 3]`` and ``conf_<m>`` ``[B, H, W]``
                (>= 1) for every m in ``MAP_NAMES``, camera-i frame, arbitrary scale.
            batch: ground truth: ``pts_<m>`` ``[B, H, W, 3]`` (camera-i frame, any unit),
                ``valid_i`` / ``valid_j`` ``[B, H, W]`` bool, and ``motion_i`` / ``motion_j``
                ``[B, H, W]`` bool (needed by ``dynamic_weight`` and the balanced flow term).

        Returns:
            The scalar loss and a dict of detached 0-d tensors (no host synchronisation; see
            :func:`metrics_to_floats`): ``loss``, ``reg_<m>`` (unweighted mean normalised L21
            error per map), ``conf_<m>`` (mean confidence), ``flow_err`` (mean normalised flow
            error over valid pixels, in the points' normalisation, comparable across
            settings), ``flow_err_dyn`` (the same over moving pixels) and ``flow_loss`` (the
            flow term before its weight).

        Raises:
            InputError: when a prediction and its ground truth differ in shape, or motion
                masks are needed and missing.
        """
        cfg = self.config
        for name in MAP_NAMES:
            if pred[f'pts_{name}'].shape != batch[f'pts_{name}'].shape:
                raise InputError(
                    f'pts_{name}: prediction shape {tuple(pred[f"pts_{name}"].shape)} != '
                    f'ground-truth shape {tuple(batch[f"pts_{name}"].shape)}', 'size',
                    actual=tuple(pred[f'pts_{name}'].shape),
                    expected=tuple(batch[f'pts_{name}'].shape))
        needs_motion = cfg.dynamic_weight > 0 or (cfg.flow_weight > 0 and (
            cfg.flow_moving_share is not None or cfg.flow_scale == 'flow'))
        has_motion = 'motion_i' in batch and 'motion_j' in batch
        if needs_motion and not has_motion:
            raise InputError('this loss configuration needs the motion_i / motion_j masks',
                             'motion')
        # The loss is computed in float32 even under autocast: norms and logs of bf16 values
        # are too coarse for the small flow differences the cross-time maps must resolve.
        pts_p = {n: pred[f'pts_{n}'].float() for n in MAP_NAMES}
        pts_g = {n: batch[f'pts_{n}'].float() for n in MAP_NAMES}
        valid = map_validity(batch['valid_i'], batch['valid_j'])
        scale_p = shared_norm_factor(pts_p, valid)[:, None, None, None]
        scale_g = shared_norm_factor(pts_g, valid)[:, None, None, None]
        norm_p = {n: pts_p[n] / scale_p for n in MAP_NAMES}
        norm_g = {n: torch.nan_to_num(pts_g[n]) / scale_g for n in MAP_NAMES}
        motion = map_validity(batch['motion_i'], batch['motion_j']) if has_motion else None

        total = torch.zeros((), device=scale_p.device)
        metrics: dict[str, torch.Tensor] = {}
        for name, weight in zip(MAP_NAMES, cfg.map_weights):
            conf = pred[f'conf_{name}'].float()
            err = torch.linalg.vector_norm(norm_p[name] - norm_g[name], dim=-1)
            term = conf * err - cfg.alpha * torch.log(conf)
            if cfg.dynamic_weight > 0:
                dyn = motion[name] & valid[name]
                static_conf = torch.where(valid[name] & ~dyn, conf, torch.zeros_like(conf))
                fixed = cfg.dynamic_weight * static_conf.flatten(1).amax(1).clamp(min=1.0)
                dyn_term = fixed.detach()[:, None, None] * err
                if cfg.dynamic_confidence:
                    dyn_term = dyn_term + conf * err.detach() - cfg.alpha * torch.log(conf)
                term = torch.where(dyn, dyn_term, term)
            total = total + weight * _masked_mean(term, valid[name]).mean()
            metrics[f'reg_{name}'] = _masked_mean(err.detach(), valid[name]).mean()
            metrics[f'conf_{name}'] = _masked_mean(conf.detach(), valid[name]).mean()

        flow_loss, flow_err, flow_err_dyn = self._flow_term(norm_p, norm_g, valid, motion)
        if cfg.flow_weight > 0:
            total = total + cfg.flow_weight * flow_loss
        metrics['flow_err'] = flow_err.detach()
        if flow_err_dyn is not None:
            metrics['flow_err_dyn'] = flow_err_dyn.detach()
        metrics['flow_loss'] = flow_loss.detach()
        metrics['loss'] = total.detach()
        return total, metrics

    def _flow_term(self, norm_p, norm_g, valid, motion):
        """Flow loss (per the config), plain mean flow error, and mean error on moving pixels.

        Returns ``(flow_loss, flow_err, flow_err_dyn)``; each a 0-d tensor (batch mean), the
        last None without motion masks.
        """
        cfg = self.config
        errs, gts, valids, movings = [], [], [], []
        for t_same, t_cross in _FLOW_PAIRS:
            flow_p = norm_p[t_cross] - norm_p[t_same]
            flow_g = norm_g[t_cross] - norm_g[t_same]
            errs.append(torch.linalg.vector_norm(flow_p - flow_g, dim=-1))
            gts.append(torch.linalg.vector_norm(flow_g, dim=-1))
            valids.append(valid[t_same])
            if motion is not None:
                movings.append(motion[t_same] & valid[t_same])
        # Plain per-view means (the pre-issue-11 flow term and the logged metric).
        flow_err = 0.5 * sum(_masked_mean(e, v).mean() for e, v in zip(errs, valids))
        flow_err_dyn = None
        if motion is not None:
            # Mean over the moving pixels of both views (per sample), then over samples that
            # have any: a sample without motion has no moving-pixel error to report.
            sums = [_masked_sum_count(e, m) for e, m in zip(errs, movings)]
            dyn_sum, dyn_count = sums[0][0] + sums[1][0], sums[0][1] + sums[1][1]
            has_dyn = (dyn_count > 0).float()
            flow_err_dyn = ((dyn_sum / dyn_count.clamp(min=1.0)) * has_dyn).sum() \
                / has_dyn.sum().clamp(min=1.0)
        if cfg.flow_weight == 0:
            return torch.zeros_like(flow_err), flow_err, flow_err_dyn

        if cfg.flow_scale == 'flow':
            # The sample's mean true |flow| over its moving pixels (both views), floored.
            gt_sums = [_masked_sum_count(g, m) for g, m in zip(gts, movings)]
            mean_flow = (gt_sums[0][0] + gt_sums[1][0]) \
                / (gt_sums[0][1] + gt_sums[1][1]).clamp(min=1.0)
            scale = mean_flow.clamp(min=cfg.flow_scale_floor)
        else:
            scale = torch.ones_like(errs[0][:, 0, 0])
        # Per-pixel error in units of the flow scale (then robustified if asked).
        errs = [e / scale[:, None, None] for e in errs]
        if cfg.flow_charbonnier > 0:
            c = cfg.flow_charbonnier
            errs = [torch.sqrt(e * e + c * c) - c for e in errs]
        if cfg.flow_moving_share is None:
            per_sample = 0.5 * sum(_masked_mean(e, v) for e, v in zip(errs, valids))
        else:
            share = cfg.flow_moving_share
            mov = [_masked_sum_count(e, m) for e, m in zip(errs, movings)]
            sta = [_masked_sum_count(e, v & ~m) for e, v, m in zip(errs, valids, movings)]
            mov_count = mov[0][1] + mov[1][1]
            mov_mean = (mov[0][0] + mov[1][0]) / mov_count.clamp(min=1.0)
            sta_mean = (sta[0][0] + sta[1][0]) / (sta[0][1] + sta[1][1]).clamp(min=1.0)
            # No moving pixels: the whole term is the static one (flow must be 0 there).
            w_mov = torch.where(mov_count > 0, torch.full_like(mov_mean, share),
                                torch.zeros_like(mov_mean))
            per_sample = w_mov * mov_mean + (1.0 - w_mov) * sta_mean
        return per_sample.mean(), flow_err, flow_err_dyn
