"""Raw head output -> point map and confidence (DUSt3R 'exp' depth and 'exp' conf modes)."""

from __future__ import annotations

import torch

__all__ = ['postprocess', 'is_exporting']


def is_exporting() -> bool:
    """True while torch traces the model for ONNX / TorchScript / torch.export."""
    compiler = getattr(torch, 'compiler', None)
    if compiler is not None and hasattr(compiler, 'is_exporting') and compiler.is_exporting():
        return True
    return bool(torch.jit.is_tracing() or torch.onnx.is_in_onnx_export())


def postprocess(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Map a raw head output to points and confidence.

    With v the 3 raw point channels and d = |v|: ``pts = v / max(d, 1e-8) * (e^d - 1)`` (the
    direction is kept, the norm becomes ``e^d - 1``, unbounded); ``conf = 1 + e^c`` for the raw
    channel c, so confidences are >= 1.

    Args:
        raw: ``[B, 4, H, W]`` head output (channels x, y, z, confidence).

    Returns:
        ``pts [B, H, W, 3]`` (model units, camera-i optical frame) and ``conf [B, H, W]``.
    """
    fmap = raw.permute(0, 2, 3, 1)
    xyz = fmap[..., 0:3]
    dist = xyz.norm(dim=-1, keepdim=True)
    # expm1 is more accurate near 0, but ONNX has no Expm1 op at the opsets TensorRT parses
    # (DUSt3R exporters hit the same wall), so exported graphs use exp(d) - 1.
    grow = torch.exp(dist) - 1.0 if is_exporting() else torch.expm1(dist)
    pts = xyz / dist.clamp(min=1e-8) * grow
    conf = 1.0 + fmap[..., 3].exp()
    return pts, conf
