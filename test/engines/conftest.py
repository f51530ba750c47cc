"""Fixtures shared by the engine tests: tiny and small models and their ONNX exports.

Exports are made once per session at small resolutions (a few seconds each on one core).
"""

import pytest
import torch

from pointmap_ros.engines.onnx_export import export_onnx
from pointmap_ros.model import DynamicPointMapNet, ModelConfig

torch.set_num_threads(1)

#: (H, W) per preset: non-square and H != W so transposes cannot pass by symmetry.
EXPORT_SHAPES = {'tiny': (64, 96), 'small': (96, 128)}


def make_model(preset: str, seed: int = 0) -> DynamicPointMapNet:
    """Seeded random-weight model in eval mode; heads scaled so pts and conf spread widely."""
    torch.manual_seed(seed)
    model = DynamicPointMapNet(ModelConfig.preset(preset)).eval()
    with torch.no_grad():
        # Fresh init gives raw head outputs near 0, where exp(d) - 1 vs expm1 and the conf
        # exp barely matter; perturbed heads give |pts| up to ~6 and conf up to ~4.
        for k in range(1, 5):
            for p in model.head(k).parameters():
                p.add_(torch.randn_like(p) * 0.05)
    return model


class _Lazy(dict):
    """Dict that builds an entry on first access, so a test file pays only for what it uses."""

    def __init__(self, build):
        super().__init__()
        self._build = build

    def __missing__(self, name):
        self[name] = self._build(name)
        return self[name]


@pytest.fixture(scope='session')
def models():
    return _Lazy(make_model)


@pytest.fixture(scope='session')
def exports(models, tmp_path_factory):
    out = tmp_path_factory.mktemp('onnx')
    return _Lazy(lambda name: export_onnx(models[name], out, EXPORT_SHAPES[name],
                                          model_name=name))
