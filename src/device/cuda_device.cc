// CudaDevice and the CUDA check helpers. Plain C++ against the CUDA runtime
// API: nothing here launches a kernel, so no .cu file is needed. The contract
// (which memory, which stream, when the host waits) is in cuda_device.h.
#include "l2l/device/cuda_device.h"

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>
#include <thread>

#include "l2l/core/byte_size.h"
#include "l2l/core/check.h"
#include "l2l/core/log.h"
#include "l2l/device/cuda_check.h"
#include "l2l/device/poll.h"

namespace l2l {

// ---------------------------------------------------------------------------
// Check helpers (declared in cuda_check.h).

std::string CudaErrorText(cudaError_t err) {
  return std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err);
}

namespace internal {

int CurrentCudaOrdinal() {
  int ordinal = -1;
  if (cudaGetDevice(&ordinal) != cudaSuccess) {
    cudaGetLastError();
    return -1;
  }
  return ordinal;
}

std::string GpuErrorWhere(const char* file, int line) {
  const int rank = LogRank();
  const int ordinal = CurrentCudaOrdinal();
  return std::string(file) + ":" + std::to_string(line) + " (rank " +
         (rank >= 0 ? std::to_string(rank) : std::string("-")) +
         ", cuda:" + (ordinal >= 0 ? std::to_string(ordinal) : std::string("?")) + ")";
}

GpuCheckFailure::GpuCheckFailure(const char* library, const char* file, int line, const char* expr,
                                 const std::string& error) {
  os_ << library << " error at " << GpuErrorWhere(file, line) << ": " << expr << ": " << error
      << " ";
}

GpuCheckFailure::~GpuCheckFailure() {
  std::fprintf(stderr, "l2l: %s\n", os_.str().c_str());
  std::fflush(stderr);
  std::abort();
}

Status CudaCallStatus(cudaError_t err, const char* file, int line, const char* expr) {
  // Clears the runtime's last-error slot so a later cudaGetLastError() (kernel
  // launch checks) does not report this, already handled, failure again.
  // Sticky errors cannot be cleared and keep reporting, as they should.
  cudaGetLastError();
  std::string message =
      "CUDA error at " + GpuErrorWhere(file, line) + ": " + expr + ": " + CudaErrorText(err);
  if (err == cudaErrorMemoryAllocation) return OutOfMemory(std::move(message));
  return Internal(std::move(message));
}

Status NcclCallStatus(const std::string& error, const char* file, int line, const char* expr) {
  return Internal("NCCL error at " + GpuErrorWhere(file, line) + ": " + expr + ": " + error);
}

}  // namespace internal

// ---------------------------------------------------------------------------
// Handles.

namespace {

const char* StreamName(StreamKind kind) {
  switch (kind) {
    case StreamKind::kCompute:
      return "compute stream";
    case StreamKind::kH2D:
      return "h2d stream";
    case StreamKind::kComm:
      return "comm stream";
  }
  return "unknown stream";
}

// Release paths run from destructors, possibly during process exit after the
// runtime has begun unloading; the memory goes with the context then.
bool RuntimeIsUnloading(cudaError_t err) { return err == cudaErrorCudartUnloading; }

}  // namespace

void CudaStreamDeleter::operator()(cudaStream_t s) const noexcept {
  if (s != nullptr) cudaStreamDestroy(s);
}
void CudaEventDeleter::operator()(cudaEvent_t e) const noexcept {
  if (e != nullptr) cudaEventDestroy(e);
}
void CudaMemPoolDeleter::operator()(cudaMemPool_t p) const noexcept {
  if (p != nullptr) cudaMemPoolDestroy(p);
}

StatusOr<int> CountCudaDevices() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return FailedPrecondition(
        "no CUDA device is visible (cudaGetDeviceCount: " + CudaErrorText(err) + ")");
  }
  if (count <= 0) {
    return FailedPrecondition("no CUDA device is visible (cudaGetDeviceCount returned 0)");
  }
  return count;
}

