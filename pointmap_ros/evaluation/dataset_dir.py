"""Read (and write) evaluation sequences in the folder layout of ``pointmap-eval --dataset-dir``.

Layout (docs/evaluation.md)::

    <dataset>/<sequence>/
        rgb/000000.png ...        colour images, any size (PNG/JPG, read as RGB)
        K.txt                     3x3 intrinsics of the rgb images (pixel centres at integers)
        poses.txt                 one line per frame: 16 numbers, T_world_cam row-major, metres
        depth/000000.npy          optional float [h, w] z-depth in metres (0 / NaN = unknown)
        fps.txt                   optional frame rate (default 10)
        pairs/000003_000005.npz   optional exact DPM ground truth of pair (i=3, j=5) at the rgb
                                  resolution: pts_i_ti, pts_i_tj, pts_j_ti, pts_j_tj [h, w, 3]
                                  (camera i, metres), valid_i, valid_j [h, w] bool, optional
                                  motion_i, motion_j [h, w] bool

With ``pairs/`` the listed pairs are evaluated on all four maps, flow and motion. Without it,
pairs (t, t + gap) are built from depth + poses and only the same-time maps and depth are
evaluated (the cross-time maps of a dynamic scene are not observable from depth alone).
Everything is brought to the model resolution with the node's resize + centre-crop.
"""

from __future__ import annotations

import glob
import os
import re

import cv2
import numpy as np

from pointmap_ros.pipeline.preprocess import resize_crop
from pointmap_ros.errors import InputError
from pointmap_ros.evaluation.metrics import PairTruth
from pointmap_ros.geometry.camera import unproject
from pointmap_ros.geometry.transforms import se3_apply, se3_inverse
from pointmap_ros.types import MAP_NAMES, DynamicPointMaps

__all__ = ['EvalPair', 'list_sequences', 'read_sequence_pairs', 'write_sequence']

_PAIR_FILE = re.compile(r'^(\d+)_(\d+)\.npz$')


class EvalPair:
    """One pair to evaluate: images at model resolution and its :class:`PairTruth`."""

    def __init__(self, name: str, rgb_i: np.ndarray, rgb_j: np.ndarray, truth: PairTruth):
        self.name, self.rgb_i, self.rgb_j, self.truth = name, rgb_i, rgb_j, truth


def list_sequences(root: str) -> list[str]:
    """Sequence folders (those holding ``rgb/``) under ``root``, sorted; ``root`` itself if it
    is one.

    Raises:
        InputError: when no sequence is found.
    """
    if os.path.isdir(os.path.join(root, 'rgb')):
        return [root]
    seqs = sorted(d for d in glob.glob(os.path.join(root, '*'))
                  if os.path.isdir(os.path.join(d, 'rgb')))
    if not seqs:
        raise InputError(f'no sequence folder with rgb/ under {root!r} (see docs/evaluation.md)',
                         'dataset_layout', actual=root)
    return seqs


def _read_rgb(path: str) -> np.ndarray:
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(f'cannot read image {path!r}', 'dataset_layout', actual=path)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _read_matrix(path: str, shape: tuple[int, ...]) -> np.ndarray:
    try:
        data = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except (OSError, ValueError) as exc:
        raise InputError(f'cannot read {path!r}: {exc}', 'dataset_layout', actual=path) from exc
    if data.size % int(np.prod(shape)):
        raise InputError(f'{path!r} holds {data.size} numbers, not a multiple of '
                         f'{int(np.prod(shape))} (shape {shape})', 'dataset_layout',
                         actual=data.size, expected=shape)
    return data.reshape((-1,) + shape)


