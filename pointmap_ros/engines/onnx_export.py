"""ONNX export of a :class:`~pointmap_ros.model.dpm.DynamicPointMapNet`, and its validation.

Each export is two graphs at one fixed resolution, so a streaming window encodes every frame
once and decodes every pair (as the engines do):

- ``encoder``: ``image [1, 3, H, W]`` float32 in [-1, 1] -> ``tokens [1, N, C_enc]``;
- ``decoder``: ``tokens_i, tokens_j [1, N, C_enc]`` -> ``pts_<m> [1, H, W, 3]`` and
  ``conf_<m> [1, H, W]`` for m in i_ti, i_tj, j_ti, j_tj (:data:`OUTPUT_NAMES`).

Files share a stem ``<model>-<H>x<W>-<hash8>`` (hash of the weights) and a JSON sidecar
records the model config, resolution, tensor names and shapes, the checkpoint sha256, opset,
torch version and date. The torch-based tracer (``dynamo=False``) is used: torch 2.13's
default dynamo exporter needs ``onnxscript``, which our pinned environment does not install,
and the traced graph already meets the needs below. Export pitfalls handled (dpm_spec.md §8.3):
RoPE tables are built from the static token grid (constants, no ``Range``/``If``), the
post-processing uses ``exp(d) - 1`` (ONNX has no Expm1), and the resolution is fixed per file.

Only :func:`export_onnx` and :func:`check_parity` import torch; loading an export does not, so
the ONNX Runtime / TensorRT engines run without PyTorch.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from pointmap_ros.engines.engine_cache import ensure_writable_dir, file_sha256
from pointmap_ros.errors import ConfigError, EngineError
from pointmap_ros.types import MAP_NAMES

__all__ = ['OnnxExport', 'ParityResult', 'export_onnx', 'export_stem', 'load_export',
           'find_exports', 'check_parity', 'OUTPUT_NAMES', 'ENCODER_INPUT',
           'DECODER_INPUTS', 'OPSET']

logger = logging.getLogger(__name__)

OPSET = 17
ENCODER_INPUT = 'image'
DECODER_INPUTS = ('tokens_i', 'tokens_j')
#: Decoder outputs in the flat order of ``DynamicPointMapNet.decode`` (pts then conf per map).
OUTPUT_NAMES = tuple(f'{kind}_{m}' for m in MAP_NAMES for kind in ('pts', 'conf'))
_SIDECAR_FORMAT = 1


@dataclass(frozen=True)
class OnnxExport:
    """One exported model at one resolution: two ONNX files plus their JSON sidecar.

    Attributes:
        sidecar: path of the JSON sidecar; the ONNX files sit next to it.
        meta: the sidecar's content.
    """

    sidecar: Path
    meta: dict = field(compare=False)

    @property
    def encoder_path(self) -> Path:
        return self.sidecar.parent / self.meta['encoder']['file']

    @property
    def decoder_path(self) -> Path:
        return self.sidecar.parent / self.meta['decoder']['file']

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` input resolution in pixels."""
        return int(self.meta['height']), int(self.meta['width'])

    @property
    def height(self) -> int:
        return self.shape[0]

    @property
    def width(self) -> int:
        return self.shape[1]

    @property
    def model_name(self) -> str:
        return self.meta['model_name']

    @property
    def weights_sha256(self) -> str:
        return self.meta['weights_sha256']


def export_stem(model_name: str, shape: tuple[int, int], weights_hash: str) -> str:
    """Common file stem of an export: ``<model>-<H>x<W>-<hash8>``."""
    return f'{model_name}-{int(shape[0])}x{int(shape[1])}-{weights_hash[:8]}'


