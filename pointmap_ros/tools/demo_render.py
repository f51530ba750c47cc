"""Pictures of a demo run: ``summary.png`` (whole run) and ``summary.gif`` (frame by frame).

The camera images (rebuilt from the cloud's ``rgb`` field) have the pixels of tracked
objects tinted by track colour and other moving pixels (``motion_mask``: moving, not, or
not yet, part of a published track) in red; ``summary.png`` shows four of them, evenly spaced
over the run and ending with the last (one frame shows a moment; motion decisions vary from
frame to frame, e.g. right after a keyframe switch), next to the last frame's top-down view
of the world frame (x right, z forward: the first camera's optical frame seen from above)
with the static reconstruction, the moving points coloured by track, the object tracks with
their ids and the estimated camera trajectory. Inputs are the messages the demo recorded,
decoded by declared fields.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pointmap_ros.ros.conversions import cloud_to_array, image_to_array, stamp_to_ns, unpack_rgb
from pointmap_ros.ros.markers import track_color

__all__ = ['render_summary', 'has_metric_scale']

_MOVING_RGB = (0.9, 0.1, 0.1)  # moving pixels outside any published track
_SUBSAMPLE = 3  # every n-th pixel of a cloud in the top-down view (readability and speed)


def _colour(track_id: int) -> tuple[float, float, float]:
    c = track_color(track_id)
    return c.r, c.g, c.b


def has_metric_scale(received) -> bool:
    """Whether the node's lengths were metres (a metric scale from odometry, depth or a
    metric model), from the recorded object messages."""
    return any(msg.metric_scale for _, msg in received['objects'])


def _frames(received) -> list[dict]:
    """Per output frame: world points, colours, validity, instance ids and motion mask, by
    stamp, with the seconds since the run's first output."""
    ids = {stamp: image_to_array(msg) for stamp, msg in received['instance_ids']}
    masks = {stamp: image_to_array(msg) > 0 for stamp, msg in received['motion_mask']}
    frames = []
    first = min((stamp for stamp, _ in received['points']), default=0)
    for stamp, msg in received['points']:
        if stamp not in ids:
            continue
        arr = cloud_to_array(msg)
        xyz = np.stack([arr['x'], arr['y'], arr['z']], axis=-1)
        frames.append({'stamp': stamp, 'elapsed_s': (stamp - first) * 1e-9, 'xyz': xyz,
                       'rgb': unpack_rgb(arr['rgb']), 'valid': np.isfinite(xyz).all(-1),
                       'ids': ids[stamp],
                       'moving': masks.get(stamp, np.zeros(ids[stamp].shape, bool))})
    return frames


def _tracks(received) -> tuple[dict, list]:
    """Object tracks ``{id: [(stamp, [3])]}`` and the estimated camera path from /tf."""
    objects = {}
    for stamp, msg in received['objects']:
        for obj in msg.objects:
            p = obj.pose.position
            objects.setdefault(obj.id, []).append((stamp, np.array([p.x, p.y, p.z])))
    camera = []
    for _, msg in received['tf']:
        for tr in msg.transforms:
            if tr.child_frame_id.endswith('_estimated'):
                t = tr.transform.translation
                camera.append((stamp_to_ns(tr.header.stamp), np.array([t.x, t.y, t.z])))
    return objects, sorted(camera, key=lambda item: item[0])


def _draw(axes, frame, static, tracks, camera, limits, units) -> None:
    ax_img, ax_top = axes
    _draw_camera(ax_img, frame)
    _draw_top(ax_top, frame, static, tracks, camera, limits, units)


def _draw_camera(ax_img, frame) -> None:
    """The camera image with moving pixels tinted (red, or the track's colour)."""
    ax_img.clear()
    image = frame['rgb'].astype(np.float32) / 255.0
    untracked = frame['moving'] & (frame['ids'] == 0)
    image[untracked] = 0.45 * image[untracked] + 0.55 * np.array(_MOVING_RGB)
    for tid in np.unique(frame['ids'][frame['ids'] > 0]):
        sel = frame['ids'] == tid
        image[sel] = 0.45 * image[sel] + 0.55 * np.array(_colour(int(tid)))
    ax_img.imshow(image)
    ax_img.set_title(f"camera, {frame['elapsed_s']:.1f} s into the run\n(moving: red; "
                     'tracked objects: track colour)')
    ax_img.axis('off')


