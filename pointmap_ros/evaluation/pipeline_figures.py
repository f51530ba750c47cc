"""One picture per evaluated sequence (``pointmap-eval-pipeline --figures DIR``).

What a robotics engineer checks first, in metres: does the mask lie on the moving objects
(three frames, right and wrong pixels coloured), does the camera path follow the true one,
do the published objects sit where the true ones move (top view), and how large is the
scene-flow error against predicting no motion (per frame). Input: the
:class:`~pointmap_ros.evaluation.pipeline_eval.SequenceTrace` of one sequence. matplotlib's
Agg backend (no display needed).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from pointmap_ros.evaluation.pipeline_eval import FrameSnapshot, SequenceScore, SequenceTrace

__all__ = ['sequence_figure', 'save_sequence_figure', 'mask_overlay']

#: Overlay colours (RGB): moving and masked, masked but static, moving but missed.
_HIT, _FALSE, _MISSED = (0, 200, 0), (230, 30, 30), (40, 110, 255)


def mask_overlay(snapshot: FrameSnapshot, opacity: float = 0.55) -> np.ndarray:
    """``[H, W, 3]`` uint8: the image with the published mask's hits in green, its false
    pixels in red and the moving pixels it missed in blue."""
    image = snapshot.image.astype(np.float32)
    layers = ((snapshot.motion & snapshot.motion_true, _HIT),
              (snapshot.motion & ~snapshot.motion_true, _FALSE),
              (~snapshot.motion & snapshot.motion_true, _MISSED))
    for pixels, colour in layers:
        image[pixels] = (1 - opacity) * image[pixels] + opacity * np.float32(colour)
    return np.clip(image, 0, 255).astype(np.uint8)


def _top_view(ax, trace: SequenceTrace) -> None:
    """Camera paths and object positions from above: x (right) against z (forward) of the
    first camera, metres."""
    true_path = np.array(trace.camera_true)
    published = trace.in_metres(np.array(trace.camera))
    ax.plot(true_path[:, 0], true_path[:, 2], 'k-', lw=2, label='camera, true')
    ax.plot(published[:, 0], published[:, 2], '--', color='tab:orange', lw=2,
            label='camera, published')
    if trace.odometry is not None:
        ax.plot(trace.odometry[:, 0], trace.odometry[:, 2], ':', color='0.4', lw=1.5,
                label='camera, odometry')
    palette = ['tab:blue', 'tab:green', 'tab:purple', 'tab:brown', 'tab:pink', 'tab:olive',
               'tab:cyan', 'tab:red']
    colours = {object_id: palette[k % len(palette)]
               for k, object_id in enumerate(sorted(trace.objects_true))}
    for object_id, samples in sorted(trace.objects_true.items()):
        path = np.array([position for _, position in samples])
        ax.plot(path[:, 0], path[:, 2], '-', color=colours[object_id], lw=2.5, alpha=0.6,
                label=f'object {object_id}, true (visible centroid)')
    owners = _track_owners(trace)
    for track_id, samples in sorted(trace.tracks.items()):
        path = trace.in_metres(np.array([position for _, position in samples]))
        owner = owners.get(track_id, 0)
        label = (f'track {track_id} (on object {owner})' if owner
                 else f'track {track_id} (on no moving object)')
        ax.plot(path[:, 0], path[:, 2], 'x', ms=5, color=colours.get(owner, 'black'),
                label=label)
    ax.set_xlabel('x, right (m)')
    ax.set_ylabel('z, forward (m)')
    ax.set_aspect('equal', adjustable='datalim')
    ax.grid(alpha=0.3)
    ax.set_title('Top view, first camera frame (m)')
    ax.legend(fontsize=7, loc='best')


def _track_owners(trace: SequenceTrace) -> dict[int, int]:
    """Track id -> the object it lay on in most of its frames (0 = none)."""
    return {track_id: max(set(owners), key=owners.count)
            for track_id, owners in trace.track_owners.items()}


def _flow_errors(ax, trace: SequenceTrace) -> None:
    """Per frame, the moving pixels' scene-flow error against predicting zero flow, cm."""
    frames = np.array(trace.frames)
    ax.plot(frames, 100 * np.array(trace.moving_zero_m), 'o-', color='0.5',
            label='zero flow (no motion)')
    ax.plot(frames, 100 * np.array(trace.moving_epe_m), 'o-', color='tab:red',
            label='published')
    ax.set_xlabel('frame')
    ax.set_ylabel('mean error (cm per frame gap)')
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.set_title('Scene flow error on moving pixels')
    ax.legend(fontsize=8)


