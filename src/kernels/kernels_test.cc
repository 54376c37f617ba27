// Each CPU kernel against a naive reference loop (float, on random non-zero
// inputs) and each backward against central finite differences (double).
//
// Finite-difference checks use the scalar L = Σ out ⊙ R for a fixed random R,
// so dL/dout = R, and compare the analytic gradient with
// (L(p + h) - L(p - h)) / 2h, h = 1e-5, by the relative max-norm error
// max|analytic - numeric| / max|numeric| < 1e-8 (observed <= 2e-10).
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "finite_diff.h"
#include "l2l/core/rng.h"
#include "l2l/kernels/cpu.h"

namespace l2l::kernels::cpu {
namespace {

constexpr double kFdTol = 1e-8;     // relative max-norm error, double precision
constexpr double kFloatTol = 1e-5;  // relative max-norm error, float vs double reference

template <typename T>
std::vector<T> Random(int64_t n, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<T> v(n);
  for (auto& x : v) x = static_cast<T>(dist(gen));
  return v;
}

template <typename A, typename B>
double RelErr(const std::vector<A>& got, const std::vector<B>& want) {
  EXPECT_EQ(got.size(), want.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    num = std::max(num, std::abs(static_cast<double>(got[i]) - static_cast<double>(want[i])));
    den = std::max(den, std::abs(static_cast<double>(want[i])));
  }
  return den == 0 ? num : num / den;
}

double MaxAbs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::abs(x));
  return m;
}

double Dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

using ::l2l::testing::kFdStep;
using ::l2l::testing::NumericGrad;

// Expects a non-trivial analytic gradient that matches finite differences.
void ExpectGradMatches(const std::vector<double>& analytic, const std::vector<double>& numeric,
                       const char* what) {
  EXPECT_GT(MaxAbs(numeric), 1e-3) << what << ": gradient is trivially small";
  EXPECT_LT(RelErr(analytic, numeric), kFdTol) << what;
}

template <typename T>
std::vector<T> Cast(const std::vector<double>& v) {
  return std::vector<T>(v.begin(), v.end());
}

// ---- GEMM / linear ---------------------------------------------------------

TEST(Gemm, MatchesNaiveForAllTransposesWithStrides) {
  const int64_t m = 7, n = 5, k = 9, pad = 3;
  for (Trans ta : {Trans::kNo, Trans::kYes}) {
    for (Trans tb : {Trans::kNo, Trans::kYes}) {
      const int64_t a_rows = ta == Trans::kNo ? m : k, a_cols = ta == Trans::kNo ? k : m;
      const int64_t b_rows = tb == Trans::kNo ? k : n, b_cols = tb == Trans::kNo ? n : k;
      const int64_t lda = a_cols + pad, ldb = b_cols + pad, ldc = n + pad;
      auto a = Random<float>(a_rows * lda, 1);
      auto b = Random<float>(b_rows * ldb, 2);
      auto c = Random<float>(m * ldc, 3);
      std::vector<double> want(c.begin(), c.end());
      const float alpha = 1.5f, beta = 0.5f;
      for (int64_t i = 0; i < m; ++i) {
        for (int64_t j = 0; j < n; ++j) {
          double s = 0;
          for (int64_t p = 0; p < k; ++p) {
            const double av = ta == Trans::kNo ? a[i * lda + p] : a[p * lda + i];
            const double bv = tb == Trans::kNo ? b[p * ldb + j] : b[j * ldb + p];
            s += av * bv;
          }
          want[i * ldc + j] = alpha * s + beta * c[i * ldc + j];
        }
      }
      Gemm<float>(ta, tb, m, n, k, alpha, a.data(), lda, b.data(), ldb, beta, c.data(), ldc);
      EXPECT_LT(RelErr(c, want), kFloatTol) << "ta=" << int(ta) << " tb=" << int(tb);
    }
  }
}

TEST(Linear, ForwardMatchesNaive) {
  const int64_t n = 6, in = 5, out = 7;
  auto x = Random<float>(n * in, 1), w = Random<float>(in * out, 2), b = Random<float>(out, 3);
  std::vector<float> y(n * out);
  LinearForward(x.data(), w.data(), b.data(), n, in, out, y.data());
  std::vector<double> want(n * out);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t o = 0; o < out; ++o) {
      double s = b[o];
      for (int64_t i = 0; i < in; ++i) s += double(x[r * in + i]) * w[i * out + o];
      want[r * out + o] = s;
    }
  EXPECT_LT(RelErr(y, want), kFloatTol);
}

