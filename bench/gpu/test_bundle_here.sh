#!/usr/bin/env bash
# bench/gpu/test_bundle_here.sh — check the GPU bundle on a machine WITHOUT a GPU,
# as close to a bare host as this machine allows (run by bundle.sh; needs root
# for unshare -m).
#
# The bundle is unpacked into /tmp/bundle-test, and each binary runs in a
# private mount namespace where /usr/lib/x86_64-linux-gnu is replaced by a
# folder holding only the base system (glibc, libstdc++, libgcc_s and what
# bash/coreutils need): no OpenMPI, PMIx, HDF5, yaml-cpp, OpenBLAS, hwloc,
# libevent... and /usr/share/openmpi, /etc/openmpi are empty. The environment
# is `env -i PATH=/usr/bin:/bin` plus the bundle's env.sh.
#   Variant A: cuBLAS / NCCL from /usr/local/cuda (a host with the toolkit).
#   Variant B: /usr/local/cuda's lib dirs hidden too; cuBLAS / NCCL found by
#              env.sh in a python venv's nvidia/cu13 and nvidia/nccl wheels
#              (L2L_TEST_VENV, default /tmp/torchvenv; skipped when absent).
# Expected: every binary starts; GPU tests skip with their message; CPU tests
# pass; l2l-train trains 3 CPU steps and writes an HDF5 checkpoint (singleton
# MPI + MPI-IO from the bundle); no object is loaded from outside the bundle,
# the base system and the CUDA dirs. (bench/gpu/bert_large_bench.sh needs
# python3, which this namespace hides: device_check.sh's dry run covers it.)
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
tarball=$here/bundle-out/l2l-gpu-bundle.tar.xz
t=/tmp/bundle-test
venv=${L2L_TEST_VENV:-/tmp/torchvenv}
[ -f "$tarball" ] || { echo "test_bundle_here: no $tarball (run bundle.sh)" >&2; exit 1; }

rm -rf "$t"
mkdir -p "$t/fakelib" "$t/work"
tar -C "$t" -xJf "$tarball"
B=$t/l2l-bundle

# The base system a bare host surely has, plus what the shell tools here need.
libdir=/usr/lib/x86_64-linux-gnu
for tool in bash env timeout grep sed cat head tail mkdir rm ls awk tr sort wc dirname; do
  ldd "$(command -v $tool)" 2>/dev/null | awk '$2 == "=>" {print $3} $1 ~ /^\// {print $1}'
done | sort -u | while read -r p; do cp -L "$p" "$t/fakelib/" 2>/dev/null; done
for n in libc.so.6 libm.so.6 libdl.so.2 libpthread.so.0 librt.so.1 libresolv.so.2 libutil.so.1 \
  libmvec.so.1 libstdc++.so.6 libgcc_s.so.1 ld-linux-x86-64.so.2; do
  cp -L "$libdir/$n" "$t/fakelib/" 2>/dev/null
done

# Helpers sourced inside the namespace: check NAME WANT_RC PATTERN CMD...
# (WANT_RC "any" accepts any exit code: informational). Logs go to $W/NAME.log.
cat >"$t/inner.sh" <<'EOF'
set -uo pipefail
vname=$1; B=$2; W=$3; repo=$4
source "$B/env.sh"
echo "env: LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
echo "env: L2L_HOST_CUBLAS_DIR=$L2L_HOST_CUBLAS_DIR L2L_HOST_NCCL_DIR=$L2L_HOST_NCCL_DIR"
fails=0
check() {
  local name=$1 want=$2 pat=$3; shift 3
  LD_DEBUG=files LD_DEBUG_OUTPUT=$W/$name.lddebug timeout 300 "$@" >"$W/$name.log" 2>&1
  local rc=$?
  local inits foreign from_host verdict=ok
  inits=$(cat "$W/$name.lddebug".* 2>/dev/null | sed -n 's/.*calling init: //p' | sort -u)
  rm -f "$W/$name.lddebug".*
  foreign=$(grep -v -e "^$B/" -e "^/lib/x86_64-linux-gnu/" -e "^/usr/lib/x86_64-linux-gnu/" \
      -e "^/lib64/" -e "^${L2L_HOST_CUBLAS_DIR:-/nonexistent}/" \
      -e "^${L2L_HOST_NCCL_DIR:-/nonexistent}/" <<<"$inits" | tr '\n' ' ')
  from_host=$(grep -v -e "^$B/" <<<"$inits" | tr '\n' ' ')
  if [ "$want" != any ] && [ "$rc" != "$want" ]; then verdict="FAIL(rc=$rc, want $want)"; fi
  if [ "$verdict" = ok ] && [ -n "$pat" ] && ! grep -qE "$pat" "$W/$name.log"; then
    verdict="FAIL(output lacks /$pat/)"
  fi
  [ -z "${foreign// /}" ] || verdict="$verdict; FAIL: loaded from elsewhere: $foreign"
  [ "$verdict" = ok ] || fails=$((fails + 1))
  [ "$want" = any ] && verdict="info"
  printf '%-20s rc=%-3s %s\n' "$name" "$rc" "$verdict"
  printf '%-20s        loaded from outside the bundle: %s\n' "" "$from_host"
  {
    grep -E '^\[  (PASSED|SKIPPED|FAILED) +\] [0-9]+ test' "$W/$name.log" | head -3
    grep -m1 -E 'L2L_GPU_TESTS_SKIPPED|needs (a|one) GPU|no usable CUDA' "$W/$name.log"
    case "$verdict" in ok) ;; *) tail -4 "$W/$name.log" ;; esac
  } | cut -c1-160 | sed 's/^/                     | /'
}
cd "$repo"
source "$(dirname "${BASH_SOURCE[0]}")/checks_$vname.sh"
echo "variant $vname: $fails failed"
exit $fails
EOF

