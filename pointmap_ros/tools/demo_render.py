"""Pictures of a demo run: ``summary.png`` (whole run) and ``summary.gif`` (frame by frame).

Each picture has two panels: the camera image (rebuilt from the cloud's ``rgb`` field) with
the pixels of tracked objects tinted by track colour and other moving pixels (``motion_mask``:
moving, not, or not yet, part of a published track) in red, and a top-down view of the
world frame (x right, z forward: the first camera's optical frame seen from above) with the
static reconstruction, the moving points coloured by track, the object tracks with their ids
and the estimated camera trajectory. Inputs are the messages the demo recorded, decoded by
declared fields.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pointmap_ros.ros.conversions import cloud_to_array, image_to_array, stamp_to_ns, unpack_rgb
from pointmap_ros.ros.markers import track_color

__all__ = ['render_summary']

_MOVING_RGB = (0.9, 0.1, 0.1)  # moving pixels outside any published track
_SUBSAMPLE = 3  # every n-th pixel of a cloud in the top-down view (readability and speed)


def _colour(track_id: int) -> tuple[float, float, float]:
    c = track_color(track_id)
    return c.r, c.g, c.b


def _frames(received) -> list[dict]:
    """Per output frame: world points, colours, validity and instance ids, by stamp."""
    ids = {stamp: image_to_array(msg) for stamp, msg in received['instance_ids']}
    masks = {stamp: image_to_array(msg) > 0 for stamp, msg in received['motion_mask']}
    frames = []
    for stamp, msg in received['points']:
        if stamp not in ids:
            continue
        arr = cloud_to_array(msg)
        xyz = np.stack([arr['x'], arr['y'], arr['z']], axis=-1)
        frames.append({'stamp': stamp, 'xyz': xyz, 'rgb': unpack_rgb(arr['rgb']),
                       'valid': np.isfinite(xyz).all(-1), 'ids': ids[stamp],
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


def _draw(axes, frame, static, tracks, camera, limits) -> None:
    ax_img, ax_top = axes
    ax_img.clear()
    ax_top.clear()
    image = frame['rgb'].astype(np.float32) / 255.0
    untracked = frame['moving'] & (frame['ids'] == 0)
    image[untracked] = 0.45 * image[untracked] + 0.55 * np.array(_MOVING_RGB)
    for tid in np.unique(frame['ids'][frame['ids'] > 0]):
        sel = frame['ids'] == tid
        image[sel] = 0.45 * image[sel] + 0.55 * np.array(_colour(int(tid)))
    ax_img.imshow(image)
    ax_img.set_title(f"camera, t = {frame['stamp'] * 1e-9:.2f} s\n(moving: red; tracked "
                     'objects: track colour)')
    ax_img.axis('off')

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
    ax_top.set_xlabel('x (right)')
    ax_top.set_ylabel('z (forward)')
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
    step = (slice(None, None, _SUBSAMPLE),) * 2
    keep = [(f['xyz'][step][m], f['rgb'][step][m] / 255.0)
            for f in frames for m in [(f['valid'] & (f['ids'] == 0))[step]]]
    static = (np.concatenate([k[0] for k in keep]), np.concatenate([k[1] for k in keep]))
    lo, hi = np.percentile(static[0], [2, 98], axis=0)
    pad = 0.1 * (hi - lo)
    limits = ((lo[0] - pad[0], hi[0] + pad[0]), (min(lo[2] - pad[2], 0.0), hi[2] + pad[2]))

    fig, axes = plt.subplots(1, 2, figsize=(12, 5.5), gridspec_kw={'width_ratios': [1, 1.2]})
    _draw(axes, frames[-1], static, tracks, camera, limits)
    fig.tight_layout()
    png = Path(out) / 'summary.png'
    fig.savefig(png, dpi=110)

    def update(k):  # each GIF frame shows that frame's own static points
        _draw(axes, frames[k], keep[k], tracks, camera, limits)

    gif = Path(out) / 'summary.gif'
    FuncAnimation(fig, update, frames=len(frames)).save(gif, writer=PillowWriter(fps=4),
                                                        dpi=70)
    plt.close(fig)
    return [png, gif]
