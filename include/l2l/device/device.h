// Device: where a layer executes. Memory (a capped arena with a high-water
// mark), streams, events, and copies between pinned host memory and the device.
//
// Contract shared by every backend:
// - Allocate() draws from an arena capped at `limit_bytes` (0 = no cap). A
//   request that would exceed the cap returns OutOfMemory naming the request,
//   what is in use, and the cap; nothing is allocated.
// - peak_bytes is the high-water mark of in_use_bytes since construction or
//   the last ResetPeak(). The CPU backend enforces and reports exactly what the
//   CUDA backend does, so CI proves the memory contract of DESIGN §5.
// - Copies and memsets are ordered on the given stream; RecordEvent/WaitEvent
//   order work across streams. On the CPU backend every operation completes
//   before the call returns, so events are trivially complete.
// - Threading: a Device is used by one thread (the relay); the arena
//   accounting itself is thread-safe so buffers may be freed from any thread.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "l2l/core/status.h"

namespace l2l {

enum class DeviceType { kCpu, kCuda };
const char* DeviceTypeName(DeviceType t);

// The streams a relay uses: compute; host-to-device copies (parameter shards,
// stashed activations coming back); and the communication stream: the
// collectives (NCCL) and the device-to-host copies (stashing, gradient shards).
enum class StreamKind { kCompute = 0, kH2D = 1, kComm = 2 };
inline constexpr int kNumStreams = 3;

struct MemoryStats {
  int64_t in_use_bytes = 0;
  int64_t peak_bytes = 0;
  int64_t limit_bytes = 0;  // 0 = no cap
};

// Thread-safe bookkeeping of a capped arena. Backends hold one.
class ArenaAccounting {
 public:
  explicit ArenaAccounting(int64_t limit_bytes) : limit_(limit_bytes) {}
  // Reserves `bytes` or returns OutOfMemory naming `what`.
  Status Reserve(int64_t bytes, std::string_view what, std::string_view device_name);
  void Release(int64_t bytes);
  MemoryStats stats() const;
  void ResetPeak();

 private:
  const int64_t limit_;
  std::atomic<int64_t> in_use_{0};
  std::atomic<int64_t> peak_{0};
};

class Device;

enum class MemoryKind { kDevice, kPinnedHost };

// Owns memory from a Device: arena memory (DeviceBuffer) or page-locked host
// memory for EPS shards and the host stash (HostBuffer; plain 64-byte-aligned
// memory on the CPU backend). Returns it on destruction. Movable, not
// copyable; the Device must outlive its buffers.
template <MemoryKind kKind>
class OwnedMemory {
 public:
  OwnedMemory() = default;
  OwnedMemory(Device* owner, void* data, size_t size_bytes)
      : owner_(owner), data_(data), size_bytes_(size_bytes) {}
  OwnedMemory(OwnedMemory&& o) noexcept { *this = std::move(o); }
  OwnedMemory& operator=(OwnedMemory&& o) noexcept {
    if (this != &o) {
      Reset();
      owner_ = std::exchange(o.owner_, nullptr);
      data_ = std::exchange(o.data_, nullptr);
      size_bytes_ = std::exchange(o.size_bytes_, 0);
    }
    return *this;
  }
  OwnedMemory(const OwnedMemory&) = delete;
  OwnedMemory& operator=(const OwnedMemory&) = delete;
  ~OwnedMemory() { Reset(); }

  void* data() const { return data_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data_);
  }
  size_t size_bytes() const { return size_bytes_; }
  inline void Reset();

 private:
  Device* owner_ = nullptr;
  void* data_ = nullptr;
  size_t size_bytes_ = 0;
};

using DeviceBuffer = OwnedMemory<MemoryKind::kDevice>;
using HostBuffer = OwnedMemory<MemoryKind::kPinnedHost>;

// A point in a stream's work. Backend-specific; owned by the caller.
class Event {
 public:
  virtual ~Event() = default;
  // Blocks the calling host thread until the work before the event is done.
  virtual void HostWait() = 0;
  // Seconds from `earlier` to this event, both made by RecordTimedEvent on the
  // same device and both complete (e.g. after a stream synchronisation). On
  // backends without stream timing (CPU: work completes before each call
  // returns, so a stream never stalls) it is 0.
  virtual double SecondsSince(Event& earlier) {
    (void)earlier;
    return 0;
  }
};

class Device {
 public:
  virtual ~Device() = default;

  virtual DeviceType type() const = 0;
  virtual std::string name() const = 0;
  // Whether stream work runs asynchronously to the host (the GPU), so that
  // overlapping transfers with compute pays off. The CPU backend: false.
  virtual bool asynchronous() const { return false; }

  // Arena memory (contract above). `what` names the buffer in OOM messages.
  virtual StatusOr<DeviceBuffer> Allocate(size_t bytes, std::string_view what) = 0;
  virtual MemoryStats memory_stats() const = 0;
  virtual void ResetPeak() = 0;

  // Pinned host memory; not counted against the device cap.
  virtual StatusOr<HostBuffer> AllocatePinned(size_t bytes, std::string_view what) = 0;

  // Asynchronous copies in bytes, ordered on `stream`.
  virtual void CopyH2D(void* dst, const void* src, size_t bytes, StreamKind stream) = 0;
  virtual void CopyD2H(void* dst, const void* src, size_t bytes, StreamKind stream) = 0;
  virtual void CopyD2D(void* dst, const void* src, size_t bytes, StreamKind stream) = 0;
  virtual void Memset(void* dst, int value, size_t bytes, StreamKind stream) = 0;

  virtual std::unique_ptr<Event> RecordEvent(StreamKind stream) = 0;
  // An event that also marks when the stream reached it, for measuring stream
  // stalls with Event::SecondsSince. Costlier than RecordEvent on the GPU.
  virtual std::unique_ptr<Event> RecordTimedEvent(StreamKind stream) { return RecordEvent(stream); }
  // Work later submitted to `stream` starts after `event`.
  virtual void StreamWaitEvent(StreamKind stream, Event& event) = 0;
  virtual void SynchronizeStream(StreamKind stream) = 0;
  void Synchronize() {
    for (int s = 0; s < kNumStreams; ++s) SynchronizeStream(static_cast<StreamKind>(s));
  }

 protected:
  template <MemoryKind>
  friend class OwnedMemory;
  virtual void Free(void* data, size_t size_bytes) = 0;
  virtual void FreePinned(void* data, size_t size_bytes) = 0;
};

template <MemoryKind kKind>
void OwnedMemory<kKind>::Reset() {
  if (owner_ != nullptr) {
    if constexpr (kKind == MemoryKind::kDevice) {
      owner_->Free(data_, size_bytes_);
    } else {
      owner_->FreePinned(data_, size_bytes_);
    }
  }
  owner_ = nullptr;
  data_ = nullptr;
  size_bytes_ = 0;
}

// Which backend to build, chosen once per process.
struct DeviceOptions {
  DeviceType type = DeviceType::kCpu;
  int64_t memory_limit_bytes = 0;  // 0 = no cap
  int local_rank = 0;              // selects the GPU on multi-GPU nodes
};

}  // namespace l2l
