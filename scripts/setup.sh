#!/usr/bin/env bash
# Prepare everything pointmap_ros needs on a plain Linux machine with Python 3.11, from nothing:
#   1. a virtual environment (.venv, or $POINTMAP_VENV) with requirements.txt,
#      requirements-dev.txt and requirements-ros.txt at the exact versions of constraints.txt /
#      requirements-ros.txt (torch CPU, numpy, onnx, ROS 2 Kilted wheels, colcon + rosidl
#      generators) and this package installed editable (`pip install --no-deps -e .`);
#   2. the /opt/python/cp311-cp311 include paths that the ROS wheels' CMake files point at;
#   3. a colcon overlay in install/ with our interfaces (msg/) and, where none is importable,
#      a stand-in tf2_msgs generated from its standard TFMessage definition and the standard
#      composition_interfaces from ../shared/vendor/interfaces (launch_ros imports it; the
#      launch tests run the vendored launch_ros).
# Idempotent: stamps record what was installed/built, so a second run skips pip and colcon
# (a few seconds) unless requirements, setup.py, msg/, CMakeLists.txt, package.xml or the
# package's file list changed. Concurrent runs in one checkout are serialised with flock.
#
# Environment: PYTHON (interpreter for a new venv, must be 3.11), POINTMAP_VENV,
# POINTMAP_FORCE=1 (ignore the stamps).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${POINTMAP_VENV:-${ROOT}/.venv}"
INSTALL="${ROOT}/install"
COLCON_DIR="${ROOT}/build/colcon"
STAMPS="${ROOT}/build/stamps"
TF2_TEMPLATE="${ROOT}/scripts/ros_overlay/tf2_msgs"
SHARED="${POINTMAP_SHARED:-${ROOT}/../shared}"
COMPOSITION_SRC="${SHARED}/vendor/interfaces/composition_interfaces"
OPT_PYTHON=/opt/python/cp311-cp311

log() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

T_TOTAL=$(date +%s.%N)
T_STEP=${T_TOTAL}
step_done() {  # step_done NAME: print the time since the previous step.
  local now
  now=$(date +%s.%N)
  awk -v a="${T_STEP}" -v b="${now}" -v n="$1" \
    'BEGIN { printf "[setup] %-20s %6.1f s\n", n, b - a }'
  T_STEP=${now}
}

# show_log_tail FILE: the end of a step's log, for a failure message.
show_log_tail() { echo "----- last lines of $1 -----" >&2; tail -n 40 "$1" >&2 || true; }

