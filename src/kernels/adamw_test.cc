#include "l2l/kernels/adamw.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "l2l/core/dtype.h"
#include "l2l/core/rng.h"

namespace l2l::kernels {
namespace {

// Uniform in [lo, hi), a pure function of (seed, i).
float Uniform(uint64_t seed, int64_t i, float lo, float hi) {
  return lo + (hi - lo) * UniformFloat(HashKeys(seed, static_cast<uint64_t>(i)));
}

// Optimizer state in fp32, as the kernels keep it.
struct State {
  std::vector<float> p, m, v;
};

// Random weights and moments that look mid-training, so that the first steps
// already exercise every term. One element in 16 gets a tiny gradient below,
// where eps dominates the denominator.
State RandomState(int64_t n, uint64_t seed) {
  State s{std::vector<float>(n), std::vector<float>(n), std::vector<float>(n)};
  for (int64_t i = 0; i < n; ++i) {
    s.p[i] = Uniform(seed, i, -2.0f, 2.0f);
    s.m[i] = Uniform(seed + 1, i, -0.01f, 0.01f);
    s.v[i] = Uniform(seed + 2, i, 0.0f, 1e-4f);
  }
  return s;
}

std::vector<float> RandomGrad(int64_t n, uint64_t seed) {
  std::vector<float> g(n);
  for (int64_t i = 0; i < n; ++i) {
    g[i] = Uniform(seed, i, -1.0f, 1.0f) * (i % 16 == 5 ? 1e-9f : 1.0f);
  }
  return g;
}

AdamWParams Hyper(int64_t step) {
  AdamWParams hp;
  hp.lr = 1e-2f * (1.0f + 0.1f * static_cast<float>(step));  // a schedule that moves
  hp.beta1 = 0.9f;
  hp.beta2 = 0.999f;
  hp.eps = 1e-8f;
  hp.weight_decay = 0.1f;
  hp.step = step;
  hp.grad_scale = 0.37f;
  return hp;
}

// The rule of the header, evaluated in double from the fp32 hyper-parameters.
void ReferenceStep(const AdamWParams& hp, const std::vector<float>& g, std::vector<double>& p,
                   std::vector<double>& m, std::vector<double>& v) {
  const double b1 = hp.beta1, b2 = hp.beta2, lr = hp.lr, eps = hp.eps, wd = hp.weight_decay;
  const double bc1 = 1.0 - std::pow(b1, static_cast<double>(hp.step));
  const double bc2 = 1.0 - std::pow(b2, static_cast<double>(hp.step));
  for (size_t i = 0; i < g.size(); ++i) {
    const double gs = static_cast<double>(g[i]) * static_cast<double>(hp.grad_scale);
    m[i] = b1 * m[i] + (1.0 - b1) * gs;
    v[i] = b2 * v[i] + (1.0 - b2) * gs * gs;
    const double mhat = m[i] / bc1, vhat = v[i] / bc2;
    p[i] -= lr * (mhat / (std::sqrt(vhat) + eps) + wd * p[i]);
  }
}

// Tolerances of the fp32 kernel against the double rule, per element, after
// `steps` steps. Each step may add a few ulps of p (rounding of p itself and of
// the decay term) and a relative 2^-22 of the step's update, which is at most
// about lr * 1/(1-beta1) / sqrt(1/(1-beta2)) ~ 3.2 lr here. m is a sum of terms
// of either sign, so its error is relative to the terms' size (|m| + the
// largest (1-beta1)*|g'|), not to |m|; v's terms are all positive.
double PTolerance(double p_ref, int steps, float lr_max) {
  return steps * (std::ldexp(std::fabs(p_ref), -23) + std::ldexp(4.0 * lr_max, -22));
}
double MTolerance(double m_ref, int steps, double max_term) {
  return steps * std::ldexp(std::fabs(m_ref) + max_term, -22);
}
double VTolerance(double v_ref, int steps) { return steps * std::ldexp(std::fabs(v_ref), -22); }

TEST(AdamW, MatchesDoubleReferenceOverSeveralSteps) {
  constexpr int64_t kN = 10007;
  constexpr int kSteps = 6;
  State s = RandomState(kN, 11);
  std::vector<double> p(s.p.begin(), s.p.end()), m(s.m.begin(), s.m.end()),
      v(s.v.begin(), s.v.end());
  std::vector<uint16_t> copy(kN);
  float lr_max = 0.0f;
  for (int step = 1; step <= kSteps; ++step) {
    const std::vector<float> g = RandomGrad(kN, 100 + step);
    const AdamWParams hp = Hyper(step);
    lr_max = std::max(lr_max, hp.lr);
    AdamWUpdate(hp, kN, s.p.data(), g.data(), s.m.data(), s.v.data(), copy.data());
    ReferenceStep(hp, g, p, m, v);
  }
  // Largest (1 - beta1) * |g'|: |g| < 1, grad_scale 0.37.
  const double max_m_term = 0.1 * 0.37;
  int bad = 0;
  double worst_p = 0.0, worst_m = 0.0, worst_v = 0.0;
  for (int64_t i = 0; i < kN && bad < 5; ++i) {
    const double tol_p = PTolerance(p[i], kSteps, lr_max);
    const double tol_m = MTolerance(m[i], kSteps, max_m_term);
    const double tol_v = VTolerance(v[i], kSteps);
    const double err_p = std::fabs(s.p[i] - p[i]), err_m = std::fabs(s.m[i] - m[i]),
                 err_v = std::fabs(s.v[i] - v[i]);
    worst_p = std::max(worst_p, err_p / tol_p);
    worst_m = std::max(worst_m, err_m / tol_m);
    worst_v = std::max(worst_v, err_v / tol_v);
    if (err_p > tol_p || err_m > tol_m || err_v > tol_v) {
      ++bad;
      ADD_FAILURE() << "at " << i << ": p " << s.p[i] << " vs " << p[i] << " (tol " << tol_p
                    << "), m " << s.m[i] << " vs " << m[i] << " (tol " << tol_m << "), v " << s.v[i]
                    << " vs " << v[i] << " (tol " << tol_v << ")";
    }
  }
  RecordProperty("worst_error_over_tolerance_m", std::to_string(worst_m));
  RecordProperty("worst_error_over_tolerance_v", std::to_string(worst_v));
  RecordProperty("worst_error_over_tolerance_p", std::to_string(worst_p));
}

// Each term of the rule, in isolation, moves p by its own amount; a kernel
// that dropped or misplaced one (decay applied to the new p, grad_scale
// applied after the moments, bias correction of the wrong power) fails here.
TEST(AdamW, FirstStepIsSignStepPlusDecay) {
  // At step 1 with m = v = 0: mhat = g', vhat = g'^2, so the update is
  // lr * (sign(g') * |g'| / (|g'| + eps) + wd * p).
  const int64_t n = 4;
  std::vector<float> p = {1.0f, -3.0f, 0.5f, 2.0f}, g = {2.0f, 0.5f, -4.0f, 0.0f};
  std::vector<float> m(n, 0.0f), v(n, 0.0f);
  AdamWParams hp{.lr = 0.01f,
                 .beta1 = 0.9f,
                 .beta2 = 0.99f,
                 .eps = 1e-8f,
                 .weight_decay = 0.5f,
                 .step = 1,
                 .grad_scale = 0.25f};
  const std::vector<float> p0 = p;
  AdamWUpdate(hp, n, p.data(), g.data(), m.data(), v.data(), nullptr);
  for (int64_t i = 0; i < n; ++i) {
    const double gs = 0.25 * g[i];
    const double sign =
        gs == 0.0 ? 0.0 : std::fabs(gs) / (std::fabs(gs) + 1e-8) * (gs > 0 ? 1 : -1);
    const double expect = p0[i] - 0.01 * (sign + 0.5 * p0[i]);
    EXPECT_NEAR(p[i], expect, 1e-6) << i;
    EXPECT_FLOAT_EQ(m[i], static_cast<float>(0.1 * gs)) << i;
    EXPECT_NEAR(v[i], 0.01 * gs * gs, 1e-7 * gs * gs) << i;
  }
}

// Splits [0, n) into odd-sized, misaligned chunks (vector bodies, tails, and
// chunks shorter than one vector).
std::vector<int64_t> OddChunkStarts(int64_t n) {
  static const int64_t kSizes[] = {1, 3, 7, 13, 31, 5, 63, 129, 2, 1001, 17, 4097, 9};
  std::vector<int64_t> starts;
  int64_t at = 0;
  for (int k = 0; at < n; ++k) {
    starts.push_back(at);
    at += kSizes[k % (sizeof kSizes / sizeof kSizes[0])];
  }
  starts.push_back(n);
  return starts;
}

TEST(AdamW, ChunkingIsBitwiseIndependent) {
  constexpr int64_t kN = 100003;
  State whole = RandomState(kN, 21), chunked = whole, chunked_f32 = whole;
  std::vector<uint16_t> copy_whole(kN), copy_chunked(kN);
  std::vector<float> copy_f32(kN);
  const std::vector<int64_t> starts = OddChunkStarts(kN);
  ASSERT_GT(starts.size(), 100u);
  for (int step = 1; step <= 3; ++step) {
    const std::vector<float> g = RandomGrad(kN, 200 + step);
    const AdamWParams hp = Hyper(step);
    AdamWUpdate(hp, kN, whole.p.data(), g.data(), whole.m.data(), whole.v.data(),
                copy_whole.data());
    for (size_t k = 0; k + 1 < starts.size(); ++k) {
      const int64_t b = starts[k], len = starts[k + 1] - starts[k];
      AdamWUpdate(hp, len, chunked.p.data() + b, g.data() + b, chunked.m.data() + b,
                  chunked.v.data() + b, copy_chunked.data() + b);
      AdamWUpdateF32Copy(hp, len, chunked_f32.p.data() + b, g.data() + b, chunked_f32.m.data() + b,
                         chunked_f32.v.data() + b, copy_f32.data() + b);
    }
  }
  const size_t bytes = kN * sizeof(float);
  EXPECT_EQ(std::memcmp(whole.p.data(), chunked.p.data(), bytes), 0) << "p differs";
  EXPECT_EQ(std::memcmp(whole.m.data(), chunked.m.data(), bytes), 0) << "m differs";
  EXPECT_EQ(std::memcmp(whole.v.data(), chunked.v.data(), bytes), 0) << "v differs";
  EXPECT_EQ(std::memcmp(copy_whole.data(), copy_chunked.data(), kN * 2), 0) << "bf16 differs";
  // The fp32-copy variant runs the same update.
  EXPECT_EQ(std::memcmp(whole.p.data(), chunked_f32.p.data(), bytes), 0) << "f32 variant p";
  EXPECT_EQ(std::memcmp(whole.p.data(), copy_f32.data(), bytes), 0) << "f32 copy != p";
}

// A buffer of n T's starting `offset_bytes` past a 64-byte boundary.
template <typename T>
class OffsetBuffer {
 public:
  OffsetBuffer(int64_t n, size_t offset_bytes) : raw_(n * sizeof(T) + 64 + offset_bytes) {
    const uintptr_t base = reinterpret_cast<uintptr_t>(raw_.data());
    data_ = reinterpret_cast<T*>((base + 63) / 64 * 64 + offset_bytes);
  }
  T* data() { return data_; }

