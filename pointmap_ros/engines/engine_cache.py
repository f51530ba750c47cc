"""Persistent on-disk cache of built TensorRT engines (and of ONNX exports made on demand).

A TensorRT engine is only valid for the exact ONNX graph, input resolution, precision,
TensorRT version and GPU it was built for, and building one takes minutes. Users of other
robotics TensorRT wrappers complain about engines rebuilt at every start because the cache
folder was not writable, and about crashes when an engine built elsewhere is loaded. So:

- the folder is persistent (``$XDG_CACHE_HOME/pointmap_ros/engines``, else
  ``~/.cache/pointmap_ros/engines``; never ``/tmp``), or an explicit parameter;
- the file name carries a key hashed over everything the engine depends on, so a different
  TensorRT version or GPU simply misses instead of loading an incompatible file;
- hits and misses are logged; an unwritable folder raises :class:`EngineError` at start-up
  instead of silently rebuilding on every restart.

This module does not import TensorRT: callers pass the version and GPU strings in.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from pathlib import Path

from pointmap_ros.errors import ConfigError, EngineError

__all__ = ['EngineCache', 'cache_key', 'default_cache_root', 'ensure_writable_dir', 'file_sha256',
           'PRECISIONS']

logger = logging.getLogger(__name__)

#: Engine precisions: ``fp16`` keeps the output heads in fp32 (see tensorrt_engine.py).
PRECISIONS = ('fp32', 'fp16')


def default_cache_root() -> Path:
    """``$XDG_CACHE_HOME/pointmap_ros`` if set, else ``~/.cache/pointmap_ros``."""
    xdg = os.environ.get('XDG_CACHE_HOME')
    base = Path(xdg) if xdg else Path.home() / '.cache'
    return base / 'pointmap_ros'


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks (ONNX files can exceed 1 GB)."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(chunk), b''):
            digest.update(block)
    return digest.hexdigest()


def cache_key(onnx_sha256: str, height: int, width: int, precision: str, trt_version: str,
              gpu_name: str, compute_capability: tuple[int, int] | str) -> str:
    """Hex sha256 over everything a serialized engine depends on.

    Args:
        onnx_sha256: sha256 of the ONNX file the engine is built from (covers the weights).
        height, width: the fixed input resolution in pixels.
        precision: one of :data:`PRECISIONS`.
        trt_version: ``tensorrt.__version__``.
        gpu_name: e.g. ``'NVIDIA H100 80GB HBM3'``.
        compute_capability: ``(major, minor)`` or ``'8.7'``.

    Raises:
        ConfigError: for an unknown precision or a non-positive resolution.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f'engine precision must be one of {PRECISIONS}, got {precision!r}',
                          name='precision', value=precision)
    if int(height) <= 0 or int(width) <= 0:
        raise ConfigError(f'engine resolution must be positive, got {height}x{width}',
                          name='input_shape', value=(height, width))
    if isinstance(compute_capability, (tuple, list)):
        compute_capability = '.'.join(str(int(c)) for c in compute_capability)
    fields = (onnx_sha256, f'{int(height)}x{int(width)}', precision, trt_version, gpu_name,
              str(compute_capability))
    return hashlib.sha256('\n'.join(fields).encode('utf-8')).hexdigest()


def ensure_writable_dir(folder: str | os.PathLike, purpose: str) -> Path:
    """Create ``folder`` if needed and prove it writable, else raise :class:`EngineError`.

    Args:
        folder: the folder.
        purpose: what it holds, for the message (e.g. ``'engine cache'``).
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix='.probe-'):
            pass
    except OSError as exc:
        raise EngineError(
            f'{purpose} folder {folder} is not writable ({exc.strerror or exc}); without it '
            'engines and exports would be rebuilt on every start. Set the cache_dir parameter '
            'to a writable, persistent folder.') from exc
    return folder


def _slug(text: str) -> str:
    """File-name-safe version of a model or GPU name."""
    return re.sub(r'[^A-Za-z0-9_.-]+', '_', text).strip('_') or 'model'


class EngineCache:
    """A folder of serialized engines named ``<model>-<H>x<W>-<precision>-<key12>.engine``.

    Args:
        cache_dir: folder to use; None means ``default_cache_root() / 'engines'``.

    Raises:
        EngineError: if the folder cannot be created or written (checked at construction,
            so a node fails at start-up rather than rebuilding on every restart).
    """

    def __init__(self, cache_dir: str | os.PathLike | None = None):
        self.cache_dir = ensure_writable_dir(
            cache_dir if cache_dir else default_cache_root() / 'engines', 'engine cache')

    def engine_path(self, model_name: str, shape: tuple[int, int], precision: str,
                    key: str) -> Path:
        """Where the engine for this key lives (whether or not it exists yet)."""
        name = f'{_slug(model_name)}-{shape[0]}x{shape[1]}-{precision}-{key[:12]}.engine'
        return self.cache_dir / name

    def timing_cache_path(self, trt_version: str, gpu_name: str) -> Path:
        """TensorRT timing cache shared by all builds on this GPU + TensorRT version."""
        return self.cache_dir / f'timing-{_slug(trt_version)}-{_slug(gpu_name)}.cache'

    def load(self, path: Path) -> bytes | None:
        """Bytes of a cached engine, or None on a miss (both logged)."""
        if path.is_file():
            logger.info('engine cache hit: %s', path)
            return path.read_bytes()
        logger.info('engine cache miss: %s (will build)', path)
        return None

    def store(self, path: Path, data: bytes) -> None:
        """Write atomically (temp file + rename) so a crash never leaves half an engine."""
        try:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix='.part')
            with os.fdopen(fd, 'wb') as f:
                f.write(data)
            os.replace(tmp, path)
        except OSError as exc:
            raise EngineError(f'cannot write engine file {path}: {exc}') from exc
        logger.info('engine stored in cache: %s (%.1f MB)', path, len(data) / 1e6)

    def invalidate(self, path: Path) -> None:
        """Remove an engine that failed to deserialize (corrupt or from another version)."""
        logger.warning('removing unusable cached engine %s', path)
        path.unlink(missing_ok=True)
