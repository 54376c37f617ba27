// Elementwise ops: GELU (tanh and erf forms, plain and fused with the bias),
// SwiGLU, keyed dropout masks and their application, residual add, and
// bf16 <-> fp32 conversion. All are grid-stride loops; each element is
// computed in fp32 and rounded once.
#include <type_traits>

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

constexpr float kInvSqrt2F = static_cast<float>(0.7071067811865476);    // 1 / sqrt(2)
constexpr float kInvSqrt2PiF = static_cast<float>(0.3989422804014327);  // 1 / sqrt(2 pi)

__device__ __forceinline__ float GeluSigmoid2u(float v) {
  const float u = kSqrt2OverPiF * (v + kGeluCubicF * v * v * v);
  return 1.0f / (1.0f + expf(-2.0f * u));
}

// GELU and its derivative for one kind; the kind is a template argument, so
// each kernel is compiled for one form.
template <Gelu kKind>
__device__ __forceinline__ float GeluOf(float v) {
  if constexpr (kKind == Gelu::kTanh) {
    return v * GeluSigmoid2u(v);
  } else {  // 0.5 v (1 + erf(v / sqrt(2)))
    return 0.5f * v * (1.0f + erff(v * kInvSqrt2F));
  }
}
template <Gelu kKind>
__device__ __forceinline__ float GeluGradOf(float v) {
  if constexpr (kKind == Gelu::kTanh) {
    // d/dv [v * sigmoid(2u)] = sg + v * sg (1 - sg) * 2 u'(v).
    const float sg = GeluSigmoid2u(v);
    const float du = kSqrt2OverPiF * (1.0f + 3.0f * kGeluCubicF * v * v);
    return sg + v * sg * (1.0f - sg) * 2.0f * du;
  } else {  // Φ(v) + v φ(v)
    return 0.5f * (1.0f + erff(v * kInvSqrt2F)) + v * expf(-0.5f * v * v) * kInvSqrt2PiF;
  }
}

template <Gelu kKind, typename T>
__global__ void GeluForwardKernel(const T* x, int64_t n, T* y) {
  for (int64_t i = GlobalThread(); i < n; i += GridStride()) {
    Store(y + i, GeluOf<kKind>(Load(x + i)));
  }
}

template <Gelu kKind, typename T>
__global__ void GeluBackwardKernel(const T* x, const T* dy, int64_t n, T* dx) {
  for (int64_t i = GlobalThread(); i < n; i += GridStride()) {
    Store(dx + i, Load(dy + i) * GeluGradOf<kKind>(Load(x + i)));
  }
}

template <Gelu kKind, typename T>
__global__ void BiasGeluForwardKernel(const T* x, const T* bias, int64_t rows, int64_t cols, T* pre,
                                      T* y) {
  const int64_t n = rows * cols;
  for (int64_t i = GlobalThread(); i < n; i += GridStride()) {
    float h = Load(x + i);  // read before pre / y (either may alias x) are written
    if (bias != nullptr) h += Load(bias + i % cols);
    if (pre != nullptr) Store(pre + i, h);
    Store(y + i, GeluOf<kKind>(h));
  }
}

// Calls launch(std::integral_constant<Gelu, k>{}) for k = kind, so that each
// launch site instantiates its kernel for both forms.
template <typename Launch>
void DispatchGelu(Gelu kind, Launch launch) {
  if (kind == Gelu::kErf) {
    launch(std::integral_constant<Gelu, Gelu::kErf>{});
  } else {
    launch(std::integral_constant<Gelu, Gelu::kTanh>{});
  }
}

// silu(g) = g * sigmoid(g), sigmoid as the CPU: 1 / (1 + exp(-g)).
__device__ __forceinline__ float Sigmoid(float g) { return 1.0f / (1.0f + expf(-g)); }

// y (n, f)[r, j] = silu(gu[r, j]) * gu[r, f + j].
template <typename T>
__global__ void SwigluForwardKernel(const T* gu, int64_t n, int64_t f, T* y) {
  const int64_t total = n * f;
  for (int64_t i = GlobalThread(); i < total; i += GridStride()) {
    const int64_t r = i / f, j = i - r * f;
    const T* g = gu + r * 2 * f + j;
    const float gv = Load(g);
    Store(y + i, gv * Sigmoid(gv) * Load(g + f));
  }
}

