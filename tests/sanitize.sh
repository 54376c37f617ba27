#!/usr/bin/env bash
# sanitize.sh: the ctest suite built with AddressSanitizer + UndefinedBehavior-
# Sanitizer (any report fails the test that triggered it), then each fuzz
# target (tests/fuzz) for a bounded time in the same build. .ci/run calls it
# after tests/run.sh.
#
# The build is its own directory (build-sanitize), without CUDA (the GPU code
# cannot run here, and nvcc does not take -fsanitize) and without bench/.
# Leaks inside Open MPI's own libraries are suppressed (tests/sanitize/
# lsan.supp); l2l's leaks still fail. The `slow` label (learning_test, a
# statistical check of learning over thousands of steps whose code paths the
# engine tests cover) is left out: under ASan it alone runs past 5 minutes.
# So is the `python` label (the Python tools' tests: their C++ is `l2l-data
# info`, which the other tests cover, and they would only time pip and Python).
#
# Environment: L2L_SANITIZE_BUILD_DIR (default build-sanitize),
# L2L_FUZZ_SECONDS (per target, default 15; CI's 30-minute budget), L2L_JOBS, L2L_TEST_JOBS.
# Extra arguments go to ctest.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${L2L_SANITIZE_BUILD_DIR:-$root/build-sanitize}
flags="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
# Build type "Sanitize" has no flags of its own: CXXFLAGS are all of them.
CXXFLAGS="$flags -O1 -g1" LDFLAGS="$flags" L2L_BUILD_DIR=$build L2L_CUDA=OFF \
  L2L_CMAKE_ARGS="-DCMAKE_BUILD_TYPE=Sanitize -DL2L_BUILD_BENCH=OFF" "$root/launch/setup.sh"

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 OMP_WAIT_POLICY=passive
# Open MPI unloads its components at exit; their leaks would then have no
# library name to match the suppressions (and MPI's libraries have no frame
# pointers: the slow unwinder finds their frames).
export OMPI_MCA_mca_base_component_disable_dlclose=1 PMIX_MCA_mca_base_component_disable_dlclose=1
# intercept_tls_get_addr=0: GCC 12's runtime takes some malloc'd dynamic TLS
# blocks for glibc 2.19 ones and its leak tracer then segfaults on the range it
# reads ("Tracer caught signal 11", seen in l2l-ckpt and l2l-train: MPI loads
# components with dynamic TLS); fixed in GCC 14 / LLVM 17 runtimes.
export ASAN_OPTIONS=detect_leaks=1:intercept_tls_get_addr=0:fast_unwind_on_malloc=0:abort_on_error=0
export LSAN_OPTIONS=suppressions=$root/tests/sanitize/lsan.supp:print_suppressions=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
cd "$build"
ctest --output-on-failure --timeout 600 -j "${L2L_TEST_JOBS:-2}" -LE 'slow|python' "$@"

# Each fuzz target: its seeds, then mutants for L2L_FUZZ_SECONDS. A crash
# leaves the input in fuzz-work/TARGET-crash.bin (reproduce: TARGET --replay).
seeds=$root/tests/fuzz/seeds
mkdir -p fuzz-work
cd fuzz-work
secs=${L2L_FUZZ_SECONDS:-15}
"$build/fuzz/config_fuzz" --seconds "$secs" "$seeds/config" "$root/configs"
"$build/fuzz/token_file_fuzz" --seconds "$secs" "$seeds/token_file"
"$build/fuzz/checkpoint_fuzz" --seconds "$secs" "$seeds/checkpoint"
echo "sanitize: suite and fuzz targets clean under ASan+UBSan"
