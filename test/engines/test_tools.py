"""Command-line tools: pointmap-export-onnx, pointmap-build-engine, pointmap-bench."""

import importlib.util
import json

import pytest
import torch

from pointmap_ros.tools import bench, build_engine, export_onnx

HAS_TRT = importlib.util.find_spec('tensorrt') is not None


def test_export_cli_prints_parity_and_writes_files(tmp_path, capsys):
    assert export_onnx.main(['--preset', 'tiny', '--resolution', '96x64', '--out',
                             str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert 'PASS' in out and 'TensorRT 10 ops OK' in out and 'pts_j_ti' in out
    sidecar, = tmp_path.glob('tiny-64x96-*.json')
    assert json.loads(sidecar.read_text())['height'] == 64


def test_export_cli_bad_resolution_exits(tmp_path):
    with pytest.raises(SystemExit) as info:
        export_onnx.main(['--preset', 'tiny', '--resolution', '96by64', '--out', str(tmp_path)])
    assert info.value.code == 2


def test_export_cli_missing_checkpoint_fails(tmp_path, capsys):
    assert export_onnx.main(['--checkpoint', str(tmp_path / 'absent.json'), '--out',
                             str(tmp_path)]) == 1
    assert 'absent.json' in capsys.readouterr().err


@pytest.mark.skipif(HAS_TRT, reason='checks the message shown when tensorrt is absent')
def test_build_engine_cli_without_tensorrt_fails_clearly(exports, capsys):
    assert build_engine.main(['--onnx', str(exports['tiny'].sidecar)]) == 1
    assert '`tensorrt`' in capsys.readouterr().err


@pytest.mark.slow
def test_bench_runs_both_modes():
    torch.set_num_threads(1)
    rows = bench.run_benchmark(['tiny'], ['224x224'], ['onnxruntime'], pairs=2, warmup=1,
                               threads=1, log=lambda text: None)
    assert [(r['mode'], r['encodes_per_pair']) for r in rows] == [('cached', 1),
                                                                 ('uncached', 2)]
    for row in rows:
        assert row['pairs'] == 2 and row['pairs_per_s'] > 0
        assert row['p95_ms'] >= row['median_ms'] > 0 and row['peak_rss_mb'] > 0
    table = bench.format_table(rows)
    assert table.splitlines()[0].split()[:3] == ['model', 'WxH', 'backend']
    assert len(table.splitlines()) == 3 and 'onnxruntime' in table


def test_bench_worker_failure_is_reported():
    spec = dict(size='huge', resolution='224x224', backend='onnxruntime', precision='fp32',
                device='cpu', pairs=1, warmup=0, threads=1)
    with pytest.raises(RuntimeError, match="unknown model preset 'huge'"):
        bench._run_isolated(spec)


@pytest.mark.parametrize('argv', [['--pairs', '0'], ['--sizes', 'huge'],
                                  ['--resolutions', '640x480'], ['--backends', 'tflite']])
def test_bench_rejects_bad_arguments(argv):
    with pytest.raises(SystemExit) as info:
        bench.main(argv)
    assert info.value.code == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the no-CUDA message')
def test_bench_cuda_without_gpu_exits():
    with pytest.raises(SystemExit):
        bench.main(['--device', 'cuda'])


def test_bench_int8_export_runs_close_to_float32(exports, tmp_path):
    """The interleaved bench's int8 row: a real ONNX Runtime engine on the dynamically
    quantised graphs, whose maps stay within 2 % of the float32 graphs' range on one pair
    (int8 weights with per-call activation scales; the convolutions stay float32)."""
    import numpy as np
    from pointmap_ros.engines.onnxruntime_engine import OnnxRuntimeEngine
    from pointmap_ros.tools.bench_interleaved import _dynamic_int8
    from pointmap_ros.types import Frame

    export = exports['tiny']
    quantised = _dynamic_int8(export, tmp_path / 'int8')
    assert quantised.shape == export.shape
    assert quantised.decoder_path.parent == tmp_path / 'int8'
    rng = np.random.default_rng(0)
    frames = [Frame(rng.integers(0, 256, (*export.shape, 3), dtype=np.uint8), stamp=0.1 * k,
                    key=f'f{k}') for k in range(2)]
    reference = OnnxRuntimeEngine(export, intra_op_threads=1).infer(*frames)
    maps = OnnxRuntimeEngine(quantised, intra_op_threads=1).infer(*frames)
    for name in ('i_ti', 'i_tj', 'j_ti', 'j_tj'):
        expected, got = reference.pts(name), maps.pts(name)
        span = float(expected.max() - expected.min())
        assert np.isfinite(got).all()
        assert float(np.abs(got - expected).max()) <= 0.02 * span, name
        assert not np.array_equal(got, expected), name  # the int8 graph really ran
