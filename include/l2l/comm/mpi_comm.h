// MPI runtime and the MPI communicator over host buffers.
#pragma once

#include <mpi.h>

#include "l2l/comm/comm.h"

namespace l2l {

// RAII for MPI_Init_thread / MPI_Finalize (MPI_THREAD_FUNNELED: only the
// thread that created the runtime calls MPI). Sets the log rank. One per
// process; create it first in main().
class MpiRuntime {
 public:
  MpiRuntime(int* argc, char*** argv);
  ~MpiRuntime();
  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;

  int world_rank() const { return rank_; }
  int world_size() const { return size_; }
  // Rank within this node (MPI_Comm_split_type shared): picks the GPU.
  int local_rank() const { return local_rank_; }
  int local_size() const { return local_size_; }

  // Last resort: print `message` and abort the whole job.
  [[noreturn]] static void AbortJob(const std::string& message, int code);

 private:
  int rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1;
};

// Owns a duplicate of the given communicator (so library traffic never mixes
// with a caller's). Error handler MPI_ERRORS_RETURN: failures come back as
// Status, naming the call and rank.
//
// kBF16 is gathered and broadcast as 16-bit words (MPI_UINT16_T, bit-exact);
// ReduceScatter and AllReduce of kBF16 return InvalidArgument on every rank
// without communicating (MPI has no bf16 arithmetic): reduce in fp32.
class MpiComm final : public Comm {
 public:
  explicit MpiComm(MPI_Comm parent = MPI_COMM_WORLD);
  ~MpiComm() override;
  MpiComm(const MpiComm&) = delete;
  MpiComm& operator=(const MpiComm&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  MPI_Comm handle() const { return comm_; }

  Status AllGather(const void* send, void* recv, size_t count_per_rank, CommDType dtype) override;
  Status ReduceScatter(const void* send, void* recv, size_t count_per_rank, CommDType dtype,
                       ReduceOp op) override;
  Status AllReduce(const void* send, void* recv, size_t count, CommDType dtype,
                   ReduceOp op) override;
  Status Broadcast(void* buf, size_t count, CommDType dtype, int root) override;
  Status Barrier() override;

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
};

}  // namespace l2l
