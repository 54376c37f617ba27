#!/usr/bin/env bash
# bench/gpu/device_check.sh — GPU verification of l2l on a bare GPU host (no MPI,
# HDF5, yaml-cpp or OpenBLAS there). Runs from the repo root with the bundle made
# here by bench/gpu/bundle.sh carried along:
#
#   device tool: run(command="bash bench/gpu/device_check.sh",
#                    carry=["bench/gpu/bundle-out"], timeout_s=540)
#
# Order (most important first): GPU info; the GPU tests (cuda_device_test,
# kernels_cuda_test, kernels_cuda_sum_squares_test, layer_exec_cuda_test, hf_fixture_exec_test,
# gpu_step_test and nccl_comm_test on 1 rank); the bf16 GEMM rate (gemm_rate,
# the MFU denominator); l2l-train on the CPU (bundle sanity: singleton MPI,
# HDF5) and 5 fp32 steps of tiny-bert on the GPU; then the BERT-large benchmark
# (bench/gpu/bert_large_bench.sh: l2l vs resident at 24 blocks, l2l at 96 and
# 384 blocks under a 3 GB cap, the PyTorch peers plain and fsdp2-offload last).
# Every step has a timeout and the whole run a budget (L2L_CHECK_BUDGET_S,
# default 470 s); steps that no longer fit are skipped. The compact table comes
# last.
#
# Files under $OUT (at most 8 come back): device_check.log (this output),
# summary.txt (the table), gemm_rate.jsonl, bench.jsonl, bench.md (the
# benchmark's rows and its markdown table), peers.jsonl (torch_bert.py's raw
# lines), logs.tar.gz (every step's full log, gtest XML, each benchmark run's
# log and metrics.jsonl). Without $OUT (a dry run on a machine without a GPU)
# they go to build-gpu/device-check-out/, and the benchmark runs in its CPU
# dry-run mode.
#
# Environment: L2L_CHECK_BUDGET_S (470), L2L_SKIP_PEER=1 (no torch peer),
# L2L_SKIP_BENCH=1 (no benchmark), L2L_PYTHON (python3: the one with PyTorch),
# L2L_BUNDLE_DIR (where to unpack, /tmp/l2l-gpu), L2L_GEMM_ARGS (extra gemm_rate
# arguments, e.g. --quick); the benchmark's own knobs (L2L_BENCH_*) pass through.
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo" || exit 1
OUT=${OUT:-$repo/build-gpu/device-check-out}
mkdir -p "$OUT"
budget=${L2L_CHECK_BUDGET_S:-470}
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
  # The host's own environment, for PyTorch and python (env.sh changes these three).
  host_ldlp=${LD_LIBRARY_PATH:-} host_path=$PATH
  host_omp=${OMP_WAIT_POLICY:-}
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
  run_step kernels_cuda_sum_squares_test 60 "$B/bin/kernels_cuda_sum_squares_test" \
    --gtest_output=xml:"$logdir/kernels_cuda_sum_squares_test.xml"
  gtest_verdict kernels_cuda_sum_squares_test
  run_step layer_exec_cuda_test 180 "$B/bin/layer_exec_cuda_test" --gtest_output=xml:"$logdir/layer_exec_cuda_test.xml"
  gtest_verdict layer_exec_cuda_test
  # bert, gpt2 and the llama family against transformers' own numbers, on the GPU.
  L2L_FIXTURE_DIR="$B/fixtures/hf" run_step hf_fixture_exec_test 120 "$B/bin/hf_fixture_exec_test" \
    --gtest_output=xml:"$logdir/hf_fixture_exec_test.xml"
  gtest_verdict hf_fixture_exec_test
  # An MPI gtest (singleton, one rank, like nccl_comm_test); it writes its token
  # file and run dirs into the working directory: a scratch one.
  mkdir -p "$trainwork/gpu_step_test"
  NCCL_DEBUG=${NCCL_DEBUG:-WARN} run_step gpu_step_test_np1 240 env -C "$trainwork/gpu_step_test" \
    "$B/bin/gpu_step_test" --gtest_output=xml:"$logdir/gpu_step_test_np1.xml"
  gtest_verdict gpu_step_test_np1
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

  # ---- l2l-train on the CPU (bundle sanity), then on the GPU ----------------------------
  echo "== l2l-train (CPU sanity, then tiny-bert on the GPU)"
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
  # The GPU end to end on the quickstart model: 5 fp32 steps, exit 0, finite losses.
  run_step l2l-train_cuda 90 "$B/bin/l2l-train" --config configs/tiny-bert.yaml --set exec.device=cuda \
    --set exec.precision=fp32 --set data.path="$w/m.tok" --set train.steps=5 --set train.warmup_steps=1 \
    --set log.every_steps=1 --set checkpoint.dir="$w/ckpt2" --set log.dir="$w/runs2"
  local losses nl bad
  losses=$(grep -o '"loss": [^,]*' "$w/runs2/metrics.jsonl" 2>/dev/null | awk '{print $2}')
  nl=$(grep -c . <<<"$losses")
  bad=$(grep -ciE 'nan|inf' <<<"$losses")
  if [ "$RC" = 0 ] && [ "$nl" = 5 ] && [ "$bad" = 0 ]; then
    record l2l-train_cuda PASS "$SEC" "5 fp32 steps of tiny-bert, loss $(head -1 <<<"$losses" | cut -c1-6) -> $(tail -1 <<<"$losses" | cut -c1-6); $(grep -m1 -o 'device memory plan [0-9.]* [KMG]*i*B' "$logdir/l2l-train_cuda.log")"
  elif [ "$RC" = 99 ]; then record l2l-train_cuda SKIP 0 "budget spent"
  elif [ "$RC" = 124 ] || [ "$RC" = 137 ]; then record l2l-train_cuda TIMEOUT "$SEC" "$nl steps"
  else
    local v=FAIL
    [ "$gpu" = "no GPU" ] && v=SKIP
    record l2l-train_cuda "$v" "$SEC" "rc=$RC, $nl steps, $bad non-finite: $(grep -v '^step' "$logdir/l2l-train_cuda.log" | tail -1 | cut -c1-90)"
  fi

  # ---- the BERT-large benchmark (its own script; the PyTorch peers come last in it) ----
  if [ "${L2L_SKIP_BENCH:-0}" != 1 ]; then
    echo "== BERT-large benchmark (bench/gpu/bert_large_bench.sh)"
    local left=$((budget - ($(date +%s) - t0) - 20)) dry=0
    [ "$gpu" = "no GPU" ] && dry=1  # a dry run of the script's paths on the CPU
    run_step bench "$left" env OUT="$OUT" L2L_BENCH_BUDGET_S=$((left - 15)) L2L_BENCH_LOGDIR="$logdir" \
      L2L_GEMM_JSON="$OUT/gemm_rate.jsonl" L2L_PYTHON="$py" L2L_BENCH_DRY="${L2L_BENCH_DRY:-$dry}" \
      L2L_BENCH_SKIP_PEERS="${L2L_SKIP_PEER:-${L2L_BENCH_SKIP_PEERS:-0}}" \
      L2L_HOST_LD_LIBRARY_PATH="$host_ldlp" L2L_HOST_PATH="$host_path" \
      L2L_HOST_OMP_WAIT_POLICY="$host_omp" bash bench/gpu/bert_large_bench.sh
    sed -n '/^BERT-large benchmark on/,$p' "$logdir/bench.log"
    if [ "$RC" = 99 ]; then record bench SKIP 0 "budget spent"
    elif [ "$RC" = 124 ] || [ "$RC" = 137 ]; then record bench TIMEOUT "$SEC" "the script outran its budget"
    elif [ ! -s "$logdir/bench_rows.tsv" ]; then
      record bench FAIL "$SEC" "rc=$RC, no rows: $(tail -1 "$logdir/bench.log" | cut -c1-90)"
    fi
    local n v sec note
    [ -f "$logdir/bench_rows.tsv" ] && while IFS=$'\t' read -r n v sec note; do
      record "$n" "$v" "$sec" "$note"
    done <"$logdir/bench_rows.tsv"
  fi
}

summary() {
  local i fails=0
  {
    echo
    echo "== l2l device check: ${gpu:-?}; $(($(date +%s) - t0)) s of ${budget} s"
    printf '%-30s %-7s %7s  %s\n' step result seconds details
    for i in "${!S_NAME[@]}"; do
      printf '%-30s %-7s %7s  %s\n' "${S_NAME[$i]}" "${S_VERDICT[$i]}" "${S_SEC[$i]}" "${S_NOTE[$i]}"
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
