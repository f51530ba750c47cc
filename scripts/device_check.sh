#!/usr/bin/env bash
# Prepared device check (speed, parity vs CPU fp32, pipeline end to end) -> <out>/device_check.json.
# Needs Python 3.11+ with torch, numpy, scipy, opencv, safetensors, onnx; no ROS, no network.
#   bash scripts/device_check.sh --out DIR                       # GPU (about 8 min on an H100/H200)
#   bash scripts/device_check.sh --device cpu --quick --out DIR  # CPU smoke run (a few minutes)
# All arguments go to pointmap_ros/tools/device_check.py (see its docstring).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
# The matplotlib/torch caches must not land in a read-only home on a borrowed machine.
export MPLCONFIGDIR="${MPLCONFIGDIR:-${TMPDIR:-/tmp}/pointmap-mpl}"
exec "${PYTHON:-python3}" -m pointmap_ros.tools.device_check "$@"
