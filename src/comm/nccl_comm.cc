// NcclComm: collectives on device buffers. Why it looks the way it does:
// NCCL calls only enqueue, and a peer that fails or never arrives leaves this
// rank's kernels spinning forever, so every wait here polls the stream and
// ncclCommGetAsyncError with a deadline, and any failure aborts the
// communicator instead of leaving the ranks out of step. Contract in
// nccl_comm.h.
#include "l2l/comm/nccl_comm.h"

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <utility>

#include "l2l/core/check.h"
#include "l2l/device/cuda_check.h"
#include "l2l/device/poll.h"

namespace l2l {
namespace {

ncclDataType_t ToNccl(CommDType t) {
  switch (t) {
    case CommDType::kF32:
      return ncclFloat32;
    case CommDType::kF64:
      return ncclFloat64;
    case CommDType::kI32:
      return ncclInt32;
    case CommDType::kI64:
      return ncclInt64;
    case CommDType::kU64:
      return ncclUint64;
    case CommDType::kU8:
      return ncclUint8;
    case CommDType::kBF16:
      return ncclBfloat16;
  }
  L2L_CHECK(false) << "unknown CommDType " << static_cast<int>(t);
  return ncclUint8;
}

ncclRedOp_t ToNccl(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return ncclSum;
    case ReduceOp::kMax:
      return ncclMax;
    case ReduceOp::kMin:
      return ncclMin;
  }
  L2L_CHECK(false) << "unknown ReduceOp " << static_cast<int>(op);
  return ncclSum;
}

// Polling (device/poll.h): many short spins first, so short collectives
// return promptly.
constexpr PollPolicy kWaitPolicy{2000, std::chrono::microseconds(100)};

// Transient device memory for staging host buffers, stream-ordered on the
// communication stream: allocated before the copies in, released after the
// copies out, on every path.
class Staging {
 public:
  explicit Staging(cudaStream_t s) : stream_(s) {}
  ~Staging() {
    if (data_ != nullptr) cudaFreeAsync(data_, stream_);
  }
  Staging(const Staging&) = delete;
  Staging& operator=(const Staging&) = delete;
  cudaError_t Allocate(size_t bytes) {
    const cudaError_t err = cudaMallocAsync(&data_, bytes, stream_);
    if (err != cudaSuccess) data_ = nullptr;
    return err;
  }
  char* data() const { return static_cast<char*>(data_); }

 private:
  cudaStream_t stream_;
  void* data_ = nullptr;
};

std::string NcclText(ncclResult_t r, ncclComm_t comm) {
  std::string text = ncclGetErrorString(r);
  const char* last = ncclGetLastError(comm);
  if (last != nullptr && *last != '\0') text += std::string(" (") + last + ")";
  return text;
}

std::string PointerText(const void* p) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%p", p);
  return buf;
}

}  // namespace

void NcclComm::DeviceWordDeleter::operator()(void* p) const noexcept {
  if (p != nullptr) cudaFree(p);
}

StatusOr<std::unique_ptr<NcclComm>> NcclComm::Create(MpiComm& mpi, CudaDevice& device,
                                                     const NcclCommOptions& options) {
  CudaDeviceGuard guard(device.ordinal());
  const std::string where = " on rank " + std::to_string(mpi.rank()) + " (" + device.name() + ")";

  ncclUniqueId id;
  std::memset(&id, 0, sizeof id);
  Status local;
  if (mpi.rank() == 0) {
    const ncclResult_t r = ncclGetUniqueId(&id);
    if (r != ncclSuccess)
      local = Internal("ncclGetUniqueId failed" + where + ": " + NcclText(r, nullptr));
  }
  RETURN_IF_ERROR(mpi.Agree(local));
  RETURN_IF_ERROR(mpi.Broadcast(&id, sizeof id, CommDType::kU8, 0));

  void* word = nullptr;
  cudaError_t err = cudaMalloc(&word, sizeof(int32_t));
  if (err == cudaSuccess) err = cudaMemset(word, 0, sizeof(int32_t));
  DeviceWord barrier_word(word);
  if (err != cudaSuccess) {
    cudaGetLastError();
    local =
        Internal("allocating NcclComm's barrier word failed" + where + ": " + CudaErrorText(err));
  }
  // Every rank takes part in the agreement below even if its own setup failed,
  // so none is left waiting in ncclCommInitRank for a rank that will not come.
  RETURN_IF_ERROR(mpi.Agree(local));

  ncclComm_t comm = nullptr;
  const ncclResult_t r = ncclCommInitRank(&comm, mpi.size(), id, mpi.rank());
  if (r != ncclSuccess) {
    local = Internal("ncclCommInitRank(nranks=" + std::to_string(mpi.size()) + ") failed" + where +
                     ": " + NcclText(r, comm) +
                     " (two ranks on one GPU? see CudaDevice: GPU = local_rank % visible GPUs)");
  }
  Status agreed = mpi.Agree(local);
  if (!agreed.ok()) {
    // Also frees a half-built communicator that a failed init may return.
    if (comm != nullptr) ncclCommAbort(comm);
    return agreed;
  }
  return std::unique_ptr<NcclComm>(
      new NcclComm(device, comm, std::move(barrier_word), mpi.rank(), mpi.size(), options));
}