TEST(Linear, BackwardMatchesFiniteDifferences) {
  const int64_t n = 4, in = 3, out = 5;
  auto x = Random<double>(n * in, 1), w = Random<double>(in * out, 2);
  auto b = Random<double>(out, 3), r = Random<double>(n * out, 4);
  auto loss = [&] {
    std::vector<double> y(n * out);
    LinearForward(x.data(), w.data(), b.data(), n, in, out, y.data());
    return Dot(y, r);
  };
  // dw and db accumulate onto existing contents; dx is added with kAdd.
  std::vector<double> dx(n * in, 0.25), dw(in * out, 0.5), db(out, -1.0);
  LinearBackward(x.data(), w.data(), r.data(), n, in, out, dx.data(), dw.data(), db.data(),
                 Accum::kAdd);
  for (auto& v : dx) v -= 0.25;
  for (auto& v : dw) v -= 0.5;
  for (auto& v : db) v += 1.0;
  ExpectGradMatches(dx, NumericGrad(&x, loss), "dx");
  ExpectGradMatches(dw, NumericGrad(&w, loss), "dw");
  ExpectGradMatches(db, NumericGrad(&b, loss), "db");
  // kOverwrite replaces stale dx contents.
  std::vector<double> dx2(n * in, 123.0);
  LinearBackward<double>(x.data(), w.data(), r.data(), n, in, out, dx2.data(), nullptr, nullptr);
  EXPECT_LT(RelErr(dx2, dx), 1e-14);
}

// nn.Linear's orientation: w stored (out, in), y = x · wᵀ + b.
TEST(Linear, OutInLayoutForwardMatchesNaive) {
  const int64_t n = 6, in = 5, out = 7;
  auto x = Random<float>(n * in, 1), w = Random<float>(out * in, 2), b = Random<float>(out, 3);
  std::vector<float> y(n * out);
  LinearForward(x.data(), w.data(), b.data(), n, in, out, y.data(), WeightLayout::kOutIn);
  std::vector<double> want(n * out);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t o = 0; o < out; ++o) {
      double s = b[o];
      for (int64_t i = 0; i < in; ++i) s += double(x[r * in + i]) * w[o * in + i];
      want[r * out + o] = s;
    }
  EXPECT_LT(RelErr(y, want), kFloatTol);
}

TEST(Linear, OutInLayoutBackwardMatchesFiniteDifferences) {
  const int64_t n = 4, in = 3, out = 5;
  auto x = Random<double>(n * in, 1), w = Random<double>(out * in, 2);
  auto b = Random<double>(out, 3), r = Random<double>(n * out, 4);
  auto loss = [&] {
    std::vector<double> y(n * out);
    LinearForward(x.data(), w.data(), b.data(), n, in, out, y.data(), WeightLayout::kOutIn);
    return Dot(y, r);
  };
  std::vector<double> dx(n * in, 0.25), dw(out * in, 0.5), db(out, 0.0);
  LinearBackward(x.data(), w.data(), r.data(), n, in, out, dx.data(), dw.data(), db.data(),
                 Accum::kAdd, WeightLayout::kOutIn);
  for (auto& v : dx) v -= 0.25;
  for (auto& v : dw) v -= 0.5;
  ExpectGradMatches(dx, NumericGrad(&x, loss), "dx");
  ExpectGradMatches(dw, NumericGrad(&w, loss), "dw");
  ExpectGradMatches(db, NumericGrad(&b, loss), "db");
}

TEST(ColumnSum, IndependentOfThreadCount) {
  const int64_t n = 257, c = 300;
  auto x = Random<float>(n * c, 5);
  std::vector<float> s1(c, 0.f), s2(c, 0.f);
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  ColumnSumAccumulate(x.data(), n, c, s1.data());
  omp_set_num_threads(3);
  ColumnSumAccumulate(x.data(), n, c, s2.data());
  omp_set_num_threads(saved);
  EXPECT_EQ(s1, s2);
}

// ---- Layernorm -------------------------------------------------------------

TEST(LayerNorm, ForwardMatchesNaive) {
  const int64_t n = 5, c = 33;
  auto x = Random<float>(n * c, 1, -2, 3), g = Random<float>(c, 2), b = Random<float>(c, 3);
  std::vector<float> y(n * c), mean(n), rstd(n);
  LayerNormForward(x.data(), g.data(), b.data(), n, c, kLayerNormEps, y.data(), mean.data(),
                   rstd.data());
  std::vector<double> want(n * c), want_mean(n), want_rstd(n);
  for (int64_t r = 0; r < n; ++r) {
    double m = 0, v = 0;
    for (int64_t j = 0; j < c; ++j) m += x[r * c + j];
    m /= c;
    for (int64_t j = 0; j < c; ++j) v += (x[r * c + j] - m) * (x[r * c + j] - m);
    v /= c;
    const double s = 1 / std::sqrt(v + kLayerNormEps);
    for (int64_t j = 0; j < c; ++j) want[r * c + j] = (x[r * c + j] - m) * s * g[j] + b[j];
    want_mean[r] = m;
    want_rstd[r] = s;
  }
  EXPECT_LT(RelErr(y, want), kFloatTol);
  EXPECT_LT(RelErr(mean, want_mean), kFloatTol);
  EXPECT_LT(RelErr(rstd, want_rstd), kFloatTol);
}

