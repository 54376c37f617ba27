#!/usr/bin/env bash
# bench/gpu/bert_large_bench.sh — the BERT-large benchmark of the CUDA-backend
# issue on one GPU: l2l against resident and against the PyTorch peers at the
# same global batch, and l2l's depth sweep under a device-memory cap.
#
#   run by bench/gpu/device_check.sh (after the GPU tests and gemm_rate), or on
#   its own on a GPU host:
#     source /tmp/l2l-gpu/l2l-bundle/env.sh; bash bench/gpu/bert_large_bench.sh
#
# Runs, in this order (BERT-large blocks: hidden 1024, 16 heads, FFN 4096,
# vocab 30522, seq 512; bf16 on cuda; global batch 64 x 512 = 32768 tokens per
# step, micro-batch 8 = 8 micro-batches on one rank):
#   l2l-24, resident-24       l2l-train, 2 warm-up + 3 timed steps
#   l2l-96                    the depth sweep, 2 + 3
#   resident-24-cap           resident 24 blocks at exec.device_memory_limit=3GB:
#                             must be refused at start (the cap is real)
#   l2l-384                   384 blocks at exec.device_memory_limit=3GB, 1 + 2
#   torch-plain-24, torch-fsdp2-offload-24   bench/peers/torch_bert.py, 2 + 3
# then a table, the targets (PASS/MISS) and $OUT/bench.jsonl, $OUT/bench.md.
#
# Runs set checkpoint.at_end=false (at 384 blocks a checkpoint is ~59 GB of
# fp32 state) and are stopped with SIGKILL as soon as their metrics.jsonl
# holds the steps wanted: tearing down ~90 GB of pinned host memory would
# cost the budget seconds for nothing. Nothing is written but logs.
#
# Host memory: before each run the host bytes it needs are estimated (l2l: the
# EPS's pinned fp32 master, m, v, grad and bf16 copy, 18 B per parameter, plus
# the host stash (layers + 2) x tokens x hidden x 2 B, plus 2 GiB) and compared
# with MemAvailable; if it does not fit with a 10% margin the global batch of
# that run is halved until it does (a NOTE in the table), or the run is skipped.
#
# Time: every run has a timeout and the script a budget (L2L_BENCH_BUDGET_S,
# default 420 s). A run's timeout is its nominal one clipped so that the
# minimum times of the runs after it still fit; a run whose own minimum no
# longer fits is skipped (SKIP, with the reason).
#
# Environment:
#   L2L_BENCH_BUDGET_S   seconds for the whole script (420)
#   L2L_BENCH_SKIP_PEERS=1  no PyTorch runs
#   L2L_BENCH_ONLY       run only these (names as above, space-separated)
#   L2L_PYTHON           the python with PyTorch (python3); it and the report
#                        run with the host's LD_LIBRARY_PATH / PATH, not env.sh's
#                        (L2L_HOST_LD_LIBRARY_PATH / L2L_HOST_PATH /
#                        L2L_HOST_OMP_WAIT_POLICY if set, else env.sh's entries
#                        are stripped)
#   L2L_BIN_DIR          where l2l-train and l2l-data are ($L2L_BUNDLE/bin)
#   L2L_GEMM_JSON        gemm_rate's JSON lines ($OUT/gemm_rate.jsonl): the MFU
#                        denominator; L2L_BENCH_PEAK_TFLOPS overrides it
#   L2L_BENCH_CAP        the cap of resident-24-cap and l2l-384 (3GB)
#   L2L_BENCH_LOGDIR     full logs and metrics (/tmp/l2l-bench-logs)
#   L2L_BENCH_WORK       token file and run dirs (/tmp/l2l-bench; removed at the end)
#   L2L_BENCH_MEM_AVAILABLE  bytes used instead of MemAvailable (a test of the
#                        batch reduction)
#   L2L_BENCH_DRY=1      a dry run on the CPU (exec.device=cpu, fp32, width 64,
#                        seq 32, batch 16; peers with --device cpu): exercises
#                        every path of this script and its report; the numbers
#                        mean nothing
# Output: $OUT/bench.jsonl, $OUT/bench.md ($OUT defaults to
# build-gpu/device-check-out); $L2L_BENCH_LOGDIR/bench_rows.tsv for
# device_check.sh. Exit 1 if a run FAILED, TIMED OUT or shows SKIP! (torch cannot
# use the GPU nvidia-smi sees); a MISS is not a failure.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo" || exit 1

