"""ONNX export: checker, ORT-vs-PyTorch parity, graph hygiene (no Expm1, baked RoPE), sidecar."""

import json

import onnx
import pytest
import torch

from pointmap_ros.engines.onnx_export import (DECODER_INPUTS, ENCODER_INPUT, OUTPUT_NAMES,
                                              check_parity, export_onnx, find_exports,
                                              load_export)
from pointmap_ros.engines.trt_ops import dynamic_ops, op_histogram
from pointmap_ros.errors import ConfigError, EngineError
from pointmap_ros.model import DynamicPointMapNet, ModelConfig
from pointmap_ros.model.checkpoint import state_dict_sha256

# Bound of the parity check: |ort - torch| <= ATOL + RTOL * |torch| per element.
ATOL, RTOL = 1e-4, 1e-3


@pytest.mark.parametrize('preset', ['tiny', 'small'])
@pytest.mark.slow
def test_graphs_pass_checker(exports, preset):
    for path in (exports[preset].encoder_path, exports[preset].decoder_path):
        onnx.checker.check_model(str(path), full_check=True)


@pytest.mark.parametrize('preset', ['tiny', 'small'])
def test_ort_matches_pytorch(models, exports, preset):
    result = check_parity(models[preset], exports[preset], seed=3, atol=ATOL, rtol=RTOL)
    print(f'\n{preset} {exports[preset].shape}\n{result.table()}')
    assert result.ok, result.table()
    assert set(result.errors) == {'tokens_i', *OUTPUT_NAMES}


def test_parity_check_can_fail(models, exports):
    # A model that differs from the exported one must be caught (guards against a check that
    # compares a graph with itself).
    other = DynamicPointMapNet(ModelConfig.preset('tiny')).eval()
    other.load_state_dict(models['tiny'].state_dict())
    with torch.no_grad():
        other.head(3).parameters().__next__().mul_(1.5)
    result = check_parity(other, exports['tiny'])
    assert not result.ok and 'FAIL' in result.table()
    assert result.errors['pts_i_tj'][0] > 10 * result.errors['pts_i_ti'][0]


@pytest.mark.parametrize('preset', ['tiny', 'small'])
def test_no_expm1_no_dynamic_rope(exports, preset):
    for path in (exports[preset].encoder_path, exports[preset].decoder_path):
        ops = op_histogram(str(path))
        assert 'Expm1' not in ops
        assert all('::' not in op for op in ops), ops     # no ATen / custom-domain fallbacks
        # Baked RoPE: cos/sin tables are constants, nothing computes angles or ranges.
        assert not {'Cos', 'Sin'} & set(ops)
        assert dynamic_ops(str(path)) == []
    assert op_histogram(str(exports[preset].decoder_path))['Exp'] == 8   # 4 depth + 4 conf


