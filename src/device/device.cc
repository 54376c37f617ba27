#include "l2l/device/device.h"

#include <algorithm>
#include <utility>

#include <cstdio>

namespace l2l {

const char* DeviceTypeName(DeviceType t) { return t == DeviceType::kCpu ? "cpu" : "cuda"; }

namespace {
std::string Bytes(int64_t b) {
  char buf[64];
  if (b >= (1ll << 30)) {
    std::snprintf(buf, sizeof buf, "%.2f GiB", b / double(1ll << 30));
  } else if (b >= (1ll << 20)) {
    std::snprintf(buf, sizeof buf, "%.2f MiB", b / double(1ll << 20));
  } else {
    std::snprintf(buf, sizeof buf, "%lld B", static_cast<long long>(b));
  }
  return buf;
}
}  // namespace

Status ArenaAccounting::Reserve(int64_t bytes, std::string_view what,
                                std::string_view device_name) {
  int64_t cur = in_use_.load();
  while (true) {
    const int64_t next = cur + bytes;
    if (limit_ > 0 && next > limit_) {
      return OutOfMemory(std::string(device_name) + " out of memory: cannot allocate " +
                         Bytes(bytes) + " for " + std::string(what) + " (" + Bytes(cur) +
                         " in use, exec.device_memory_limit is " + Bytes(limit_) + ")");
    }
    if (in_use_.compare_exchange_weak(cur, next)) {
      int64_t peak = peak_.load();
      while (next > peak && !peak_.compare_exchange_weak(peak, next)) {
      }
      return OkStatus();
    }
  }
}

void ArenaAccounting::Release(int64_t bytes) { in_use_.fetch_sub(bytes); }

MemoryStats ArenaAccounting::stats() const {
  return MemoryStats{in_use_.load(), peak_.load(), limit_};
}

void ArenaAccounting::ResetPeak() { peak_.store(in_use_.load()); }

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    Reset();
    owner_ = std::exchange(o.owner_, nullptr);
    data_ = std::exchange(o.data_, nullptr);
    size_bytes_ = std::exchange(o.size_bytes_, 0);
  }
  return *this;
}

void DeviceBuffer::Reset() {
  if (owner_ != nullptr) owner_->Free(data_, size_bytes_);
  owner_ = nullptr;
  data_ = nullptr;
  size_bytes_ = 0;
}

HostBuffer& HostBuffer::operator=(HostBuffer&& o) noexcept {
  if (this != &o) {
    Reset();
    owner_ = std::exchange(o.owner_, nullptr);
    data_ = std::exchange(o.data_, nullptr);
    size_bytes_ = std::exchange(o.size_bytes_, 0);
  }
  return *this;
}

void HostBuffer::Reset() {
  if (owner_ != nullptr) owner_->FreePinned(data_, size_bytes_);
  owner_ = nullptr;
  data_ = nullptr;
  size_bytes_ = 0;
}

}  // namespace l2l