def load_export(path: str | os.PathLike, input_shape: tuple[int, int] | None = None
                ) -> OnnxExport:
    """Load an export from its sidecar JSON, or from a folder holding exports.

    Args:
        path: sidecar ``.json`` or a folder.
        input_shape: ``(H, W)`` to pick among several exports in a folder.

    Raises:
        EngineError: missing/unreadable sidecar or ONNX file, or no matching export.
        ConfigError: a folder with several exports and no ``input_shape`` to choose.
    """
    path = Path(path)
    if path.is_dir():
        exports = [e for e in find_exports(path)
                   if input_shape is None or e.shape == tuple(input_shape)]
        if not exports:
            wanted = f' at {input_shape[0]}x{input_shape[1]}' if input_shape else ''
            raise EngineError(f'no ONNX export{wanted} in {path} (expected '
                              '<model>-<H>x<W>-<hash>.json with .encoder.onnx/.decoder.onnx)')
        if len(exports) > 1:
            raise ConfigError(f'{len(exports)} ONNX exports in {path} '
                              f'({", ".join(e.sidecar.name for e in exports)}); set input_shape '
                              'or pass one sidecar JSON', name='onnx_dir', value=str(path))
        return exports[0]
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise EngineError(f'cannot read ONNX export sidecar {path}: {exc}') from exc
    if not isinstance(meta, dict) or meta.get('format') != _SIDECAR_FORMAT \
            or 'encoder' not in meta or 'decoder' not in meta:
        found = meta.get('format') if isinstance(meta, dict) else type(meta).__name__
        raise EngineError(f'{path} is not a pointmap_ros ONNX export sidecar '
                          f'(format {found!r}, expected {_SIDECAR_FORMAT})')
    export = OnnxExport(path, meta)
    for part in (export.encoder_path, export.decoder_path):
        if not part.is_file():
            raise EngineError(f'ONNX file {part} named by {path} is missing')
    return export


def find_exports(folder: str | os.PathLike) -> list[OnnxExport]:
    """All valid exports in a folder, sorted by sidecar name (unreadable ones are skipped)."""
    exports = []
    for sidecar in sorted(Path(folder).glob('*.json')):
        try:
            exports.append(load_export(sidecar))
        except EngineError as exc:
            logger.debug('skipping %s: %s', sidecar, exc)
    return exports


def _io_spec(model: onnx.ModelProto) -> dict:
    def spec(values):
        return [{'name': v.name,
                 'shape': [d.dim_value for d in v.type.tensor_type.shape.dim],
                 'dtype': onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name}
                for v in values]
    return {'inputs': spec(model.graph.input), 'outputs': spec(model.graph.output)}