TEST(LayerNorm, BackwardMatchesFiniteDifferences) {
  const int64_t n = 4, c = 7;
  auto x = Random<double>(n * c, 1, -2, 3), g = Random<double>(c, 2), b = Random<double>(c, 3);
  auto r = Random<double>(n * c, 4);
  std::vector<double> y(n * c), mean(n), rstd(n);
  auto loss = [&] {
    LayerNormForward(x.data(), g.data(), b.data(), n, c, kLayerNormEps, y.data(), mean.data(),
                     rstd.data());
    return Dot(y, r);
  };
  loss();
  std::vector<double> dx(n * c), dg(c, 0.0), db(c, 0.0);
  LayerNormBackward(x.data(), g.data(), mean.data(), rstd.data(), r.data(), n, c, dx.data(),
                    dg.data(), db.data());
  ExpectGradMatches(dx, NumericGrad(&x, loss), "dx");
  ExpectGradMatches(dg, NumericGrad(&g, loss), "dgain");
  ExpectGradMatches(db, NumericGrad(&b, loss), "dbias");

  // kAdd adds onto dx; kOverwrite with dx aliasing dy gives the same values.
  std::vector<double> dx_add(n * c, 1.0);
  LayerNormBackward<double>(x.data(), g.data(), mean.data(), rstd.data(), r.data(), n, c,
                            dx_add.data(), nullptr, nullptr, Accum::kAdd);
  for (auto& v : dx_add) v -= 1.0;
  EXPECT_LT(RelErr(dx_add, dx), 1e-12);
  std::vector<double> inplace = r;
  LayerNormBackward<double>(x.data(), g.data(), mean.data(), rstd.data(), inplace.data(), n, c,
                            inplace.data(), nullptr, nullptr);
  EXPECT_LT(RelErr(inplace, dx), 1e-14);
}

TEST(RmsNorm, ForwardMatchesNaive) {
  const int64_t n = 5, c = 33;
  const double eps = 1e-6;
  auto x = Random<float>(n * c, 1, -2, 3), g = Random<float>(c, 2);
  std::vector<float> y(n * c), rstd(n);
  RmsNormForward(x.data(), g.data(), n, c, eps, y.data(), rstd.data());
  std::vector<double> want(n * c), want_rstd(n);
  for (int64_t r = 0; r < n; ++r) {
    double sq = 0;
    for (int64_t j = 0; j < c; ++j) sq += double(x[r * c + j]) * x[r * c + j];
    const double s = 1 / std::sqrt(sq / c + eps);
    for (int64_t j = 0; j < c; ++j) want[r * c + j] = x[r * c + j] * s * g[j];
    want_rstd[r] = s;
  }
  EXPECT_LT(RelErr(y, want), kFloatTol);
  EXPECT_LT(RelErr(rstd, want_rstd), kFloatTol);
}

TEST(RmsNorm, BackwardMatchesFiniteDifferences) {
  const int64_t n = 4, c = 7;
  auto x = Random<double>(n * c, 1, -2, 3), g = Random<double>(c, 2);
  auto r = Random<double>(n * c, 4);
  std::vector<double> y(n * c), rstd(n);
  auto loss = [&] {
    RmsNormForward(x.data(), g.data(), n, c, 1e-5, y.data(), rstd.data());
    return Dot(y, r);
  };
  loss();
  std::vector<double> dx(n * c), dg(c, 0.0);
  RmsNormBackward(x.data(), g.data(), rstd.data(), r.data(), n, c, dx.data(), dg.data());
  ExpectGradMatches(dx, NumericGrad(&x, loss), "dx");
  ExpectGradMatches(dg, NumericGrad(&g, loss), "dgain");
  std::vector<double> dx_add(n * c, 1.0);
  RmsNormBackward<double>(x.data(), g.data(), rstd.data(), r.data(), n, c, dx_add.data(), nullptr,
                          Accum::kAdd);
  for (auto& v : dx_add) v -= 1.0;
  EXPECT_LT(RelErr(dx_add, dx), 1e-12);
  std::vector<double> inplace = r;
  RmsNormBackward<double>(x.data(), g.data(), rstd.data(), inplace.data(), n, c, inplace.data(),
                          nullptr);
  EXPECT_LT(RelErr(inplace, dx), 1e-14);
}

// ---- Softmax ---------------------------------------------------------------

TEST(Softmax, ForwardMatchesNaive) {
  const int64_t n = 3, c = 11;
  auto x = Random<float>(n * c, 1, -5, 5);
  std::vector<float> y(n * c);
  SoftmaxForward(x.data(), n, c, y.data());
  std::vector<double> want(n * c);
  for (int64_t r = 0; r < n; ++r) {
    double s = 0;
    for (int64_t j = 0; j < c; ++j) s += std::exp(double(x[r * c + j]));
    for (int64_t j = 0; j < c; ++j) want[r * c + j] = std::exp(double(x[r * c + j])) / s;
  }
  EXPECT_LT(RelErr(y, want), kFloatTol);
}

TEST(Softmax, BackwardMatchesFiniteDifferences) {
  const int64_t n = 3, c = 6;
  auto x = Random<double>(n * c, 1, -2, 2), r = Random<double>(n * c, 2);
  std::vector<double> y(n * c);
  auto loss = [&] {
    SoftmaxForward(x.data(), n, c, y.data());
    return Dot(y, r);
  };
  loss();
  std::vector<double> dx(n * c);
  SoftmaxBackward(y.data(), r.data(), n, c, dx.data());
  ExpectGradMatches(dx, NumericGrad(&x, loss), "dx");
}

