"""The DPM training objective: DUSt3R's confidence-weighted 3D regression over four maps.

For a pair (I_i, I_j) the network predicts four point maps, all in camera i's frame
(``MAP_NAMES`` order: P_i(t_i), P_i(t_j), P_j(t_i), P_j(t_j)). The loss is DUSt3R's
``ConfLoss(Regr3D(L21, norm_mode='avg_dis'), alpha=0.2)`` extended to the four maps, with one
change that matters for a dynamic model: the scale normalisation is computed **once per sample
over all four maps** (one factor for the ground truth, one for the prediction). Separate factors
per map, as DUSt3R computes per pair of views, would rescale P_i(t_j) and P_i(t_i) differently
and destroy the scene flow P_i(t_j) - P_i(t_i) the model is meant to learn.

Per sample b and map m, with valid pixels V_m and normalised points x = X / s:
    err(p)  = || x_pred(p) - x_gt(p) ||_2                            (L21)
    L_m(b)  = mean_{p in V_m} ( w(p) * err(p) - alpha * log conf(p) )  with w = conf
and the loss is sum_m weight_m * mean_b L_m(b). Averaging per sample before the batch keeps
samples with few valid pixels from being drowned out (as V-DPM does).

Two optional terms address the failure mode St4RTrack reports (dpm_spec.md §5.3): confidence
lets the model give up on moving pixels, which costs little because they are few.
``dynamic_weight`` > 0 replaces the learned weight of moving pixels by a fixed
``dynamic_weight * max(conf of static pixels)`` (detached, no log-conf term), and
``flow_weight`` > 0 adds an L21 term on the normalised scene-flow differences
(P_*(t_j) - P_*(t_i)), averaged over valid pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pointmap_ros.errors import ConfigError, InputError
from pointmap_ros.types import MAP_NAMES

__all__ = ['DPMLossConfig', 'DPMLoss', 'shared_norm_factor', 'map_validity']

_EPS = 1e-8


@dataclass
class DPMLossConfig:
    """Settings of :class:`DPMLoss`.

    Attributes:
        alpha: weight of the ``-log conf`` regulariser (DUSt3R: 0.2).
        map_weights: loss weight per map, in ``MAP_NAMES`` order.
        dynamic_weight: St4RTrack-style fixed weight for moving pixels, as a multiple of the
            sample's maximum static confidence; 0 disables it (plain DUSt3R ConfLoss).
        flow_weight: weight of the extra normalised scene-flow L21 term; 0 disables it.
    """

    alpha: float = 0.2
    map_weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    dynamic_weight: float = 0.0
    flow_weight: float = 0.0

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


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sample mean of ``values`` ``[B, H, W]`` over ``mask``; 0 for empty masks."""
    mask = mask.to(values.dtype)
    return (values * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp(min=1.0)


class DPMLoss(torch.nn.Module):
    """Confidence-weighted, shared-scale-normalised regression over the four DPM maps."""

    def __init__(self, config: DPMLossConfig | None = None):
        super().__init__()
        self.config = config or DPMLossConfig()
        self.config.validate()

    def forward(self, pred: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]
                ) -> tuple[torch.Tensor, dict[str, float]]:
        """Compute the loss.

        Args:
            pred: the model output: ``pts_<m>`` ``[B, H, W, 3]`` and ``conf_<m>`` ``[B, H, W]``
                (>= 1) for every m in ``MAP_NAMES``, camera-i frame, arbitrary scale.
            batch: ground truth: ``pts_<m>`` ``[B, H, W, 3]`` (camera-i frame, any unit),
                ``valid_i`` / ``valid_j`` ``[B, H, W]`` bool, and ``motion_i`` / ``motion_j``
                ``[B, H, W]`` bool when ``dynamic_weight`` > 0.

        Returns:
            The scalar loss and a dict of float metrics: ``loss``, ``reg_<m>`` (unweighted mean
            normalised L21 error per map), ``conf_<m>`` (mean confidence) and ``flow_err``.

        Raises:
            InputError: when a prediction and its ground truth differ in shape.
        """
        cfg = self.config
        for name in MAP_NAMES:
            if pred[f'pts_{name}'].shape != batch[f'pts_{name}'].shape:
                raise InputError(
                    f'pts_{name}: prediction shape {tuple(pred[f"pts_{name}"].shape)} != '
                    f'ground-truth shape {tuple(batch[f"pts_{name}"].shape)}', 'size',
                    actual=tuple(pred[f'pts_{name}'].shape),
                    expected=tuple(batch[f'pts_{name}'].shape))
        # The loss is computed in float32 even under autocast: norms and logs of bf16 values
        # are too coarse for the small flow differences the cross-time maps must resolve.
        pts_p = {n: pred[f'pts_{n}'].float() for n in MAP_NAMES}
        pts_g = {n: batch[f'pts_{n}'].float() for n in MAP_NAMES}
        valid = map_validity(batch['valid_i'], batch['valid_j'])
        scale_p = shared_norm_factor(pts_p, valid)[:, None, None, None]
        scale_g = shared_norm_factor(pts_g, valid)[:, None, None, None]
        norm_p = {n: pts_p[n] / scale_p for n in MAP_NAMES}
        norm_g = {n: torch.nan_to_num(pts_g[n]) / scale_g for n in MAP_NAMES}
        if cfg.dynamic_weight > 0:
            motion = map_validity(batch['motion_i'], batch['motion_j'])

        total = torch.zeros((), device=scale_p.device)
        metrics: dict[str, float] = {}
        for name, weight in zip(MAP_NAMES, cfg.map_weights):
            conf = pred[f'conf_{name}'].float()
            err = torch.linalg.vector_norm(norm_p[name] - norm_g[name], dim=-1)
            term = conf * err - cfg.alpha * torch.log(conf)
            if cfg.dynamic_weight > 0:
                dyn = motion[name] & valid[name]
                static_conf = torch.where(valid[name] & ~dyn, conf, torch.zeros_like(conf))
                fixed = cfg.dynamic_weight * static_conf.flatten(1).amax(1).clamp(min=1.0)
                term = torch.where(dyn, fixed.detach()[:, None, None] * err, term)
            map_loss = _masked_mean(term, valid[name]).mean()
            total = total + weight * map_loss
            metrics[f'reg_{name}'] = float(_masked_mean(err.detach(), valid[name]).mean())
            metrics[f'conf_{name}'] = float(_masked_mean(conf.detach(), valid[name]).mean())

        flow_terms = []
        for t_i, t_j in (('i_ti', 'i_tj'), ('j_ti', 'j_tj')):
            flow_p = norm_p[t_j] - norm_p[t_i]
            flow_g = norm_g[t_j] - norm_g[t_i]
            err = torch.linalg.vector_norm(flow_p - flow_g, dim=-1)
            flow_terms.append(_masked_mean(err, valid[t_i]).mean())
        flow_err = 0.5 * (flow_terms[0] + flow_terms[1])
        if cfg.flow_weight > 0:
            total = total + cfg.flow_weight * flow_err
        metrics['flow_err'] = float(flow_err.detach())
        metrics['loss'] = float(total.detach())
        return total, metrics
