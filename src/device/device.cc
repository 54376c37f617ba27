#include "l2l/device/device.h"

#include <algorithm>

#include "l2l/core/byte_size.h"

namespace l2l {

const char* DeviceTypeName(DeviceType t) { return t == DeviceType::kCpu ? "cpu" : "cuda"; }

Status ArenaAccounting::Reserve(int64_t bytes, std::string_view what,
                                std::string_view device_name) {
  int64_t cur = in_use_.load();
  while (true) {
    const int64_t next = cur + bytes;
    if (limit_ > 0 && next > limit_) {
      return OutOfMemory(std::string(device_name) + " out of memory: cannot allocate " +
                         FormatBytes(bytes) + " for " + std::string(what) + " (" +
                         FormatBytes(cur) + " in use, exec.device_memory_limit is " +
                         FormatBytes(limit_) + ")");
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

}  // namespace l2l
