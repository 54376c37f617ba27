// AdamW on device arrays for the resident mode: kernels::AdamWUpdate's update,
// bit for bit (see device_math.h's AdamWStep: IEEE-rounded operations in the
// CPU kernel's order, no FMA contraction).
#include "common.cuh"

namespace l2l::kernels::cuda {
namespace {

using internal::GlobalThread;
using internal::GridFor;
using internal::GridStride;
using internal::kThreads;

__device__ __forceinline__ void StoreCopy(bf16* copy, float p) { *copy = internal::RoundToBF16(p); }
__device__ __forceinline__ void StoreCopy(float* copy, float p) { *copy = p; }

template <typename Copy>
__global__ void AdamWKernel(internal::AdamWConstants c, int64_t n, float* p, const float* g,
                            float* m, float* v, Copy* copy) {
  for (int64_t i = GlobalThread(); i < n; i += GridStride()) {
    float pi = p[i], mi = m[i], vi = v[i];
    internal::AdamWStep(c, &pi, g[i], &mi, &vi);
    p[i] = pi;
    m[i] = mi;
    v[i] = vi;
    if (copy != nullptr) StoreCopy(copy + i, pi);
  }
}

template <typename Copy>
Status AdamW(const char* op, cudaStream_t stream, const AdamWParams& hp, int64_t n, float* p,
             const float* g, float* m, float* v, Copy* copy) {
  RETURN_IF_ERROR(internal::Validator(op)
                      .NonNegative("n", n)
                      .AtLeast("step (1-based)", hp.step, 1)
                      .That(hp.beta1 >= 0.0f && hp.beta1 < 1.0f, "beta1 in [0, 1)")
                      .That(hp.beta2 >= 0.0f && hp.beta2 < 1.0f, "beta2 in [0, 1)")
                      .NotNull("p", p, n)
                      .NotNull("g", g, n)
                      .NotNull("m", m, n)
                      .NotNull("v", v, n)
                      .status());
  if (n == 0) return OkStatus();
  const internal::AdamWConstants c = internal::MakeAdamWConstants(
      hp.lr, hp.beta1, hp.beta2, hp.eps, hp.weight_decay, hp.step, hp.grad_scale);
  AdamWKernel<<<GridFor(n), kThreads, 0, stream>>>(c, n, p, g, m, v, copy);
  L2L_CUDA_RETURN_IF_LAUNCH_FAILED();
  return OkStatus();
}

}  // namespace

Status AdamWUpdate(cudaStream_t stream, const AdamWParams& hp, int64_t n, float* p, const float* g,
                   float* m, float* v, bf16* compute_copy) {
  return AdamW("AdamWUpdate", stream, hp, n, p, g, m, v, compute_copy);
}

Status AdamWUpdateF32Copy(cudaStream_t stream, const AdamWParams& hp, int64_t n, float* p,
                          const float* g, float* m, float* v, float* compute_copy) {
  return AdamW("AdamWUpdateF32Copy", stream, hp, n, p, g, m, v, compute_copy);
}

}  // namespace l2l::kernels::cuda
