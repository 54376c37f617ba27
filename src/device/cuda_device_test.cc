// CudaDevice against the CPU reference backend: the arena reports the same
// numbers and messages for the same requests, copies round-trip through pinned
// memory on every stream, events order work across streams, and released
// memory is not reused under queued work. Every GPU test skips (GTEST_SKIP,
// with the reason) when no GPU is visible; the check-macro tests need no GPU
// and always run.
#include "l2l/device/cuda_device.h"

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "l2l/device/cpu_device.h"
#include "l2l/device/cuda_check.h"
#include "l2l/device/gpu_test_env.h"

namespace l2l {
namespace {

// GPU visibility and the ctest "Skipped" marker (SKIP_REGULAR_EXPRESSION).
using ::l2l::testing::NoGpuReason;

class CudaDeviceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!NoGpuReason().empty()) GTEST_SKIP() << "needs a GPU: " << NoGpuReason();
  }
};

StatusOr<std::unique_ptr<CudaDevice>> MakeDevice(int64_t limit_bytes, int local_rank = 0) {
  return CudaDevice::Create(DeviceOptions{DeviceType::kCuda, limit_bytes, local_rank});
}

// The part of an arena OOM message after the device name, which differs by
// backend ("device cpu" vs "device cuda:0 ...").
std::string AfterDeviceName(const std::string& message) {
  const size_t at = message.find(" out of memory:");
  return at == std::string::npos ? message : message.substr(at);
}

TEST_F(CudaDeviceTest, ArenaNumbersAndMessagesMatchCpuDeviceForTheSameRequests) {
  constexpr int64_t kMiB = int64_t{1} << 20;
  constexpr int64_t kCap = 10 * kMiB;
  auto cuda = MakeDevice(kCap);
  ASSERT_TRUE(cuda.ok()) << cuda.status().message();
  CpuDevice cpu(kCap);
  Device* devices[2] = {&cpu, cuda->get()};

  enum class Op { kAllocate, kRelease, kResetPeak };
  struct Step {
    Op op;
    int slot;
    int64_t bytes;
  };
  const Step steps[] = {
      {Op::kAllocate, 0, 3 * kMiB},
      {Op::kAllocate, 1, 0},  // zero bytes: counted as 0, still a buffer
      {Op::kAllocate, 2, 5 * kMiB},
      {Op::kAllocate, 3, 4 * kMiB},  // 12 MiB > cap: refused, nothing reserved
      {Op::kRelease, 0, 0},
      {Op::kAllocate, 3, 4 * kMiB},  // fits now: 9 MiB
      {Op::kResetPeak, 0, 0},
      {Op::kRelease, 2, 0},
      {Op::kAllocate, 0, 1234567},  // odd size: no rounding in the accounting
      {Op::kAllocate, 4, kCap + 1},
      {Op::kAllocate, 4, kCap - 4 * kMiB - 1234567},  // exactly up to the cap
      {Op::kRelease, 3, 0},
      {Op::kRelease, 4, 0},
  };
  std::vector<DeviceBuffer> slots[2];
  for (auto& s : slots) s.resize(5);
  for (size_t i = 0; i < std::size(steps); ++i) {
    const Step& step = steps[i];
    std::optional<Status> result[2];
    for (int d = 0; d < 2; ++d) {
      switch (step.op) {
        case Op::kAllocate: {
          auto b = devices[d]->Allocate(static_cast<size_t>(step.bytes), "slot buffer");
          result[d] = b.ok() ? OkStatus() : b.status();
          if (b.ok()) {
            EXPECT_NE(b->data(), nullptr) << "step " << i;
            slots[d][step.slot] = std::move(*b);
          }
          break;
        }
        case Op::kRelease:
          slots[d][step.slot].Reset();
          break;
        case Op::kResetPeak:
          devices[d]->ResetPeak();
          break;
      }
    }
    if (step.op == Op::kAllocate) {
      EXPECT_EQ(result[0]->code(), result[1]->code())
          << "step " << i << ": " << result[1]->message();
      EXPECT_EQ(AfterDeviceName(result[0]->message()), AfterDeviceName(result[1]->message()))
          << "step " << i;
    }
    const MemoryStats c = cpu.memory_stats(), g = (*cuda)->memory_stats();
    EXPECT_EQ(c.in_use_bytes, g.in_use_bytes) << "step " << i;
    EXPECT_EQ(c.peak_bytes, g.peak_bytes) << "step " << i;
    EXPECT_EQ(c.limit_bytes, g.limit_bytes) << "step " << i;
  }
  for (auto& s : slots) s.clear();
  EXPECT_EQ((*cuda)->memory_stats().in_use_bytes, 0);
  EXPECT_EQ((*cuda)->memory_stats().peak_bytes, kCap);  // step 10 filled it exactly
}

