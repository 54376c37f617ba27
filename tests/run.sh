#!/usr/bin/env bash
# run.sh: set up (install + build), then run the whole suite through ctest:
# unit tests, multi-rank MPI tests (2 and 4 ranks) and end-to-end tool tests.
# Extra arguments go to ctest, e.g. tests/run.sh -R config.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/launch/setup.sh"
build=${L2L_BUILD_DIR:-$root/build}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 OMP_WAIT_POLICY=passive
cd "$build"
ctest --output-on-failure --timeout 600 -j "${L2L_TEST_JOBS:-2}" "$@"
