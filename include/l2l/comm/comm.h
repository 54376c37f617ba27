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

enum class CommDType { kF32, kF64, kI32, kI64, kU8 };
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

  // Ranks agree before they fail (DESIGN §7): every rank passes its local
  // status; all ranks return the same status — OK if every rank was OK,
  // otherwise the failing status of the lowest failing rank (its code and
  // message, broadcast). Collective.
  Status Agree(const Status& local);

  // Sends `root`'s string to every rank (resizing the others'). Collective.
  Status BroadcastString(std::string* s, int root);
};

}  // namespace l2l
