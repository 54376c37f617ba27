// Layernorm and RMSNorm forward / backward, one warp per row (fp32
// statistics; layernorm's variance two-pass as in the CPU kernel), and the
// deterministic gain / bias gradients through the two-pass column reduction.
#include <climits>

#include "column_reduce.cuh"
#include "common.cuh"

namespace l2l::kernels::cuda {
namespace {

using internal::kRowWarps;
using internal::kWarp;
using internal::Load;
using internal::RowBlocks;
using internal::Store;
using internal::WarpSum;

template <typename T>
__global__ void __launch_bounds__(kRowWarps* kWarp)
    LayerNormForwardKernel(const T* x, const T* gain, const T* bias, int64_t n, int c, float eps,
                           T* y, float* mean, float* rstd) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowWarps + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (row >= n) return;  // whole warps leave together
  const T* xr = x + row * c;
  T* yr = y + row * c;
  float sum = 0.0f;
  for (int j = lane; j < c; j += kWarp) sum += Load(xr + j);
  const float m = WarpSum(sum) / static_cast<float>(c);
  float var = 0.0f;
  for (int j = lane; j < c; j += kWarp) {
    const float d = Load(xr + j) - m;
    var += d * d;
  }
  var = WarpSum(var) / static_cast<float>(c);
  const float s = 1.0f / sqrtf(var + eps);
  // Every lane has read its whole row above (the shuffles converge the warp),
  // so writing y in place of x is safe.
  for (int j = lane; j < c; j += kWarp) {
    Store(yr + j, (Load(xr + j) - m) * s * Load(gain + j) + Load(bias + j));
  }
  if (lane == 0) {
    if (mean != nullptr) mean[row] = m;
    if (rstd != nullptr) rstd[row] = s;
  }
}

// (dy * xhat, dy) at (r, col): the gain and bias gradient terms.
template <typename T>
struct LayerNormParamTerms {
  const T* x;
  const T* dy;
  const float* mean;
  const float* rstd;
  int64_t c;
  __device__ float2 operator()(int64_t r, int64_t col) const {
    const float d = Load(dy + r * c + col);
    const float xhat = (Load(x + r * c + col) - mean[r]) * rstd[r];
    return make_float2(d * xhat, d);
  }
};

// dx = (dy*gain - mean(dy*gain) - xhat * mean(dy*gain*xhat)) * rstd, per row.
template <typename T>
__global__ void __launch_bounds__(kRowWarps* kWarp)
    LayerNormBackwardDxKernel(const T* x, const T* gain, const float* mean, const float* rstd,
                              const T* dy, int64_t n, int c, T* dx, Accum accum) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowWarps + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (row >= n) return;
  const T* xr = x + row * c;
  const T* dyr = dy + row * c;
  T* dxr = dx + row * c;
  const float m = mean[row], s = rstd[row];
  float dnorm_sum = 0.0f, dnorm_xhat_sum = 0.0f;
  for (int j = lane; j < c; j += kWarp) {
    const float dnorm = Load(dyr + j) * Load(gain + j);
    dnorm_sum += dnorm;
    dnorm_xhat_sum += dnorm * ((Load(xr + j) - m) * s);
  }
  const float dnorm_mean = WarpSum(dnorm_sum) / static_cast<float>(c);
  const float dnorm_xhat_mean = WarpSum(dnorm_xhat_sum) / static_cast<float>(c);
  for (int j = lane; j < c; j += kWarp) {  // dx may alias dy: each lane reads, then writes, j
    const float xhat = (Load(xr + j) - m) * s;
    float v = (Load(dyr + j) * Load(gain + j) - dnorm_mean - xhat * dnorm_xhat_mean) * s;
    if (accum == Accum::kAdd) v += Load(dxr + j);
    Store(dxr + j, v);
  }
}

// y = gain * (x * rstd), rstd = 1 / sqrt(mean(x²) + eps): cpu::RmsNormForward.
template <typename T>
__global__ void __launch_bounds__(kRowWarps* kWarp)
    RmsNormForwardKernel(const T* x, const T* gain, int64_t n, int c, float eps, T* y,
                         float* rstd) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowWarps + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (row >= n) return;  // whole warps leave together
  const T* xr = x + row * c;
  T* yr = y + row * c;
  float sq = 0.0f;
  for (int j = lane; j < c; j += kWarp) {
    const float v = Load(xr + j);
    sq += v * v;
  }
  const float s = 1.0f / sqrtf(WarpSum(sq) / static_cast<float>(c) + eps);
  // Each lane rewrites only the elements it read itself: in place is safe.
  for (int j = lane; j < c; j += kWarp) Store(yr + j, Load(gain + j) * (Load(xr + j) * s));
  if (lane == 0 && rstd != nullptr) rstd[row] = s;
}