def _draw_top(ax_top, frame, static, tracks, camera, limits, units) -> None:
    """Top-down view: static points, the frame's moving points, tracks, camera path."""
    ax_top.clear()
    xyz, rgb = static
    ax_top.scatter(xyz[:, 0], xyz[:, 2], s=1, c=rgb, alpha=0.35, linewidths=0)
    step = (slice(None, None, _SUBSAMPLE),) * 2
    moving = (frame['ids'] > 0) & frame['valid']
    pts, ids = frame['xyz'][step][moving[step]], frame['ids'][step][moving[step]]
    ax_top.scatter(pts[:, 0], pts[:, 2], s=4, c=[_colour(int(i)) for i in ids], linewidths=0)
    for tid, seq in tracks.items():
        path = np.array([p for s, p in seq if s <= frame['stamp']])
        if len(path):
            ax_top.plot(path[:, 0], path[:, 2], '-', color=_colour(tid), lw=2)
            ax_top.plot(path[-1, 0], path[-1, 2], 'o', color=_colour(tid), ms=6)
            ax_top.annotate(f'#{tid}', (path[-1, 0], path[-1, 2]), xytext=(4, 4),
                            textcoords='offset points', fontsize=9, color=_colour(tid))
    cam = np.array([p for s, p in camera if s <= frame['stamp']])
    if len(cam):
        ax_top.plot(cam[:, 0], cam[:, 2], 'k-', lw=1.5)
        ax_top.plot(cam[-1, 0], cam[-1, 2], 'k^', ms=7, label='camera (estimated)')
        ax_top.legend(loc='lower right', fontsize=8)
    ax_top.set_xlim(*limits[0])
    ax_top.set_ylim(*limits[1])
    ax_top.set_aspect('equal')
    ax_top.set_xlabel(f'x (right), {units}')
    ax_top.set_ylabel(f'z (forward), {units}')
    ax_top.set_title('top-down: reconstruction, moving points, object tracks')


def render_summary(received, out: Path) -> list[Path]:
    """Write ``summary.png`` and ``summary.gif`` into ``out``; returns their paths."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.animation import FuncAnimation, PillowWriter

    frames = _frames(received)
    if not frames:
        return []
    tracks, camera = _tracks(received)
    units = 'm' if has_metric_scale(received) else 'model units'
    step = (slice(None, None, _SUBSAMPLE),) * 2
    keep = [(f['xyz'][step][m], f['rgb'][step][m] / 255.0)
            for f in frames for m in [(f['valid'] & (f['ids'] == 0))[step]]]
    static = (np.concatenate([k[0] for k in keep]), np.concatenate([k[1] for k in keep]))
    lo, hi = np.percentile(static[0], [2, 98], axis=0)
    pad = 0.1 * (hi - lo)
    limits = ((lo[0] - pad[0], hi[0] + pad[0]), (min(lo[2] - pad[2], 0.0), hi[2] + pad[2]))

    png = Path(out) / 'summary.png'
    summary = plt.figure(figsize=(15, 6.5))
    grid = summary.add_gridspec(2, 3, width_ratios=[1, 1, 1.6])
    shown = sorted({round(len(frames) * q) - 1 for q in (0.25, 0.5, 0.75, 1.0)} - {-1})
    for slot, index in enumerate(shown):
        _draw_camera(summary.add_subplot(grid[slot // 2, slot % 2]), frames[index])
    _draw_top(summary.add_subplot(grid[:, 2]), frames[-1], static, tracks, camera, limits,
              units)
    summary.tight_layout()
    summary.savefig(png, dpi=100)
    plt.close(summary)

    fig, axes = plt.subplots(1, 2, figsize=(12, 5.5), gridspec_kw={'width_ratios': [1, 1.2]})

    def update(k):  # each GIF frame shows that frame's own static points
        _draw(axes, frames[k], keep[k], tracks, camera, limits, units)

    gif = Path(out) / 'summary.gif'
    FuncAnimation(fig, update, frames=len(frames)).save(gif, writer=PillowWriter(fps=4),
                                                        dpi=70)
    plt.close(fig)
    return [png, gif]