cat >"$t/checks_A.sh" <<'EOF'
check cuda_device_test 0 "L2L_GPU_TESTS_SKIPPED" "$B/bin/cuda_device_test"
check kernels_cuda_test 0 "PASSED" "$B/bin/kernels_cuda_test"
check kernels_cuda_sum_squares_test 0 "L2L_GPU_TESTS_SKIPPED" "$B/bin/kernels_cuda_sum_squares_test"
check layer_exec_cuda_test 0 "L2L_GPU_TESTS_SKIPPED" "$B/bin/layer_exec_cuda_test"
check hf_fixture_exec_test 0 "L2L_GPU_TESTS_SKIPPED" env L2L_FIXTURE_DIR="$B/fixtures/hf" "$B/bin/hf_fixture_exec_test"
mkdir -p "$W/gpu_step_test"  # it writes its corpus and run dirs into the working directory
check gpu_step_test_np1 0 "L2L_GPU_TESTS_SKIPPED" env -C "$W/gpu_step_test" "$B/bin/gpu_step_test"
check nccl_comm_test_np1 0 "L2L_GPU_TESTS_SKIPPED" "$B/bin/nccl_comm_test"
check kernels_test 0 "PASSED" "$B/bin/kernels_test"
check gemm_rate 0 "L2L_GPU_TESTS_SKIPPED" "$B/bin/gemm_rate" --quick
check l2l-data 0 "" "$B/bin/l2l-data" synthetic --out "$W/m.tok" --tokens 200000 --vocab 16 --order 1
check l2l-train_cpu 0 "" "$B/bin/l2l-train" --config configs/tiny-bert.yaml --set data.path="$W/m.tok" \
  --set train.steps=3 --set train.warmup_steps=1 --set log.every_steps=1 --set checkpoint.dir="$W/ckpt" --set log.dir="$W/runs"
if ls "$W"/ckpt/*.h5 >/dev/null 2>&1; then
  echo "l2l-train_cpu        checkpoint written: $(cd "$W/ckpt" && ls *.h5)"
else
  echo "l2l-train_cpu        FAIL: no checkpoint under $W/ckpt"; fails=$((fails + 1))
fi
# Informational: without a GPU exec.device=cuda stops at start with one line.
check l2l-train_cuda any "" "$B/bin/l2l-train" --config configs/tiny-bert.yaml --set exec.device=cuda \
  --set exec.precision=fp32 --set data.path="$W/m.tok" --set train.steps=1 --set train.warmup_steps=0 \
  --set checkpoint.dir="$W/ckpt2" --set log.dir="$W/runs2"
EOF

run_variant() {  # name, mounts (shell snippet run as root in the namespace), PATH
  local vname=$1 mounts=$2 path=$3
  echo "== variant $vname"
  mkdir -p "$t/work/$vname"
  unshare -m --propagation private bash -c "$mounts
    exec env -i PATH=$path HOME=$t/work bash $t/inner.sh $vname $B $t/work/$vname $repo"
}

total=0
run_variant A "mount -t tmpfs none /usr/share/openmpi && mount -t tmpfs none /etc/openmpi &&
  mount --bind $t/fakelib $libdir || exit 99" /usr/bin:/bin
total=$((total + $?))

if [ -x "$venv/bin/python3" ]; then
  sp=$("$venv/bin/python3" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  cat >"$t/checks_B.sh" <<EOF
if [ "\$L2L_HOST_CUBLAS_DIR" = "$sp/nvidia/cu13/lib" ] && [ "\$L2L_HOST_NCCL_DIR" = "$sp/nvidia/nccl/lib" ]; then
  echo "discovery            ok: cuBLAS and NCCL from the venv's wheels"
else
  echo "discovery            FAIL"; fails=\$((fails + 1))
fi
check cuda_device_test 0 "L2L_GPU_TESTS_SKIPPED" "$B/bin/cuda_device_test"
check nccl_comm_test_np1 0 "L2L_GPU_TESTS_SKIPPED" "$B/bin/nccl_comm_test"
check gemm_rate 0 "L2L_GPU_TESTS_SKIPPED" "$B/bin/gemm_rate" --quick
EOF
  cuda_real=$(readlink -f /usr/local/cuda)
  run_variant B "for d in $cuda_real/lib $cuda_real/lib64 $cuda_real/targets/x86_64-linux/lib; do
      [ -d \$d ] && { mount -t tmpfs none \$d || exit 99; }; done
    mount -t tmpfs none /usr/share/openmpi && mount -t tmpfs none /etc/openmpi || exit 99" \
    "$venv/bin:/usr/bin:/bin"
  total=$((total + $?))
else
  echo "== variant B skipped: no python venv at $venv"
fi
echo "test_bundle_here: $total failed"
exit $((total > 0))
