// What the trainer's files share (trainer.cc: the step loop;
// trainer_engine.cc: building the engine; trainer_checkpoint.cc: checkpoint
// glue; trainer_metrics.cc: metrics.jsonl and the console).
#pragma once

#include <chrono>

namespace l2l::train::internal {

// Seconds on the steady clock (differences only).
inline double NowSeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace l2l::train::internal