// ---- Attention -------------------------------------------------------------

// Naive attention in double: full score matrix per (row, head), masks, softmax,
// dropout, probs·v.
void NaiveAttention(const AttentionDims& d, const std::vector<double>& qkv,
                    const std::vector<uint8_t>& pad, const std::vector<uint8_t>* keep, float p,
                    std::vector<double>* probs, std::vector<double>* out) {
  const int S = d.seq_len, H = d.hidden(), hd = d.head_dim, W = d.qkv_width();
  const int KV = d.kv_hidden();
  probs->assign(int64_t{d.rows} * d.heads * S * S, 0.0);
  out->assign(int64_t{d.rows} * S * H, 0.0);
  for (int r = 0; r < d.rows; ++r)
    for (int h = 0; h < d.heads; ++h)
      for (int i = 0; i < S; ++i) {
        const int kh = h / (d.heads / d.num_kv_heads());  // repeat_kv
        std::vector<double> sc(S, -std::numeric_limits<double>::infinity());
        double mx = -std::numeric_limits<double>::infinity();
        // Causal: only keys of the query's document (from its last start).
        int begin = 0;
        for (int t = 0; t <= i && d.mask == AttnMask::kCausal; ++t) {
          if (pad[r * S + t] & kMaskDocStart) begin = t;
        }
        for (int j = begin; j < S; ++j) {
          if (!(pad[r * S + j] & kMaskReal) || (d.mask == AttnMask::kCausal && j > i)) continue;
          double s = 0;
          for (int e = 0; e < hd; ++e)
            s += qkv[(r * S + i) * W + h * hd + e] * qkv[(r * S + j) * W + H + kh * hd + e];
          sc[j] = s / std::sqrt(double(hd));
          mx = std::max(mx, sc[j]);
        }
        if (mx == -std::numeric_limits<double>::infinity()) continue;
        double z = 0;
        for (int j = 0; j < S; ++j) z += std::exp(sc[j] - mx);
        for (int j = 0; j < S; ++j) {
          const double pr = std::exp(sc[j] - mx) / z;
          (*probs)[((int64_t(r) * d.heads + h) * S + i) * S + j] = pr;
          double w = pr;
          if (keep)
            w = (*keep)[int64_t(r) * d.heads * S * S + (h * S + i) * S + j] ? w / (1 - p) : 0;
          for (int e = 0; e < hd; ++e)
            (*out)[(r * S + i) * H + h * hd + e] += w * qkv[(r * S + j) * W + H + KV + kh * hd + e];
        }
      }
}

struct AttnCase {
  AttnMask mask;
  bool dropout;
  int kv_heads = 0;   // 0 = heads; 1 or 2 of 4 heads = grouped-query
  bool docs = false;  // documents start inside rows 0 and 1 (doc_attention: within)
};

class AttentionTest : public ::testing::TestWithParam<AttnCase> {};

std::vector<uint8_t> PadMask(int rows, int S, bool docs = false) {
  // Row 0 fully real; row 1 has its last two positions padded; row 2 (if any)
  // is all padding (zero output, zero gradient). With docs, a second document
  // starts at position 2 of row 0 and 1 of row 1 (and a third at 3 of row 0).
  std::vector<uint8_t> pad(rows * S, kMaskReal);
  for (int j = S - 2; j < S; ++j) pad[S + j] = 0;
  if (rows > 2)
    for (int j = 0; j < S; ++j) pad[2 * S + j] = 0;
  if (docs) {
    pad[2] |= kMaskDocStart;
    pad[3] |= kMaskDocStart;
    pad[S + 1] |= kMaskDocStart;
  }
  return pad;
}

std::vector<uint64_t> SampleKeys(int rows) {
  std::vector<uint64_t> k(rows);
  for (int r = 0; r < rows; ++r) k[r] = 1000 + 7 * r;
  return k;
}

TEST_P(AttentionTest, ForwardMatchesNaive) {
  const AttnCase c = GetParam();
  const AttentionDims d{3, 6, 4, 4, c.mask, c.kv_heads};
  const int S = d.seq_len, H = d.hidden();
  auto qkv = Random<float>(int64_t{d.rows} * S * d.qkv_width(), 1, -2, 2);
  auto pad = PadMask(d.rows, S, c.docs);
  const auto keys = SampleKeys(d.rows);
  const float p = 0.3f;
  std::vector<uint8_t> keep(int64_t{d.rows} * d.heads * S * S);
  DropoutMask({p, 11, 2, 3, 0, keys.data()}, d.rows, int64_t{d.heads} * S * S, keep.data());
  std::vector<float> probs(keep.size()), out(int64_t{d.rows} * S * H);
  AttentionForward(d, qkv.data(), pad.data(), c.dropout ? keep.data() : nullptr, p, probs.data(),
                   out.data());
  std::vector<double> want_probs, want_out;
  NaiveAttention(d, std::vector<double>(qkv.begin(), qkv.end()), pad, c.dropout ? &keep : nullptr,
                 p, &want_probs, &want_out);
  EXPECT_LT(RelErr(probs, want_probs), kFloatTol);
  EXPECT_LT(RelErr(out, want_out), kFloatTol);
  EXPECT_GT(MaxAbs(want_out), 0.1);
}

