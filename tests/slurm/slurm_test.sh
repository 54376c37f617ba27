#!/usr/bin/env bash
# slurm_test.sh L2L_TRAIN L2L_DATA MPIEXEC: launch/slurm/train.sbatch on a
# real one-node Slurm started by this script.
#
# It installs Debian's slurm-wlm and munge if missing (root only), starts a
# private munged, slurmctld and slurmd (their config, state, sockets and
# logs in a scratch directory; nothing under /etc is changed, no system
# daemon is touched), then submits train.sbatch with 2 tasks and a 2-minute
# time limit whose --signal=B:USR1@60 warning arrives mid-run. It checks that
# the job checkpoints, requeues itself, that the requeued job resumes from
# that checkpoint and finishes, and that the per-step losses equal those of
# an uninterrupted run (same world size: bitwise).
#
# Opt-in (it takes 3-5 minutes and starts daemons): runs when L2L_SLURM_TEST=1,
# otherwise exits 77 (ctest: Skipped). Also Skipped when not root or when
# the packages cannot be installed (no Debian mirror).
set -uo pipefail
train=$(realpath "$1") data=$(realpath "$2") mpiexec=$(realpath "$3")
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
skip() { echo "SKIPPED: $*"; exit 77; }
[ "${L2L_SLURM_TEST:-0}" = 1 ] || skip "set L2L_SLURM_TEST=1 to run the real Slurm test"
[ "$(id -u)" -eq 0 ] || skip "needs root (installs slurm-wlm, starts slurmctld/slurmd)"

