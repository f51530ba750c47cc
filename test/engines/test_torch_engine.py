"""PyTorch engine: streaming encode-once behaviour, equality with the model, errors, precision.

Tiny preset with seeded random weights, float32 CPU, 1 thread. fp16 runs only on CUDA (tests
marked ``gpu`` skip elsewhere); bf16 runs on CPU too (any CPU: without native bf16 it is slow,
not wrong). Half-precision tolerances are loose (relative 5e-2) because the network runs in
half precision while the heads' last projection and the exp post-processing stay fp32.
"""

import numpy as np
import pytest
import torch

from pointmap_ros.engines.torch_engine import TorchEngine
from pointmap_ros.errors import ConfigError, EngineError, InputError
from pointmap_ros.model import DynamicPointMapNet, ModelConfig
from pointmap_ros.model.checkpoint import save_checkpoint, state_dict_sha256
from pointmap_ros.types import MAP_NAMES, DynamicPointMaps, Frame

torch.set_num_threads(1)

H, W = 64, 96


@pytest.fixture(scope='module')
def model(models):
    """The seeded tiny model of conftest.py (heads perturbed away from the init's ~0)."""
    return models['tiny']


def _frames(n, shape=(H, W), seed=0):
    rng = np.random.default_rng(seed)
    return [Frame(rng.integers(0, 256, (*shape, 3), dtype=np.uint8), stamp=0.1 * t,
                  key=f'cam{seed}/{t}', camera_id=f'cam{seed}') for t in range(n)]


def _normalised(frame):
    img = torch.from_numpy(frame.image.astype(np.float32)).permute(2, 0, 1)[None]
    return (img / 255.0 - 0.5) / 0.5


