"""Engine cache: key covers every dependency, file naming, hit/miss, loud unwritable folder."""

import logging

import pytest

from pointmap_ros.engines.engine_cache import EngineCache, cache_key, default_cache_root
from pointmap_ros.errors import ConfigError, EngineError

BASE = dict(onnx_sha256='a' * 64, height=288, width=512, precision='fp16',
            trt_version='10.13.3', gpu_name='NVIDIA H100 80GB HBM3', compute_capability=(9, 0))


def test_key_is_stable():
    assert cache_key(**BASE) == cache_key(**BASE)
    assert cache_key(**BASE) == cache_key(**{**BASE, 'compute_capability': '9.0'})


@pytest.mark.parametrize('field, value', [
    ('onnx_sha256', 'b' * 64), ('height', 384), ('width', 384), ('precision', 'fp32'),
    ('trt_version', '10.14.1'), ('gpu_name', 'Orin'), ('compute_capability', (8, 7))])
def test_key_changes_with_each_component(field, value):
    assert cache_key(**{**BASE, field: value}) != cache_key(**BASE)


def test_key_does_not_confuse_height_and_width():
    swapped = cache_key(**{**BASE, 'height': 512, 'width': 288})
    assert swapped != cache_key(**BASE)


@pytest.mark.parametrize('field, value', [('precision', 'int8'), ('height', 0), ('width', -16)])
def test_key_rejects_bad_values(field, value):
    with pytest.raises(ConfigError) as info:
        cache_key(**{**BASE, field: value})
    assert str(value) in str(info.value)


def test_engine_path_names_model_shape_precision_key(tmp_path):
    cache = EngineCache(tmp_path)
    key = cache_key(**BASE)
    path = cache.engine_path('small decoder', (288, 512), 'fp16', key)
    assert path.parent == tmp_path
    assert path.name == f'small_decoder-288x512-fp16-{key[:12]}.engine'
    assert cache.timing_cache_path('10.13.3', 'NVIDIA H100').name == \
        'timing-10.13.3-NVIDIA_H100.cache'


def test_store_then_hit_and_miss_logged(tmp_path, caplog):
    cache = EngineCache(tmp_path / 'engines')
    path = cache.engine_path('m', (64, 96), 'fp32', cache_key(**BASE))
    with caplog.at_level(logging.INFO, logger='pointmap_ros.engines.engine_cache'):
        assert cache.load(path) is None
        cache.store(path, b'serialized-engine')
        assert cache.load(path) == b'serialized-engine'
    messages = [r.getMessage() for r in caplog.records]
    assert any('miss' in m for m in messages) and any('hit' in m for m in messages)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp files left
    cache.invalidate(path)
    assert not path.exists()


def test_unwritable_folder_raises_engine_error(tmp_path):
    # A path below a regular file can never be created, even by root (chmod would not stop
    # root, which runs these tests in containers).
    blocker = tmp_path / 'file'
    blocker.write_text('x')
    with pytest.raises(EngineError, match='not writable'):
        EngineCache(blocker / 'engines')


def test_store_failure_raises_engine_error(tmp_path):
    cache = EngineCache(tmp_path / 'engines')
    path = cache.engine_path('m', (64, 96), 'fp32', cache_key(**BASE))
    (tmp_path / 'engines').rmdir()
    with pytest.raises(EngineError, match='cannot write engine file'):
        cache.store(path, b'x')


def test_default_root_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
    assert default_cache_root() == tmp_path / 'pointmap_ros'
    assert EngineCache().cache_dir == tmp_path / 'pointmap_ros' / 'engines'
    monkeypatch.delenv('XDG_CACHE_HOME')
    monkeypatch.setenv('HOME', str(tmp_path / 'home'))
    assert default_cache_root() == tmp_path / 'home' / '.cache' / 'pointmap_ros'
