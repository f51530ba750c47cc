"""Files shipped with the package: the default DPM model (see docs/model_card.md).

``dpm_small.safetensors`` + ``dpm_small.json`` are read with
:func:`pointmap_ros.model.checkpoint.load_checkpoint`; install them as package data.
"""

from pathlib import Path

__all__ = ['ASSETS_DIR', 'SHIPPED_MODEL']

ASSETS_DIR = Path(__file__).resolve().parent
#: The node's default checkpoint (the JSON config sits next to it).
SHIPPED_MODEL = ASSETS_DIR / 'dpm_small.safetensors'
