"""Transformer MLP (``fc1`` -> exact GELU -> ``fc2``), CroCo key names."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ['Mlp']


class Mlp(nn.Module):
    """Two-layer MLP applied per token: ``[B, N, dim] -> [B, N, dim]``."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()  # exact (erf) form, as the reference
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))
