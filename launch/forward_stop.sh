# forward_stop.sh: sourced by the launchers (mpirun.sh, slurm/train.sbatch).
#
#   run_forwarding_stop COMMAND [ARGS...]
#
# Runs COMMAND (mpirun or srun) in the background and returns its exit status.
# Schedulers and containers signal the launcher, not the ranks, and mpirun
# answers SIGTERM by killing the ranks, so a stop would lose the work since
# the last checkpoint. Instead, the first SIGTERM or SIGUSR1 this shell gets
# is sent on to COMMAND as SIGUSR1, which mpirun and srun forward to every
# rank: the ranks finish the step, save a checkpoint and exit 0 (the agreed
# stop, docs/checkpoint-format.md). A second SIGTERM kills COMMAND (stop now,
# no checkpoint; srun would pass a TERM on to the ranks as another
# save-and-stop). SIGINT (Ctrl-C) is sent on as SIGINT. A signal that comes
# before COMMAND has started is forwarded once it has.
# Sets l2l_stop_forwarded=1 once a stop was forwarded (train.sbatch requeues
# the job then). Uses the shell's traps for TERM, USR1 and INT.
l2l_stop_forwarded=0

run_forwarding_stop() {
  local pid="" rc interrupted pending=""
  l2l_forward() {
    interrupted=1
    # Before the child exists (the traps come first): forward once it does.
    if [ -z "$pid" ]; then
      pending=$1
      return
    fi
    if [ "$1" = INT ]; then
      kill -INT "$pid" 2>/dev/null || true
    elif [ "$l2l_stop_forwarded" -eq 0 ] || [ "$1" = USR1 ]; then
      l2l_stop_forwarded=1
      kill -USR1 "$pid" 2>/dev/null || true
      echo "l2l: $1 received: asking every rank to save a checkpoint and stop" >&2 || true
    else
      # srun would pass a TERM on to the ranks, which read it as save-and-stop.
      kill -KILL "$pid" 2>/dev/null || true
      echo "l2l: second $1 received: killed the job, without a checkpoint" >&2 || true
    fi
  }
  trap 'l2l_forward TERM' TERM
  trap 'l2l_forward USR1' USR1
  trap 'l2l_forward INT' INT
  "$@" &
  pid=$!
  if [ -n "$pending" ]; then
    # The launcher may not have set its own handlers yet: give it a moment.
    sleep 2
    l2l_forward "$pending"
  fi
  # `wait` returns early (status > 128) when a trapped signal arrives; wait
  # again then. Bash keeps a reaped child's status, so a second wait after
  # the child exited still returns its real status.
  while :; do
    interrupted=0
    wait "$pid" && rc=0 || rc=$?
    [ "$interrupted" -eq 1 ] || break
  done
  trap - TERM USR1 INT
  return "$rc"
}
