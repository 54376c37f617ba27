#!/usr/bin/env bash
# mpiexec-local.sh NP PROGRAM [ARGS...]: run NP ranks on this machine.
# Handles running as root and more ranks than cores, and pins each rank to one
# BLAS/OpenMP thread so oversubscribed tests do not crawl.
set -euo pipefail
np=$1
shift
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
# Idle OpenMP threads must sleep, not spin: spinning starves OpenBLAS's own
# threads (measured: 3x slower steps with 2 threads on 2 cores).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
export OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_rmaps_base_oversubscribe=1
exec mpirun -q --oversubscribe --bind-to none -np "$np" \
  "$@"
