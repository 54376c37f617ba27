// Test-only: a CPU Device whose H2D and comm streams really are asynchronous,
// to check on a machine without a GPU that the relay, the parameter sources
// and the EPS order their transfers with events the way a GPU needs.
//
// Semantics (what a GPU allows, made as adversarial as possible):
//  - Work on kH2D and kComm (copies, memsets, and collectives deferred through
//    StreamComm below) is queued and runs only when something forces it: an
//    event wait, a stream synchronisation, or a later queued wait. So a
//    consumer that forgot to wait reads stale memory and the result changes.
//  - kCompute is eager: the layer kernels run on the host at call time, so
//    compute-stream copies run at once, and StreamWaitEvent(kCompute, e) runs
//    e's stream up to e right away (that is what the wait means for work that
//    is about to run).
//  - RecordEvent(s) marks the current end of s's queue; Event::HostWait runs s
//    up to it.
// Thread safety: one recursive mutex serialises every queue operation and
// every queued op (optimizer threads wait on events while the relay thread
// submits work).
#pragma once

#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "l2l/comm/comm.h"
#include "l2l/core/check.h"
#include "l2l/device/device.h"

namespace l2l::sched::testing {

class AsyncCpuDevice final : public Device {
 public:
  AsyncCpuDevice() : arena_(0) {}
  ~AsyncCpuDevice() override { Synchronize(); }

  DeviceType type() const override { return DeviceType::kCpu; }  // runs the CPU kernels
  bool asynchronous() const override { return true; }
  std::string name() const override { return "async-cpu (test)"; }

  StatusOr<DeviceBuffer> Allocate(size_t bytes, std::string_view what) override {
    RETURN_IF_ERROR(arena_.Reserve(static_cast<int64_t>(bytes), what, name()));
    return DeviceBuffer(this, Raw(bytes), bytes);
  }
  MemoryStats memory_stats() const override { return arena_.stats(); }
  void ResetPeak() override { arena_.ResetPeak(); }
  StatusOr<HostBuffer> AllocatePinned(size_t bytes, std::string_view) override {
    return HostBuffer(this, Raw(bytes), bytes);
  }

  void CopyH2D(void* dst, const void* src, size_t bytes, StreamKind s) override {
    Copy(dst, src, bytes, s);
  }
  void CopyD2H(void* dst, const void* src, size_t bytes, StreamKind s) override {
    Copy(dst, src, bytes, s);
  }
  void CopyD2D(void* dst, const void* src, size_t bytes, StreamKind s) override {
    Copy(dst, src, bytes, s);
  }
  void Memset(void* dst, int value, size_t bytes, StreamKind s) override {
    Submit(s, [=] { std::memset(dst, value, bytes); });
  }

  std::unique_ptr<Event> RecordEvent(StreamKind s) override {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    return std::make_unique<AsyncEvent>(this, s, submitted_[Index(s)]);
  }
  void StreamWaitEvent(StreamKind s, Event& event) override {
    auto* e = dynamic_cast<AsyncEvent*>(&event);
    L2L_CHECK(e != nullptr && e->device == this) << "event of another device";
    const StreamKind es = e->stream;
    const int64_t seq = e->seq;
    Submit(s, [this, es, seq] { RunUntil(es, seq); });
  }
  void SynchronizeStream(StreamKind s) override {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    RunUntil(s, submitted_[Index(s)]);
  }

  // Queues `op` on stream `s` (runs it now on kCompute). For StreamComm.
  void Submit(StreamKind s, std::function<void()> op) {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    ++submitted_[Index(s)];
    if (s == StreamKind::kCompute) {
      op();
      ++done_[Index(s)];
      return;
    }
    queue_[Index(s)].push_back(std::move(op));
  }

 protected:
  void Free(void* data, size_t bytes) override {
    Synchronize();  // like the CUDA backend's fences: no queued op may touch it later
    std::free(data);
    arena_.Release(static_cast<int64_t>(bytes));
  }
  void FreePinned(void* data, size_t) override {
    Synchronize();
    std::free(data);
  }

