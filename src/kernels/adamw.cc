// AdamW kernels. Why they look like this (docs/adamw.md has the measurements):
// - One pass: p, g, m, v are read once and p, m, v (and the compute copy)
//   written once; everything that depends only on the step (bias corrections,
//   lr * weight_decay) is a per-call scalar.
// - Two kernels behind one runtime check: an AVX2 one written with intrinsics
//   (GCC's auto-vectorised bf16 narrowing was as slow as the whole update), and
//   a portable loop that GCC auto-vectorises for the x86-64 baseline (SSE2;
//   adamw.cmake enables the dynamic cost model and -fno-math-errno).
// - -ffp-contract=off (adamw.cmake) and one operation order everywhere: the
//   vector bodies and scalar tails are the same IEEE operations (sqrt and
//   division are correctly rounded in both), so the result depends neither on
//   where a chunk boundary falls nor on which kernel runs.
#include "l2l/kernels/adamw.h"

#include <omp.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <vector>

#include "l2l/core/check.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define L2L_ADAMW_X86 1
// GCC 12's AVX-512 intrinsics warn of their own deliberately undefined
// operands when inlined (GCC bug 105593, fixed in GCC 13).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#define L2L_ADAMW_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define L2L_ADAMW_X86 0
#define L2L_ADAMW_CLONES
#endif
#define L2L_ALWAYS_INLINE inline __attribute__((always_inline))