budget=${L2L_BENCH_BUDGET_S:-420}
dry=${L2L_BENCH_DRY:-0}
OUT=${OUT:-$repo/build-gpu/device-check-out}
logdir=${L2L_BENCH_LOGDIR:-/tmp/l2l-bench-logs}
work=${L2L_BENCH_WORK:-/tmp/l2l-bench}
py=${L2L_PYTHON:-python3}
gemm_json=${L2L_GEMM_JSON:-$OUT/gemm_rate.jsonl}
report=$here/bench_report.py
t0=$(date +%s)
mkdir -p "$OUT" "$logdir/bench" "$work"
jsonl=$OUT/bench.jsonl
rm -f "$jsonl" "$OUT/bench.md" "$OUT/peers.jsonl" "$logdir/bench_rows.tsv"

if [ -n "${L2L_BIN_DIR:-}" ]; then bindir=$L2L_BIN_DIR
elif [ -n "${L2L_BUNDLE:-}" ]; then bindir=$L2L_BUNDLE/bin
elif [ "$dry" = 1 ] && [ -x "$repo/build/bin/l2l-train" ]; then bindir=$repo/build/bin
else
  echo "bert_large_bench: source the bundle's env.sh first (or set L2L_BIN_DIR)" >&2
  exit 2
fi
for b in l2l-train l2l-data; do
  [ -x "$bindir/$b" ] || { echo "bert_large_bench: no $bindir/$b" >&2; exit 2; }
done

