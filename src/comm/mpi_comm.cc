#include "l2l/comm/mpi_comm.h"

#include <cstdio>
#include <cstdlib>
#include <string>

#include "l2l/core/check.h"

namespace l2l {
namespace {

MPI_Datatype ToMpi(CommDType t) {
  switch (t) {
    case CommDType::kF32:
      return MPI_FLOAT;
    case CommDType::kF64:
      return MPI_DOUBLE;
    case CommDType::kI32:
      return MPI_INT32_T;
    case CommDType::kI64:
      return MPI_INT64_T;
    case CommDType::kU64:
      return MPI_UINT64_T;
    case CommDType::kU8:
      return MPI_UINT8_T;
    case CommDType::kBF16:
      // Moved as opaque 16-bit words: right for AllGather and Broadcast, wrong
      // for reductions, which RejectBF16Reduction() keeps away from here.
      return MPI_UINT16_T;
  }
  return MPI_DATATYPE_NULL;
}

// MPI has no bf16 arithmetic (MPI_UINT16_T would add the bit patterns as
// integers), so bf16 reductions are refused and callers reduce in fp32. Every
// rank passes the same dtype, so every rank returns this before entering MPI:
// no rank is left waiting in a collective.
Status RejectBF16Reduction(CommDType dtype, const char* call) {
  if (dtype != CommDType::kBF16) return OkStatus();
  return InvalidArgument(std::string(call) +
                         ": bf16 reductions are not supported by MpiComm; reduce in fp32");
}

MPI_Op ToMpi(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return MPI_SUM;
    case ReduceOp::kMax:
      return MPI_MAX;
    case ReduceOp::kMin:
      return MPI_MIN;
  }
  return MPI_OP_NULL;
}

// MPI counts are int; l2l counts are size_t. Large layers stay below 2^31
// elements per rank; larger would need chunking, which is a CHECK for now.
int ToCount(size_t n) {
  L2L_CHECK_LE(n, static_cast<size_t>(INT32_MAX)) << "MPI count overflow";
  return static_cast<int>(n);
}

Status MpiStatus(int rc, const char* call, int rank) {
  if (rc == MPI_SUCCESS) return OkStatus();
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  return Internal(std::string(call) + " failed on rank " + std::to_string(rank) + ": " +
                  std::string(text, len));
}

}  // namespace

MpiRuntime::MpiRuntime(int* argc, char*** argv) {
  int provided = 0;
  int rc = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
  if (rc != MPI_SUCCESS) {
    std::fprintf(stderr, "l2l: MPI_Init_thread failed (code %d)\n", rc);
    std::exit(1);
  }
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
  if (provided < MPI_THREAD_FUNNELED) {
    // Optimizer threads never call MPI, but they run while the relay thread
    // does: an MPI that only promises MPI_THREAD_SINGLE is not safe here.
    AbortJob(
        "MPI provides thread level " + std::to_string(provided) + ", l2l needs MPI_THREAD_FUNNELED",
        1);
  }
  MPI_Comm local;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local);
  MPI_Comm_rank(local, &local_rank_);
  MPI_Comm_size(local, &local_size_);
  MPI_Comm_free(&local);
  SetLogRank(size_ > 1 ? rank_ : -1);
}

MpiRuntime::~MpiRuntime() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

void MpiRuntime::AbortJob(const std::string& message, int code) {
  std::fprintf(stderr, "l2l: %s\n", message.c_str());
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, code);
  std::abort();
}

MpiComm::MpiComm(MPI_Comm parent) {
  L2L_CHECK_EQ(MPI_Comm_dup(parent, &comm_), MPI_SUCCESS);
  MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
}

MpiComm::~MpiComm() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (comm_ != MPI_COMM_NULL && !finalized) MPI_Comm_free(&comm_);
}

Status MpiComm::AllGather(const void* send, void* recv, size_t count_per_rank, CommDType dtype) {
  const size_t elem = CommDTypeSizeBytes(dtype);
  const bool in_place = send == static_cast<const char*>(recv) + rank_ * count_per_rank * elem;
  const int rc = MPI_Allgather(in_place ? MPI_IN_PLACE : send, ToCount(count_per_rank),
                               ToMpi(dtype), recv, ToCount(count_per_rank), ToMpi(dtype), comm_);
  return MpiStatus(rc, "MPI_Allgather", rank_);
}

Status MpiComm::ReduceScatter(const void* send, void* recv, size_t count_per_rank, CommDType dtype,
                              ReduceOp op) {
  RETURN_IF_ERROR(RejectBF16Reduction(dtype, "MpiComm::ReduceScatter"));
  const int rc = MPI_Reduce_scatter_block(send == recv ? MPI_IN_PLACE : send, recv,
                                          ToCount(count_per_rank), ToMpi(dtype), ToMpi(op), comm_);
  return MpiStatus(rc, "MPI_Reduce_scatter_block", rank_);
}

Status MpiComm::AllReduce(const void* send, void* recv, size_t count, CommDType dtype,
                          ReduceOp op) {
  RETURN_IF_ERROR(RejectBF16Reduction(dtype, "MpiComm::AllReduce"));
  const int rc = MPI_Allreduce(send == recv ? MPI_IN_PLACE : send, recv, ToCount(count),
                               ToMpi(dtype), ToMpi(op), comm_);
  return MpiStatus(rc, "MPI_Allreduce", rank_);
}

Status MpiComm::Broadcast(void* buf, size_t count, CommDType dtype, int root) {
  const int rc = MPI_Bcast(buf, ToCount(count), ToMpi(dtype), root, comm_);
  return MpiStatus(rc, "MPI_Bcast", rank_);
}

Status MpiComm::Barrier() { return MpiStatus(MPI_Barrier(comm_), "MPI_Barrier", rank_); }

}  // namespace l2l