namespace l2l::kernels {
namespace {

// Per-call scalars of the update; see AdamWUpdate in the header.
struct StepConstants {
  float grad_scale;
  float beta1, one_minus_beta1;
  float beta2, one_minus_beta2;
  float step_size;     // lr / (1 - beta1^step)
  float inv_sqrt_bc2;  // 1 / sqrt(1 - beta2^step)
  float eps;
  float lr_wd;  // lr * weight_decay
};

StepConstants MakeConstants(const AdamWParams& hp) {
  L2L_CHECK_GE(hp.step, 1) << "AdamW step is 1-based";
  L2L_CHECK(hp.beta1 >= 0.0f && hp.beta1 < 1.0f) << "beta1 " << hp.beta1;
  L2L_CHECK(hp.beta2 >= 0.0f && hp.beta2 < 1.0f) << "beta2 " << hp.beta2;
  const double t = static_cast<double>(hp.step);
  const double bc1 = 1.0 - std::pow(static_cast<double>(hp.beta1), t);
  const double bc2 = 1.0 - std::pow(static_cast<double>(hp.beta2), t);
  StepConstants c;
  c.grad_scale = hp.grad_scale;
  c.beta1 = hp.beta1;
  c.one_minus_beta1 = static_cast<float>(1.0 - static_cast<double>(hp.beta1));
  c.beta2 = hp.beta2;
  c.one_minus_beta2 = static_cast<float>(1.0 - static_cast<double>(hp.beta2));
  c.step_size = static_cast<float>(static_cast<double>(hp.lr) / bc1);
  c.inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(bc2));
  c.eps = hp.eps;
  c.lr_wd = static_cast<float>(static_cast<double>(hp.lr) * static_cast<double>(hp.weight_decay));
  return c;
}

struct Updated {
  float p, m, v;
};

// The update of one element. Every kernel below runs exactly these operations
// in this order, in the vector body and in the tail alike.
L2L_ALWAYS_INLINE Updated Step(const StepConstants& c, float p, float g, float m, float v) {
  const float gs = g * c.grad_scale;
  m = c.beta1 * m + c.one_minus_beta1 * gs;
  v = c.beta2 * v + c.one_minus_beta2 * (gs * gs);
  const float denom = std::sqrt(v) * c.inv_sqrt_bc2 + c.eps;
  p = p - (c.lr_wd * p + c.step_size * m / denom);
  return {p, m, v};
}

// F32ToBF16 (core/dtype.h) without the branch, so that it vectorises:
// round to nearest even, NaN -> quiet NaN.
L2L_ALWAYS_INLINE uint16_t ToBF16(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const uint32_t quiet_nan = (u >> 16) | 0x40u;
  const bool is_nan = static_cast<int32_t>(u & 0x7fffffffu) > 0x7f800000;
  return static_cast<uint16_t>(is_nan ? quiet_nan : rounded);
}

// Where a kernel writes the updated p besides p itself.
enum class CopyKind { kNone, kBF16, kF32 };

template <CopyKind K>
L2L_ALWAYS_INLINE void StoreCopy(void* __restrict copy, int64_t i, float p) {
  if constexpr (K == CopyKind::kBF16) static_cast<uint16_t*>(copy)[i] = ToBF16(p);
  if constexpr (K == CopyKind::kF32) static_cast<float*>(copy)[i] = p;
}

// Baseline kernel (any x86-64, and non-x86): GCC auto-vectorises this loop
// with SSE2. It is also the reference the AVX2 kernel must match bitwise.
template <CopyKind K>
void KernelBaseline(StepConstants c, int64_t n, float* __restrict p, const float* __restrict g,
                    float* __restrict m, float* __restrict v, void* __restrict copy) {
  for (int64_t i = 0; i < n; ++i) {
    const Updated u = Step(c, p[i], g[i], m[i], v[i]);
    p[i] = u.p;
    m[i] = u.m;
    v[i] = u.v;
    StoreCopy<K>(copy, i, u.p);
  }
}

#if L2L_ADAMW_X86
// AVX2 kernel, 8 elements per iteration, written with intrinsics because GCC's
// auto-vectorised bf16 narrowing costs as much as the rest of the update. The
// vector body performs Step()'s operations in Step()'s order (no FMA: the
// target is plain avx2 and -ffp-contract=off); the tail is Step() itself.
//
// With `kStream`, the compute copy, which the update never reads, is written
// with non-temporal stores: no read-for-ownership of its lines and no eviction
// of p, m, v from the cache (worth ~10% of bandwidth on large ranges; the
// dispatcher picks it for ranges past the caches with an aligned copy).
constexpr int64_t kLanes = 8;
constexpr int64_t kBlockElems = 512;  // 2 KB of each array: the block stays in L1

template <CopyKind K, bool kStream>
__attribute__((target("avx2"))) void KernelAvx2(StepConstants c, int64_t n, float* __restrict p,
                                                const float* __restrict g, float* __restrict m,
                                                float* __restrict v, void* __restrict copy) {
  const __m256 grad_scale = _mm256_set1_ps(c.grad_scale);
  const __m256 beta1 = _mm256_set1_ps(c.beta1), one_minus_beta1 = _mm256_set1_ps(c.one_minus_beta1);
  const __m256 beta2 = _mm256_set1_ps(c.beta2), one_minus_beta2 = _mm256_set1_ps(c.one_minus_beta2);
  const __m256 step_size = _mm256_set1_ps(c.step_size),
               inv_sqrt_bc2 = _mm256_set1_ps(c.inv_sqrt_bc2);
  const __m256 eps = _mm256_set1_ps(c.eps), lr_wd = _mm256_set1_ps(c.lr_wd);
  const __m256i one = _mm256_set1_epi32(1), round_bias = _mm256_set1_epi32(0x7fff);
  const __m256i quiet_bit = _mm256_set1_epi32(0x40);
  const int64_t body = n / kLanes * kLanes;
  for (int64_t block = 0; block < body; block += kBlockElems) {
    const int64_t block_end = std::min(body, block + kBlockElems);
    for (int64_t i = block; i < block_end; i += kLanes) {
      const __m256 gs = _mm256_mul_ps(_mm256_loadu_ps(g + i), grad_scale);
      const __m256 mi = _mm256_add_ps(_mm256_mul_ps(beta1, _mm256_loadu_ps(m + i)),
                                      _mm256_mul_ps(one_minus_beta1, gs));
      const __m256 vi = _mm256_add_ps(_mm256_mul_ps(beta2, _mm256_loadu_ps(v + i)),
                                      _mm256_mul_ps(one_minus_beta2, _mm256_mul_ps(gs, gs)));
      const __m256 denom = _mm256_add_ps(_mm256_mul_ps(_mm256_sqrt_ps(vi), inv_sqrt_bc2), eps);
      __m256 pi = _mm256_loadu_ps(p + i);
      pi = _mm256_sub_ps(pi, _mm256_add_ps(_mm256_mul_ps(lr_wd, pi),
                                           _mm256_div_ps(_mm256_mul_ps(step_size, mi), denom)));
      _mm256_storeu_ps(p + i, pi);
      _mm256_storeu_ps(m + i, mi);
      _mm256_storeu_ps(v + i, vi);
      if constexpr (K == CopyKind::kF32) {
        float* out = static_cast<float*>(copy) + i;
        if constexpr (kStream) {
          _mm256_stream_ps(out, pi);
        } else {
          _mm256_storeu_ps(out, pi);
        }
      }
    }
    if constexpr (K == CopyKind::kBF16) {
      // A second pass over the block, still in L1: kept out of the update loop,
      // where it would wait on the divider's long latency and stall the queue.
      for (int64_t i = block; i < block_end; i += kLanes) {
        const __m256 pi = _mm256_loadu_ps(p + i);
        const __m256i u = _mm256_castps_si256(pi);
        const __m256i high = _mm256_srli_epi32(u, 16);
        const __m256i rounded = _mm256_srli_epi32(
            _mm256_add_epi32(_mm256_add_epi32(u, round_bias), _mm256_and_si256(high, one)), 16);
        const __m256i is_nan = _mm256_castps_si256(_mm256_cmp_ps(pi, pi, _CMP_UNORD_Q));
        const __m256i bf16 = _mm256_blendv_epi8(rounded, _mm256_or_si256(high, quiet_bit), is_nan);
        const __m128i packed =
            _mm_packus_epi32(_mm256_castsi256_si128(bf16), _mm256_extracti128_si256(bf16, 1));
        __m128i* out = reinterpret_cast<__m128i*>(static_cast<uint16_t*>(copy) + i);
        if constexpr (kStream) {
          _mm_stream_si128(out, packed);
        } else {
          _mm_storeu_si128(out, packed);
        }
      }
    }
  }
  for (int64_t i = body; i < n; ++i) {
    const Updated u = Step(c, p[i], g[i], m[i], v[i]);
    p[i] = u.p;
    m[i] = u.m;
    v[i] = u.v;
    StoreCopy<K>(copy, i, u.p);
  }
  // Non-temporal stores are weakly ordered: make them visible before return,
  // so a caller's later release (mutex, atomic, barrier) publishes them.
  if constexpr (kStream) _mm_sfence();
}

// Streaming pays off once the copy would not stay in cache anyway. A vector
// of `lanes` copy elements is one aligned non-temporal store.
constexpr int64_t kStreamMinElems = int64_t{1} << 18;

template <CopyKind K>
bool CanStream(int64_t n, const void* copy, int64_t lanes) {
  const int64_t elem_bytes = K == CopyKind::kF32 ? 4 : 2;
  return K != CopyKind::kNone && n >= kStreamMinElems &&
         reinterpret_cast<uintptr_t>(copy) % static_cast<uintptr_t>(lanes * elem_bytes) == 0;
}

// AVX-512 kernel, 16 elements per iteration: the same operations on zmm
// registers, tail again Step(). Half the instructions per element of the AVX2
// kernel, which matters more than raw width here: the divider's throughput per
// element is the same, but the out-of-order window now covers twice as many
// elements, so more loads are in flight and the update overlaps memory better
// (measured ~5-10% more bandwidth on AMD Zen 4). That also makes the bf16
// conversion cheap enough to stay in the update loop.
constexpr int64_t kLanes512 = 16;

template <CopyKind K, bool kStream>
__attribute__((target("avx512f"))) void KernelAvx512(StepConstants c, int64_t n,
                                                     float* __restrict p, const float* __restrict g,
                                                     float* __restrict m, float* __restrict v,
                                                     void* __restrict copy) {
  const __m512 grad_scale = _mm512_set1_ps(c.grad_scale);
  const __m512 beta1 = _mm512_set1_ps(c.beta1), one_minus_beta1 = _mm512_set1_ps(c.one_minus_beta1);
  const __m512 beta2 = _mm512_set1_ps(c.beta2), one_minus_beta2 = _mm512_set1_ps(c.one_minus_beta2);
  const __m512 step_size = _mm512_set1_ps(c.step_size),
               inv_sqrt_bc2 = _mm512_set1_ps(c.inv_sqrt_bc2);
  const __m512 eps = _mm512_set1_ps(c.eps), lr_wd = _mm512_set1_ps(c.lr_wd);
  const __m512i one = _mm512_set1_epi32(1), round_bias = _mm512_set1_epi32(0x7fff);
  const __m512i quiet_bit = _mm512_set1_epi32(0x40);
  const int64_t body = n / kLanes512 * kLanes512;
  for (int64_t i = 0; i < body; i += kLanes512) {
    const __m512 gs = _mm512_mul_ps(_mm512_loadu_ps(g + i), grad_scale);
    const __m512 mi = _mm512_add_ps(_mm512_mul_ps(beta1, _mm512_loadu_ps(m + i)),
                                    _mm512_mul_ps(one_minus_beta1, gs));
    const __m512 vi = _mm512_add_ps(_mm512_mul_ps(beta2, _mm512_loadu_ps(v + i)),
                                    _mm512_mul_ps(one_minus_beta2, _mm512_mul_ps(gs, gs)));
    const __m512 denom = _mm512_add_ps(_mm512_mul_ps(_mm512_sqrt_ps(vi), inv_sqrt_bc2), eps);
    __m512 pi = _mm512_loadu_ps(p + i);
    pi = _mm512_sub_ps(pi, _mm512_add_ps(_mm512_mul_ps(lr_wd, pi),
                                         _mm512_div_ps(_mm512_mul_ps(step_size, mi), denom)));
    _mm512_storeu_ps(p + i, pi);
    _mm512_storeu_ps(m + i, mi);
    _mm512_storeu_ps(v + i, vi);
    if constexpr (K == CopyKind::kBF16) {
      const __m512i u = _mm512_castps_si512(pi);
      const __m512i high = _mm512_srli_epi32(u, 16);
      const __m512i rounded = _mm512_srli_epi32(
          _mm512_add_epi32(_mm512_add_epi32(u, round_bias), _mm512_and_si512(high, one)), 16);
      const __mmask16 is_nan = _mm512_cmp_ps_mask(pi, pi, _CMP_UNORD_Q);
      const __m512i bf16 =
          _mm512_mask_blend_epi32(is_nan, rounded, _mm512_or_si512(high, quiet_bit));
      const __m256i packed = _mm512_cvtepi32_epi16(bf16);  // exact: values fit in 16 bits
      __m256i* out = reinterpret_cast<__m256i*>(static_cast<uint16_t*>(copy) + i);
      if constexpr (kStream) {
        _mm256_stream_si256(out, packed);
      } else {
        _mm256_storeu_si256(out, packed);
      }
    }
    if constexpr (K == CopyKind::kF32) {
      float* out = static_cast<float*>(copy) + i;
      if constexpr (kStream) {
        _mm512_stream_ps(out, pi);
      } else {
        _mm512_storeu_ps(out, pi);
      }
    }
  }
  for (int64_t i = body; i < n; ++i) {
    const Updated u = Step(c, p[i], g[i], m[i], v[i]);
    p[i] = u.p;
    m[i] = u.m;
    v[i] = u.v;
    StoreCopy<K>(copy, i, u.p);
  }
  if constexpr (kStream) _mm_sfence();
}
#endif

// Best kernel this CPU runs, decided once.
internal::AdamWIsa DetectIsa() {
#if L2L_ADAMW_X86
  static const internal::AdamWIsa isa = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return internal::AdamWIsa::kAvx512;
    if (__builtin_cpu_supports("avx2")) return internal::AdamWIsa::kAvx2;
    return internal::AdamWIsa::kBaseline;
  }();
  return isa;
#else
  return internal::AdamWIsa::kBaseline;
#endif
}

