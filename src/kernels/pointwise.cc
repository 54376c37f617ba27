// Row softmax and elementwise ops: GELU (tanh and erf forms), SwiGLU, keyed
// dropout, add.
// GELU and the dropout mask are the expensive ones (transcendentals, a
// 13-round integer hash per element): they run in cloned, vectorised chunks.
#include <algorithm>
#include <cmath>

#include "l2l/core/check.h"
#include "l2l/kernels/cpu.h"
#include "simd.h"

namespace l2l::kernels::cpu {
namespace {
constexpr double kSqrt2OverPi = 0.7978845608028654;  // sqrt(2 / pi)
constexpr double kGeluCubic = 0.044715;
constexpr float kSqrt2OverPiF = static_cast<float>(kSqrt2OverPi);
constexpr float kGeluCubicF = static_cast<float>(kGeluCubic);
constexpr double kInvSqrt2 = 0.7071067811865476;    // 1 / sqrt(2)
constexpr double kInvSqrt2Pi = 0.3989422804014327;  // 1 / sqrt(2 pi)
}  // namespace

template <typename T>
void SoftmaxForward(const T* x, int64_t n, int64_t c, T* y) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < n; ++r) {
    const T* xr = x + r * c;
    T* yr = y + r * c;
    const T maxv = *std::max_element(xr, xr + c);
    T sum = 0;
    for (int64_t j = 0; j < c; ++j) {
      yr[j] = std::exp(xr[j] - maxv);
      sum += yr[j];
    }
    const T inv = T(1) / sum;
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) yr[j] *= inv;
  }
}

template <typename T>
void SoftmaxBackward(const T* y, const T* dy, int64_t n, int64_t c, T* dx) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < n; ++r) {
    const T* yr = y + r * c;
    const T* dyr = dy + r * c;
    T* dxr = dx + r * c;
    T dot = 0;
#pragma omp simd reduction(+ : dot)
    for (int64_t j = 0; j < c; ++j) dot += dyr[j] * yr[j];
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) dxr[j] = yr[j] * (dyr[j] - dot);
  }
}

namespace {

// GELU for float: 0.5 x (1 + tanh(u)) == x * sigmoid(2u), evaluated with the
// vectorisable ExpF. Double keeps libm's tanh (the gradient checks' precision).
L2L_ALWAYS_INLINE float GeluSigmoid2u(float v) {
  const float u = kSqrt2OverPiF * (v + kGeluCubicF * v * v * v);
  return 1.0f / (1.0f + internal::ExpF(-2.0f * u));
}

L2L_TARGET_CLONES void GeluForwardChunk(const float* x, int64_t n, float* y) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * GeluSigmoid2u(x[i]);
}

L2L_TARGET_CLONES void GeluBackwardChunk(const float* x, const float* dy, int64_t n, float* dx) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    const float sg = GeluSigmoid2u(v);
    // d/dv [v * sigmoid(2u)] = sg + v * sg (1 - sg) * 2 u'(v)
    const float du = kSqrt2OverPiF * (1.0f + 3.0f * kGeluCubicF * v * v);
    dx[i] = dy[i] * (sg + v * sg * (1.0f - sg) * 2.0f * du);
  }
}

void GeluForwardChunk(const double* x, int64_t n, double* y) {
  for (int64_t i = 0; i < n; ++i) {
    const double v = x[i];
    y[i] = 0.5 * v * (1.0 + std::tanh(kSqrt2OverPi * (v + kGeluCubic * v * v * v)));
  }
}

void GeluBackwardChunk(const double* x, const double* dy, int64_t n, double* dx) {
  for (int64_t i = 0; i < n; ++i) {
    const double v = x[i];
    const double t = std::tanh(kSqrt2OverPi * (v + kGeluCubic * v * v * v));
    const double grad =
        0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * kSqrt2OverPi * (1.0 + 3.0 * kGeluCubic * v * v);
    dx[i] = dy[i] * grad;
  }
}

// The dropout keep test for elements [e0, e1) of one row, with HashKeys
// unrolled (HashKeys(a, rest...) = Mix64(a ^ Mix64(HashKeys(rest...) + C)))
// and UniformFloat(h) >= p done exactly in integers:
// (h >> 40) * 2^-24 >= p  <=>  (h >> 40) >= ceil(p * 2^24).
// Equality with DropoutKeep is a unit test.
struct RowKeys {
  uint64_t seed, purpose, step, layer, sample_key, site, threshold;
};

L2L_ALWAYS_INLINE uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
L2L_ALWAYS_INLINE uint64_t Fold(uint64_t a, uint64_t h) {
  return Mix(a ^ Mix(h + 0x632be59bd9b4e019ull));
}

L2L_TARGET_CLONES void MaskChunk(const RowKeys& k, int64_t e0, int64_t e1, uint8_t* keep) {
  const RowKeys c = k;
#pragma omp simd
  for (int64_t e = e0; e < e1; ++e) {
    uint64_t h = Mix(static_cast<uint64_t>(e));
    h = Fold(c.site, h);
    h = Fold(c.sample_key, h);
    h = Fold(c.layer, h);
    h = Fold(c.step, h);
    h = Fold(c.purpose, h);
    h = Fold(c.seed, h);
    keep[e - e0] = (h >> 40) >= c.threshold ? 1 : 0;
  }
}

