"""Linear head: one Linear per token to a ``patch x patch`` block of 4 channels."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ['LinearHead']


class LinearHead(nn.Module):
    """DUSt3R's ``LinearPts3d``: ``proj`` Linear(dec_dim -> 4 * p * p) + pixel shuffle.

    Output index ``c * p * p + i * p + j`` of a token goes to channel c, sub-pixel row i,
    column j of its patch.
    """

    def __init__(self, dec_dim: int, patch_size: int, num_channels: int = 4):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Linear(dec_dim, num_channels * patch_size ** 2)

    def forward(self, tokens: list[torch.Tensor], image_size: tuple[int, int]) -> torch.Tensor:
        """Args:
            tokens: the head input list [encoder out, decoder block 1..L]; only the last
                (``dec_norm``-ed) entry ``[B, N, dec_dim]`` is used.
            image_size: ``(H, W)`` in pixels (Python ints).

        Returns:
            ``[B, 4, H, W]`` raw output.
        """
        h, w = image_size
        p = self.patch_size
        x = tokens[-1]
        if torch.is_autocast_enabled(x.device.type):
            # The raw point/confidence channels feed the exp post-processing: float32.
            with torch.autocast(x.device.type, enabled=False):
                raw = self.proj(x.float())
        else:
            raw = self.proj(x)
        feat = raw.transpose(-1, -2).reshape(x.shape[0], -1, h // p, w // p)
        return F.pixel_shuffle(feat, p)

    @torch.no_grad()
    def zero_point_channels(self) -> None:
        """Zero the weights and biases of output channels 0..2 (points), so they are exactly 0
        for any input; the confidence channel is untouched."""
        rows = 3 * self.patch_size ** 2   # channel c owns rows c*p*p .. (c+1)*p*p - 1
        self.proj.weight[:rows].zero_()
        self.proj.bias[:rows].zero_()