namespace {
// Whether a CudaDeviceGuard has made a device current on this thread before.
// On a thread that never chose one, cudaGetDevice reports 0 without a context
// behind it, and "restoring" 0 would create GPU 0's primary context (hundreds
// of MB) in every rank of a multi-GPU node. So a guard restores only a device
// that was chosen on this thread; otherwise it leaves its own current.
thread_local bool t_device_chosen = false;
}  // namespace

CudaDeviceGuard::CudaDeviceGuard(int ordinal) : ordinal_(ordinal) {
  if (!t_device_chosen || cudaGetDevice(&previous_) != cudaSuccess) {
    cudaGetLastError();
    previous_ = -1;
  }
  if (previous_ == ordinal_) return;
  const cudaError_t err = cudaSetDevice(ordinal_);
  if (!RuntimeIsUnloading(err)) L2L_CUDA_CHECK(err) << "making cuda:" << ordinal_ << " current";
  t_device_chosen = true;
}

CudaDeviceGuard::~CudaDeviceGuard() {
  if (previous_ >= 0 && previous_ != ordinal_) cudaSetDevice(previous_);
}

StatusOr<CudaStreamPtr> CreateCudaStream(int priority) {
  cudaStream_t s = nullptr;
  L2L_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithPriority(&s, cudaStreamNonBlocking, priority));
  return CudaStreamPtr(s);
}

namespace {

// Polls `query` (cudaStreamQuery / cudaEventQuery) until the work is done,
// calling the watchdog's check every period and enforcing its timeout.
template <typename Query>
void WatchedWait(const CudaWaitWatchdog& w, Query query, const std::string& what) {
  const auto start = std::chrono::steady_clock::now();
  auto next_check = start + CudaDevice::kWatchdogPeriod;
  const Status s =
      PollUntilDone(PollPolicy{64, std::chrono::microseconds(200)}, [&]() -> StatusOr<bool> {
        const cudaError_t q = query();
        if (q == cudaSuccess) return true;
        L2L_CUDA_CHECK(q == cudaErrorNotReady ? cudaSuccess : q) << "waiting for " << what;
        // "Not ready" is not an error; keep it out of the thread's last-error
        // slot, where a later launch check would find it.
        cudaGetLastError();
        const auto now = std::chrono::steady_clock::now();
        if (now >= next_check) {
          next_check = now + CudaDevice::kWatchdogPeriod;
          if (w.check) {
            const Status c = w.check();
            if (!c.ok()) return Internal("while waiting for " + what + ": " + c.message());
          }
          const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(now - start);
          if (w.timeout_ms > 0 && waited.count() > w.timeout_ms) {
            return Internal(
                what + " not complete after " + std::to_string(waited.count()) +
                " ms (the communicator's timeout); a peer rank may have failed or stopped");
          }
        }
        return false;
      });
  L2L_CHECK(s.ok()) << s.message();
}

}  // namespace

void CudaEvent::HostWait() {
  CudaDeviceGuard guard(ordinal_);
  if (watchdog_) {
    WatchedWait(
        *watchdog_, [&] { return cudaEventQuery(event_.get()); }, "a CUDA event");
    return;
  }
  L2L_CUDA_CHECK(cudaEventSynchronize(event_.get()));
}

double CudaEvent::SecondsSince(Event& earlier) {
  auto* e = dynamic_cast<CudaEvent*>(&earlier);
  L2L_CHECK(e != nullptr && e->ordinal_ == ordinal_) << "SecondsSince: event of another device";
  L2L_CHECK(timed_ && e->timed_) << "SecondsSince needs events from RecordTimedEvent";
  CudaDeviceGuard guard(ordinal_);
  float ms = 0;
  L2L_CUDA_CHECK(cudaEventElapsedTime(&ms, e->event_.get(), event_.get()));
  return ms * 1e-3;
}

// ---------------------------------------------------------------------------
// CudaDevice.

