"""DPT head (DUSt3R's ``PixelwiseTaskWithDPT``): reassemble 4 hooked token maps at strides
4/8/16/32, fuse them coarse to fine with residual conv units, predict 4 channels per pixel.

Key names follow the official checkpoints (``dpt.act_postprocess.*``, ``dpt.scratch.*``,
``dpt.head.*``). ``scratch.layerN_rn`` and ``scratch.layer_rn[N-1]`` are the same module, so
both names are in the state dict, as in the reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ['DPTHead']


def _up2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=True)


class _Up2(nn.Module):
    """Bilinear x2 with align_corners=True as a module (it sits inside ``head``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _up2(x)


class ResidualConvUnit(nn.Module):
    """``x + conv2(relu(conv1(relu(x))))`` with 3x3 convs (bias)."""

    def __init__(self, features: int):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1, bias=True)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FusionBlock(nn.Module):
    """``out_conv(up2(RCU2(x + RCU1(skip))))``; without a skip, ``RCU1`` is unused."""

    def __init__(self, features: int):
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, 1, bias=True)
        self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        return self.out_conv(_up2(self.resConfUnit2(x)))


class _Scratch(nn.Module):
    def __init__(self, layer_dims, features: int):
        super().__init__()
        for n, dim in enumerate(layer_dims, start=1):
            setattr(self, f'layer{n}_rn', nn.Conv2d(dim, features, 3, padding=1, bias=False))
        # Second name for the same convs, as in the official state dicts.
        self.layer_rn = nn.ModuleList([getattr(self, f'layer{n}_rn') for n in range(1, 5)])
        for n in range(1, 5):
            setattr(self, f'refinenet{n}', FusionBlock(features))


class _DPT(nn.Module):
    def __init__(self, dim_tokens, layer_dims, feature_dim: int, last_dim: int,
                 num_channels: int):
        super().__init__()
        self.scratch = _Scratch(layer_dims, feature_dim)
        self.head = nn.Sequential(
            nn.Conv2d(feature_dim, feature_dim // 2, 3, padding=1),
            _Up2(),
            nn.Conv2d(feature_dim // 2, last_dim, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(last_dim, num_channels, 1))
        d0, d1, d2, d3 = layer_dims
        self.act_postprocess = nn.ModuleList([
            nn.Sequential(nn.Conv2d(dim_tokens[0], d0, 1),
                          nn.ConvTranspose2d(d0, d0, kernel_size=4, stride=4)),     # x4
            nn.Sequential(nn.Conv2d(dim_tokens[1], d1, 1),
                          nn.ConvTranspose2d(d1, d1, kernel_size=2, stride=2)),     # x2
            nn.Sequential(nn.Conv2d(dim_tokens[2], d2, 1)),                         # x1
            nn.Sequential(nn.Conv2d(dim_tokens[3], d3, 1),
                          nn.Conv2d(d3, d3, kernel_size=3, stride=2, padding=1)),   # /2
        ])


class DPTHead(nn.Module):
    """DPT regression head producing ``[B, 4, H, W]`` raw outputs.

    Args:
        enc_dim: width of hook 0 when it is 0 (the encoder output), else ``dec_dim``.
        dec_dim: width of decoder tokens.
        patch_size: token stride in pixels (16).
        hooks: 4 indices into the head input list [encoder out, decoder block 1..L].
        feature_dim, last_dim, layer_dims: DPT widths (official defaults).
        num_channels: output channels (3 point coordinates + 1 confidence).
    """

    def __init__(self, enc_dim: int, dec_dim: int, patch_size: int, hooks,
                 feature_dim: int = 256, last_dim: int = 128,
                 layer_dims=(96, 192, 384, 768), num_channels: int = 4):
        super().__init__()
        self.patch_size = patch_size
        self.hooks = tuple(int(h) for h in hooks)
        dim_tokens = [enc_dim if h == 0 else dec_dim for h in self.hooks]
        self.dpt = _DPT(dim_tokens, tuple(layer_dims), feature_dim, last_dim, num_channels)

    def forward(self, tokens: list[torch.Tensor], image_size: tuple[int, int]) -> torch.Tensor:
        """Args:
            tokens: head input list [encoder out ``[B, N, enc_dim]``, decoder block 1..L
                ``[B, N, dec_dim]``] (the last one ``dec_norm``-ed).
            image_size: ``(H, W)`` in pixels (Python ints, multiples of the patch size).

        Returns:
            ``[B, 4, H, W]`` raw output.
        """
        gh, gw = image_size[0] // self.patch_size, image_size[1] // self.patch_size
        dpt = self.dpt
        maps = []
        for idx, hook in enumerate(self.hooks):
            x = tokens[hook]
            x = x.transpose(1, 2).reshape(x.shape[0], x.shape[2], gh, gw)
            maps.append(dpt.scratch.layer_rn[idx](dpt.act_postprocess[idx](x)))
        l1, l2, l3, l4 = maps
        # The stride-2 conv rounds an odd grid up; crop back to layer 3's grid (static slice).
        path = dpt.scratch.refinenet4(l4)[:, :, :gh, :gw]
        path = dpt.scratch.refinenet3(path, l3)
        path = dpt.scratch.refinenet2(path, l2)
        path = dpt.scratch.refinenet1(path, l1)
        for layer in dpt.head[:-1]:
            path = layer(path)
        # The last 1x1 projection gives the raw point/confidence channels that the exp
        # post-processing amplifies: float32 even when the rest runs under bf16 autocast.
        last = dpt.head[-1]
        if torch.is_autocast_enabled(path.device.type):
            with torch.autocast(path.device.type, enabled=False):
                return last(path.float())
        return last(path)

    @torch.no_grad()
    def zero_point_channels(self) -> None:
        """Zero the last 1x1 conv's weights and biases of channels 0..2 (points), so they are
        exactly 0 for any input; the confidence channel is untouched."""
        last = self.dpt.head[-1]
        last.weight[:3].zero_()
        last.bias[:3].zero_()
