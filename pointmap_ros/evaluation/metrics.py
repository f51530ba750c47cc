"""Accuracy metrics of DPM predictions against exact ground truth, and trivial baselines.

All metrics are computed per pair and then averaged over pairs (IoU is pooled: summed
intersections over summed unions, so pairs without motion do not count as 0 or 1).

Scale alignment (predictions are up to scale): ONE factor per pair for all four maps,
    s = median_{valid p, all four maps} ||X_gt(p)|| / median_{same p} ||X_pred(p)||,
so the relative geometry of the maps, and hence the scene flow, is not altered. Errors are
reported in metres (GT units, after alignment) and in *normalised units*: divided by the pair's
GT mean distance to the origin over all valid points of all four maps (DUSt3R's 'avg_dis', the
normalisation of the training loss and of V-DPM's Table 1).

Per map m: ``pt_<m>`` = mean ||s X_pred - X_gt|| (normalised), ``pt_m_<m>`` (metres).
Depth of view i is z of P_i(t_i); depth of view j is z of P_j(t_j) re-expressed in camera j
with the GT pose. ``absrel_<v>`` = mean |z_pred - z_gt| / z_gt; ``delta_<v>`` = fraction with
max(z_pred / z_gt, z_gt / z_pred) < 1.25 (z_pred <= 0 counts as a miss).
Depth of the moving pixels, what the correspondence pipeline reads its objects' motion from
(its cross-time maps are built from the same-time maps, docs/pipeline.md): ``absrel_dyn_<v>``
over the moving pixels, ``absrel_dyn_kept_<v>`` over those the node's confidence gate keeps
(:class:`ConfidenceGate`), and the kept fractions ``kept_dyn_<v>`` / ``kept_static_<v>`` of
the moving / static pixels.
Scene flow of image v: ``epe_<v>`` / ``epe_m_<v>`` = mean ||s F_pred - F_gt|| over valid pixels
(normalised / metres), ``epe_dyn_<v>`` over moving pixels only.
Motion IoU of image v: the predicted mask is the pipeline's rule (:class:`MotionRule`) applied
to the predicted flow; the GT mask is the generator's ``motion`` mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pointmap_ros.errors import InputError
from pointmap_ros.geometry.pointmap import confidence_mask, vector_norm
from pointmap_ros.geometry.transforms import se3_apply
from pointmap_ros.tracking.segmentation import (flow_noise, motion_threshold,
                                                remove_small_regions, smooth_flow)
from pointmap_ros.types import MAP_NAMES, DynamicPointMaps

__all__ = ['PairTruth', 'MotionRule', 'ConfidenceGate', 'median_scale', 'predicted_motion',
           'view_motion', 'pair_metrics', 'aggregate', 'zero_flow_baseline', 'plane_baseline',
           'BASELINES']

_VIEWS = {'i': ('i_ti', 'i_tj'), 'j': ('j_ti', 'j_tj')}


@dataclass
class PairTruth:
    """Ground truth of one pair, all in camera i's frame, metres.

    Attributes:
        maps: the four GT maps (``DynamicPointMaps``, ``[H, W, 3]`` each).
        valid_i, valid_j: ``[H, W]`` bool pixels with GT.
        motion_i, motion_j: ``[H, W]`` bool moving pixels, or None when unknown.
        T_cami_camj: ``[4, 4]`` pose of camera j in camera i.
        K: ``[3, 3]`` intrinsics (used by the plane baseline).
        dt: time between the frames in seconds (used by the motion rule).
        has_dynamic: False when the cross-time maps are unknown (then only same-time maps and
            depth are evaluated).
    """

    maps: DynamicPointMaps
    valid_i: np.ndarray
    valid_j: np.ndarray
    motion_i: np.ndarray | None
    motion_j: np.ndarray | None
    T_cami_camj: np.ndarray
    K: np.ndarray
    dt: float
    has_dynamic: bool = True

    @classmethod
    def from_generator(cls, gt, K: np.ndarray, dt: float) -> 'PairTruth':
        """From a ``data.scenes.PairGroundTruth``."""
        return cls(gt.maps, gt.valid_i, gt.valid_j, gt.motion_i & gt.valid_i,
                   gt.motion_j & gt.valid_j, np.asarray(gt.T_cami_camj, np.float64),
                   np.asarray(K, np.float64), float(dt))

    def valid(self, name: str) -> np.ndarray:
        return self.valid_i if name.startswith('i') else self.valid_j

    def map_names(self) -> tuple[str, ...]:
        return MAP_NAMES if self.has_dynamic else ('i_ti', 'j_tj')


@dataclass
class MotionRule:
    """The pipeline's motion rule (defaults = ``PipelineConfig``'s; a test keeps them equal).

    threshold = max(speed_rel * depth * dt, min_rel * depth, noise_mult * median |flow|),
    depth = median z of P_i(t_i); when the noise term dominates the flow is box-filtered with
    ``smooth_radius`` first; blobs and holes below ``min_region_frac`` of the image vanish.
    """

    speed_rel: float = 0.01
    min_rel: float = 0.001
    noise_mult: float = 4.0
    smooth_radius: int = 2
    min_region_frac: float = 2e-3


@dataclass
class ConfidenceGate:
    """The node's confidence gate (defaults = ``PipelineConfig``'s; a test keeps them equal):
    a pixel keeps its point when ``conf >= min(threshold, quantile(conf, keep_quantile))``
    (:func:`~pointmap_ros.geometry.pointmap.confidence_mask`)."""

    threshold: float = 3.0
    keep_quantile: float | None = 0.5


def median_scale(pred: DynamicPointMaps, truth: PairTruth) -> float:
    """The single alignment factor s (see module docstring); 1.0 without valid points.

    Raises:
        InputError: when a predicted map's shape differs from its GT.
    """
    gt_d, pr_d = [], []
    for name in truth.map_names():
        if pred.pts(name).shape != truth.maps.pts(name).shape:
            raise InputError(f'pts_{name}: prediction {pred.pts(name).shape} vs ground truth '
                             f'{truth.maps.pts(name).shape}', 'size',
                             actual=pred.pts(name).shape, expected=truth.maps.pts(name).shape)
        valid = truth.valid(name) & np.all(np.isfinite(pred.pts(name)), axis=-1)
        gt_d.append(vector_norm(truth.maps.pts(name)[valid]))
        pr_d.append(vector_norm(pred.pts(name)[valid]))
    gt_d, pr_d = np.concatenate(gt_d), np.concatenate(pr_d)
    if gt_d.size == 0 or np.median(pr_d) <= 0:
        return 1.0
    return float(np.median(gt_d) / np.median(pr_d))


def predicted_motion(flow: np.ndarray, valid: np.ndarray, depth: float, dt: float,
                     rule: MotionRule) -> np.ndarray:
    """``[H, W]`` bool moving pixels from a flow ``[H, W, 3]`` by the pipeline's rule."""
    norm = vector_norm(flow)
    args = (depth, dt, rule.speed_rel, rule.min_rel, rule.noise_mult)
    noise = flow_noise(norm, valid)
    threshold = motion_threshold(noise, *args)
    if rule.smooth_radius and threshold == rule.noise_mult * noise > 0:
        norm = vector_norm(smooth_flow(flow, valid, rule.smooth_radius))
        threshold = motion_threshold(flow_noise(norm, valid), *args)
    min_pixels = max(1, int(rule.min_region_frac * valid.size))
    return remove_small_regions(valid & (norm > threshold), min_pixels) & valid


