// NcclComm: the Comm interface on DEVICE buffers of a CudaDevice, over NCCL.
//
// Creation is collective over an MpiComm: rank 0 calls ncclGetUniqueId, the
// id is broadcast over MPI, and every rank calls ncclCommInitRank with its
// CudaDevice's GPU current. NCCL rank r is MPI rank r of that communicator.
// Ranks must sit on distinct GPUs (NCCL refuses two ranks on one GPU); see
// CudaDevice for how local_rank picks the GPU.
//
// Two ways to run a collective:
// - The Comm interface (AllGather, ReduceScatter, AllReduce, Broadcast,
//   Barrier): blocking, like MpiComm. The collective is enqueued on the
//   device's kComm stream (the communication stream) after all work already
//   submitted to the device's kCompute and kH2D streams (an event on each),
//   and the call returns once the result is complete. Buffers are device
//   memory of this GPU; host buffers (pageable or pinned) are also accepted
//   and staged through transient device memory, which is what lets the
//   inherited Comm::Agree() work here. Staging is for small control messages;
//   pass device buffers for data.
// - The *Async variants: enqueue on the caller's `stream` and return at once.
//   Device buffers only (checked). Ordering before and after is the caller's
//   (events); Wait(stream) is the error-aware way to block on the result.
//
// Counts are in ELEMENTS of `dtype`; in-place rules follow Comm: AllGather is
// in place when send == recv + rank*count; ReduceScatter is in place when
// send == recv and leaves the result at the start of the buffer (NCCL's own
// in-place form puts it at offset rank*count, so NcclComm adds a D2D copy for
// rank > 0); AllReduce and Broadcast are in place when send == recv.
//
// kBF16 is ncclBfloat16 in every call. Gathers and broadcasts move the words
// bit for bit; reductions use NCCL's bf16 arithmetic, which rounds to bf16 at
// every step of an order NCCL chooses (it changes with the rank count and the
// algorithm), so reduce fp32 where accuracy or reproducibility matters.
//
// Errors. Every failure returns a Status naming the call, the rank and the
// device (kInternal unless noted). A failed collective leaves the ranks out of
// step, so any failure after creation aborts the NCCL communicator
// (ncclCommAbort): kernels still waiting are released, peers see a remote
// error or reach their own timeout instead of hanging, and every later call
// on this object returns the first error again. Waiting polls both the stream
// and ncclCommGetAsyncError; an asynchronous error, a CUDA error, or a
// collective still incomplete after `NcclCommOptions::timeout_ms` ends the
// wait this way.
//
// Threading: one thread drives an NcclComm (NCCL communicators are not
// thread-safe). Not copyable or movable; destroy it before its CudaDevice.
#pragma once

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "l2l/comm/comm.h"
#include "l2l/comm/mpi_comm.h"
#include "l2l/device/cuda_device.h"

