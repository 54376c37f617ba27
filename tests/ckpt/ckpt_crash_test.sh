#!/usr/bin/env bash
# ckpt_crash_test.sh CKPT_MAKE_FIXTURE L2L_CKPT MPIEXEC: the crash-safety
# contract of the checkpoint directory protocol. A 2-rank job is aborted
# (L2L_CKPT_TEST_CRASH_AFTER_LAYER) in the middle of writing step 20; the
# previous checkpoint must stay intact, named by `latest` and loadable at any
# world size, and the next successful save must clean up the leftover.
set -uo pipefail
fixture=${1:?usage: ckpt_crash_test.sh CKPT_MAKE_FIXTURE L2L_CKPT MPIEXEC}
tool=${2:?missing L2L_CKPT}
mpiexec=${3:?missing MPIEXEC}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
failures=0

fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}

# run NAME NP ARGS...: the fixture job must succeed.
run() {
  local name=$1 np=$2
  shift 2
  "$mpiexec" "$np" "$fixture" "$@" >log.txt 2>&1 || fail "$name: failed: $(cat log.txt)"
}

run save-10 2 --dir ck --step 10

# The crash: layer 1 of 4 is written, then the job aborts.
L2L_CKPT_TEST_CRASH_AFTER_LAYER=1 "$mpiexec" 2 "$fixture" --dir ck --step 20 >crash.txt 2>&1
rc=$?
[ "$rc" -ne 0 ] || fail "crash: the job exited 0; the hook did not fire"
grep -q "L2L_CKPT_TEST_CRASH_AFTER_LAYER=1" crash.txt || fail "crash: no hook message: $(cat crash.txt)"
[ -e ck/.tmp-step-00000020.h5 ] || fail "crash: no partial temp file, so the crash was not mid-write"
[ ! -e ck/step-00000020.h5 ] || fail "crash: step 20 appeared under its final name"
[ "$(cat ck/latest)" = "step-00000010.h5" ] || fail "crash: latest changed to '$(cat ck/latest)'"

# The previous checkpoint is intact and loads at 2 ranks and, resharded, at 1.
"$tool" verify ck >out.txt 2>&1 || fail "verify after crash: $(cat out.txt)"
[ "$(cat out.txt)" = "ok: ck/step-00000010.h5" ] || fail "verify after crash: $(cat out.txt)"
run check-10-np2 2 --check ck --step 10
run check-10-np1 1 --check ck --step 10
# The partial file is recognisably not a checkpoint.
"$tool" verify ck/.tmp-step-00000020.h5 >out.txt 2>err.txt
rc=$?
[ "$rc" -eq 2 ] || fail "verify partial: exit $rc, expected 2"
[ "$(wc -l <err.txt)" -eq 1 ] || fail "verify partial: expected one line, got: $(cat err.txt)"

# The next save succeeds, removes the leftover and keeps the last two.
run save-30 2 --dir ck --step 30
[ ! -e ck/.tmp-step-00000020.h5 ] || fail "save-30: stale temp file not removed"
[ "$(cat ck/latest)" = "step-00000030.h5" ] || fail "save-30: latest is '$(cat ck/latest)'"
[ -e ck/step-00000010.h5 ] || fail "save-30: keep_last 2 removed step 10"
run check-30-np1 1 --check ck --step 30
run check-30-np4 4 --check ck --step 30

if [ "$failures" -ne 0 ]; then
  echo "$failures check(s) failed" >&2
  exit 1
fi
echo "ckpt_crash: all checks passed"