template <CopyKind K>
void Dispatch(internal::AdamWIsa isa, const AdamWParams& hp, int64_t n, float* p, const float* g,
              float* m, float* v, void* copy) {
  L2L_CHECK_GE(n, 0);
  if (n > 0) {
    L2L_CHECK(p != nullptr && g != nullptr && m != nullptr && v != nullptr)
        << "AdamW over " << n << " elements with a null p, g, m or v";
  }
  L2L_CHECK(internal::AdamWIsaAvailable(isa))
      << "AdamW kernel " << static_cast<int>(isa) << " requested on a CPU without it";
  const StepConstants c = MakeConstants(hp);
  if (n == 0) return;
#if L2L_ADAMW_X86
  if (isa == internal::AdamWIsa::kAvx512) {
    if (CanStream<K>(n, copy, kLanes512)) {
      KernelAvx512<K, true>(c, n, p, g, m, v, copy);
    } else {
      KernelAvx512<K, false>(c, n, p, g, m, v, copy);
    }
    return;
  }
  if (isa == internal::AdamWIsa::kAvx2) {
    if (CanStream<K>(n, copy, kLanes)) {
      KernelAvx2<K, true>(c, n, p, g, m, v, copy);
    } else {
      KernelAvx2<K, false>(c, n, p, g, m, v, copy);
    }
    return;
  }
#endif
  KernelBaseline<K>(c, n, p, g, m, v, copy);
}

