"""Conformance of DynamicPointMapNet with the public DUSt3R reference implementation.

Vectors: ``shared/reference/<set>/`` (README there) were produced by naver/dust3r @ 4c24a6e with
croco @ d7de070 (pure-PyTorch RoPE2D), torch 2.13 CPU, seeded random weights: tiny_linear and
tiny_dpt (DPT widths 32/16/[16,32,64,128]), three cases each (64x96 landscape, 112x80 portrait
with an odd 7x5 grid, 64x96 + 80x112 mixed sizes). Further vector sets of the same form run too:
list their directories in ``POINTMAP_CONFORMANCE_DIRS`` (os.pathsep-separated).

Tolerances (README's suggestion for float32, CPU, 1 thread): outputs ``allclose(rtol=1e-4,
atol=1e-4)`` against the float32 and the float64 references; intermediates (patch embedding,
encoder output, decoder input, every decoder block, raw head output) absolute 5e-5. Real bugs
(swapped RoPE halves, base 10000, swapped decoders, align_corners=False) give errors of 1-33.
"""

import os
from pathlib import Path

from helpers import shared_path
import pytest
import torch

from pointmap_ros.model.conformance import (INTERMEDIATE_KEYS, OUTPUT_KEYS, check_case,
                                            is_vector_dir, list_cases, load_vector_model)

torch.set_num_threads(1)

def _vector_dirs() -> list[Path]:
    shared = shared_path()
    found = sorted(p for p in (shared / 'reference').glob('*') if is_vector_dir(p))
    extra = [Path(p) for p in os.environ.get('POINTMAP_CONFORMANCE_DIRS', '').split(os.pathsep)
             if p]
    return found + extra


def _cases():
    params = []
    for vec_dir in _vector_dirs():
        for case in list_cases(vec_dir) or [vec_dir / 'case_*.npz (none found)']:
            params.append(pytest.param(vec_dir, case, id=f'{vec_dir.name}-{case.stem}'))
    return params or [pytest.param(None, None, id='no-vectors')]


_MODELS = {}


def _model(vec_dir: Path):
    if vec_dir not in _MODELS:
        _MODELS[vec_dir] = load_vector_model(vec_dir)
    return _MODELS[vec_dir]


@pytest.mark.parametrize('vec_dir, case', _cases())
def test_matches_reference(vec_dir, case):
    """Every output and intermediate of the case matches within the documented tolerances."""
    if vec_dir is None:
        pytest.skip('no reference vectors: shared/reference not found beside the repository '
                    'and POINTMAP_CONFORMANCE_DIRS unset')
    assert is_vector_dir(vec_dir), f'{vec_dir} lacks config.json / weights.safetensors'
    assert case.is_file(), f'{vec_dir} holds no case_*.npz'
    results = check_case(_model(vec_dir), case)
    compared = {r.name for r in results}
    assert set(OUTPUT_KEYS) <= compared, f'outputs missing from {case.name}'
    failures = [f'{r.case}:{r.name} max|err|={r.max_abs_err:.2e} (atol {r.atol}, rtol {r.rtol})'
                for r in results if not r.ok]
    assert not failures, '\n'.join(failures)


def test_shipped_vectors_cover_both_heads_and_all_intermediates():
    """The shared vectors exercise linear and DPT heads and every intermediate we compare."""
    dirs = {p.name: p for p in _vector_dirs()}
    if not {'tiny_linear', 'tiny_dpt'} <= set(dirs):
        pytest.skip('shared/reference not found')
    for name in ('tiny_linear', 'tiny_dpt'):
        cases = list_cases(dirs[name])
        assert len(cases) == 3
        results = check_case(_model(dirs[name]), cases[0])
        assert set(INTERMEDIATE_KEYS) <= {r.name for r in results}
        assert _model(dirs[name]).config.head_type == name.split('_')[1]


def test_checker_detects_swapped_decoders():
    """The check is not vacuous: exchanging the two decoders' weights fails it by far."""
    dirs = {p.name: p for p in _vector_dirs()}
    if 'tiny_linear' not in dirs:
        pytest.skip('shared/reference not found')
    model = load_vector_model(dirs['tiny_linear'])
    state = model.state_dict()
    swapped = {k.replace('dec_blocks.', 'TMP.').replace('dec_blocks2.', 'dec_blocks.')
               .replace('TMP.', 'dec_blocks2.'): v for k, v in state.items()}
    model.load_state_dict(swapped)
    results = check_case(model, list_cases(dirs['tiny_linear'])[0])
    worst = max(r.max_abs_err for r in results if r.name == 'res1_pts3d')
    assert worst > 1e-2