// (dy * xhat, unused) at (r, col): the RMSNorm gain gradient term.
template <typename T>
struct RmsNormGainTerm {
  const T* x;
  const T* dy;
  const float* rstd;
  int64_t c;
  __device__ float2 operator()(int64_t r, int64_t col) const {
    return make_float2(Load(dy + r * c + col) * (Load(x + r * c + col) * rstd[r]), 0.0f);
  }
};

// dx = (dy*gain - xhat * mean(dy*gain*xhat)) * rstd, xhat = x * rstd, per row.
template <typename T>
__global__ void __launch_bounds__(kRowWarps* kWarp)
    RmsNormBackwardDxKernel(const T* x, const T* gain, const float* rstd, const T* dy, int64_t n,
                            int c, T* dx, Accum accum) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowWarps + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (row >= n) return;
  const T* xr = x + row * c;
  const T* dyr = dy + row * c;
  T* dxr = dx + row * c;
  const float s = rstd[row];
  float dot = 0.0f;
  for (int j = lane; j < c; j += kWarp) {
    dot += Load(dyr + j) * Load(gain + j) * (Load(xr + j) * s);
  }
  dot = WarpSum(dot) / static_cast<float>(c);
  for (int j = lane; j < c; j += kWarp) {  // dx may alias dy: each lane reads, then writes, j
    float v = (Load(dyr + j) * Load(gain + j) - Load(xr + j) * s * dot) * s;
    if (accum == Accum::kAdd) v += Load(dxr + j);
    Store(dxr + j, v);
  }
}

}  // namespace

template <typename T>
Status LayerNormForward(cudaStream_t stream, const T* x, const T* gain, const T* bias, int64_t n,
                        int64_t c, double eps, T* y, float* mean, float* rstd) {
  RETURN_IF_ERROR(internal::Validator("LayerNormForward")
                      .NonNegative("n", n)
                      .Positive("c", c)
                      .AtMost("c", c, INT_MAX)
                      .That(eps > 0.0, "eps > 0")
                      .NotNull("x", x, n * c)
                      .NotNull("gain", gain, n > 0 ? c : 0)
                      .NotNull("bias", bias, n > 0 ? c : 0)
                      .NotNull("y", y, n * c)
                      .status());
  if (n == 0) return OkStatus();
  LayerNormForwardKernel<<<RowBlocks(n), kRowWarps * kWarp, 0, stream>>>(
      x, gain, bias, n, static_cast<int>(c), static_cast<float>(eps), y, mean, rstd);
  L2L_CUDA_RETURN_IF_LAUNCH_FAILED();
  return OkStatus();
}

int64_t LayerNormBackwardScratchElems(int64_t n, int64_t c) {
  return 2 * ColumnSumScratchElems(n, c);
}

template <typename T>
Status LayerNormBackward(cudaStream_t stream, const T* x, const T* gain, const float* mean,
                         const float* rstd, const T* dy, int64_t n, int64_t c, T* dx, float* dgain,
                         float* dbias, float* scratch, Accum dx_accum) {
  const bool params = dgain != nullptr || dbias != nullptr;
  RETURN_IF_ERROR(internal::Validator("LayerNormBackward")
                      .NonNegative("n", n)
                      .Positive("c", c)
                      .AtMost("c", c, INT_MAX)
                      .NotNull("x", x, n * c)
                      .NotNull("gain", gain, dx != nullptr && n > 0 ? c : 0)
                      .NotNull("mean", mean, n)
                      .NotNull("rstd", rstd, n)
                      .NotNull("dy", dy, n * c)
                      .NotNull("scratch", scratch, params ? LayerNormBackwardScratchElems(n, c) : 0)
                      .That(!(dx_accum == Accum::kAdd && static_cast<const void*>(dx) == dy),
                            "dx not aliasing dy with Accum::kAdd")
                      .status());
  if (n == 0) return OkStatus();
  // Parameter gradients first: dx may alias dy, and the stream orders them.
  if (params) {
    RETURN_IF_ERROR(internal::ColumnReduce<2>(stream, LayerNormParamTerms<T>{x, dy, mean, rstd, c},
                                              n, c, dgain, dbias, scratch));
  }
  if (dx != nullptr) {
    LayerNormBackwardDxKernel<<<RowBlocks(n), kRowWarps * kWarp, 0, stream>>>(
        x, gain, mean, rstd, dy, n, static_cast<int>(c), dx, dx_accum);
    L2L_CUDA_RETURN_IF_LAUNCH_FAILED();
  }
  return OkStatus();
}