StatusOr<std::unique_ptr<CudaDevice>> CudaDevice::Create(const DeviceOptions& options) {
  StatusOr<int> count = CountCudaDevices();
  if (!count.ok()) {
    return FailedPrecondition("exec.device: cuda was requested but " + count.status().message() +
                              "; use exec.device: cpu, or check the driver and "
                              "CUDA_VISIBLE_DEVICES");
  }
  if (options.local_rank < 0) {
    return InvalidArgument("CudaDevice: local_rank must be >= 0, got " +
                           std::to_string(options.local_rank));
  }
  if (options.memory_limit_bytes < 0) {
    return InvalidArgument("CudaDevice: memory limit must be >= 0 bytes, got " +
                           std::to_string(options.memory_limit_bytes));
  }
  const int ordinal = options.local_rank % *count;
  if (options.local_rank >= *count) {
    L2L_LOG(Warning) << "local rank " << options.local_rank << " shares cuda:" << ordinal
                     << " with another rank (" << *count
                     << " visible GPUs); NCCL needs one GPU per rank";
  }
  std::unique_ptr<CudaDevice> dev(new CudaDevice(ordinal, options.memory_limit_bytes));
  RETURN_IF_ERROR(dev->Init());
  // Kernels launched later from this thread go to this GPU.
  L2L_CUDA_RETURN_IF_ERROR(cudaSetDevice(ordinal));
  return dev;
}

Status CudaDevice::Init() {
  CudaDeviceGuard guard(ordinal_);
  cudaDeviceProp prop{};
  L2L_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, ordinal_));
  name_ = "cuda:" + std::to_string(ordinal_) + " " + prop.name;

  int pools_supported = 0;
  L2L_CUDA_RETURN_IF_ERROR(
      cudaDeviceGetAttribute(&pools_supported, cudaDevAttrMemoryPoolsSupported, ordinal_));
  if (!pools_supported) {
    return FailedPrecondition(name_ +
                              " does not support stream-ordered memory pools "
                              "(cudaDevAttrMemoryPoolsSupported is 0); l2l needs them");
  }
  cudaMemPoolProps props{};
  props.allocType = cudaMemAllocationTypePinned;
  props.handleTypes = cudaMemHandleTypeNone;
  props.location.type = cudaMemLocationTypeDevice;
  props.location.id = ordinal_;
  cudaMemPool_t pool = nullptr;
  L2L_CUDA_RETURN_IF_ERROR(cudaMemPoolCreate(&pool, &props));
  pool_.reset(pool);
  // Keep freed memory in the pool: the relay frees and re-allocates the same
  // sizes, and returning memory to the driver would cost a synchronisation.
  uint64_t keep_all = std::numeric_limits<uint64_t>::max();
  L2L_CUDA_RETURN_IF_ERROR(
      cudaMemPoolSetAttribute(pool_.get(), cudaMemPoolAttrReleaseThreshold, &keep_all));

  // Numerically lower is higher priority; `greatest` is the most urgent.
  int least = 0, greatest = 0;
  L2L_CUDA_RETURN_IF_ERROR(cudaDeviceGetStreamPriorityRange(&least, &greatest));
  for (int s = 0; s < kNumStreams; ++s) {
    const int priority = static_cast<StreamKind>(s) == StreamKind::kComm ? greatest : 0;
    ASSIGN_OR_RETURN(streams_[s], CreateCudaStream(priority));
  }
  ASSIGN_OR_RETURN(memory_stream_, CreateCudaStream(0));
  for (int s = 0; s < kNumStreams; ++s) {
    cudaEvent_t e = nullptr;
    L2L_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    free_fences_[s].reset(e);
  }
  return OkStatus();
}

CudaDevice::~CudaDevice() {
  if (pool_ == nullptr) return;  // Init failed before anything was enqueued
  CudaDeviceGuard guard(ordinal_);
  for (const CudaStreamPtr& s : streams_) {
    if (s != nullptr) cudaStreamSynchronize(s.get());
  }
  if (memory_stream_ != nullptr) cudaStreamSynchronize(memory_stream_.get());
  cudaGetLastError();
}