TEST_F(CudaDeviceTest, RequestOverCapNamesRequestDeviceAndCap) {
  auto dev = MakeDevice(4 << 20);
  ASSERT_TRUE(dev.ok()) << dev.status().message();
  auto a = (*dev)->Allocate(3 << 20, "layer 3 params");
  ASSERT_TRUE(a.ok());
  auto b = (*dev)->Allocate(2 << 20, "layer 4 params");
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), StatusCode::kOutOfMemory);
  const std::string& m = b.status().message();
  EXPECT_NE(m.find("device " + (*dev)->name()), std::string::npos) << m;
  EXPECT_NE(m.find("layer 4 params"), std::string::npos) << m;
  EXPECT_NE(m.find("2.00 MiB"), std::string::npos) << m;
  EXPECT_NE(m.find("exec.device_memory_limit is 4.00 MiB"), std::string::npos) << m;
  EXPECT_EQ((*dev)->memory_stats().in_use_bytes, 3 << 20);
}

TEST_F(CudaDeviceTest, PhysicalOutOfMemoryIsAStatusAndLeavesNoTrace) {
  auto dev = MakeDevice(0);  // no cap: the GPU itself refuses
  ASSERT_TRUE(dev.ok()) << dev.status().message();
  size_t free_bytes = 0, total_bytes = 0;
  ASSERT_EQ(cudaMemGetInfo(&free_bytes, &total_bytes), cudaSuccess);
  auto huge = (*dev)->Allocate(total_bytes * 4, "impossible activation stash");
  ASSERT_FALSE(huge.ok());
  EXPECT_EQ(huge.status().code(), StatusCode::kOutOfMemory);
  const std::string& m = huge.status().message();
  EXPECT_NE(m.find("impossible activation stash"), std::string::npos) << m;
  EXPECT_NE(m.find("out of GPU memory"), std::string::npos) << m;
  EXPECT_NE(m.find("exec.device_memory_limit is not set"), std::string::npos) << m;
  EXPECT_EQ((*dev)->memory_stats().in_use_bytes, 0);
  EXPECT_EQ((*dev)->memory_stats().peak_bytes, 0);
  // The failure was cleared: later checks do not see it, allocation works.
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  EXPECT_TRUE((*dev)->Allocate(4096, "small").ok());
}

TEST_F(CudaDeviceTest, CopiesRoundTripThroughPinnedMemoryOnEveryStream) {
  auto dev = MakeDevice(0);
  ASSERT_TRUE(dev.ok()) << dev.status().message();
  CudaDevice& d = **dev;
  constexpr size_t kBytes = (size_t{3} << 20) + 17;  // not a multiple of anything
  for (StreamKind s : {StreamKind::kCompute, StreamKind::kH2D, StreamKind::kComm}) {
    SCOPED_TRACE(static_cast<int>(s));
    auto in = d.AllocatePinned(kBytes, "in");
    auto out = d.AllocatePinned(kBytes, "out");
    auto a = d.Allocate(kBytes, "a");
    auto b = d.Allocate(kBytes, "b");
    ASSERT_TRUE(in.ok() && out.ok() && a.ok() && b.ok());
    for (size_t i = 0; i < kBytes; ++i) in->as<uint8_t>()[i] = static_cast<uint8_t>(i * 7 + 3);
    std::memset(out->data(), 0, kBytes);
    d.CopyH2D(a->data(), in->data(), kBytes, s);
    d.CopyD2D(b->data(), a->data(), kBytes, s);
    d.Memset(b->as<uint8_t>() + 100, 0x5a, 50, s);
    d.CopyD2H(out->data(), b->data(), kBytes, s);
    d.SynchronizeStream(s);
    for (size_t i = 0; i < kBytes; ++i) {
      const uint8_t want = (i >= 100 && i < 150) ? 0x5a : static_cast<uint8_t>(i * 7 + 3);
      ASSERT_EQ(out->as<uint8_t>()[i], want) << "byte " << i;
    }
  }
}

