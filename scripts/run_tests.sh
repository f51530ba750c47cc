#!/usr/bin/env bash
# Run the test suite (arguments are passed to pytest) in the environment of scripts/env.sh.
# Expects scripts/setup.sh to have run (`make test` does both). pytest's own summary line is
# the last line printed on success.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/env.sh
source "${ROOT}/scripts/env.sh"
cd "${ROOT}"

rc=0
python -m pytest "$@" || rc=$?
if [ "${rc}" -eq 5 ]; then
  echo '[test] ERROR: pytest collected no tests; an empty run counts as a failure' >&2
fi
exit "${rc}"
