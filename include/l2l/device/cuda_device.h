// CudaDevice: the Device backend for one NVIDIA GPU, plus the RAII owners of
// the CUDA handles the rest of the CUDA code (kernels, NcclComm) shares.
//
// Which GPU: DeviceOptions::local_rank % (number of visible devices). With one
// rank per GPU (the normal launch: local ranks 0..k-1 on a k-GPU node) rank i
// gets GPU i; with CUDA_VISIBLE_DEVICES narrowed to one GPU per rank every
// rank gets ordinal 0. More ranks than GPUs on a node means ranks share a GPU:
// CudaDevice allows it (a warning is logged) but NCCL does not.
//
// Memory: Allocate() reserves the request in an ArenaAccounting exactly as
// CpuDevice does (same cap check, same in-use and peak numbers, same message),
// then takes the bytes from a private CUDA memory pool (cudaMemPoolCreate +
// cudaMallocFromPoolAsync) whose release threshold is "never": freed memory
// stays with the pool and is reused without going back to the driver. Why a
// pool and not cudaMalloc/cudaFree: cudaFree synchronises the whole device,
// which would stall every stream whenever the relay releases a buffer; a pool
// frees stream-ordered instead. Why a private pool and not the device's
// default one: the release threshold and the physical footprint stay ours,
// whatever cuBLAS or NCCL do with theirs. The arena counts requested bytes;
// the pool may hold a little more (rounding, fragmentation), and NCCL's and
// cuBLAS's own buffers are outside both.
//
// Streams: kCompute, kH2D and kComm are created non-blocking (they never
// synchronise with the legacy default stream). kComm, which also carries
// NcclComm's collectives, gets the highest priority so communication kernels
// are scheduled ahead of queued compute; the other two run at default
// priority.
//
// Ordering and lifetime of memory (the part a CPU backend never has to think
// about):
// - Allocate() returns memory that is usable at once on every stream (and by
//   any other CUDA stream): it waits on the host until the allocation is
//   complete, which includes frees queued before it (see below). Allocate at
//   setup, not inside the relay's inner loop.
// - Releasing a DeviceBuffer never blocks the host. The memory returns to the
//   pool only after all work submitted to the three streams before the release
//   has finished (events on each stream fence a stream-ordered cudaFreeAsync on
//   an internal stream). Work enqueued on streams this device does not own
//   (a kernel library's stream, NcclComm's *Async on a caller's stream) is not
//   covered: order it before a device stream, or synchronise, before release.
// - Releasing a HostBuffer (cudaFreeHost) first waits on the host for the
//   three streams to drain, so an in-flight copy never reads freed memory.
//   cudaFreeHost is heavyweight anyway: release pinned memory at teardown.
//
// Errors: the Device interface returns void from copies, events and
// synchronisation. A CUDA failure there is a device fault or an l2l bug and
// aborts via L2L_CUDA_CHECK (file, line, rank, ordinal). Allocation failures
// (cap or physical) return OutOfMemory Status.
//
// Threading: as for Device, one thread drives a CudaDevice; buffers may be
// released from any thread. Every call makes the GPU current on the calling
// thread for its duration (CudaDeviceGuard) and restores the previous device.
// Create() leaves the GPU current on the creating thread, so kernels launched
// from that thread land on it.
#pragma once

#include <cuda_runtime_api.h>

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <utility>

#include "l2l/device/device.h"

namespace l2l {

// Number of visible CUDA devices (>= 1), or FailedPrecondition naming why
// there are none (no driver, no device, CUDA_VISIBLE_DEVICES empty). Tests use
// it to decide whether to skip.
StatusOr<int> CountCudaDevices();

// Makes `ordinal` the calling thread's current CUDA device for the guard's
// lifetime, then restores the previous one if a guard had chosen it on this
// thread (a thread that never chose a device keeps `ordinal`: restoring the
// runtime's default 0 would create a context on GPU 0). Not movable.
class CudaDeviceGuard {
 public:
  explicit CudaDeviceGuard(int ordinal);
  ~CudaDeviceGuard();
  CudaDeviceGuard(const CudaDeviceGuard&) = delete;
  CudaDeviceGuard& operator=(const CudaDeviceGuard&) = delete;

 private:
  int previous_ = -1;
  int ordinal_ = -1;
};

// RAII owners for CUDA handles. Destruction ignores errors: it runs on
// teardown paths, possibly after the runtime itself is unloading.
struct CudaStreamDeleter {
  void operator()(cudaStream_t s) const noexcept;
};
struct CudaEventDeleter {
  void operator()(cudaEvent_t e) const noexcept;
};
struct CudaMemPoolDeleter {
  void operator()(cudaMemPool_t p) const noexcept;
};
using CudaStreamPtr = std::unique_ptr<std::remove_pointer_t<cudaStream_t>, CudaStreamDeleter>;
using CudaEventPtr = std::unique_ptr<std::remove_pointer_t<cudaEvent_t>, CudaEventDeleter>;
using CudaMemPoolPtr = std::unique_ptr<std::remove_pointer_t<cudaMemPool_t>, CudaMemPoolDeleter>;

// A non-blocking stream on the current device, for callers that need their
// own (tests, a kernel library). `priority` 0 is the default priority.
StatusOr<CudaStreamPtr> CreateCudaStream(int priority);

// What the host checks while it waits on a device (CudaDevice::
// SetWaitWatchdog): `check` every kWatchdogPeriod, and a limit on one wait.
struct CudaWaitWatchdog {
  std::function<Status()> check;  // a non-OK status aborts the process
  int64_t timeout_ms = 0;         // 0 = wait forever
};

// An event recorded on one of a CudaDevice's streams. Timing disabled unless
// made by RecordTimedEvent.
class CudaEvent final : public Event {
 public:
  CudaEvent(int ordinal, CudaEventPtr event, bool timed = false,
            std::shared_ptr<const CudaWaitWatchdog> watchdog = nullptr)
      : ordinal_(ordinal),
        event_(std::move(event)),
        timed_(timed),
        watchdog_(std::move(watchdog)) {}
  // Blocks until the work before the event is done (cudaEventSynchronize).
  void HostWait() override;
  // cudaEventElapsedTime; both events must be timed, of this GPU and complete
  // (CHECKed).
  double SecondsSince(Event& earlier) override;
  cudaEvent_t handle() const { return event_.get(); }
  int ordinal() const { return ordinal_; }