template <typename T>
Status RmsNormForward(cudaStream_t stream, const T* x, const T* gain, int64_t n, int64_t c,
                      double eps, T* y, float* rstd) {
  RETURN_IF_ERROR(internal::Validator("RmsNormForward")
                      .NonNegative("n", n)
                      .Positive("c", c)
                      .AtMost("c", c, INT_MAX)
                      .That(eps > 0.0, "eps > 0")
                      .NotNull("x", x, n * c)
                      .NotNull("gain", gain, n > 0 ? c : 0)
                      .NotNull("y", y, n * c)
                      .status());
  if (n == 0) return OkStatus();
  RmsNormForwardKernel<<<RowBlocks(n), kRowWarps * kWarp, 0, stream>>>(
      x, gain, n, static_cast<int>(c), static_cast<float>(eps), y, rstd);
  L2L_CUDA_RETURN_IF_LAUNCH_FAILED();
  return OkStatus();
}

int64_t RmsNormBackwardScratchElems(int64_t n, int64_t c) { return ColumnSumScratchElems(n, c); }

template <typename T>
Status RmsNormBackward(cudaStream_t stream, const T* x, const T* gain, const float* rstd,
                       const T* dy, int64_t n, int64_t c, T* dx, float* dgain, float* scratch,
                       Accum dx_accum) {
  RETURN_IF_ERROR(
      internal::Validator("RmsNormBackward")
          .NonNegative("n", n)
          .Positive("c", c)
          .AtMost("c", c, INT_MAX)
          .NotNull("x", x, n * c)
          .NotNull("gain", gain, dx != nullptr && n > 0 ? c : 0)
          .NotNull("rstd", rstd, n)
          .NotNull("dy", dy, n * c)
          .NotNull("scratch", scratch, dgain != nullptr ? RmsNormBackwardScratchElems(n, c) : 0)
          .That(!(dx_accum == Accum::kAdd && static_cast<const void*>(dx) == dy),
                "dx not aliasing dy with Accum::kAdd")
          .status());
  if (n == 0) return OkStatus();
  // The gain gradient first: dx may alias dy, and the stream orders them.
  if (dgain != nullptr) {
    RETURN_IF_ERROR(internal::ColumnReduce<1>(stream, RmsNormGainTerm<T>{x, dy, rstd, c}, n, c,
                                              dgain, nullptr, scratch));
  }
  if (dx != nullptr) {
    RmsNormBackwardDxKernel<<<RowBlocks(n), kRowWarps * kWarp, 0, stream>>>(
        x, gain, rstd, dy, n, static_cast<int>(c), dx, dx_accum);
    L2L_CUDA_RETURN_IF_LAUNCH_FAILED();
  }
  return OkStatus();
}

#define L2L_INSTANTIATE(T)                                                                      \
  template Status LayerNormForward<T>(cudaStream_t, const T*, const T*, const T*, int64_t,      \
                                      int64_t, double, T*, float*, float*);                     \
  template Status LayerNormBackward<T>(cudaStream_t, const T*, const T*, const float*,          \
                                       const float*, const T*, int64_t, int64_t, T*, float*,    \
                                       float*, float*, Accum);                                  \
  template Status RmsNormForward<T>(cudaStream_t, const T*, const T*, int64_t, int64_t, double, \
                                    T*, float*);                                                \
  template Status RmsNormBackward<T>(cudaStream_t, const T*, const T*, const float*, const T*,  \
                                     int64_t, int64_t, T*, float*, float*, Accum);
L2L_INSTANTIATE(float)
L2L_INSTANTIATE(bf16)
#undef L2L_INSTANTIATE

}  // namespace l2l::kernels::cuda
