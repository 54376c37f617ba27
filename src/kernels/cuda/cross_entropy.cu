// Softmax cross-entropy with ignored targets: one block per row computes the
// row's loss (max and sum of exponentials by fixed-order block reductions) and
// its dlogits; then one block sums the per-row losses in a fixed order, so the
// loss is bitwise reproducible without atomics.
#include <cmath>

#include "common.cuh"
#include "l2l/kernels/cpu.h"

namespace l2l::kernels::cuda {
namespace {

using internal::Load;
using internal::Store;

constexpr int kRowThreads = 256;     // per logits row
constexpr int kStatsThreads = 1024;  // the single summing block

// Tree reductions over a block's shared array: a fixed order for a fixed
// blockDim. All threads must call them; they return the result to all.
__device__ float BlockSum(float v, float* red) {
  const int t = threadIdx.x;
  red[t] = v;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (t < s) red[t] += red[t + s];
    __syncthreads();
  }
  const float total = red[0];
  __syncthreads();
  return total;
}

__device__ float BlockMax(float v, float* red) {
  const int t = threadIdx.x;
  red[t] = v;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (t < s) red[t] = fmaxf(red[t], red[t + s]);
    __syncthreads();
  }
  const float total = red[0];
  __syncthreads();
  return total;
}

template <typename T>
__global__ void __launch_bounds__(kRowThreads)
    CrossEntropyRowKernel(const T* logits, const int32_t* targets, int64_t vocab, float gscale,
                          T* dlogits, double* row_loss) {
  __shared__ float red[kRowThreads];
  const int64_t r = blockIdx.x;
  const int t = threadIdx.x;
  const T* lr = logits + r * vocab;
  T* dr = dlogits != nullptr ? dlogits + r * vocab : nullptr;
  const int32_t target = targets[r];
  if (target < 0 || target >= vocab) {  // ignored (or bad, counted by the stats kernel)
    if (dr != nullptr) {
      for (int64_t j = t; j < vocab; j += kRowThreads) Store(dr + j, 0.0f);
    }
    if (t == 0) row_loss[r] = 0.0;
    return;  // the whole block leaves: target is uniform
  }
  float mx = -INFINITY;
  for (int64_t j = t; j < vocab; j += kRowThreads) mx = fmaxf(mx, Load(lr + j));
  mx = BlockMax(mx, red);
  float sum = 0.0f;
  for (int64_t j = t; j < vocab; j += kRowThreads) sum += expf(Load(lr + j) - mx);
  sum = BlockSum(sum, red);
  // Every thread has read every logit it needs except the target's; read it,
  // then synchronise before anyone overwrites logits in place.
  const float target_logit = Load(lr + target);
  __syncthreads();
  if (t == 0) row_loss[r] = log(static_cast<double>(sum)) - static_cast<double>(target_logit - mx);
  if (dr != nullptr) {
    const float inv = 1.0f / sum;
    for (int64_t j = t; j < vocab; j += kRowThreads) {
      float g = expf(Load(lr + j) - mx) * inv * gscale;
      if (j == target) g -= gscale;
      Store(dr + j, g);
    }
  }
}

__global__ void __launch_bounds__(kStatsThreads)
    CrossEntropyStatsKernel(const double* row_loss, const int32_t* targets, int64_t n,
                            int64_t vocab, CrossEntropyStats* stats) {
  __shared__ double loss[kStatsThreads];
  __shared__ long long count[kStatsThreads];
  __shared__ long long bad[kStatsThreads];
  const int t = threadIdx.x;
  double l = 0.0;
  long long c = 0, b = 0;
  for (int64_t i = t; i < n; i += kStatsThreads) {
    l += row_loss[i];
    const int32_t target = targets[i];
    if (target >= 0 && target < vocab) {
      ++c;
    } else if (target != kNoTarget) {
      ++b;
    }
  }
  loss[t] = l;
  count[t] = c;
  bad[t] = b;
  __syncthreads();
  for (int s = kStatsThreads / 2; s > 0; s >>= 1) {
    if (t < s) {
      loss[t] += loss[t + s];
      count[t] += count[t + s];
      bad[t] += bad[t + s];
    }
    __syncthreads();
  }
  if (t == 0) {
    stats->loss_sum = loss[0];
    stats->count = count[0];
    stats->bad_targets = bad[0];
  }
}

}  // namespace

template <typename T>
Status CrossEntropy(cudaStream_t stream, const T* logits, const int32_t* targets, int64_t n,
                    int64_t vocab, double grad_scale, T* dlogits, double* row_loss,
                    CrossEntropyStats* stats) {
  RETURN_IF_ERROR(internal::Validator("CrossEntropy")
                      .NonNegative("n", n)
                      .AtMost("n", n, INT32_MAX)
                      .Positive("vocab", vocab)
                      .AtMost("vocab", vocab, INT32_MAX)
                      .NotNull("logits", logits, n * vocab)
                      .NotNull("targets", targets, n)
                      .NotNull("row_loss", row_loss, n)
                      .NotNull("stats", stats, 1)
                      .status());
  if (n > 0) {
    CrossEntropyRowKernel<<<static_cast<unsigned>(n), kRowThreads, 0, stream>>>(
        logits, targets, vocab, static_cast<float>(grad_scale), dlogits, row_loss);
    L2L_CUDA_RETURN_IF_LAUNCH_FAILED();
  }
  // Also for n == 0, so that *stats is always written.
  CrossEntropyStatsKernel<<<1, kStatsThreads, 0, stream>>>(row_loss, targets, n, vocab, stats);
  L2L_CUDA_RETURN_IF_LAUNCH_FAILED();
  return OkStatus();
}

template Status CrossEntropy<float>(cudaStream_t, const float*, const int32_t*, int64_t, int64_t,
                                    double, float*, double*, CrossEntropyStats*);
template Status CrossEntropy<bf16>(cudaStream_t, const bf16*, const int32_t*, int64_t, int64_t,
                                   double, bf16*, double*, CrossEntropyStats*);

}  // namespace l2l::kernels::cuda