NcclComm::NcclComm(CudaDevice& device, ncclComm_t comm, DeviceWord barrier_word, int rank, int size,
                   const NcclCommOptions& options)
    : device_(device),
      comm_(comm),
      barrier_word_(std::move(barrier_word)),
      rank_(rank),
      size_(size),
      options_(options),
      watch_(std::make_shared<WatchState>()) {
  watch_->comm = comm;
  // Host waits on the device (the relay's loss read, the optimizer threads'
  // waits for gradient shards) then notice an asynchronous NCCL error or a
  // stuck peer instead of blocking forever.
  auto watchdog = std::make_shared<CudaWaitWatchdog>();
  const std::string where = " on rank " + std::to_string(rank) + " of " + std::to_string(size);
  // Only asynchronous NCCL errors: a failure returned as a Status (bad
  // arguments, a blocking call's timeout) is the caller's to agree on, and
  // the communicator it aborted no longer has kernels to wait for.
  watchdog->check = [state = watch_, where]() -> Status {
    std::lock_guard<std::mutex> lock(state->mu);
    if (state->comm == nullptr) return OkStatus();
    ncclResult_t async = ncclSuccess;
    if (ncclCommGetAsyncError(state->comm, &async) == ncclSuccess && async != ncclSuccess &&
        async != ncclInProgress) {
      return Internal("asynchronous NCCL error" + where + ": " + ncclGetErrorString(async));
    }
    return OkStatus();
  };
  // No time limit here: a host wait can legitimately span a whole step (at
  // hundreds of layers and a large batch, many minutes), unlike the blocking
  // collectives that options.timeout_ms bounds.
  watchdog->timeout_ms = 0;
  watchdog_ = watchdog;
  previous_watchdog_ = device_.SetWaitWatchdog(std::move(watchdog));
}

NcclComm::~NcclComm() {
  device_.RestoreWaitWatchdog(watchdog_.get(), std::move(previous_watchdog_));
  {
    std::lock_guard<std::mutex> lock(watch_->mu);
    watch_->comm = nullptr;
  }
  if (comm_ == nullptr) return;
  CudaDeviceGuard guard(device_.ordinal());
  // Collectives still in flight must finish (or fail, which aborts) first.
  if (!Wait(device_.stream(StreamKind::kComm), "~NcclComm").ok()) return;
  ncclCommDestroy(comm_);
  comm_ = nullptr;
}

// ---------------------------------------------------------------------------
// Errors.

std::string NcclComm::Describe(const std::string& call, const std::string& detail) const {
  return call + " failed on rank " + std::to_string(rank_) + " of " + std::to_string(size_) + " (" +
         device_.name() + "): " + detail;
}

Status NcclComm::Fail(StatusCode code, const std::string& call, const std::string& detail) {
  std::string message = Describe(call, detail);
  std::lock_guard<std::mutex> lock(watch_->mu);  // the watchdog must not look meanwhile
  if (comm_ != nullptr) {
    ncclCommAbort(comm_);
    comm_ = nullptr;
    watch_->comm = nullptr;
    message += "; the NCCL communicator was aborted";
  }
  Status st(code, std::move(message));
  if (broken_.ok()) broken_ = st;
  return st;
}

Status NcclComm::FailNccl(const std::string& call, ncclResult_t r) {
  return Fail(StatusCode::kInternal, call, NcclText(r, comm_));
}

