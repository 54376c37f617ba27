// Stop requests from the job scheduler. SIGTERM and SIGUSR1 (Slurm's
// --signal=B:USR1@120 forwarded by launch/slurm/train.sbatch) set a flag; the
// trainer agrees on it across ranks once per step (one small all-reduce), so
// every rank finishes the same step, saves the same checkpoint and exits 0.
#pragma once

namespace l2l::train {

// Installs the handlers (idempotent). Call once from main().
void InstallStopSignalHandlers();
// True once this process received SIGTERM or SIGUSR1. Async-signal-safe flag.
bool LocalStopRequested();
// For tests: as if a signal had arrived (or clear it).
void SetLocalStopRequested(bool value);

}  // namespace l2l::train