# ---- the host's environment for python (env.sh's libraries must not reach torch) ----
strip_bundle() {  # a colon list without what env.sh put in it
  local out="" d arr=()
  IFS=: read -r -a arr <<<"$1"
  for d in "${arr[@]}"; do
    [ -n "$d" ] || continue
    if [ -n "${L2L_BUNDLE:-}" ]; then
      case "$d" in "$L2L_BUNDLE" | "$L2L_BUNDLE"/*) continue ;; esac
      [ "$d" = "${L2L_HOST_CUBLAS_DIR:-}" ] && continue
      [ "$d" = "${L2L_HOST_NCCL_DIR:-}" ] && continue
    fi
    out=${out:+$out:}$d
  done
  echo "$out"
}
host_ldlp=${L2L_HOST_LD_LIBRARY_PATH-$(strip_bundle "${LD_LIBRARY_PATH:-}")}
host_path=${L2L_HOST_PATH-$(strip_bundle "$PATH")}
pyenv=(env)
[ -n "$host_ldlp" ] || pyenv+=(-u LD_LIBRARY_PATH)
if [ -n "${L2L_BUNDLE:-}" ] && [ -z "${L2L_HOST_OMP_WAIT_POLICY:-}" ]; then pyenv+=(-u OMP_WAIT_POLICY); fi
[ -n "$host_ldlp" ] && pyenv+=("LD_LIBRARY_PATH=$host_ldlp")
[ -n "${L2L_HOST_OMP_WAIT_POLICY:-}" ] && pyenv+=("OMP_WAIT_POLICY=$L2L_HOST_OMP_WAIT_POLICY")
pyenv+=("PATH=$host_path" PYTHONUNBUFFERED=1)
hpy() { "${pyenv[@]}" "$py" "$@"; }

# ---- shape --------------------------------------------------------------------------
V=30522 MASK_PROB=0.15
if [ "$dry" = 1 ]; then
  H=64 NH=4 F=256 S=32 GB=16 MB=8 DEV=cpu PREC=fp32
  dims=(--set "model.hidden=$H" --set "model.heads=$NH" --set "model.ffn=$F" --set "model.seq_len=$S"
        --set exec.device=cpu --set exec.precision=fp32)
  peer_dims=(--device cpu --hidden "$H" --heads "$NH" --ffn "$F" --seq "$S")
  cap=${L2L_BENCH_CAP:-80MiB} data_tokens=200000 elem=4 eps_per_param=16
else
  H=1024 NH=16 F=4096 S=512 GB=64 MB=8 DEV=cuda PREC=bf16
  dims=(--set exec.device=cuda --set exec.precision=bf16)  # the rest is configs/bert-large.yaml
  peer_dims=(--seq "$S")
  cap=${L2L_BENCH_CAP:-3GB} data_tokens=2000000 elem=2 eps_per_param=18
fi
GIB=1073741824
block_params=$((4 * H * H + 2 * H * F + 9 * H + F))
edge_params=$((H * (V + S + 2 + 2) + H * H + 3 * H + H * V + V))  # embedding + MLM head
params() { echo $(($1 * block_params + edge_params)); }
gib() { awk -v b="$1" 'BEGIN {printf "%.1f", b / 1073741824}'; }

have_smi=0
[ "$dry" != 1 ] && command -v nvidia-smi >/dev/null 2>&1 && have_smi=1
smi_used_mib() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 2>/dev/null | head -1 | tr -dc 0-9; }
meminfo_bytes() { echo $(($(awk -v k="$1:" '$1 == k {print $2}' /proc/meminfo) * 1024)); }
# L2L_BENCH_MEM_AVAILABLE (bytes) replaces MemAvailable: a test of the batch reduction.
mem_available() { echo "${L2L_BENCH_MEM_AVAILABLE:-$(meminfo_bytes MemAvailable)}"; }

# ---- time -----------------------------------------------------------------------------
# Minimum seconds of each run still to come; a run keeps them free when it can.
declare -A MIN_S=([l2l-24]=45 [resident-24]=45 [l2l-96]=60 [resident-24-cap]=20 [l2l-384]=120
                  [torch-plain-24]=50 [torch-fsdp2-offload-24]=70)
if [ "${L2L_BENCH_SKIP_PEERS:-0}" = 1 ]; then MIN_S[torch-plain-24]=0 MIN_S[torch-fsdp2-offload-24]=0; fi
selected() { [ -z "${L2L_BENCH_ONLY:-}" ] || [[ " $L2L_BENCH_ONLY " == *" $1 "* ]]; }
for _n in "${!MIN_S[@]}"; do selected "$_n" || MIN_S[$_n]=0; done
later_min() {  # sum of MIN_S of the runs after $1
  local seen=0 sum=0 n
  for n in l2l-24 resident-24 l2l-96 resident-24-cap l2l-384 torch-plain-24 torch-fsdp2-offload-24; do
    [ "$seen" = 1 ] && sum=$((sum + MIN_S[$n]))
    [ "$n" = "$1" ] && seen=1
  done
  echo "$sum"
}
# fit NAME NOMINAL: sets CAP (seconds) or returns 1 (SKIP_WHY says why).
fit() {
  local name=$1 nominal=$2 left reserve
  if ! selected "$name"; then SKIP_WHY="not in L2L_BENCH_ONLY"; return 1; fi
  left=$((budget - ($(date +%s) - t0) - 10))
  reserve=$(later_min "$name")
  if [ $((left - reserve)) -ge "${MIN_S[$name]}" ]; then
    CAP=$((left - reserve < nominal ? left - reserve : nominal))
  elif [ "$left" -ge "${MIN_S[$name]}" ]; then
    CAP=$((left < nominal ? left : nominal))  # earlier runs first: later ones may be skipped
  else
    SKIP_WHY="budget: ${left}s left, needs ${MIN_S[$name]}s"
    return 1
  fi
}

# ---- one process, watched -------------------------------------------------------------
PID=
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() { [ -n "$PID" ] && kill -KILL "$PID" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 143' TERM INT

# launch NAME CAP METRICS WANT CMD...: CMD in the background, output to
# $logdir/bench/NAME.log. Stopped with SIGKILL once METRICS holds WANT step
# lines (WANT 0: it may run to its end) or after CAP seconds. Sets L_STATUS
# (done | exited | timeout), L_RC, L_WALL (s), L_SMI (GPU bytes over idle, 0 unknown).
launch() {
  local name=$1 cap=$2 metrics=$3 want=$4
  shift 4
  local log=$logdir/bench/$name.log s e n i=0 base=0 top=0 u
  [ "$have_smi" = 1 ] && base=$(smi_used_mib) && top=$base
  echo "---- bench $name (timeout ${cap}s): $*"
  s=$(date +%s.%N)
  "$@" >"$log" 2>&1 &
  PID=$!
  local deadline=$(($(date +%s) + cap))
  L_STATUS=
  while :; do
    if ! kill -0 "$PID" 2>/dev/null; then
      wait "$PID"
      L_RC=$? L_STATUS=exited
      break
    fi
    if [ "$want" -gt 0 ]; then
      n=$(grep -c '"step"' "$metrics" 2>/dev/null)
      if [ "${n:-0}" -ge "$want" ]; then L_STATUS="done"; break; fi
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then L_STATUS=timeout; break; fi
    if [ "$have_smi" = 1 ] && [ $((i % 2)) = 0 ]; then
      u=$(smi_used_mib)
      [ -n "$u" ] && [ "$u" -gt "$top" ] && top=$u
    fi
    i=$((i + 1))
    sleep 0.5
  done
  if [ "$L_STATUS" != exited ]; then
    kill -KILL "$PID" 2>/dev/null
    wait "$PID" 2>/dev/null
    L_RC=$?
  fi
  PID=
  e=$(date +%s.%N)
  L_WALL=$(awk -v a="$s" -v b="$e" 'BEGIN {printf "%.1f", b - a}')
  L_SMI=0
  [ "$have_smi" = 1 ] && [ "$top" -gt "$base" ] && L_SMI=$(((top - base) * 1048576))
  tail -n 4 "$log" | cut -c1-200
  echo "---- bench $name: $L_STATUS (rc=$L_RC), ${L_WALL}s"
}

# ---- l2l-train runs -----------------------------------------------------------------------
tokfile=$work/synthetic-v$((V - 1)).tok
common=(--config configs/bert-large.yaml --set data.path="$tokfile" "${dims[@]}"
        --set "train.micro_batch=$MB" --set train.warmup_steps=0 --set train.schedule=constant
        --set train.eval_every_steps=0 --set checkpoint.every_steps=0 --set checkpoint.at_end=false
        --set log.every_steps=1)

# l2l_run NAME MODE LAYERS LIMIT WARMUP TIMED NOMINAL_S
l2l_run() {
  local name=$1 mode=$2 layers=$3 limit=$4 warm=$5 timed=$6 nominal=$7
  if ! fit "$name" "$nominal"; then
    echo "---- bench $name: SKIP ($SKIP_WHY)"
    hpy "$report" skip --out "$jsonl" --name "$name" --system l2l --mode "$mode" --layers "$layers" --note "$SKIP_WHY"
    return
  fi
  local p gb=$GB need avail stash eps note=""
  p=$(params "$layers")
  avail=$(mem_available)
  while :; do
    stash=$(((layers + 2) * gb * S * H * elem))
    eps=0
    [ "$mode" = l2l ] && eps=$((p * eps_per_param))
    need=$((eps + stash + 2 * GIB))
    [ $((need * 11 / 10)) -le "$avail" ] && break
    if [ "$gb" -le "$MB" ]; then
      SKIP_WHY="host memory: needs $(gib $need) GiB (EPS $(gib $eps) + stash $(gib $stash) + 2) x 1.1 at the smallest batch, MemAvailable $(gib "$avail") GiB"
      echo "---- bench $name: SKIP ($SKIP_WHY)"
      hpy "$report" skip --out "$jsonl" --name "$name" --system l2l --mode "$mode" --layers "$layers" --note "$SKIP_WHY"
      return
    fi
    gb=$((gb / 2 / MB * MB))
    [ "$gb" -lt "$MB" ] && gb=$MB
  done
  if [ "$gb" != "$GB" ]; then
    note="NOTE: global batch $GB -> $gb ($((gb * S)) tokens/step): at $GB the host needs $(gib $((eps + (layers + 2) * GB * S * H * elem + 2 * GIB))) GiB x 1.1 > MemAvailable $(gib "$avail") GiB"
    echo "bench $name: $note"
  fi
  echo "bench $name: $p parameters; host estimate $(gib $need) GiB (EPS $(gib $eps), stash $(gib $stash), 2 other); MemAvailable $(gib "$avail") GiB"
  local d=$work/$name
  rm -rf "$d"
  mkdir -p "$d"
  launch "$name" "$CAP" "$d/runs/metrics.jsonl" $((warm + timed)) \
    "$bindir/l2l-train" "${common[@]}" --set model.layers="$layers" --set exec.mode="$mode" \
    --set exec.device_memory_limit="$limit" --set train.global_batch="$gb" \
    --set train.steps=$((warm + timed + 1000)) \
    --set checkpoint.dir="$d/ckpt" --set log.dir="$d/runs"
  cp "$d/runs/metrics.jsonl" "$logdir/bench/$name.metrics.jsonl" 2>/dev/null
  local st=FAIL
  case "$L_STATUS" in done) st=ok ;; timeout) st=TIMEOUT ;; esac
  [ "$L_STATUS" = timeout ] && note="${note:+$note; }timed out after ${CAP}s"
  hpy "$report" l2l --out "$jsonl" --name "$name" --mode "$mode" --layers "$layers" \
    --status "$st" --rc "$L_RC" --wall "$L_WALL" --note "$note" --log "$logdir/bench/$name.log" \
    --smi-peak "$L_SMI" --metrics "$d/runs/metrics.jsonl" --warmup "$warm" --timed "$timed" \
    --global-batch "$gb" --micro-batch "$MB" --seq "$S" --limit "$limit" \
    --host-need "$need" --mem-available "$avail"
  rm -rf "$d"
}

# cap_check NAME MODE LAYERS LIMIT: the configuration must be refused at start.
cap_check() {
  local name=$1 mode=$2 layers=$3 limit=$4
  if ! fit "$name" 40; then
    echo "---- bench $name: SKIP ($SKIP_WHY)"
    printf '{"kind": "check", "name": "%s", "system": "l2l", "mode": "%s", "layers": %d, "status": "SKIP", "note": "%s", "device_memory_limit": "%s"}\n' \
      "$name" "$mode" "$layers" "$SKIP_WHY" "$limit" >>"$jsonl"
    return
  fi
  local d=$work/$name
  mkdir -p "$d"
  # If it is not refused it trains: stopped after its first step.
  launch "$name" "$CAP" "$d/runs/metrics.jsonl" 1 \
    "$bindir/l2l-train" "${common[@]}" --set model.layers="$layers" --set exec.mode="$mode" \
    --set exec.device_memory_limit="$limit" --set train.global_batch="$MB" --set train.steps=1000 \
    --set checkpoint.dir="$d/ckpt" --set log.dir="$d/runs"
  local st=ok
  [ "$L_STATUS" = timeout ] && st=TIMEOUT
  hpy "$report" cap --out "$jsonl" --name "$name" --mode "$mode" --layers "$layers" \
    --status "$st" --rc "$L_RC" --wall "$L_WALL" --log "$logdir/bench/$name.log" --limit "$limit"
  rm -rf "$d"
}

# torch_run NAME MODE LAYERS NOMINAL_S
torch_run() {
  local name=$1 mode=$2 layers=$3 nominal=$4
  if [ "${L2L_BENCH_SKIP_PEERS:-0}" = 1 ]; then
    hpy "$report" skip --out "$jsonl" --name "$name" --system torch --mode "$mode" --layers "$layers" --note "L2L_BENCH_SKIP_PEERS=1"
    return
  fi
  if ! fit "$name" "$nominal"; then
    echo "---- bench $name: SKIP ($SKIP_WHY)"
    hpy "$report" skip --out "$jsonl" --name "$name" --system torch --mode "$mode" --layers "$layers" --note "$SKIP_WHY"
    return
  fi
  local p need avail
  p=$(params "$layers")
  avail=$(mem_available)
  # plain: the model is built on the host first; fsdp2-offload: fp32 params,
  # grads, AdamW m and v pinned on the host (+ a bf16 staging margin).
  need=$((p * 8 + 4 * GIB))
  [ "$mode" = fsdp2-offload ] && need=$((p * 20 + 4 * GIB))
  if [ $((need * 11 / 10)) -gt "$avail" ]; then
    SKIP_WHY="host memory: needs $(gib $need) GiB x 1.1, MemAvailable $(gib "$avail") GiB"
    echo "---- bench $name: SKIP ($SKIP_WHY)"
    hpy "$report" skip --out "$jsonl" --name "$name" --system torch --mode "$mode" --layers "$layers" --note "$SKIP_WHY"
    return
  fi
  launch "$name" "$CAP" /dev/null 0 "${pyenv[@]}" "$py" bench/peers/torch_bert.py --mode "$mode" \
    --layers "$layers" --batch "$GB" --steps 3 --warmup 2 "${peer_dims[@]}" --json "$OUT/peers.jsonl"
  local st=FAIL note=""
  [ "$L_STATUS" = exited ] && [ "$L_RC" = 0 ] && st=ok
  [ "$L_STATUS" = timeout ] && st=TIMEOUT note="timed out after ${CAP}s"
  if [ "$st" = FAIL ] && grep -q 'CUDA is not available\|cannot import torch' "$logdir/bench/$name.log"; then
    st=SKIP note="no usable torch/CUDA for $py"
    [ "$have_smi" = 1 ] && st='SKIP!'  # nvidia-smi sees a GPU that torch does not: a failure
  fi
  hpy "$report" torch --out "$jsonl" --name "$name" --mode "$mode" --layers "$layers" \
    --status "$st" --rc "$L_RC" --wall "$L_WALL" --note "$note" --log "$logdir/bench/$name.log" \
    --smi-peak "$L_SMI"
}

# ---- main ------------------------------------------------------------------------------
gpu="cpu (dry run)"
if [ "$dry" != 1 ]; then
  gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
  [ -n "$gpu" ] || gpu="unknown GPU"
fi
# The commit the measured binaries were built from: the bundle's, else this tree's.
commit=
if [ "$bindir" = "${L2L_BUNDLE:-}/bin" ]; then
  commit=$(sed -n 's/.* from commit \([0-9a-f]*\(+dirty\)\{0,1\}\).*/\1/p' "$repo/bench/gpu/bundle-out/MANIFEST.txt" 2>/dev/null | head -1)
fi
if [ -z "$commit" ]; then
  commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null)
  [ -n "$commit" ] && ! git -C "$repo" diff --quiet HEAD -- src include 2>/dev/null && commit="$commit+dirty"
