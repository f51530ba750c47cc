"""TensorRT 10 backend: engines built from our ONNX export, cached on disk, run on CUDA tensors.

Two engines per model and resolution, mirroring the ONNX export: the encoder (image -> tokens,
run once per frame) and the decoder (two token sets -> the eight DPM maps, run per pair).

Written against the TensorRT 10 Python API only: explicit-batch networks (the default in 10),
the name-based tensor API (``num_io_tensors`` / ``get_tensor_name`` / ``set_tensor_address``)
and ``execute_async_v3`` on a torch CUDA stream. I/O buffers are torch CUDA tensors allocated
once per engine; every result leaving the engine is a copy, never a view into those reused
buffers (a sliding window keeps results across calls).

fp16: the heads' post-processing computes ``exp`` of the raw outputs (depth and confidence),
which overflows fp16 above ~11. Everything after the last decoder block (final norm, the four
heads, post-processing) is therefore pinned to fp32 with per-layer precision constraints and
``OBEY_PRECISION_CONSTRAINTS``; the ViT blocks run in fp16. A strongly typed network would
need fp16 casts baked into the ONNX graph, which would break the fp32 ONNX Runtime path.

Not exercised by CI: TensorRT cannot be installed on the CI machines (see docs/engines.md).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import onnx

from pointmap_ros.engines.base import Engine, EngineInfo
from pointmap_ros.engines.engine_cache import EngineCache, cache_key, file_sha256
from pointmap_ros.engines.onnx_export import (DECODER_INPUTS, ENCODER_INPUT, OUTPUT_NAMES,
                                              OnnxExport, load_export)
from pointmap_ros.errors import ConfigError, EngineError
from pointmap_ros.types import DynamicPointMaps, Frame

__all__ = ['TensorRTEngine', 'import_tensorrt', 'build_serialized_engine', 'head_node_names',
           'read_manifest', 'DECODER_BLOCK_PATTERN']

logger = logging.getLogger(__name__)

#: Matches ONNX node / TensorRT layer names inside a decoder block (``dec_blocks.3``,
#: ``dec_blocks2.11``); the names come from the module scopes of model/dpm.py.
DECODER_BLOCK_PATTERN = re.compile(r'dec_blocks2?[./]\d+')


def import_tensorrt():
    """The ``tensorrt`` module (10.x), or :class:`EngineError` saying what is missing."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise EngineError(
            'the tensorrt backend needs the TensorRT 10 Python module `tensorrt`, which is not '
            f'importable here ({exc}); install TensorRT 10 or use backend onnxruntime/torch'
        ) from exc
    major = int(trt.__version__.split('.')[0])
    if major < 10:
        raise EngineError(f'TensorRT {trt.__version__} found, but TensorRT >= 10 is required')
    return trt


def head_node_names(model: onnx.ModelProto) -> list[str]:
    """ONNX nodes after the last decoder-block node: final norm, heads, post-processing.

    These are the nodes kept in fp32 in an fp16 engine (see module docstring). The ONNX
    exporter emits nodes in execution order, and the TensorRT parser adds layers in node
    order, so "after the last decoder block" means the same thing in both.

    Raises:
        EngineError: if no node name matches :data:`DECODER_BLOCK_PATTERN` (a graph that is
            not our decoder, or names stripped by a graph optimiser).
    """
    names = [node.name for node in model.graph.node]
    last = max((i for i, n in enumerate(names) if DECODER_BLOCK_PATTERN.search(n)), default=-1)
    if last < 0:
        raise EngineError('cannot find decoder-block nodes (pattern '
                          f'{DECODER_BLOCK_PATTERN.pattern!r}) in the decoder graph; the fp32 '
                          'head constraint cannot be applied')
    return names[last + 1:]