TEST_P(AttentionTest, BackwardMatchesFiniteDifferences) {
  const AttnCase c = GetParam();
  const AttentionDims d{3, 5, 4, 3, c.mask, c.kv_heads};
  const int S = d.seq_len, H = d.hidden();
  auto qkv = Random<double>(int64_t{d.rows} * S * d.qkv_width(), 1, -1.5, 1.5);
  auto pad = PadMask(d.rows, S, c.docs);
  const auto keys = SampleKeys(d.rows);
  const float p = 0.3f;
  std::vector<uint8_t> keep(int64_t{d.rows} * d.heads * S * S);
  DropoutMask({p, 11, 2, 3, 0, keys.data()}, d.rows, int64_t{d.heads} * S * S, keep.data());
  const uint8_t* kp = c.dropout ? keep.data() : nullptr;
  auto r = Random<double>(int64_t{d.rows} * S * H, 2);
  std::vector<double> probs(keep.size()), out(r.size());
  auto loss = [&] {
    AttentionForward(d, qkv.data(), pad.data(), kp, p, probs.data(), out.data());
    return Dot(out, r);
  };
  loss();
  std::vector<double> dqkv(qkv.size(), 99.0);  // written, not accumulated
  AttentionBackward(d, qkv.data(), kp, p, probs.data(), r.data(), dqkv.data());
  ExpectGradMatches(dqkv, NumericGrad(&qkv, loss), "dqkv");
}

INSTANTIATE_TEST_SUITE_P(
    Masks, AttentionTest,
    ::testing::Values(AttnCase{AttnMask::kPaddingOnly, false}, AttnCase{AttnMask::kCausal, false},
                      AttnCase{AttnMask::kPaddingOnly, true}, AttnCase{AttnMask::kCausal, true},
                      AttnCase{AttnMask::kCausal, false, 2}, AttnCase{AttnMask::kCausal, true, 1},
                      AttnCase{AttnMask::kPaddingOnly, true, 2},
                      AttnCase{AttnMask::kCausal, false, 0, true},
                      AttnCase{AttnMask::kCausal, true, 2, true},
                      AttnCase{AttnMask::kPaddingOnly, false, 0, true}),
    [](const ::testing::TestParamInfo<AttnCase>& info) {
      return std::string(info.param.mask == AttnMask::kCausal ? "Causal" : "Padding") +
             (info.param.dropout ? "Dropout" : "NoDropout") +
             (info.param.kv_heads > 0 ? "Kv" + std::to_string(info.param.kv_heads) : "") +
             (info.param.docs ? "Documents" : "");
    });

// ---- Rotary embeddings -------------------------------------------------------

RopeParams Llama3Rope() {
  RopeParams p;
  p.theta = 500000.0;
  p.scaling = RopeScaling::kLlama3;
  p.factor = 8.0;
  p.low_freq_factor = 1.0;
  p.high_freq_factor = 4.0;
  p.original_max_positions = 64;  // small, so that a head_dim of 16 has all three bands
  return p;
}

TEST(Rope, InvFreqIsTransformersFormula) {
  RopeParams plain;
  plain.theta = 10000.0;
  const int hd = 16;
  for (int i = 0; i < hd / 2; ++i) {
    EXPECT_NEAR(RopeInvFreq(plain, i, hd), 1.0 / std::pow(10000.0, 2.0 * i / hd), 1e-7) << i;
  }
  // llama3: short wavelengths unchanged, long ones divided by factor, a blend between.
  const RopeParams p = Llama3Rope();
  int high = 0, low = 0, mid = 0;
  for (int i = 0; i < hd / 2; ++i) {
    const double inv = 1.0 / std::pow(p.theta, 2.0 * i / hd);
    const double wavelen = 2 * M_PI / inv;
    const double got = RopeInvFreq(p, i, hd);
    if (wavelen < 64.0 / 4.0) {
      ++high;
      EXPECT_NEAR(got, inv, 1e-6 * inv) << i;
    } else if (wavelen > 64.0) {
      ++low;
      EXPECT_NEAR(got, inv / 8.0, 1e-6 * inv) << i;
    } else {
      ++mid;
      const double smooth = (64.0 / wavelen - 1.0) / (4.0 - 1.0);
      EXPECT_NEAR(got, (1 - smooth) * inv / 8.0 + smooth * inv, 1e-6 * inv) << i;
    }
  }
  EXPECT_GT(high, 0);
  EXPECT_GT(low, 0);
  EXPECT_GT(mid, 0);
}