def _resize_map(arr: np.ndarray, rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize + crop a per-pixel ``[h, w]`` or ``[h, w, C]`` array exactly like the image
    (nearest neighbour, so no values are invented across edges)."""
    arr = np.asarray(arr, dtype=np.float32)
    chans = arr[..., None] if arr.ndim == 2 else arr
    out = [resize_crop(rgb, size, depth=chans[..., c])[2] for c in range(chans.shape[-1])]
    out = np.stack(out, axis=-1)
    return out[..., 0] if arr.ndim == 2 else out


def read_sequence_pairs(folder: str, size: tuple[int, int], gaps: tuple[int, ...] = (1,),
                        stride: int = 1) -> list[EvalPair]:
    """All pairs of one sequence folder at model resolution ``size = (H, W)``.

    Args:
        folder: the sequence folder.
        size: model input ``(H, W)``.
        gaps, stride: without ``pairs/``: pairs (t, t + g) for t in range(0, N - g, stride).

    Raises:
        InputError: missing files, inconsistent counts or shapes.
    """
    frames = sorted(glob.glob(os.path.join(folder, 'rgb', '*')))
    if not frames:
        raise InputError(f'{folder!r}/rgb holds no images', 'dataset_layout', actual=folder)
    K_raw = _read_matrix(os.path.join(folder, 'K.txt'), (3, 3))[0]
    poses = _read_matrix(os.path.join(folder, 'poses.txt'), (4, 4))
    if len(poses) != len(frames):
        raise InputError(f'{folder!r}: {len(poses)} poses for {len(frames)} images',
                         'dataset_layout', actual=len(poses), expected=len(frames))
    fps_path = os.path.join(folder, 'fps.txt')
    fps = float(np.loadtxt(fps_path)) if os.path.exists(fps_path) else 10.0
    stems = [os.path.splitext(os.path.basename(f))[0] for f in frames]
    rgb_raw = {}

    def rgb(t):
        if t not in rgb_raw:
            rgb_raw[t] = _read_rgb(frames[t])
        return rgb_raw[t]

    K = resize_crop(rgb(0), size, K=K_raw)[1]
    pair_files = sorted(glob.glob(os.path.join(folder, 'pairs', '*.npz')))
    pairs = []
    if pair_files:
        for path in pair_files:
            match = _PAIR_FILE.match(os.path.basename(path))
            if not match:
                raise InputError(f'pair file {path!r} is not named <i>_<j>.npz',
                                 'dataset_layout', actual=path)
            i, j = stems.index(match.group(1)), stems.index(match.group(2))
            with np.load(path) as data:
                gt = {k: data[k] for k in data.files}
            pts = {m: _resize_map(gt[f'pts_{m}'], rgb(i if m[0] == 'i' else j), size)
                   for m in MAP_NAMES}
            masks = {k: _resize_map(gt[k], rgb(i if k.endswith('i') else j), size) > 0.5
                     for k in ('valid_i', 'valid_j', 'motion_i', 'motion_j') if k in gt}
            pairs.append(_make_pair(folder, rgb(i), rgb(j), i, j, size, K, poses, fps, pts,
                                    masks))
        return pairs
    for gap in gaps:
        for i in range(0, len(frames) - gap, stride):
            j = i + gap
            depth = {}
            for t in (i, j):
                path = os.path.join(folder, 'depth', f'{stems[t]}.npy')
                if not os.path.exists(path):
                    raise InputError(f'{path!r} missing: without pairs/ every frame needs depth',
                                     'dataset_layout', actual=path)
                depth[t] = resize_crop(rgb(t), size, depth=np.load(path))[2]
            T_i_j = se3_inverse(poses[i]) @ poses[j]
            p_i = unproject(depth[i], K)
            p_j = se3_apply(T_i_j, unproject(depth[j], K))
            pts = {'i_ti': p_i, 'i_tj': p_i, 'j_ti': p_j, 'j_tj': p_j}
            masks = {'valid_i': np.all(np.isfinite(p_i), -1),
                     'valid_j': np.all(np.isfinite(p_j), -1)}
            pairs.append(_make_pair(folder, rgb(i), rgb(j), i, j, size, K, poses, fps, pts,
                                    masks, has_dynamic=False))
    return pairs


def _make_pair(folder, rgb_i, rgb_j, i, j, size, K, poses, fps, pts, masks,
               has_dynamic=True) -> EvalPair:
    valid_i, valid_j = masks['valid_i'], masks['valid_j']
    clean = {m: np.where((valid_i if m[0] == 'i' else valid_j)[..., None],
                         np.nan_to_num(pts[m]), 0).astype(np.float32) for m in MAP_NAMES}
    ones = {m: np.ones(size, np.float32) for m in MAP_NAMES}
    maps = DynamicPointMaps(**{f'pts_{m}': clean[m] for m in MAP_NAMES},
                            **{f'conf_{m}': ones[m] for m in MAP_NAMES}, metric=True)
    truth = PairTruth(maps, valid_i, valid_j, masks.get('motion_i'), masks.get('motion_j'),
                      se3_inverse(poses[i]) @ poses[j], K, abs(j - i) / fps, has_dynamic)
    return EvalPair(f'{os.path.basename(os.path.normpath(folder))}:{i}-{j}',
                    resize_crop(rgb_i, size)[0], resize_crop(rgb_j, size)[0], truth)


def write_sequence(folder: str, gen, pairs: list[tuple[int, int]] = (),
                   with_depth: bool = True) -> str:
    """Write a generated sequence (``data.scenes.SceneGenerator``) in the documented layout.

    Args:
        folder: output sequence folder (created).
        gen: the scene generator.
        pairs: (i, j) pairs whose exact DPM ground truth goes into ``pairs/``.
        with_depth: also write ``depth/``.
    """
    for sub in ('rgb', 'depth', 'pairs'):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    poses = []
    for t in range(gen.num_frames):
        frame = gen.render(t)
        cv2.imwrite(os.path.join(folder, 'rgb', f'{t:06d}.png'),
                    cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2BGR))
        if with_depth:
            np.save(os.path.join(folder, 'depth', f'{t:06d}.npy'), frame.depth)
        poses.append(frame.T_world_cam.reshape(-1))
    np.savetxt(os.path.join(folder, 'K.txt'), gen.K)
    np.savetxt(os.path.join(folder, 'poses.txt'), np.asarray(poses))
    np.savetxt(os.path.join(folder, 'fps.txt'), [gen.config.fps])
    for i, j in pairs:
        gt = gen.pair_ground_truth(i, j)
        np.savez_compressed(os.path.join(folder, 'pairs', f'{i:06d}_{j:06d}.npz'),
                            **{f'pts_{m}': gt.maps.pts(m) for m in MAP_NAMES},
                            valid_i=gt.valid_i, valid_j=gt.valid_j, motion_i=gt.motion_i,
                            motion_j=gt.motion_j)
    return folder
