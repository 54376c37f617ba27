#include "l2l/train/schedule.h"

#include <algorithm>
#include <cmath>

namespace l2l::train {

double LearningRate(const config::TrainConfig& t, int64_t step) {
  if (step < t.warmup_steps) return t.lr * static_cast<double>(step + 1) / t.warmup_steps;
  const double min_lr = t.lr * t.min_lr_ratio;
  const int64_t decay_steps = t.steps - t.warmup_steps;
  const double progress =
      decay_steps <= 1
          ? 0.0
          : std::clamp(static_cast<double>(step - t.warmup_steps) / (decay_steps - 1), 0.0, 1.0);
  switch (t.schedule) {
    case config::Schedule::kConstant:
      return t.lr;
    case config::Schedule::kLinear:
      return t.lr - (t.lr - min_lr) * progress;
    case config::Schedule::kCosine:
      return min_lr + 0.5 * (t.lr - min_lr) * (1.0 + std::cos(3.141592653589793 * progress));
  }
  return t.lr;
}

}  // namespace l2l::train
