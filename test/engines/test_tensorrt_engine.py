"""TensorRT backend. Without tensorrt + CUDA (CI) only the import guard is exercised; the
execution tests are marked ``gpu`` and skipped with the reason."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pointmap_ros.engines.onnxruntime_engine import OnnxRuntimeEngine
from pointmap_ros.engines.tensorrt_engine import TensorRTEngine, import_tensorrt, read_manifest
from pointmap_ros.errors import EngineError
from pointmap_ros.types import MAP_NAMES, Frame

HAS_TRT = importlib.util.find_spec('tensorrt') is not None
needs_trt = pytest.mark.skipif(not (HAS_TRT and torch.cuda.is_available()),
                               reason='needs the tensorrt module (TensorRT 10) and a CUDA GPU')


@pytest.mark.skipif(HAS_TRT, reason='checks the error raised when tensorrt is absent')
def test_missing_tensorrt_is_engine_error_at_construction(exports):
    with pytest.raises(EngineError, match='TensorRT 10 Python module `tensorrt`'):
        import_tensorrt()
    with pytest.raises(EngineError, match='not importable'):
        TensorRTEngine(exports['tiny'])


def test_manifest_round_trip_and_errors(tmp_path):
    fields = {'onnx': '/x/tiny-64x96-0123abcd.json', 'precision': 'fp16', 'cache_dir': '/c'}
    (tmp_path / 'm.json').write_text(json.dumps({**fields, 'gpu': 'ignored'}))
    assert read_manifest(tmp_path / 'm.json') == fields
    (tmp_path / 'partial.json').write_text(json.dumps({'onnx': 'x'}))
    for name in ('partial.json', 'absent.json'):
        with pytest.raises(EngineError, match='cannot read TensorRT engine manifest'):
            read_manifest(tmp_path / name)


def _frames(shape, seed=0):
    rng = np.random.default_rng(seed)
    return [Frame(rng.integers(0, 256, (*shape, 3), dtype=np.uint8), 0.1 * k, f'c/{k}')
            for k in range(2)]


@pytest.mark.gpu
@needs_trt
@pytest.mark.parametrize('precision, rtol, atol', [('fp32', 1e-3, 1e-3), ('fp16', 3e-2, 3e-2)])
def test_tensorrt_matches_onnxruntime_and_caches(exports, tmp_path, precision, rtol, atol):
    export = exports['tiny']
    frames = _frames(export.shape)
    ref = OnnxRuntimeEngine(export).infer(*frames)
    with TensorRTEngine(export, precision=precision, cache_dir=tmp_path) as engine:
        got = engine.infer(*frames)
        files = dict(engine.engine_files)
    for name in MAP_NAMES:
        np.testing.assert_allclose(got.pts(name), ref.pts(name), rtol=rtol, atol=atol)
        np.testing.assert_allclose(got.conf(name), ref.conf(name), rtol=rtol, atol=atol)
    mtimes = {part: Path(p).stat().st_mtime_ns for part, p in files.items()}
    with TensorRTEngine(export, precision=precision, cache_dir=tmp_path) as again:  # cache hit
        assert {p: Path(f).stat().st_mtime_ns for p, f in again.engine_files.items()} \
            == mtimes


@pytest.mark.gpu
@needs_trt
def test_corrupt_cached_engine_is_rebuilt(exports, tmp_path):
    export = exports['tiny']
    with TensorRTEngine(export, precision='fp32', cache_dir=tmp_path) as engine:
        path = engine.engine_files['decoder']
    with open(path, 'wb') as f:
        f.write(b'truncated engine')
    with TensorRTEngine(export, precision='fp32', cache_dir=tmp_path) as engine:
        maps = engine.infer(*_frames(export.shape))
    assert np.isfinite(maps.pts_i_ti).all()
