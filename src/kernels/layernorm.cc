// Layernorm and RMSNorm forward / backward (per row over the last axis),
// after llm.c's layernorm_forward/backward, with deterministic gain and bias
// gradients.
#include <algorithm>
#include <cmath>

#include "l2l/kernels/cpu.h"

namespace l2l::kernels::cpu {
namespace {
constexpr int64_t kColumnBlock = 64;
}  // namespace

template <typename T>
void LayerNormForward(const T* x, const T* gain, const T* bias, int64_t n, int64_t c, double eps,
                      T* y, T* mean, T* rstd) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < n; ++r) {
    const T* xr = x + r * c;
    T* yr = y + r * c;
    T sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < c; ++j) sum += xr[j];
    const T m = sum / static_cast<T>(c);
    T var = 0;
#pragma omp simd reduction(+ : var)
    for (int64_t j = 0; j < c; ++j) var += (xr[j] - m) * (xr[j] - m);
    var /= static_cast<T>(c);
    const T s = T(1) / std::sqrt(var + static_cast<T>(eps));
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) yr[j] = (xr[j] - m) * s * gain[j] + bias[j];
    if (mean != nullptr) mean[r] = m;
    if (rstd != nullptr) rstd[r] = s;
  }
}

template <typename T>
void LayerNormBackward(const T* x, const T* gain, const T* mean, const T* rstd, const T* dy,
                       int64_t n, int64_t c, T* dx, T* dgain, T* dbias, Accum dx_accum) {
  // Parameter gradients first (dx may alias dy): column blocks, rows in order.
  if (dgain != nullptr || dbias != nullptr) {
    const int64_t blocks = (c + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t c0 = b * kColumnBlock;
      const int64_t c1 = std::min(c, c0 + kColumnBlock);
      for (int64_t r = 0; r < n; ++r) {
        const T* xr = x + r * c;
        const T* dyr = dy + r * c;
        const T m = mean[r];
        const T s = rstd[r];
        if (dgain != nullptr) {
#pragma omp simd
          for (int64_t j = c0; j < c1; ++j) dgain[j] += dyr[j] * ((xr[j] - m) * s);
        }
        if (dbias != nullptr) {
#pragma omp simd
          for (int64_t j = c0; j < c1; ++j) dbias[j] += dyr[j];
        }
      }
    }
  }
  if (dx == nullptr) return;
  const bool add = dx_accum == Accum::kAdd;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < n; ++r) {
    const T* xr = x + r * c;
    const T* dyr = dy + r * c;
    T* dxr = dx + r * c;
    const T m = mean[r];
    const T s = rstd[r];
    // dnorm = dy * gain; dx = (dnorm - mean(dnorm) - xhat * mean(dnorm * xhat)) * rstd
    T dnorm_mean = 0;
    T dnorm_xhat_mean = 0;
#pragma omp simd reduction(+ : dnorm_mean, dnorm_xhat_mean)
    for (int64_t j = 0; j < c; ++j) {
      const T dnorm = dyr[j] * gain[j];
      dnorm_mean += dnorm;
      dnorm_xhat_mean += dnorm * ((xr[j] - m) * s);
    }
    dnorm_mean /= static_cast<T>(c);
    dnorm_xhat_mean /= static_cast<T>(c);
    if (add) {
#pragma omp simd
      for (int64_t j = 0; j < c; ++j) {
        const T xhat = (xr[j] - m) * s;
        dxr[j] += (dyr[j] * gain[j] - dnorm_mean - xhat * dnorm_xhat_mean) * s;
      }
    } else {
#pragma omp simd
      for (int64_t j = 0; j < c; ++j) {
        const T xhat = (xr[j] - m) * s;
        dxr[j] = (dyr[j] * gain[j] - dnorm_mean - xhat * dnorm_xhat_mean) * s;
      }
    }
  }
}

template <typename T>
void RmsNormForward(const T* x, const T* gain, int64_t n, int64_t c, double eps, T* y, T* rstd) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < n; ++r) {
    const T* xr = x + r * c;
    T* yr = y + r * c;
    T sq = 0;
#pragma omp simd reduction(+ : sq)
    for (int64_t j = 0; j < c; ++j) sq += xr[j] * xr[j];
    const T s = T(1) / std::sqrt(sq / static_cast<T>(c) + static_cast<T>(eps));
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) yr[j] = gain[j] * (xr[j] * s);
    if (rstd != nullptr) rstd[r] = s;
  }
}

template <typename T>
void RmsNormBackward(const T* x, const T* gain, const T* rstd, const T* dy, int64_t n, int64_t c,
                     T* dx, T* dgain, Accum dx_accum) {
  // The gain gradient first (dx may alias dy): column blocks, rows in order.
  if (dgain != nullptr) {
    const int64_t blocks = (c + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t c0 = b * kColumnBlock;
      const int64_t c1 = std::min(c, c0 + kColumnBlock);
      for (int64_t r = 0; r < n; ++r) {
        const T* xr = x + r * c;
        const T* dyr = dy + r * c;
        const T s = rstd[r];
#pragma omp simd
        for (int64_t j = c0; j < c1; ++j) dgain[j] += dyr[j] * (xr[j] * s);
      }
    }
  }
  if (dx == nullptr) return;
  const bool add = dx_accum == Accum::kAdd;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < n; ++r) {
    const T* xr = x + r * c;
    const T* dyr = dy + r * c;
    T* dxr = dx + r * c;
    const T s = rstd[r];
    // xhat = x * s; dxhat = dy * gain; dx = s * (dxhat - xhat * mean(dxhat * xhat))
    T dot = 0;
#pragma omp simd reduction(+ : dot)
    for (int64_t j = 0; j < c; ++j) dot += dyr[j] * gain[j] * (xr[j] * s);
    dot /= static_cast<T>(c);
    if (add) {
#pragma omp simd
      for (int64_t j = 0; j < c; ++j) dxr[j] += (dyr[j] * gain[j] - xr[j] * s * dot) * s;
    } else {
#pragma omp simd
      for (int64_t j = 0; j < c; ++j) dxr[j] = (dyr[j] * gain[j] - xr[j] * s * dot) * s;
    }
  }
}

#define L2L_INSTANTIATE(T)                                                                       \
  template void LayerNormForward<T>(const T*, const T*, const T*, int64_t, int64_t, double, T*,  \
                                    T*, T*);                                                     \
  template void LayerNormBackward<T>(const T*, const T*, const T*, const T*, const T*, int64_t,  \
                                     int64_t, T*, T*, T*, Accum);                                \
  template void RmsNormForward<T>(const T*, const T*, int64_t, int64_t, double, T*, T*);         \
  template void RmsNormBackward<T>(const T*, const T*, const T*, const T*, int64_t, int64_t, T*, \
                                   T*, Accum);
L2L_INSTANTIATE(float)
L2L_INSTANTIATE(double)
#undef L2L_INSTANTIATE

}  // namespace l2l::kernels::cpu
