"""``pointmap-run-video``: run the 4D pipeline on video files and write a figure + JSON each.

For every ``VIDEO`` the frames are decoded (:mod:`pointmap_ros.data.video`), fed through
:class:`~pointmap_ros.pipeline.DynamicReconPipeline` with no intrinsics (the pipeline estimates
the focal) and summarised in ``<out>/<stem>.json`` (frames, ms per frame per stage, finite
fraction, estimated focal, tracks) and ``<out>/<stem>.png`` (for up to three frames: input,
depth, confidence, motion mask, point cloud coloured by scene-flow magnitude).

Example (the clips of ``shared/data/real_videos``, shipped model, CPU)::

    pointmap-run-video ../shared/data/real_videos/*.mp4 --backend torch --out /tmp/rv
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from pointmap_ros.assets import SHIPPED_MODEL
from pointmap_ros.data.video import VideoInfo, iter_video, probe_video
from pointmap_ros.errors import PointmapError
from pointmap_ros.pipeline import DynamicReconPipeline, FrameInput, PipelineConfig
from pointmap_ros.pipeline.correspondence import CROSS_TIME_SOURCES

__all__ = ['main', 'run_clip', 'plot_clip', 'summarise']

logger = logging.getLogger(__name__)

#: The oracle backend serves synthetic ground truth, which does not exist for a real video.
BACKENDS = ('auto', 'torch', 'onnxruntime', 'tensorrt')
_SCATTER_POINTS = 6000


def run_clip(pipe: DynamicReconPipeline, path, *, fps: float | None = None, stride: int = 1,
             max_frames: int | None = None, progress: bool = True
             ) -> tuple[VideoInfo, list, dict]:
    """Feed one video through ``pipe`` (camera id: the file's stem).

    Returns:
        ``(container info, PipelineOutput list, run statistics)``; the statistics hold
        ``frames`` (decoded), ``decode_ms`` per frame, ``wall_s`` and ``dropped`` (error
        class and reason -> count of frames ``process`` rejected).
    """
    from tqdm import tqdm

    info = probe_video(path)
    total = None  # for the progress bar only
    if info.frame_count > 0:
        total = -(-info.frame_count // stride)  # ceil: frames 0, stride, 2 stride, ...
        total = min(total, max_frames) if max_frames else total
    outputs, dropped, decode_s, n = [], {}, 0.0, 0
    start = time.perf_counter()
    frames = iter_video(path, fps=fps, stride=stride, max_frames=max_frames)
    with tqdm(total=total, desc=Path(path).stem, unit='frame', disable=not progress) as bar:
        while True:
            t0 = time.perf_counter()
            frame = next(frames, None)
            decode_s += time.perf_counter() - t0
            if frame is None:
                break
            n += 1
            try:
                out = pipe.process(FrameInput(image=frame.image, stamp=frame.stamp,
                                              camera_id=Path(path).stem))
            except PointmapError as exc:  # counted and dropped, as the node does
                key = f'{type(exc).__name__}:{getattr(exc, "reason", "")}'
                dropped[key] = dropped.get(key, 0) + 1
                logger.warning('%s frame %d dropped: %s', path, frame.index, exc)
                out = None
            if out is not None:
                outputs.append(out)
            bar.update(1)
    stats = {'frames': n, 'decode_ms': 1e3 * decode_s / max(n, 1),
             'wall_s': time.perf_counter() - start, 'dropped': dropped}
    return info, outputs, stats


def summarise(info: VideoInfo, outputs: list, stats: dict, engine_info: dict) -> dict:
    """JSON-ready summary of one clip's run (numbers are means over output frames)."""
    summary = {
        'video': info.path.name,
        'container': {'fps': info.fps, 'frame_count': info.frame_count,
                      'width': info.width, 'height': info.height},
        'engine': {k: v for k, v in engine_info.items()
                   if isinstance(v, (str, int, float, bool, type(None), tuple, list))},
        'frames_decoded': stats['frames'], 'frames_output': len(outputs),
        'frames_dropped': stats['dropped'], 'wall_s': round(stats['wall_s'], 3),
        'ms_per_frame': {'decode': round(stats['decode_ms'], 2)},
    }
    if not outputs:
        return summary
    H, W = outputs[0].image.shape[:2]
    # Stages a frame did not run (``beside_inference`` needs two pairs) are averaged over
    # the frames that ran them.
    for stage in dict.fromkeys(stage for o in outputs for stage in o.timings_ms):
        summary['ms_per_frame'][stage] = round(float(np.nanmean(
            [o.timings_ms.get(stage, np.nan) for o in outputs])), 2)
    focal = float(outputs[-1].K[0, 0])
    # Preprocessing scales by max(H/h, W/w) before cropping: undo it for the clip's own focal.
    scale = max(H / info.height, W / info.width)
    tracks = {obj.track_id for o in outputs for obj in o.objects}
    summary.update({
        'model_resolution': [H, W],
        'finite_fraction': round(float(np.mean(
            [np.isfinite(o.points_cam).all(-1).mean() for o in outputs])), 4),
        'valid_fraction': round(float(np.mean([o.valid.mean() for o in outputs])), 4),
        'median_confidence': round(float(np.mean(
            [np.median(o.confidence[o.valid]) for o in outputs if o.valid.any()])), 3),
        'motion_fraction': round(float(np.mean([o.motion_mask.mean() for o in outputs])), 4),
        'focal_px': round(focal, 2), 'focal_over_width': round(focal / W, 3),
        'focal_px_original': round(focal / scale, 1),
        'intrinsics_estimated': bool(outputs[-1].intrinsics_estimated),
        'keyframes': len({o.keyframe_index for o in outputs}),
        'num_tracks': len(tracks),
        'max_objects_per_frame': max(len(o.objects) for o in outputs),
    })
    return summary


def plot_clip(outputs: list, path, title: str = '', rows: int = 3) -> Path:
    """Write a figure of up to ``rows`` evenly spaced outputs (first ... last) to ``path``.

    Columns: input (model resolution), depth z, confidence, motion mask over the image, and a
    bird's-eye (x, z) scatter of the valid points coloured by scene-flow magnitude.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    picks = sorted(set(np.linspace(0, len(outputs) - 1, min(rows, len(outputs))).astype(int)))
    fig, axes = plt.subplots(len(picks), 5, figsize=(19, 3.2 * len(picks)), squeeze=False)
    rng = np.random.default_rng(0)
    for row, k in zip(axes, picks):
        o = outputs[k]
        z = np.where(o.valid, o.points_cam[..., 2], np.nan)
        speed = np.linalg.norm(o.flow, axis=-1)
        row[0].imshow(o.image)
        row[0].set_title(f'frame {o.frame_index}  t={o.stamp:.2f}s')
        _colour(fig, row[1], row[1].imshow(z, cmap='turbo'), 'depth z (model units)')
        _colour(fig, row[2], row[2].imshow(o.confidence, cmap='viridis'), 'confidence')
        overlay = o.image.astype(np.float32) * 0.5
        overlay[o.motion_mask] = [255, 40, 40]
        row[3].imshow(overlay.astype(np.uint8))
        row[3].set_title(f'motion {100 * o.motion_mask.mean():.1f}%, {len(o.objects)} objects')
        sel = np.flatnonzero(o.valid.ravel() & np.isfinite(speed.ravel()))
        sel = rng.choice(sel, min(sel.size, _SCATTER_POINTS), replace=False)
        pts = o.points_cam.reshape(-1, 3)[sel]
        speeds = speed.ravel()[sel]
        # A magnitude: the scale starts at 0 (on a frame without flow matplotlib would
        # centre it on 0, showing negative speeds).
        top = float(speeds.max()) if speeds.size else 0.0
        sc = row[4].scatter(pts[:, 0], pts[:, 2], c=speeds, s=1, cmap='magma', vmin=0.0,
                            vmax=max(top, 1e-3))
        row[4].set_xlabel('x (right)')
        row[4].set_ylabel('z (forward)')
        row[4].set_aspect('equal', adjustable='datalim')
        _colour(fig, row[4], sc, 'top view, |flow| (units/s)')
        for ax in row[:4]:
            ax.set_axis_off()
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _colour(fig, ax, mappable, title: str) -> None:
    fig.colorbar(mappable, ax=ax, fraction=0.046, pad=0.02)
    ax.set_title(title)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='pointmap-run-video', description=__doc__.splitlines()[0])
    p.add_argument('videos', nargs='+', type=Path, metavar='VIDEO')
    p.add_argument('--backend', choices=BACKENDS, default='torch')
    p.add_argument('--checkpoint', type=Path, default=SHIPPED_MODEL,
                   help='our checkpoint (.safetensors/.json); default: the shipped model')
    p.add_argument('--onnx-dir', type=Path, help='ONNX export for onnxruntime/tensorrt')
    p.add_argument('--cache-dir', type=Path,
                   help='where ONNX exports made on demand are kept (default: user cache)')
    p.add_argument('--device', help="'cpu', 'cuda', ...; default: the backend decides")
    p.add_argument('--size', type=int, nargs=2, metavar=('H', 'W'),
                   help="model resolution; default the checkpoint's native img_size")
    p.add_argument('--cross-time-source', choices=CROSS_TIME_SOURCES, default='auto',
                   help='cross-time maps: the network, optical-flow correspondences, both')
    p.add_argument('--out', type=Path, default=Path('run_video_out'))
    p.add_argument('--max-frames', type=int, help='per clip')
    p.add_argument('--stride', type=int, default=1)
    p.add_argument('--fps', type=float, help='stamp rate; default the container fps')
    p.add_argument('--threads', type=int, help='CPU threads for inference')
    p.add_argument('--no-progress', action='store_true')
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    from pointmap_ros.engines.factory import create_engine
    from pointmap_ros.model.checkpoint import read_checkpoint_meta

    checkpoint = None if args.onnx_dir and args.backend != 'torch' else args.checkpoint
    kw = {}
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
        if args.backend == 'onnxruntime':
            kw['intra_op_threads'] = args.threads
    size = tuple(args.size) if args.size else None
    try:
        if size is None and checkpoint is not None:
            size = tuple(read_checkpoint_meta(checkpoint)['config']['img_size'])
        engine = create_engine(args.backend, checkpoint=checkpoint, onnx_dir=args.onnx_dir,
                               cache_dir=args.cache_dir, device=args.device,
                               input_shape=size, **kw)
    except PointmapError as exc:
        print(f'pointmap-run-video: cannot build the {args.backend} engine: {exc}',
              file=sys.stderr)
        return 2
    engine_info = dict(engine.info())
    args.out.mkdir(parents=True, exist_ok=True)
    status = 0
    for video in args.videos:
        # A fresh pipeline per clip: its own window, keyframes, focal estimate and tracks.
        config = PipelineConfig(cross_time_source=args.cross_time_source,
                                **({'input_size': size} if size else {}))
        pipe = DynamicReconPipeline(engine, config)
        try:
            info, outputs, stats = run_clip(pipe, video, fps=args.fps, stride=args.stride,
                                            max_frames=args.max_frames,
                                            progress=not args.no_progress)
        except PointmapError as exc:
            print(f'pointmap-run-video: {video}: {exc}', file=sys.stderr)
            status = 1
            continue
        summary = summarise(info, outputs, stats,
                            {**engine_info, 'cross_time_source': pipe.cross_time_source})
        (args.out / f'{video.stem}.json').write_text(json.dumps(summary, indent=1) + '\n')
        if outputs:
            plot_clip(outputs, args.out / f'{video.stem}.png',
                      title=f'{video.name} ({info.width}x{info.height}, {engine.backend})')
        else:
            status = 1
        logger.info('%s: %d/%d frames out, %.0f ms/frame inference, focal %.2f W, %d tracks',
                    video.name, len(outputs), stats['frames'],
                    summary['ms_per_frame'].get('inference', float('nan')),
                    summary.get('focal_over_width', float('nan')), summary.get('num_tracks', 0))
        engine.clear_cache()
    engine.close()
    return status


if __name__ == '__main__':
    sys.exit(main())
