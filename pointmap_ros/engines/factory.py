"""Backend selection: one call that turns parameters into a ready :class:`Engine`.

``backend='auto'`` picks, in order:

1. ``tensorrt`` if the ``tensorrt`` module is importable, CUDA is present and an engine
   manifest (``engine_path``) or an ONNX export (``onnx_dir``) is given;
2. ``torch`` on CUDA if CUDA is present and a checkpoint is given;
3. ``torch`` in bf16 on a CPU with native bf16 (AMX / AVX-512 BF16, see
   :mod:`~pointmap_ros.engines.cpu_features`) when a checkpoint is given and the precision is
   ``auto`` or ``bf16``: the fastest measured CPU option (docs/benchmarks.md) within the bf16
   accuracy bound of docs/engines.md;
4. ``onnxruntime`` on CPU (exporting the checkpoint to ONNX once into the cache folder when
   no ``onnx_dir`` is given, and reusing that export on every later start);
5. ``torch`` on CPU only if onnxruntime is not installed.

The decision and its reason are logged and stored in ``engine.selection``, which the engines
report in ``info()``.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from pointmap_ros.engines.base import Engine
from pointmap_ros.engines.engine_cache import default_cache_root, ensure_writable_dir
from pointmap_ros.errors import ConfigError

__all__ = ['create_engine', 'choose_backend', 'BACKENDS', 'PRECISIONS']

logger = logging.getLogger(__name__)

BACKENDS = ('auto', 'torch', 'onnxruntime', 'tensorrt', 'oracle')
PRECISIONS = ('fp32', 'fp16', 'bf16', 'auto')


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _cuda_available() -> bool:
    if not _importable('torch'):
        return False
    import torch
    return torch.cuda.is_available()


def choose_backend(*, checkpoint=None, onnx_dir=None, engine_path=None,
                   device: str | None = None, precision: str = 'fp32') -> tuple[str, str]:
    """The automatic choice and a one-line reason (see module docstring)."""
    cuda = _cuda_available() and not (device or '').startswith('cpu')
    if cuda and _importable('tensorrt') and (engine_path or onnx_dir):
        return 'tensorrt', 'tensorrt importable, CUDA present and an engine/ONNX export given'
    if cuda and checkpoint:
        return 'torch', 'CUDA present (tensorrt not importable or no engine/ONNX given)'
    if not cuda and checkpoint and precision in ('auto', 'bf16') and _importable('torch'):
        from pointmap_ros.engines.cpu_features import cpu_has_fast_bf16
        if cpu_has_fast_bf16():
            return 'torch', ('CPU with native bf16 (AMX / AVX-512 BF16): PyTorch bf16, the '
                             'fastest measured CPU option')
    if _importable('onnxruntime'):
        return 'onnxruntime', ('no usable CUDA device: ONNX Runtime on CPU' if not cuda else
                               'CUDA present but only an ONNX export given: ONNX Runtime')
    return 'torch', 'onnxruntime is not installed: PyTorch on CPU'


def _onnx_export(checkpoint, onnx_dir, cache_dir, input_shape, backend):
    """The ONNX export to run: from ``onnx_dir``, or exported once from ``checkpoint``."""
    from pointmap_ros.engines.onnx_export import export_stem, load_export
    if onnx_dir:
        return load_export(onnx_dir, input_shape)
    if not checkpoint:
        raise ConfigError(f'backend {backend} needs onnx_dir or checkpoint; neither was given',
                          name='checkpoint')
    from pointmap_ros.model.checkpoint import checkpoint_paths, read_checkpoint_meta
    meta = read_checkpoint_meta(checkpoint)
    shape = tuple(input_shape or meta['config']['img_size'])
    weights, _ = checkpoint_paths(checkpoint)
    name = weights.stem
    folder = ensure_writable_dir(Path(cache_dir or default_cache_root()) / 'onnx', 'ONNX export')
    sidecar = folder / f'{export_stem(name, shape, meta["state_sha256"])}.json'
    if sidecar.is_file():  # restart: no need to load the weights at all
        logger.info('reusing ONNX export %s', sidecar)
        return load_export(sidecar)
    from pointmap_ros.engines.onnx_export import export_onnx
    from pointmap_ros.model.checkpoint import load_checkpoint
    logger.info('exporting %s to ONNX at %dx%d (once) into %s', checkpoint, *shape, folder)
    return export_onnx(load_checkpoint(checkpoint), folder, shape, model_name=name,
                       checkpoint=weights)


def create_engine(backend: str = 'auto', *, checkpoint=None, onnx_dir=None, engine_path=None,
                  cache_dir=None, device: str | None = None, precision: str = 'fp32',
                  input_shape: tuple[int, int] | None = None, **kw) -> Engine:
    """Build the inference engine described by node / tool parameters.

    Args:
        backend: one of :data:`BACKENDS`.
        checkpoint: our checkpoint (``.json`` / ``.safetensors`` / stem) for torch, or to
            export ONNX from.
        onnx_dir: an ONNX export (folder or sidecar JSON) for onnxruntime / tensorrt.
        engine_path: a TensorRT engine manifest written by ``pointmap-build-engine``.
        cache_dir: root of the persistent cache: TensorRT engines in ``<cache_dir>/engines``,
            ONNX exports made on demand in ``<cache_dir>/onnx``; default
            ``$XDG_CACHE_HOME/pointmap_ros`` (or ``~/.cache/pointmap_ros``).
        device: ``'cpu'``, ``'cuda'``, ``'cuda:1'``...; None lets the backend decide.
        precision: one of :data:`PRECISIONS`: fp16 needs CUDA, bf16 runs on CUDA and on CPU
            (torch), tensorrt takes fp32/fp16, onnxruntime fp32; ``auto`` is bf16 with torch on
            a bf16 CPU, else fp32 (fp16 for tensorrt).
        input_shape: ``(H, W)``; default the checkpoint's native ``img_size`` (or the only
            export in ``onnx_dir``).
        **kw: passed to the backend's constructor (e.g. ``cache_size``, ``intra_op_threads``,
            ``providers``, ``force_rebuild``; for oracle either ``scene`` (a SceneConfig)
            with ``seed`` etc. of ``OracleEngine.from_scene``, or ``source`` etc.).

    Raises:
        ConfigError: unknown backend or precision, or no model given.
        EngineError: the chosen backend cannot be built (e.g. tensorrt not installed), or
            the cache folder is not writable.
        CheckpointError: the checkpoint cannot be read.
    """
    if backend not in BACKENDS:
        raise ConfigError(f'engine backend {backend!r} is not one of {BACKENDS}',
                          name='backend', value=backend)
    if precision not in PRECISIONS:
        raise ConfigError(f'precision {precision!r} is not one of {PRECISIONS}',
                          name='precision', value=precision)
    if backend == 'oracle':
        from pointmap_ros.engines.oracle_engine import OracleEngine
        if 'scene' in kw:  # the ground truth of a generated scene (demo, synthetic camera)
            return OracleEngine.from_scene(kw.pop('scene'), **kw)
        return OracleEngine(input_shape=input_shape, **kw)
    reason = 'requested explicitly'
    if backend == 'auto':
        backend, reason = choose_backend(checkpoint=checkpoint, onnx_dir=onnx_dir,
                                         engine_path=engine_path, device=device,
                                         precision=precision)
        if backend == 'torch' and not _cuda_available() and precision in ('auto', 'bf16'):
            precision = 'bf16'
        elif precision == 'auto':
            precision = 'fp32'
        elif precision != 'fp32' and (backend == 'onnxruntime' or not _cuda_available()):
            reason += f'; precision {precision} is not available on {backend} here, using fp32'
            precision = 'fp32'
    elif precision == 'auto':
        # Explicit backend: torch resolves 'auto' itself (bf16 on a bf16 CPU); the exported
        # backends run what their export / engine supports best.
        precision = {'torch': 'auto', 'onnxruntime': 'fp32'}.get(backend, 'fp16')
    logger.info('inference backend: %s (%s)', backend, reason)
    if backend == 'torch':
        engine = _torch_engine(checkpoint, device, precision, input_shape, kw)
    elif backend == 'onnxruntime':
        engine = _onnxruntime_engine(checkpoint, onnx_dir, cache_dir, device, precision,
                                     input_shape, kw)
    else:
        engine = _tensorrt_engine(checkpoint, onnx_dir, engine_path, cache_dir, device,
                                  precision, input_shape, kw)
    engine.selection = reason
    if checkpoint:
        from pointmap_ros.model.checkpoint import cross_time_heads, read_checkpoint_meta
        engine.cross_time_heads = cross_time_heads(read_checkpoint_meta(checkpoint))
    return engine


def _torch_engine(checkpoint, device, precision, input_shape, kw):
    if not checkpoint:
        raise ConfigError('backend torch needs a checkpoint', name='checkpoint')
    from pointmap_ros.engines.torch_engine import TorchEngine
    from pointmap_ros.model.checkpoint import read_checkpoint_meta
    device = device or ('cuda' if _cuda_available() else 'cpu')
    # Like the exported backends, run at the resolution the model was trained at unless told
    # otherwise: a free-size engine would make the pipeline pick its own size.
    shape = tuple(input_shape or read_checkpoint_meta(checkpoint)['config']['img_size'])
    if device == 'cpu':
        # Measured thread choice: see ThreadGovernor (PyTorch collapses under load otherwise).
        kw.setdefault('intra_op_threads', 'auto')
    return TorchEngine(checkpoint, device=device, precision=precision, input_shape=shape, **kw)


def _onnxruntime_engine(checkpoint, onnx_dir, cache_dir, device, precision, input_shape, kw):
    if precision != 'fp32':
        raise ConfigError(f'backend onnxruntime runs the fp32 export; precision {precision!r} '
                          'is not available (use tensorrt or torch on CUDA)',
                          name='precision', value=precision)
    from pointmap_ros.engines.onnxruntime_engine import OnnxRuntimeEngine
    export = _onnx_export(checkpoint, onnx_dir, cache_dir, input_shape, 'onnxruntime')
    if 'providers' not in kw:
        import onnxruntime
        # The CUDA execution provider where this onnxruntime build has it, unless told 'cpu'.
        use_cuda = 'CUDAExecutionProvider' in onnxruntime.get_available_providers() \
            and not (device or '').startswith('cpu')
        kw['providers'] = ['CUDAExecutionProvider'] * use_cuda + ['CPUExecutionProvider']
    return OnnxRuntimeEngine(export, **kw)


def _tensorrt_engine(checkpoint, onnx_dir, engine_path, cache_dir, device, precision,
                     input_shape, kw):
    from pointmap_ros.engines.tensorrt_engine import (TensorRTEngine, import_tensorrt,
                                                      read_manifest)
    import_tensorrt()  # fail first, and clearly, when the module is missing
    device = device or 'cuda:0'
    if engine_path:
        manifest = read_manifest(engine_path)
        return TensorRTEngine(manifest['onnx'], precision=manifest['precision'],
                              cache_dir=manifest['cache_dir'], device=device, **kw)
    export = _onnx_export(checkpoint, onnx_dir, cache_dir, input_shape, 'tensorrt')
    engines = Path(cache_dir or default_cache_root()) / 'engines'
    return TensorRTEngine(export, precision=precision, cache_dir=engines, device=device, **kw)