def test_io_names_and_static_shapes(exports):
    export = exports['tiny']
    h, w = export.shape
    enc = export.meta['encoder']
    assert enc['inputs'] == [{'name': ENCODER_INPUT, 'shape': [1, 3, h, w], 'dtype': 'float32'}]
    n_tokens = (h // 16) * (w // 16)
    assert enc['outputs'][0]['shape'] == [1, n_tokens, 96]
    dec = export.meta['decoder']
    assert [i['name'] for i in dec['inputs']] == list(DECODER_INPUTS)
    shapes = {o['name']: o['shape'] for o in dec['outputs']}
    assert list(shapes) == list(OUTPUT_NAMES)
    assert shapes['pts_j_ti'] == [1, h, w, 3] and shapes['conf_i_tj'] == [1, h, w]


def test_sidecar_and_file_names(models, exports):
    export = exports['small']
    meta = json.loads(export.sidecar.read_text())
    digest = state_dict_sha256(models['small'])
    assert export.sidecar.name == f'small-96x128-{digest[:8]}.json'
    assert export.encoder_path.name == f'small-96x128-{digest[:8]}.encoder.onnx'
    assert meta['weights_sha256'] == digest and meta['opset'] == 17
    assert meta['torch_version'] == torch.__version__ and meta['created'].startswith('20')
    assert ModelConfig.from_dict(meta['model_config']) == models['small'].config
    assert meta['checkpoint'] is None and meta['checkpoint_sha256'] is None


def test_reuse_returns_existing_files(models, exports):
    export = exports['tiny']
    before = export.encoder_path.stat().st_mtime_ns
    again = export_onnx(models['tiny'], export.sidecar.parent, export.shape, model_name='tiny')
    assert again == export and export.encoder_path.stat().st_mtime_ns == before


def test_load_export_from_folder(exports):
    folder = exports['tiny'].sidecar.parent
    assert exports['small'].sidecar.parent == folder
    assert len(find_exports(folder)) == 2
    assert load_export(folder, (64, 96)) == exports['tiny']
    with pytest.raises(ConfigError, match='2 ONNX exports'):
        load_export(folder)
    with pytest.raises(EngineError, match='no ONNX export at 32x32'):
        load_export(folder, (32, 32))


def test_load_export_errors(tmp_path, exports):
    with pytest.raises(EngineError, match='cannot read'):
        load_export(tmp_path / 'absent.json')
    for name, text in (('other.json', '{"format": 99}'), ('list.json', '[1, 2]')):
        (tmp_path / name).write_text(text)
        with pytest.raises(EngineError, match='not a pointmap_ros ONNX export'):
            load_export(tmp_path / name)
    meta = dict(exports['tiny'].meta)
    (tmp_path / 'orphan.json').write_text(json.dumps(meta))      # ONNX files not copied
    with pytest.raises(EngineError, match='is missing'):
        load_export(tmp_path / 'orphan.json')


def test_export_rejects_bad_inputs(models, tmp_path):
    with pytest.raises(ConfigError, match='multiples of the patch size'):
        export_onnx(models['tiny'], tmp_path, (60, 96))
    two_maps = DynamicPointMapNet(ModelConfig.preset('tiny', num_maps=2)).eval()
    with pytest.raises(ConfigError, match='num_maps=2'):
        export_onnx(two_maps, tmp_path, (64, 96))


@pytest.mark.filterwarnings('ignore:Exporting to ONNX opset version 99')  # expected here
def test_exporter_failure_is_engine_error(models, tmp_path):
    with pytest.raises(EngineError, match='ONNX export of the encoder failed'):
        export_onnx(models['tiny'], tmp_path, (64, 96), opset=99)


def test_unwritable_output_folder_is_engine_error(models, tmp_path):
    blocker = tmp_path / 'file'
    blocker.write_text('x')
    with pytest.raises(EngineError, match='not writable'):
        export_onnx(models['tiny'], blocker / 'onnx', (64, 96))


def test_large_weights_go_to_one_external_data_file(models, tmp_path, monkeypatch):
    """Graphs over the threshold keep their weights in ``<graph>.onnx.data`` (the official
    size needs this: 2.3 GB of float32 weights vs protobuf's 2 GiB limit); the threshold is
    lowered here so the tiny model takes the same path, and ONNX Runtime must load it."""
    import numpy as np
    from pointmap_ros.engines import onnx_export as module
    from pointmap_ros.engines.onnxruntime_engine import OnnxRuntimeEngine
    from pointmap_ros.types import Frame
    monkeypatch.setattr(module, 'EXTERNAL_DATA_THRESHOLD_BYTES', 1)
    export = module.export_onnx(models['tiny'], tmp_path, (64, 96), model_name='tiny')
    for part in ('encoder', 'decoder'):
        assert export.meta[part]['external_data'] == export.meta[part]['file'] + '.data'
        assert (tmp_path / export.meta[part]['external_data']).stat().st_size > 10_000
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix not in ('.json',)) == sorted(
        [export.meta[p]['file'] for p in ('encoder', 'decoder')]
        + [export.meta[p]['external_data'] for p in ('encoder', 'decoder')])
    rng = np.random.default_rng(0)
    frames = [Frame(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8), 0.1 * k, f'f{k}')
              for k in range(2)]
    out = OnnxRuntimeEngine(export, providers=['CPUExecutionProvider']).infer(*frames)
    assert np.isfinite(out.pts_i_tj).all()
