// Learning-rate schedule: linear warmup from 0 to train.lr over
// train.warmup_steps, then cosine / linear decay to lr * min_lr_ratio at
// train.steps, or constant.
#pragma once

#include <cstdint>

#include "l2l/config/config.h"

namespace l2l::train {

// Learning rate for 0-based `step`.
double LearningRate(const config::TrainConfig& t, int64_t step);

}  // namespace l2l::train
