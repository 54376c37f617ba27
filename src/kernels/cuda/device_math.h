// Scalar functions the CUDA kernels share with the host. Whatever must match
// the CPU backend BIT FOR BIT lives here (the dropout hash, bf16 rounding, the
// AdamW step), compiled once for the device and once for the host, so the
// unit test can check the host instantiation against the CPU contract even on
// a machine without a GPU, and the device test checks the kernels' output.
// Plain C++ when not compiled by nvcc.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define L2L_HD __host__ __device__ __forceinline__
#else
#define L2L_HD inline
#endif

namespace l2l::kernels::cuda::internal {

// ---- Dropout hash --------------------------------------------------------------

// core/rng.h's Mix64 (splitmix64 finaliser).
L2L_HD uint64_t Mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// One level of HashKeys(a, rest...) = Mix64(a ^ Mix64(HashKeys(rest...) + C)).
L2L_HD uint64_t HashFold(uint64_t a, uint64_t h) {
  return Mix64(a ^ Mix64(h + 0x632be59bd9b4e019ull));
}

// RngPurpose::kDropout (core/rng.h); a static_assert in the .cu ties them.
inline constexpr uint64_t kDropoutPurpose = 2;

// The per-row constants of a dropout mask. threshold = ceil(p * 2^24), so
// UniformFloat(h) >= p  <=>  (h >> 40) >= threshold, exactly.
struct DropoutHashKeys {
  uint64_t seed, step, layer, site, threshold;
};

inline uint64_t DropoutThreshold(float p) {
  return static_cast<uint64_t>(std::ceil(static_cast<double>(p) * 16777216.0));
}

// DropoutKeep(keys, row, elem) of kernels/params.h, unrolled:
// HashKeys(seed, kDropout, step, layer, sample_key, site, elem).
L2L_HD bool DropoutKeepHash(const DropoutHashKeys& k, uint64_t sample_key, uint64_t elem) {
  uint64_t h = Mix64(elem);
  h = HashFold(k.site, h);
  h = HashFold(sample_key, h);
  h = HashFold(k.layer, h);
  h = HashFold(k.step, h);
  h = HashFold(kDropoutPurpose, h);
  h = HashFold(k.seed, h);
  return (h >> 40) >= k.threshold;
}

// ---- bf16 bits -------------------------------------------------------------------

L2L_HD uint32_t FloatToBits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}

L2L_HD float BitsToFloat(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}

// core/dtype.h's F32ToBF16: round to nearest even; NaN stays (quiet) NaN with
// its payload's top bits, infinities stay infinite.
L2L_HD uint16_t F32ToBF16Bits(float f) {
  uint32_t u = FloatToBits(f);
  if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu) != 0) {
    return static_cast<uint16_t>((u >> 16) | 0x0040u);
  }
  const uint32_t lsb = (u >> 16) & 1u;
  u += 0x7fffu + lsb;
  return static_cast<uint16_t>(u >> 16);
}

L2L_HD float BF16BitsToF32(uint16_t h) { return BitsToFloat(static_cast<uint32_t>(h) << 16); }

// ---- AdamW -------------------------------------------------------------------------

// src/kernels/adamw.cc's per-call constants (same names, same double arithmetic).
struct AdamWConstants {
  float grad_scale;
  float beta1, one_minus_beta1;
  float beta2, one_minus_beta2;
  float step_size;     // lr / (1 - beta1^step)
  float inv_sqrt_bc2;  // 1 / sqrt(1 - beta2^step)
  float eps;
  float lr_wd;  // lr * weight_decay
};

inline AdamWConstants MakeAdamWConstants(float lr, float beta1, float beta2, float eps,
                                         float weight_decay, int64_t step, float grad_scale) {
  const double t = static_cast<double>(step);
  const double bc1 = 1.0 - std::pow(static_cast<double>(beta1), t);
  const double bc2 = 1.0 - std::pow(static_cast<double>(beta2), t);
  AdamWConstants c;
  c.grad_scale = grad_scale;
  c.beta1 = beta1;
  c.one_minus_beta1 = static_cast<float>(1.0 - static_cast<double>(beta1));
  c.beta2 = beta2;
  c.one_minus_beta2 = static_cast<float>(1.0 - static_cast<double>(beta2));
  c.step_size = static_cast<float>(static_cast<double>(lr) / bc1);
  c.inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(bc2));
  c.eps = eps;
  c.lr_wd = static_cast<float>(static_cast<double>(lr) * static_cast<double>(weight_decay));
  return c;
}

// IEEE round-to-nearest operations that the device compiler may not fuse into
// FMAs (the CPU kernel is built with -ffp-contract=off). On the host they are
// the plain operators: this header is compiled without FMA contraction there
// (ISO C++ mode, or no FMA in the x86-64 baseline).
L2L_HD float AddRn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
L2L_HD float SubRn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
L2L_HD float MulRn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
L2L_HD float DivRn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}
L2L_HD float SqrtRn(float a) {
#if defined(__CUDA_ARCH__)
  return __fsqrt_rn(a);
#else
  return std::sqrt(a);
#endif
}

// src/kernels/adamw.cc's Step(), operation for operation.
L2L_HD void AdamWStep(const AdamWConstants& c, float* p, float g, float* m, float* v) {
  const float gs = MulRn(g, c.grad_scale);
  const float mi = AddRn(MulRn(c.beta1, *m), MulRn(c.one_minus_beta1, gs));
  const float vi = AddRn(MulRn(c.beta2, *v), MulRn(c.one_minus_beta2, MulRn(gs, gs)));
  const float denom = AddRn(MulRn(SqrtRn(vi), c.inv_sqrt_bc2), c.eps);
  const float pi = *p;
  *p = SubRn(pi, AddRn(MulRn(c.lr_wd, pi), DivRn(MulRn(c.step_size, mi), denom)));
  *m = mi;
  *v = vi;
}

}  // namespace l2l::kernels::cuda::internal