def view_motion(pred: DynamicPointMaps, truth: PairTruth, view: str, scale: float,
                rule: MotionRule | None = None) -> np.ndarray:
    """Predicted motion mask ``[H, W]`` of image ``view`` ('i' or 'j') from the aligned
    predicted flow; the rule's scene depth is the median aligned predicted z of that image's
    points (the pipeline only has the prediction too)."""
    t_i, t_j = _VIEWS[view]
    flow = scale * (pred.pts(t_j) - pred.pts(t_i))
    valid = truth.valid(t_i) & np.all(np.isfinite(flow), axis=-1)
    if not valid.any():
        return np.zeros(valid.shape, bool)
    depth = scale * float(np.median(pred.pts(t_i)[..., 2][valid]))
    return predicted_motion(flow, valid, depth, truth.dt, rule or MotionRule())


def _depth_metrics(z_pred: np.ndarray, z_gt: np.ndarray) -> tuple[float, float]:
    ok = z_gt > 0
    z_pred, z_gt = z_pred[ok], z_gt[ok]
    if z_gt.size == 0:
        return float('nan'), float('nan')
    absrel = float(np.mean(np.abs(z_pred - z_gt) / z_gt))
    ratio = np.where(z_pred > 0, np.maximum(z_pred / z_gt, z_gt / np.maximum(z_pred, 1e-12)),
                     np.inf)
    return absrel, float(np.mean(ratio < 1.25))


