// Timing shared by the relay and both parameter sources (l2l_param_source.cc,
// resident_param_source.cc): wall-clock seconds, and the compute stream's
// stalls on transfers.
#pragma once

#include <chrono>
#include <memory>
#include <utility>
#include <vector>

#include "l2l/device/device.h"

namespace l2l::sched::internal {

using Clock = std::chrono::steady_clock;
inline double SecondsSince(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Makes the compute stream wait for a transfer's event between two timed
// events: the time between them is how long the stream stalled on the
// transfer (0 when it was done before the stream got there; always 0 on the
// CPU backend). Take() needs the compute stream synchronised (the relay's
// TakeLoss), so that every event is complete.
class StallMeter {
 public:
  void ComputeWaits(Device* device, Event& e) {
    std::unique_ptr<Event> before = device->RecordTimedEvent(StreamKind::kCompute);
    device->StreamWaitEvent(StreamKind::kCompute, e);
    stalls_.emplace_back(std::move(before), device->RecordTimedEvent(StreamKind::kCompute));
  }
  double Take() {
    double s = 0;
    for (auto& [before, after] : stalls_) s += after->SecondsSince(*before);
    stalls_.clear();
    return s;
  }

 private:
  std::vector<std::pair<std::unique_ptr<Event>, std::unique_ptr<Event>>> stalls_;
};

}  // namespace l2l::sched::internal
