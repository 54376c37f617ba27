// Embedding lookups, their deterministic scatter-add backward, and row
// gather / scatter (used by the heads to compute logits only where there are
// targets).
#include <algorithm>

#include "l2l/core/check.h"
#include "l2l/kernels/cpu.h"

namespace l2l::kernels::cpu {
namespace {
constexpr int64_t kColumnBlock = 64;

void CheckIds(const int32_t* ids, int64_t n, int64_t vocab) {
  for (int64_t i = 0; i < n; ++i) {
    L2L_CHECK(ids[i] >= 0 && ids[i] < vocab)
        << "embedding id " << ids[i] << " at " << i << " outside [0, " << vocab << ")";
  }
}
}  // namespace

template <typename T>
void EmbeddingForward(const T* table, int64_t vocab, int64_t dim, const int32_t* ids, int64_t n,
                      T* out, Accum accum) {
  CheckIds(ids, n, vocab);
  const bool add = accum == Accum::kAdd;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const T* src = table + static_cast<int64_t>(ids[i]) * dim;
    T* dst = out + i * dim;
    if (add) {
#pragma omp simd
      for (int64_t j = 0; j < dim; ++j) dst[j] += src[j];
    } else {
      std::copy(src, src + dim, dst);
    }
  }
}

template <typename T>
void EmbeddingBackward(const int32_t* ids, int64_t n, const T* dout, int64_t vocab, int64_t dim,
                       T* dtable, int32_t skip_id) {
  CheckIds(ids, n, vocab);
  const int64_t blocks = (dim + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t c0 = b * kColumnBlock;
    const int64_t c1 = std::min(dim, c0 + kColumnBlock);
    for (int64_t i = 0; i < n; ++i) {
      if (ids[i] == skip_id) continue;
      const T* src = dout + i * dim;
      T* dst = dtable + static_cast<int64_t>(ids[i]) * dim;
#pragma omp simd
      for (int64_t j = c0; j < c1; ++j) dst[j] += src[j];
    }
  }
}

template <typename T>
void PositionEmbeddingForward(const T* pos, int64_t rows, int64_t seq, int64_t dim, T* out,
                              Accum accum) {
  const bool add = accum == Accum::kAdd;
  const int64_t n = rows * seq;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const T* src = pos + (i % seq) * dim;
    T* dst = out + i * dim;
    if (add) {
#pragma omp simd
      for (int64_t j = 0; j < dim; ++j) dst[j] += src[j];
    } else {
      std::copy(src, src + dim, dst);
    }
  }
}

template <typename T>
void PositionEmbeddingBackward(const T* dout, int64_t rows, int64_t seq, int64_t dim, T* dpos) {
#pragma omp parallel for schedule(static)
  for (int64_t s = 0; s < seq; ++s) {  // each position's row is owned by one thread
    T* dst = dpos + s * dim;
    for (int64_t r = 0; r < rows; ++r) {
      const T* src = dout + (r * seq + s) * dim;
#pragma omp simd
      for (int64_t j = 0; j < dim; ++j) dst[j] += src[j];
    }
  }
}

template <typename T>
void GatherRows(const T* x, const int32_t* idx, int64_t m, int64_t c, T* out) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < m; ++i) {
    const T* src = x + static_cast<int64_t>(idx[i]) * c;
    std::copy(src, src + c, out + i * c);
  }
}

template <typename T>
void ScatterRows(const T* src, const int32_t* idx, int64_t m, int64_t c, T* out) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < m; ++i) {
    std::copy(src + i * c, src + (i + 1) * c, out + static_cast<int64_t>(idx[i]) * c);
  }
}

#define L2L_INSTANTIATE(T)                                                                    \
  template void EmbeddingForward<T>(const T*, int64_t, int64_t, const int32_t*, int64_t, T*,  \
                                    Accum);                                                   \
  template void EmbeddingBackward<T>(const int32_t*, int64_t, const T*, int64_t, int64_t, T*, \
                                     int32_t);                                                \
  template void PositionEmbeddingForward<T>(const T*, int64_t, int64_t, int64_t, T*, Accum);  \
  template void PositionEmbeddingBackward<T>(const T*, int64_t, int64_t, int64_t, T*);        \
  template void GatherRows<T>(const T*, const int32_t*, int64_t, int64_t, T*);                \
  template void ScatterRows<T>(const T*, const int32_t*, int64_t, int64_t, T*);
L2L_INSTANTIATE(float)
L2L_INSTANTIATE(double)
#undef L2L_INSTANTIATE

}  // namespace l2l::kernels::cpu
