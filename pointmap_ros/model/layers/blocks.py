"""Pre-norm transformer blocks: the encoder :class:`Block` and the cross-attending
:class:`DecoderBlock` (LayerNorm eps 1e-6, residual connections, CroCo key names)."""

from __future__ import annotations

import torch
from torch import nn

from pointmap_ros.model.layers.attention import Attention, CrossAttention
from pointmap_ros.model.layers.mlp import Mlp
from pointmap_ros.model.layers.rope import RopeTable

__all__ = ['Block', 'DecoderBlock', 'LN_EPS']

LN_EPS = 1e-6


class Block(nn.Module):
    """ViT encoder block: ``x + Attn(norm1(x))`` then ``x + MLP(norm2(x))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, rope: RopeTable) -> torch.Tensor:
        """Args: x ``[B, N, dim]``; rope: x's grid table. Returns ``[B, N, dim]``."""
        x = x + self.attn(self.norm1(x), rope)
        return x + self.mlp(self.norm2(x))


class DecoderBlock(nn.Module):
    """Decoder block of one view, attending to the other view's tokens ``y``.

    1. ``x += SelfAttn(norm1(x))``; 2. ``m = norm_y(y)``;
    3. ``x += CrossAttn(q=norm2(x), k=v=m)``; 4. ``x += MLP(norm3(x))``.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = Attention(dim, num_heads)
        self.cross_attn = CrossAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.norm3 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm_y = nn.LayerNorm(dim, eps=LN_EPS)

    def forward(self, x: torch.Tensor, y: torch.Tensor, rope_x: RopeTable,
                rope_y: RopeTable) -> torch.Tensor:
        """Args: x ``[B, Nx, dim]`` this view; y ``[B, Ny, dim]`` the other view.

        Returns the updated ``x`` ``[B, Nx, dim]``.
        """
        x = x + self.attn(self.norm1(x), rope_x)
        mem = self.norm_y(y)
        x = x + self.cross_attn(self.norm2(x), mem, mem, rope_x, rope_y)
        return x + self.mlp(self.norm3(x))
