// Internal helpers for the CPU kernels' hot loops.
//
// The project builds for generic x86-64 (no -march), so loops that benefit
// from wide vectors are compiled several times with L2L_TARGET_CLONES and the
// loader picks the best version for the CPU (GNU ifunc). The cloned functions
// are small non-template wrappers around L2L_ALWAYS_INLINE template bodies;
// they contain no OpenMP pragmas (callers parallelise around them). Floating
// point contraction is off in ISO C++ mode, so clones differ from the default
// path only in vector width, never in rounding of a single expression;
// reductions (omp simd reduction) may be associated differently per clone, so
// bits are reproducible on one machine, not across CPU generations.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define L2L_TARGET_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define L2L_TARGET_CLONES
#endif
#define L2L_ALWAYS_INLINE __attribute__((always_inline)) inline

namespace l2l::kernels::cpu::internal {

// exp(x) for float in a form that vectorises: range reduction to
// r in [-ln2/2, ln2/2], degree-6 Taylor polynomial (relative error < 2e-7),
// scaling by 2^n through the exponent bits. Inputs are clamped to
// [-87, 88], so the result is always finite and positive.
L2L_ALWAYS_INLINE float ExpF(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f;  // ln 2 split so n * kLn2Hi is exact
  constexpr float kLn2Lo = -2.12194440e-4f;
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float n = (x * kLog2e + kRound) - kRound;
  const float r = (x - n * kLn2Hi) - n * kLn2Lo;
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

// exp for the softmax paths: the vectorisable ExpF for float, libm for double
// (double is the precision the gradient checks rely on).
L2L_ALWAYS_INLINE float FastExp(float x) { return ExpF(x); }
L2L_ALWAYS_INLINE double FastExp(double x) { return std::exp(x); }

}  // namespace l2l::kernels::cpu::internal
