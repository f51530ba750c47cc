"""The DPM pair network: DUSt3R's asymmetric CroCo encoder-decoder with four point-map heads.

One shared ViT encoder embeds each image (once per frame; the tokens can be cached across
pairs). Two decoders (``dec_blocks`` for view i, ``dec_blocks2`` for view j) cross-attend to
each other in lockstep: block l of each view reads the *previous* layer's pair. Heads:

========================  =================  ===============================================
module                    tokens             output (all in camera i's frame)
========================  =================  ===============================================
``downstream_head1``      decoder i          P_i(t_i)  (DUSt3R ``pts3d``)
``downstream_head2``      decoder j          P_j(t_j)  (DUSt3R ``pts3d_in_other_view``)
``downstream_head3``      decoder i          P_i(t_j)  (DPM, cross-time)
``downstream_head4``      decoder j          P_j(t_i)  (DPM, cross-time)
========================  =================  ===============================================

With ``num_maps=2`` only heads 1 and 2 exist and the model is a plain DUSt3R/MonST3R network.

With ``config.cross_time == 'residual'`` heads 3/4 keep their classes and state-dict keys, but
their point channels are an offset added to the same-time map of the same pixels:
``P_i(t_j) = P_i(t_i) + Δ_i`` (head 3 onto head 1), ``P_j(t_i) = P_j(t_j) + Δ_j`` (head 4 onto
head 2), so the flow ``P_i(t_j) - P_i(t_i)`` is Δ_i itself instead of the difference of two
independently regressed maps.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn

from pointmap_ros.errors import ConfigError, InputError
from pointmap_ros.model.config import ModelConfig
from pointmap_ros.model.heads import DPTHead, LinearHead, postprocess, postprocess_offset
from pointmap_ros.model.layers import Block, DecoderBlock, PatchEmbed, rope2d_table
from pointmap_ros.model.layers.blocks import LN_EPS

__all__ = ['DynamicPointMapNet', 'HEAD_MAPS', 'OUTPUT_NAMES', 'RESIDUAL_BASE', 'image_to_input',
           'head_output_projections', 'prepare_for_inference',
           'zero_init_cross_time_offsets']

#: Head index -> DPM map it predicts (``<pixels of image>_<time>``).
HEAD_MAPS = {1: 'i_ti', 2: 'j_tj', 3: 'i_tj', 4: 'j_ti'}
#: Output names in the order of :data:`pointmap_ros.types.MAP_NAMES` (flat export order).
OUTPUT_NAMES = tuple(f'{kind}_{name}' for name in ('i_ti', 'i_tj', 'j_ti', 'j_tj')
                     for kind in ('pts', 'conf'))
#: Residual mode: cross-time head -> the same-time head whose points its offset is added to.
RESIDUAL_BASE = {3: 1, 4: 2}


def image_to_input(image: np.ndarray, device: torch.device | str = 'cpu') -> torch.Tensor:
    """One ``[H, W, 3]`` uint8 RGB numpy image -> network input ``[1, 3, H, W]`` float32.

    Values are ``(u8 / 255 - 0.5) / 0.5``, i.e. in [-1, 1] (DUSt3R's normalisation); the
    uint8 image is moved to ``device`` before conversion (4x fewer bytes to copy).
    """
    img = torch.from_numpy(np.ascontiguousarray(image)).to(device)   # [H, W, 3] uint8
    img = img.permute(2, 0, 1)[None].float()                          # [1, 3, H, W]
    return img.div_(255.0).sub_(0.5).div_(0.5)


class DynamicPointMapNet(nn.Module):
    """DUSt3R-family pair network predicting DPM's four point maps.

    Args:
        config: sizes; see :class:`~pointmap_ros.model.config.ModelConfig`.

    Images are ``[B, 3, H, W]`` float in [-1, 1] (``(u8 / 255 - 0.5) / 0.5``) with H and W
    multiples of ``config.patch_size``; the two views of a pair may differ in size.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        c = config
        # CroCo pretraining leftover kept so official checkpoints load strictly; never used.
        self.mask_token = nn.Parameter(torch.zeros(1, 1, c.dec_embed_dim))
        self.patch_embed = PatchEmbed(c.patch_size, c.enc_embed_dim)
        self.enc_blocks = nn.ModuleList(
            [Block(c.enc_embed_dim, c.enc_num_heads, c.mlp_ratio) for _ in range(c.enc_depth)])
        self.enc_norm = nn.LayerNorm(c.enc_embed_dim, eps=LN_EPS)
        self.decoder_embed = nn.Linear(c.enc_embed_dim, c.dec_embed_dim)
        self.dec_blocks = nn.ModuleList([DecoderBlock(c.dec_embed_dim, c.dec_num_heads,
                                                      c.mlp_ratio) for _ in range(c.dec_depth)])
        self.dec_blocks2 = nn.ModuleList([DecoderBlock(c.dec_embed_dim, c.dec_num_heads,
                                                       c.mlp_ratio) for _ in range(c.dec_depth)])
        self.dec_norm = nn.LayerNorm(c.dec_embed_dim, eps=LN_EPS)
        for k in range(1, c.num_maps + 1):
            setattr(self, f'downstream_head{k}', self._make_head())
        self._init_weights()
        if c.cross_time == 'residual':
            zero_init_cross_time_offsets(self)

    # -- construction -----------------------------------------------------------------------
    def _make_head(self) -> nn.Module:
        c = self.config
        if c.head_type == 'linear':
            return LinearHead(c.dec_embed_dim, c.patch_size)
        return DPTHead(c.enc_embed_dim, c.dec_embed_dim, c.patch_size, c.hooks,
                       feature_dim=c.dpt_feature_dim, last_dim=c.dpt_last_dim,
                       layer_dims=c.dpt_layer_dims)

    def _init_weights(self) -> None:
        # CroCo's init for training from scratch; checkpoints overwrite it.
        nn.init.normal_(self.mask_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def head(self, k: int) -> nn.Module:
        """``downstream_head<k>`` (k in 1..num_maps)."""
        return getattr(self, f'downstream_head{k}')

    # -- encoder ----------------------------------------------------------------------------
    def _grid(self, shape) -> tuple[int, int]:
        h, w = int(shape[0]), int(shape[1])
        p = self.config.patch_size
        if h <= 0 or w <= 0 or h % p or w % p:
            raise InputError(f'image size {h}x{w} (HxW) is not a positive multiple of the '
                             f'patch size {p}', 'size', actual=(h, w))
        return h // p, w // p

    def _encode(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        if img.ndim != 4 or img.shape[1] != 3:
            raise InputError(f'expected images [B, 3, H, W], got shape {tuple(img.shape)}',
                             'shape', actual=tuple(img.shape))
        gh, gw = self._grid(img.shape[-2:])
        rope = rope2d_table(gh, gw, c.enc_embed_dim // c.enc_num_heads, c.rope_freq,
                            device=img.device)
        patches = self.patch_embed(img)
        x = patches
        for blk in self.enc_blocks:
            x = blk(x, rope)
        return patches, self.enc_norm(x)

    def encode(self, img: torch.Tensor) -> torch.Tensor:
        """Encode images once; the result is reusable in any pair.

        Args:
            img: ``[B, 3, H, W]`` float in [-1, 1].

        Returns:
            ``[B, (H/p)*(W/p), enc_embed_dim]`` tokens after ``enc_norm`` (row-major grid).
        """
        return self._encode(img)[1]

    # -- decoder + heads --------------------------------------------------------------------
    def _decode(self, tok_i, shape_i, tok_j, shape_j):
        c = self.config
        head_dim = c.dec_embed_dim // c.dec_num_heads
        gi, gj = self._grid(shape_i), self._grid(shape_j)
        for tok, grid, name in ((tok_i, gi, 'tok_i'), (tok_j, gj, 'tok_j')):
            if tok.ndim != 3 or tok.shape[1] != grid[0] * grid[1] \
                    or tok.shape[2] != c.enc_embed_dim:
                raise InputError(f'{name} has shape {tuple(tok.shape)}, expected '
                                 f'[B, {grid[0] * grid[1]}, {c.enc_embed_dim}]', 'shape',
                                 actual=tuple(tok.shape))
        rope_i = rope2d_table(*gi, head_dim, c.rope_freq, device=tok_i.device)
        rope_j = rope2d_table(*gj, head_dim, c.rope_freq, device=tok_j.device)
        x_i, x_j = self.decoder_embed(tok_i), self.decoder_embed(tok_j)
        dec_in = (x_i, x_j)
        outs_i, outs_j = [tok_i], [tok_j]
        for blk_i, blk_j in zip(self.dec_blocks, self.dec_blocks2):
            # Lockstep: both views read the previous layer's pair.
            x_i, x_j = blk_i(x_i, x_j, rope_i, rope_j), blk_j(x_j, x_i, rope_j, rope_i)
            outs_i.append(x_i)
            outs_j.append(x_j)
        outs_i[-1] = self.dec_norm(outs_i[-1])
        outs_j[-1] = self.dec_norm(outs_j[-1])
        raw = {}
        with _heads_in_own_precision(tok_i.device):
            for k in range(1, c.num_maps + 1):
                head = self.head(k)
                dtype = next(head.parameters()).dtype
                # Heads 1 and 3 read decoder i, heads 2 and 4 decoder j.
                toks, shape = (outs_i, shape_i) if k in (1, 3) else (outs_j, shape_j)
                raw[k] = head([t.to(dtype) for t in toks], (int(shape[0]), int(shape[1])))
        return raw, dec_in, outs_i, outs_j

    def decode(self, tok_i: torch.Tensor, shape_i, tok_j: torch.Tensor, shape_j) -> dict:
        """Decode a pair of encodings into the point maps.

        Args:
            tok_i, tok_j: encoder tokens of image i / j, ``[B, N, enc_embed_dim]``.
            shape_i, shape_j: ``(H, W)`` pixel sizes of image i / j (Python ints).

        Returns:
            Dict ``pts_<m> [B, H, W, 3]`` and ``conf_<m> [B, H, W]`` float32, for m in
            i_ti, i_tj, j_ti, j_tj (only i_ti and j_tj when ``num_maps == 2``), in the order of
            :data:`OUTPUT_NAMES`; points are in camera i's optical frame, model units.
        """
        raw = self._decode(tok_i, shape_i, tok_j, shape_j)[0]
        return self._postprocess(raw)

    def _postprocess(self, raw: dict) -> dict:
        maps = {}
        device = next(iter(raw.values())).device
        with float32_region(device):
            for k, out in sorted(raw.items()):  # heads 1/2 first: residual heads add onto them
                out = out.float()
                if self.config.cross_time == 'residual' and k in RESIDUAL_BASE:
                    offset, conf = postprocess_offset(out)
                    pts = maps[HEAD_MAPS[RESIDUAL_BASE[k]]][0] + offset
                else:
                    pts, conf = postprocess(out)
                maps[HEAD_MAPS[k]] = (pts, conf)
        result = {}
        for name in OUTPUT_NAMES:
            kind, m = name.split('_', 1)
            if m in maps:
                result[name] = maps[m][0 if kind == 'pts' else 1]
        return result

    def forward(self, img_i: torch.Tensor, img_j: torch.Tensor) -> dict:
        """Encode both images (one batched pass when their shapes match) and decode.

        Args:
            img_i, img_j: ``[B, 3, H, W]`` float in [-1, 1].

        Returns:
            The dict of :meth:`decode`.
        """
        tok_i, tok_j = self._encode_pair(img_i, img_j)
        return self.decode(tok_i, img_i.shape[-2:], tok_j, img_j.shape[-2:])

    def _encode_pair(self, img_i, img_j):
        if img_i.shape == img_j.shape:
            return self.encode(torch.cat((img_i, img_j), dim=0)).chunk(2, dim=0)
        return self.encode(img_i), self.encode(img_j)

    def forward_intermediates(self, img_i: torch.Tensor, img_j: torch.Tensor) -> dict:
        """Forward pass exposing the intermediates of the reference vectors (view 1 = i).

        Returns:
            Dict with ``enc{k}_patch_embed`` / ``enc{k}_out`` ``[B, N, enc_dim]``,
            ``dec{k}_in`` ``[B, N, dec_dim]``, ``dec{k}_blocks`` ``[L, B, N, dec_dim]`` (the last
            entry ``dec_norm``-ed), ``head{h}_raw`` ``[B, 4, H, W]`` for every head h, and the
            post-processed outputs of :meth:`decode`; k = 1 for view i, 2 for view j.
        """
        pe_i, tok_i = self._encode(img_i)
        pe_j, tok_j = self._encode(img_j)
        raw, dec_in, outs_i, outs_j = self._decode(tok_i, img_i.shape[-2:],
                                                   tok_j, img_j.shape[-2:])
        result = {'enc1_patch_embed': pe_i, 'enc1_out': tok_i, 'enc2_patch_embed': pe_j,
                  'enc2_out': tok_j, 'dec1_in': dec_in[0], 'dec2_in': dec_in[1],
                  'dec1_blocks': torch.stack(outs_i[1:]), 'dec2_blocks': torch.stack(outs_j[1:])}
        result.update({f'head{k}_raw': out for k, out in raw.items()})
        result.update(self._postprocess(raw))
        return result


def zero_init_cross_time_offsets(model: DynamicPointMapNet) -> None:
    """Zero the point channels of heads 3/4's last layer (residual mode): Δ_i = Δ_j = 0 for any
    input, so the predicted flow is exactly 0 until training moves them.

    The constructor does this for ``cross_time='residual'``; call it again after loading or
    copying weights into heads 3/4 (e.g. converted DUSt3R/MonST3R heads, which start as copies
    of heads 1/2: their confidence channel is kept, their point channels become zero offsets).

    Raises:
        ConfigError: when the model is not in residual mode (zeroing an absolute head would
            put every cross-time point at the camera centre).
    """
    if model.config.cross_time != 'residual':
        raise ConfigError(f"zero_init_cross_time_offsets needs cross_time='residual', model "
                          f'has {model.config.cross_time!r}', name='cross_time',
                          value=model.config.cross_time)
    for k in RESIDUAL_BASE:
        model.head(k).zero_point_channels()


def _heads_in_own_precision(device: torch.device):
    """Autocast policy of the heads.

    fp16 autocast is disabled around the whole heads (the inference engines' fp16 path): fp16
    overflows at 65504 and the exp post-processing at |x| > 11. bf16 has float32's range, so
    under bf16 autocast (GPU training) the heads' convolutions run in bf16 and only their last
    1x1 projection and the exp post-processing run in float32 (:func:`float32_region`).
    """
    if torch.is_autocast_enabled(device.type) \
            and torch.get_autocast_dtype(device.type) == torch.float16:
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def float32_region(device: torch.device):
    """A region computed in float32 even under autocast (the raw outputs and the exp)."""
    if torch.is_autocast_enabled(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def head_output_projections(model: DynamicPointMapNet) -> list[nn.Module]:
    """The last layer of every head: the projection to the raw point/confidence channels.

    These feed the exp post-processing and stay float32 in every precision (their input is
    cast up inside the heads, see ``DPTHead.forward`` / ``LinearHead.forward``).
    """
    layers = []
    for k in range(1, model.config.num_maps + 1):
        head = model.head(k)
        layers.append(head.dpt.head[-1] if hasattr(head, 'dpt') else head.proj)
    return layers


def prepare_for_inference(model: DynamicPointMapNet, dtype: torch.dtype | None,
                          channels_last: bool = False) -> DynamicPointMapNet:
    """Store the weights of every Linear / convolution in ``dtype`` (in place) for autocast.

    Under ``torch.autocast`` a float32 weight is cast to the autocast dtype on *every* call
    (the autocast cast cache lives only as long as one autocast region, i.e. one encode or
    decode): for the official model that is 2.3 GB read and 1.1 GB written per pair, and it
    showed up as the largest item of a bf16 profile. Stored in ``dtype``, the cast is a no-op.
    Everything else keeps float32: LayerNorm parameters, the residual stream (a bf16 block
    output added to the float32 residual promotes to float32, as under plain autocast), the
    heads' output projections and the exp post-processing. Numerically this is the same
    computation as autocast with float32 weights: autocast rounds those weights to ``dtype``
    before every matmul anyway.

    ``channels_last`` stores convolution weights NHWC, so oneDNN's convolutions keep their
    activations NHWC from one layer to the next instead of reordering each input and output
    (a third of the bf16 decode time of the DPT heads went into those reorders).

    Args:
        model: the network (modified in place and returned).
        dtype: ``torch.bfloat16`` / ``torch.float16``, or None for float32 (no cast).
        channels_last: also switch convolution weights to NHWC.
    """
    keep = {id(layer) for layer in head_output_projections(model)}
    if dtype == torch.float16:
        # fp16 autocast is switched off around the heads (range: see _heads_in_own_precision),
        # so their weights must stay float32.
        keep |= {id(m) for k in range(1, model.config.num_maps + 1)
                 for m in model.head(k).modules()}
    for module in model.modules():
        if not isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            continue
        if dtype is not None and id(module) not in keep:
            module.to(dtype)
        if channels_last and isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            module.to(memory_format=torch.channels_last)
    return model