Status NcclComm::FailCuda(const std::string& call, cudaError_t err) {
  cudaGetLastError();
  return Fail(err == cudaErrorMemoryAllocation ? StatusCode::kOutOfMemory : StatusCode::kInternal,
              call, CudaErrorText(err));
}

Status NcclComm::Usable(const std::string& call) const {
  if (broken_.ok()) return OkStatus();
  return Status(
      broken_.code(),
      call + " on rank " + std::to_string(rank_) +
          ": the NCCL communicator was aborted after an earlier failure: " + broken_.message());
}

Status NcclComm::CheckAsyncError(const std::string& call) {
  RETURN_IF_ERROR(Usable(call));
  ncclResult_t async = ncclSuccess;
  const ncclResult_t r = ncclCommGetAsyncError(comm_, &async);
  if (r != ncclSuccess) return FailNccl(call + " (ncclCommGetAsyncError)", r);
  if (async != ncclSuccess && async != ncclInProgress) {
    return Fail(StatusCode::kInternal, call, "asynchronous NCCL error: " + NcclText(async, comm_));
  }
  return OkStatus();
}

Status NcclComm::Wait(cudaStream_t stream, const std::string& what) {
  RETURN_IF_ERROR(Usable(what));
  CudaDeviceGuard guard(device_.ordinal());
  const auto start = std::chrono::steady_clock::now();
  return PollUntilDone(kWaitPolicy, [&]() -> StatusOr<bool> {
    const cudaError_t q = cudaStreamQuery(stream);
    if (q == cudaSuccess) return true;
    if (q != cudaErrorNotReady) return FailCuda(what, q);
    RETURN_IF_ERROR(CheckAsyncError(what));
    if (options_.timeout_ms > 0) {
      const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(
          std::chrono::steady_clock::now() - start);
      if (waited.count() > options_.timeout_ms) {
        return Fail(StatusCode::kInternal, what,
                    "not complete after " + std::to_string(waited.count()) +
                        " ms (NcclCommOptions::timeout_ms); a peer rank may have failed or "
                        "not called the same collective");
      }
    }
    return false;
  });
}

// ---------------------------------------------------------------------------
// Buffers and ordering.

NcclComm::Memory NcclComm::Classify(const void* p) const {
  cudaPointerAttributes attr{};
  if (cudaPointerGetAttributes(&attr, p) != cudaSuccess) {
    cudaGetLastError();
    return Memory::kHost;  // not known to CUDA at all
  }
  switch (attr.type) {
    case cudaMemoryTypeDevice:
      return attr.device == device_.ordinal() ? Memory::kThisDevice : Memory::kOtherDevice;
    case cudaMemoryTypeManaged:
      return Memory::kThisDevice;
    case cudaMemoryTypeHost:
    case cudaMemoryTypeUnregistered:
      return Memory::kHost;
  }
  return Memory::kHost;
}

Status NcclComm::RequireDevicePointers(const std::string& call, const void* a, const void* b) {
  for (const void* p : {a, b}) {
    if (Classify(p) != Memory::kThisDevice) {
      return Fail(StatusCode::kInvalidArgument, call,
                  "buffer " + PointerText(p) +
                      " is not device memory of this GPU (the *Async calls take device buffers "
                      "only; the blocking calls stage host buffers)");
    }
  }
  return OkStatus();
}

void NcclComm::OrderAfterDeviceWork() {
  for (StreamKind k : {StreamKind::kCompute, StreamKind::kH2D}) {
    std::unique_ptr<Event> e = device_.RecordEvent(k);
    device_.StreamWaitEvent(StreamKind::kComm, *e);
  }
}

// ---------------------------------------------------------------------------
// Enqueue.

Status NcclComm::EnqueueAllGather(const void* send, void* recv, size_t count, CommDType dtype,
                                  cudaStream_t s) {
  const ncclResult_t r = ncclAllGather(send, recv, count, ToNccl(dtype), comm_, s);
  return r == ncclSuccess ? OkStatus() : FailNccl("ncclAllGather", r);
}

