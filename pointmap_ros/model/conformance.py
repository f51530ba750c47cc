"""Check the network against reference vectors produced by the public DUSt3R implementation.

A vector directory holds ``config.json`` (the reference constructor arguments, an optional
``dpt_head_override`` with the DPT widths and ``dpt_hooks``), ``weights.safetensors`` (the
reference state dict) and ``case_*.npz`` (inputs, outputs and intermediates; see
``shared/reference/README.md``). Any directory of that form can be checked, whatever its sizes.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pointmap_ros.model.checkpoint import load_state_dict_checked
from pointmap_ros.model.config import ModelConfig
from pointmap_ros.model.dpm import DynamicPointMapNet
from pointmap_ros.model.official_config import config_from_official_kwargs

__all__ = ['OUTPUT_KEYS', 'INTERMEDIATE_KEYS', 'CaseResult', 'is_vector_dir', 'vector_config',
           'load_vector_model', 'list_cases', 'check_case']

#: npz output name -> our output name (view 1 = image i, view 2 = image j).
OUTPUT_KEYS = {'res1_pts3d': 'pts_i_ti', 'res1_conf': 'conf_i_ti',
               'res2_pts3d_in_other_view': 'pts_j_tj', 'res2_conf': 'conf_j_tj'}
#: npz intermediates compared (same names in :meth:`DynamicPointMapNet.forward_intermediates`).
INTERMEDIATE_KEYS = tuple(f'{name}{k}_{part}' for k in (1, 2) for name, part in (
    ('enc', 'patch_embed'), ('enc', 'out'), ('dec', 'in'), ('dec', 'blocks'), ('head', 'raw')))


def _inf_strings(value):
    """config.json writes float infinities as the strings '-inf' / 'inf'."""
    if isinstance(value, (list, tuple)):
        return tuple(_inf_strings(v) for v in value)
    if value in ('inf', '-inf'):
        return float(value)
    return value


def is_vector_dir(path) -> bool:
    path = Path(path)
    return (path / 'config.json').is_file() and (path / 'weights.safetensors').is_file()


def vector_config(path) -> ModelConfig:
    """2-map :class:`ModelConfig` of a vector directory (sizes from its ``config.json``)."""
    meta = json.loads((Path(path) / 'config.json').read_text())
    kwargs = {k: _inf_strings(v) for k, v in meta['constructor_kwargs'].items()}
    config = config_from_official_kwargs(meta.get('model_class', 'AsymmetricCroCo3DStereo'),
                                         kwargs, num_maps=2)
    override = meta.get('dpt_head_override') or {}
    changes = {}
    if 'feature_dim' in override:
        changes['dpt_feature_dim'] = override['feature_dim']
    if 'last_dim' in override:
        changes['dpt_last_dim'] = override['last_dim']
    if 'layer_dims' in override:
        changes['dpt_layer_dims'] = tuple(override['layer_dims'])
    if meta.get('dpt_hooks') is not None and config.head_type == 'dpt':
        changes['dpt_hooks'] = tuple(meta['dpt_hooks'])
    return dataclasses.replace(config, **changes)


def load_vector_model(path) -> DynamicPointMapNet:
    """The reference model of a vector directory, weights loaded strictly, float32 eval."""
    from safetensors.torch import load_file

    model = DynamicPointMapNet(vector_config(path))
    weights = Path(path) / 'weights.safetensors'
    load_state_dict_checked(model, load_file(str(weights)), source=str(weights))
    return model.float().eval()


def list_cases(path) -> list[Path]:
    """The ``case_*.npz`` files (float64 references excluded), sorted."""
    return sorted(p for p in Path(path).glob('case_*.npz') if not p.name.endswith('.f64ref.npz'))


@dataclass
class CaseResult:
    """Comparison of one tensor: worst absolute error and worst excess over the tolerance
    ``|ours - ref| - (atol + rtol |ref|)`` (<= 0 passes)."""

    case: str
    name: str
    max_abs_err: float
    worst_excess: float
    atol: float
    rtol: float

    @property
    def ok(self) -> bool:
        return self.worst_excess <= 0 and math.isfinite(self.max_abs_err)


def _compare(case, name, ours, ref, atol, rtol) -> CaseResult:
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if ours.shape != ref.shape:
        return CaseResult(case, f'{name} (shape {ours.shape} vs {ref.shape})', math.inf,
                          math.inf, atol, rtol)
    err = np.abs(ours - ref)
    return CaseResult(case, name, float(err.max(initial=0.0)),
                      float((err - (atol + rtol * np.abs(ref))).max(initial=-math.inf)),
                      atol, rtol)


def check_case(model: DynamicPointMapNet, case_path, *, output_rtol: float = 1e-4,
               output_atol: float = 1e-4, intermediate_atol: float = 5e-5) -> list[CaseResult]:
    """Run one case and compare every output and intermediate present in its npz.

    Outputs are compared with ``rtol/atol`` against the float32 reference and, when a
    ``<case>.f64ref.npz`` exists, against the float64 reference too; intermediates with
    ``intermediate_atol`` (absolute only).
    """
    case_path = Path(case_path)
    case = np.load(case_path)
    with torch.no_grad():
        ours = model.forward_intermediates(torch.from_numpy(case['view1_img']).float(),
                                           torch.from_numpy(case['view2_img']).float())
    ours = {k: v.numpy() for k, v in ours.items()}
    results = [_compare(case_path.name, ref_name, ours[name], case[ref_name], output_atol,
                        output_rtol) for ref_name, name in OUTPUT_KEYS.items()
               if ref_name in case]
    f64_path = case_path.with_name(case_path.name[:-len('.npz')] + '.f64ref.npz')
    if f64_path.is_file():
        f64 = np.load(f64_path)
        results += [_compare(f64_path.name, ref_name, ours[name], f64[ref_name], output_atol,
                             output_rtol) for ref_name, name in OUTPUT_KEYS.items()
                    if ref_name in f64]
    results += [_compare(case_path.name, name, ours[name], case[name], intermediate_atol, 0.0)
                for name in INTERMEDIATE_KEYS if name in case]
    return results
