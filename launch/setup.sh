#!/usr/bin/env bash
# setup.sh: install missing Debian packages, then configure and build l2l
# (Release) into build/. Idempotent: a second run with nothing to do only
# re-checks the packages and lets the build system find nothing to rebuild.
#
# Environment: L2L_BUILD_DIR (default build), L2L_CUDA (AUTO|ON|OFF, default
# AUTO), L2L_JOBS (default: number of cores), L2L_CMAKE_ARGS (more -D options
# for a new build directory, after the defaults; tests/sanitize.sh uses it).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${L2L_BUILD_DIR:-$root/build}
jobs=${L2L_JOBS:-$(nproc)}

packages=(build-essential cmake pkg-config openmpi-bin libopenmpi-dev libhdf5-openmpi-dev
          libyaml-cpp-dev libopenblas-dev libgtest-dev libgmock-dev libomp-dev python3
          python3-venv)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -f "$build/CMakeCache.txt" ]; then
  read -r -a extra <<<"${L2L_CMAKE_ARGS:-}"
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DL2L_CUDA="${L2L_CUDA:-AUTO}" \
    "${extra[@]}" >/dev/null
fi
cmake --build "$build" -j "$jobs" 2>&1 | grep -vE '^\[ *[0-9]+%\]|^-- ' || true
# The grep above hides progress lines; make the build's own status decide.
cmake --build "$build" -j "$jobs" >/dev/null
echo "setup: built into $build"