def _pin_heads_fp32(trt, network) -> int:
    """Constrain every float layer after the last decoder-block layer to fp32; returns count."""
    names = [network.get_layer(i).name for i in range(network.num_layers)]
    last = max((i for i, n in enumerate(names) if DECODER_BLOCK_PATTERN.search(n)), default=-1)
    if last < 0:
        raise EngineError('cannot find decoder-block layers in the TensorRT network; refusing '
                          'to build an fp16 decoder without fp32 heads')
    pinned = 0
    for i in range(last + 1, network.num_layers):
        layer = network.get_layer(i)
        outputs = [layer.get_output(k) for k in range(layer.num_outputs)]
        # Shape/index layers carry int tensors; a float constraint on them is invalid.
        if not outputs or any(out.dtype != trt.float32 for out in outputs):
            continue
        layer.precision = trt.float32
        for k in range(layer.num_outputs):
            layer.set_output_type(k, trt.float32)
        pinned += 1
    return pinned


def build_serialized_engine(trt, onnx_path: Path, precision: str, timing_cache: Path,
                            workspace_bytes: int, pin_heads: bool) -> bytes:
    """Parse ``onnx_path`` and build a serialized engine (TensorRT 10 builder API).

    Raises:
        EngineError: on parser errors (all listed) or a failed build.
    """
    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = '; '.join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(f'TensorRT could not parse {onnx_path}: {errors}')
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    if precision == 'fp16':
        config.set_flag(trt.BuilderFlag.FP16)
        if pin_heads:
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
            logger.info('%s: %d head layers pinned to fp32', onnx_path.name,
                        _pin_heads_fp32(trt, network))
    blob = timing_cache.read_bytes() if timing_cache.is_file() else b''
    config.set_timing_cache(config.create_timing_cache(blob), ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError(f'TensorRT failed to build an engine from {onnx_path} ({precision})')
    timing_cache.write_bytes(memoryview(config.get_timing_cache().serialize()))
    return bytes(memoryview(serialized))


def read_manifest(path: str | Path) -> dict:
    """Read an engine manifest written by :meth:`TensorRTEngine.write_manifest`.

    Returns:
        Dict with ``onnx`` (sidecar path), ``precision`` and ``cache_dir``: the arguments
        that make :class:`TensorRTEngine` find the cached engines again (or rebuild them from
        the ONNX files if the TensorRT version or GPU changed).

    Raises:
        EngineError: unreadable file or missing fields.
    """
    try:
        manifest = json.loads(Path(path).read_text())
        return {key: manifest[key] for key in ('onnx', 'precision', 'cache_dir')}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EngineError(f'cannot read TensorRT engine manifest {path}: {exc!r}') from exc


class _TrtGraph:
    """One deserialized engine with persistent torch CUDA I/O buffers, addressed by name."""

    def __init__(self, trt, torch, blob: bytes, device, expected_inputs, expected_outputs):
        self._torch = torch
        # The logger and runtime must outlive the engine deserialized from them.
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        detail = ''
        try:
            self.engine = self._runtime.deserialize_cuda_engine(blob)
        except Exception as exc:  # some TensorRT builds raise instead of returning None
            self.engine, detail = None, f': {type(exc).__name__}: {exc}'
        if self.engine is None:
            raise EngineError('TensorRT could not deserialize the engine (built by another '
                              f'TensorRT version or GPU, or a corrupt file){detail}')
        self.context = self.engine.create_execution_context()
        dtypes = {trt.float32: torch.float32, trt.float16: torch.float16,
                  trt.int32: torch.int32, trt.int64: torch.int64, trt.bool: torch.bool}
        self.buffers, inputs, outputs, specs = {}, [], [], {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            shape = tuple(self.engine.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise EngineError(f'engine tensor {name} has dynamic shape {shape}; our '
                                  'exports are fixed-resolution')
            specs[name] = (shape, dtypes[self.engine.get_tensor_dtype(name)])
            is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (inputs if is_input else outputs).append(name)
        if sorted(inputs) != sorted(expected_inputs) \
                or sorted(outputs) != sorted(expected_outputs):
            raise EngineError(f'engine I/O names {inputs} -> {outputs} do not match the export '
                              f'({list(expected_inputs)} -> {list(expected_outputs)})')
        for name in inputs:
            self.buffers[name] = torch.empty(specs[name][0], dtype=specs[name][1], device=device)
        # All outputs live in one packed buffer (when they share a dtype, as our float32
        # exports do), so a decode leaves the GPU as a single device-to-host copy instead of
        # one synchronous transfer per map. Each output starts at a 256-byte aligned offset:
        # TensorRT requires I/O addresses aligned to their element type and recommends 256.
        self.packed = None
        out_dtypes = {specs[name][1] for name in outputs}
        if len(out_dtypes) == 1:
            dtype = out_dtypes.pop()
            align = max(1, 256 // torch.empty((), dtype=dtype).element_size())
            offsets, total = {}, 0
            for name in outputs:
                offsets[name] = total
                numel = int(np.prod(specs[name][0], dtype=np.int64))
                total += -(-numel // align) * align
            self.packed = torch.empty(total, dtype=dtype, device=device)
            for name in outputs:
                numel = int(np.prod(specs[name][0], dtype=np.int64))
                self.buffers[name] = self.packed[offsets[name]:offsets[name] + numel] \
                    .view(specs[name][0])
            self._offsets = offsets
        else:
            for name in outputs:
                self.buffers[name] = torch.empty(specs[name][0], dtype=specs[name][1],
                                                 device=device)
        for name, buf in self.buffers.items():
            self.context.set_tensor_address(name, buf.data_ptr())
        self.outputs = outputs
        self._specs = specs
        self.stream = torch.cuda.Stream(device=device)

    def _execute(self, feeds: dict) -> None:
        torch = self._torch
        # Feeds were produced on the caller's stream; order our copies after them.
        self.stream.wait_stream(torch.cuda.current_stream(self.stream.device))
        for name, value in feeds.items():
            self.buffers[name].copy_(value.reshape(self.buffers[name].shape))
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise EngineError('TensorRT execute_async_v3 failed')

    def run(self, feeds: dict) -> dict:
        """Copy ``feeds`` (torch tensors) in, execute, return *cloned* device outputs by name.

        Used for the encoder, whose tokens stay on the GPU in the encoding cache: the clone is
        required because the I/O buffers are overwritten by the next call.
        """
        torch = self._torch
        with torch.cuda.stream(self.stream):
            self._execute(feeds)
            result = {name: self.buffers[name].clone() for name in self.outputs}
        self.stream.synchronize()
        return result

    def run_to_host(self, feeds: dict) -> dict:
        """Execute and return the outputs as numpy arrays owned by the caller.

        One device-to-host copy of the packed output buffer into fresh host memory (no device
        clone, no second host copy); the arrays are views into that fresh buffer, which only
        they reference, so they stay valid after the next call.
        """
        torch = self._torch
        with torch.cuda.stream(self.stream):
            self._execute(feeds)
            if self.packed is not None:
                host = self.packed.cpu().numpy()      # synchronises self.stream
                return {name: host[self._offsets[name]:self._offsets[name]
                                   + int(np.prod(self._specs[name][0], dtype=np.int64))]
                        .reshape(self._specs[name][0]) for name in self.outputs}
            result = {name: self.buffers[name].cpu().numpy() for name in self.outputs}
        return result


class TensorRTEngine(Engine):
    """DPM inference with TensorRT engines built from (and cached for) one ONNX export.

    Args:
        export: an :class:`OnnxExport`, its sidecar JSON, or a folder holding one export.
        precision: ``'fp32'`` or ``'fp16'`` (heads stay fp32).
        cache_dir: engine cache folder (see :class:`EngineCache`).
        force_rebuild: rebuild even when a cached engine exists.
        workspace_gib: builder workspace memory pool limit.
        device: CUDA device, e.g. ``'cuda:0'``.
        cache_size: encodings kept in the LRU cache.

    Raises:
        EngineError: TensorRT or CUDA missing, unwritable cache, parse/build failure.
        ConfigError: unknown precision.
    """

    backend = 'tensorrt'

    def __init__(self, export: OnnxExport | str | Path, *, precision: str = 'fp16',
                 cache_dir: str | Path | None = None, force_rebuild: bool = False,
                 workspace_gib: float = 4.0, device: str = 'cuda:0', cache_size: int = 16):
        super().__init__(cache_size)
        if precision not in ('fp32', 'fp16'):
            raise ConfigError(f'tensorrt precision must be fp32 or fp16, got {precision!r}',
                              name='precision', value=precision)
        trt = import_tensorrt()
        import torch
        if not torch.cuda.is_available():
            raise EngineError('the tensorrt backend needs a CUDA device; torch sees none')
        self._torch = torch
        self._device = torch.device(device)
        self.export = export if isinstance(export, OnnxExport) else load_export(export)
        self.precision = precision
        self.cache = EngineCache(cache_dir)
        props = torch.cuda.get_device_properties(self._device)
        self._gpu = (props.name, (props.major, props.minor), trt.__version__)
        self.engine_files = {}
        self._encoder = self._load_graph(trt, 'encoder', force_rebuild, workspace_gib,
                                         [ENCODER_INPUT], ['tokens'])
        self._decoder = self._load_graph(trt, 'decoder', force_rebuild, workspace_gib,
                                         list(DECODER_INPUTS), list(OUTPUT_NAMES))

    def _load_graph(self, trt, part, force_rebuild, workspace_gib, inputs, outputs):
        onnx_path = self.export.encoder_path if part == 'encoder' else self.export.decoder_path
        gpu_name, capability, version = self._gpu
        digest = file_sha256(onnx_path)
        data = Path(onnx_path).with_name(Path(onnx_path).name + '.data')
        if data.is_file():
            # Weights stored as ONNX external data (large models): the graph file alone does
            # not change with the weights, so the key must cover the data file too.
            digest += file_sha256(data)
        key = cache_key(digest, self.export.height, self.export.width,
                        self.precision, version, gpu_name, capability)
        path = self.cache.engine_path(f'{self.export.model_name}-{part}', self.export.shape,
                                      self.precision, key)
        self.engine_files[part] = str(path)
        blob = None if force_rebuild else self.cache.load(path)
        if blob is not None:
            try:
                return _TrtGraph(trt, self._torch, blob, self._device, inputs, outputs)
            except EngineError as exc:
                # Engines from another TensorRT build or a truncated file: rebuild, not crash.
                logger.warning('cached engine %s unusable (%s); rebuilding', path, exc)
                self.cache.invalidate(path)
        blob = build_serialized_engine(
            trt, onnx_path, self.precision, self.cache.timing_cache_path(version, gpu_name),
            int(workspace_gib * (1 << 30)), pin_heads=(part == 'decoder'))
        self.cache.store(path, blob)
        return _TrtGraph(trt, self._torch, blob, self._device, inputs, outputs)

    @property
    def input_shape(self) -> tuple[int, int]:
        return self.export.shape

    def encode(self, frame: Frame):
        """Tokens ``[1, N, C]`` (torch CUDA tensor, an owned copy) of one frame."""
        from pointmap_ros.model.dpm import image_to_input  # torch is present once we are here
        img = image_to_input(frame.image, self._device)                     # [1, 3, H, W]
        return self._encoder.run({ENCODER_INPUT: img})['tokens']

    def decode(self, enc_i, enc_j, frame_i: Frame, frame_j: Frame) -> DynamicPointMaps:
        out = self._decoder.run_to_host({DECODER_INPUTS[0]: enc_i, DECODER_INPUTS[1]: enc_j})
        # Fresh host arrays that nothing else references: no further copy needed.
        return DynamicPointMaps.from_flat(out, key_i=frame_i.key, key_j=frame_j.key,
                                          copy=False)

    def info(self) -> EngineInfo:
        gpu_name, capability, version = self._gpu
        return EngineInfo(backend=self.backend,
                          cross_time_heads=self.cross_time_heads, input_shape=self.input_shape,
                          precision=self.precision, device=str(self._device), gpu=gpu_name,
                          compute_capability='%d.%d' % capability, tensorrt=version,
                          model=self.export.model_name, weights_sha256=self.export.weights_sha256,
                          engines=dict(self.engine_files),
                          selection=self.selection)

    def write_manifest(self, path: str | Path) -> Path:
        """Write the JSON that ``create_engine(engine_path=...)`` loads this engine pair from."""
        path = Path(path)
        manifest = {'onnx': str(self.export.sidecar.resolve()), 'precision': self.precision,
                    'cache_dir': str(self.cache.cache_dir.resolve()), **self.info()}
        path.write_text(json.dumps(manifest, indent=1, default=str))
        return path

    def close(self) -> None:
        super().close()
        self._encoder = self._decoder = None