def export_onnx(model, out_dir: str | os.PathLike, input_shape: tuple[int, int], *,
                model_name: str = 'dpm', checkpoint: str | os.PathLike | None = None,
                opset: int = OPSET, reuse: bool = True) -> OnnxExport:
    """Export ``model`` as encoder + decoder ONNX graphs at ``input_shape`` and validate them.

    Args:
        model: a DynamicPointMapNet (any device; exported on CPU in float32, eval mode).
        out_dir: folder for the three files (created).
        input_shape: ``(H, W)`` pixels, multiples of the patch size.
        model_name: file-name prefix, e.g. the preset name.
        checkpoint: the file the weights came from; its sha256 goes in the sidecar.
        opset: ONNX opset (17 by default; TensorRT 10 parses 9 to 20).
        reuse: return an existing export of the same weights and resolution untouched.

    Returns:
        The :class:`OnnxExport`; both graphs passed ``onnx.checker.check_model``.

    Raises:
        ConfigError: bad resolution or a model without the four DPM heads.
        EngineError: unwritable ``out_dir``, or the exporter or the ONNX checker failed.
    """
    import torch

    from pointmap_ros.model.checkpoint import state_dict_sha256

    config = model.config
    h, w = (int(v) for v in input_shape)
    if h <= 0 or w <= 0 or h % config.patch_size or w % config.patch_size:
        raise ConfigError(f'export resolution {h}x{w} (HxW) must be positive multiples of the '
                          f'patch size {config.patch_size}', name='input_shape', value=(h, w))
    if config.num_maps != 4:
        raise ConfigError(f'ONNX export needs the four DPM heads, model has num_maps='
                          f'{config.num_maps}', name='num_maps', value=config.num_maps)
    weights_hash = state_dict_sha256(model)  # equals the checkpoint JSON's state_sha256
    out_dir = ensure_writable_dir(out_dir, 'ONNX export')
    stem = export_stem(model_name, (h, w), weights_hash)
    sidecar = out_dir / f'{stem}.json'
    if reuse and sidecar.is_file():
        try:
            existing = load_export(sidecar)
            logger.info('reusing ONNX export %s', sidecar)
            return existing
        except EngineError as exc:
            logger.warning('re-exporting: %s', exc)

    net = _fp32_cpu_eval(model)
    image = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        tokens = net.encode(image)
    encoder, decoder = _traceable(net, (h, w))
    graphs = {'encoder': (encoder, (image,), [ENCODER_INPUT], ['tokens']),
              'decoder': (decoder, (tokens, tokens), list(DECODER_INPUTS), list(OUTPUT_NAMES))}
    meta = {'format': _SIDECAR_FORMAT, 'model_name': model_name, 'height': h, 'width': w,
            'model_config': config.to_dict(), 'weights_sha256': weights_hash,
            'checkpoint': str(checkpoint) if checkpoint else None,
            'checkpoint_sha256': file_sha256(checkpoint) if checkpoint else None,
            'opset': opset, 'exporter': 'torch.onnx.export(dynamo=False)',
            'torch_version': torch.__version__, 'onnx_version': onnx.__version__,
            'normalisation': '(u8 / 255 - 0.5) / 0.5, RGB, NCHW',
            'created': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}
    for part, (module, args, inputs, outputs) in graphs.items():
        path = out_dir / f'{stem}.{part}.onnx'
        try:
            with torch.no_grad(), warnings.catch_warnings():
                # Shapes become constants on purpose (one file per resolution), and the
                # TorchScript exporter's deprecation notice is known (see module docstring).
                warnings.simplefilter('ignore', torch.jit.TracerWarning)
                warnings.simplefilter('ignore', DeprecationWarning)
                torch.onnx.export(module, args, str(path), dynamo=False, opset_version=opset,
                                  input_names=inputs, output_names=outputs,
                                  do_constant_folding=True)
            external = _move_weights_to_external_data(path)
            onnx.checker.check_model(str(path), full_check=True)
        except (RuntimeError, onnx.checker.ValidationError, onnx.shape_inference.InferenceError
                ) as exc:
            raise EngineError(f'ONNX export of the {part} failed: {exc}') from exc
        graph = onnx.load(str(path), load_external_data=False)
        meta[part] = {'file': path.name, 'sha256': file_sha256(path), **_io_spec(graph)}
        if external:
            # The graph file no longer contains the weights; the data file has its own hash
            # (the TensorRT engine cache folds it into its key, see tensorrt_engine.py).
            meta[part]['external_data'] = external.name
            meta[part]['external_data_sha256'] = file_sha256(external)
    sidecar.write_text(json.dumps(meta, indent=1))
    logger.info('exported %s (%dx%d) to %s', model_name, h, w, out_dir)
    return load_export(sidecar)


#: Graphs whose weights exceed this go to one external data file beside the .onnx. A
#: protobuf message cannot exceed 2 GiB, and the official model (571 M parameters, 2.3 GB in
#: float32) is close to that per graph; large inline graphs are also slow to parse and copy.
EXTERNAL_DATA_THRESHOLD_BYTES = 512 << 20


def _move_weights_to_external_data(path: Path):
    """Rewrite ``path`` with its initializers in ``<name>.data`` when they are large.

    The TorchScript exporter itself spills >2 GiB models into one file *per tensor* next to
    the graph; either way we end with a single ``<graph>.onnx.data`` (ONNX's documented
    ``save_model(save_as_external_data=True, all_tensors_to_one_file=True)``), which ONNX
    Runtime and the TensorRT parser find relative to the graph file. Returns the data file's
    path, or None when the graph stays self-contained.
    """
    import onnx
    proto = onnx.load(str(path), load_external_data=False)
    size = sum(t.ByteSize() for t in proto.graph.initializer)
    spilled = [t for t in proto.graph.initializer
               if t.data_location == onnx.TensorProto.EXTERNAL]
    if size < EXTERNAL_DATA_THRESHOLD_BYTES and not spilled:
        return None
    old_files = {entry.value for t in spilled for entry in t.external_data
                 if entry.key == 'location'}
    proto = onnx.load(str(path))                      # with every tensor's data
    data = path.with_name(path.name + '.data')
    data.unlink(missing_ok=True)                      # save appends to an existing file
    onnx.save_model(proto, str(path), save_as_external_data=True,
                    all_tensors_to_one_file=True, location=data.name, size_threshold=1024)
    for name in old_files - {data.name}:
        (path.parent / name).unlink(missing_ok=True)
    return data


