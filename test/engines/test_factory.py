"""Backend selection: automatic choice on this (CPU) machine, export reuse, error paths."""

import importlib.util
import logging

import numpy as np
import pytest

from pointmap_ros.engines.factory import choose_backend, create_engine
from pointmap_ros.engines.onnxruntime_engine import OnnxRuntimeEngine
from pointmap_ros.engines.torch_engine import TorchEngine
from pointmap_ros.errors import ConfigError, EngineError
from pointmap_ros.model.checkpoint import save_checkpoint
from pointmap_ros.types import Frame

HAS_TRT = importlib.util.find_spec('tensorrt') is not None
cpu_only = pytest.mark.skipif(__import__('torch').cuda.is_available(),
                              reason='checks the CPU-only choice; CUDA is present here')


@pytest.fixture(scope='module')
def checkpoint(models, tmp_path_factory):
    return save_checkpoint(models['tiny'], tmp_path_factory.mktemp('ckpt') / 'tiny_dpm')


@pytest.fixture(scope='module')
def cache_root(tmp_path_factory):
    return tmp_path_factory.mktemp('cache')


@cpu_only
@pytest.mark.slow
def test_auto_on_cpu_exports_once_then_reuses(checkpoint, cache_root, caplog):
    tmp_path = cache_root
    frame = Frame(np.full((64, 96, 3), 90, np.uint8), 0.0, 'k0')
    with caplog.at_level(logging.INFO, logger='pointmap_ros.engines'):
        first = create_engine(checkpoint=checkpoint, cache_dir=tmp_path, input_shape=(64, 96))
    assert isinstance(first, OnnxRuntimeEngine)
    assert 'no usable CUDA device' in first.info()['selection']
    assert any('inference backend: onnxruntime' in r.getMessage() for r in caplog.records)
    sidecars = list((tmp_path / 'onnx').glob('tiny_dpm-64x96-*.json'))
    assert len(sidecars) == 1
    mtime = sidecars[0].stat().st_mtime_ns
    caplog.clear()
    with caplog.at_level(logging.INFO, logger='pointmap_ros.engines'):
        second = create_engine(checkpoint=checkpoint, cache_dir=tmp_path, input_shape=(64, 96))
    assert any('reusing ONNX export' in r.getMessage() for r in caplog.records)
    assert sidecars[0].stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(first.infer(frame, frame).pts_i_tj,
                                  second.infer(frame, frame).pts_i_tj)


@cpu_only
def test_auto_default_resolution_is_checkpoint_native(checkpoint, cache_root):
    engine = create_engine(checkpoint=checkpoint, cache_dir=cache_root)
    assert engine.input_shape == (64, 96)     # tiny preset img_size


@cpu_only
@pytest.mark.slow
def test_auto_half_precision_on_cpu_falls_back_to_fp32(exports):
    engine = create_engine(onnx_dir=exports['tiny'].sidecar, precision='fp16')
    assert engine.info()['precision'] == 'fp32' and 'using fp32' in engine.selection


@cpu_only
def test_choose_backend_reasons():
    assert choose_backend(checkpoint='x')[0] == 'onnxruntime'
    assert choose_backend(onnx_dir='x', device='cuda')[0] == 'onnxruntime'


def test_explicit_backends(checkpoint, exports):
    torch_engine = create_engine('torch', checkpoint=checkpoint, device='cpu')
    assert isinstance(torch_engine, TorchEngine)
    assert torch_engine.selection == 'requested explicitly'
    ort_engine = create_engine('onnxruntime', onnx_dir=exports['tiny'].sidecar.parent,
                               input_shape=(64, 96), intra_op_threads=1)
    assert ort_engine.input_shape == (64, 96) and ort_engine.info()['model'] == 'tiny'


@pytest.mark.skipif(HAS_TRT, reason='checks the message shown when tensorrt is absent')
def test_explicit_tensorrt_without_module_names_it(exports):
    with pytest.raises(EngineError, match='`tensorrt`'):
        create_engine('tensorrt', onnx_dir=exports['tiny'].sidecar)


@pytest.mark.skipif(HAS_TRT, reason='checks the message shown when tensorrt is absent')
def test_engine_path_without_tensorrt_names_it(tmp_path):
    with pytest.raises(EngineError, match='`tensorrt`'):
        create_engine('tensorrt', engine_path=tmp_path / 'engine.trt.json')


@pytest.mark.parametrize('kwargs, match', [
    (dict(backend='tflite'), 'backend'),
    (dict(backend='torch', precision='int8'), 'precision'),
    (dict(backend='onnxruntime', precision='fp16', onnx_dir='x'), 'fp32 export'),
    (dict(backend='onnxruntime'), 'needs onnx_dir or checkpoint'),
    (dict(backend='torch'), 'needs a checkpoint'),
])
def test_invalid_configuration_is_config_error(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        create_engine(**kwargs)


def test_unwritable_cache_dir_is_engine_error(checkpoint, tmp_path):
    blocker = tmp_path / 'file'
    blocker.write_text('x')
    with pytest.raises(EngineError, match='not writable'):
        create_engine('onnxruntime', checkpoint=checkpoint, cache_dir=blocker)


def test_oracle_passes_kwargs_through():
    engine = create_engine('oracle', input_shape=(4, 6), source=lambda key_i, key_j: None,
                           noise_std=0.5)
    assert engine.backend == 'oracle' and engine.input_shape == (4, 6)
    assert engine.noise_std == 0.5


@cpu_only
@pytest.mark.parametrize('bf16_cpu, backend, precision', [
    ('1', 'torch', 'bf16'), ('0', 'onnxruntime', 'fp32')])
def test_auto_precision_on_cpu_follows_native_bf16(checkpoint, cache_root, monkeypatch,
                                                   bf16_cpu, backend, precision):
    """precision 'auto': torch bf16 where the CPU multiplies bf16 natively, else ORT fp32.
    POINTMAP_CPU_BF16 is the documented override of the /proc/cpuinfo detection."""
    monkeypatch.setenv('POINTMAP_CPU_BF16', bf16_cpu)
    engine = create_engine(checkpoint=checkpoint, cache_dir=cache_root, precision='auto')
    info = engine.info()
    assert (info['backend'], info['precision']) == (backend, precision), engine.selection
    engine.close()