 private:
  int ordinal_;
  CudaEventPtr event_;
  bool timed_;
  std::shared_ptr<const CudaWaitWatchdog> watchdog_;  // of the device at record time
};

class CudaDevice final : public Device {
 public:
  // Picks GPU local_rank % device_count, creates the pool, the streams and
  // the fence events, and makes the GPU current on the calling thread.
  // FailedPrecondition (message starts "exec.device: cuda") when no GPU is
  // visible; Internal naming the call for other CUDA failures.
  static StatusOr<std::unique_ptr<CudaDevice>> Create(const DeviceOptions& options);
  // Synchronises the three streams, then releases pool, events and streams.
  // Every DeviceBuffer and HostBuffer must be gone by now.
  ~CudaDevice() override;
  CudaDevice(const CudaDevice&) = delete;
  CudaDevice& operator=(const CudaDevice&) = delete;

  DeviceType type() const override { return DeviceType::kCuda; }
  bool asynchronous() const override { return true; }
  // "cuda:<ordinal> <device name>", e.g. "cuda:0 NVIDIA H100 80GB HBM3".
  std::string name() const override { return name_; }

  StatusOr<DeviceBuffer> Allocate(size_t bytes, std::string_view what) override;
  MemoryStats memory_stats() const override { return arena_.stats(); }
  void ResetPeak() override { arena_.ResetPeak(); }
  // cudaHostAlloc(cudaHostAllocPortable); OutOfMemory when the host refuses.
  StatusOr<HostBuffer> AllocatePinned(size_t bytes, std::string_view what) override;

  // cudaMemcpyAsync / cudaMemsetAsync on `stream`; return before the copy is
  // done. Host pointers should be pinned (HostBuffer) for the copy to be
  // asynchronous; pageable memory works, but the call may then block.
  void CopyH2D(void* dst, const void* src, size_t bytes, StreamKind stream) override;
  void CopyD2H(void* dst, const void* src, size_t bytes, StreamKind stream) override;
  void CopyD2D(void* dst, const void* src, size_t bytes, StreamKind stream) override;
  void Memset(void* dst, int value, size_t bytes, StreamKind stream) override;

  // A CudaEvent recorded on `stream`.
  std::unique_ptr<Event> RecordEvent(StreamKind stream) override;
  // A CudaEvent with timing enabled.
  std::unique_ptr<Event> RecordTimedEvent(StreamKind stream) override;
  // `event` must be a CudaEvent of this device (checked).
  void StreamWaitEvent(StreamKind stream, Event& event) override;
  void SynchronizeStream(StreamKind stream) override;

  // While the host waits on this device's work (SynchronizeStream,
  // CudaEvent::HostWait of events recorded after this call), it polls and,
  // every kWatchdogPeriod, calls watchdog.check; a failure, or one wait longer
  // than watchdog.timeout_ms, aborts the process with a message naming the
  // wait. Why abort: the waits that can hang are on collectives, and a failed
  // collective leaves the ranks out of step; the launcher then ends the job
  // instead of every rank waiting forever. NcclComm installs its async-error
  // check here; nullptr (the default) restores plain blocking waits. `check`
  // may run on any thread that waits (optimizer threads included).
  // Returns the watchdog it replaces. RestoreWaitWatchdog(mine, previous)
  // puts `previous` back only if `mine` is still the one installed, so
  // communicators created and destroyed in any order leave the right one.
  std::shared_ptr<const CudaWaitWatchdog> SetWaitWatchdog(
      std::shared_ptr<const CudaWaitWatchdog> watchdog);
  void RestoreWaitWatchdog(const CudaWaitWatchdog* mine,
                           std::shared_ptr<const CudaWaitWatchdog> previous);
  static constexpr std::chrono::milliseconds kWatchdogPeriod{100};

  // CUDA-specific accessors for kernels and NcclComm. The streams belong to
  // this device and live as long as it does.
  int ordinal() const { return ordinal_; }
  cudaStream_t stream(StreamKind kind) const { return streams_[static_cast<int>(kind)].get(); }

 protected:
  void Free(void* data, size_t size_bytes) override;
  void FreePinned(void* data, size_t size_bytes) override;

 private:
  CudaDevice(int ordinal, int64_t memory_limit_bytes)
      : ordinal_(ordinal), arena_(memory_limit_bytes) {}
  Status Init();

  const int ordinal_;
  std::string name_;
  ArenaAccounting arena_;
  // Declared before the streams so that it is destroyed after them.
  CudaMemPoolPtr pool_;
  CudaStreamPtr streams_[kNumStreams];
  // Internal stream on which allocations and fenced frees are ordered.
  CudaStreamPtr memory_stream_;
  // Recorded on each device stream at every release; guarded by free_mu_.
  std::mutex free_mu_;
  CudaEventPtr free_fences_[kNumStreams];
  // Guarded by watchdog_mu_; events keep the one current when they were made.
  mutable std::mutex watchdog_mu_;
  std::shared_ptr<const CudaWaitWatchdog> watchdog_;
  std::shared_ptr<const CudaWaitWatchdog> watchdog() const;
};

}  // namespace l2l
