# shellcheck shell=bash
# Environment for running pointmap_ros from this source checkout: `source scripts/env.sh`.
#
# Order matters. PYTHONPATH holds the source tree first (so edits take effect without a
# rebuild), then the colcon overlay's site-packages (the generated pointmap_ros.msg, which
# pointmap_ros/__init__.py finds through pkgutil.extend_path, and tf2_msgs /
# composition_interfaces where the overlay generated them), then whatever was set before (a
# sourced ROS distribution keeps its place behind us, and its own tf2_msgs and
# composition_interfaces are never shadowed because setup.sh only generates them when none is
# importable). Re-sourcing does not duplicate entries.
#
# Variables honoured: POINTMAP_VENV (default <repo>/.venv), POINTMAP_INSTALL (default
# <repo>/install), RMW_IMPLEMENTATION (default rmw_fastrtps_cpp).

_pm_root="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"
_pm_venv="${POINTMAP_VENV:-${_pm_root}/.venv}"
_pm_install="${POINTMAP_INSTALL:-${_pm_root}/install}"

# _pm_prepend VAR DIR...: put DIRs (in the given order) in front of $VAR, dropping duplicates.
_pm_prepend() {
  local var="$1" dir old new=""
  shift
  old="${!var:-}"
  for dir in "$@"; do
    new="${new:+${new}:}${dir}"
  done
  local IFS=':'
  for dir in ${old}; do
    case ":${new}:" in
      *":${dir}:"*) ;;
      *) new="${new:+${new}:}${dir}" ;;
    esac
  done
  export "${var}=${new}"
}

_pm_prefixes=()
_pm_sites=()
_pm_libs=()
for _pm_pkg in pointmap_ros tf2_msgs composition_interfaces; do
  if [ -d "${_pm_install}/${_pm_pkg}" ]; then
    _pm_prefixes+=("${_pm_install}/${_pm_pkg}")
    _pm_libs+=("${_pm_install}/${_pm_pkg}/lib")
    for _pm_site in "${_pm_install}/${_pm_pkg}"/lib/python3*/site-packages; do
      [ -d "${_pm_site}" ] && _pm_sites+=("${_pm_site}")
    done
  fi
done
if [ -d "${_pm_venv}" ]; then
  _pm_prepend PATH "${_pm_venv}/bin"
  # The venv is an ament prefix too (the ROS wheels install share/<pkg> and lib there).
  _pm_prefixes+=("${_pm_venv}")
  _pm_libs+=("${_pm_venv}/lib")
  export VIRTUAL_ENV="${_pm_venv}"
fi

_pm_prepend PYTHONPATH "${_pm_root}" "${_pm_sites[@]}"
_pm_prepend LD_LIBRARY_PATH "${_pm_libs[@]}"
_pm_prepend AMENT_PREFIX_PATH "${_pm_prefixes[@]}"
_pm_prepend CMAKE_PREFIX_PATH "${_pm_prefixes[@]}"
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
export POINTMAP_ROOT="${_pm_root}"

unset _pm_root _pm_venv _pm_install _pm_prefixes _pm_sites _pm_libs _pm_pkg _pm_site
unset -f _pm_prepend
