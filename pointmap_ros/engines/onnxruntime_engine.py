"""ONNX Runtime backend: runs the encoder / decoder graphs of one :class:`OnnxExport`.

CPU in CI and on robots without a GPU (the automatic default there); the CUDA execution
provider where the onnxruntime-gpu build is installed. Needs no PyTorch at run time.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pointmap_ros.engines.base import Engine, EngineInfo
from pointmap_ros.engines.onnx_export import (DECODER_INPUTS, ENCODER_INPUT, OUTPUT_NAMES,
                                              OnnxExport, load_export)
from pointmap_ros.errors import EngineError
from pointmap_ros.types import DynamicPointMaps, Frame

__all__ = ['OnnxRuntimeEngine', 'normalise_image']

logger = logging.getLogger(__name__)


def normalise_image(image: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB -> ``[1, 3, H, W]`` float32 in [-1, 1] (``(u8/255 - 0.5)/0.5``).

    NumPy twin of :func:`pointmap_ros.model.dpm.image_to_input`: this backend runs without
    torch.
    """
    img = image.astype(np.float32).transpose(2, 0, 1)[None]    # [1, 3, H, W]
    return np.ascontiguousarray((img / 255.0 - 0.5) / 0.5, dtype=np.float32)


class OnnxRuntimeEngine(Engine):
    """DPM inference with ONNX Runtime sessions.

    Args:
        export: an :class:`OnnxExport`, its sidecar JSON, or a folder holding exports.
        input_shape: ``(H, W)`` to pick an export from a folder holding several.
        providers: execution providers in priority order, e.g.
            ``['CUDAExecutionProvider', 'CPUExecutionProvider']``; None means CPU.
        intra_op_threads: threads per operator; 0 lets ONNX Runtime decide.
        cache_size: encodings kept in the LRU cache.

    Raises:
        EngineError: onnxruntime missing, a requested provider unavailable, or a graph that
            fails to load or does not have the expected tensor names.
    """

    backend = 'onnxruntime'

    def __init__(self, export: OnnxExport | str | Path, *,
                 input_shape: tuple[int, int] | None = None, providers=None,
                 intra_op_threads: int = 0, cache_size: int = 16):
        super().__init__(cache_size)
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise EngineError(f'the onnxruntime backend needs `onnxruntime` ({exc})') from exc
        self.export = export if isinstance(export, OnnxExport) else load_export(export,
                                                                                input_shape)
        providers = list(providers or ['CPUExecutionProvider'])
        available = ort.get_available_providers()
        missing = [p for p in providers if p not in available]
        if missing:
            raise EngineError(f'ONNX Runtime execution providers {missing} are not available '
                              f'(available: {available})')
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(intra_op_threads)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._encoder = self._session(ort, self.export.encoder_path, options, providers,
                                      [ENCODER_INPUT], ['tokens'])
        self._decoder = self._session(ort, self.export.decoder_path, options, providers,
                                      list(DECODER_INPUTS), list(OUTPUT_NAMES))
        self.providers = self._encoder.get_providers()
        logger.info('onnxruntime engine %s %dx%d on %s', self.export.model_name,
                    *self.export.shape, self.providers)

    @staticmethod
    def _session(ort, path, options, providers, inputs, outputs):
        try:
            session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as exc:  # ORT raises its own exception types (Fail, InvalidGraph...)
            raise EngineError(f'ONNX Runtime cannot load {path}: {exc}') from exc
        got_in = [i.name for i in session.get_inputs()]
        got_out = [o.name for o in session.get_outputs()]
        if got_in != inputs or sorted(got_out) != sorted(outputs):
            raise EngineError(f'{path} has tensors {got_in} -> {got_out}, expected {inputs} -> '
                              f'{outputs}')
        return session

    @property
    def input_shape(self) -> tuple[int, int]:
        return self.export.shape

    def encode(self, frame: Frame) -> np.ndarray:
        """Encoder tokens ``[1, N, C]`` float32 of one frame."""
        return self._encoder.run(None, {ENCODER_INPUT: normalise_image(frame.image)})[0]

    def decode(self, enc_i: np.ndarray, enc_j: np.ndarray, frame_i: Frame,
               frame_j: Frame) -> DynamicPointMaps:
        outs = self._decoder.run(list(OUTPUT_NAMES), {DECODER_INPUTS[0]: enc_i,
                                                      DECODER_INPUTS[1]: enc_j})
        # from_flat copies, so the result never aliases ORT-owned memory.
        return DynamicPointMaps.from_flat(dict(zip(OUTPUT_NAMES, outs)), key_i=frame_i.key,
                                          key_j=frame_j.key)

    def info(self) -> EngineInfo:
        return EngineInfo(backend=self.backend,
                          cross_time_heads=self.cross_time_heads, input_shape=self.input_shape,
                          precision='fp32', providers=list(self.providers),
                          model=self.export.model_name,
                          weights_sha256=self.export.weights_sha256,
                          onnx=str(self.export.sidecar),
                          selection=self.selection)

    def close(self) -> None:
        super().close()
        self._encoder = self._decoder = None
