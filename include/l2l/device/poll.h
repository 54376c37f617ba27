// The one poll-and-wait loop of the GPU backend (CUDA device waits under a
// watchdog, NCCL waits with a timeout): spin, yielding the core, for the
// first polls so short waits return promptly, then sleep between polls so a
// long wait does not burn a core.
#pragma once

#include <chrono>
#include <thread>

#include "l2l/core/status.h"

namespace l2l {

struct PollPolicy {
  int spin_polls = 64;                   // polls that only yield before sleeping starts
  std::chrono::microseconds sleep{200};  // between later polls
};

// Calls poll() until it returns true (done: OK) or an error (returned as is).
// poll() does the query and every check a caller needs (errors, timeouts,
// watchdogs); this owns only the backoff.
template <typename Poll>
Status PollUntilDone(const PollPolicy& policy, Poll poll) {
  for (int polls = 0;; ++polls) {
    StatusOr<bool> done = poll();
    if (!done.ok()) return done.status();
    if (*done) return OkStatus();
    if (polls < policy.spin_polls) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(policy.sleep);
    }
  }
}

}  // namespace l2l
