#!/usr/bin/env bash
# resume_cli_test.sh L2L_TRAIN L2L_DATA MPIEXEC CKPT_MAKE_FIXTURE MPIRUN_SH
set -uo pipefail
train=$(realpath "$1") data=$(realpath "$2") mpiexec=$(realpath "$3") fixture=$(realpath "$4")
mpirun_sh=$(realpath "$5")  # launch/mpirun.sh, the user-facing launcher
work=$(mktemp -d)
trap 'pkill -KILL -f "$work" 2>/dev/null; rm -rf "$work"' EXIT
cd "$work"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }

"$data" synthetic --out c.tok --tokens 40000 --vocab 32 --order 2 --seed 1 >/dev/null
cat > run.yaml <<YAML
model: {kind: bert, layers: 2, hidden: 32, heads: 4, ffn: 64, vocab: 40, seq_len: 16}
data: {path: $work/c.tok, eval_fraction: 0.05}
train: {steps: 4, global_batch: 8, micro_batch: 2}
checkpoint: {dir: $work/ck, every_steps: 2, keep_last: 2}
log: {dir: $work/run, every_steps: 1}
YAML
"$mpiexec" 2 "$train" --config run.yaml >out.txt 2>err.txt || bad "first run failed: $(cat err.txt)"
[ -f ck/step-00000004.h5 ] && [ "$(cat ck/latest)" != "" ] && ok || bad "no step-4 checkpoint"
good=ck/step-00000004.h5

