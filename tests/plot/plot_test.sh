#!/usr/bin/env bash
# plot_test.sh L2L_PLOT: l2l-plot end to end on hand-written metrics.jsonl
# files: a picture for one and for several runs (a resumed run's redone steps
# counted once), and one line with exit 2 and no picture for each bad input.
set -uo pipefail
tool=${1:?usage: plot_test.sh path/to/l2l-plot}
source "$(dirname "${BASH_SOURCE[0]}")/../lib/cli.sh"
value() { sed -n "s/^$1=//p" out.txt; }
# The first call may install the venv (one stderr line): do it outside `ok`.
"$(dirname "${BASH_SOURCE[0]}")/../../launch/pyenv.sh" >/dev/null || fail "pyenv.sh failed"

record() {  # STEP LOSS [EVAL]
  local eval=""
  [ -n "${3:-}" ] && eval=", \"eval_loss\": $3"
  printf '{"step": %d, "loss": %s, "lr": 0.001, "grad_norm": 0.5, "tokens": 128, "step_s": 0.01, "tokens_per_s": 12800, "device_peak_bytes": 1048576, "host_eps_bytes": 4194304, "compute_s": 0.008, "gather_wait_s": 0.001, "optimizer_wait_s": 0.001, "gathers": 5%s}\n' \
    "$1" "$2" "$eval"
}
mkdir a b
for s in 1 2 3 4; do record $s "3.$((9 - s))" >>a/metrics.jsonl; done
record 4 3.1 3.2 >>a/metrics.jsonl
# b: steps 1-4, then a resume from step 2 redoes 3 and 4 (6 lines, 4 steps).
for s in 1 2 3 4 3 4; do record $s 3.5 >>b/metrics.jsonl; done

ok one a --out one.png
head -c 8 one.png | od -An -tx1 | tr -d ' \n' | grep -q '^89504e470d0a1a0a$' || fail "one: not a PNG"
[ "$(value steps)" = 4 ] || fail "one: steps $(value steps), expected 4 (step 4 logged twice counts once)"
ok several a b/metrics.jsonl --out two.png --title "a and b"
[ "$(value runs)" = 2 ] && [ "$(value steps)" = 8 ] || fail "several: $(cat out.txt)"

mkdir c d
{ record 1 3.0; echo '{"step": 2, "loss": '; } >c/metrics.jsonl
: >d/metrics.jsonl
bad missing-run "run nope does not exist" x.png nope --out x.png
mkdir nope
bad not-a-run "nope/metrics.jsonl does not exist (is nope a run's log.dir?)" x.png nope --out x.png
bad not-json "c/metrics.jsonl:2: not JSON" x.png a c --out x.png
bad no-steps "d/metrics.jsonl: no steps recorded" x.png d --out x.png
bad not-png "--out x.jpg: expected a .png file" x.jpg a --out x.jpg
bad no-runs "no runs given" x.png --out x.png
cp one.png keep.png
bad exists "keep.png exists; pass --force to replace it" "" a --out keep.png
cmp -s one.png keep.png || fail "exists: keep.png was changed"
ok force b --out keep.png --force
cmp -s one.png keep.png && fail "force: keep.png was not replaced"

if [ "$failures" -ne 0 ]; then
  echo "$failures check(s) failed" >&2
  exit 1
fi
echo "plot: all checks passed"
