// Test-only helper for GPU tests (needs GoogleTest): whether a GPU is
// visible, and the marker line that makes ctest report the binary as
// "Skipped" (SKIP_REGULAR_EXPRESSION "L2L_GPU_TESTS_SKIPPED") when none is and
// nothing failed. Include it in exactly one translation unit per test binary.
#pragma once

#include <gtest/gtest.h>

#include <cstdio>
#include <string>

#include "l2l/device/cuda_device.h"

namespace l2l::testing {

// Empty when a GPU is visible, else why not.
inline const std::string& NoGpuReason() {
  static const std::string reason = [] {
    StatusOr<int> n = CountCudaDevices();
    return n.ok() ? std::string() : n.status().message();
  }();
  return reason;
}

class NoGpuMarker : public ::testing::Environment {
 public:
  void TearDown() override {
    if (!NoGpuReason().empty() && ::testing::UnitTest::GetInstance()->failed_test_count() == 0) {
      std::printf("L2L_GPU_TESTS_SKIPPED: %s\n", NoGpuReason().c_str());
    }
  }
};
inline const auto* const kNoGpuMarker = ::testing::AddGlobalTestEnvironment(new NoGpuMarker);

#define L2L_SKIP_WITHOUT_GPU()                                     \
  do {                                                             \
    if (!::l2l::testing::NoGpuReason().empty()) {                  \
      GTEST_SKIP() << "no GPU: " << ::l2l::testing::NoGpuReason(); \
    }                                                              \
  } while (0)

}  // namespace l2l::testing
