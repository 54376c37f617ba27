// Elementwise ops: GELU (plain and fused with the bias), keyed dropout masks
// and their application, residual add, and bf16 <-> fp32 conversion. All are
// grid-stride loops; each element is computed in fp32 and rounded once.
#include "column_reduce.cuh"
#include "common.cuh"

namespace l2l::kernels::cuda {
namespace {

using internal::GlobalThread;
using internal::GridFor;
using internal::GridStride;
using internal::kThreads;
using internal::Load;
using internal::Store;

static_assert(internal::kDropoutPurpose == static_cast<uint64_t>(RngPurpose::kDropout),
              "device_math.h's dropout purpose must be core/rng.h's");

// The CPU float kernel's constants and formulation: 0.5 x (1 + tanh(u)) is
// evaluated as x * sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x³).
constexpr float kSqrt2OverPiF = static_cast<float>(0.7978845608028654);
constexpr float kGeluCubicF = static_cast<float>(0.044715);

__device__ __forceinline__ float GeluSigmoid2u(float v) {
  const float u = kSqrt2OverPiF * (v + kGeluCubicF * v * v * v);
  return 1.0f / (1.0f + expf(-2.0f * u));
}
__device__ __forceinline__ float Gelu(float v) { return v * GeluSigmoid2u(v); }
// d/dv [v * sigmoid(2u)] = sg + v * sg (1 - sg) * 2 u'(v).
__device__ __forceinline__ float GeluGrad(float v) {
  const float sg = GeluSigmoid2u(v);
  const float du = kSqrt2OverPiF * (1.0f + 3.0f * kGeluCubicF * v * v);
  return sg + v * sg * (1.0f - sg) * 2.0f * du;
}

template <typename T>
__global__ void GeluForwardKernel(const T* x, int64_t n, T* y) {
  for (int64_t i = GlobalThread(); i < n; i += GridStride()) Store(y + i, Gelu(Load(x + i)));
}

template <typename T>
__global__ void GeluBackwardKernel(const T* x, const T* dy, int64_t n, T* dx) {
  for (int64_t i = GlobalThread(); i < n; i += GridStride()) {
    Store(dx + i, Load(dy + i) * GeluGrad(Load(x + i)));
  }
}

template <typename T>
__global__ void BiasGeluForwardKernel(const T* x, const T* bias, int64_t rows, int64_t cols, T* pre,
                                      T* y) {
  const int64_t n = rows * cols;
  for (int64_t i = GlobalThread(); i < n; i += GridStride()) {
    float h = Load(x + i);  // read before pre / y (either may alias x) are written
    if (bias != nullptr) h += Load(bias + i % cols);
    if (pre != nullptr) Store(pre + i, h);
    Store(y + i, Gelu(h));
  }
}

__global__ void DropoutMaskKernel(internal::DropoutHashKeys keys, const uint64_t* sample_keys,
                                  int64_t rows, int64_t row_elems, uint8_t* keep) {
  const int64_t n = rows * row_elems;
  for (int64_t i = GlobalThread(); i < n; i += GridStride()) {
    const int64_t row = i / row_elems;
    const int64_t elem = i - row * row_elems;
    keep[i] =
        internal::DropoutKeepHash(keys, sample_keys[row], static_cast<uint64_t>(elem)) ? 1 : 0;
  }
}

template <typename T>
__global__ void DropoutApplyKernel(const T* x, const uint8_t* keep, int64_t n, float scale, T* y) {
  for (int64_t i = GlobalThread(); i < n; i += GridStride()) {
    Store(y + i, keep[i] ? Load(x + i) * scale : 0.0f);
  }
}

template <typename T>
__global__ void AddKernel(const T* a, const T* b, int64_t n, T* y) {
  for (int64_t i = GlobalThread(); i < n; i += GridStride())
    Store(y + i, Load(a + i) + Load(b + i));
}

__global__ void F32ToBF16Kernel(const float* x, int64_t n, bf16* y) {
  for (int64_t i = GlobalThread(); i < n; i += GridStride()) y[i] = internal::RoundToBF16(x[i]);
}

__global__ void BF16ToF32Kernel(const bf16* x, int64_t n, float* y) {
  for (int64_t i = GlobalThread(); i < n; i += GridStride()) y[i] = Load(x + i);
}

template <typename T>
Status DropoutApply(const char* op, cudaStream_t stream, const T* x, const uint8_t* keep, int64_t n,
                    float p, T* y) {
  RETURN_IF_ERROR(internal::Validator(op)
                      .NonNegative("n", n)
                      .DropoutP("p", p)
                      .NotNull("input", x, n)
                      .NotNull("keep", keep, n)
                      .NotNull("output", y, n)
                      .status());
  if (n == 0) return OkStatus();
  DropoutApplyKernel<<<GridFor(n), kThreads, 0, stream>>>(x, keep, n, DropoutScale<float>(p), y);
  L2L_CUDA_RETURN_IF_LAUNCH_FAILED();
  return OkStatus();
}

}  // namespace

template <typename T>
Status GeluForward(cudaStream_t stream, const T* x, int64_t n, T* y) {
  RETURN_IF_ERROR(internal::Validator("GeluForward")
                      .NonNegative("n", n)
                      .NotNull("x", x, n)
                      .NotNull("y", y, n)
                      .status());
  if (n == 0) return OkStatus();
  GeluForwardKernel<<<GridFor(n), kThreads, 0, stream>>>(x, n, y);
  L2L_CUDA_RETURN_IF_LAUNCH_FAILED();
  return OkStatus();
}

template <typename T>
Status GeluBackward(cudaStream_t stream, const T* x, const T* dy, int64_t n, T* dx) {
  RETURN_IF_ERROR(internal::Validator("GeluBackward")
                      .NonNegative("n", n)
                      .NotNull("x", x, n)
                      .NotNull("dy", dy, n)
                      .NotNull("dx", dx, n)
                      .status());
  if (n == 0) return OkStatus();
  GeluBackwardKernel<<<GridFor(n), kThreads, 0, stream>>>(x, dy, n, dx);
  L2L_CUDA_RETURN_IF_LAUNCH_FAILED();
  return OkStatus();
}

template <typename T>
Status BiasGeluForward(cudaStream_t stream, const T* x, const T* bias, int64_t rows, int64_t cols,
                       T* pre, T* y) {
  RETURN_IF_ERROR(internal::Validator("BiasGeluForward")
                      .NonNegative("rows", rows)
                      .NonNegative("cols", cols)
                      .NotNull("x", x, rows * cols)
                      .NotNull("y", y, rows * cols)
                      .That(pre == nullptr || pre != y, "pre and y to differ")
                      .status());
  if (rows == 0 || cols == 0) return OkStatus();
  BiasGeluForwardKernel<<<GridFor(rows * cols), kThreads, 0, stream>>>(x, bias, rows, cols, pre, y);
  L2L_CUDA_RETURN_IF_LAUNCH_FAILED();
  return OkStatus();
}

template <typename T>
Status BiasGeluBackward(cudaStream_t stream, const T* pre, const T* dy, int64_t rows, int64_t cols,
                        T* dx, float* dbias, float* scratch) {
  RETURN_IF_ERROR(
      internal::Validator("BiasGeluBackward")
          .NonNegative("rows", rows)
          .NonNegative("cols", cols)
          .NotNull("pre", pre, rows * cols)
          .NotNull("dy", dy, rows * cols)
          .NotNull("dx", dx, rows * cols)
          .NotNull("scratch", scratch, dbias != nullptr ? ColumnSumScratchElems(rows, cols) : 0)
          .status());
  if (rows == 0 || cols == 0) return OkStatus();
  GeluBackwardKernel<<<GridFor(rows * cols), kThreads, 0, stream>>>(pre, dy, rows * cols, dx);
  L2L_CUDA_RETURN_IF_LAUNCH_FAILED();
  if (dbias != nullptr)
    RETURN_IF_ERROR(ColumnSumAccumulate<T>(stream, dx, rows, cols, dbias, scratch));
  return OkStatus();
}

Status DropoutMask(cudaStream_t stream, const DropoutKeys& keys, int64_t rows, int64_t row_elems,
                   uint8_t* keep) {
  RETURN_IF_ERROR(internal::Validator("DropoutMask")
                      .NonNegative("rows", rows)
                      .NonNegative("row_elems", row_elems)
                      .DropoutP("keys.p", keys.p)
                      .NotNull("keys.sample_keys", keys.sample_keys, row_elems > 0 ? rows : 0)
                      .NotNull("keep", keep, rows * row_elems)
                      .status());
  if (rows == 0 || row_elems == 0) return OkStatus();
  const internal::DropoutHashKeys k{
      keys.seed, static_cast<uint64_t>(keys.step), static_cast<uint64_t>(keys.layer),
      static_cast<uint64_t>(keys.site), internal::DropoutThreshold(keys.p)};
  DropoutMaskKernel<<<GridFor(rows * row_elems), kThreads, 0, stream>>>(k, keys.sample_keys, rows,
                                                                        row_elems, keep);
  L2L_CUDA_RETURN_IF_LAUNCH_FAILED();
  return OkStatus();
}

template <typename T>
Status DropoutForward(cudaStream_t stream, const T* x, const uint8_t* keep, int64_t n, float p,
                      T* y) {
  return DropoutApply("DropoutForward", stream, x, keep, n, p, y);
}

template <typename T>
Status DropoutBackward(cudaStream_t stream, const T* dy, const uint8_t* keep, int64_t n, float p,
                       T* dx) {
  return DropoutApply("DropoutBackward", stream, dy, keep, n, p, dx);  // the mask is linear
}

template <typename T>
Status Add(cudaStream_t stream, const T* a, const T* b, int64_t n, T* y) {
  RETURN_IF_ERROR(internal::Validator("Add")
                      .NonNegative("n", n)
                      .NotNull("a", a, n)
                      .NotNull("b", b, n)
                      .NotNull("y", y, n)
                      .status());
  if (n == 0) return OkStatus();
  AddKernel<<<GridFor(n), kThreads, 0, stream>>>(a, b, n, y);
  L2L_CUDA_RETURN_IF_LAUNCH_FAILED();
  return OkStatus();
}

Status ConvertF32ToBF16(cudaStream_t stream, const float* x, int64_t n, bf16* y) {
  RETURN_IF_ERROR(internal::Validator("ConvertF32ToBF16")
                      .NonNegative("n", n)
                      .NotNull("x", x, n)
                      .NotNull("y", y, n)
                      .status());
  if (n == 0) return OkStatus();
  F32ToBF16Kernel<<<GridFor(n), kThreads, 0, stream>>>(x, n, y);
  L2L_CUDA_RETURN_IF_LAUNCH_FAILED();
  return OkStatus();
}

Status ConvertBF16ToF32(cudaStream_t stream, const bf16* x, int64_t n, float* y) {
  RETURN_IF_ERROR(internal::Validator("ConvertBF16ToF32")
                      .NonNegative("n", n)
                      .NotNull("x", x, n)
                      .NotNull("y", y, n)
                      .status());
  if (n == 0) return OkStatus();
  BF16ToF32Kernel<<<GridFor(n), kThreads, 0, stream>>>(x, n, y);
  L2L_CUDA_RETURN_IF_LAUNCH_FAILED();
  return OkStatus();
}

#define L2L_INSTANTIATE(T)                                                                        \
  template Status GeluForward<T>(cudaStream_t, const T*, int64_t, T*);                            \
  template Status GeluBackward<T>(cudaStream_t, const T*, const T*, int64_t, T*);                 \
  template Status BiasGeluForward<T>(cudaStream_t, const T*, const T*, int64_t, int64_t, T*, T*); \
  template Status BiasGeluBackward<T>(cudaStream_t, const T*, const T*, int64_t, int64_t, T*,     \
                                      float*, float*);                                            \
  template Status DropoutForward<T>(cudaStream_t, const T*, const uint8_t*, int64_t, float, T*);  \
  template Status DropoutBackward<T>(cudaStream_t, const T*, const uint8_t*, int64_t, float, T*); \
  template Status Add<T>(cudaStream_t, const T*, const T*, int64_t, T*);
L2L_INSTANTIATE(float)
L2L_INSTANTIATE(bf16)
#undef L2L_INSTANTIATE

}  // namespace l2l::kernels::cuda