 private:
  std::vector<unsigned char> raw_;
  T* data_;
};

// Every kernel the dispatcher may pick -- baseline, AVX2 or AVX-512, copy
// stored normally or streamed (large range, aligned copy) -- gives the same
// bits, NaN and inf included.
TEST(AdamW, KernelsAndStoreModesAgreeBitwise) {
  using internal::AdamWIsa;
  constexpr int64_t kN = (int64_t{1} << 18) + 77;  // past the streaming threshold
  const State start = RandomState(kN, 61);
  std::vector<float> g = RandomGrad(kN, 62);
  g[100] = std::numeric_limits<float>::infinity();
  g[1001] = std::numeric_limits<float>::quiet_NaN();
  const AdamWParams hp = Hyper(4);
  struct Run {
    State s;
    std::vector<uint16_t> copy;
  };
  auto run = [&](AdamWIsa isa, size_t copy_offset_bytes) {
    Run r{start, std::vector<uint16_t>(kN)};
    OffsetBuffer<uint16_t> copy(kN, copy_offset_bytes);
    internal::AdamWUpdateWithIsa(isa, hp, kN, r.s.p.data(), g.data(), r.s.m.data(), r.s.v.data(),
                                 copy.data());
    std::memcpy(r.copy.data(), copy.data(), kN * sizeof(uint16_t));
    return r;
  };
  const Run base = run(AdamWIsa::kBaseline, 0);
  int kernels_compared = 0;
  for (AdamWIsa isa : {AdamWIsa::kAvx2, AdamWIsa::kAvx512}) {
    if (!internal::AdamWIsaAvailable(isa)) continue;
    ++kernels_compared;
    for (size_t offset : {size_t{0}, size_t{2}}) {  // aligned (streams) and misaligned copy
      const Run r = run(isa, offset);
      const size_t bytes = kN * sizeof(float);
      const std::string what = "kernel " + std::to_string(static_cast<int>(isa)) +
                               ", copy offset " + std::to_string(offset);
      EXPECT_EQ(std::memcmp(base.s.p.data(), r.s.p.data(), bytes), 0) << "p, " << what;
      EXPECT_EQ(std::memcmp(base.s.m.data(), r.s.m.data(), bytes), 0) << "m, " << what;
      EXPECT_EQ(std::memcmp(base.s.v.data(), r.s.v.data(), bytes), 0) << "v, " << what;
      EXPECT_EQ(std::memcmp(base.copy.data(), r.copy.data(), kN * 2), 0) << "bf16, " << what;
    }
  }
  // The fp32 copy (on the dispatched kernel), streamed (aligned) and not (4 bytes off).
  for (size_t offset : {size_t{0}, size_t{4}}) {
    State s = start;
    OffsetBuffer<float> copy(kN, offset);
    AdamWUpdateF32Copy(hp, kN, s.p.data(), g.data(), s.m.data(), s.v.data(), copy.data());
    EXPECT_EQ(std::memcmp(base.s.p.data(), s.p.data(), kN * sizeof(float)), 0) << offset;
    EXPECT_EQ(std::memcmp(base.s.p.data(), copy.data(), kN * sizeof(float)), 0) << offset;
  }
  if (kernels_compared == 0) GTEST_SKIP() << "no AVX2 on this CPU: only the baseline kernel ran";
}

TEST(AdamW, CopiesAreTheRoundedMaster) {
  constexpr int64_t kN = 5003;
  State s = RandomState(kN, 31);
  std::vector<float> g = RandomGrad(kN, 32);
  // Gradients that make p inf / NaN, to cover NaN quieting in the copy.
  g[7] = std::numeric_limits<float>::infinity();
  g[8] = std::numeric_limits<float>::quiet_NaN();
  State no_copy = s, f32 = s;
  std::vector<uint16_t> copy(kN, 0xdead);
  std::vector<float> copy_f32(kN, -1.0f);
  const AdamWParams hp = Hyper(3);
  AdamWUpdate(hp, kN, s.p.data(), g.data(), s.m.data(), s.v.data(), copy.data());
  AdamWUpdate(hp, kN, no_copy.p.data(), g.data(), no_copy.m.data(), no_copy.v.data(), nullptr);
  AdamWUpdateF32Copy(hp, kN, f32.p.data(), g.data(), f32.m.data(), f32.v.data(), copy_f32.data());
  ASSERT_TRUE(std::isnan(s.p[7]) && std::isnan(s.p[8]));
  for (int64_t i = 0; i < kN; ++i) {
    ASSERT_EQ(copy[i], F32ToBF16(s.p[i])) << "at " << i << ", p = " << s.p[i];
    ASSERT_EQ(std::bit_cast<uint32_t>(copy_f32[i]), std::bit_cast<uint32_t>(s.p[i])) << i;
    ASSERT_EQ(std::bit_cast<uint32_t>(no_copy.p[i]), std::bit_cast<uint32_t>(s.p[i])) << i;
  }
}

TEST(AdamW, BF16CopyRoundsTiesToEvenAndQuietsNaN) {
  // lr = 0 leaves finite p unchanged, so the copy sees these exact bit patterns
  // (in a vector body and in a tail: 37 elements).
  const uint32_t kBits[] = {
      0x3f808000u,  // tie, lower neighbour even: rounds down
      0x3f818000u,  // tie, lower neighbour odd: rounds up
      0x3f808001u,  // just above a tie: up
      0xbf817fffu,  // just below a tie, negative: down (in magnitude)
      0x7f7fffffu,  // FLT_MAX rounds to inf
      0x00000001u,  // smallest subnormal
      0x80000000u,  // -0
      0x7f800001u,  // signalling NaN (the update quiets it; the copy must be quiet too)
      0xff800000u,  // -inf
  };
  constexpr int64_t kN = 37;
  std::vector<float> p(kN), g(kN, 0.0f), m(kN, 0.0f), v(kN, 0.0f);
  for (int64_t i = 0; i < kN; ++i) p[i] = std::bit_cast<float>(kBits[i % 9]);
  AdamWParams hp = Hyper(1);
  hp.lr = 0.0f;
  std::vector<uint16_t> copy(kN);
  AdamWUpdate(hp, kN, p.data(), g.data(), m.data(), v.data(), copy.data());
  const uint16_t kExpect[] = {0x3f80, 0x3f82, 0x3f81, 0xbf81, 0x7f80, 0x0000, 0x8000};
  for (int64_t i = 0; i < kN; ++i) {
    const int k = static_cast<int>(i % 9);
    if (k < 7) {
      EXPECT_EQ(std::bit_cast<uint32_t>(p[i]), kBits[k]) << "lr = 0 changed p at " << i;
      EXPECT_EQ(copy[i], kExpect[k]) << "pattern " << k;
    } else {
      // 0 * inf in the decay term makes -inf NaN too; the copy must be a quiet NaN.
      EXPECT_TRUE(std::isnan(p[i])) << i;
      EXPECT_EQ(copy[i] & 0x7fc0u, 0x7fc0u) << "not a quiet NaN at " << i;
    }
    EXPECT_EQ(copy[i], F32ToBF16(p[i])) << i;
  }
}

TEST(AdamW, EmptyRangeIsANoOp) {
  AdamWUpdate(Hyper(1), 0, nullptr, nullptr, nullptr, nullptr, nullptr);
  AdamWUpdateF32Copy(Hyper(1), 0, nullptr, nullptr, nullptr, nullptr, nullptr);
  EXPECT_EQ(SumSquares(nullptr, 0), 0.0);
}

TEST(AdamWDeathTest, RejectsStepZero) {
  float x = 0.0f;
  AdamWParams hp = Hyper(1);
  hp.step = 0;
  EXPECT_DEATH(AdamWUpdate(hp, 1, &x, &x, &x, &x, nullptr), "1-based");
}

TEST(AdamW, KernelIsaIsKnown) {
  const std::string isa = AdamWKernelIsa();
  EXPECT_TRUE(isa == "avx512f" || isa == "avx2" || isa == "sse2" || isa == "generic") << isa;
}

// Reference sum of squares in long double, in index order.
long double ReferenceSumSquares(const std::vector<float>& g, int64_t n) {
  long double s = 0.0L;
  for (int64_t i = 0; i < n; ++i) s += static_cast<long double>(g[i]) * g[i];
  return s;
}

TEST(SumSquares, MatchesLongDoubleReference) {
  // Sizes around the 16-lane body, the chunk size, and above the size that
  // spreads chunks over threads.
  const int64_t kMax = 64 * kSumSquaresChunkElems + 12345;
  std::vector<float> g(kMax);
  for (int64_t i = 0; i < kMax; ++i) g[i] = Uniform(41, i, -3.0f, 3.0f);
  for (int64_t n :
       {int64_t{1}, int64_t{15}, int64_t{16}, int64_t{17}, int64_t{1000}, kSumSquaresChunkElems,
        kSumSquaresChunkElems + 1, 3 * kSumSquaresChunkElems + 7, kMax}) {
    const long double ref = ReferenceSumSquares(g, n);
    const double got = SumSquares(g.data(), n);
    // All terms are positive and exact in double; the fixed-order sum has at
    // most a few thousand roundings of relative 2^-53 each on any path.
    EXPECT_NEAR(got, static_cast<double>(ref), 1e-12 * static_cast<double>(ref)) << "n = " << n;
  }
  EXPECT_EQ(SumSquares(g.data(), 1), static_cast<double>(g[0]) * g[0]);
}

TEST(SumSquares, IsBitwiseIndependentOfThreadCount) {
  const int64_t n = 70 * kSumSquaresChunkElems + 999;  // above the parallel threshold
  std::vector<float> g(n);
  for (int64_t i = 0; i < n; ++i)
    g[i] = Uniform(51, i, -1.0f, 1.0f) * (i % 1000 == 0 ? 1e6f : 1.0f);
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  const double one = SumSquares(g.data(), n);
  for (int threads : {2, 3, 7}) {
    omp_set_num_threads(threads);
    EXPECT_EQ(std::bit_cast<uint64_t>(SumSquares(g.data(), n)), std::bit_cast<uint64_t>(one))
        << threads << " threads";
  }
  // Called from inside a parallel region (nested: runs on the caller's thread).
  double inside = 0.0;
#pragma omp parallel num_threads(2)
  {
#pragma omp single
    inside = SumSquares(g.data(), n);
  }
  EXPECT_EQ(std::bit_cast<uint64_t>(inside), std::bit_cast<uint64_t>(one));
  omp_set_num_threads(saved);
}

// The EPS computes a shard's norm as per-chunk SumSquares on the optimizer
// threads, added in chunk order; the resident baseline calls SumSquares on the
// whole shard. l2l == resident bitwise needs the two to agree exactly.
TEST(SumSquares, ChunkPartsAddedInOrderAreBitwiseTheWhole) {
  const int64_t n = 5 * kSumSquaresChunkElems + 4321;
  std::vector<float> g(n);
  for (int64_t i = 0; i < n; ++i) g[i] = Uniform(61, i, -2.0f, 2.0f);
  double parts = 0.0;
  for (int64_t b = 0; b < n; b += kSumSquaresChunkElems) {
    parts += SumSquares(g.data() + b, std::min(kSumSquaresChunkElems, n - b));
  }
  EXPECT_EQ(std::bit_cast<uint64_t>(parts), std::bit_cast<uint64_t>(SumSquares(g.data(), n)));
}

}  // namespace
}  // namespace l2l::kernels
