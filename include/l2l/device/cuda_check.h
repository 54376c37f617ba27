// One check macro family for every CUDA runtime and NCCL call (DESIGN §7).
//
// Two flavours, for two kinds of failure:
// - L2L_CUDA_CHECK / L2L_NCCL_CHECK: the call must not fail (a bad pointer, a
//   device fault, a sticky launch error). On failure they print
//     l2l: CUDA error at <file>:<line> (rank <r>, cuda:<ordinal>): <expr>:
//          <error name>: <error text> [streamed context]
//   and abort, exactly like L2L_CHECK. Extra context may be streamed:
//     L2L_CUDA_CHECK(cudaMemcpyAsync(...)) << "copying layer " << l;
// - L2L_CUDA_RETURN_IF_ERROR / L2L_NCCL_RETURN_IF_ERROR: recoverable paths in
//   functions returning Status or StatusOr. The error becomes a Status with
//   the same text; cudaErrorMemoryAllocation becomes OutOfMemory, everything
//   else Internal. Callers that can say more (which buffer, what cap) build
//   their own message with CudaErrorText() instead.
//
// The rank is l2l::LogRank() ("-" before MPI is up or on a single rank); the
// ordinal is the calling thread's current CUDA device. Both macros evaluate
// `expr` exactly once.
//
// L2L_NCCL_* expand to NCCL calls (ncclGetErrorString, ncclGetLastError), so
// <nccl.h> must be included where they are used; this header does not pull
// NCCL into code that only needs the CUDA runtime.
#pragma once

#include <cuda_runtime_api.h>

#include <sstream>
#include <string>

#include "l2l/core/status.h"

namespace l2l {

// "cudaErrorInvalidValue: invalid argument" for messages.
std::string CudaErrorText(cudaError_t err);

namespace internal {

// The calling thread's current CUDA device, or -1 when that cannot be told
// (no driver, broken context).
int CurrentCudaOrdinal();

// "<file>:<line> (rank <r>, cuda:<ordinal>)".
std::string GpuErrorWhere(const char* file, int line);

// Prints "l2l: <library> error at <where>: <expr>: <error> <context>" and
// aborts when destroyed; stream() collects the context.
class GpuCheckFailure {
 public:
  GpuCheckFailure(const char* library, const char* file, int line, const char* expr,
                  const std::string& error);
  [[noreturn]] ~GpuCheckFailure();
  std::ostream& stream() { return os_; }

 private:
  std::ostringstream os_;
};

// The Status for a failed call on a recoverable path (see above).
Status CudaCallStatus(cudaError_t err, const char* file, int line, const char* expr);
Status NcclCallStatus(const std::string& error, const char* file, int line, const char* expr);

}  // namespace internal
}  // namespace l2l

// The loop body runs at most once and never returns (GpuCheckFailure aborts);
// the `for` form lets a declaration hold the result and lets callers stream
// context after the macro.
#define L2L_CUDA_CHECK(expr)                                             \
  for (cudaError_t l2l_cuda_err_ = (expr); l2l_cuda_err_ != cudaSuccess; \
       l2l_cuda_err_ = cudaSuccess)                                      \
  ::l2l::internal::GpuCheckFailure("CUDA", __FILE__, __LINE__, #expr,    \
                                   ::l2l::CudaErrorText(l2l_cuda_err_))  \
      .stream()

#define L2L_NCCL_CHECK(expr)                                                                   \
  for (ncclResult_t l2l_nccl_err_ = (expr); l2l_nccl_err_ != ncclSuccess;                      \
       l2l_nccl_err_ = ncclSuccess)                                                            \
  ::l2l::internal::GpuCheckFailure(                                                            \
      "NCCL", __FILE__, __LINE__, #expr,                                                       \
      std::string(ncclGetErrorString(l2l_nccl_err_)) + " (" + ncclGetLastError(nullptr) + ")") \
      .stream()

#define L2L_CUDA_RETURN_IF_ERROR(expr)                                                  \
  do {                                                                                  \
    const cudaError_t l2l_cuda_err_ = (expr);                                           \
    if (l2l_cuda_err_ != cudaSuccess)                                                   \
      return ::l2l::internal::CudaCallStatus(l2l_cuda_err_, __FILE__, __LINE__, #expr); \
  } while (0)

#define L2L_NCCL_RETURN_IF_ERROR(expr)                                                             \
  do {                                                                                             \
    const ncclResult_t l2l_nccl_err_ = (expr);                                                     \
    if (l2l_nccl_err_ != ncclSuccess)                                                              \
      return ::l2l::internal::NcclCallStatus(                                                      \
          std::string(ncclGetErrorString(l2l_nccl_err_)) + " (" + ncclGetLastError(nullptr) + ")", \
          __FILE__, __LINE__, #expr);                                                              \
  } while (0)
