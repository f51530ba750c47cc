"""Evaluation report: Markdown tables (model next to the trivial baselines) and figures.

Tables take the aggregated metric dicts of :func:`pointmap_ros.evaluation.metrics.aggregate`
for the model and for every baseline of ``metrics.BASELINES``. Figures use matplotlib's Agg
backend (no display needed).
"""

from __future__ import annotations

import math
import os

import numpy as np

from pointmap_ros.types import MAP_NAMES, DynamicPointMaps

__all__ = ['TARGETS', 'target_rows', 'markdown_report', 'save_pair_figure']

_MAP_LABELS = {'i_ti': 'P_i(t_i)', 'i_tj': 'P_i(t_j)', 'j_ti': 'P_j(t_i)', 'j_tj': 'P_j(t_j)'}

#: The issue's targets for the shipped model: (metric key, label, comparison, threshold,
#: baseline the threshold is relative to or None for an absolute threshold).
TARGETS = (
    ('epe', 'scene-flow EPE (normalised, all valid pixels)', '<=', 0.30, 'zero_flow'),
    ('iou', 'motion-mask IoU', '>=', 0.70, None),
    ('absrel', 'depth AbsRel', '<=', 0.10, None),
)


def _fmt(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return 'n/a'
    return f'{value:.{digits}f}'


def _row(cells: list[str]) -> str:
    return '| ' + ' | '.join(cells) + ' |'


def target_rows(model: dict, baselines: dict[str, dict]) -> list[dict]:
    """One dict per target: label, model value, the threshold in absolute terms, met or not."""
    rows = []
    for key, label, op, threshold, base in TARGETS:
        value = model.get(key, float('nan'))
        limit = threshold * baselines[base].get(key, float('nan')) if base else threshold
        ok = math.isfinite(value) and math.isfinite(limit) and (
            value <= limit if op == '<=' else value >= limit)
        rule = f'{op} {threshold:.2f} x {base} ({_fmt(limit)})' if base else f'{op} {threshold}'
        rows.append({'key': key, 'label': label, 'value': value, 'limit': limit, 'rule': rule,
                     'met': bool(ok)})
    return rows


def markdown_report(title: str, model: dict, baselines: dict[str, dict], info: dict) -> str:
    """The Markdown report.

    Args:
        title: heading (e.g. the checkpoint name).
        model: aggregated metrics of the model.
        baselines: baseline name -> aggregated metrics (keys 'zero_flow' and 'plane').
        info: data description lines, name -> value (pairs, seeds, resolution...).
    """
    zf, pl = baselines['zero_flow'], baselines['plane']
    lines = [f'# {title}', '']
    lines += [f'- {k}: {v}' for k, v in info.items()]
    lines += ['', '## Targets', '', _row(['metric', 'model', 'target', 'met']),
              _row(['---'] * 4)]
    for row in target_rows(model, baselines):
        lines.append(_row([row['label'], _fmt(row['value']), row['rule'],
                           'yes' if row['met'] else 'no']))
    lines += ['', '## Point maps (error after median-scale alignment)', '',
              _row(['map', 'model (norm.)', 'model (m)', 'plane (norm.)',
                    'zero flow (norm.)']), _row(['---'] * 5)]
    for m in MAP_NAMES:
        if f'pt_{m}' in model:
            lines.append(_row([_MAP_LABELS[m], _fmt(model[f'pt_{m}']), _fmt(model[f'pt_m_{m}']),
                               _fmt(pl.get(f'pt_{m}')), _fmt(zf.get(f'pt_{m}'))]))
    lines += ['', '## Depth', '',
              _row(['view', 'AbsRel', 'δ<1.25', 'plane AbsRel', 'plane δ<1.25']),
              _row(['---'] * 5)]
    for v in ('i', 'j', ''):
        s = f'_{v}' if v else ''
        lines.append(_row([v or 'mean', _fmt(model.get('absrel' + s)),
                           _fmt(model.get('delta' + s)), _fmt(pl.get('absrel' + s)),
                           _fmt(pl.get('delta' + s))]))
    if 'absrel_dyn' in model:
        # The correspondence pipeline builds its cross-time maps from these depths, so they
        # bound the flow it can publish with a checkpoint (docs/evaluation.md, session 26).
        lines += ['', '## Depth of the moving pixels (what correspondences read)', '',
                  _row(['view', 'AbsRel moving', 'AbsRel moving, gate-kept',
                        'moving kept by the gate', 'static kept by the gate']),
                  _row(['---'] * 5)]
        for v in ('i', 'j', ''):
            s = f'_{v}' if v else ''
            lines.append(_row([v or 'mean', _fmt(model.get('absrel_dyn' + s)),
                               _fmt(model.get('absrel_dyn_kept' + s)),
                               _fmt(model.get('kept_dyn' + s), 3),
                               _fmt(model.get('kept_static' + s), 3)]))
    if 'epe' in model:
        lines += ['', '## Scene flow and motion', '',
                  _row(['image', 'EPE (norm.)', 'EPE (m)', 'EPE moving px (norm.)',
                        'zero-flow EPE (norm.)', 'zero-flow EPE (m)',
                        'zero-flow moving (norm.)', 'IoU', 'all-static IoU']),
                  _row(['---'] * 9)]
        for v in ('i', 'j', ''):
            s = f'_{v}' if v else ''
            lines.append(_row([v or 'mean', _fmt(model.get('epe' + s)),
                               _fmt(model.get('epe_m' + s)), _fmt(model.get('epe_dyn' + s)),
                               _fmt(zf.get('epe' + s)), _fmt(zf.get('epe_m' + s)),
                               _fmt(zf.get('epe_dyn' + s)), _fmt(model.get('iou' + s), 3),
                               _fmt(zf.get('iou' + s), 3)]))
    lines += ['', 'Normalised units: divided by the pair\'s mean GT distance to camera i. '
              'Baselines: *zero flow* = exact GT geometry with no motion (its motion mask is '
              'empty: "everything static"); *plane* = a fronto-parallel plane at the median GT '
              'depth of each view (given GT intrinsics and pose). See docs/evaluation.md.', '']
    return '\n'.join(lines)


def save_pair_figure(path: str, rgb_i: np.ndarray, pred: DynamicPointMaps,
                     gt: DynamicPointMaps, valid_i: np.ndarray, motion_gt: np.ndarray,
                     motion_pred: np.ndarray, scale: float, title: str = '') -> str:
    """One figure for one pair: image i, GT / predicted motion masks, depth, and the point
    clouds P_i(t_i) (GT and aligned prediction) coloured by scene-flow magnitude.

    Args:
        rgb_i: ``[H, W, 3]`` uint8 image i.
        pred, gt: predicted (model units) and GT (metres) maps, camera-i frame.
        valid_i, motion_gt, motion_pred: ``[H, W]`` bool.
        scale: the median-scale alignment factor applied to ``pred``.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(16, 7))
    flow_gt = np.linalg.norm(gt.flow_i(), axis=-1)
    flow_pr = np.linalg.norm(scale * pred.flow_i(), axis=-1)
    vmax = max(float(np.percentile(flow_gt[valid_i], 99)) if valid_i.any() else 0.0, 1e-6)
    z_gt = np.where(valid_i, gt.pts_i_ti[..., 2], np.nan)
    z_pr = np.where(valid_i, scale * pred.pts_i_ti[..., 2], np.nan)
    panels = [('image i', rgb_i, {}), ('GT motion', motion_gt, {'cmap': 'gray'}),
              ('predicted motion', motion_pred, {'cmap': 'gray'}),
              ('GT depth (m)', z_gt, {'cmap': 'viridis', 'vmin': np.nanmin(z_gt),
                                      'vmax': np.nanmax(z_gt)}),
              ('predicted depth (aligned)', z_pr, {'cmap': 'viridis', 'vmin': np.nanmin(z_gt),
                                                   'vmax': np.nanmax(z_gt)}),
              ('|flow| GT / pred (m)', np.concatenate([flow_gt, flow_pr], axis=1),
               {'cmap': 'magma', 'vmin': 0, 'vmax': vmax})]
    for k, (name, img, kw) in enumerate(panels):
        ax = fig.add_subplot(2, 4, k + 1 if k < 3 else k + 2)
        ax.imshow(img, **kw)
        ax.set_title(name, fontsize=9)
        ax.axis('off')
    for k, (name, pts, mag) in enumerate((('GT P_i(t_i)', gt.pts_i_ti, flow_gt),
                                          ('predicted P_i(t_i)', scale * pred.pts_i_ti,
                                           flow_pr))):
        ax = fig.add_subplot(2, 4, 4 if k == 0 else 8, projection='3d')
        sel = valid_i.copy()
        sel[::2, :] = False  # subsample for a readable, fast scatter
        p = pts[sel]
        # Optical frame -> plot axes: x right, z forward (depth), -y up.
        ax.scatter(p[:, 0], p[:, 2], -p[:, 1], c=mag[sel], cmap='magma', vmin=0, vmax=vmax,
                   s=1)
        ax.set_title(f'{name}, colour = |flow|', fontsize=9)
        ax.set_xlabel('x')
        ax.set_ylabel('z')
        ax.set_zlabel('-y')
        ax.view_init(elev=20, azim=-70)
    fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