Status NcclComm::EnqueueReduceScatter(const void* send, void* recv, size_t count, CommDType dtype,
                                      ReduceOp op, cudaStream_t s) {
  if (send != recv) {
    const ncclResult_t r =
        ncclReduceScatter(send, recv, count, ToNccl(dtype), ToNccl(op), comm_, s);
    return r == ncclSuccess ? OkStatus() : FailNccl("ncclReduceScatter", r);
  }
  // Comm's in-place form (result at the start) from NCCL's (result at rank's
  // slice): the slices do not overlap for rank > 0.
  char* base = static_cast<char*>(recv);
  const size_t slice_bytes = count * CommDTypeSizeBytes(dtype);
  char* mine = base + rank_ * slice_bytes;
  const ncclResult_t r = ncclReduceScatter(base, mine, count, ToNccl(dtype), ToNccl(op), comm_, s);
  if (r != ncclSuccess) return FailNccl("ncclReduceScatter", r);
  if (rank_ == 0) return OkStatus();
  return EnqueueCopy("ncclReduceScatter (in place)", base, mine, slice_bytes, s);
}

Status NcclComm::EnqueueAllReduce(const void* send, void* recv, size_t count, CommDType dtype,
                                  ReduceOp op, cudaStream_t s) {
  const ncclResult_t r = ncclAllReduce(send, recv, count, ToNccl(dtype), ToNccl(op), comm_, s);
  return r == ncclSuccess ? OkStatus() : FailNccl("ncclAllReduce", r);
}

Status NcclComm::EnqueueBroadcast(const void* send, void* recv, size_t count, CommDType dtype,
                                  int root, cudaStream_t s) {
  if (root < 0 || root >= size_) {
    return Fail(StatusCode::kInvalidArgument, "ncclBroadcast",
                "root " + std::to_string(root) + " is not a rank of " + std::to_string(size_));
  }
  const ncclResult_t r = ncclBroadcast(send, recv, count, ToNccl(dtype), root, comm_, s);
  return r == ncclSuccess ? OkStatus() : FailNccl("ncclBroadcast", r);
}

Status NcclComm::EnqueueCopy(const std::string& call, void* dst, const void* src, size_t bytes,
                             cudaStream_t s) {
  const cudaError_t err = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, s);
  return err == cudaSuccess ? OkStatus() : FailCuda(call, err);
}

// ---------------------------------------------------------------------------
// Async variants: checks, then enqueue.

Status NcclComm::AllGatherAsync(const void* send, void* recv, size_t count_per_rank,
                                CommDType dtype, cudaStream_t stream) {
  RETURN_IF_ERROR(Usable("ncclAllGather"));
  if (count_per_rank == 0) return OkStatus();
  CudaDeviceGuard guard(device_.ordinal());
  RETURN_IF_ERROR(RequireDevicePointers("ncclAllGather", send, recv));
  return EnqueueAllGather(send, recv, count_per_rank, dtype, stream);
}

Status NcclComm::ReduceScatterAsync(const void* send, void* recv, size_t count_per_rank,
                                    CommDType dtype, ReduceOp op, cudaStream_t stream) {
  RETURN_IF_ERROR(Usable("ncclReduceScatter"));
  if (count_per_rank == 0) return OkStatus();
  CudaDeviceGuard guard(device_.ordinal());
  RETURN_IF_ERROR(RequireDevicePointers("ncclReduceScatter", send, recv));
  return EnqueueReduceScatter(send, recv, count_per_rank, dtype, op, stream);
}

Status NcclComm::AllReduceAsync(const void* send, void* recv, size_t count, CommDType dtype,
                                ReduceOp op, cudaStream_t stream) {
  RETURN_IF_ERROR(Usable("ncclAllReduce"));
  if (count == 0) return OkStatus();
  CudaDeviceGuard guard(device_.ordinal());
  RETURN_IF_ERROR(RequireDevicePointers("ncclAllReduce", send, recv));
  return EnqueueAllReduce(send, recv, count, dtype, op, stream);
}

Status NcclComm::BroadcastAsync(const void* send, void* recv, size_t count, CommDType dtype,
                                int root, cudaStream_t stream) {
  RETURN_IF_ERROR(Usable("ncclBroadcast"));
  if (count == 0) return OkStatus();
  CudaDeviceGuard guard(device_.ordinal());
  // send is read on the root only (NCCL ignores it elsewhere).
  RETURN_IF_ERROR(RequireDevicePointers("ncclBroadcast", rank_ == root ? send : recv, recv));
  return EnqueueBroadcast(send, recv, count, dtype, root, stream);
}

// ---------------------------------------------------------------------------
// Blocking Comm interface: fence, enqueue on kComm, wait. A host buffer on
// either side sends the call through device staging memory, where it runs in
// place.

