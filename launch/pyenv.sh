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

ensure() {
  [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && return 0
  mkdir -p "$(dirname "$venv")"
  # One installer at a time (ctest runs tests in parallel); the others wait.
  exec 9>"$venv.lock"
  flock 9
  [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && return 0
  if ! python3 -c 'import ensurepip' 2>/dev/null; then
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
      python3-venv >/dev/null
  fi
  echo "pyenv: installing python/requirements.txt into $venv (once)" >&2
  local log=$venv.install.log
  if ! { [ -x "$venv/bin/python" ] || python3 -m venv "$venv"; } >"$log" 2>&1 ||
    ! "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req" >>"$log" 2>&1; then
    echo "pyenv: could not install python/requirements.txt into $venv (see $log)" >&2
    exit 1
  fi
  echo "$want" >"$stamp"
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