// 16 interleaved double lanes, combined pairwise: a fixed order for a given n,
// whichever clone runs (x * x of a widened float is exact in double). The
// lanes live in four 4-wide vectors so that they stay in registers (one ymm
// each with AVX2, two xmm each on the baseline).
constexpr int kSumLanes = 16;
typedef float Float4 __attribute__((vector_size(16)));
typedef double Double4 __attribute__((vector_size(32)));

// lanes += g[0..3]^2, widened to double. (By reference: a 32-byte vector
// return value would warn of an ABI change in the non-AVX clone.)
L2L_ALWAYS_INLINE void AddSquares(const float* g, Double4& lanes) {
  Float4 x;
  std::memcpy(&x, g, sizeof x);
  const Double4 wide = __builtin_convertvector(x, Double4);
  lanes += wide * wide;
}

L2L_ADAMW_CLONES double ChunkSumSquares(const float* __restrict g, int64_t n) {
  Double4 lanes0 = {}, lanes1 = {}, lanes2 = {}, lanes3 = {};  // lanes 0-3, 4-7, 8-11, 12-15
  int64_t i = 0;
  for (; i + kSumLanes <= n; i += kSumLanes) {
    AddSquares(g + i, lanes0);
    AddSquares(g + i + 4, lanes1);
    AddSquares(g + i + 8, lanes2);
    AddSquares(g + i + 12, lanes3);
  }
  const Double4 lanes[kSumLanes / 4] = {lanes0, lanes1, lanes2, lanes3};
  double acc[kSumLanes];
  std::memcpy(acc, lanes, sizeof acc);
  for (int j = 0; i + j < n; ++j) {
    const double x = g[i + j];
    acc[j] += x * x;
  }
  for (int width = kSumLanes / 2; width >= 1; width /= 2) {
    for (int j = 0; j < width; ++j) acc[j] += acc[j + width];
  }
  return acc[0];
}

