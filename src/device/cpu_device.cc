#include "l2l/device/cpu_device.h"

#include <cstdlib>
#include <cstring>

namespace l2l {
namespace {

constexpr size_t kAlignBytes = 64;

// Completed at creation: CPU work is synchronous.
class CpuEvent final : public Event {
 public:
  void HostWait() override {}
};

void* AlignedAlloc(size_t bytes) {
  const size_t rounded = (bytes + kAlignBytes - 1) / kAlignBytes * kAlignBytes;
  return std::aligned_alloc(kAlignBytes, rounded == 0 ? kAlignBytes : rounded);
}

}  // namespace

StatusOr<DeviceBuffer> CpuDevice::Allocate(size_t bytes, std::string_view what) {
  RETURN_IF_ERROR(arena_.Reserve(static_cast<int64_t>(bytes), what, "device cpu"));
  void* p = AlignedAlloc(bytes);
  if (p == nullptr) {
    arena_.Release(static_cast<int64_t>(bytes));
    return OutOfMemory("device cpu: host allocation of " + std::to_string(bytes) + " bytes for " +
                       std::string(what) + " failed");
  }
  return DeviceBuffer(this, p, bytes);
}

StatusOr<HostBuffer> CpuDevice::AllocatePinned(size_t bytes, std::string_view what) {
  void* p = AlignedAlloc(bytes);
  if (p == nullptr) {
    return OutOfMemory("host allocation of " + std::to_string(bytes) + " bytes for " +
                       std::string(what) + " failed");
  }
  return HostBuffer(this, p, bytes);
}

void CpuDevice::CopyH2D(void* dst, const void* src, size_t bytes, StreamKind) {
  if (bytes) std::memcpy(dst, src, bytes);
}
void CpuDevice::CopyD2H(void* dst, const void* src, size_t bytes, StreamKind) {
  if (bytes) std::memcpy(dst, src, bytes);
}
void CpuDevice::CopyD2D(void* dst, const void* src, size_t bytes, StreamKind) {
  if (bytes && dst != src) std::memmove(dst, src, bytes);
}
void CpuDevice::Memset(void* dst, int value, size_t bytes, StreamKind) {
  if (bytes) std::memset(dst, value, bytes);
}

std::unique_ptr<Event> CpuDevice::RecordEvent(StreamKind) { return std::make_unique<CpuEvent>(); }

void CpuDevice::Free(void* data, size_t size_bytes) {
  std::free(data);
  arena_.Release(static_cast<int64_t>(size_bytes));
}

void CpuDevice::FreePinned(void* data, size_t) { std::free(data); }

}  // namespace l2l