def _mask_scores(ax, trace: SequenceTrace, score: SequenceScore | None) -> None:
    """Per frame motion-mask IoU, and the sequence's scores as text."""
    frames = np.array(trace.frames)
    union = np.array(trace.mask_union, np.float64)
    iou = np.divide(trace.mask_inter, union, out=np.full(len(union), np.nan), where=union > 0)
    ax.plot(frames, iou, 'o-', color='tab:green')
    ax.set_ylim(0, 1.02)
    ax.set_xlabel('frame')
    ax.set_ylabel('motion-mask IoU')
    ax.grid(alpha=0.3)
    ax.set_title('Motion mask per frame')
    if score is not None:
        pooled = score.inter / score.union if score.union else float('nan')
        lines = [f'mask IoU (pooled) {pooled:.3f}',
                 f'objects matched {score.objects_matched} / {score.objects_gt}',
                 f'spurious tracks {score.objects_spurious}']
        if math.isfinite(score.ate_rel):
            lines.append(f'camera ATE / depth {score.ate_rel:.4f}')
        if math.isfinite(score.drift_rel):
            lines.append(f'static drift / depth {score.drift_rel:.4f}')
        ax.text(0.02, 0.03, '\n'.join(lines), transform=ax.transAxes, fontsize=8,
                va='bottom', bbox={'facecolor': 'white', 'alpha': 0.8, 'lw': 0})


def _pyplot():
    """pyplot on the Agg backend (no display)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def sequence_figure(trace: SequenceTrace, title: str, score: SequenceScore | None = None):
    """The matplotlib Figure of one sequence: the first, middle and last output frames
    with the mask overlay (:func:`mask_overlay`) and track ids; the top view; the flow
    error and the mask IoU per frame."""
    from matplotlib.patches import Patch

    fig, axes = _pyplot().subplots(2, 3, figsize=(16, 9.5))
    count = len(trace.snapshots)
    for ax, index in zip(axes[0], sorted({0, count // 2, count - 1})):
        snapshot = trace.snapshots[index]
        ax.imshow(mask_overlay(snapshot))
        for track_id in np.unique(snapshot.track_ids[snapshot.track_ids > 0]):
            rows, columns = np.nonzero(snapshot.track_ids == track_id)
            ax.text(columns.mean(), rows.mean(), f'#{track_id}', color='white', fontsize=9,
                    ha='center', va='center', weight='bold',
                    bbox={'facecolor': 'black', 'alpha': 0.5, 'lw': 0, 'pad': 1})
        union = np.count_nonzero(snapshot.motion | snapshot.motion_true)
        inter = np.count_nonzero(snapshot.motion & snapshot.motion_true)
        iou = f'{inter / union:.2f}' if union else 'n/a'
        ax.set_title(f'frame {snapshot.frame}: mask IoU {iou}')
        ax.axis('off')
    for ax in axes[0][count if count < 3 else 3:]:
        ax.axis('off')
    axes[0][0].legend(handles=[Patch(color=np.array(colour) / 255, label=label) for colour, label
                               in ((_HIT, 'moving, masked'), (_FALSE, 'static, masked'),
                                   (_MISSED, 'moving, missed'))],
                      fontsize=8, loc='lower left')
    _top_view(axes[1][0], trace)
    _flow_errors(axes[1][1], trace)
    _mask_scores(axes[1][2], trace, score)
    fig.suptitle(title, fontsize=13)
    fig.tight_layout()
    return fig


def save_sequence_figure(path: str | Path, trace: SequenceTrace, title: str,
                         score: SequenceScore | None = None, dpi: int = 80) -> Path:
    """Write :func:`sequence_figure` as a PNG; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = sequence_figure(trace, title, score)
    fig.savefig(path, dpi=dpi)
    _pyplot().close(fig)
    return path
