"""The DPM pair network (torch only): configuration, layers, heads, checkpoints."""

from pointmap_ros.model.config import PRESETS, ModelConfig
from pointmap_ros.model.dpm import (HEAD_MAPS, OUTPUT_NAMES, DynamicPointMapNet,
                                  zero_init_cross_time_offsets)

__all__ = ['ModelConfig', 'PRESETS', 'DynamicPointMapNet', 'HEAD_MAPS', 'OUTPUT_NAMES',
           'zero_init_cross_time_offsets']