 private:
  struct AsyncEvent final : public Event {
    AsyncEvent(AsyncCpuDevice* d, StreamKind s, int64_t q) : device(d), stream(s), seq(q) {}
    void HostWait() override {
      std::lock_guard<std::recursive_mutex> lock(device->mu_);
      device->RunUntil(stream, seq);
    }
    AsyncCpuDevice* device;
    StreamKind stream;
    int64_t seq;  // complete once the stream has run this many ops
  };

  static int Index(StreamKind s) { return static_cast<int>(s); }
  static void* Raw(size_t bytes) {
    const size_t rounded = (std::max<size_t>(bytes, 1) + 255) / 256 * 256;
    void* p = std::aligned_alloc(256, rounded);
    L2L_CHECK(p != nullptr);
    return p;
  }
  void Copy(void* dst, const void* src, size_t bytes, StreamKind s) {
    Submit(s, [=] { std::memcpy(dst, src, bytes); });
  }
  // Caller holds mu_. Ops may wait on other streams (recursion).
  void RunUntil(StreamKind s, int64_t seq) {
    const int i = Index(s);
    while (done_[i] < seq) {
      L2L_CHECK(!queue_[i].empty());
      std::function<void()> op = std::move(queue_[i].front());
      queue_[i].pop_front();
      op();
      ++done_[i];
    }
  }

  ArenaAccounting arena_;
  std::recursive_mutex mu_;
  std::deque<std::function<void()>> queue_[kNumStreams];
  int64_t submitted_[kNumStreams] = {0, 0, 0};
  int64_t done_[kNumStreams] = {0, 0, 0};
};

// A one-rank communicator whose *Enqueue collectives are queued on the
// device's kComm stream, like NcclComm's; at one rank they move no data
// between ranks (in place: nothing; out of place: a copy). Blocking calls go
// to `host` (an MpiComm).
class StreamComm final : public Comm {
 public:
  StreamComm(AsyncCpuDevice* device, Comm* host) : device_(device), host_(host) {
    L2L_CHECK_EQ(host->size(), 1) << "StreamComm simulates one rank";
  }
  int rank() const override { return 0; }
  int size() const override { return 1; }
  Status AllGather(const void* send, void* recv, size_t n, CommDType t) override {
    return host_->AllGather(send, recv, n, t);
  }
  Status ReduceScatter(const void* send, void* recv, size_t n, CommDType t, ReduceOp op) override {
    return host_->ReduceScatter(send, recv, n, t, op);
  }
  Status AllReduce(const void* send, void* recv, size_t n, CommDType t, ReduceOp op) override {
    return host_->AllReduce(send, recv, n, t, op);
  }
  Status Broadcast(void* buf, size_t n, CommDType t, int root) override {
    return host_->Broadcast(buf, n, t, root);
  }
  Status Barrier() override { return host_->Barrier(); }
  Status AllGatherEnqueue(const void* send, void* recv, size_t n, CommDType t) override {
    return Deferred(send, recv, n * CommDTypeSizeBytes(t));
  }
  Status ReduceScatterEnqueue(const void* send, void* recv, size_t n, CommDType t,
                              ReduceOp) override {
    return Deferred(send, recv, n * CommDTypeSizeBytes(t));
  }
  Status AllReduceEnqueue(const void* send, void* recv, size_t n, CommDType t, ReduceOp) override {
    return Deferred(send, recv, n * CommDTypeSizeBytes(t));
  }

 private:
  Status Deferred(const void* send, void* recv, size_t bytes) {
    if (send != recv) {
      device_->Submit(StreamKind::kComm, [=] { std::memmove(recv, send, bytes); });
    } else {
      device_->Submit(StreamKind::kComm, [] {});  // still a point in the stream's order
    }
    return OkStatus();
  }
  AsyncCpuDevice* device_;
  Comm* host_;
};

}  // namespace l2l::sched::testing