# strip_checkout VAR: drop entries inside this checkout (a previously sourced scripts/env.sh)
# from a path list, so detection and builds see only the outer environment.
strip_checkout() {
  local var="$1" entry out=""
  local IFS=':'
  for entry in ${!var:-}; do
    case "${entry}" in
      "${ROOT}" | "${ROOT}"/*) ;;
      *) out="${out:+${out}:}${entry}" ;;
    esac
  done
  export "${var}=${out}"
}
for v in PYTHONPATH LD_LIBRARY_PATH AMENT_PREFIX_PATH CMAKE_PREFIX_PATH; do
  strip_checkout "${v}"
done
unset VIRTUAL_ENV _ROS_WHEELS_BOOTSTRAP_COMPLETE

mkdir -p "${STAMPS}" "${COLCON_DIR}"
if command -v flock > /dev/null; then
  exec 9> "${ROOT}/build/.setup.lock"
  flock 9
fi
cd "${ROOT}"

# ---- 1. virtual environment -------------------------------------------------------------
is_py311() { "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2> /dev/null; }

if [ -x "${VENV}/bin/python" ] && is_py311 "${VENV}/bin/python"; then
  log "reusing ${VENV}"
else
  PY=""
  for cand in "${PYTHON:-}" python3.11 python3; do
    if [ -n "${cand}" ] && command -v "${cand}" > /dev/null && is_py311 "${cand}"; then
      PY="${cand}"
      break
    fi
  done
  [ -n "${PY}" ] || die 'Python 3.11 is required (the ROS 2 Kilted wheels are cp311 only);' \
    'install it or set PYTHON=/path/to/python3.11'
  if [ -e "${VENV}" ]; then
    die "${VENV} exists but has no Python 3.11; remove it and re-run"
  fi
  log "creating ${VENV} with $(command -v "${PY}")"
  "${PY}" -m venv "${VENV}"
fi
step_done 'venv'

# ---- 2. pinned dependencies ---------------------------------------------------------------
PIP_HASH=$(cat requirements.txt requirements-dev.txt requirements-ros.txt constraints.txt \
  setup.py | sha256sum | cut -d' ' -f1)
PIP_STAMP="${VENV}/.pointmap-pip.sha256"
if [ "${POINTMAP_FORCE:-0}" != 1 ] \
   && [ "$(cat "${PIP_STAMP}" 2> /dev/null)" = "${PIP_HASH}" ]; then
  log 'pip: requirements unchanged, skipping'
else
  rm -f "${PIP_STAMP}"
  PIP_LOG="${ROOT}/build/pip.log"
  log "pip: installing requirements*.txt pinned by constraints.txt (log: build/pip.log)"
  # requirements.txt holds ranges (the ROS-native path); constraints.txt pins them exactly.
  # --no-deps -e . afterwards: the core's own requirements are exactly the pinned ones above.
  if ! { "${VENV}/bin/python" -m pip install --progress-bar off -c constraints.txt \
           -r requirements.txt -r requirements-dev.txt -r requirements-ros.txt \
         && "${VENV}/bin/python" -m pip install --progress-bar off --no-deps \
           --no-build-isolation -e .; } > "${PIP_LOG}" 2>&1; then
    show_log_tail "${PIP_LOG}"
    die 'pip install failed (see build/pip.log)'
  fi
  grep -E '^Successfully installed' "${PIP_LOG}" | cut -c1-200 | sed 's/^/[setup]   /' || true
  echo "${PIP_HASH}" > "${PIP_STAMP}"
fi
step_done 'pip'

# ---- 3. /opt/python include paths of the wheels' CMake files --------------------------------
# The ROS wheels were built in a manylinux image; their exported CMake targets name the
# Python and NumPy include directories of that image. Point them at the real ones.
PY_INC=$("${VENV}/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
NP_INC=$("${VENV}/bin/python" -c 'import numpy; print(numpy.get_include())')
[ -f "${PY_INC}/Python.h" ] || die "Python headers not found in ${PY_INC}" \
  '(Debian/Ubuntu: apt-get install python3.11-dev)'
ensure_link() {  # ensure_link LINK TARGET: create LINK -> TARGET unless LINK already resolves.
  local link="$1" target="$2"
  [ -e "${link}" ] && return 0
  if ! { mkdir -p "$(dirname "${link}")" && ln -sfn "${target}" "${link}"; } 2> /dev/null; then
    die "cannot create ${link} -> ${target} (needs write access to /opt, e.g. run as root" \
      "once: sudo mkdir -p $(dirname "${link}") && sudo ln -s ${target} ${link})"
  fi
  log "linked ${link} -> ${target}"
}
ensure_link "${OPT_PYTHON}/include/python3.11" "${PY_INC}"
NP_LINK="${OPT_PYTHON}/lib/python3.11/site-packages/numpy/_core/include"
ensure_link "${NP_LINK}" "${NP_INC}"
step_done '/opt/python links'

# ---- 4. colcon overlay ----------------------------------------------------------------------
# tf2_msgs: generate the stand-in only when the outer environment (a sourced ROS distribution,
# the venv) has none, and remove a stale one when a real tf2_msgs has appeared since.
if "${VENV}/bin/python" -c 'import tf2_msgs.msg' 2> /dev/null; then
  BUILD_TF2=0
  log 'tf2_msgs: provided by the environment, not generating the stand-in'
  rm -rf "${INSTALL}/tf2_msgs" "${COLCON_DIR}/build/tf2_msgs"
else
  BUILD_TF2=1
fi
# composition_interfaces: the same rule, from the standard definitions in ../shared (the
# vendored launch_ros imports it). Without ../shared there is nothing to build: the launch
# tests skip (or fail in CI).
if "${VENV}/bin/python" -c 'import composition_interfaces.srv' 2> /dev/null; then
  BUILD_COMPOSITION=0
  log 'composition_interfaces: provided by the environment, not building it'
elif [ -f "${COMPOSITION_SRC}/package.xml" ]; then
  BUILD_COMPOSITION=1
else
  BUILD_COMPOSITION=0
  log "composition_interfaces: ${COMPOSITION_SRC} not found, not building it (launch tests" \
    'will skip)'
fi
if [ "${BUILD_COMPOSITION}" = 0 ]; then
  rm -rf "${INSTALL}/composition_interfaces" "${COLCON_DIR}/build/composition_interfaces"
fi
PATHS=("${ROOT}")
if [ "${BUILD_TF2}" = 1 ]; then
  PATHS+=("${TF2_TEMPLATE}")
fi
if [ "${BUILD_COMPOSITION}" = 1 ]; then
  PATHS+=("${COMPOSITION_SRC}")
fi

# What the overlay depends on: the build inputs and the *list* of files installed from the
# source tree (the overlay links to them, so content edits need no rebuild; new files do).
COLCON_HASH=$({
  echo "venv=${VENV} tf2=${BUILD_TF2} composition=${BUILD_COMPOSITION}"
  cat CMakeLists.txt package.xml msg/*.msg scripts/nodes/*
  find "${TF2_TEMPLATE}" -type f -print0 | sort -z | xargs -0 cat
  if [ "${BUILD_COMPOSITION}" = 1 ]; then
    find "${COMPOSITION_SRC}" -type f -print0 | sort -z | xargs -0 cat
  fi
  find pointmap_ros launch config -type f ! -path '*/__pycache__/*' ! -name '*.pyc' | sort
} | sha256sum | cut -d' ' -f1)
COLCON_STAMP="${STAMPS}/colcon.sha256"
SITE_REL=$("${VENV}/bin/python" -c \
  'import sys; print(f"lib/python{sys.version_info[0]}.{sys.version_info[1]}/site-packages")')
GENERATED="${INSTALL}/pointmap_ros/${SITE_REL}/pointmap_ros/msg/__init__.py"
if [ "${POINTMAP_FORCE:-0}" != 1 ] && [ -f "${GENERATED}" ] \
   && [ "$(cat "${COLCON_STAMP}" 2> /dev/null)" = "${COLCON_HASH}" ]; then
  log 'colcon: overlay up to date, skipping'
else
  rm -f "${COLCON_STAMP}"
  COLCON_LOG="${COLCON_DIR}/colcon.log"
  log "colcon: building pointmap_ros$([ "${BUILD_TF2}" = 1 ] && echo ' + tf2_msgs stand-in')$(
    [ "${BUILD_COMPOSITION}" = 1 ] && echo ' + composition_interfaces')" \
    'into install/ (log: build/colcon/colcon.log)'
  # The venv is the underlay: ament and CMake find the wheels' packages under its prefix.
  # Python3_NumPy_INCLUDE_DIR names the /opt/python link rather than the venv's real path,
  # because CMake refuses exported include paths inside the source tree (.venv is in it).
  if ! (
    export PATH="${VENV}/bin:${PATH}"
    export AMENT_PREFIX_PATH="${VENV}${AMENT_PREFIX_PATH:+:${AMENT_PREFIX_PATH}}"
    export CMAKE_PREFIX_PATH="${VENV}${CMAKE_PREFIX_PATH:+:${CMAKE_PREFIX_PATH}}"
    "${VENV}/bin/colcon" --log-base "${COLCON_DIR}/log" build \
      --paths "${PATHS[@]}" \
      --build-base "${COLCON_DIR}/build" --install-base "${INSTALL}" \
      --symlink-install --event-handlers console_direct- \
      --cmake-args -DBUILD_TESTING=OFF \
        "-DPython3_EXECUTABLE=${VENV}/bin/python" \
        "-DPython3_NumPy_INCLUDE_DIR=${NP_LINK}"
  ) > "${COLCON_LOG}" 2>&1; then
    show_log_tail "${COLCON_LOG}"
    die 'colcon build failed (see build/colcon/colcon.log)'
  fi
  grep -E '^Summary:' "${COLCON_LOG}" | sed 's/^/[setup]   /' || true
  [ -f "${GENERATED}" ] || die "colcon succeeded but ${GENERATED} is missing"
  echo "${COLCON_HASH}" > "${COLCON_STAMP}"
fi
step_done 'colcon overlay'

T_STEP=${T_TOTAL}
step_done 'total'
log 'ready: `source scripts/env.sh` to use the overlay from this checkout'
