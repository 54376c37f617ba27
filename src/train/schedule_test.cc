#include "l2l/train/schedule.h"

#include <gtest/gtest.h>

namespace l2l::train {
namespace {

config::TrainConfig Train(config::Schedule s) {
  config::TrainConfig t;
  t.steps = 110;
  t.warmup_steps = 10;
  t.lr = 1.0;
  t.min_lr_ratio = 0.1;
  t.schedule = s;
  return t;
}

TEST(Schedule, WarmupIsLinearFromZero) {
  const auto t = Train(config::Schedule::kCosine);
  EXPECT_DOUBLE_EQ(LearningRate(t, 0), 0.1);
  EXPECT_DOUBLE_EQ(LearningRate(t, 4), 0.5);
  EXPECT_DOUBLE_EQ(LearningRate(t, 9), 1.0);
}

// A smoke run shorter than its preset's warmup (allowed): warmup throughout,
// never a decay computed from a negative decay length.
TEST(Schedule, WarmupLongerThanTheRunRisesThroughout) {
  for (auto s : {config::Schedule::kCosine, config::Schedule::kLinear}) {
    auto t = Train(s);
    t.steps = 3;
    t.warmup_steps = 30;
    for (int64_t step = 0; step < t.steps; ++step) {
      EXPECT_DOUBLE_EQ(LearningRate(t, step), (step + 1) / 30.0);
    }
  }
}

TEST(Schedule, DecaysToTheFloorAtTheLastStep) {
  for (auto s : {config::Schedule::kCosine, config::Schedule::kLinear}) {
    const auto t = Train(s);
    EXPECT_DOUBLE_EQ(LearningRate(t, 10), 1.0);
    EXPECT_NEAR(LearningRate(t, 109), 0.1, 1e-12);
    EXPECT_GT(LearningRate(t, 50), LearningRate(t, 60));
  }
  // Halfway through the decay both sit at the midpoint between lr and the floor.
  for (auto s : {config::Schedule::kCosine, config::Schedule::kLinear}) {
    auto t = Train(s);
    t.steps = 111;  // decay over steps 10..110: step 60 is halfway
    EXPECT_NEAR(LearningRate(t, 60), 0.55, 1e-12);
  }
  EXPECT_DOUBLE_EQ(LearningRate(Train(config::Schedule::kConstant), 100), 1.0);
}

}  // namespace
}  // namespace l2l::train
