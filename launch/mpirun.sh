#!/usr/bin/env bash
# mpirun.sh: launch an l2l tool on one node or many.
#
#   launch/mpirun.sh [-n RANKS] [--hostfile FILE] [--per-node K] -- PROGRAM [ARGS...]
#
# Local (no hostfile): RANKS processes on this machine, oversubscribing if
# needed. Multi-node: pass an OpenMPI hostfile ("node01 slots=8") and the
# ranks per node; each rank selects its GPU from its node-local rank
# (MPI_Comm_split_type), so one GPU per rank needs --per-node = GPUs per node.
# Threads: each rank gets cores/ranks-per-node OpenMP/BLAS threads unless
# OMP_NUM_THREADS is set. Running as root is allowed (containers).
# Signals: SIGTERM or SIGUSR1 to this script asks every rank to save a
# checkpoint and stop (exit 0); a second SIGTERM kills the job at once.
set -euo pipefail
ranks=1
hostfile=""
per_node=""
while [ $# -gt 0 ]; do
  case "$1" in
    -n|--ranks) ranks=$2; shift 2 ;;
    --hostfile) hostfile=$2; shift 2 ;;
    --per-node) per_node=$2; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || { echo "mpirun.sh: missing PROGRAM (see --help)" >&2; exit 2; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
local_ranks=${per_node:-$ranks}
cores=$(nproc)
threads=$(( cores / local_ranks ))
[ "$threads" -ge 1 ] || threads=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$threads}
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-$OMP_NUM_THREADS}
# Idle OpenMP threads must sleep, not spin: spinning starves OpenBLAS's own
# threads (measured: 3x slower steps with 2 threads on 2 cores).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
args=(-q -np "$ranks" --bind-to none -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS -x OMP_WAIT_POLICY)
if [ -n "$hostfile" ]; then
  args+=(--hostfile "$hostfile")
  [ -n "$per_node" ] && args+=(--map-by "ppr:${per_node}:node")
else
  args+=(--oversubscribe)
fi
# Not exec: a SIGTERM to this script (what schedulers and containers send)
# becomes the ranks' agreed save-and-stop instead of mpirun killing them.
source "$(dirname "${BASH_SOURCE[0]}")/forward_stop.sh"
run_forwarding_stop mpirun "${args[@]}" "$@"