Status NcclComm::RunBlocking(const std::string& call, size_t count, const void* send, void* recv,
                             const StagingPlan& plan, const EnqueueFn& enqueue) {
  RETURN_IF_ERROR(Usable(call));
  if (count == 0) return OkStatus();
  CudaDeviceGuard guard(device_.ordinal());
  cudaStream_t s = device_.stream(StreamKind::kComm);
  const Memory ms = Classify(send), mr = Classify(recv);
  if (ms == Memory::kOtherDevice || mr == Memory::kOtherDevice) {
    return RequireDevicePointers(call, send, recv);
  }
  OrderAfterDeviceWork();
  if (ms == Memory::kThisDevice && mr == Memory::kThisDevice) {
    RETURN_IF_ERROR(enqueue(send, recv, s));
    return Wait(s, call);
  }
  Staging tmp(s);
  if (cudaError_t err = tmp.Allocate(plan.staging_bytes); err != cudaSuccess) {
    return FailCuda(call, err);
  }
  char* in = tmp.data() + plan.in_offset_bytes;
  if (plan.in_bytes > 0) RETURN_IF_ERROR(EnqueueCopy(call, in, send, plan.in_bytes, s));
  RETURN_IF_ERROR(enqueue(in, tmp.data(), s));
  RETURN_IF_ERROR(Wait(s, call));
  RETURN_IF_ERROR(EnqueueCopy(call, recv, tmp.data(), plan.out_bytes, s));
  return Wait(s, call);
}

Status NcclComm::AllGather(const void* send, void* recv, size_t count_per_rank, CommDType dtype) {
  // Staged: this rank's slice goes to its place in the staging buffer, the
  // gather runs in place (NCCL's in-place form), and all slices come back.
  const size_t slice = count_per_rank * CommDTypeSizeBytes(dtype);
  const StagingPlan plan{slice * size_, rank_ * slice, slice, slice * size_};
  return RunBlocking("ncclAllGather", count_per_rank, send, recv, plan,
                     [&](const void* in, void* out, cudaStream_t s) {
                       return EnqueueAllGather(in, out, count_per_rank, dtype, s);
                     });
}

Status NcclComm::ReduceScatter(const void* send, void* recv, size_t count_per_rank, CommDType dtype,
                               ReduceOp op) {
  // Staged: all slices go in, the reduction runs in place (result at the
  // start, Comm's in-place form), and one slice comes back.
  const size_t slice = count_per_rank * CommDTypeSizeBytes(dtype);
  const StagingPlan plan{slice * size_, 0, slice * size_, slice};
  return RunBlocking("ncclReduceScatter", count_per_rank, send, recv, plan,
                     [&](const void* in, void* out, cudaStream_t s) {
                       return EnqueueReduceScatter(in, out, count_per_rank, dtype, op, s);
                     });
}

Status NcclComm::AllReduce(const void* send, void* recv, size_t count, CommDType dtype,
                           ReduceOp op) {
  const size_t bytes = count * CommDTypeSizeBytes(dtype);
  const StagingPlan plan{bytes, 0, bytes, bytes};
  return RunBlocking("ncclAllReduce", count, send, recv, plan,
                     [&](const void* in, void* out, cudaStream_t s) {
                       return EnqueueAllReduce(in, out, count, dtype, op, s);
                     });
}

Status NcclComm::Broadcast(void* buf, size_t count, CommDType dtype, int root) {
  // Staged: only the root's data goes in (NCCL reads send on the root only).
  const size_t bytes = count * CommDTypeSizeBytes(dtype);
  const StagingPlan plan{bytes, 0, rank_ == root ? bytes : 0, bytes};
  return RunBlocking("ncclBroadcast", count, buf, buf, plan,
                     [&](const void* in, void* out, cudaStream_t s) {
                       return EnqueueBroadcast(in, out, count, dtype, root, s);
                     });
}

Status NcclComm::Barrier() {
  const std::string call = "NcclComm::Barrier";
  RETURN_IF_ERROR(Usable(call));
  CudaDeviceGuard guard(device_.ordinal());
  cudaStream_t s = device_.stream(StreamKind::kComm);
  OrderAfterDeviceWork();
  // Max keeps the word at 0 however many barriers run.
  RETURN_IF_ERROR(EnqueueAllReduce(barrier_word_.get(), barrier_word_.get(), 1, CommDType::kI32,
                                   ReduceOp::kMax, s));
  return Wait(s, call);
}

}  // namespace l2l
