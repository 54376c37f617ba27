#!/usr/bin/env bash
# pyenv.sh: the project's Python environment for the tools around the trainer
# (python/: l2l-data tokenize, l2l-plot). Creates the venv on first use and
# installs python/requirements.txt into it (pinned); reinstalls when that file
# changes. The trainer never needs it.
#
#   launch/pyenv.sh                  make sure the venv is ready; print its python
#   launch/pyenv.sh exec SCRIPT ...  make sure, then exec the venv's python SCRIPT ...
#
# Environment: L2L_VENV (default <repo>/.venv). Progress of a first install goes
# to stderr (one line); stdout carries only the python path or SCRIPT's output.
# Installs python3-venv with apt when it is missing (like setup.sh). Exit 1 when
# the environment cannot be made (no network for pip, ...), naming the log.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${L2L_VENV:-$root/.venv}
req=$root/python/requirements.txt
want=$(sha256sum "$req" | cut -d' ' -f1)
stamp=$venv/.l2l-requirements

# The venv works: its python runs pip.
usable() { "$venv/bin/python" -m pip --version >/dev/null 2>&1; }

install() {
  if ! python3 -c 'import ensurepip' 2>/dev/null; then
    local sudo=()
    [ "$(id -u)" -ne 0 ] && sudo=(sudo -n)
    if ! { "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
      "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends python3-venv; } >/dev/null 2>&1; then
      echo "pyenv: python3 has no venv module and apt-get could not install python3-venv" \
        "(run launch/setup.sh, or apt install python3-venv)" >&2
      return 1
    fi
  fi
  local log=$venv.install.log
  # A venv this script began (its marker) and left unusable is made again; a
  # directory it did not make ($L2L_VENV) is never cleared.
  if ! usable; then
    if [ -e "$venv" ] && [ ! -e "$venv/.l2l-venv" ]; then
      echo "pyenv: $venv exists but is not a working venv that pyenv.sh made; remove it or" \
        "set L2L_VENV to another directory" >&2
      return 1
    fi
    mkdir -p "$venv" && touch "$venv/.l2l-venv"
    if ! python3 -m venv --clear "$venv" >"$log" 2>&1; then
      touch "$venv/.l2l-venv"
      echo "pyenv: could not create the venv $venv (see $log)" >&2
      return 1
    fi
    touch "$venv/.l2l-venv"
  fi
  echo "pyenv: installing python/requirements.txt into $venv (once)" >&2
  if ! "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req" >>"$log" 2>&1
  then
    echo "pyenv: could not install python/requirements.txt into $venv (see $log)" >&2
    return 1
  fi
  echo "$want" >"$stamp"
}

ensure() {
  [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && return 0
  mkdir -p "$(dirname "$venv")"
  # One installer at a time (ctest runs tests in parallel); the others wait.
  # The lock is held in a subshell only: the tool exec'd below must not keep it.
  (
    flock 9
    [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && exit 0
    install
  ) 9>"$venv.lock" || exit 1
}

ensure
case "${1:-}" in
  "") echo "$venv/bin/python" ;;
  exec)
    shift
    exec "$venv/bin/python" "$@"
    ;;
  *)
    echo "pyenv: unknown argument '$1', expected nothing or exec SCRIPT ..." >&2
    exit 2
    ;;
esac