StatusOr<DeviceBuffer> CudaDevice::Allocate(size_t bytes, std::string_view what) {
  RETURN_IF_ERROR(arena_.Reserve(static_cast<int64_t>(bytes), what, "device " + name_));
  CudaDeviceGuard guard(ordinal_);
  // A zero-byte request still gets a distinct, non-null pointer, as on the
  // CPU backend; the arena counts the requested 0 bytes.
  const size_t physical = bytes == 0 ? 1 : bytes;
  void* p = nullptr;
  cudaError_t err = cudaMallocFromPoolAsync(&p, physical, pool_.get(), memory_stream_.get());
  if (err == cudaSuccess) err = cudaStreamSynchronize(memory_stream_.get());
  if (err != cudaSuccess) {
    cudaGetLastError();
    arena_.Release(static_cast<int64_t>(bytes));
    if (err != cudaErrorMemoryAllocation) {
      L2L_CUDA_CHECK(err) << "allocating " << bytes << " bytes for " << what;
    }
    size_t free_bytes = 0, total_bytes = 0;
    const bool have_info = cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess;
    cudaGetLastError();
    const MemoryStats st = arena_.stats();
    return OutOfMemory(
        "device " + name_ + " out of GPU memory: cannot allocate " +
        FormatBytes(static_cast<int64_t>(bytes)) + " for " + std::string(what) + " (" +
        FormatBytes(st.in_use_bytes) + " in use, exec.device_memory_limit is " +
        (st.limit_bytes > 0 ? FormatBytes(st.limit_bytes) : std::string("not set")) +
        (have_info ? "; the GPU has " + FormatBytes(static_cast<int64_t>(free_bytes)) +
                         " free of " + FormatBytes(static_cast<int64_t>(total_bytes))
                   : std::string()) +
        "; " + CudaErrorText(err) + ")");
  }
  return DeviceBuffer(this, p, bytes);
}

void CudaDevice::Free(void* data, size_t size_bytes) {
  {
    CudaDeviceGuard guard(ordinal_);
    std::lock_guard<std::mutex> lock(free_mu_);
    // The buffer may still be read or written by work already queued on any
    // of the three streams: the free waits for all of them, on the GPU.
    cudaError_t err = cudaSuccess;
    for (int s = 0; s < kNumStreams && err == cudaSuccess; ++s) {
      err = cudaEventRecord(free_fences_[s].get(), streams_[s].get());
      if (err == cudaSuccess)
        err = cudaStreamWaitEvent(memory_stream_.get(), free_fences_[s].get(), 0);
    }
    if (err == cudaSuccess) err = cudaFreeAsync(data, memory_stream_.get());
    if (!RuntimeIsUnloading(err)) {
      L2L_CUDA_CHECK(err) << "releasing " << size_bytes << " bytes on " << name_;
    }
  }
  arena_.Release(static_cast<int64_t>(size_bytes));
}

StatusOr<HostBuffer> CudaDevice::AllocatePinned(size_t bytes, std::string_view what) {
  CudaDeviceGuard guard(ordinal_);
  void* p = nullptr;
  const cudaError_t err = cudaHostAlloc(&p, bytes == 0 ? 1 : bytes, cudaHostAllocPortable);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return OutOfMemory("pinned host allocation of " + FormatBytes(static_cast<int64_t>(bytes)) +
                       " for " + std::string(what) + " failed (" + CudaErrorText(err) +
                       "); lower the host stash or EPS footprint, or raise the locked-memory "
                       "limit (ulimit -l)");
  }
  return HostBuffer(this, p, bytes);
}

void CudaDevice::FreePinned(void* data, size_t size_bytes) {
  CudaDeviceGuard guard(ordinal_);
  // An in-flight copy may still read or write this memory.
  for (const CudaStreamPtr& s : streams_) {
    const cudaError_t err = cudaStreamSynchronize(s.get());
    if (RuntimeIsUnloading(err)) return;
    L2L_CUDA_CHECK(err) << "draining streams before releasing " << size_bytes << " pinned bytes on "
                        << name_;
  }
  const cudaError_t err = cudaFreeHost(data);
  if (!RuntimeIsUnloading(err))
    L2L_CUDA_CHECK(err) << "releasing " << size_bytes << " pinned bytes";
}

void CudaDevice::CopyH2D(void* dst, const void* src, size_t bytes, StreamKind stream) {
  if (bytes == 0) return;
  CudaDeviceGuard guard(ordinal_);
  L2L_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, this->stream(stream)))
      << "CopyH2D of " << bytes << " bytes on the " << StreamName(stream);
}