def _moving_depth_metrics(z_pred: np.ndarray, z_gt: np.ndarray, moving: np.ndarray,
                          kept: np.ndarray) -> dict[str, float]:
    """``absrel_dyn``, ``absrel_dyn_kept``, ``kept_dyn``, ``kept_static`` of one view (keys
    without the view suffix) from its valid pixels' depths and masks (all ``[N]``)."""
    kept = kept & np.isfinite(z_pred)
    out = {'absrel_dyn': _depth_metrics(z_pred[moving], z_gt[moving])[0],
           'absrel_dyn_kept': _depth_metrics(z_pred[moving & kept], z_gt[moving & kept])[0]}
    for key, where in (('kept_dyn', moving), ('kept_static', ~moving)):
        out[key] = float(np.mean(kept[where])) if where.any() else float('nan')
    return out


def pair_metrics(pred: DynamicPointMaps, truth: PairTruth,
                 rule: MotionRule | None = None,
                 gate: ConfidenceGate | None = None) -> dict[str, float]:
    """All metrics of one pair (keys listed in the module docstring) plus ``scale`` and the
    IoU parts ``iou_inter_<v>`` / ``iou_union_<v>`` (pixel counts) for :func:`aggregate`."""
    rule, gate = rule or MotionRule(), gate or ConfidenceGate()
    s = median_scale(pred, truth)
    out: dict[str, float] = {'scale': s}
    names = truth.map_names()
    norm = np.mean(np.concatenate([vector_norm(truth.maps.pts(n)[truth.valid(n)])
                                   for n in names]))
    norm = float(norm) if np.isfinite(norm) and norm > 0 else 1.0
    for name in names:
        valid = truth.valid(name)
        err = vector_norm(s * pred.pts(name)[valid] - truth.maps.pts(name)[valid])
        out[f'pt_m_{name}'] = float(np.mean(err)) if err.size else float('nan')
        out[f'pt_{name}'] = out[f'pt_m_{name}'] / norm
    # Depth: view i directly, view j moved into camera j with the GT pose.
    T_j_i = np.linalg.inv(truth.T_cami_camj)
    depths = {'i': (s * pred.pts_i_ti[..., 2][truth.valid_i],
                    truth.maps.pts_i_ti[..., 2][truth.valid_i]),
              'j': (se3_apply(T_j_i, s * pred.pts_j_tj[truth.valid_j])[:, 2],
                    se3_apply(T_j_i, truth.maps.pts_j_tj[truth.valid_j])[:, 2])}
    for view, (z_pred, z_gt) in depths.items():
        out[f'absrel_{view}'], out[f'delta_{view}'] = _depth_metrics(z_pred, z_gt)
        motion_gt = getattr(truth, f'motion_{view}')
        if motion_gt is None:
            continue
        valid = truth.valid(view)
        kept = confidence_mask(pred.conf(f'{view}_t{view}'), gate.threshold,
                               gate.keep_quantile)
        for key, value in _moving_depth_metrics(z_pred, z_gt, motion_gt[valid],
                                                kept[valid]).items():
            out[f'{key}_{view}'] = value
    if not truth.has_dynamic:
        return out
    for view, (t_i, t_j) in _VIEWS.items():
        valid = truth.valid(t_i)
        flow_p = s * (pred.pts(t_j) - pred.pts(t_i))
        flow_g = truth.maps.pts(t_j) - truth.maps.pts(t_i)
        err = vector_norm(flow_p - flow_g)
        out[f'epe_m_{view}'] = float(np.mean(err[valid])) if valid.any() else float('nan')
        out[f'epe_{view}'] = out[f'epe_m_{view}'] / norm
        motion_gt = getattr(truth, f'motion_{view}')
        if motion_gt is None:
            continue
        dyn = valid & motion_gt
        out[f'epe_dyn_{view}'] = float(np.mean(err[dyn])) / norm if dyn.any() else float('nan')
        motion_p = view_motion(pred, truth, view, s, rule)
        out[f'iou_inter_{view}'] = float(np.count_nonzero(motion_p & dyn))
        out[f'iou_union_{view}'] = float(np.count_nonzero((motion_p | dyn) & valid))
    return out


