"""Multi-head self- and cross-attention with 2D RoPE on queries and keys (CroCo key names).

Both use :func:`torch.nn.functional.scaled_dot_product_attention` (scale ``head_dim**-0.5``),
which picks a fused kernel where one exists and exports to ONNX as plain MatMul/Softmax.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pointmap_ros.model.layers.rope import RopeTable, apply_rope2d

__all__ = ['Attention', 'CrossAttention']


def _split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``[B, N, C] -> [B, heads, N, C / heads]`` (heads are contiguous channel blocks)."""
    b, n, c = x.shape
    return x.reshape(b, n, num_heads, c // num_heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``[B, heads, N, D] -> [B, N, heads * D]``."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


class Attention(nn.Module):
    """Self-attention; ``qkv`` output viewed as ``(N, 3, heads, head_dim)`` gives q, k, v."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope: RopeTable) -> torch.Tensor:
        """Args: x ``[B, N, C]``; rope: table of x's token grid. Returns ``[B, N, C]``."""
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
        qkv = qkv.permute(2, 0, 3, 1, 4)                       # [3, B, heads, N, D]
        q, k, v = qkv[0], qkv[1], qkv[2]
        q = apply_rope2d(q, rope)
        k = apply_rope2d(k, rope)
        return self.proj(_merge_heads(F.scaled_dot_product_attention(q, k, v)))


class CrossAttention(nn.Module):
    """Cross-attention with separate ``projq``/``projk``/``projv`` and output ``proj``.

    Queries are rotated with their own view's grid, keys with the other view's grid.
    """

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.projq = nn.Linear(dim, dim, bias=True)
        self.projk = nn.Linear(dim, dim, bias=True)
        self.projv = nn.Linear(dim, dim, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                rope_q: RopeTable, rope_k: RopeTable) -> torch.Tensor:
        """Args: query ``[B, Nq, C]``; key/value ``[B, Nk, C]``. Returns ``[B, Nq, C]``."""
        q = apply_rope2d(_split_heads(self.projq(query), self.num_heads), rope_q)
        k = apply_rope2d(_split_heads(self.projk(key), self.num_heads), rope_k)
        v = _split_heads(self.projv(value), self.num_heads)
        return self.proj(_merge_heads(F.scaled_dot_product_attention(q, k, v)))