def _fp32_cpu_eval(model):
    """The model itself when already fp32 on CPU in eval mode, else an fp32 CPU eval copy."""
    import copy

    import torch
    param = next(model.parameters())
    if param.dtype == torch.float32 and param.device.type == 'cpu' and not model.training:
        return model
    return copy.deepcopy(model).float().cpu().eval()


def _traceable(model, shape: tuple[int, int]):
    """``(encoder, decoder)`` modules wrapping ``model`` for the tracer.

    Defined here so that importing this module does not import torch.
    """
    import torch

    class EncoderGraph(torch.nn.Module):
        """``image [1, 3, H, W]`` -> ``tokens [1, N, C]``."""

        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, image):
            return self.model.encode(image)

    class DecoderGraph(torch.nn.Module):
        """Two token sets -> the eight maps as a tuple in OUTPUT_NAMES order."""

        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, tokens_i, tokens_j):
            out = self.model.decode(tokens_i, shape, tokens_j, shape)
            return tuple(out[name] for name in OUTPUT_NAMES)

    return EncoderGraph(), DecoderGraph()


@dataclass
class ParityResult:
    """ORT-vs-PyTorch errors per output: name -> (max abs err, mean abs err, max |ref|)."""

    errors: dict
    atol: float
    rtol: float
    worst_excess: float  # max over elements of |err| - (atol + rtol * |ref|); <= 0 passes

    @property
    def ok(self) -> bool:
        return self.worst_excess <= 0.0

    def table(self) -> str:
        lines = [f'{"output":<12}{"max abs err":>14}{"mean abs err":>14}{"max |ref|":>12}',
                 '-' * 52]
        for name, (max_err, mean_err, ref) in self.errors.items():
            lines.append(f'{name:<12}{max_err:>14.3e}{mean_err:>14.3e}{ref:>12.3e}')
        verdict = 'PASS' if self.ok else 'FAIL'
        lines.append(f'{verdict}: |err| <= {self.atol:g} + {self.rtol:g} * |ref| elementwise')
        return '\n'.join(lines)


def check_parity(model, export: OnnxExport, *, seed: int = 0, atol: float = 1e-4,
                 rtol: float = 1e-3, providers=('CPUExecutionProvider',)) -> ParityResult:
    """Compare ONNX Runtime against PyTorch (fp32, CPU) on a random real-valued image pair.

    The images are uniform in [-1, 1] (not quantised to uint8), the ORT decoder is fed the ORT
    encoder's tokens, so the errors are end to end.
    """
    import onnxruntime as ort
    import torch

    net = _fp32_cpu_eval(model)
    gen = torch.Generator().manual_seed(seed)
    img_i, img_j = (torch.rand(1, 3, *export.shape, generator=gen) * 2 - 1 for _ in range(2))
    with torch.no_grad():
        tok_i, tok_j = net.encode(img_i), net.encode(img_j)
        ref = net.decode(tok_i, export.shape, tok_j, export.shape)
    ref = {'tokens_i': tok_i, **{name: ref[name] for name in OUTPUT_NAMES}}
    enc = ort.InferenceSession(str(export.encoder_path), providers=list(providers))
    dec = ort.InferenceSession(str(export.decoder_path), providers=list(providers))
    ort_tok_i = enc.run(None, {ENCODER_INPUT: img_i.numpy()})[0]
    ort_tok_j = enc.run(None, {ENCODER_INPUT: img_j.numpy()})[0]
    outs = dec.run(list(OUTPUT_NAMES), {DECODER_INPUTS[0]: ort_tok_i,
                                        DECODER_INPUTS[1]: ort_tok_j})
    got = {'tokens_i': ort_tok_i, **dict(zip(OUTPUT_NAMES, outs))}
    errors, worst = {}, -np.inf
    for name, value in got.items():
        expected = ref[name].numpy().astype(np.float64)
        err = np.abs(value.astype(np.float64) - expected)
        errors[name] = (float(err.max()), float(err.mean()), float(np.abs(expected).max()))
        worst = max(worst, float((err - (atol + rtol * np.abs(expected))).max()))
    return ParityResult(errors, atol, rtol, worst)
