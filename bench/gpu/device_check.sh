#!/usr/bin/env bash
# bench/gpu/device_check.sh — GPU verification of l2l on a bare GPU host (no MPI,
# HDF5, yaml-cpp or OpenBLAS there). Runs from the repo root with the bundle made
# here by bench/gpu/bundle.sh carried along:
#
#   device tool: run(command="bash bench/gpu/device_check.sh",
#                    carry=["bench/gpu/bundle-out"], timeout_s=540)
#
# Order: GPU info; the GPU tests (cuda_device_test, kernels_cuda_test,
# nccl_comm_test on 1 rank); the bf16 GEMM rate (gemm_rate, the MFU
# denominator); l2l-train on the CPU (bundle sanity: singleton MPI, HDF5) and its
# refusal of exec.device=cuda; the PyTorch peer (bench/peers/torch_bert.py, 2
# BERT-large-width blocks, plain and fsdp2-offload) as a smoke test. Every step
# has a timeout and the whole run a budget (L2L_CHECK_BUDGET_S, default 450 s);
# steps that no longer fit are skipped. The compact table comes last.
#
# Files under $OUT (at most 8 come back): device_check.log (this output),
# summary.txt (the table), gemm_rate.jsonl, peers.jsonl, logs.tar.gz (every
# step's full log and gtest XML). Without $OUT (a dry run on a machine without a
# GPU) they go to build-gpu/device-check-out/.
#
# Environment: L2L_CHECK_BUDGET_S (450), L2L_SKIP_PEER=1 (no torch peer),
# L2L_PYTHON (python3: the one with PyTorch), L2L_BUNDLE_DIR (where to unpack,
# /tmp/l2l-gpu), L2L_GEMM_ARGS (extra gemm_rate arguments, e.g. --quick).
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo" || exit 1
OUT=${OUT:-$repo/build-gpu/device-check-out}
mkdir -p "$OUT"
budget=${L2L_CHECK_BUDGET_S:-450}
t0=$(date +%s)
logdir=/tmp/l2l-device-check
trainwork=/tmp/l2l-device-check-train
py=${L2L_PYTHON:-python3}
unpack=${L2L_BUNDLE_DIR:-/tmp/l2l-gpu}
tarball=$repo/bench/gpu/bundle-out/l2l-gpu-bundle.tar.xz

S_NAME=() S_VERDICT=() S_SEC=() S_NOTE=()
record() { S_NAME+=("$1"); S_VERDICT+=("$2"); S_SEC+=("$3"); S_NOTE+=("$4"); }

# run_step NAME TIMEOUT CMD...: runs CMD with a timeout clipped to the budget,
# output to $logdir/NAME.log (its tail echoed); sets RC and SEC. RC 99: skipped.
run_step() {
  local name=$1 to=$2
  shift 2
  local left=$((budget - ($(date +%s) - t0) - 20))
  if [ "$left" -lt 15 ]; then
    echo "---- $name: SKIPPED, budget spent"
    RC=99 SEC=0
    return
  fi
  [ "$to" -gt "$left" ] && to=$left
  echo "---- $name (timeout ${to}s): $*"
  local s e
  s=$(date +%s.%N)
  timeout -k 10 "$to" "$@" >"$logdir/$name.log" 2>&1
  RC=$?
  e=$(date +%s.%N)
  SEC=$(awk -v a="$s" -v b="$e" 'BEGIN {printf "%.1f", b - a}')
  tail -n 12 "$logdir/$name.log" | cut -c1-220
  echo "---- $name: rc=$RC, ${SEC}s"
}

