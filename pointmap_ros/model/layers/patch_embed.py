"""Patch embedding: a ``patch x patch`` stride-``patch`` convolution, flattened row-major."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ['PatchEmbed']


class PatchEmbed(nn.Module):
    """``[B, 3, H, W]`` image -> ``[B, (H/p)*(W/p), dim]`` tokens in row-major grid order.

    Portrait images are embedded as they are (DUSt3R's inference setup with
    ``landscape_only=False``); the caller checks that H and W are multiples of ``p``.
    """

    def __init__(self, patch_size: int, embed_dim: int, in_chans: int = 3):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.proj(img).flatten(2).transpose(1, 2)