def test_streaming_encodes_each_frame_once_and_matches_forward(model):
    engine = TorchEngine(model, input_shape=(H, W))
    calls = []
    hook = model.patch_embed.register_forward_hook(lambda *a: calls.append(1))
    try:
        frames = _frames(5)
        results = []
        for t in range(1, 5):                 # window: pairs (t-1, t) and (t-2, t)
            results.append((frames[t - 1], frames[t], engine.infer(frames[t - 1], frames[t])))
            if t >= 2:
                results.append((frames[t - 2], frames[t],
                                engine.infer(frames[t - 2], frames[t])))
    finally:
        hook.remove()
    assert len(calls) == 5 and engine.cache_misses == 5 and engine.cache_hits == 9
    for fi, fj, maps in results:
        assert isinstance(maps, DynamicPointMaps) and (maps.key_i, maps.key_j) == (fi.key, fj.key)
        with torch.no_grad():
            ref = model(_normalised(fi), _normalised(fj))
        for name in MAP_NAMES:
            assert maps.pts(name).shape == (H, W, 3) and maps.pts(name).dtype == np.float32
            np.testing.assert_allclose(maps.pts(name), ref[f'pts_{name}'][0].numpy(),
                                       rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(maps.conf(name), ref[f'conf_{name}'][0].numpy(),
                                       rtol=1e-5, atol=1e-5)
    assert not np.allclose(results[0][2].pts_i_ti, results[0][2].pts_i_tj)


def test_outputs_are_owned_copies(model):
    engine = TorchEngine(model)
    f = _frames(2)
    a = engine.infer(f[0], f[1])
    before = a.pts_i_ti.copy()
    engine.infer(f[1], f[0])
    assert a.pts_i_ti.flags.owndata and np.array_equal(a.pts_i_ti, before)


def test_any_patch_multiple_size_without_input_shape(model):
    engine = TorchEngine(model)
    assert engine.input_shape is None
    maps = engine.infer(*_frames(2, shape=(48, 80)))
    assert maps.pts_j_ti.shape == (48, 80, 3)
    with pytest.raises(InputError, match='multiple of the patch size'):
        engine.infer(*_frames(2, shape=(50, 80), seed=1))


def test_from_checkpoint_and_info(model, tmp_path):
    path = save_checkpoint(model, tmp_path / 'm')
    engine = TorchEngine(str(path))
    info = engine.info()
    assert info['backend'] == 'torch' and info['device'] == 'cpu'
    assert info['precision'] == 'fp32' and info['checkpoint'] == str(path)
    assert info['model_hash'] == state_dict_sha256(model)
    assert TorchEngine(model).info()['model_hash'] == info['model_hash']
    f = _frames(2)
    np.testing.assert_array_equal(engine.infer(*f).pts_i_tj, TorchEngine(model).infer(*f).pts_i_tj)


@pytest.mark.parametrize('kwargs, error, match', [
    ({'precision': 'int8'}, ConfigError, "precision 'int8' is not one of"),
    ({'precision': 'fp16'}, ConfigError, 'needs a CUDA device'),
    ({'input_shape': (60, 96)}, ConfigError, 'not a positive multiple of the patch size'),
])
def test_configuration_errors(model, kwargs, error, match):
    with pytest.raises(error, match=match):
        TorchEngine(model, **kwargs)


def test_two_map_model_is_refused():
    with pytest.raises(ConfigError, match='needs a 4-map DPM model'):
        TorchEngine(DynamicPointMapNet(ModelConfig.preset('tiny', num_maps=2)))


@pytest.mark.skipif(torch.cuda.is_available(), reason='CUDA is available here')
def test_cuda_without_cuda_is_an_engine_error(model):
    with pytest.raises(EngineError, match='CUDA is not available'):
        TorchEngine(model, device='cuda')


def test_frame_errors(model):
    engine = TorchEngine(model, input_shape=(H, W))
    good = _frames(1)[0]
    with pytest.raises(InputError, match='must be uint8 RGB'):
        engine.infer(Frame(good.image.astype(np.float32), 0.0, 'f'), good)
    with pytest.raises(InputError, match='expects 64x96'):
        engine.infer(_frames(1, shape=(32, 96))[0], good)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
@pytest.mark.parametrize('precision', ['fp32', 'fp16', 'bf16'])
def test_cuda_precisions_match_cpu(model, precision):
    frames = _frames(2)
    ref = TorchEngine(model).infer(*frames)
    gpu_model = DynamicPointMapNet(model.config)
    gpu_model.load_state_dict(model.state_dict())
    engine = TorchEngine(gpu_model, device='cuda', precision=precision)
    out = engine.infer(*frames)
    head = gpu_model.downstream_head1
    assert head.dpt.head[-1].weight.dtype == torch.float32           # raw outputs: always fp32
    if precision == 'fp16':                                          # fp16: whole heads fp32
        assert all(p.dtype == torch.float32 for p in head.parameters())
    tol = 1e-4 if precision == 'fp32' else 5e-2
    for name in MAP_NAMES:
        assert out.pts(name).dtype == np.float32 and np.isfinite(out.pts(name)).all()
        np.testing.assert_allclose(out.conf(name), ref.conf(name), rtol=tol, atol=tol)
        np.testing.assert_allclose(out.pts(name), ref.pts(name), rtol=tol,
                                   atol=tol * float(np.abs(ref.pts(name)).max()))
    engine.close()


def _relative_point_error(out, ref, name):
    """Per pixel ``|p - p_ref| / |p_ref|`` (points are in model units, scale-free)."""
    return (np.linalg.norm(out.pts(name) - ref.pts(name), axis=-1)
            / np.maximum(np.linalg.norm(ref.pts(name), axis=-1), 1e-6))


def test_cpu_bf16_matches_fp32_within_the_documented_bound(model):
    """bf16 on CPU (autocast + bf16 weights + NHWC convs) against fp32; the bound is the one
    documented in docs/engines.md (median relative point error <= 1e-2, confidence <= 2e-2)."""
    frames = _frames(2)
    ref = TorchEngine(model).infer(*frames)
    bf16_model = DynamicPointMapNet(model.config)
    bf16_model.load_state_dict(model.state_dict())
    engine = TorchEngine(bf16_model, precision='bf16')
    assert engine.precision == 'bf16' and engine.info()['model_hash'] == state_dict_sha256(model)
    assert bf16_model.enc_blocks[0].attn.qkv.weight.dtype == torch.bfloat16
    assert bf16_model.downstream_head1.dpt.head[-1].weight.dtype == torch.float32
    out = engine.infer(*frames)
    for name in MAP_NAMES:
        assert out.pts(name).dtype == np.float32 and out.pts(name).flags.c_contiguous
        assert np.isfinite(out.pts(name)).all() and np.isfinite(out.conf(name)).all()
        assert np.median(_relative_point_error(out, ref, name)) <= 1e-2, name
        conf_err = np.abs(out.conf(name) - ref.conf(name)) / ref.conf(name)
        assert np.median(conf_err) <= 2e-2, name


def test_auto_precision_follows_the_cpu_flags(model, monkeypatch):
    monkeypatch.setenv('POINTMAP_CPU_BF16', '0')
    assert TorchEngine(model, precision='auto').precision == 'fp32'
    monkeypatch.setenv('POINTMAP_CPU_BF16', '1')
    copy = DynamicPointMapNet(model.config)
    copy.load_state_dict(model.state_dict())
    assert TorchEngine(copy, precision='auto').precision == 'bf16'


def test_thread_governor_leaves_a_collapsed_thread_count_and_probes_back():
    from pointmap_ros.engines.torch_engine import ThreadGovernor
    governor = ThreadGovernor(2, probe_every=4)
    durations = iter([0.01, 0.01, 0.5])          # third call: 50x slower -> collapse
    sleep = lambda: __import__('time').sleep(next(durations))
    for _ in range(3):
        governor.run('decode', sleep)
    assert governor.current == 1
    for _ in range(3):                            # calls 4-6 at 1 thread
        governor.run('decode', lambda: __import__('time').sleep(0.01))
    assert governor.current == 1
    governor.run('decode', lambda: None)         # call 7 is a probe of 2 threads: fast again
    assert governor.current == 2


def test_thread_governor_backs_off_probes_that_lose_and_resets_on_a_switch():
    from pointmap_ros.engines.torch_engine import ThreadGovernor
    governor = ThreadGovernor(2, probe_every=4, max_probe_every=16)
    threads_seen = []

    def call(seconds_by_threads):
        def work():
            threads_seen.append(torch.get_num_threads())
            __import__('time').sleep(seconds_by_threads[torch.get_num_threads()])
        governor.run('decode', work)

    slow_two = {1: 0.001, 2: 0.02}              # the steady state of a busy machine
    governor.current = 1                        # (as after a collapse)
    for _ in range(4 + 8 + 16 + 16):
        call(slow_two)
    # Probes of 2 threads lost at calls 4, 12, 28 and 44: intervals 4, 8, 16, then capped.
    assert [i + 1 for i, n in enumerate(threads_seen) if n == 2] == [4, 12, 28, 44]
    assert governor.current == 1 and governor.probe_every == 16
    fast_two = {1: 0.02, 2: 0.001}               # the load went away
    for _ in range(16):
        call(fast_two)
    assert governor.current == 2 and governor.probe_every == 4   # call 60's probe won


def test_auto_threads_engine_matches_fixed_threads(model):
    frames = _frames(2)
    ref = TorchEngine(model, intra_op_threads=1).infer(*frames)
    out = TorchEngine(model, intra_op_threads='auto').infer(*frames)
    for name in MAP_NAMES:
        np.testing.assert_allclose(out.pts(name), ref.pts(name), rtol=1e-5, atol=1e-6)
    torch.set_num_threads(1)