# Verdict of a GoogleTest binary's log.
gtest_verdict() {  # name
  local f=$logdir/$1.log ok sk fl names
  ok=$(grep -cE '^\[       OK \] .* \([0-9]+ ms\)' "$f")
  sk=$(grep -cE '^\[  SKIPPED \] .* \([0-9]+ ms\)' "$f")
  fl=$(grep -cE '^\[  FAILED  \] .* \([0-9]+ ms\)' "$f")
  names=$(grep -oE '^\[  FAILED  \] [^ ]+ \(' "$f" | sed -E 's/^\[  FAILED  \] //; s/ \($//' | head -3 | tr '\n' ' ')
  local v note="$ok passed, $sk skipped, $fl failed"
  if [ "$RC" = 99 ]; then v=SKIP note="budget spent"
  elif [ "$RC" = 124 ] || [ "$RC" = 137 ]; then v=TIMEOUT note="$note (killed)"
  elif [ "$RC" = 0 ] && [ "$fl" = 0 ] && [ "$sk" = 0 ] && [ "$ok" -gt 0 ]; then v=PASS
  elif [ "$RC" = 0 ] && [ "$fl" = 0 ]; then
    v=SKIP
    [ "$gpu" != "no GPU" ] && v="SKIP!"  # nvidia-smi sees a GPU but the test does not
    note="$note: $(grep -m1 -oE 'L2L_GPU_TESTS_SKIPPED.*|needs (a|one) GPU.*|no usable CUDA.*' "$f" | cut -c1-90)"
  else v=FAIL note="$note${names:+: $names}"; [ "$fl" = 0 ] && note="$note (rc=$RC; see log)"
  fi
  record "$1" "$v" "$SEC" "$note"
}

peer_note() {  # one JSON line of torch_bert.py on stdin -> a short note
  "$py" -c '
import json, sys
r = json.loads(sys.stdin.read())
mem = r["max_memory_allocated"]
print("%.0f tok/s, %.0f model TF/s, peak %s, %dx%d, batch %dx%d" % (
    r["tokens_per_s"], r["model_tflops"], "%.2f GiB" % (mem / 2**30) if mem else "n/a",
    r["layers"], r["hidden"], r["batch"], r["seq"]))' 2>/dev/null || echo "(no JSON line)"
}

