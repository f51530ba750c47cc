#!/usr/bin/env bash
# Run the main job, pointmap-demo (arguments are passed on), in the environment of
# scripts/env.sh. Expects scripts/setup.sh to have run (`make demo` does both).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/env.sh
source "${ROOT}/scripts/env.sh"
cd "${ROOT}"

if ! python -c 'import importlib.util, sys
sys.exit(importlib.util.find_spec("pointmap_ros.tools.demo") is None)'; then
  echo '[demo] ERROR: pointmap_ros/tools/demo.py (the pointmap-demo entry point) does not' \
    'exist in this checkout yet; the set-up above is complete' >&2
  exit 1
fi
exec pointmap-demo "$@"
