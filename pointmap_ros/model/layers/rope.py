"""2D rotary position embedding (RoPE2D) as used by CroCo / DUSt3R ('RoPE100').

Each attention head of size ``D`` is cut in two halves: the first half is rotated by the
token's row index y, the second by its column index x. Inside a half of size ``h = D/2`` the
standard 1D rotary embedding with *rotate-half* pairing is used: element ``k`` is paired with
``k + h/2``, frequencies are ``base ** (-2k / h)`` for ``k < h/2`` and the angle is
``position * frequency``. A pair (a, b) becomes ``(a cos - b sin, b cos + a sin)``.

Tables depend only on the static token grid ``(gh, gw)`` given as Python ints, so tracing /
ONNX export sees constants (no ``positions.max()``, no data-dependent shapes). They are built
once per (grid, head dim, base, device, dtype) and cached: a pair decode used to rebuild three
tables (arange, pow, cos, sin, plus a host->device copy on CUDA) on every call, and constant
tables are what torch.compile and CUDA graphs want to see.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch

__all__ = ['RopeTable', 'rope2d_table', 'apply_rope2d']


class RopeTable(NamedTuple):
    """Per-token cos/sin of one token grid, each ``[N, D]`` (``N = gh * gw``, D = head dim).

    Columns ``[:D/2]`` hold the y-half angles, ``[D/2:]`` the x-half angles, each duplicated
    for the rotate-half pairing.
    """

    cos: torch.Tensor
    sin: torch.Tensor


def _axis_angles(length: int, half_dim: int, base: float, device) -> torch.Tensor:
    """Angles ``[length, half_dim]`` of a 1D rotary embedding over positions 0..length-1."""
    # Same float32 arithmetic as the reference fallback (1 / base**(arange/half) and an outer
    # product), so tables agree to the last bit.
    inv_freq = 1.0 / (base ** (torch.arange(0, half_dim, 2, device=device).float() / half_dim))
    pos = torch.arange(length, device=device, dtype=torch.float32)
    angles = pos[:, None] * inv_freq[None, :]
    return torch.cat((angles, angles), dim=-1)


def rope2d_table(grid_h: int, grid_w: int, head_dim: int, base: float = 100.0,
                 device=None, dtype=torch.float32) -> RopeTable:
    """cos/sin tables for a row-major ``grid_h x grid_w`` token grid.

    Args:
        grid_h, grid_w: token grid size (Python ints; image size // patch size).
        head_dim: attention head size, a multiple of 4.
        base: RoPE base frequency (100 for DUSt3R's 'RoPE100').
        device, dtype: of the returned tables (angles are always formed in float32).

    Returns:
        :class:`RopeTable` with ``cos``/``sin`` of shape ``[grid_h * grid_w, head_dim]``.
    """
    if head_dim % 4:
        raise ValueError(f'2D RoPE needs a head dim divisible by 4, got {head_dim}')
    device = torch.device(device) if device is not None else torch.device('cpu')
    if device.type == 'cuda' and device.index is None:
        device = torch.device('cuda', torch.cuda.current_device())
    if torch.compiler.is_compiling():
        # Under torch.compile the construction is traced into the graph (and constant-folded
        # by the compiler) instead of going through an lru_cache, which dynamo cannot trace.
        return _build_table(int(grid_h), int(grid_w), int(head_dim), float(base), device,
                            dtype)
    return _cached_table(int(grid_h), int(grid_w), int(head_dim), float(base), device, dtype)


@functools.lru_cache(maxsize=64)
def _cached_table(grid_h: int, grid_w: int, head_dim: int, base: float, device: torch.device,
                  dtype: torch.dtype) -> RopeTable:
    # Built outside inference mode and without autograd: a table first built under
    # torch.inference_mode() (the engines) would otherwise be an "inference tensor", which
    # autograd refuses to save for backward when training later uses the same cached table.
    # The tables are never modified in place by any caller (apply_rope2d only reads them).
    with torch.inference_mode(False), torch.no_grad():
        return _build_table(grid_h, grid_w, head_dim, base, device, dtype)


def _build_table(grid_h, grid_w, head_dim, base, device, dtype) -> RopeTable:
    half = head_dim // 2
    ang_y = _axis_angles(grid_h, half, base, device)               # [gh, half]
    ang_x = _axis_angles(grid_w, half, base, device)               # [gw, half]
    ang = torch.cat((ang_y[:, None, :].expand(grid_h, grid_w, half),
                     ang_x[None, :, :].expand(grid_h, grid_w, half)), dim=-1)
    ang = ang.reshape(grid_h * grid_w, head_dim)
    return RopeTable(ang.cos().to(dtype), ang.sin().to(dtype))


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


def apply_rope2d(x: torch.Tensor, table: RopeTable) -> torch.Tensor:
    """Rotate queries or keys by their 2D grid positions.

    Args:
        x: ``[B, heads, N, D]`` per-head queries or keys.
        table: :class:`RopeTable` of the same token grid (``[N, D]``).

    Returns:
        A new tensor of the same shape and dtype (``x`` is not modified).
    """
    cos = table.cos.to(x.dtype)
    sin = table.sin.to(x.dtype)
    half = x.shape[-1] // 2
    y_part, x_part = x[..., :half], x[..., half:]
    y_rot = y_part * cos[:, :half] + _rotate_half(y_part) * sin[:, :half]
    x_rot = x_part * cos[:, half:] + _rotate_half(x_part) * sin[:, half:]
    return torch.cat((y_rot, x_rot), dim=-1)
