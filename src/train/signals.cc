#include "l2l/train/signals.h"

#include <csignal>

namespace l2l::train {
namespace {

volatile std::sig_atomic_t g_stop = 0;

extern "C" void OnStopSignal(int) { g_stop = 1; }

}  // namespace

void InstallStopSignalHandlers() {
  struct sigaction sa = {};
  sa.sa_handler = OnStopSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGUSR1, &sa, nullptr);
}

bool LocalStopRequested() { return g_stop != 0; }
void SetLocalStopRequested(bool value) { g_stop = value ? 1 : 0; }

}  // namespace l2l::train
