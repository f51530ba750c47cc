"""ONNX Runtime engine: agreement with the PyTorch model, encoding cache, owned outputs, errors."""

import json
import shutil

import numpy as np
import pytest
import torch

from pointmap_ros.engines.onnxruntime_engine import OnnxRuntimeEngine, normalise_image
from pointmap_ros.errors import EngineError, InputError
from pointmap_ros.types import MAP_NAMES, Frame


def _frames(shape, count, seed=0):
    rng = np.random.default_rng(seed)
    return [Frame(rng.integers(0, 256, (*shape, 3), dtype=np.uint8), stamp=0.1 * k,
                  key=f'cam0/{k}', camera_id='cam0') for k in range(count)]


@pytest.fixture(scope='module')
def engine(exports):
    with OnnxRuntimeEngine(exports['tiny'], intra_op_threads=1) as eng:
        yield eng


def test_normalise_image_range_and_layout():
    img = np.zeros((2, 3, 3), np.uint8)
    img[0, 1] = (0, 128, 255)
    out = normalise_image(img)
    assert out.shape == (1, 3, 2, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[0, :, 0, 1], [-1.0, 128 / 127.5 - 1, 1.0], atol=1e-6)


def test_infer_matches_pytorch_on_uint8_frames(engine, models):
    f_i, f_j = _frames(engine.input_shape, 2)
    maps = engine.infer(f_i, f_j)
    img = [torch.from_numpy(normalise_image(f.image)) for f in (f_i, f_j)]
    with torch.no_grad():
        ref = models['tiny'](*img)
    for name in MAP_NAMES:
        for kind in ('pts', 'conf'):
            got = getattr(maps, f'{kind}_{name}')
            want = ref[f'{kind}_{name}'][0].numpy()
            assert got.shape == want.shape and got.dtype == np.float32
            np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)
    assert (maps.key_i, maps.key_j) == ('cam0/0', 'cam0/1') and not maps.metric


def test_streaming_encodes_each_frame_once(engine):
    engine.clear_cache()
    hits, misses = engine.cache_hits, engine.cache_misses
    frames = _frames(engine.input_shape, 5, seed=1)
    for prev, cur in zip(frames, frames[1:]):
        engine.infer(prev, cur)
    assert engine.cache_misses - misses == 5       # one encode per frame
    assert engine.cache_hits - hits == 3           # previous frame reused for pairs 2..4


def test_outputs_are_owned_copies(engine):
    f_i, f_j = _frames(engine.input_shape, 2, seed=2)
    first = engine.infer(f_i, f_j)
    snapshot = first.pts_i_tj.copy()
    first.pts_i_tj[:] = 0.0
    second = engine.infer(f_i, f_j)
    np.testing.assert_array_equal(second.pts_i_tj, snapshot)
    assert first.pts_i_ti.flags.owndata or first.pts_i_ti.base is None


def test_wrong_size_is_input_error(engine):
    frame = _frames((32, 96), 1, seed=3)[0]
    frame = Frame(frame.image, stamp=9.0, key='cam0/wrong-size')
    with pytest.raises(InputError, match='expects 64x96'):
        engine.infer(frame, frame)


def test_info(engine, exports):
    info = engine.info()
    assert info['backend'] == 'onnxruntime' and info['input_shape'] == (64, 96)
    assert info['providers'] == ['CPUExecutionProvider']
    assert info['weights_sha256'] == exports['tiny'].weights_sha256


def test_unavailable_provider_is_engine_error(exports):
    with pytest.raises(EngineError, match='NoSuchExecutionProvider'):
        OnnxRuntimeEngine(exports['tiny'], providers=['NoSuchExecutionProvider'])


def test_corrupt_graph_is_engine_error(exports, tmp_path):
    src = exports['tiny']
    for path in (src.encoder_path, src.decoder_path, src.sidecar):
        shutil.copy(path, tmp_path / path.name)
    (tmp_path / src.encoder_path.name).write_bytes(b'not an onnx file')
    with pytest.raises(EngineError, match='cannot load'):
        OnnxRuntimeEngine(tmp_path / src.sidecar.name)


def test_swapped_graphs_are_engine_error(exports, tmp_path):
    src = exports['tiny']
    meta = dict(src.meta)
    meta['encoder'], meta['decoder'] = meta['decoder'], meta['encoder']
    for path in (src.encoder_path, src.decoder_path):
        shutil.copy(path, tmp_path / path.name)
    (tmp_path / 'swapped.json').write_text(json.dumps(meta))
    with pytest.raises(EngineError, match='expected'):
        OnnxRuntimeEngine(tmp_path / 'swapped.json')
