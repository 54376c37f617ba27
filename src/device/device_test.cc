#include <gtest/gtest.h>

#include "l2l/device/cpu_device.h"

namespace l2l {
namespace {

TEST(CpuDevice, ArenaTracksInUseAndPeak) {
  CpuDevice dev(0);
  {
    auto a = dev.Allocate(1000, "a");
    ASSERT_TRUE(a.ok());
    auto b = dev.Allocate(500, "b");
    ASSERT_TRUE(b.ok());
    EXPECT_EQ(dev.memory_stats().in_use_bytes, 1500);
  }
  EXPECT_EQ(dev.memory_stats().in_use_bytes, 0);
  EXPECT_EQ(dev.memory_stats().peak_bytes, 1500);
  dev.ResetPeak();
  EXPECT_EQ(dev.memory_stats().peak_bytes, 0);
}

TEST(CpuDevice, RequestOverCapFailsWithNamedMessage) {
  CpuDevice dev(4096);
  auto a = dev.Allocate(3000, "layer 3 params");
  ASSERT_TRUE(a.ok());
  auto b = dev.Allocate(2000, "layer 4 params");
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), StatusCode::kOutOfMemory);
  EXPECT_NE(b.status().message().find("layer 4 params"), std::string::npos);
  EXPECT_NE(b.status().message().find("exec.device_memory_limit is 4.00 KiB"), std::string::npos)
      << b.status().message();
  // A failed request reserves nothing.
  EXPECT_EQ(dev.memory_stats().in_use_bytes, 3000);
  EXPECT_EQ(dev.memory_stats().peak_bytes, 3000);
}

TEST(CpuDevice, CopiesMoveBytesAndBuffersMove) {
  CpuDevice dev(0);
  auto host = dev.AllocatePinned(16, "h");
  ASSERT_TRUE(host.ok());
  auto d = dev.Allocate(16, "d");
  ASSERT_TRUE(d.ok());
  for (int i = 0; i < 16; ++i) host->as<uint8_t>()[i] = static_cast<uint8_t>(i + 1);
  dev.CopyH2D(d->data(), host->data(), 16, StreamKind::kH2D);
  dev.Memset(host->data(), 0, 16, StreamKind::kCompute);
  dev.CopyD2H(host->data(), d->data(), 16, StreamKind::kComm);
  EXPECT_EQ(host->as<uint8_t>()[15], 16);
  DeviceBuffer moved = std::move(*d);
  EXPECT_EQ(dev.memory_stats().in_use_bytes, 16);
  moved.Reset();
  EXPECT_EQ(dev.memory_stats().in_use_bytes, 0);
}

}  // namespace
}  // namespace l2l
