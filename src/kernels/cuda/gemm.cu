// GEMMs on cuBLAS (cublasGemmEx / cublasGemmStridedBatchedEx, fp32 compute),
// linear layers on top of them, and the deterministic two-pass column sums
// used for every bias-style gradient.
//
// Why cublasGemmEx and not cuBLASLt: the linear layers need nothing from
// cuBLASLt's epilogues that cannot be had as exactly (the bias is broadcast
// into C and added with beta = 1, which rounds once, in fp32), GemmEx accepts
// any alignment and leading dimension, and needs no per-shape heuristic query.
#include <algorithm>
#include <type_traits>

#include "column_reduce.cuh"
#include "common.cuh"

namespace l2l::kernels::cuda {
namespace {

using internal::GlobalThread;
using internal::GridFor;
using internal::GridStride;
using internal::kThreads;

template <typename T>
constexpr cudaDataType_t CudaDataType() {
  if constexpr (std::is_same_v<T, float>) {
    return CUDA_R_32F;
  } else {
    static_assert(std::is_same_v<T, bf16>, "storage types are float and bf16");
    return CUDA_R_16BF;
  }
}

cublasOperation_t ToCublas(Trans t) { return t == Trans::kYes ? CUBLAS_OP_T : CUBLAS_OP_N; }

// c[b, i, j] = beta * c[b, i, j] (0 when beta == 0, whatever c held): the k == 0
// case, where cpu::Gemm is explicit too.
template <typename T>
__global__ void ScaleMatrixKernel(T* c, int64_t m, int64_t n, int64_t ldc, int64_t stride_c,
                                  int64_t batch, float beta) {
  const int64_t total = batch * m * n;
  for (int64_t e = GlobalThread(); e < total; e += GridStride()) {
    const int64_t b = e / (m * n), i = (e / n) % m, j = e % n;
    T* p = c + b * stride_c + i * ldc + j;
    internal::Store(p, beta == 0.0f ? 0.0f : beta * internal::Load(p));
  }
}

// y (n, cols)[r] = bias (cols): exact copies, so the GEMM's beta = 1 adds the
// bias in fp32 before its single rounding.
template <typename T>
__global__ void BroadcastRowKernel(const T* bias, int64_t n, int64_t cols, T* y) {
  for (int64_t e = GlobalThread(); e < n * cols; e += GridStride()) y[e] = bias[e % cols];
}

template <typename TIn, typename TOut>
Status GemmImpl(const char* op, const CublasHandles& handles, cudaStream_t stream, Trans trans_a,
                Trans trans_b, int64_t m, int64_t n, int64_t k, float alpha, const TIn* a,
                int64_t lda, int64_t stride_a, const TIn* b, int64_t ldb, int64_t stride_b,
                float beta, TOut* c, int64_t ldc, int64_t stride_c, int64_t batch) {
  RETURN_IF_ERROR(internal::ValidateGemm(op, trans_a, trans_b, m, n, k, lda, ldb, ldc));
  RETURN_IF_ERROR(internal::Validator(op)
                      .FitsInt("batch", batch)
                      .NonNegative("stride_a", stride_a)
                      .NonNegative("stride_b", stride_b)
                      .NonNegative("stride_c", stride_c)
                      .NotNull("a", a, batch * m * k)
                      .NotNull("b", b, batch * k * n)
                      .NotNull("c", c, batch * m * n)
                      .status());
  if (m == 0 || n == 0 || batch == 0) return OkStatus();
  if (k == 0) {
    ScaleMatrixKernel<<<GridFor(batch * m * n), kThreads, 0, stream>>>(c, m, n, ldc, stride_c,
                                                                       batch, beta);
    L2L_CUDA_RETURN_IF_LAUNCH_FAILED();
    return OkStatus();
  }
  RETURN_IF_ERROR(handles.Bind(stream));
  const internal::ColumnMajorGemm g =
      internal::ToColumnMajor(trans_a, trans_b, m, n, k, lda, ldb, ldc);
  constexpr cudaDataType_t in_type = CudaDataType<TIn>();
  constexpr cudaDataType_t out_type = CudaDataType<TOut>();
  if (batch == 1) {
    L2L_CUBLAS_RETURN_IF_ERROR(cublasGemmEx(
        handles.blas(), ToCublas(g.op_first), ToCublas(g.op_second), static_cast<int>(g.m),
        static_cast<int>(g.n), static_cast<int>(g.k), &alpha, b, in_type,
        static_cast<int>(g.ld_first), a, in_type, static_cast<int>(g.ld_second), &beta, c, out_type,
        static_cast<int>(g.ldc), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  } else {
    L2L_CUBLAS_RETURN_IF_ERROR(cublasGemmStridedBatchedEx(
        handles.blas(), ToCublas(g.op_first), ToCublas(g.op_second), static_cast<int>(g.m),
        static_cast<int>(g.n), static_cast<int>(g.k), &alpha, b, in_type,
        static_cast<int>(g.ld_first), stride_b, a, in_type, static_cast<int>(g.ld_second), stride_a,
        &beta, c, out_type, static_cast<int>(g.ldc), stride_c, static_cast<int>(batch),
        CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }
  return OkStatus();
}

}  // namespace

template <typename TIn, typename TOut>
Status Gemm(const CublasHandles& handles, cudaStream_t stream, Trans trans_a, Trans trans_b,
            int64_t m, int64_t n, int64_t k, float alpha, const TIn* a, int64_t lda, const TIn* b,
            int64_t ldb, float beta, TOut* c, int64_t ldc) {
  return GemmImpl<TIn, TOut>("Gemm", handles, stream, trans_a, trans_b, m, n, k, alpha, a, lda, 0,
                             b, ldb, 0, beta, c, ldc, 0, 1);
}

template <typename TIn, typename TOut>
Status GemmStridedBatched(const CublasHandles& handles, cudaStream_t stream, Trans trans_a,
                          Trans trans_b, int64_t m, int64_t n, int64_t k, float alpha, const TIn* a,
                          int64_t lda, int64_t stride_a, const TIn* b, int64_t ldb,
                          int64_t stride_b, float beta, TOut* c, int64_t ldc, int64_t stride_c,
                          int64_t batch) {
  return GemmImpl<TIn, TOut>("GemmStridedBatched", handles, stream, trans_a, trans_b, m, n, k,
                             alpha, a, lda, stride_a, b, ldb, stride_b, beta, c, ldc, stride_c,
                             batch);
}

int64_t ColumnSumScratchElems(int64_t n, int64_t c) {
  if (n <= 0 || c <= 0) return 0;
  // ColumnChunks(n) itself is not monotone in n (e.g. 256 chunks at n = 16384,
  // 255 at 16512); this bound is, and it is never below it: chunks have at
  // least kColumnChunkMinRows rows and there are at most kColumnMaxChunks.
  const int64_t by_rows = (n + internal::kColumnChunkMinRows - 1) / internal::kColumnChunkMinRows;
  return std::min(by_rows, internal::kColumnMaxChunks) * c;
}

template <typename T>
Status ColumnSumAccumulate(cudaStream_t stream, const T* x, int64_t n, int64_t c, float* out,
                           float* scratch) {
  RETURN_IF_ERROR(internal::Validator("ColumnSumAccumulate")
                      .NonNegative("n", n)
                      .NonNegative("c", c)
                      .NotNull("x", x, n * c)
                      .NotNull("out", out, n > 0 ? c : 0)
                      .NotNull("scratch", scratch, ColumnSumScratchElems(n, c))
                      .status());
  if (n == 0 || c == 0) return OkStatus();
  return internal::ColumnReduce<1>(stream, internal::ColumnOf<T>{x, c}, n, c, out, nullptr,
                                   scratch);
}

// The row-major GEMM operands of a linear layer's weight w, stored (in, out)
// or (out, in): in the forward y = x · W, W (in, out) is w as stored (ld out)
// or wᵀ (ld in).
Trans ForwardWeightTrans(WeightLayout layout) {
  return layout == WeightLayout::kInOut ? Trans::kNo : Trans::kYes;
}
int64_t WeightLd(WeightLayout layout, int64_t in, int64_t out) {
  return layout == WeightLayout::kInOut ? out : in;
}

template <typename T>
Status LinearForward(const CublasHandles& handles, cudaStream_t stream, const T* x, const T* w,
                     const T* bias, int64_t n, int64_t in, int64_t out, T* y, WeightLayout layout) {
  RETURN_IF_ERROR(internal::Validator("LinearForward")
                      .NonNegative("n", n)
                      .NonNegative("in", in)
                      .NonNegative("out", out)
                      .NotNull("x", x, n * in)
                      .NotNull("w", w, n > 0 ? in * out : 0)
                      .NotNull("y", y, n * out)
                      .That(y == nullptr || static_cast<const void*>(y) != x, "y not aliasing x")
                      .status());
  if (n == 0 || out == 0) return OkStatus();
  float beta = 0.0f;
  if (bias != nullptr) {
    BroadcastRowKernel<<<GridFor(n * out), kThreads, 0, stream>>>(bias, n, out, y);
    L2L_CUDA_RETURN_IF_LAUNCH_FAILED();
    beta = 1.0f;
  }
  // y (n, out) = x (n, in) · W (in, out); kOutIn: W = wᵀ, w stored (out, in).
  return GemmImpl<T, T>("LinearForward", handles, stream, Trans::kNo, ForwardWeightTrans(layout), n,
                        out, in, 1.0f, x, in, 0, w, WeightLd(layout, in, out), 0, beta, y, out, 0,
                        1);
}

template <typename T>
Status LinearBackward(const CublasHandles& handles, cudaStream_t stream, const T* x, const T* w,
                      const T* dy, int64_t n, int64_t in, int64_t out, T* dx, float* dw,
                      float* dbias, float* scratch, Accum dx_accum, WeightLayout layout) {
  RETURN_IF_ERROR(
      internal::Validator("LinearBackward")
          .NonNegative("n", n)
          .NonNegative("in", in)
          .NonNegative("out", out)
          .NotNull("dy", dy, n * out)
          .NotNull("w", w, dx != nullptr && n > 0 ? in * out : 0)
          .NotNull("x", x, dw != nullptr ? n * in : 0)
          .NotNull("scratch", scratch, dbias != nullptr ? ColumnSumScratchElems(n, out) : 0)
          .status());
  if (n == 0) return OkStatus();  // dx has no rows; dw and dbias gain nothing
  const bool in_out = layout == WeightLayout::kInOut;
  if (dx != nullptr) {
    // dx (n, in) = dy (n, out) · Wᵀ: kInOut, w (in, out) transposed; kOutIn,
    // w (out, in) as stored.
    const float beta = dx_accum == Accum::kAdd ? 1.0f : 0.0f;
    RETURN_IF_ERROR((GemmImpl<T, T>("LinearBackward(dx)", handles, stream, Trans::kNo,
                                    in_out ? Trans::kYes : Trans::kNo, n, in, out, 1.0f, dy, out, 0,
                                    w, WeightLd(layout, in, out), 0, beta, dx, in, 0, 1)));
  }
  if (dw != nullptr) {
    if (in_out) {  // dW (in, out) += xᵀ · dy
      RETURN_IF_ERROR(
          (GemmImpl<T, float>("LinearBackward(dw)", handles, stream, Trans::kYes, Trans::kNo, in,
                              out, n, 1.0f, x, in, 0, dy, out, 0, 1.0f, dw, out, 0, 1)));
    } else {  // dW (out, in) += dyᵀ · x
      RETURN_IF_ERROR(
          (GemmImpl<T, float>("LinearBackward(dw)", handles, stream, Trans::kYes, Trans::kNo, out,
                              in, n, 1.0f, dy, out, 0, x, in, 0, 1.0f, dw, in, 0, 1)));
    }
  }
  if (dbias != nullptr) RETURN_IF_ERROR(ColumnSumAccumulate(stream, dy, n, out, dbias, scratch));
  return OkStatus();
}

#define L2L_INSTANTIATE_GEMM(TIn, TOut)                                                           \
  template Status Gemm<TIn, TOut>(const CublasHandles&, cudaStream_t, Trans, Trans, int64_t,      \
                                  int64_t, int64_t, float, const TIn*, int64_t, const TIn*,       \
                                  int64_t, float, TOut*, int64_t);                                \
  template Status GemmStridedBatched<TIn, TOut>(const CublasHandles&, cudaStream_t, Trans, Trans, \
                                                int64_t, int64_t, int64_t, float, const TIn*,     \
                                                int64_t, int64_t, const TIn*, int64_t, int64_t,   \
                                                float, TOut*, int64_t, int64_t, int64_t);
L2L_INSTANTIATE_GEMM(float, float)
L2L_INSTANTIATE_GEMM(bf16, bf16)
L2L_INSTANTIATE_GEMM(bf16, float)
#undef L2L_INSTANTIATE_GEMM

#define L2L_INSTANTIATE(T)                                                                   \
  template Status ColumnSumAccumulate<T>(cudaStream_t, const T*, int64_t, int64_t, float*,   \
                                         float*);                                            \
  template Status LinearForward<T>(const CublasHandles&, cudaStream_t, const T*, const T*,   \
                                   const T*, int64_t, int64_t, int64_t, T*, WeightLayout);   \
  template Status LinearBackward<T>(const CublasHandles&, cudaStream_t, const T*, const T*,  \
                                    const T*, int64_t, int64_t, int64_t, T*, float*, float*, \
                                    float*, Accum, WeightLayout);
L2L_INSTANTIATE(float)
L2L_INSTANTIATE(bf16)
#undef L2L_INSTANTIATE

}  // namespace l2l::kernels::cuda
