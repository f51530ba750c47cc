"""The one interface every inference backend implements.

An engine turns two :class:`~pointmap_ros.types.Frame` objects into
:class:`~pointmap_ros.types.DynamicPointMaps`. Inference is split into a per-frame *encode*
(ViT encoder) and a per-pair *decode* (two cross-attending decoders + four heads), so a
sliding window encodes each frame once: :meth:`Engine.infer` keeps a small LRU cache of
encodings keyed by ``Frame.key``.
"""

from __future__ import annotations

import abc
import collections
import threading
from typing import Any

from pointmap_ros.errors import InputError
from pointmap_ros.types import DynamicPointMaps, Frame

__all__ = ['Engine', 'EngineInfo']


class EngineInfo(dict):
    """Free-form description for diagnostics: backend, device, precision, model hash, ..."""


class Engine(abc.ABC):
    """Abstract DPM pair-inference backend.

    Subclasses implement :meth:`encode` and :meth:`decode`. ``input_shape`` is the fixed
    ``(H, W)`` the backend accepts, or ``None`` when any multiple of the patch size works.
    """

    #: Short backend name, e.g. ``'torch'``, ``'onnxruntime'``, ``'tensorrt'``, ``'oracle'``.
    backend: str = 'abstract'
    #: Why this backend was chosen (set by :func:`pointmap_ros.engines.factory.create_engine`).
    selection: str | None = None
    #: What the cross-time maps P_i(t_j), P_j(t_i) are: ``'trained'`` (DPM heads),
    #: ``'validated'`` (trained, held-out flow recorded below zero flow), ``'initialised'``
    #: (copies of the same-time heads, as in a converted DUSt3R / MonST3R checkpoint: zero
    #: flow by construction), ``'exact'`` (ground truth) or ``'withheld'``
    #: (an oracle serving the same-time maps in their place). The pipeline's
    #: ``cross_time_source: auto`` reads it.
    cross_time_heads: str = 'trained'

    def __init__(self, cache_size: int = 16):
        self._cache: collections.OrderedDict[str, Any] = collections.OrderedDict()
        self._cache_size = max(int(cache_size), 0)
        self._lock = threading.Lock()
        self.cache_hits = 0
        self.cache_misses = 0

    # -- to implement -------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def input_shape(self) -> tuple[int, int] | None:
        """Fixed ``(H, W)`` input resolution, or None if any patch-multiple size works."""

    @abc.abstractmethod
    def encode(self, frame: Frame) -> Any:
        """Run the per-frame part (encoder); returns an opaque encoding."""

    @abc.abstractmethod
    def decode(self, enc_i: Any, enc_j: Any, frame_i: Frame, frame_j: Frame) -> DynamicPointMaps:
        """Run the per-pair part (decoders + heads) on two encodings."""

    def info(self) -> EngineInfo:
        """Backend description for logs and diagnostics."""
        return EngineInfo(backend=self.backend, input_shape=self.input_shape,
                          selection=self.selection, cross_time_heads=self.cross_time_heads)

    def close(self) -> None:
        """Release backend resources (GPU memory, sessions). Idempotent."""
        self.clear_cache()

    # -- shared behaviour ---------------------------------------------------------------
    def check_frame(self, frame: Frame) -> None:
        """Raise :class:`InputError` if the frame does not fit this engine."""
        img = frame.image
        if img.ndim != 3 or img.shape[2] != 3:
            raise InputError(f'engine input must be [H, W, 3] RGB, got shape {img.shape}',
                             'shape', actual=img.shape)
        if self.input_shape is not None and tuple(img.shape[:2]) != tuple(self.input_shape):
            raise InputError(
                f'{self.backend} engine expects {self.input_shape[0]}x{self.input_shape[1]} '
                f'(HxW) images, got {img.shape[0]}x{img.shape[1]}', 'size',
                actual=tuple(img.shape[:2]), expected=tuple(self.input_shape))

    def encode_cached(self, frame: Frame) -> Any:
        """Encoding of ``frame``, computed once per ``frame.key`` while it stays cached."""
        with self._lock:
            if frame.key in self._cache:
                self._cache.move_to_end(frame.key)
                self.cache_hits += 1
                return self._cache[frame.key]
        self.check_frame(frame)
        enc = self.encode(frame)
        with self._lock:
            self.cache_misses += 1
            if self._cache_size:
                self._cache[frame.key] = enc
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return enc

    def infer(self, frame_i: Frame, frame_j: Frame) -> DynamicPointMaps:
        """The four DPM maps of the pair, in camera i's frame."""
        return self.decode(self.encode_cached(frame_i), self.encode_cached(frame_j),
                           frame_i, frame_j)

    def forget(self, key: str) -> None:
        """Drop one cached encoding (e.g. when a frame leaves the sliding window)."""
        with self._lock:
            self._cache.pop(key, None)

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