// Below this many chunks (4 Mi elements) a team costs more than it saves.
constexpr int64_t kMinParallelChunks = 64;

}  // namespace

namespace internal {

bool AdamWIsaAvailable(AdamWIsa isa) {
  // The kinds are ordered: a CPU that runs one runs those below it.
  return static_cast<int>(isa) <= static_cast<int>(DetectIsa());
}

void AdamWUpdateWithIsa(AdamWIsa isa, const AdamWParams& hp, int64_t n, float* p, const float* g,
                        float* m, float* v, uint16_t* compute_copy_bf16) {
  if (compute_copy_bf16 != nullptr) {
    Dispatch<CopyKind::kBF16>(isa, hp, n, p, g, m, v, compute_copy_bf16);
  } else {
    Dispatch<CopyKind::kNone>(isa, hp, n, p, g, m, v, nullptr);
  }
}

}  // namespace internal

namespace {
internal::AdamWIsa BestIsa() { return DetectIsa(); }
}  // namespace

void AdamWUpdate(const AdamWParams& hp, int64_t n, float* p, const float* g, float* m, float* v,
                 uint16_t* compute_copy_bf16) {
  internal::AdamWUpdateWithIsa(BestIsa(), hp, n, p, g, m, v, compute_copy_bf16);
}

void AdamWUpdateF32Copy(const AdamWParams& hp, int64_t n, float* p, const float* g, float* m,
                        float* v, float* compute_copy_f32) {
  if (compute_copy_f32 != nullptr) {
    Dispatch<CopyKind::kF32>(BestIsa(), hp, n, p, g, m, v, compute_copy_f32);
  } else {
    Dispatch<CopyKind::kNone>(BestIsa(), hp, n, p, g, m, v, nullptr);
  }
}

double SumSquares(const float* g, int64_t n) {
  L2L_CHECK_GE(n, 0);
  if (n == 0) return 0.0;
  L2L_CHECK(g != nullptr) << "SumSquares over " << n << " elements of a null array";
  const int64_t chunks = (n + kSumSquaresChunkElems - 1) / kSumSquaresChunkElems;
  if (chunks == 1) return ChunkSumSquares(g, n);
  std::vector<double> partial(static_cast<size_t>(chunks));
  const bool parallel =
      chunks >= kMinParallelChunks && !omp_in_parallel() && omp_get_max_threads() > 1;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t k = 0; k < chunks; ++k) {
    const int64_t begin = k * kSumSquaresChunkElems;
    partial[k] = ChunkSumSquares(g + begin, std::min(kSumSquaresChunkElems, n - begin));
  }
  double sum = 0.0;
  for (double s : partial) sum += s;
  return sum;
}

const char* AdamWKernelIsa() {
  switch (DetectIsa()) {
    case internal::AdamWIsa::kAvx512:
      return "avx512f";
    case internal::AdamWIsa::kAvx2:
      return "avx2";
    case internal::AdamWIsa::kBaseline:
      break;
  }
  return L2L_ADAMW_X86 ? "sse2" : "generic";
}

}  // namespace l2l::kernels