TEST(Rope, ForwardMatchesRotateHalf) {
  const AttentionDims d{2, 5, 4, 6, AttnMask::kCausal, 2};
  const RopeParams p = Llama3Rope();
  const int64_t W = d.qkv_width(), tokens = int64_t{d.rows} * d.seq_len;
  auto x = Random<float>(tokens * W, 1, -2, 2);
  std::vector<int32_t> pos(tokens);
  for (int64_t t = 0; t < tokens; ++t) pos[t] = static_cast<int32_t>(3 * t + 1);
  for (const int32_t* positions :
       {static_cast<const int32_t*>(nullptr), static_cast<const int32_t*>(pos.data())}) {
    std::vector<float> y = x;
    RopeForward(d, p, positions, y.data());
    std::vector<double> want(x.begin(), x.end());
    const int half = d.head_dim / 2;
    for (int64_t t = 0; t < tokens; ++t) {
      const double ps = positions ? positions[t] : t % d.seq_len;
      for (int h = 0; h < d.heads + d.num_kv_heads(); ++h) {  // q heads, then k heads
        const int64_t base = t * W + int64_t{h} * d.head_dim;
        for (int i = 0; i < d.head_dim; ++i) {
          // q * cos + rotate_half(q) * sin, rotate_half(q) = [-q2, q1]
          const int f = i % half;
          const double ang = ps * RopeInvFreq(p, f, d.head_dim);
          const double rot = i < half ? -x[base + i + half] : x[base + i - half];
          want[base + i] = x[base + i] * std::cos(ang) + rot * std::sin(ang);
        }
      }
    }
    EXPECT_LT(RelErr(y, want), kFloatTol);
    // v is untouched.
    for (int64_t t = 0; t < tokens; ++t)
      for (int64_t j = d.hidden() + d.kv_hidden(); j < W; ++j)
        ASSERT_EQ(y[t * W + j], x[t * W + j]);
  }
}

TEST(Rope, BackwardMatchesFiniteDifferences) {
  const AttentionDims d{2, 4, 2, 4, AttnMask::kCausal, 1};
  const RopeParams p = Llama3Rope();
  const int64_t n = int64_t{d.rows} * d.seq_len * d.qkv_width();
  auto x = Random<double>(n, 1), r = Random<double>(n, 2);
  auto loss = [&] {
    std::vector<double> y = x;
    RopeForward(d, p, nullptr, y.data());
    return Dot(y, r);
  };
  std::vector<double> dx = r;
  RopeBackward(d, p, nullptr, dx.data());
  ExpectGradMatches(dx, NumericGrad(&x, loss), "dqkv");
}

// ---- Pointwise -------------------------------------------------------------

TEST(Gelu, ForwardMatchesNaive) {
  auto x = Random<float>(101, 1, -4, 4);
  std::vector<float> y(x.size());
  GeluForward(x.data(), int64_t(x.size()), y.data());
  std::vector<double> want(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double v = x[i];
    want[i] = 0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
  }
  EXPECT_LT(RelErr(y, want), kFloatTol);
}

TEST(Gelu, BackwardMatchesFiniteDifferences) {
  auto x = Random<double>(57, 1, -4, 4), r = Random<double>(57, 2);
  std::vector<double> y(x.size());
  auto loss = [&] {
    GeluForward(x.data(), int64_t(x.size()), y.data());
    return Dot(y, r);
  };
  std::vector<double> dx(x.size());
  GeluBackward(x.data(), r.data(), int64_t(x.size()), dx.data());
  ExpectGradMatches(dx, NumericGrad(&x, loss), "dx");
}

TEST(Gelu, ErfFormMatchesNaive) {
  auto x = Random<float>(101, 1, -4, 4);
  std::vector<float> y(x.size());
  GeluForward(x.data(), int64_t(x.size()), y.data(), Gelu::kErf);
  std::vector<double> want(x.size());
  for (size_t i = 0; i < x.size(); ++i)
    want[i] = 0.5 * x[i] * (1 + std::erf(x[i] / std::sqrt(2.0)));
  EXPECT_LT(RelErr(y, want), kFloatTol);
}

TEST(Gelu, ErfFormBackwardMatchesFiniteDifferences) {
  auto x = Random<double>(57, 1, -4, 4), r = Random<double>(57, 2);
  std::vector<double> y(x.size());
  auto loss = [&] {
    GeluForward(x.data(), int64_t(x.size()), y.data(), Gelu::kErf);
    return Dot(y, r);
  };
  std::vector<double> dx(x.size());
  GeluBackward(x.data(), r.data(), int64_t(x.size()), dx.data(), Gelu::kErf);
  ExpectGradMatches(dx, NumericGrad(&x, loss), "dx");
}

TEST(Swiglu, ForwardMatchesNaive) {
  const int64_t n = 5, f = 9;
  auto gu = Random<float>(n * 2 * f, 1, -4, 4);
  std::vector<float> y(n * f);
  SwigluForward(gu.data(), n, f, y.data());
  std::vector<double> want(n * f);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t j = 0; j < f; ++j) {
      const double g = gu[r * 2 * f + j], u = gu[r * 2 * f + f + j];
      want[r * f + j] = g / (1 + std::exp(-g)) * u;
    }
  EXPECT_LT(RelErr(y, want), kFloatTol);
}

