// Comm: the collectives the EPS and the trainer need. `MpiComm` works on host
// buffers; an `NcclComm` (CUDA backend) will work on device buffers.
//
// Contract: every call is collective over the communicator: all ranks call it
// in the same order with the same counts. Counts are in ELEMENTS of `dtype`.
// Calls block until the local result is complete. A failure returns Internal
// naming the call and the rank; callers treat it as fatal for the job.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "l2l/core/status.h"

namespace l2l {

// kBF16: 2-byte words with the bit pattern of core/dtype.h's bf16 (F32ToBF16).
// Every Comm moves them (AllGather, Broadcast) bit for bit; whether a Comm can
// also REDUCE them is its own: NcclComm reduces bf16 (ncclBfloat16), MpiComm
// does not (InvalidArgument; reduce in fp32).
enum class CommDType { kF32, kF64, kI32, kI64, kU64, kU8, kBF16 };
enum class ReduceOp { kSum, kMax, kMin };
size_t CommDTypeSizeBytes(CommDType t);

class Comm {
 public:
  virtual ~Comm() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;

  // recv[r*count, (r+1)*count) = rank r's send. If send == recv + rank*count
  // the call is in place.
  virtual Status AllGather(const void* send, void* recv, size_t count_per_rank,
                           CommDType dtype) = 0;
  // recv[0, count) on rank r = reduction over ranks of send[r*count, (r+1)*count).
  // send may equal recv (in place: the result lands at the start of the buffer).
  virtual Status ReduceScatter(const void* send, void* recv, size_t count_per_rank, CommDType dtype,
                               ReduceOp op) = 0;
  // send may equal recv (in place).
  virtual Status AllReduce(const void* send, void* recv, size_t count, CommDType dtype,
                           ReduceOp op) = 0;
  virtual Status Broadcast(void* buf, size_t count, CommDType dtype, int root) = 0;
  virtual Status Barrier() = 0;

  // Stream-ordered forms of AllGather, ReduceScatter and AllReduce for
  // overlapped transfers (same arguments and in-place rules). A communicator
  // bound to a device stream (NcclComm: the device's kComm stream) enqueues
  // the collective there after the work already on that stream and returns;
  // the caller orders it with events on that stream. The default, for
  // communicators on host memory (MpiComm), is the blocking call: complete
  // on return, which is what "enqueued" means on the CPU backend.
  virtual Status AllGatherEnqueue(const void* send, void* recv, size_t count_per_rank,
                                  CommDType dtype) {
    return AllGather(send, recv, count_per_rank, dtype);
  }
  virtual Status ReduceScatterEnqueue(const void* send, void* recv, size_t count_per_rank,
                                      CommDType dtype, ReduceOp op) {
    return ReduceScatter(send, recv, count_per_rank, dtype, op);
  }
  virtual Status AllReduceEnqueue(const void* send, void* recv, size_t count, CommDType dtype,
                                  ReduceOp op) {
    return AllReduce(send, recv, count, dtype, op);
  }

  // Ranks agree before they fail (DESIGN §7): every rank passes its local
  // status; all ranks return the same status — OK if every rank was OK,
  // otherwise the failing status of the lowest failing rank (its code and
  // message, broadcast). Collective.
  Status Agree(const Status& local);

  // Sends `root`'s string to every rank (resizing the others'). Collective.
  Status BroadcastString(std::string* s, int root);
};

}  // namespace l2l