need=()
for p in slurm-wlm munge; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if ((${#need[@]})); then
  echo "slurm_test: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}"; } \
    >/dev/null 2>&1 || skip "cannot install ${need[*]} (no Debian mirror?)"
fi

work=$(mktemp -d /tmp/l2l-slurm.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
  [ -n "${SLURM_CONF:-}" ] && scancel --quiet --user=root 2>/dev/null
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  sleep 1
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
  pkill -KILL -f -- "$work" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }
logs() { tail -n 20 "$work"/log/*.log "$work"/runs/slurm-*.out 2>/dev/null; }

# --- munge, private: its own key, socket and files.
mkdir -p munge log state spool runs
dd if=/dev/urandom of=munge/munge.key bs=1 count=1024 status=none
chmod 400 munge/munge.key
munged --force --key-file="$work/munge/munge.key" --socket="$work/munge/socket" \
  --pid-file="$work/munge/pid" --log-file="$work/log/munged.log" \
  --seed-file="$work/munge/seed" || skip "munged does not start: $(cat log/munged.log)"
pids+=("$(cat munge/pid)")

# --- one node: this machine, its CPUs, 8 fake GPUs (the template asks for them).
host=$(hostname -s)
cpus=$(nproc)
cat > slurm.conf <<CONF
ClusterName=l2ltest
SlurmctldHost=$host
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$work/munge/socket
CredType=cred/munge
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool/slurmd-%n
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/log/slurmctld.log
SlurmdLogFile=$work/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
JobRequeue=1
KillWait=30
MinJobAge=600
NodeName=$host CPUs=$cpus Gres=gpu:8 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
# Fake device files: slurmd counts a gpu gres by its files (task/none binds nothing).
mkdir -p dev && touch dev/gpu{0..7}
echo "NodeName=$host Name=gpu File=$work/dev/gpu[0-7]" > gres.conf
export SLURM_CONF=$work/slurm.conf
slurmctld -i -f "$SLURM_CONF" || skip "slurmctld does not start: $(tail -5 log/slurmctld.log)"
slurmd -f "$SLURM_CONF" || skip "slurmd does not start: $(tail -5 log/slurmd.log)"
sleep 1
pids+=("$(cat slurmctld.pid)" "$(cat slurmd.pid)")
for _ in $(seq 60); do
  sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed)' && break
  sleep 1
done
sinfo -h -o %T | grep -qE '^(idle|mixed)' || skip "the node does not come up: $(sinfo 2>&1; logs)"

# --- the run: 1200 steps of a small model (about 100 s on 2 idle cores), so
# the USR1 warning (60 s before the 2-minute limit, within Slurm's 60 s
# slack) lands mid-run; each requeued job resumes with --resume auto (a
# loaded machine needs more requeues, which the checks allow).
steps=1200
"$data" synthetic --out c.tok --tokens 200000 --vocab 32 --order 2 --seed 1 >/dev/null
cat > run.yaml <<YAML
model: {kind: gpt, layers: 4, hidden: 64, heads: 4, ffn: 256, vocab: 32, seq_len: 64}
data: {path: $work/c.tok, eval_fraction: 0.05}
train: {steps: $steps, global_batch: 16, micro_batch: 2, eval_every_steps: 0}
checkpoint: {dir: $work/ck, every_steps: 0, keep_last: 2}
log: {dir: $work/log-slurm, every_steps: 1}
YAML
sed -e "s|$work/ck|$work/ck-ref|" -e "s|$work/log-slurm|$work/log-ref|" run.yaml > ref.yaml
"$mpiexec" 2 "$train" --config ref.yaml >ref.txt 2>&1 || bad "uninterrupted run failed: $(tail -3 ref.txt)"

job=$(L2L_ROOT=$root L2L_BUILD_DIR=$(dirname "$(dirname "$train")") \
  sbatch --parsable --nodes=1 --ntasks=2 --ntasks-per-node=2 --cpus-per-task=1 \
  --time=2 --signal=B:USR1@60 --output="$work/runs/slurm-%j.out" \
  "$root/launch/slurm/train.sbatch" "$work/run.yaml") || { bad "sbatch failed"; exit 1; }
echo "slurm_test: submitted job $job"
# Done when the job has left the queue for good (COMPLETED, not requeued).
state=""
for _ in $(seq 600); do
  state=$(scontrol show job "$job" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p')
  case "$state" in COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY) break ;; esac
  sleep 1
done
out=$work/runs/slurm-$job.out
restarts=$(scontrol show job "$job" | sed -n 's/.*Restarts=\([0-9]*\).*/\1/p')
echo "slurm_test: job $job $state after ${restarts:-?} requeues"

[ "$state" = COMPLETED ] && ok || bad "job ended $state: $(logs)"
if [ "${restarts:-0}" -ge 1 ] && grep -q "requeueing job $job" "$out" &&
   grep -q "stop requested by signal: saved" "$out"; then ok
else bad "no checkpoint-and-requeue: restarts=${restarts:-?}: $(tail -20 "$out")"; fi
if grep -q "resumed from $work/ck/step-" "$out"; then ok
else bad "the requeued job did not resume: $(tail -20 "$out")"; fi
# Per-step losses: the Slurm run's (its jobs append to one metrics.jsonl)
# against the uninterrupted run's, step by step, exactly.
if python3 - "$work/log-slurm/metrics.jsonl" "$work/log-ref/metrics.jsonl" "$steps" <<'PY'; then ok
import json, sys
def losses(p):
    out = {}
    for line in open(p):
        r = json.loads(line)
        if "loss" in r:
            assert r["step"] not in out or out[r["step"]] == r["loss"], f"step {r['step']} twice"
            out[r["step"]] = r["loss"]
    return out
a, b, n = losses(sys.argv[1]), losses(sys.argv[2]), int(sys.argv[3])
assert sorted(a) == list(range(1, n + 1)), f"slurm run logged steps {min(a)}..{max(a)} ({len(a)})"
diff = [s for s in b if a.get(s) != b[s]]
assert not diff, f"{len(diff)} steps differ, first {diff[0]}: {a.get(diff[0])} vs {b[diff[0]]}"
print(f"slurm_test: {n} losses equal the uninterrupted run's")
PY
else bad "losses differ from the uninterrupted run"; fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