TEST_F(CudaDeviceTest, EventsOrderWorkAcrossStreams) {
  auto dev = MakeDevice(0);
  ASSERT_TRUE(dev.ok()) << dev.status().message();
  CudaDevice& d = **dev;
  // Large enough that an unordered D2D or D2H would visibly race the copy
  // before it.
  constexpr size_t kCount = size_t{16} << 20;  // floats: 64 MiB
  constexpr size_t kBytes = kCount * sizeof(float);
  auto in = d.AllocatePinned(kBytes, "in");
  auto out = d.AllocatePinned(kBytes, "out");
  auto a = d.Allocate(kBytes, "a");
  auto b = d.Allocate(kBytes, "b");
  ASSERT_TRUE(in.ok() && out.ok() && a.ok() && b.ok());
  for (size_t i = 0; i < kCount; ++i) in->as<float>()[i] = static_cast<float>(i) * 0.5f;
  std::memset(out->data(), 0, kBytes);
  d.Memset(b->data(), 0, kBytes, StreamKind::kCompute);
  d.SynchronizeStream(StreamKind::kCompute);

  d.CopyH2D(a->data(), in->data(), kBytes, StreamKind::kH2D);
  auto loaded = d.RecordEvent(StreamKind::kH2D);
  d.StreamWaitEvent(StreamKind::kCompute, *loaded);
  d.CopyD2D(b->data(), a->data(), kBytes, StreamKind::kCompute);
  auto computed = d.RecordEvent(StreamKind::kCompute);
  d.StreamWaitEvent(StreamKind::kComm, *computed);
  d.CopyD2H(out->data(), b->data(), kBytes, StreamKind::kComm);
  auto stored = d.RecordEvent(StreamKind::kComm);
  stored->HostWait();  // the only host-side wait
  for (size_t i = 0; i < kCount; ++i) {
    ASSERT_EQ(out->as<float>()[i], static_cast<float>(i) * 0.5f) << "element " << i;
  }
  EXPECT_EQ(cudaStreamQuery(d.stream(StreamKind::kComm)), cudaSuccess);
}

// The stall measurement of the relay: a compute-stream wait on a long H2D
// copy, between two timed events, measures roughly the copy's duration; a
// wait on work already done measures about nothing.
TEST_F(CudaDeviceTest, TimedEventsMeasureAStreamStall) {
  auto dev = MakeDevice(0);
  ASSERT_TRUE(dev.ok()) << dev.status().message();
  CudaDevice& d = **dev;
  constexpr size_t kBytes = size_t{256} << 20;
  auto host = d.AllocatePinned(kBytes, "host");
  auto a = d.Allocate(kBytes, "a");
  ASSERT_TRUE(host.ok() && a.ok());
  const auto t0 = std::chrono::steady_clock::now();
  d.CopyH2D(a->data(), host->data(), kBytes, StreamKind::kH2D);
  auto copied = d.RecordEvent(StreamKind::kH2D);
  auto before = d.RecordTimedEvent(StreamKind::kCompute);
  d.StreamWaitEvent(StreamKind::kCompute, *copied);
  auto after = d.RecordTimedEvent(StreamKind::kCompute);
  d.SynchronizeStream(StreamKind::kCompute);
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double stall = after->SecondsSince(*before);
  EXPECT_GT(stall, 0.0);
  EXPECT_LE(stall, wall);
  // Now the copy is done: waiting on it again costs (almost) nothing.
  auto before2 = d.RecordTimedEvent(StreamKind::kCompute);
  d.StreamWaitEvent(StreamKind::kCompute, *copied);
  auto after2 = d.RecordTimedEvent(StreamKind::kCompute);
  d.SynchronizeStream(StreamKind::kCompute);
  EXPECT_LT(after2->SecondsSince(*before2), 0.1 * stall);
}