constexpr int64_t kChunk = 4096;  // elements per OpenMP work item

// The exact GELU, 0.5 x (1 + erf(x / sqrt(2))), and its derivative, in T.
template <typename T>
T GeluErf(T v) {
  return T(0.5) * v * (T(1) + std::erf(v * static_cast<T>(kInvSqrt2)));
}
template <typename T>
T GeluErfGrad(T v) {
  return T(0.5) * (T(1) + std::erf(v * static_cast<T>(kInvSqrt2))) +
         v * std::exp(T(-0.5) * v * v) * static_cast<T>(kInvSqrt2Pi);
}

}  // namespace

template <typename T>
void GeluForward(const T* x, int64_t n, T* y, Gelu kind) {
  if (kind == Gelu::kErf) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) y[i] = GeluErf(x[i]);
    return;
  }
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t i0 = c * kChunk;
    GeluForwardChunk(x + i0, std::min(kChunk, n - i0), y + i0);
  }
}

template <typename T>
void GeluBackward(const T* x, const T* dy, int64_t n, T* dx, Gelu kind) {
  if (kind == Gelu::kErf) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) dx[i] = dy[i] * GeluErfGrad(x[i]);
    return;
  }
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t i0 = c * kChunk;
    GeluBackwardChunk(x + i0, dy + i0, std::min(kChunk, n - i0), dx + i0);
  }
}

template <typename T>
void SwigluForward(const T* gu, int64_t n, int64_t f, T* y) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < n; ++r) {
    const T* g = gu + r * 2 * f;
    const T* u = g + f;
    T* yr = y + r * f;
    for (int64_t j = 0; j < f; ++j) {
      const T s = T(1) / (T(1) + std::exp(-g[j]));
      yr[j] = g[j] * s * u[j];
    }
  }
}

template <typename T>
void SwigluBackward(const T* gu, const T* dy, int64_t n, int64_t f, T* dgu) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < n; ++r) {
    const T* g = gu + r * 2 * f;
    const T* u = g + f;
    const T* dyr = dy + r * f;
    T* dg = dgu + r * 2 * f;
    T* du = dg + f;
    for (int64_t j = 0; j < f; ++j) {
      const T gj = g[j], uj = u[j];  // read both first: dgu may alias gu
      const T s = T(1) / (T(1) + std::exp(-gj));
      du[j] = dyr[j] * (gj * s);
      dg[j] = dyr[j] * uj * (s + gj * s * (T(1) - s));
    }
  }
}

void DropoutMask(const DropoutKeys& keys, int64_t rows, int64_t row_elems, uint8_t* keep) {
  L2L_CHECK(keys.p >= 0.0f && keys.p < 1.0f) << "dropout p = " << keys.p;
  L2L_CHECK(rows == 0 || keys.sample_keys != nullptr) << "dropout needs sample_keys";
  const uint64_t threshold =
      static_cast<uint64_t>(std::ceil(static_cast<double>(keys.p) * 16777216.0));
  const int64_t chunks_per_row = (row_elems + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static)
  for (int64_t w = 0; w < rows * chunks_per_row; ++w) {
    const int64_t row = w / chunks_per_row;
    const int64_t e0 = (w % chunks_per_row) * kChunk;
    const int64_t e1 = std::min(row_elems, e0 + kChunk);
    const RowKeys k{keys.seed,
                    static_cast<uint64_t>(RngPurpose::kDropout),
                    static_cast<uint64_t>(keys.step),
                    static_cast<uint64_t>(keys.layer),
                    keys.sample_keys[row],
                    static_cast<uint64_t>(keys.site),
                    threshold};
    MaskChunk(k, e0, e1, keep + row * row_elems + e0);
  }
}

template <typename T>
void DropoutForward(const T* x, const uint8_t* keep, int64_t n, float p, T* y) {
  const T scale = DropoutScale<T>(p);
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) y[i] = keep[i] ? x[i] * scale : T(0);
}

template <typename T>
void DropoutBackward(const T* dy, const uint8_t* keep, int64_t n, float p, T* dx) {
  DropoutForward(dy, keep, n, p, dx);  // the mask is linear: same op
}

template <typename T>
void Add(const T* a, const T* b, int64_t n, T* y) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) y[i] = a[i] + b[i];
}

#define L2L_INSTANTIATE(T)                                                        \
  template void SoftmaxForward<T>(const T*, int64_t, int64_t, T*);                \
  template void SoftmaxBackward<T>(const T*, const T*, int64_t, int64_t, T*);     \
  template void GeluForward<T>(const T*, int64_t, T*, Gelu);                      \
  template void GeluBackward<T>(const T*, const T*, int64_t, T*, Gelu);           \
  template void SwigluForward<T>(const T*, int64_t, int64_t, T*);                 \
  template void SwigluBackward<T>(const T*, const T*, int64_t, int64_t, T*);      \
  template void DropoutForward<T>(const T*, const uint8_t*, int64_t, float, T*);  \
  template void DropoutBackward<T>(const T*, const uint8_t*, int64_t, float, T*); \
  template void Add<T>(const T*, const T*, int64_t, T*);
L2L_INSTANTIATE(float)
L2L_INSTANTIATE(double)
#undef L2L_INSTANTIATE

}  // namespace l2l::kernels::cpu