fi
commit=${commit:-?}
echo "== BERT-large benchmark: $gpu, budget ${budget}s, $(nproc) CPUs, MemAvailable $(gib "$(mem_available)") GiB, commit $commit"
hpy "$report" meta --out "$jsonl" --gpu "$gpu" --date "$(date -u +%Y-%m-%d)" --commit "$commit" \
  --device "$DEV" --precision "$PREC" --hidden "$H" --heads "$NH" --ffn "$F" --vocab "$V" --seq "$S" \
  --mask-prob "$MASK_PROB" --global-batch "$GB" --micro-batch "$MB" \
  --mem-total "$(meminfo_bytes MemTotal)" --budget "$budget" --dry "$dry" ||
  { echo "bert_large_bench: $py cannot run $report" >&2; exit 2; }

# One token file for every run: data vocab 30521 (the model's 30522 minus
# [MASK]), order 0 (an order-1 table would be 30521^2 entries).
"$bindir/l2l-data" synthetic --out "$tokfile" --tokens "$data_tokens" --vocab $((V - 1)) --order 0 \
  >"$logdir/bench/l2l-data.log" 2>&1 || { cat "$logdir/bench/l2l-data.log"; echo "bert_large_bench: l2l-data failed" >&2; exit 1; }

l2l_run l2l-24 l2l 24 0 2 3 90
l2l_run resident-24 resident 24 0 2 3 90
l2l_run l2l-96 l2l 96 0 2 3 120
cap_check resident-24-cap resident 24 "$cap"
l2l_run l2l-384 l2l 384 "$cap" 1 2 300
torch_run torch-plain-24 plain 24 100
torch_run torch-fsdp2-offload-24 fsdp2-offload 24 150

echo
hpy "$report" report --jsonl "$jsonl" --gemm "$gemm_json" --md "$OUT/bench.md" \
  --rows "$logdir/bench_rows.tsv" --peak "${L2L_BENCH_PEAK_TFLOPS:-}"
echo "bench: $(($(date +%s) - t0)) s of $budget s; $jsonl, $OUT/bench.md"
if grep -qE $'\t(FAIL|TIMEOUT|SKIP!)\t' "$logdir/bench_rows.tsv" 2>/dev/null; then exit 1; fi
exit 0