# refused NAME 'substring' [ARGS]: a 2-rank run of 6 steps with ARGS exits 2
# with one stderr line, and the checkpoint directory ck is byte-for-byte
# unchanged (its listing included).
refused() {
  local name=$1 want=$2
  shift 2
  local before after rc
  before=$( (ls -A ck; md5sum ck/*) | md5sum)
  "$mpiexec" 2 "$train" --config run.yaml --set train.steps=6 "$@" >out.txt 2>err.txt
  rc=$?
  after=$( (ls -A ck; md5sum ck/*) | md5sum)
  if [ "$rc" -ne 2 ]; then bad "$name: exit $rc, expected 2: $(head -c 400 err.txt)"
  elif [ "$(grep -c . err.txt)" -ne 1 ]; then bad "$name: not one line: $(head -c 600 err.txt)"
  elif ! grep -qF -- "$want" err.txt; then bad "$name: lacks '$want': $(cat err.txt)"
  elif [ "$before" != "$after" ]; then bad "$name: checkpoint directory changed"
  else ok; fi
}
# resume_error NAME 'substring' FILE [ARGS]: refused, resuming FILE.
resume_error() {
  local name=$1 want=$2 file=$3
  shift 3
  refused "$name" "$want" --resume "$file" "$@"
}

# --eval-only: the weights over the eval set once, at any world size the same
# perplexity, and nothing written (checkpoints and metrics unchanged).
"$data" synthetic --out held.tok --tokens 1000 --vocab 32 --order 2 --seed 9 >/dev/null
state() { (ls -A ck run; md5sum ck/* run/*) | md5sum; }
before=$(state)
value() { sed -n "s/^$1=//p" "$2"; }
for np in 1 2; do
  "$mpiexec" $np "$train" --config run.yaml --eval-only --resume auto >"eval$np.txt" 2>err.txt ||
    bad "eval-only np $np: $(cat err.txt)"
done
p1=$(value perplexity eval1.txt) p2=$(value perplexity eval2.txt)
if [ -n "$p1" ] && awk -v a="$p1" -v b="$p2" 'BEGIN { d = a - b; exit !(d * d <= 1e-14 * a * a) }'
then ok; else bad "eval-only: perplexity $p1 at 1 rank, $p2 at 2"; fi
# 40000 tokens: 2499 samples of 16, 5% (125) held out.
[ "$(value eval_samples eval2.txt)" = 125 ] && [ "$(value eval_targets eval2.txt)" -gt 0 ] && ok ||
  bad "eval-only: $(cat eval2.txt)"
"$mpiexec" 2 "$train" --config run.yaml --eval-only --init-from "$good" >evali.txt 2>err.txt ||
  bad "eval-only --init-from: $(cat err.txt)"
[ "$(value perplexity evali.txt)" = "$p2" ] && ok ||
  bad "eval-only: --init-from the latest gives $(value perplexity evali.txt), --resume auto $p2"
"$mpiexec" 2 "$train" --config run.yaml --eval-only --init-from "$good" \
  --set data.eval_path="$work/held.tok" >evalh.txt 2>err.txt || bad "eval-only held.tok: $(cat err.txt)"
# 1000 tokens: 62 samples of 16, all of them.
[ "$(value eval_samples evalh.txt)" = 62 ] && [ "$(value eval_targets evalh.txt)" -gt 0 ] &&
  [ "$(value perplexity evalh.txt)" != "$p2" ] && ok || bad "eval-only data.eval_path: $(cat evalh.txt)"
[ "$(state)" = "$before" ] && ok || bad "eval-only changed checkpoints or metrics"
refused "eval-only without weights" "--eval-only needs the weights to evaluate" --eval-only
mkdir -p empty
refused "eval-only, no checkpoint" "--eval-only --resume auto: no checkpoint in $work/empty" \
  --eval-only --resume auto --set checkpoint.dir="$work/empty"
refused "eval-only, no eval set" "nothing to evaluate: data.eval_fraction is 0" \
  --eval-only --init-from "$good" --set data.eval_fraction=0
"$data" synthetic --out held64.tok --tokens 1000 --vocab 30 --order 2 --seed 9 >/dev/null
refused "eval-only, another tokenizer's eval file" \
  "data.eval_path: $work/held64.tok has vocab_size 30, but data.path $work/c.tok has 32" \
  --eval-only --init-from "$good" --set data.eval_path="$work/held64.tok"
# Evaluation needs the weights only: another global batch is fine.
"$mpiexec" 2 "$train" --config run.yaml --eval-only --resume auto --set train.global_batch=4 \
  >evalb.txt 2>err.txt || bad "eval-only, other batch: $(cat err.txt)"
awk -v a="$(value perplexity evalb.txt)" -v b="$p2" 'BEGIN { d = a - b; exit !(d * d <= 1e-14 * a * a) }' &&
  ok || bad "eval-only: global_batch 4 gives $(value perplexity evalb.txt), 8 gives $p2"
grep -q "^l2l: eval-only: [^ ]*ck/step-00000004.h5 over " evali.txt && ok ||
  bad "eval-only --init-from does not name its checkpoint: $(head -3 evali.txt)"
refused "eval-only, missing eval file" "data.eval_path: token file nope.tok does not exist" \
  --eval-only --init-from "$good" --set data.eval_path=nope.tok

# Runs that would supersede and prune checkpoints they did not write are
# refused before any step: a fresh run, a fine-tune, a resume of another
# directory's checkpoint; an empty --resume is an error, not a fresh start.
refused "fresh run in a directory holding checkpoints" \
  "checkpoint.dir $work/ck already holds checkpoints (latest, step-00000002.h5, step-00000004.h5)"
mkdir -p elsewhere && cp "$good" elsewhere/
refused "fine-tune into a directory holding checkpoints" "already holds checkpoints" \
  --init-from elsewhere/step-00000004.h5
refused "resume from another directory into one holding checkpoints" "already holds checkpoints" \
  --resume elsewhere/step-00000004.h5
refused "empty --resume" "--resume needs 'auto' or a checkpoint path, got an empty one" --resume ""
refused "empty --resume=" "--resume needs 'auto'" --resume=
# A `latest` that does not lead to a checkpoint is an error, not "start fresh".
mkdir -p ck3 && ln -s gone.h5 ck3/latest
refused "dangling latest link" "ck3/latest: a link to a file that does not exist" \
  --resume auto --set "checkpoint.dir=$work/ck3"
rm ck3/latest && printf 'step-1.h5\n\033[2J\n' > ck3/latest
refused "garbage latest, escaped" "found 'step-1.h5\\x0a\\x1b[2J\\x0a'" \
  --resume auto --set "checkpoint.dir=$work/ck3"
rm ck3/latest && mkfifo ck3/latest
refused "FIFO as latest" "ck3/latest: not a regular file (a FIFO)" \
  --resume auto --set "checkpoint.dir=$work/ck3"
# Checkpoint files but no `latest` (a crash between a save's rename and its
# `latest`): --resume auto names the file to resume instead of starting fresh.
mkdir -p ck4 && cp "$good" ck4/
refused "no latest beside a checkpoint" \
  "ck4 has no 'latest' but holds step-00000004.h5 (a save interrupted while it was published?): resume it with --resume $work/ck4/step-00000004.h5" \
  --resume auto --set "checkpoint.dir=$work/ck4"
# Ranks that do not see the same checkpoint.dir (a node-local disk; here two
# working directories and a relative path): refused by every rank in bounded
# time, where the collective HDF5 create used to block for ever.
mkdir -p nodeA nodeB
timeout 120 "$mpiexec" 1 --wdir "$work/nodeA" "$train" --config "$work/run.yaml" \
  --set checkpoint.dir=local --set log.dir=runlocal : \
  -np 1 --wdir "$work/nodeB" "$train" --config "$work/run.yaml" \
  --set checkpoint.dir=local --set log.dir=runlocal >out.txt 2>err.txt
rc=$?
if [ "$rc" -eq 2 ] && [ "$(grep -c . err.txt)" -eq 1 ] &&
   grep -qF "checkpoint.dir local is not shared: rank 1 (on " err.txt &&
   ! ls nodeA/local/*.h5 nodeB/local/*.h5 >/dev/null 2>&1; then ok
else bad "checkpoint.dir not shared: exit $rc: $(head -c 600 err.txt)"; fi
# A checkpoint that rank 0 finds but rank 1 cannot see (relative to rank 0's
# working directory only): refused naming the rank, no hang.
mkdir -p nodeA/mine && cp "$good" nodeA/mine/
timeout 120 "$mpiexec" 1 --wdir "$work/nodeA" "$train" --config "$work/run.yaml" \
  --set "checkpoint.dir=$work/ck5" --resume mine/step-00000004.h5 --set train.steps=6 : \
  -np 1 --wdir "$work/nodeB" "$train" --config "$work/run.yaml" \
  --set "checkpoint.dir=$work/ck5" --resume mine/step-00000004.h5 --set train.steps=6 \
  >out.txt 2>err.txt
rc=$?
if [ "$rc" -eq 2 ] && [ "$(grep -c . err.txt)" -eq 1 ] &&
   grep -qF "mine/step-00000004.h5: rank 1 cannot see this checkpoint" err.txt; then ok
else bad "checkpoint only on rank 0: exit $rc: $(head -c 600 err.txt)"; fi
cp "$good" negative.h5
"$mpiexec" 1 "$fixture" --set-step negative.h5 --step -5 >/dev/null 2>&1 || bad "could not set the step"
resume_error "negative /meta/step" "negative.h5: /meta/step is -5, expected a step count >= 0" \
  negative.h5
size=$(stat -c %s "$good")
head -c $((size / 2)) "$good" > truncated.h5
resume_error "truncated file" "truncated.h5" truncated.h5
cp "$good" flipped.h5
# Most of the file is dataset bytes: flip 64 bytes at 60% of it.
printf '%064d' 0 | tr 0 '\377' | dd of=flipped.h5 bs=1 seek=$((size * 6 / 10)) conv=notrunc 2>/dev/null
resume_error "flipped bytes" "flipped.h5" flipped.h5
echo "not a checkpoint" > garbage.h5
resume_error "not HDF5" "garbage.h5" garbage.h5
cp "$good" dropped.h5
"$mpiexec" 1 "$fixture" --drop-dataset dropped.h5 --name /layers/00001/adam_m >/dev/null 2>&1 ||
  bad "could not drop a dataset"
resume_error "missing dataset" "missing dataset /layers/00001/adam_m" dropped.h5
resume_error "other model shape" "the checkpoint's model differs from this config's: model.hidden: 32 vs 64" \
  "$good" --set model.hidden=64
resume_error "missing file" "nope.h5" nope.h5

# Crash during a save: the previous checkpoint stays loadable and
# --resume auto picks it.
L2L_CKPT_TEST_CRASH_AFTER_LAYER=1 "$mpiexec" 2 "$train" --config run.yaml --set train.steps=8 \
  --resume auto >out.txt 2>err.txt && bad "crash hook did not crash"
if grep -q "step-00000004.h5" ck/latest && ls -a ck | grep -q '^\.tmp'; then ok
else bad "after the crash: latest=$(cat ck/latest), files: $(ls -a ck)"; fi
if "$mpiexec" 2 "$train" --config run.yaml --set train.steps=8 --resume auto >out.txt 2>err.txt &&
   grep -q "resumed from .*step-00000004.h5 at step 4" out.txt &&
   [ -f ck/step-00000008.h5 ] && ! ls -a ck | grep -q '^\.tmp'; then ok
else bad "resume after crash: $(cat out.txt err.txt | tail -5); files: $(ls -a ck)"; fi

# start_long_run [LAUNCHER...]: 2 ranks ("$mpiexec 2" unless a launcher is
# given), many steps, in the background (resuming whatever an earlier long
# run saved); returns once three steps have been logged.
start_long_run() {
  rm -rf run
  local launcher=("$mpiexec" 2)
  [ $# -eq 0 ] || launcher=("$@")
  "${launcher[@]}" "$train" --config "$work/run.yaml" --set train.steps=100000 --set log.every_steps=1 \
    --set checkpoint.every_steps=0 --set "checkpoint.dir=$work/ck2" --resume auto \
    >long.txt 2>longerr.txt &
  job=$!
  for _ in $(seq 600); do
    [ "$(grep -c '^step ' long.txt 2>/dev/null)" -ge 3 ] && return 0
    sleep 0.1
  done
  return 1
}
# A rank's command line starts with the binary (mpirun's does not).
rank_pid() { pgrep -f -- "^$train --config $work/run.yaml" | tail -1; }

# SIGTERM to one rank: every rank finishes the step, saves, exits 0.
if start_long_run; then
  # Meanwhile a second job on the same checkpoint directory is refused,
  # naming the holder, before it touches anything.
  before=$(ls -A ck2 | md5sum)
  "$mpiexec" 2 "$train" --config run.yaml --set "checkpoint.dir=$work/ck2" \
    --set "log.dir=$work/run-second" --resume auto >out.txt 2>err.txt
  rc=$?
  if [ "$rc" -eq 2 ] && [ "$(grep -c . err.txt)" -eq 1 ] &&
     grep -qE "checkpoint.dir $work/ck2 is in use by another run \($work/ck2/.lock: held by .* pid [0-9]+\)" err.txt &&
     [ "$before" = "$(ls -A ck2 | md5sum)" ]; then ok
  else bad "second job on a locked directory: exit $rc: $(cat err.txt)"; fi
  kill -TERM "$(rank_pid)"
  wait "$job"
  rc=$?
  if [ "$rc" -eq 0 ] && grep -q "stop requested by signal" long.txt && [ -f ck2/latest ]; then ok
  else bad "SIGTERM: exit $rc: $(tail -3 long.txt longerr.txt)"; fi
else
  bad "long run did not start: $(cat longerr.txt)"
  kill -KILL "$job" 2>/dev/null
fi

# SIGTERM to the launcher (what schedulers and containers signal; mpirun
# itself would kill the ranks): the same agreed stop, a checkpoint, exit 0.
if start_long_run "$mpirun_sh" -n 2 --; then
  first=$(grep -m1 -o 'resumed from [^ ]* at step [0-9]*' long.txt)
  kill -TERM "$job"
  wait "$job"
  rc=$?
  saved=$(sed -n 's/.*stop requested by signal: saved \([^ ]*\) at step.*/\1/p' long.txt)
  if [ "$rc" -eq 0 ] && [ -n "$first" ] && [ -n "$saved" ] && [ "$(cat ck2/latest)" = "$(basename "$saved")" ] &&
     grep -q "TERM received: asking every rank to save a checkpoint and stop" longerr.txt &&
     [ -z "$(pgrep -f -- "^$train --config $work/run.yaml")" ]; then ok
  else bad "SIGTERM to launch/mpirun.sh: exit $rc: $(tail -3 long.txt longerr.txt); latest $(cat ck2/latest)"; fi
else
  bad "long run under launch/mpirun.sh did not start: $(cat longerr.txt)"
  kill -KILL "$job" 2>/dev/null
fi

# SIGKILL of one rank mid-step: the job ends within 60 s with a non-zero code.
if start_long_run; then
  t0=$(date +%s)
  kill -KILL "$(rank_pid)"
  # Poll rather than `wait` so a hang is cut off at 60 s.
  while kill -0 "$job" 2>/dev/null && [ $(($(date +%s) - t0)) -lt 60 ]; do sleep 0.2; done
  kill -KILL "$job" 2>/dev/null
  wait "$job"
  rc=$?
  t1=$(date +%s)
  if [ "$rc" -ne 0 ] && [ $((t1 - t0)) -lt 60 ]; then ok
  else bad "SIGKILL: exit $rc after $((t1 - t0)) s"; fi
else
  bad "long run did not start (2): $(cat longerr.txt)"
  kill -KILL "$job" 2>/dev/null
fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