main() {
  rm -rf "$logdir" "$trainwork"
  mkdir -p "$logdir"
  echo "== l2l device check, $(date -u +%Y-%m-%dT%H:%M:%SZ), budget ${budget}s, OUT=$OUT"
  echo "repo: $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')"

  # ---- bundle ------------------------------------------------------------------
  if [ ! -f "$tarball" ]; then
    echo "FATAL: no $tarball: run bench/gpu/bundle.sh on the build machine and carry bench/gpu/bundle-out"
    record bundle FAIL 0 "missing $tarball"
    return 1
  fi
  if [ -f "${tarball%.tar.xz}.sha256" ] &&
    [ "$(sha256sum "$tarball" | awk '{print $1}')" != "$(cat "${tarball%.tar.xz}.sha256")" ]; then
    echo "FATAL: $tarball does not match its sha256"
    record bundle FAIL 0 "sha256 mismatch"
    return 1
  fi
  rm -rf "$unpack"
  mkdir -p "$unpack"
  if command -v xz >/dev/null 2>&1; then
    tar -C "$unpack" -xJf "$tarball"
  else
    "$py" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$tarball" "$unpack"
  fi || { record bundle FAIL 0 "cannot unpack"; return 1; }
  # The host's own environment, for PyTorch (env.sh changes these three).
  host_ldlp=${LD_LIBRARY_PATH:-} host_path=$PATH
  host_omp=(-u OMP_WAIT_POLICY)
  [ -n "${OMP_WAIT_POLICY+x}" ] && host_omp=("OMP_WAIT_POLICY=$OMP_WAIT_POLICY")
  # shellcheck disable=SC1091
  source "$unpack/l2l-bundle/env.sh"
  B=$L2L_BUNDLE
  head -4 "$repo/bench/gpu/bundle-out/MANIFEST.txt" 2>/dev/null
  record bundle PASS 0 "cuBLAS from ${L2L_HOST_CUBLAS_DIR:-NOT FOUND}; NCCL from ${L2L_HOST_NCCL_DIR:-NOT FOUND}"

  # ---- host info -----------------------------------------------------------------
  echo "== host"
  gpu="no GPU"
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi -L
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,power.limit,temperature.gpu,persistence_mode \
      --format=csv 2>&1 | head -3
    gpu=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)
  else
    echo "nvidia-smi: not found"
  fi
  echo "kernel $(uname -r); $(grep -m1 PRETTY_NAME /etc/os-release 2>/dev/null); $(ldd --version 2>&1 | head -1)"
  echo "cpus $(nproc); $(free -g 2>/dev/null | awk '/^Mem:/ {print $2 " GiB RAM"}')"
  command -v nvcc >/dev/null 2>&1 && nvcc --version | tail -2 | head -1
  "$py" -c 'import importlib.metadata as m; print("torch", m.version("torch"))' 2>/dev/null || echo "torch: not importable by $py"
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  echo "libcuda: $( (ldconfig -p || /sbin/ldconfig -p) 2>/dev/null | awk '/libcuda\.so\.1 / {print $NF; exit}')"

  # ---- GPU tests (full paths: gtest death tests re-exec argv[0]) ------------------
  echo "== GPU tests"
  run_step cuda_device_test 120 "$B/bin/cuda_device_test" --gtest_output=xml:"$logdir/cuda_device_test.xml"
  gtest_verdict cuda_device_test
  run_step kernels_cuda_test 240 "$B/bin/kernels_cuda_test" --gtest_output=xml:"$logdir/kernels_cuda_test.xml"
  gtest_verdict kernels_cuda_test
  NCCL_DEBUG=${NCCL_DEBUG:-WARN} run_step nccl_comm_test_np1 120 "$B/bin/nccl_comm_test" \
    --gtest_output=xml:"$logdir/nccl_comm_test_np1.xml"
  gtest_verdict nccl_comm_test_np1

  # ---- GEMM rate -------------------------------------------------------------------
  echo "== bf16 GEMM rate"
  # shellcheck disable=SC2086
  run_step gemm_rate 180 "$B/bin/gemm_rate" --json "$OUT/gemm_rate.jsonl" ${L2L_GEMM_ARGS:-}
  local g=$logdir/gemm_rate.log
  if [ "$RC" = 99 ]; then record gemm_rate SKIP 0 "budget spent"
  elif grep -q L2L_GPU_TESTS_SKIPPED "$g"; then record gemm_rate "$([ "$gpu" = "no GPU" ] && echo SKIP || echo 'SKIP!')" "$SEC" "$(grep -m1 -o 'no usable.*' "$g" | cut -c1-90)"
  elif [ "$RC" = 0 ] && grep -q 'GEMM_RATE_SUMMARY.*checks=ok' "$g"; then
    record gemm_rate PASS "$SEC" "$(sed -n 's/.*block_step_tflops=\([0-9.]*\) raw_block_step_tflops=\([0-9.]*\).*/block 2fwd+dx+dw: l2l \1 TF\/s, raw \2/p' "$g"); 8192^3: $(awk '$1 == "square8192" {print $9 " TF/s"}' "$g")"
  else
    record gemm_rate FAIL "$SEC" "rc=$RC $(grep -m1 -E 'CHECK FAILED|gemm_rate: ' "$g" | cut -c1-100)"
  fi

  # ---- l2l-train on the CPU (bundle sanity), and exec.device=cuda ---------------------
  echo "== l2l-train (CPU sanity)"
  local w=$trainwork
  mkdir -p "$w"
  run_step l2l-data 60 "$B/bin/l2l-data" synthetic --out "$w/m.tok" --tokens 200000 --vocab 16 --order 1
  run_step l2l-train_cpu 90 "$B/bin/l2l-train" --config configs/tiny-bert.yaml --set data.path="$w/m.tok" \
    --set train.steps=3 --set train.warmup_steps=1 --set log.every_steps=1 \
    --set checkpoint.dir="$w/ckpt" --set log.dir="$w/runs"
  if [ "$RC" = 0 ] && ls "$w"/ckpt/*.h5 >/dev/null 2>&1; then
    record l2l-train_cpu PASS "$SEC" "3 CPU steps, $(grep -m1 -o 'saved .*' "$logdir/l2l-train_cpu.log" | sed -E 's|/[^ ]*/||' | cut -c1-70)"
  else
    record l2l-train_cpu "$([ "$RC" = 99 ] && echo SKIP || echo FAIL)" "$SEC" "rc=$RC $(tail -1 "$logdir/l2l-train_cpu.log" | cut -c1-90)"
  fi
  run_step l2l-train_cuda 60 "$B/bin/l2l-train" --config configs/tiny-bert.yaml --set exec.device=cuda \
    --set data.path="$w/m.tok" --set train.steps=1 --set train.warmup_steps=0 \
    --set checkpoint.dir="$w/ckpt2" --set log.dir="$w/runs2"
  record l2l-train_cuda INFO "$SEC" "rc=$RC: $(grep -m1 -E 'exec.device|error|CHECK' "$logdir/l2l-train_cuda.log" | cut -c1-100)"

  # ---- PyTorch peer (smoke test at BERT-large width, 2 blocks) ------------------------
  if [ "${L2L_SKIP_PEER:-0}" != 1 ]; then
    echo "== PyTorch peer"
    local m
    for m in plain fsdp2-offload; do
      run_step "peer_$m" 150 env "${host_omp[@]}" LD_LIBRARY_PATH="$host_ldlp" PATH="$host_path" \
        PYTHONUNBUFFERED=1 "$py" bench/peers/torch_bert.py \
        --mode "$m" --layers 2 --batch 8 --seq 512 --steps 5 --warmup 2 --json "$OUT/peers.jsonl"
      local f=$logdir/peer_$m.log
      if [ "$RC" = 0 ]; then
        record "peer_$m" PASS "$SEC" "$(grep '^{"peer"' "$f" | tail -1 | peer_note)"
      elif [ "$RC" = 99 ]; then record "peer_$m" SKIP 0 "budget spent"
      else
        local v=FAIL
        grep -q 'CUDA is not available\|cannot import torch' "$f" && v=SKIP
        [ "$v" = SKIP ] && [ "$gpu" != "no GPU" ] && v="SKIP!"
        record "peer_$m" "$v" "$SEC" "rc=$RC $(grep -v '^step' "$f" | tail -1 | cut -c1-100)"
      fi
    done
  fi
}

summary() {
  local i fails=0
  {
    echo
    echo "== l2l device check: ${gpu:-?}; $(($(date +%s) - t0)) s of ${budget} s"
    printf '%-20s %-7s %7s  %s\n' step result seconds details
    for i in "${!S_NAME[@]}"; do
      printf '%-20s %-7s %7s  %s\n' "${S_NAME[$i]}" "${S_VERDICT[$i]}" "${S_SEC[$i]}" "${S_NOTE[$i]}"
    done
  } | tee "$OUT/summary.txt"
  for i in "${!S_NAME[@]}"; do
    case "${S_NAME[$i]}:${S_VERDICT[$i]}" in
      *:FAIL|*:TIMEOUT|*:SKIP!) fails=$((fails + 1)) ;;
    esac
  done
  tar -C "$(dirname "$logdir")" -czf "$OUT/logs.tar.gz" "$(basename "$logdir")" 2>/dev/null
  echo "files: $(cd "$OUT" && ls | tr '\n' ' ')"
  return $((fails > 0))
}

{
  main
  summary
} 2>&1 | tee "$OUT/device_check.log"
rc=${PIPESTATUS[0]}
exit "$rc"