// dgu (n, 2f)[r] = [dy ⊙ up ⊙ silu'(gate) | dy ⊙ silu(gate)].
template <typename T>
__global__ void SwigluBackwardKernel(const T* gu, const T* dy, int64_t n, int64_t f, T* dgu) {
  const int64_t total = n * f;
  for (int64_t i = GlobalThread(); i < total; i += GridStride()) {
    const int64_t r = i / f, j = i - r * f;
    const int64_t gi = r * 2 * f + j;  // gate element; up is f further
    const float gv = Load(gu + gi), uv = Load(gu + gi + f), d = Load(dy + i);
    const float sg = Sigmoid(gv);
    Store(dgu + gi + f, d * (gv * sg));
    Store(dgu + gi, d * uv * (sg + gv * sg * (1.0f - sg)));
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
Status GeluForward(cudaStream_t stream, const T* x, int64_t n, T* y, Gelu kind) {
  RETURN_IF_ERROR(internal::Validator("GeluForward")
                      .NonNegative("n", n)
                      .NotNull("x", x, n)
                      .NotNull("y", y, n)
                      .status());
  if (n == 0) return OkStatus();
  DispatchGelu(kind, [&](auto k) {
    GeluForwardKernel<decltype(k)::value><<<GridFor(n), kThreads, 0, stream>>>(x, n, y);
  });
  L2L_CUDA_RETURN_IF_LAUNCH_FAILED();
  return OkStatus();
}

template <typename T>
Status GeluBackward(cudaStream_t stream, const T* x, const T* dy, int64_t n, T* dx, Gelu kind) {
  RETURN_IF_ERROR(internal::Validator("GeluBackward")
                      .NonNegative("n", n)
                      .NotNull("x", x, n)
                      .NotNull("dy", dy, n)
                      .NotNull("dx", dx, n)
                      .status());
  if (n == 0) return OkStatus();
  DispatchGelu(kind, [&](auto k) {
    GeluBackwardKernel<decltype(k)::value><<<GridFor(n), kThreads, 0, stream>>>(x, dy, n, dx);
  });
  L2L_CUDA_RETURN_IF_LAUNCH_FAILED();
  return OkStatus();
}

template <typename T>
Status BiasGeluForward(cudaStream_t stream, const T* x, const T* bias, int64_t rows, int64_t cols,
                       T* pre, T* y, Gelu kind) {
  RETURN_IF_ERROR(internal::Validator("BiasGeluForward")
                      .NonNegative("rows", rows)
                      .NonNegative("cols", cols)
                      .NotNull("x", x, rows * cols)
                      .NotNull("y", y, rows * cols)
                      .That(pre == nullptr || pre != y, "pre and y to differ")
                      .status());
  if (rows == 0 || cols == 0) return OkStatus();
  DispatchGelu(kind, [&](auto k) {
    BiasGeluForwardKernel<decltype(k)::value>
        <<<GridFor(rows * cols), kThreads, 0, stream>>>(x, bias, rows, cols, pre, y);
  });
  L2L_CUDA_RETURN_IF_LAUNCH_FAILED();
  return OkStatus();
}

template <typename T>
Status BiasGeluBackward(cudaStream_t stream, const T* pre, const T* dy, int64_t rows, int64_t cols,
                        T* dx, float* dbias, float* scratch, Gelu kind) {
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
  DispatchGelu(kind, [&](auto k) {
    GeluBackwardKernel<decltype(k)::value>
        <<<GridFor(rows * cols), kThreads, 0, stream>>>(pre, dy, rows * cols, dx);
  });
  L2L_CUDA_RETURN_IF_LAUNCH_FAILED();
  if (dbias != nullptr)
    RETURN_IF_ERROR(ColumnSumAccumulate<T>(stream, dx, rows, cols, dbias, scratch));
  return OkStatus();
}

template <typename T>
Status SwigluForward(cudaStream_t stream, const T* gu, int64_t n, int64_t f, T* y) {
  RETURN_IF_ERROR(internal::Validator("SwigluForward")
                      .NonNegative("n", n)
                      .NonNegative("f", f)
                      .NotNull("gu", gu, 2 * n * f)
                      .NotNull("y", y, n * f)
                      .That(n * f == 0 || static_cast<const void*>(y) != gu, "y not aliasing gu")
                      .status());
  if (n == 0 || f == 0) return OkStatus();
  SwigluForwardKernel<<<GridFor(n * f), kThreads, 0, stream>>>(gu, n, f, y);
  L2L_CUDA_RETURN_IF_LAUNCH_FAILED();
  return OkStatus();
}

template <typename T>
Status SwigluBackward(cudaStream_t stream, const T* gu, const T* dy, int64_t n, int64_t f, T* dgu) {
  RETURN_IF_ERROR(
      internal::Validator("SwigluBackward")
          .NonNegative("n", n)
          .NonNegative("f", f)
          .NotNull("gu", gu, 2 * n * f)
          .NotNull("dy", dy, n * f)
          .NotNull("dgu", dgu, 2 * n * f)
          // dgu may alias gu (the block writes d[gate | up] over its
          // input): each thread reads its gate, up and dy before writing.
          .That(n * f == 0 || static_cast<const void*>(dgu) != dy, "dgu not aliasing dy")
          .status());
  if (n == 0 || f == 0) return OkStatus();
  SwigluBackwardKernel<<<GridFor(n * f), kThreads, 0, stream>>>(gu, dy, n, f, dgu);
  L2L_CUDA_RETURN_IF_LAUNCH_FAILED();
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
  template Status GeluForward<T>(cudaStream_t, const T*, int64_t, T*, Gelu);                      \
  template Status GeluBackward<T>(cudaStream_t, const T*, const T*, int64_t, T*, Gelu);           \
  template Status BiasGeluForward<T>(cudaStream_t, const T*, const T*, int64_t, int64_t, T*, T*,  \
                                     Gelu);                                                       \
  template Status BiasGeluBackward<T>(cudaStream_t, const T*, const T*, int64_t, int64_t, T*,     \
                                      float*, float*, Gelu);                                      \
  template Status SwigluForward<T>(cudaStream_t, const T*, int64_t, int64_t, T*);                 \
  template Status SwigluBackward<T>(cudaStream_t, const T*, const T*, int64_t, int64_t, T*);      \
  template Status DropoutForward<T>(cudaStream_t, const T*, const uint8_t*, int64_t, float, T*);  \
  template Status DropoutBackward<T>(cudaStream_t, const T*, const uint8_t*, int64_t, float, T*); \
  template Status Add<T>(cudaStream_t, const T*, const T*, int64_t, T*);
L2L_INSTANTIATE(float)
L2L_INSTANTIATE(bf16)
#undef L2L_INSTANTIATE

}  // namespace l2l::kernels::cuda
