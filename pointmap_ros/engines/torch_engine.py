"""PyTorch backend: runs a :class:`~pointmap_ros.model.dpm.DynamicPointMapNet` directly.

Precisions:

- ``fp32`` everywhere;
- ``bf16`` on CPU and CUDA: autocast with the Linear/convolution weights stored in bf16
  (:func:`~pointmap_ros.model.dpm.prepare_for_inference`), the heads included, except their
  last projection; that projection, the residual stream, LayerNorms and the exp
  post-processing stay float32. On CPUs with AMX / AVX-512 BF16 oneDNN runs this on the matrix
  units (official size 512x288: about 3x faster than fp32); elsewhere it is slower than fp32.
  Convolution weights are NHWC on CPU (oneDNN's native layout: no reorder per layer);
- ``fp16`` on CUDA only: encoder and decoders in fp16, the heads entirely in fp32 (the model
  disables autocast around them; ``1 + exp(x)`` overflows fp16 for x > 11);
- ``auto``: bf16 on a CPU with native bf16 (:mod:`~pointmap_ros.engines.cpu_features`),
  fp32 on other CPUs and on CUDA.

The accuracy of bf16 against fp32 is measured and bounded in docs/engines.md. Attention goes
through ``scaled_dot_product_attention``, so CUDA picks flash / memory-efficient kernels.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass

import numpy as np
import torch

from pointmap_ros.engines.base import Engine, EngineInfo
from pointmap_ros.engines.cpu_features import default_cpu_precision
from pointmap_ros.errors import ConfigError, EngineError, InputError
from pointmap_ros.model.checkpoint import load_checkpoint, state_dict_sha256
from pointmap_ros.model.dpm import DynamicPointMapNet, image_to_input, prepare_for_inference
from pointmap_ros.types import DynamicPointMaps, Frame

__all__ = ['TorchEngine', 'TorchEncoding', 'PRECISIONS', 'ThreadGovernor', 'outputs_to_numpy']

PRECISIONS = {'fp32': None, 'fp16': torch.float16, 'bf16': torch.bfloat16}


@dataclass(frozen=True)
class TorchEncoding:
    """Cached encoder output of one frame: ``tokens [1, N, enc_dim]`` on the engine device
    (autocast dtype under fp16/bf16) and the image ``shape`` ``(H, W)``."""

    tokens: torch.Tensor
    shape: tuple[int, int]


class ThreadGovernor:
    """Picks PyTorch's intra-op thread count per call from measured call times (CPU only).

    Why: PyTorch's OpenMP parallel regions end in a barrier, so with as many threads as cores
    on a machine that is also busy, every region waits for whichever thread the OS has
    descheduled. Measured on a 2-core machine under load (docs/benchmarks.md): the small model
    at 512x288 took 7.8 s per pair with 2 threads and 0.14 s with 1 (bf16), a 50x collapse,
    while at idle 2 threads are ~1.7x faster than 1. No fixed count is right for both, so the
    governor measures: it runs with the most threads, and as soon as a call takes more than
    ``collapse_ratio`` times the best time seen for its kind, it switches to 1 thread; every
    ``probe_every`` calls it tries the other count once and keeps whichever is faster now.

    A probe that loses doubles the interval to the next one (up to ``max_probe_every``
    calls), and a switch, by a probe or a collapse, resets it: a losing probe is a call at
    the slow count, and under steady load each cost up to the collapse itself (measured with
    the pipeline's helper thread busy beside the small model at 96x128 and 1-2 busy processes:
    probes every 16 calls made the mean frame 1.6-1.8x that with the back-off or without
    probes; equal at idle).

    Call :meth:`run` with a kind (``'encode'``/``'decode'``) and a zero-argument function.
    """

    def __init__(self, max_threads: int, probe_every: int = 16, collapse_ratio: float = 3.0,
                 max_probe_every: int = 256):
        self.counts = sorted({1, max(1, int(max_threads))}, reverse=True)
        self.current = self.counts[0]
        self.base_probe_every = probe_every
        self.max_probe_every = max(probe_every, max_probe_every)
        self.probe_every = probe_every  # the interval now (grows while probes lose)
        self.collapse_ratio = collapse_ratio
        self.best: dict[tuple[str, int], float] = {}
        self.recent: dict[tuple[str, int], float] = {}
        self.calls = 0
        self._next_probe = probe_every

    def run(self, kind: str, fn):
        self.calls += 1
        threads = self.current
        probing = len(self.counts) > 1 and self.calls >= self._next_probe
        if probing:
            threads = self.counts[1] if threads == self.counts[0] else self.counts[0]
        torch.set_num_threads(threads)
        tick = time.perf_counter()
        result = fn()
        elapsed = time.perf_counter() - tick
        key = (kind, threads)
        self.recent[key] = elapsed
        self.best[key] = min(self.best.get(key, elapsed), elapsed)
        if not probing:
            if (len(self.counts) > 1 and threads > 1
                    and elapsed > self.collapse_ratio * self.best[key]):
                self._switch(1)                       # collapse: leave the barrier race now
            return result
        other = self.recent.get((kind, self.current))
        healthy = elapsed <= self.collapse_ratio * self.best[key]
        if (other is not None and elapsed < other) or (other is None and healthy):
            self._switch(threads)                     # the probe won: keep its count
        else:
            self.probe_every = min(2 * self.probe_every, self.max_probe_every)
            self._next_probe = self.calls + self.probe_every
        return result

    def _switch(self, threads: int) -> None:
        """Run with ``threads`` from now on, probing the other count again soon."""
        self.current = threads
        self.probe_every = self.base_probe_every
        self._next_probe = self.calls + self.probe_every


def outputs_to_numpy(outputs: dict) -> dict:
    """Device tensors -> float32 numpy arrays with one device-to-host transfer.

    On CUDA every ``.cpu()`` is a synchronous copy (a stream sync plus a small DMA), so eight
    outputs meant eight round trips per pair. The outputs are packed into one flat float32
    buffer on the device (one fused copy kernel) and transferred once; the numpy arrays are
    views into that host buffer, which nothing else references. On CPU the packing is skipped:
    ``.cpu()`` is a no-op there and the float32 tensors are handed over without a copy.
    """
    tensors = {name: value.float() for name, value in outputs.items()}
    if all(t.device.type == 'cpu' for t in tensors.values()):
        return {name: t.numpy() for name, t in tensors.items()}
    flat = torch.cat([t.reshape(-1) for t in tensors.values()]).cpu().numpy()
    arrays, offset = {}, 0
    for name, t in tensors.items():
        arrays[name] = flat[offset:offset + t.numel()].reshape(tuple(t.shape))
        offset += t.numel()
    return arrays


class TorchEngine(Engine):
    """DPM inference in PyTorch.

    Args:
        model: a 4-map :class:`DynamicPointMapNet` (moved to ``device`` and set to eval mode)
            or the path of one of our checkpoints (``.json`` / ``.safetensors`` / stem).
        device: ``'cpu'``, ``'cuda'``, ``'cuda:1'``, ...
        precision: ``'fp32'``, ``'bf16'`` (CPU or CUDA), ``'fp16'`` (CUDA only) or
            ``'auto'`` (bf16 on a CPU with native bf16, else fp32). The model's weights are
            converted in place for bf16/fp16: pass a copy if you need the float32 model.
        input_shape: fixed ``(H, W)`` to enforce, or None to accept any multiple of the patch
            size (the network itself is resolution-agnostic).
        cache_size: encodings kept in the LRU cache.
        intra_op_threads: CPU threads per operator: N fixes ``torch.set_num_threads(N)``;
            ``'auto'`` (or 0) lets a :class:`ThreadGovernor` choose between 1 and the core
            count per call from measured times (the defence against the collapse of PyTorch
            under load); None leaves torch's process-wide setting alone.

    Raises:
        ConfigError: unknown precision, fp16 on CPU, a 2-map model, or an
            ``input_shape`` that is not a multiple of the patch size.
        EngineError: CUDA requested but unavailable.
        CheckpointError: the checkpoint path cannot be loaded.
    """

    backend = 'torch'

    def __init__(self, model: DynamicPointMapNet | str | os.PathLike, device='cpu',
                 precision: str = 'fp32', input_shape: tuple[int, int] | None = None,
                 cache_size: int = 16, intra_op_threads: int | str | None = None):
        super().__init__(cache_size)
        if precision not in (*PRECISIONS, 'auto'):
            raise ConfigError(f'precision {precision!r} is not one of '
                              f"{sorted(PRECISIONS) + ['auto']}", name='precision',
                              value=precision)
        self.device = torch.device(device)
        if self.device.type == 'cuda' and not torch.cuda.is_available():
            raise EngineError(f'device {device!r} requested but CUDA is not available')
        if precision == 'auto':
            precision = default_cpu_precision() if self.device.type == 'cpu' else 'fp32'
        if precision == 'fp16' and self.device.type != 'cuda':
            raise ConfigError(f'precision fp16 needs a CUDA device, got {device!r}; use '
                              "'bf16' or 'fp32' on CPU", name='precision', value=precision)
        self.precision = precision
        self.checkpoint = None
        if isinstance(model, (str, os.PathLike)):
            self.checkpoint = str(model)
            model = load_checkpoint(model, map_location='cpu')
        config = model.config
        if config.num_maps != 4:
            raise ConfigError(f'the engine needs a 4-map DPM model, got num_maps='
                              f'{config.num_maps}; convert with --num-maps 4',
                              name='num_maps', value=config.num_maps)
        if input_shape is not None:
            input_shape = (int(input_shape[0]), int(input_shape[1]))
            if any(v <= 0 or v % config.patch_size for v in input_shape):
                raise ConfigError(f'input_shape {input_shape} is not a positive multiple of '
                                  f'the patch size {config.patch_size}', name='input_shape',
                                  value=input_shape)
        self._input_shape = input_shape
        self._governor = None
        if self.device.type == 'cpu' and intra_op_threads in ('auto', 0):
            self._governor = ThreadGovernor(os.cpu_count() or 1)
        elif self.device.type == 'cpu' and intra_op_threads is not None:
            torch.set_num_threads(int(intra_op_threads))
        self._model_hash = getattr(model, 'checkpoint_meta', {}).get('state_sha256')
        if self._model_hash is None and precision != 'fp32':
            self._model_hash = state_dict_sha256(model)   # of the float32 weights, before casting
        self.model = prepare_for_inference(model.to(self.device).eval(), PRECISIONS[precision],
                                           channels_last=self.device.type == 'cpu'
                                           and precision == 'bf16')

    @property
    def input_shape(self) -> tuple[int, int] | None:
        return self._input_shape

    def _autocast(self):
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def encode(self, frame: Frame) -> TorchEncoding:
        """Run the encoder on one ``[H, W, 3]`` uint8 RGB frame."""
        image = frame.image
        if image.dtype != np.uint8:
            raise InputError(f'engine input must be uint8 RGB, got dtype {image.dtype}',
                             'encoding', actual=str(image.dtype), expected='uint8')
        with torch.inference_mode():
            img = image_to_input(image, self.device)             # [1, 3, H, W] in [-1, 1]
            with self._autocast():
                tokens = self._run('encode', lambda: self.model.encode(img))
        return TorchEncoding(tokens, frame.shape)

    def decode(self, enc_i: TorchEncoding, enc_j: TorchEncoding, frame_i: Frame,
               frame_j: Frame) -> DynamicPointMaps:
        """Run both decoders and the four heads; maps are in camera i's frame."""
        with torch.inference_mode(), self._autocast():
            out = self._run('decode', lambda: self.model.decode(enc_i.tokens, enc_i.shape,
                                                                enc_j.tokens, enc_j.shape))
        # The arrays are fresh (a host transfer, or CPU tensors nothing else holds), so
        # from_flat may take them without another copy.
        return DynamicPointMaps.from_flat(outputs_to_numpy(out), key_i=frame_i.key,
                                          key_j=frame_j.key, copy=False)

    def _run(self, kind: str, fn):
        return self._governor.run(kind, fn) if self._governor is not None else fn()

    def info(self) -> EngineInfo:
        if self._model_hash is None:
            self._model_hash = state_dict_sha256(self.model)
        cfg = self.model.config
        return EngineInfo(backend=self.backend,
                          cross_time_heads=self.cross_time_heads, device=str(self.device),
                          precision=self.precision, input_shape=self.input_shape,
                          native_shape=tuple(cfg.img_size), model_hash=self._model_hash,
                          checkpoint=self.checkpoint, head_type=cfg.head_type,
                          num_parameters=sum(p.numel() for p in self.model.parameters()),
                          torch_version=torch.__version__, selection=self.selection,
                          threads=(f'auto (now {self._governor.current})' if self._governor
                                   else torch.get_num_threads()))

    def close(self) -> None:
        super().close()
        if self.device.type == 'cuda':
            torch.cuda.empty_cache()
