#include "l2l/device/device.h"

#include <algorithm>
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

}  // namespace l2l