TEST(Swiglu, BackwardMatchesFiniteDifferences) {
  const int64_t n = 3, f = 4;
  auto gu = Random<double>(n * 2 * f, 1, -3, 3), r = Random<double>(n * f, 2);
  auto loss = [&] {
    std::vector<double> y(n * f);
    SwigluForward(gu.data(), n, f, y.data());
    return Dot(y, r);
  };
  std::vector<double> dgu(gu.size(), 7.0);  // written
  SwigluBackward(gu.data(), r.data(), n, f, dgu.data());
  ExpectGradMatches(dgu, NumericGrad(&gu, loss), "dgate_up");
}

TEST(Dropout, MaskIsTheKeyedHash) {
  const int64_t rows = 3, elems = 4000;
  const auto keys = SampleKeys(rows);
  // p * 2^24 integral (0.25) and not (0.1f), and p = 0 (keep everything).
  for (float p : {0.25f, 0.1f, 0.0f}) {
    const DropoutKeys k{p, 42, 7, 3, 1, keys.data()};
    std::vector<uint8_t> keep(rows * elems);
    DropoutMask(k, rows, elems, keep.data());
    int64_t kept = 0;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t e = 0; e < elems; ++e) {
        const uint64_t h = HashKeys(42, RngPurpose::kDropout, 7, 3, keys[r], 1, e);
        ASSERT_EQ(keep[r * elems + e], UniformFloat(h) >= p ? 1 : 0) << p << ": " << r << "," << e;
        ASSERT_EQ(keep[r * elems + e], DropoutKeep(k, r, e) ? 1 : 0);
        kept += keep[r * elems + e];
      }
    EXPECT_NEAR(double(kept) / (rows * elems), 1.0 - p, 0.02) << p;
  }
  // Another site gives another mask.
  std::vector<uint8_t> a(rows * elems), b(rows * elems);
  DropoutMask({0.25f, 42, 7, 3, 1, keys.data()}, rows, elems, a.data());
  DropoutMask({0.25f, 42, 7, 3, 2, keys.data()}, rows, elems, b.data());
  EXPECT_NE(a, b);
}

TEST(Dropout, ForwardScalesKeptAndBackwardMatchesFiniteDifferences) {
  const int64_t rows = 2, elems = 50;
  const auto keys = SampleKeys(rows);
  const float p = 0.4f;
  std::vector<uint8_t> keep(rows * elems);
  DropoutMask({p, 1, 0, 0, 0, keys.data()}, rows, elems, keep.data());
  auto xf = Random<float>(rows * elems, 1);
  std::vector<float> yf(xf.size());
  DropoutForward(xf.data(), keep.data(), rows * elems, p, yf.data());
  for (int64_t i = 0; i < rows * elems; ++i)
    EXPECT_FLOAT_EQ(yf[i], keep[i] ? xf[i] / (1 - p) : 0.f) << i;

  auto x = Random<double>(rows * elems, 1), r = Random<double>(rows * elems, 2);
  std::vector<double> y(x.size());
  auto loss = [&] {
    DropoutForward(x.data(), keep.data(), rows * elems, p, y.data());
    return Dot(y, r);
  };
  std::vector<double> dx(x.size());
  DropoutBackward(r.data(), keep.data(), rows * elems, p, dx.data());
  ExpectGradMatches(dx, NumericGrad(&x, loss), "dx");
}

TEST(Add, MatchesNaive) {
  auto a = Random<float>(37, 1), b = Random<float>(37, 2);
  std::vector<float> y(37);
  Add(a.data(), b.data(), 37, y.data());
  for (int i = 0; i < 37; ++i) EXPECT_EQ(y[i], a[i] + b[i]);
}

// ---- Embeddings ------------------------------------------------------------

TEST(Embedding, ForwardMatchesNaiveAndAccumulates) {
  const int64_t vocab = 9, dim = 5, n = 7;
  auto table = Random<float>(vocab * dim, 1);
  const std::vector<int32_t> ids = {3, 0, 8, 3, 3, 1, 7};
  std::vector<float> out(n * dim);
  EmbeddingForward(table.data(), vocab, dim, ids.data(), n, out.data());
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < dim; ++j) EXPECT_EQ(out[i * dim + j], table[ids[i] * dim + j]);
  EmbeddingForward(table.data(), vocab, dim, ids.data(), n, out.data(), Accum::kAdd);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < dim; ++j) EXPECT_EQ(out[i * dim + j], 2 * table[ids[i] * dim + j]);
}

TEST(Embedding, BackwardMatchesFiniteDifferences) {
  const int64_t vocab = 6, dim = 4, n = 9;
  auto table = Random<double>(vocab * dim, 1);
  const std::vector<int32_t> ids = {3, 0, 5, 3, 3, 1, 0, 2, 3};  // repeats, and id 4 unused
  auto r = Random<double>(n * dim, 2);
  auto loss = [&] {
    std::vector<double> out(n * dim);
    EmbeddingForward(table.data(), vocab, dim, ids.data(), n, out.data());
    return Dot(out, r);
  };
  std::vector<double> dtable(vocab * dim, 0.0);
  EmbeddingBackward(ids.data(), n, r.data(), vocab, dim, dtable.data());
  ExpectGradMatches(dtable, NumericGrad(&table, loss), "dtable");
  for (int64_t j = 0; j < dim; ++j) EXPECT_EQ(dtable[4 * dim + j], 0.0);
}

