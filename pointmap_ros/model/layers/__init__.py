"""Transformer building blocks of the DUSt3R-family network (CroCo layout and key names)."""

from pointmap_ros.model.layers.attention import Attention, CrossAttention
from pointmap_ros.model.layers.blocks import Block, DecoderBlock
from pointmap_ros.model.layers.mlp import Mlp
from pointmap_ros.model.layers.patch_embed import PatchEmbed
from pointmap_ros.model.layers.rope import RopeTable, apply_rope2d, rope2d_table

__all__ = ['Attention', 'CrossAttention', 'Block', 'DecoderBlock', 'Mlp', 'PatchEmbed',
           'RopeTable', 'apply_rope2d', 'rope2d_table']
