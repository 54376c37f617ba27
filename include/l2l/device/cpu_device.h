// CpuDevice: the reference backend. "Device" memory is host memory drawn
// through the capped arena, so the memory contract is measured in CI exactly
// as on a GPU; every copy and memset completes before returning.
#pragma once

#include "l2l/device/device.h"

namespace l2l {

class CpuDevice final : public Device {
 public:
  explicit CpuDevice(int64_t memory_limit_bytes) : arena_(memory_limit_bytes) {}

  DeviceType type() const override { return DeviceType::kCpu; }
  std::string name() const override { return "cpu"; }

  StatusOr<DeviceBuffer> Allocate(size_t bytes, std::string_view what) override;
  MemoryStats memory_stats() const override { return arena_.stats(); }
  void ResetPeak() override { arena_.ResetPeak(); }
  StatusOr<HostBuffer> AllocatePinned(size_t bytes, std::string_view what) override;

  void CopyH2D(void* dst, const void* src, size_t bytes, StreamKind) override;
  void CopyD2H(void* dst, const void* src, size_t bytes, StreamKind) override;
  void CopyD2D(void* dst, const void* src, size_t bytes, StreamKind) override;
  void Memset(void* dst, int value, size_t bytes, StreamKind) override;

  std::unique_ptr<Event> RecordEvent(StreamKind stream) override;
  void StreamWaitEvent(StreamKind, Event&) override {}
  void SynchronizeStream(StreamKind) override {}

 protected:
  void Free(void* data, size_t size_bytes) override;
  void FreePinned(void* data, size_t size_bytes) override;

 private:
  ArenaAccounting arena_;
};

}  // namespace l2l