namespace l2l {

struct NcclCommOptions {
  // How long a blocking call or Wait() waits for a collective before it
  // aborts the communicator; 0 waits forever. Long enough for a peer to finish
  // a layer's compute before it joins the collective.
  int64_t timeout_ms = 10 * 60 * 1000;
};

class NcclComm final : public Comm {
 public:
  // Collective over `mpi`. `device` must outlive the NcclComm. On failure all
  // ranks return the same status (lowest failing rank's), except when a rank
  // fails inside ncclCommInitRank itself, where NCCL's bootstrap decides
  // whether the others notice.
  static StatusOr<std::unique_ptr<NcclComm>> Create(MpiComm& mpi, CudaDevice& device,
                                                    const NcclCommOptions& options = {});
  // ncclCommDestroy (after draining the communication stream), or nothing if
  // the communicator was aborted. Like creation, every rank should destroy at
  // the same point of the program.
  ~NcclComm() override;
  NcclComm(const NcclComm&) = delete;
  NcclComm& operator=(const NcclComm&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  // Null once the communicator has been aborted.
  ncclComm_t handle() const { return comm_; }
  CudaDevice& device() const { return device_; }

  // Blocking, on the device's kComm stream (contract above).
  Status AllGather(const void* send, void* recv, size_t count_per_rank, CommDType dtype) override;
  Status ReduceScatter(const void* send, void* recv, size_t count_per_rank, CommDType dtype,
                       ReduceOp op) override;
  Status AllReduce(const void* send, void* recv, size_t count, CommDType dtype,
                   ReduceOp op) override;
  Status Broadcast(void* buf, size_t count, CommDType dtype, int root) override;
  // Returns once every rank has reached the barrier and the work this rank
  // submitted to its device's three streams before it is complete.
  Status Barrier() override;

  // Enqueue forms (Comm contract): the *Async calls on the device's kComm
  // stream, device buffers only.
  Status AllGatherEnqueue(const void* send, void* recv, size_t count_per_rank,
                          CommDType dtype) override {
    return AllGatherAsync(send, recv, count_per_rank, dtype, device_.stream(StreamKind::kComm));
  }
  Status ReduceScatterEnqueue(const void* send, void* recv, size_t count_per_rank, CommDType dtype,
                              ReduceOp op) override {
    return ReduceScatterAsync(send, recv, count_per_rank, dtype, op,
                              device_.stream(StreamKind::kComm));
  }
  Status AllReduceEnqueue(const void* send, void* recv, size_t count, CommDType dtype,
                          ReduceOp op) override {
    return AllReduceAsync(send, recv, count, dtype, op, device_.stream(StreamKind::kComm));
  }

  // Enqueue only, on `stream` (a stream of this GPU). Device buffers only.
  Status AllGatherAsync(const void* send, void* recv, size_t count_per_rank, CommDType dtype,
                        cudaStream_t stream);
  Status ReduceScatterAsync(const void* send, void* recv, size_t count_per_rank, CommDType dtype,
                            ReduceOp op, cudaStream_t stream);
  Status AllReduceAsync(const void* send, void* recv, size_t count, CommDType dtype, ReduceOp op,
                        cudaStream_t stream);
  Status BroadcastAsync(const void* send, void* recv, size_t count, CommDType dtype, int root,
                        cudaStream_t stream);

  // Blocks until the work on `stream` is done, watching for NCCL asynchronous
  // errors and the timeout (both abort the communicator). `what` names the
  // wait in the error.
  Status Wait(cudaStream_t stream, const std::string& what = "NcclComm::Wait");
  // One non-blocking look at ncclCommGetAsyncError; aborts on an error.
  Status CheckAsyncError() { return CheckAsyncError("ncclCommGetAsyncError"); }

 private:
  struct DeviceWordDeleter {
    void operator()(void* p) const noexcept;
  };
  using DeviceWord = std::unique_ptr<void, DeviceWordDeleter>;

  NcclComm(CudaDevice& device, ncclComm_t comm, DeviceWord barrier_word, int rank, int size,
           const NcclCommOptions& options);

  // Where a buffer argument lives, for the staging decision.
  enum class Memory { kThisDevice, kHost, kOtherDevice };
  Memory Classify(const void* p) const;
  // InvalidArgument (and abort) unless both are device memory of this GPU.
  Status RequireDevicePointers(const std::string& call, const void* a, const void* b);

  // Enqueue without checks; a failure aborts.
  Status EnqueueAllGather(const void* send, void* recv, size_t count, CommDType dtype,
                          cudaStream_t s);
  Status EnqueueReduceScatter(const void* send, void* recv, size_t count, CommDType dtype,
                              ReduceOp op, cudaStream_t s);
  Status EnqueueAllReduce(const void* send, void* recv, size_t count, CommDType dtype, ReduceOp op,
                          cudaStream_t s);
  Status EnqueueBroadcast(const void* send, void* recv, size_t count, CommDType dtype, int root,
                          cudaStream_t s);
  Status EnqueueCopy(const std::string& call, void* dst, const void* src, size_t bytes,
                     cudaStream_t s);

  // The path every blocking collective takes (contract at the top of this file):
  // usability and count == 0 checks, then either `enqueue(send, recv)` on
  // device buffers, or, when either buffer is host memory, staging through a
  // transient device buffer of plan.staging_bytes: plan.in_bytes of `send`
  // are copied to staging + plan.in_offset_bytes (nothing when 0), `enqueue(
  // staging + in_offset_bytes, staging)` runs the collective in place there,
  // and the first plan.out_bytes are copied back to `recv`. Both forms run on
  // the kComm stream after the device's other streams and wait for the result.
  struct StagingPlan {
    size_t staging_bytes;
    size_t in_offset_bytes;
    size_t in_bytes;
    size_t out_bytes;
  };
  using EnqueueFn = std::function<Status(const void* send, void* recv, cudaStream_t s)>;
  Status RunBlocking(const std::string& call, size_t count, const void* send, void* recv,
                     const StagingPlan& plan, const EnqueueFn& enqueue);

  // "<call> failed on rank R (<device name>): <detail>".
  std::string Describe(const std::string& call, const std::string& detail) const;
  // Aborts the communicator (once), remembers the first failure, returns this one.
  Status Fail(StatusCode code, const std::string& call, const std::string& detail);
  Status FailNccl(const std::string& call, ncclResult_t r);
  Status FailCuda(const std::string& call, cudaError_t err);
  // The first failure again, once the communicator has been aborted.
  Status Usable(const std::string& call) const;
  Status CheckAsyncError(const std::string& call);
  // Makes the communication stream wait for the device's other two streams.
  void OrderAfterDeviceWork();

  CudaDevice& device_;
  ncclComm_t comm_ = nullptr;
  // One int32 on the GPU that Barrier() all-reduces; outside the arena.
  DeviceWord barrier_word_;
  const int rank_;
  const int size_;
  const NcclCommOptions options_;
  Status broken_;  // the first failure; OK while the communicator is healthy

  // What the device's wait watchdog (CudaDevice::SetWaitWatchdog) looks at
  // from other threads: the communicator for ncclCommGetAsyncError, null once
  // aborted or destroyed. Shared so that events outliving this object stay
  // safe; every change of comm_ and every look happen under `mu`.
  struct WatchState {
    std::mutex mu;
    ncclComm_t comm = nullptr;
  };
  std::shared_ptr<WatchState> watch_;
  // The watchdog installed on the device, and the one it replaced.
  std::shared_ptr<const CudaWaitWatchdog> watchdog_, previous_watchdog_;
};

}  // namespace l2l