TEST(Embedding, BackwardIndependentOfThreadCount) {
  const int64_t vocab = 50, dim = 200, n = 999;
  std::vector<int32_t> ids(n);
  for (int64_t i = 0; i < n; ++i) ids[i] = static_cast<int32_t>((i * 37) % vocab);
  auto dout = Random<float>(n * dim, 3);
  std::vector<float> d1(vocab * dim, 0.f), d2(vocab * dim, 0.f);
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  EmbeddingBackward(ids.data(), n, dout.data(), vocab, dim, d1.data());
  omp_set_num_threads(4);
  EmbeddingBackward(ids.data(), n, dout.data(), vocab, dim, d2.data());
  omp_set_num_threads(saved);
  EXPECT_EQ(d1, d2);
}

TEST(PositionEmbedding, ForwardAndBackward) {
  const int64_t rows = 3, seq = 4, dim = 5;
  auto pos = Random<double>(seq * dim, 1), r = Random<double>(rows * seq * dim, 2);
  std::vector<double> out(rows * seq * dim);
  auto loss = [&] {
    PositionEmbeddingForward(pos.data(), rows, seq, dim, out.data());
    return Dot(out, r);
  };
  loss();
  for (int64_t i = 0; i < rows * seq; ++i)
    for (int64_t j = 0; j < dim; ++j) EXPECT_EQ(out[i * dim + j], pos[(i % seq) * dim + j]);
  std::vector<double> dpos(seq * dim, 0.0);
  PositionEmbeddingBackward(r.data(), rows, seq, dim, dpos.data());
  ExpectGradMatches(dpos, NumericGrad(&pos, loss), "dpos");
}

TEST(Rows, GatherThenScatterRoundTrips) {
  const int64_t n = 6, c = 3;
  auto x = Random<float>(n * c, 1);
  const std::vector<int32_t> idx = {4, 1, 5};
  std::vector<float> g(idx.size() * c);
  GatherRows(x.data(), idx.data(), int64_t(idx.size()), c, g.data());
  for (size_t i = 0; i < idx.size(); ++i)
    for (int64_t j = 0; j < c; ++j) EXPECT_EQ(g[i * c + j], x[idx[i] * c + j]);
  std::vector<float> back(n * c, 0.f);
  ScatterRows(g.data(), idx.data(), int64_t(idx.size()), c, back.data());
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < c; ++j) {
      const bool chosen = i == 1 || i == 4 || i == 5;
      EXPECT_EQ(back[i * c + j], chosen ? x[i * c + j] : 0.f);
    }
}

// ---- Cross-entropy ---------------------------------------------------------

TEST(CrossEntropy, LossMatchesNaiveAndIgnoresTargets) {
  const int64_t n = 5, vocab = 13;
  auto logits = Random<float>(n * vocab, 1, -3, 3);
  const std::vector<int32_t> t = {2, kNoTarget, 12, 0, kNoTarget};
  std::vector<float> dl(n * vocab, 7.f);
  const auto res = CrossEntropy(logits.data(), t.data(), n, vocab, 1.0, dl.data());
  double want = 0;
  for (int64_t r = 0; r < n; ++r) {
    if (t[r] < 0) continue;
    double z = 0;
    for (int64_t j = 0; j < vocab; ++j) z += std::exp(double(logits[r * vocab + j]));
    want += std::log(z) - logits[r * vocab + t[r]];
  }
  EXPECT_EQ(res.count, 3);
  EXPECT_NEAR(res.loss_sum, want, 1e-5 * want);
  for (int64_t j = 0; j < vocab; ++j) {
    EXPECT_EQ(dl[1 * vocab + j], 0.f);
    EXPECT_EQ(dl[4 * vocab + j], 0.f);
  }
  // Loss only, no gradient buffer.
  const auto res2 = CrossEntropy<float>(logits.data(), t.data(), n, vocab, 1.0, nullptr);
  EXPECT_EQ(res2.loss_sum, res.loss_sum);
}

TEST(CrossEntropy, GradientMatchesFiniteDifferencesInPlace) {
  const int64_t n = 4, vocab = 7;
  const double scale = 0.37;
  auto logits = Random<double>(n * vocab, 1, -2, 2);
  const std::vector<int32_t> t = {6, 0, kNoTarget, 3};
  auto loss = [&] {
    return scale * CrossEntropy<double>(logits.data(), t.data(), n, vocab, scale, nullptr).loss_sum;
  };
  const auto numeric = NumericGrad(&logits, loss);
  std::vector<double> inplace = logits;
  CrossEntropy(inplace.data(), t.data(), n, vocab, scale, inplace.data());
  ExpectGradMatches(inplace, numeric, "dlogits");
}

}  // namespace
}  // namespace l2l::kernels::cpu
