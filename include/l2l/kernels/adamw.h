// AdamW on the CPU, and the hyper-parameters every AdamW kernel takes (DESIGN
// §2 `kernels`). The eager parameter server (DESIGN §1, §3) runs it: each rank
// updates its fp32 master shard and both moments in host memory while the GPU
// keeps working, and refreshes the compute-dtype copy that the next gather
// sends. The CUDA kernels of the resident mode (kernels::cuda::AdamWUpdate in
// l2l/kernels/cuda.h) take the same AdamWParams and give bitwise the same
// p, m, v and copy.
//
// The update streams 28-30 bytes per parameter and does ~20 flops, so it is
// bound by memory bandwidth; the kernels are written to reach it: one pass over
// the data, per-call constants hoisted out of the loop (no pow per element),
// vectorised through runtime ISA dispatch (AVX-512F or AVX2 where the CPU has
// it, SSE2 otherwise; binaries stay generic x86-64, picked once at first call).
//
// Threading: every function here except SumSquares runs on the calling thread
// only. Callers parallelise by giving each thread its own contiguous slice of
// [0, n); because the update is elementwise and compiled without FMA
// contraction (-ffp-contract=off, src/kernels/adamw.cmake), vector body and
// scalar tail round identically, so the result is bitwise independent of how
// [0, n) is split. Calls on disjoint ranges may run concurrently.
#pragma once

#include <cstdint>

namespace l2l::kernels {

// Hyper-parameters of one AdamW step, for the CPU kernels below and the CUDA
// ones alike. All values are those in force at this step: the caller applies
// the LR schedule and the clip factor.
struct AdamWParams {
  float lr;                 // learning rate at this step (schedule already applied)
  float beta1, beta2;       // moment decay rates, in [0, 1)
  float eps;                // added to sqrt(vhat) in the denominator
  float weight_decay;       // decoupled: p -= lr * weight_decay * p
  int64_t step;             // 1-based step count for bias correction (>= 1)
  float grad_scale = 1.0f;  // multiplies every gradient first (global-norm clip factor; 1 = none)
};

// Decoupled weight decay (AdamW, Loshchilov & Hutter), in place over n
// elements, per element i:
//   g' = g[i] * grad_scale
//   m  = beta1 * m + (1 - beta1) * g'
//   v  = beta2 * v + (1 - beta2) * g'^2
//   p -= lr * (mhat / (sqrt(vhat) + eps) + weight_decay * p),
//        mhat = m / (1 - beta1^step), vhat = v / (1 - beta2^step)
// computed in fp32 with the bias corrections folded into two per-call scalars
// (step_size = lr / (1 - beta1^step), sqrt(vhat) = sqrt(v) / sqrt(1 - beta2^step)).
// Agrees with a double-precision evaluation of the same rule to a few fp32
// ulps per step (see adamw_test.cc for the stated tolerance).
//
// p, m, v: fp32 master weights and moments, read and written (n elements each).
// g: fp32 gradient, read only (n elements). No two arrays may overlap.
// compute_copy_bf16 (nullable): receives F32ToBF16(p) (round to nearest even,
// NaN stays quiet NaN) of the updated p, n elements.
// Any alignment works; 64-byte-aligned arrays are fastest. For n >= 256 Ki
// with a copy aligned to one vector (32 bytes for bf16, 64 for fp32 on AVX-512
// CPUs; 16 / 32 on AVX2 ones) the copy is written with non-temporal stores,
// fenced before return: it bypasses the cache, as nothing here reads it back.
void AdamWUpdate(const AdamWParams& hp, int64_t n, float* p, const float* g, float* m, float* v,
                 uint16_t* compute_copy_bf16);

// Same update, with an fp32 compute copy (nullable) for fp32 compute precision:
// compute_copy_f32[i] = updated p[i].
void AdamWUpdateF32Copy(const AdamWParams& hp, int64_t n, float* p, const float* g, float* m,
                        float* v, float* compute_copy_f32);

// Sum over i of g[i]^2, accumulated in double, for the global gradient norm
// (each g[i]^2 is exact in double). The summation order is fixed for a given n:
// 16 interleaved lanes inside each chunk of kSumSquaresChunkElems elements, lanes
// combined pairwise, chunk sums added in index order. Chunks are spread over the
// OpenMP threads (omp_get_max_threads()) when n spans 64 chunks or more (4 Mi
// elements) and the caller is not already inside an OpenMP parallel region (a
// plain std::thread caller gets a team of its own); the result is bitwise the
// same for every thread count and ISA. Thread-safe.
inline constexpr int64_t kSumSquaresChunkElems = int64_t{1} << 16;
double SumSquares(const float* g, int64_t n);

// The instruction set the kernels above dispatch to on this CPU: "avx512f",
// "avx2" or "sse2" (x86-64 baseline), or "generic" off x86. For logs and
// benchmarks.
const char* AdamWKernelIsa();

namespace internal {
// For tests and benchmarks: AdamWUpdate on a chosen kernel. kBaseline is the
// portable loop (SSE2 on x86-64), kAvx2 and kAvx512 the intrinsics kernels
// (CHECK-fail where !AdamWIsaAvailable). Every kernel gives bitwise the same
// results. Ordered: a CPU that runs one kind runs every kind before it.
enum class AdamWIsa { kBaseline, kAvx2, kAvx512 };
bool AdamWIsaAvailable(AdamWIsa isa);
void AdamWUpdateWithIsa(AdamWIsa isa, const AdamWParams& hp, int64_t n, float* p, const float* g,
                        float* m, float* v, uint16_t* compute_copy_bf16);
}  // namespace internal

}  // namespace l2l::kernels
