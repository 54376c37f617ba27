// GEMM and linear layers on OpenBLAS (row-major cblas), plus the deterministic
// column sums used for bias gradients.
#include <cblas.h>

#include <algorithm>
#include <limits>

#include "l2l/core/check.h"
#include "l2l/kernels/cpu.h"

namespace l2l::kernels::cpu {
namespace {

// Columns per OpenMP work item in column reductions: each thread owns whole
// column blocks and walks every row in order, so the summation order is fixed.
constexpr int64_t kColumnBlock = 64;

CBLAS_TRANSPOSE ToCblas(Trans t) { return t == Trans::kYes ? CblasTrans : CblasNoTrans; }

blasint ToBlasInt(int64_t v, const char* what) {
  L2L_CHECK(v >= 0 && v <= std::numeric_limits<blasint>::max()) << what << " = " << v;
  return static_cast<blasint>(v);
}

void CblasGemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, blasint m, blasint n, blasint k, float alpha,
               const float* a, blasint lda, const float* b, blasint ldb, float beta, float* c,
               blasint ldc) {
  cblas_sgemm(CblasRowMajor, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
void CblasGemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, blasint m, blasint n, blasint k,
               double alpha, const double* a, blasint lda, const double* b, blasint ldb,
               double beta, double* c, blasint ldc) {
  cblas_dgemm(CblasRowMajor, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

}  // namespace

template <typename T>
void Gemm(Trans trans_a, Trans trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
          int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) {  // BLAS leaves c untouched only for beta == 1; be explicit.
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == T(0) ? T(0) : beta * c[i * ldc + j];
    return;
  }
  // Row-major storage: a stored (m, k) untransposed or (k, m) transposed.
  L2L_CHECK_GE(lda, std::max<int64_t>(1, trans_a == Trans::kNo ? k : m));
  L2L_CHECK_GE(ldb, std::max<int64_t>(1, trans_b == Trans::kNo ? n : k));
  L2L_CHECK_GE(ldc, std::max<int64_t>(1, n));
  CblasGemm(ToCblas(trans_a), ToCblas(trans_b), ToBlasInt(m, "m"), ToBlasInt(n, "n"),
            ToBlasInt(k, "k"), alpha, a, ToBlasInt(lda, "lda"), b, ToBlasInt(ldb, "ldb"), beta, c,
            ToBlasInt(ldc, "ldc"));
}

template <typename T>
void LinearForward(const T* x, const T* w, const T* bias, int64_t n, int64_t in, int64_t out, T* y,
                   WeightLayout layout) {
  T beta = T(0);
  if (bias != nullptr) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < n; ++r) std::copy(bias, bias + out, y + r * out);
    beta = T(1);
  }
  if (layout == WeightLayout::kInOut) {
    Gemm<T>(Trans::kNo, Trans::kNo, n, out, in, T(1), x, in, w, out, beta, y, out);
  } else {
    Gemm<T>(Trans::kNo, Trans::kYes, n, out, in, T(1), x, in, w, in, beta, y, out);
  }
}

template <typename T>
void LinearBackward(const T* x, const T* w, const T* dy, int64_t n, int64_t in, int64_t out, T* dx,
                    T* dw, T* dbias, Accum dx_accum, WeightLayout layout) {
  const bool in_out = layout == WeightLayout::kInOut;
  if (dx != nullptr) {
    // dx (n, in) = dy (n, out) · Wᵀ, with W (in, out) or (out, in) as stored.
    const T beta = dx_accum == Accum::kAdd ? T(1) : T(0);
    if (in_out) {
      Gemm<T>(Trans::kNo, Trans::kYes, n, in, out, T(1), dy, out, w, out, beta, dx, in);
    } else {
      Gemm<T>(Trans::kNo, Trans::kNo, n, in, out, T(1), dy, out, w, in, beta, dx, in);
    }
  }
  if (dw != nullptr) {
    if (in_out) {  // dW (in, out) += xᵀ · dy
      Gemm<T>(Trans::kYes, Trans::kNo, in, out, n, T(1), x, in, dy, out, T(1), dw, out);
    } else {  // dW (out, in) += dyᵀ · x
      Gemm<T>(Trans::kYes, Trans::kNo, out, in, n, T(1), dy, out, x, in, T(1), dw, in);
    }
  }
  if (dbias != nullptr) ColumnSumAccumulate(dy, n, out, dbias);
}

template <typename T>
void ColumnSumAccumulate(const T* x, int64_t n, int64_t c, T* out) {
  const int64_t blocks = (c + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t c0 = b * kColumnBlock;
    const int64_t c1 = std::min(c, c0 + kColumnBlock);
    for (int64_t r = 0; r < n; ++r) {
      const T* row = x + r * c;
#pragma omp simd
      for (int64_t j = c0; j < c1; ++j) out[j] += row[j];
    }
  }
}

#define L2L_INSTANTIATE(T)                                                                         \
  template void Gemm<T>(Trans, Trans, int64_t, int64_t, int64_t, T, const T*, int64_t, const T*,   \
                        int64_t, T, T*, int64_t);                                                  \
  template void LinearForward<T>(const T*, const T*, const T*, int64_t, int64_t, int64_t, T*,      \
                                 WeightLayout);                                                    \
  template void LinearBackward<T>(const T*, const T*, const T*, int64_t, int64_t, int64_t, T*, T*, \
                                  T*, Accum, WeightLayout);                                        \
  template void ColumnSumAccumulate<T>(const T*, int64_t, int64_t, T*);
L2L_INSTANTIATE(float)
L2L_INSTANTIATE(double)
#undef L2L_INSTANTIATE

}  // namespace l2l::kernels::cpu