void CudaDevice::CopyD2H(void* dst, const void* src, size_t bytes, StreamKind stream) {
  if (bytes == 0) return;
  CudaDeviceGuard guard(ordinal_);
  L2L_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, this->stream(stream)))
      << "CopyD2H of " << bytes << " bytes on the " << StreamName(stream);
}

void CudaDevice::CopyD2D(void* dst, const void* src, size_t bytes, StreamKind stream) {
  if (bytes == 0 || dst == src) return;
  CudaDeviceGuard guard(ordinal_);
  L2L_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, this->stream(stream)))
      << "CopyD2D of " << bytes << " bytes on the " << StreamName(stream);
}

void CudaDevice::Memset(void* dst, int value, size_t bytes, StreamKind stream) {
  if (bytes == 0) return;
  CudaDeviceGuard guard(ordinal_);
  L2L_CUDA_CHECK(cudaMemsetAsync(dst, value, bytes, this->stream(stream)))
      << "Memset of " << bytes << " bytes on the " << StreamName(stream);
}

namespace {
std::unique_ptr<Event> Record(int ordinal, cudaStream_t stream, const char* stream_name, bool timed,
                              std::shared_ptr<const CudaWaitWatchdog> watchdog) {
  CudaDeviceGuard guard(ordinal);
  cudaEvent_t e = nullptr;
  L2L_CUDA_CHECK(cudaEventCreateWithFlags(&e, timed ? cudaEventDefault : cudaEventDisableTiming));
  CudaEventPtr owned(e);
  L2L_CUDA_CHECK(cudaEventRecord(e, stream)) << "on the " << stream_name;
  return std::make_unique<CudaEvent>(ordinal, std::move(owned), timed, std::move(watchdog));
}
}  // namespace

std::unique_ptr<Event> CudaDevice::RecordEvent(StreamKind stream) {
  return Record(ordinal_, this->stream(stream), StreamName(stream), false, watchdog());
}

std::unique_ptr<Event> CudaDevice::RecordTimedEvent(StreamKind stream) {
  return Record(ordinal_, this->stream(stream), StreamName(stream), true, watchdog());
}

void CudaDevice::StreamWaitEvent(StreamKind stream, Event& event) {
  auto* cuda_event = dynamic_cast<CudaEvent*>(&event);
  L2L_CHECK(cuda_event != nullptr)
      << "StreamWaitEvent on " << name_ << " got an event from another backend";
  L2L_CHECK_EQ(cuda_event->ordinal(), ordinal_) << "event from another GPU";
  CudaDeviceGuard guard(ordinal_);
  L2L_CUDA_CHECK(cudaStreamWaitEvent(this->stream(stream), cuda_event->handle(), 0))
      << "on the " << StreamName(stream);
}

void CudaDevice::SynchronizeStream(StreamKind stream) {
  CudaDeviceGuard guard(ordinal_);
  if (const auto w = watchdog()) {
    cudaStream_t s = this->stream(stream);
    WatchedWait(
        *w, [s] { return cudaStreamQuery(s); }, std::string("the ") + StreamName(stream));
    return;
  }
  L2L_CUDA_CHECK(cudaStreamSynchronize(this->stream(stream))) << "on the " << StreamName(stream);
}

std::shared_ptr<const CudaWaitWatchdog> CudaDevice::SetWaitWatchdog(
    std::shared_ptr<const CudaWaitWatchdog> watchdog) {
  std::lock_guard<std::mutex> lock(watchdog_mu_);
  return std::exchange(watchdog_, std::move(watchdog));
}

void CudaDevice::RestoreWaitWatchdog(const CudaWaitWatchdog* mine,
                                     std::shared_ptr<const CudaWaitWatchdog> previous) {
  std::lock_guard<std::mutex> lock(watchdog_mu_);
  if (watchdog_.get() == mine) watchdog_ = std::move(previous);
}

std::shared_ptr<const CudaWaitWatchdog> CudaDevice::watchdog() const {
  std::lock_guard<std::mutex> lock(watchdog_mu_);
  return watchdog_;
}

}  // namespace l2l