def aggregate(rows: list[dict[str, float]]) -> dict[str, float]:
    """Mean of every metric over pairs (NaN-aware); pooled IoU ``iou_<v>`` and ``iou``.

    Also adds view averages: ``absrel``, ``delta``, ``epe``, ``epe_m``, ``epe_dyn`` and the
    moving pixels' ``absrel_dyn``, ``absrel_dyn_kept``, ``kept_dyn``, ``kept_static``.
    """
    keys = sorted({k for r in rows for k in r if not k.startswith('iou_')})
    out = {}
    for key in keys:
        values = np.array([r.get(key, np.nan) for r in rows], dtype=np.float64)
        out[key] = float(np.nanmean(values)) if np.isfinite(values).any() else float('nan')
    inter_all = union_all = 0.0
    for view in _VIEWS:
        inter = sum(r.get(f'iou_inter_{view}', 0.0) for r in rows)
        union = sum(r.get(f'iou_union_{view}', 0.0) for r in rows)
        if any(f'iou_union_{view}' in r for r in rows):
            out[f'iou_{view}'] = inter / union if union > 0 else float('nan')
        inter_all, union_all = inter_all + inter, union_all + union
    if union_all > 0:
        out['iou'] = inter_all / union_all
    for base in ('absrel', 'delta', 'epe', 'epe_m', 'epe_dyn', 'absrel_dyn', 'absrel_dyn_kept',
                 'kept_dyn', 'kept_static'):
        vals = [out[f'{base}_{v}'] for v in _VIEWS if f'{base}_{v}' in out]
        if vals:
            out[base] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float('nan')
    return out


# -- trivial baselines: predictions built from ground truth ----------------------------------
def zero_flow_baseline(truth: PairTruth) -> DynamicPointMaps:
    """Exact same-time geometry, no motion: P_i(t_j) := P_i(t_i), P_j(t_i) := P_j(t_j).

    Its flow is zero and its motion mask empty ('everything static'); it isolates what the
    cross-time maps add.
    """
    m = truth.maps
    ones_i, ones_j = np.ones(truth.valid_i.shape, np.float32), np.ones(truth.valid_j.shape,
                                                                         np.float32)
    return DynamicPointMaps(m.pts_i_ti, m.pts_i_ti.copy(), m.pts_j_tj.copy(), m.pts_j_tj,
                            ones_i, ones_i, ones_j, ones_j, metric=True)


def plane_baseline(truth: PairTruth) -> DynamicPointMaps:
    """A fronto-parallel plane per view at that view's median GT depth, no motion.

    Image i's plane is ``d_i K^-1 [u, v, 1]`` in camera i; image j's is built in camera j and
    moved into camera i with the GT pose (so the baseline gets intrinsics and pose for free).
    """
    H, W = truth.valid_i.shape
    u, v = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    rays = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(truth.K).T
    d_i = np.median(truth.maps.pts_i_ti[..., 2][truth.valid_i]) if truth.valid_i.any() else 1.0
    z_j = se3_apply(np.linalg.inv(truth.T_cami_camj), truth.maps.pts_j_tj[truth.valid_j])[:, 2]
    d_j = np.median(z_j) if z_j.size else 1.0
    plane_i = (d_i * rays).astype(np.float32)
    plane_j = se3_apply(truth.T_cami_camj, d_j * rays).astype(np.float32)
    ones = np.ones((H, W), np.float32)
    return DynamicPointMaps(plane_i, plane_i.copy(), plane_j.copy(), plane_j,
                            ones, ones, ones, ones, metric=True)


#: name -> function building the baseline's maps from the ground truth.
BASELINES = {'zero_flow': zero_flow_baseline, 'plane': plane_baseline}