// The wait watchdog: a failing check ends a host wait that would otherwise
// block (here on a host function that sleeps on the stream) with a message;
// a passing one lets the wait finish normally.
void SleepOnStream(void* ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(*static_cast<int*>(ms)));
}

TEST_F(CudaDeviceTest, WaitWatchdogPassesOrAbortsTheWait) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  static int sleep_ms = 400;
  {
    auto dev = MakeDevice(0);
    ASSERT_TRUE(dev.ok()) << dev.status().message();
    auto ok = std::make_shared<CudaWaitWatchdog>();
    int checks = 0;
    ok->check = [&checks] {
      ++checks;
      return OkStatus();
    };
    (*dev)->SetWaitWatchdog(ok);
    ASSERT_EQ(cudaLaunchHostFunc((*dev)->stream(StreamKind::kCompute), SleepOnStream, &sleep_ms),
              cudaSuccess);
    (*dev)->SynchronizeStream(StreamKind::kCompute);
    EXPECT_GE(checks, 2);  // about every 100 ms of a 400 ms wait
    (*dev)->SetWaitWatchdog(nullptr);
  }
  EXPECT_DEATH(
      {
        auto dev = MakeDevice(0);
        auto bad = std::make_shared<CudaWaitWatchdog>();
        bad->check = [] { return Internal("asynchronous NCCL error (test)"); };
        (*dev)->SetWaitWatchdog(bad);
        cudaLaunchHostFunc((*dev)->stream(StreamKind::kCompute), SleepOnStream, &sleep_ms);
        (*dev)->SynchronizeStream(StreamKind::kCompute);
      },
      "while waiting for the .*asynchronous NCCL error \\(test\\)");
}

TEST_F(CudaDeviceTest, ReleasedMemoryIsNotReusedUnderQueuedWork) {
  auto dev = MakeDevice(0);
  ASSERT_TRUE(dev.ok()) << dev.status().message();
  CudaDevice& d = **dev;
  constexpr size_t kBytes = size_t{256} << 20;
  auto pattern = d.AllocatePinned(kBytes, "pattern");
  auto check = d.AllocatePinned(kBytes, "check");
  ASSERT_TRUE(pattern.ok() && check.ok());
  std::memset(pattern->data(), 0x3c, kBytes);
  {
    auto old = d.Allocate(kBytes, "old");
    ASSERT_TRUE(old.ok());
    // Queue a lot of writes to `old`, then release it without waiting.
    for (int i = 0; i < 32; ++i) d.Memset(old->data(), 0xee, kBytes, StreamKind::kCompute);
  }
  auto fresh = d.Allocate(kBytes, "fresh");  // likely the same memory
  ASSERT_TRUE(fresh.ok());
  d.CopyH2D(fresh->data(), pattern->data(), kBytes, StreamKind::kH2D);
  d.Synchronize();
  d.CopyD2H(check->data(), fresh->data(), kBytes, StreamKind::kComm);
  d.SynchronizeStream(StreamKind::kComm);
  EXPECT_EQ(std::memcmp(check->data(), pattern->data(), kBytes), 0)
      << "queued memsets on the released buffer landed in the new one";
}

TEST_F(CudaDeviceTest, BuffersMayBeReleasedFromAnotherThread) {
  auto dev = MakeDevice(0);
  ASSERT_TRUE(dev.ok()) << dev.status().message();
  auto buf = (*dev)->Allocate(1 << 20, "handed off");
  auto host = (*dev)->AllocatePinned(1 << 20, "handed off pinned");
  ASSERT_TRUE(buf.ok() && host.ok());
  std::thread([b = std::move(*buf), h = std::move(*host)]() mutable {
    b.Reset();
    h.Reset();
  }).join();
  EXPECT_EQ((*dev)->memory_stats().in_use_bytes, 0);
}

