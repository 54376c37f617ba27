// Host-side helpers of the CUDA launchers: argument validation that returns
// Status, CUDA / cuBLAS error conversion, the row-major -> column-major GEMM
// mapping, and the fixed chunking of the deterministic column reductions.
// Plain C++ (no device code), so the unit test can exercise it without a GPU.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>

#include "l2l/core/status.h"
#include "l2l/device/cuda_check.h"  // L2L_CUDA_RETURN_IF_ERROR
#include "l2l/kernels/params.h"

namespace l2l::kernels::cuda::internal {

// Collects the first failed precondition of a launcher:
//   RETURN_IF_ERROR(Validator("LayerNormForward").Positive("c", c).NotNull("x", x, n * c)
//                       .status());
// Messages name the op, the argument and the expectation.
class Validator {
 public:
  explicit Validator(const char* op) : op_(op) {}

  Validator& NonNegative(const char* name, int64_t v);
  Validator& Positive(const char* name, int64_t v);
  Validator& AtLeast(const char* name, int64_t v, int64_t min);
  Validator& AtMost(const char* name, int64_t v, int64_t max);
  Validator& FitsInt(const char* name, int64_t v);  // 0 <= v <= INT_MAX (cuBLAS dims)
  // p may be null only when `elems` is 0 (nothing would be touched).
  Validator& NotNull(const char* name, const void* p, int64_t elems);
  Validator& DropoutP(const char* name, float p);  // p in [0, 1)
  Validator& That(bool cond, const char* what);    // `what` states the requirement

  const Status& status() const { return status_; }

 private:
  void Fail(const std::string& message);

  const char* op_;
  Status status_;
};

// A non-OK Status (Internal) naming the failed call, file:line, the MPI rank
// (LogRank) and the current device.
Status CublasError(cublasStatus_t err, const char* call, const char* file, int line);

#define L2L_CUBLAS_RETURN_IF_ERROR(call)                                                   \
  do {                                                                                     \
    const cublasStatus_t l2l_cublas_err_ = (call);                                         \
    if (l2l_cublas_err_ != CUBLAS_STATUS_SUCCESS)                                          \
      return ::l2l::kernels::cuda::internal::CublasError(l2l_cublas_err_, #call, __FILE__, \
                                                         __LINE__);                        \
  } while (0)

// A launch's configuration error (or an earlier asynchronous fault) as Status.
#define L2L_CUDA_RETURN_IF_LAUNCH_FAILED() L2L_CUDA_RETURN_IF_ERROR(cudaGetLastError())

// ---- GEMM mapping ------------------------------------------------------------------

// cuBLAS is column-major. A row-major matrix stored with row stride ld is, read
// column-major with the same ld, its transpose. So row-major
//   C (m, n) = op(A) · op(B)   is column-major   Cᵀ (n, m) = op(B)ᵀ · op(A)ᵀ,
// i.e. one column-major GEMM with the operands swapped, the same trans flags,
// and m and n exchanged. `first` is the caller's b, `second` the caller's a.
struct ColumnMajorGemm {
  Trans op_first, op_second;  // transa / transb of the cuBLAS call
  int64_t m, n, k;            // cuBLAS m, n, k
  int64_t ld_first, ld_second, ldc;
};

inline ColumnMajorGemm ToColumnMajor(Trans trans_a, Trans trans_b, int64_t m, int64_t n, int64_t k,
                                     int64_t lda, int64_t ldb, int64_t ldc) {
  return {trans_b, trans_a, n, m, k, ldb, lda, ldc};
}

// cpu::Gemm's preconditions plus cuBLAS's int range, as a Status.
Status ValidateGemm(const char* op, Trans trans_a, Trans trans_b, int64_t m, int64_t n, int64_t k,
                    int64_t lda, int64_t ldb, int64_t ldc);

// ---- Column reductions ---------------------------------------------------------------

// Rows per chunk of the two-pass column sums: a pure function of n (never of
// the GPU), so the summation order, hence the bits, depend on the shape only.
// At least kColumnChunkMinRows rows per chunk, at most kColumnMaxChunks chunks.
inline constexpr int64_t kColumnChunkMinRows = 64;
inline constexpr int64_t kColumnMaxChunks = 256;

inline int64_t ColumnChunkRows(int64_t n) {
  const int64_t spread = (n + kColumnMaxChunks - 1) / kColumnMaxChunks;
  return spread > kColumnChunkMinRows ? spread : kColumnChunkMinRows;
}
inline int64_t ColumnChunks(int64_t n) {
  return n <= 0 ? 0 : (n + ColumnChunkRows(n) - 1) / ColumnChunkRows(n);
}

}  // namespace l2l::kernels::cuda::internal
