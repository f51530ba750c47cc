"""Read RGB frames and their stamps from a video file (offline input for tools and tests).

Decoding goes through OpenCV's ``cv2.VideoCapture`` (the FFmpeg build shipped with
opencv-python reads H.264 MP4). Frames come out as ``[h, w, 3]`` uint8 RGB at the file's own
resolution: bringing them to the model resolution is :mod:`pointmap_ros.pipeline.preprocess`'s job.

Stamps are ``container_index / fps`` seconds from the first frame, so a stride keeps true
times (the pipeline derives scene-flow rates and frame keys from them).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pointmap_ros.errors import ConfigError, InputError

__all__ = ['VideoInfo', 'VideoFrame', 'probe_video', 'stamp_rate', 'iter_video', 'read_video']

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video.

    Attributes:
        path: the file.
        fps: frames per second from the container (NaN when it does not say).
        frame_count: number of frames from the container (-1 when it does not say).
        width, height: frame size in pixels.
    """

    path: Path
    fps: float
    frame_count: int
    width: int
    height: int


@dataclass(frozen=True)
class VideoFrame:
    """One decoded frame.

    Attributes:
        index: position in the container (0-based, counting frames skipped by a stride).
        stamp: seconds since the first frame, ``index / fps``.
        image: ``[h, w, 3]`` uint8 RGB.
    """

    index: int
    stamp: float
    image: np.ndarray


def _open(path) -> tuple[cv2.VideoCapture, VideoInfo]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f'video file {path} does not exist', 'missing', actual=str(path))
    cap = cv2.VideoCapture(os.fspath(path))
    if not cap.isOpened():
        cap.release()
        raise InputError(f'cannot open {path} as a video ({path.stat().st_size} bytes): '
                         'not a video, an unsupported codec, or a truncated/corrupt file',
                         'decode', actual=str(path))
    fps = float(cap.get(cv2.CAP_PROP_FPS))
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    info = VideoInfo(path=path, fps=fps if math.isfinite(fps) and fps > 0 else math.nan,
                     frame_count=count if count >= 0 else -1,
                     width=int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                     height=int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    return cap, info


def probe_video(path) -> VideoInfo:
    """Container metadata of ``path`` without decoding any frame.

    Raises:
        InputError: the file is missing (``reason='missing'``) or cannot be opened as a video
            (``reason='decode'``).
    """
    cap, info = _open(path)
    cap.release()
    return info


def stamp_rate(info: VideoInfo, fps: float | None = None) -> float:
    """Frames per second for the stamps: ``fps`` when given, else the container's.

    Raises:
        ConfigError: ``fps`` given but not a finite value > 0.
        InputError: ``fps`` is None and the container gives no usable rate (``'fps'``).
    """
    if fps is not None:
        if not (math.isfinite(fps) and fps > 0):
            raise ConfigError(f'fps must be a finite value > 0, got {fps!r}', name='fps',
                              value=fps)
        return float(fps)
    if not (math.isfinite(info.fps) and info.fps > 0):
        raise InputError(f'{info.path} has no frame rate in its container ({info.fps}); '
                         'pass fps', 'fps', actual=info.fps)
    return info.fps


def iter_video(path, *, fps: float | None = None, stride: int = 1,
               max_frames: int | None = None) -> Iterator[VideoFrame]:
    """Decode ``path`` frame by frame.

    Args:
        path: video file.
        fps: frame rate for the stamps; None = the container's.
        stride: keep every ``stride``-th frame (the others are decoded and dropped: H.264
            cannot skip without decoding).
        max_frames: stop after yielding this many frames (None = all).

    Yields:
        :class:`VideoFrame` in container order, stamps strictly increasing.

    Raises:
        ConfigError: ``stride < 1`` or ``max_frames < 1``; ``fps`` as in :func:`stamp_rate`.
        InputError: missing file (``'missing'``), not decodable (``'decode'``), no frame rate
            (``'fps'``, see :func:`stamp_rate`), or no frame could be decoded (``'empty'``).
    """
    if not isinstance(stride, int) or stride < 1:
        raise ConfigError(f'stride must be an integer >= 1, got {stride!r}', name='stride',
                          value=stride)
    if max_frames is not None and (not isinstance(max_frames, int) or max_frames < 1):
        raise ConfigError(f'max_frames must be None or an integer >= 1, got {max_frames!r}',
                          name='max_frames', value=max_frames)
    cap, info = _open(path)
    try:
        rate = stamp_rate(info, fps)
        index = yielded = 0
        while max_frames is None or yielded < max_frames:
            ok, bgr = cap.read()
            if not ok:
                break
            if index % stride == 0:
                yield VideoFrame(index=index, stamp=index / rate,
                                 image=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                yielded += 1
            index += 1
    finally:
        cap.release()
    if index == 0:
        raise InputError(f'no frame could be decoded from {info.path} (container says '
                         f'{info.frame_count} frames)', 'empty', actual=0,
                         expected=info.frame_count)
    if max_frames is None and 0 < info.frame_count != index:
        # Containers may store an estimate; a cut-off recording also ends early. Neither
        # makes the decoded frames wrong, so this is worth a warning only.
        logger.warning('%s: decoded %d frames, the container says %d', info.path, index,
                       info.frame_count)


def read_video(path, *, fps: float | None = None, stride: int = 1,
               max_frames: int | None = None) -> tuple[VideoInfo, list[VideoFrame]]:
    """All selected frames of ``path`` in memory, with the container metadata.

    Same arguments and errors as :func:`iter_video`. Meant for short clips: a 1080p frame is
    6 MB.
    """
    frames = list(iter_video(path, fps=fps, stride=stride, max_frames=max_frames))
    return probe_video(path), frames