TEST_F(CudaDeviceTest, LocalRankPicksTheOrdinalAndNamesIt) {
  StatusOr<int> count = CountCudaDevices();
  ASSERT_TRUE(count.ok());
  for (int local_rank : {0, *count - 1, *count, 2 * *count + 1}) {
    auto dev = MakeDevice(0, local_rank);
    ASSERT_TRUE(dev.ok()) << dev.status().message();
    const int want = local_rank % *count;
    EXPECT_EQ((*dev)->ordinal(), want);
    cudaDeviceProp prop{};
    ASSERT_EQ(cudaGetDeviceProperties(&prop, want), cudaSuccess);
    EXPECT_EQ((*dev)->name(), "cuda:" + std::to_string(want) + " " + prop.name);
    int current = -1;
    ASSERT_EQ(cudaGetDevice(&current), cudaSuccess);
    EXPECT_EQ(current, want) << "Create() leaves its GPU current";
  }
  EXPECT_EQ(MakeDevice(0, -1).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(CudaDeviceTest, StreamsAreDistinctNonBlockingAndCommunicationIsUrgent) {
  auto dev = MakeDevice(0);
  ASSERT_TRUE(dev.ok()) << dev.status().message();
  CudaDevice& d = **dev;
  const StreamKind kinds[] = {StreamKind::kCompute, StreamKind::kH2D, StreamKind::kComm};
  int priority[3] = {0, 0, 0};
  for (int i = 0; i < 3; ++i) {
    unsigned flags = 0;
    ASSERT_EQ(cudaStreamGetFlags(d.stream(kinds[i]), &flags), cudaSuccess);
    EXPECT_EQ(flags, static_cast<unsigned>(cudaStreamNonBlocking));
    ASSERT_EQ(cudaStreamGetPriority(d.stream(kinds[i]), &priority[i]), cudaSuccess);
    for (int j = 0; j < i; ++j) EXPECT_NE(d.stream(kinds[i]), d.stream(kinds[j]));
  }
  int least = 0, greatest = 0;
  ASSERT_EQ(cudaDeviceGetStreamPriorityRange(&least, &greatest), cudaSuccess);
  EXPECT_EQ(priority[2], greatest);  // kComm carries the collectives
}

// ---------------------------------------------------------------------------
// Check macros: no GPU needed, they always run.

Status FailsWith(cudaError_t err) {
  L2L_CUDA_RETURN_IF_ERROR(err);
  return OkStatus();
}

TEST(CudaCheck, StatusVariantMapsOutOfMemoryAndNamesTheSite) {
  EXPECT_TRUE(FailsWith(cudaSuccess).ok());
  Status oom = FailsWith(cudaErrorMemoryAllocation);
  EXPECT_EQ(oom.code(), StatusCode::kOutOfMemory);
  EXPECT_NE(oom.message().find("cuda_device_test.cc:"), std::string::npos) << oom.message();
  EXPECT_NE(oom.message().find("cudaErrorMemoryAllocation"), std::string::npos);
  EXPECT_NE(oom.message().find("(rank "), std::string::npos) << oom.message();
  EXPECT_NE(oom.message().find(", cuda:"), std::string::npos) << oom.message();
  Status bad = FailsWith(cudaErrorInvalidValue);
  EXPECT_EQ(bad.code(), StatusCode::kInternal);
  // The failing expression's text, then the error's name and description.
  EXPECT_NE(bad.message().find(": err: cudaErrorInvalidValue: invalid argument"), std::string::npos)
      << bad.message();
}

TEST(CudaCheckDeathTest, CheckAbortsWithFileLineRankOrdinalAndError) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const cudaError_t err = cudaErrorInvalidValue;
  EXPECT_DEATH(L2L_CUDA_CHECK(err) << "while testing",
               "CUDA error at .*cuda_device_test\\.cc:[0-9]+ \\(rank -, cuda:[0-9?]+\\): err: "
               "cudaErrorInvalidValue: invalid argument while testing");
}

}  // namespace
}  // namespace l2l
