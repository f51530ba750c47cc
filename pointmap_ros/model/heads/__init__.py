"""Pixel-wise prediction heads (raw ``[B, 4, H, W]``) and their post-processing."""

from pointmap_ros.model.heads.dpt import DPTHead
from pointmap_ros.model.heads.linear import LinearHead
from pointmap_ros.model.heads.postprocess import postprocess, postprocess_offset

__all__ = ['DPTHead', 'LinearHead', 'postprocess', 'postprocess_offset']
