// Layer functions: layouts, shard-independent init, gradients of every layer
// against central finite differences in double (dropout on: the masks are
// keyed, so they are fixed under perturbation and the backward's recompute must
// reproduce them), recompute determinism, float/double agreement, and that
// the layers stay inside their stated workspace.
//
// Gradient tolerance: per tensor, max|analytic - numeric| / max|numeric| < 1e-6
// with h = 1e-5 in double (observed <= 6e-10).
#include "l2l/model/model.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "../kernels/finite_diff.h"
#include "l2l/kernels/params.h"

namespace l2l::model {
namespace {

constexpr double kFdTol = 1e-8;
constexpr double kGuard = 12345.0;  // sentinel after the workspace
constexpr int64_t kGuardElems = 256;

// Small dimensions of each architecture; llama gets grouped-query attention
// (2 query heads per key/value head) and Llama-3 rope scaling with a short
// original context, so all three frequency bands occur.
ModelDims TinyDims(Arch arch) {
  ModelDims d;
  d.arch = arch;
  d.num_blocks = 2;
  d.hidden = 8;
  d.heads = 2;
  d.ffn = 12;
  d.vocab = 11;
  d.seq_len = 5;
  d.max_positions = 7;
  d.type_vocab = 3;
  d.dropout = 0.2;
  d.norm_eps = arch == Arch::kBert ? 1e-12 : 1e-5;
  d.gelu = arch == Arch::kBert ? kernels::Gelu::kErf : kernels::Gelu::kTanh;
  if (arch == Arch::kLlama) {
    d.hidden = 16;
    d.heads = 4;
    d.kv_heads = 2;
    d.rope.theta = 10000.0;
    d.rope.scaling = kernels::RopeScaling::kLlama3;
    d.rope.factor = 4.0;
    d.rope.original_max_positions = 16;
  }
  return d;
}

constexpr Arch kArchs[] = {Arch::kBert, Arch::kGpt2, Arch::kLlama};

double MaxAbs(const double* v, int64_t n) {
  double m = 0;
  for (int64_t i = 0; i < n; ++i) m = std::max(m, std::abs(v[i]));
  return m;
}

double RelErr(const double* got, const double* want, int64_t n) {
  double num = 0;
  for (int64_t i = 0; i < n; ++i) num = std::max(num, std::abs(got[i] - want[i]));
  const double den = MaxAbs(want, n);
  return den == 0 ? num : num / den;
}

double Dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

std::vector<double> RandomVec(int64_t n, uint64_t seed, double lo = -1, double hi = 1) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<double> u(lo, hi);
  std::vector<double> v(n);
  for (auto& x : v) x = u(gen);
  return v;
}

// Parameters with O(1) spread (the N(0, 0.02) init would make attention
// near-uniform and gradients tiny): gains 1 ± 0.3, everything else U(-0.5, 0.5),
// padding 0.
std::vector<double> RandomParams(const ParamLayout& l, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<double> u(-0.5, 0.5);
  std::vector<double> p(l.size_elems(), 0.0);
  for (const TensorSpec& t : l.tensors())
    for (int64_t i = 0; i < t.shape.num_elements(); ++i)
      p[t.offset_elems + i] = (t.init == Init::kOnes ? 1.0 : 0.0) + u(gen);
  return p;
}

// A workspace with a sentinel tail that the layer must not touch.
struct Workspace {
  explicit Workspace(int64_t elems) : elems(elems), buf(elems + kGuardElems, kGuard) {}
  double* data() { return buf.data(); }
  bool GuardIntact() const {
    return std::all_of(buf.begin() + elems, buf.end(), [](double v) { return v == kGuard; });
  }
  int64_t elems;
  std::vector<double> buf;
};

using ::l2l::testing::kFdStep;
using ::l2l::testing::NumericGrad;

// Checks every tensor of `l` separately (so a small wrong tensor is not hidden
// by a large right one) and that padding gets no gradient. One tensor's
// gradient is legitimately 0: BERT's separate key bias (q·(k + b) shifts every
// score of a query alike, and softmax ignores the shift); it must then be 0
// (to rounding) in the analytic gradient too.
void ExpectParamGradsMatch(const ParamLayout& l, const std::vector<double>& analytic,
                           const std::vector<double>& numeric, const std::string& what) {
  std::vector<bool> in_tensor(l.size_elems(), false);
  for (const TensorSpec& t : l.tensors()) {
    const int64_t n = t.shape.num_elements();
    const double* a = analytic.data() + t.offset_elems;
    const double* nu = numeric.data() + t.offset_elems;
    const bool zero_grad = t.name == "attn.k.bias" && what == "bert";
    if (zero_grad) {
      EXPECT_LT(MaxAbs(nu, n), 1e-9) << what << " " << t.name;
      EXPECT_LT(MaxAbs(a, n), 1e-12) << what << " " << t.name;
    } else {
      EXPECT_GT(MaxAbs(nu, n), 1e-4) << what << " " << t.name << ": trivially small gradient";
      EXPECT_LT(RelErr(a, nu, n), kFdTol) << what << " " << t.name;
    }
    std::fill(in_tensor.begin() + t.offset_elems, in_tensor.begin() + t.offset_elems + n, true);
  }
  for (int64_t i = 0; i < l.size_elems(); ++i)
    if (!in_tensor[i]) {
      EXPECT_EQ(analytic[i], 0.0) << what << " padding element " << i;
    }
}

std::vector<uint64_t> SampleKeys(int rows) {
  std::vector<uint64_t> k(rows);
  for (int r = 0; r < rows; ++r) k[r] = 5000 + 13 * r;
  return k;
}

// Row 0 all real; row 1 has its last position padded.
std::vector<uint8_t> AttnMaskFor(const ModelDims& d, int rows) {
  std::vector<uint8_t> m(int64_t{rows} * d.seq_len, 1);
  if (rows > 1) m[2 * d.seq_len - 1] = 0;
  return m;
}

// ---- Layout and init ---------------------------------------------------------

TEST(Layout, AlignedOrderedAndNamed) {
  for (Arch arch : kArchs) {
    for (bool tied : {false, true}) {
      ModelDims d = TinyDims(arch);
      d.tie_embeddings = tied;
      d.attention_bias = arch == Arch::kLlama;
      for (LayerKind kind : {LayerKind::kEmbedding, LayerKind::kBlock, LayerKind::kHead}) {
        const ParamLayout l = LayoutFor(d, kind);
        EXPECT_EQ(l.size_elems() % kParamAlignElems, 0);
        int64_t end = 0;
        for (const TensorSpec& t : l.tensors()) {
          // Aligned tensors start on a boundary; packed ones right after their predecessor.
          EXPECT_TRUE(t.offset_elems % kParamAlignElems == 0 || t.offset_elems == end) << t.name;
          EXPECT_GE(t.offset_elems, end) << t.name << " overlaps its predecessor";
          end = t.offset_elems + t.shape.num_elements();
          EXPECT_EQ(l.Find(t.name), &t);
        }
        EXPECT_LE(end, l.size_elems());
        EXPECT_GT(end + kParamAlignElems, l.size_elems()) << "more padding than alignment needs";
      }
    }
  }
  const ModelDims bert = TinyDims(Arch::kBert), gpt = TinyDims(Arch::kGpt2);
  const int64_t H = bert.hidden, F = bert.ffn, V = bert.vocab;
  // gpt2 keeps Conv1D's (in, out); bert nn.Linear's (out, in), q / k / v packed.
  const ParamLayout gblk = LayoutFor(gpt, LayerKind::kBlock);
  ASSERT_EQ(gblk.tensors().size(), 12u);
  EXPECT_EQ(gblk.Find("attn.qkv.weight")->shape, (Shape{H, 3 * H}));
  EXPECT_EQ(gblk.Find("mlp.fc1.weight")->shape, (Shape{H, F}));
  EXPECT_EQ(gblk.Find("mlp.fc2.weight")->shape, (Shape{F, H}));
  const ParamLayout bblk = LayoutFor(bert, LayerKind::kBlock);
  ASSERT_EQ(bblk.tensors().size(), 16u);
  EXPECT_EQ(bblk.Find("mlp.fc1.weight")->shape, (Shape{F, H}));
  EXPECT_EQ(bblk.OffsetOf("attn.k.weight"), bblk.OffsetOf("attn.q.weight") + H * H);
  EXPECT_EQ(bblk.OffsetOf("attn.v.bias"), bblk.OffsetOf("attn.k.bias") + H);
  EXPECT_EQ(bblk.Find("ln2.gain")->init, Init::kOnes);
  EXPECT_EQ(bblk.Find("mlp.fc2.bias")->init, Init::kZeros);
  EXPECT_EQ(bblk.Find("nope"), nullptr);
  // llama: grouped k / v, packed gate / up, no biases by default.
  ModelDims llama = TinyDims(Arch::kLlama);
  const int64_t LH = llama.hidden, KV = int64_t{KvHeads(llama)} * HeadDim(llama);
  const ParamLayout lblk = LayoutFor(llama, LayerKind::kBlock);
  EXPECT_EQ(lblk.tensors().size(), 9u);
  EXPECT_EQ(lblk.Find("attn.k.weight")->shape, (Shape{KV, LH}));
  EXPECT_EQ(lblk.OffsetOf("attn.v.weight"), lblk.OffsetOf("attn.k.weight") + KV * LH);
  EXPECT_EQ(lblk.OffsetOf("mlp.up.weight"), lblk.OffsetOf("mlp.gate.weight") + F * LH);
  EXPECT_EQ(lblk.Find("ln1.bias"), nullptr);
  EXPECT_EQ(lblk.Find("attn.q.bias"), nullptr);
  llama.attention_bias = true;
  EXPECT_EQ(LayoutFor(llama, LayerKind::kBlock).Find("attn.k.bias")->shape, (Shape{KV}));
  // Embeddings and heads.
  EXPECT_NE(LayoutFor(bert, LayerKind::kEmbedding).Find("type_emb"), nullptr);
  EXPECT_EQ(LayoutFor(gpt, LayerKind::kEmbedding).Find("type_emb"), nullptr);
  EXPECT_EQ(LayoutFor(gpt, LayerKind::kEmbedding).Find("ln.gain"), nullptr);  // GPT-2 has none
  EXPECT_EQ(LayoutFor(gpt, LayerKind::kEmbedding).Find("pos_emb")->shape, (Shape{7, H}));
  EXPECT_EQ(LayoutFor(llama, LayerKind::kEmbedding).tensors().size(), 1u);
  EXPECT_EQ(LayoutFor(bert, LayerKind::kHead).Find("dense.weight")->shape, (Shape{H, H}));
  EXPECT_EQ(LayoutFor(gpt, LayerKind::kHead).Find("dense.weight"), nullptr);
  EXPECT_EQ(LayoutFor(gpt, LayerKind::kHead).Find("decoder.weight")->shape, (Shape{V, H}));
  EXPECT_EQ(LayoutFor(gpt, LayerKind::kHead).Find("decoder.bias"), nullptr);  // no LM-head bias
  ModelDims tied = gpt;
  tied.tie_embeddings = true;
  EXPECT_EQ(LayoutFor(tied, LayerKind::kHead).Find("decoder.weight"), nullptr);
  tied = bert;
  tied.tie_embeddings = true;
  EXPECT_NE(LayoutFor(tied, LayerKind::kHead).Find("decoder.bias"), nullptr);  // BERT keeps it
  EXPECT_EQ(KindOf(bert, 0), LayerKind::kEmbedding);
  EXPECT_EQ(KindOf(bert, 1), LayerKind::kBlock);
  EXPECT_EQ(KindOf(bert, bert.num_blocks), LayerKind::kBlock);
  EXPECT_EQ(KindOf(bert, bert.num_blocks + 1), LayerKind::kHead);
}

TEST(Layout, ValidateNamesTheBadField) {
  ModelDims d = TinyDims(Arch::kBert);
  EXPECT_TRUE(ValidateModelDims(d).ok());
  d.heads = 3;
  EXPECT_NE(ValidateModelDims(d).message().find("heads"), std::string::npos);
  d = TinyDims(Arch::kBert);
  d.dropout = 1.0;
  EXPECT_NE(ValidateModelDims(d).message().find("dropout"), std::string::npos);
  d = TinyDims(Arch::kLlama);
  d.kv_heads = 3;
  EXPECT_NE(ValidateModelDims(d).message().find("kv_heads"), std::string::npos);
  d = TinyDims(Arch::kGpt2);
  d.max_positions = 4;
  EXPECT_NE(ValidateModelDims(d).message().find("max_positions"), std::string::npos);
}

TEST(Init, SubRangeEqualsSliceOfFullRange) {
  for (Arch arch : kArchs) {
    ModelDims d = TinyDims(arch);
    d.scale_residual_init = arch == Arch::kGpt2;
    for (int layer = 0; layer < NumLayers(d); ++layer) {
      const ParamLayout l = LayoutForLayer(d, layer);
      const int64_t n = l.size_elems();
      std::vector<float> full(n);
      InitParamRange(d, layer, 77, 0, n, full.data());
      // Shards of a few world sizes, including ones that cut tensors mid-way.
      for (int64_t world : {1, 2, 3, 7}) {
        const int64_t shard = (n + world - 1) / world;
        for (int64_t r = 0; r < world; ++r) {
          const int64_t b = std::min(n, r * shard), e = std::min(n, b + shard);
          std::vector<float> part(e - b);
          InitParamRange(d, layer, 77, b, e, part.data());
          ASSERT_EQ(0, std::memcmp(part.data(), full.data() + b, part.size() * sizeof(float)))
              << "layer " << layer << " world " << world << " rank " << r;
        }
      }
      // Values by kind; padding 0.
      std::vector<bool> in_tensor(n, false);
      for (const TensorSpec& t : l.tensors()) {
        double sum2 = 0;
        for (int64_t i = 0; i < t.shape.num_elements(); ++i) {
          const float v = full[t.offset_elems + i];
          in_tensor[t.offset_elems + i] = true;
          if (t.init == Init::kOnes) {
            ASSERT_EQ(v, 1.0f) << t.name;
          } else if (t.init == Init::kZeros) {
            ASSERT_EQ(v, 0.0f) << t.name;
          }
          sum2 += double(v) * v;
        }
        if (t.init == Init::kNormal && t.shape.num_elements() >= 40) {
          // GPT-2's scheme: residual projections at 0.02 / sqrt(2 * blocks).
          const bool residual = t.name == "attn.proj.weight" || t.name == "mlp.fc2.weight";
          const double want = d.scale_residual_init && residual
                                  ? d.init_std / std::sqrt(2.0 * d.num_blocks)
                                  : d.init_std;
          EXPECT_DOUBLE_EQ(t.init_std, want) << t.name;
          EXPECT_NEAR(std::sqrt(sum2 / t.shape.num_elements()), want, 0.3 * want) << t.name;
        }
      }
      for (int64_t i = 0; i < n; ++i)
        if (!in_tensor[i]) {
          ASSERT_EQ(full[i], 0.0f) << "padding " << i;
        }
    }
  }
  const ModelDims d = TinyDims(Arch::kBert);
  // Another seed or layer gives other values.
  const int64_t n = LayoutForLayer(d, 1).size_elems();
  std::vector<float> a(n), b(n), c(n);
  InitParamRange(d, 1, 77, 0, n, a.data());
  InitParamRange(d, 1, 78, 0, n, b.data());
  InitParamRange(d, 2, 77, 0, n, c.data());
  EXPECT_NE(a, b);
  EXPECT_NE(a, c);
}

// ---- Embedding -----------------------------------------------------------------

struct EmbeddingCase {
  Arch arch;
  bool with_types;
};

class EmbeddingGradTest : public ::testing::TestWithParam<EmbeddingCase> {};

TEST_P(EmbeddingGradTest, MatchesFiniteDifferences) {
  const EmbeddingCase c = GetParam();
  const ModelDims d = TinyDims(c.arch);
  const int rows = 2;
  const int64_t N = int64_t{rows} * d.seq_len, H = d.hidden;
  const ParamLayout l = LayoutFor(d, LayerKind::kEmbedding);
  auto params = RandomParams(l, 1);
  std::vector<int32_t> tokens(N), types(N);
  for (int64_t i = 0; i < N; ++i) {
    tokens[i] = static_cast<int32_t>((i * 7 + 3) % d.vocab);  // repeats across rows
    types[i] = static_cast<int32_t>(i % d.type_vocab);
  }
  const int32_t* tt = c.with_types ? types.data() : nullptr;
  const auto keys = SampleKeys(rows);
  const StepContext ctx{
      .seed = 9, .step = 4, .layer = 0, .training = true, .sample_keys = keys.data()};
  Workspace ws(EmbeddingWorkspaceElems(d, rows));
  const auto r = RandomVec(N * H, 2);
  std::vector<double> out(N * H);
  auto loss = [&] {
    EmbeddingForward(d, ctx, params.data(), tokens.data(), tt, rows, out.data(), ws.data());
    return Dot(out, r);
  };
  loss();
  // Dropout is really on (not for llama, whose only dropout is on attention): some
  // outputs are exactly zero.
  EXPECT_EQ(std::count(out.begin(), out.end(), 0.0) > 0, c.arch != Arch::kLlama);
  std::vector<double> dparams(l.size_elems(), 0.0);
  EmbeddingBackward(d, ctx, params.data(), tokens.data(), tt, rows, r.data(), dparams.data(),
                    ws.data());
  ExpectParamGradsMatch(l, dparams, NumericGrad(&params, loss), "embedding");
  EXPECT_TRUE(ws.GuardIntact());
}

INSTANTIATE_TEST_SUITE_P(
    Archs, EmbeddingGradTest,
    ::testing::Values(EmbeddingCase{Arch::kBert, true}, EmbeddingCase{Arch::kBert, false},
                      EmbeddingCase{Arch::kGpt2, false}, EmbeddingCase{Arch::kLlama, false}),
    [](const ::testing::TestParamInfo<EmbeddingCase>& info) {
      return std::string(ArchName(info.param.arch)) + (info.param.with_types ? "Types" : "NoTypes");
    });

// ---- Block ---------------------------------------------------------------------

struct BlockCase {
  Arch arch;
  bool dropout;
  int kv_heads = 0;             // llama: 0 = the TinyDims default (grouped), else this
  bool attention_bias = false;  // llama (Qwen2)
  bool plain_rope = false;      // llama without rope scaling
};

std::string BlockCaseName(const ::testing::TestParamInfo<BlockCase>& info) {
  const BlockCase& c = info.param;
  return std::string(ArchName(c.arch)) + (c.dropout ? "Dropout" : "Eval") +
         (c.kv_heads > 0 ? "Kv" + std::to_string(c.kv_heads) : "") +
         (c.attention_bias ? "Bias" : "") + (c.plain_rope ? "PlainRope" : "");
}

ModelDims BlockDims(const BlockCase& c) {
  ModelDims d = TinyDims(c.arch);
  if (c.kv_heads > 0) d.kv_heads = c.kv_heads;
  d.attention_bias = c.attention_bias;
  if (c.plain_rope) d.rope.scaling = kernels::RopeScaling::kNone;
  return d;
}

class BlockGradTest : public ::testing::TestWithParam<BlockCase> {};

TEST_P(BlockGradTest, MatchesFiniteDifferences) {
  const BlockCase c = GetParam();
  const ModelDims d = BlockDims(c);
  const int rows = 2;
  const int64_t N = int64_t{rows} * d.seq_len, H = d.hidden;
  const ParamLayout l = LayoutFor(d, LayerKind::kBlock);
  auto params = RandomParams(l, 3);
  auto x = RandomVec(N * H, 4, -1.5, 1.5);
  const auto mask = AttnMaskFor(d, rows);
  const auto keys = SampleKeys(rows);
  const StepContext ctx{
      .seed = 21, .step = 6, .layer = 1, .training = c.dropout, .sample_keys = keys.data()};
  Workspace ws(BlockWorkspaceElems(d, rows));
  const auto r = RandomVec(N * H, 5);
  std::vector<double> y(N * H);
  auto loss = [&] {
    BlockForward(d, ctx, params.data(), x.data(), mask.data(), rows, y.data(), ws.data());
    return Dot(y, r);
  };
  // dparams accumulate: start from a constant and subtract it afterwards.
  std::vector<double> dparams(l.size_elems(), 0.5), dx(N * H, 99.0);
  BlockBackward(d, ctx, params.data(), x.data(), mask.data(), rows, r.data(), dx.data(),
                dparams.data(), ws.data());
  EXPECT_TRUE(ws.GuardIntact());
  for (auto& v : dparams) v -= 0.5;
  ExpectParamGradsMatch(l, dparams, NumericGrad(&params, loss), ArchName(d.arch));
  const auto ndx = NumericGrad(&x, loss);
  EXPECT_GT(MaxAbs(ndx.data(), N * H), 1e-3);
  EXPECT_LT(RelErr(dx.data(), ndx.data(), N * H), kFdTol) << "dx";
}

INSTANTIATE_TEST_SUITE_P(
    Variants, BlockGradTest,
    ::testing::Values(BlockCase{Arch::kBert, true}, BlockCase{Arch::kBert, false},
                      BlockCase{Arch::kGpt2, true}, BlockCase{Arch::kGpt2, false},
                      BlockCase{Arch::kLlama, true}, BlockCase{Arch::kLlama, false},
                      BlockCase{Arch::kLlama, true, 1, true},
                      BlockCase{Arch::kLlama, false, 4, true, true}),
    BlockCaseName);

// data.doc_attention: within. A row packing document A (3 tokens) before B (5)
// with B's start marked gives B the outputs, input gradients and parameter
// gradients B has alone at the start of a row, and A no gradient from B's.
// Exact for gpt's block (no positions inside it); llama's rope scores depend
// only on the distance between query and key, up to its angles' fp32
// rounding (computed as transformers does), hence 1e-6 there.
TEST(Block, DocAttentionWithinEqualsEachDocumentAlone) {
  for (Arch arch : {Arch::kGpt2, Arch::kLlama}) {
    SCOPED_TRACE(ArchName(arch));
    ModelDims d = TinyDims(arch);
    d.seq_len = 8;
    d.max_positions = 16;
    const int S = d.seq_len, H = d.hidden, a = 3, b = S - a;
    const ParamLayout l = LayoutFor(d, LayerKind::kBlock);
    const auto params = RandomParams(l, 13);
    const auto xa = RandomVec(int64_t{a} * H, 14, -1.5, 1.5);
    const auto xb = RandomVec(int64_t{b} * H, 15, -1.5, 1.5);
    const auto filler = RandomVec(int64_t{a} * H, 16, -1.5, 1.5);
    const auto gb = RandomVec(int64_t{b} * H, 17);
    // packed = [A | B], B's start marked; alone = [B | filler], one document.
    std::vector<double> packed(xa), alone(xb), dy_packed(int64_t{a} * H, 0.0), dy_alone(gb);
    packed.insert(packed.end(), xb.begin(), xb.end());
    alone.insert(alone.end(), filler.begin(), filler.end());
    dy_packed.insert(dy_packed.end(), gb.begin(), gb.end());
    dy_alone.resize(int64_t{S} * H, 0.0);
    std::vector<uint8_t> mask_packed(S, kMaskReal), mask_alone(S, kMaskReal);
    mask_packed[a] |= kMaskDocStart;
    const auto keys = SampleKeys(1);
    StepContext ctx{
        .seed = 21, .step = 6, .layer = 1, .training = false, .sample_keys = keys.data()};
    Workspace ws(BlockWorkspaceElems(d, 1));
    struct Run {
      std::vector<double> y, dx, dparams;
    };
    auto run = [&](const std::vector<double>& x, const std::vector<uint8_t>& mask,
                   const std::vector<double>& dy) {
      Run r{std::vector<double>(int64_t{S} * H), std::vector<double>(int64_t{S} * H),
            std::vector<double>(l.size_elems(), 0.0)};
      BlockForward(d, ctx, params.data(), x.data(), mask.data(), 1, r.y.data(), ws.data());
      BlockBackward(d, ctx, params.data(), x.data(), mask.data(), 1, dy.data(), r.dx.data(),
                    r.dparams.data(), ws.data());
      return r;
    };
    const Run p = run(packed, mask_packed, dy_packed), q = run(alone, mask_alone, dy_alone);
    const int64_t nb = int64_t{b} * H;
    const double tol = arch == Arch::kLlama ? 1e-6 : 1e-12;
    EXPECT_LT(RelErr(p.y.data() + int64_t{a} * H, q.y.data(), nb), tol) << "outputs";
    EXPECT_LT(RelErr(p.dx.data() + int64_t{a} * H, q.dx.data(), nb), tol) << "dx";
    EXPECT_LT(RelErr(p.dparams.data(), q.dparams.data(), l.size_elems()), tol) << "dparams";
    EXPECT_EQ(MaxAbs(p.dx.data(), int64_t{a} * H), 0.0) << "A got gradient from B";
    // Without the mark, B attends to A: not the same (the test can fail).
    std::vector<uint8_t> unmarked(S, kMaskReal);
    const Run c = run(packed, unmarked, dy_packed);
    EXPECT_GT(RelErr(c.y.data() + int64_t{a} * H, q.y.data(), nb), 1e-3);
    EXPECT_TRUE(ws.GuardIntact());
    if (arch == Arch::kLlama) {
      // Positions restarting at B's start give B exactly its angles alone, so
      // the 1e-6 above (rope's fp32 rounding at shifted positions) becomes exact.
      std::vector<int32_t> positions(S);
      for (int t = 0; t < S; ++t) positions[t] = t < a ? t : t - a;
      ctx.positions = positions.data();
      const Run r = run(packed, mask_packed, dy_packed);
      ctx.positions = nullptr;
      EXPECT_LT(RelErr(r.y.data() + int64_t{a} * H, q.y.data(), nb), 1e-12) << "outputs";
      EXPECT_LT(RelErr(r.dx.data() + int64_t{a} * H, q.dx.data(), nb), 1e-12) << "dx";
      EXPECT_LT(RelErr(r.dparams.data(), q.dparams.data(), l.size_elems()), 1e-12) << "dparams";
      EXPECT_GT(RelErr(p.y.data() + int64_t{a} * H, q.y.data(), nb), 1e-12)
          << "the shifted positions were already exact: the check above proves nothing";
    }
  }
}

// gpt2's position table read at explicit position ids (data.doc_positions:
// restart): out[t] = tok[tokens[t]] + pos[positions[t]], and the table's
// gradient gathers each position's tokens: dpos[j] = sum of dout[t] with
// positions[t] = j. Checked element by element against the formula.
TEST(Embedding, PositionIdsIndexThePositionTable) {
  ModelDims d = TinyDims(Arch::kGpt2);
  d.seq_len = 8;
  d.max_positions = 16;
  const int S = d.seq_len, H = d.hidden, rows = 2;
  const int64_t N = int64_t{rows} * S;
  const ParamLayout l = LayoutFor(d, LayerKind::kEmbedding);
  const auto params = RandomParams(l, 31);
  const double* tok = params.data() + l.OffsetOf("tok_emb");
  const double* pos = params.data() + l.OffsetOf("pos_emb");
  std::vector<int32_t> tokens(N), positions(N);
  for (int64_t i = 0; i < N; ++i) {
    tokens[i] = static_cast<int32_t>((i * 5 + 2) % d.vocab);
    const int t = static_cast<int>(i % S);
    positions[i] = i < S ? (t < 3 ? t : t - 3) : (t < 5 ? t : t - 5);  // rows restart at 3, 5
  }
  const auto keys = SampleKeys(rows);
  StepContext ctx{.seed = 1, .step = 0, .layer = 0, .training = false, .sample_keys = keys.data()};
  ctx.positions = positions.data();
  Workspace ws(EmbeddingWorkspaceElems(d, rows));
  std::vector<double> out(N * H);
  EmbeddingForward(d, ctx, params.data(), tokens.data(), nullptr, rows, out.data(), ws.data());
  for (int64_t i = 0; i < N; ++i) {
    for (int c = 0; c < H; ++c) {
      ASSERT_EQ(out[i * H + c], tok[tokens[i] * H + c] + pos[positions[i] * H + c])
          << "token " << i << " column " << c;
    }
  }
  const auto dout = RandomVec(N * H, 32);
  std::vector<double> g(l.size_elems(), 0.0);
  EmbeddingBackward(d, ctx, params.data(), tokens.data(), nullptr, rows, dout.data(), g.data(),
                    ws.data());
  const double* dpos = g.data() + l.OffsetOf("pos_emb");
  for (int j = 0; j < d.max_positions; ++j) {
    for (int c = 0; c < H; ++c) {
      double want = 0;
      for (int64_t i = 0; i < N; ++i) want += positions[i] == j ? dout[i * H + c] : 0.0;
      ASSERT_NEAR(dpos[j * H + c], want, 1e-12) << "position " << j << " column " << c;
    }
  }
  EXPECT_TRUE(ws.GuardIntact());
}

TEST(Block, ForwardIsBitwiseDeterministicAndDropoutIsKeyed) {
  const ModelDims d = TinyDims(Arch::kBert);
  const int rows = 2;
  const int64_t N = int64_t{rows} * d.seq_len, H = d.hidden;
  std::vector<float> params(LayoutFor(d, LayerKind::kBlock).size_elems());
  InitParamRange(d, 1, 5, 0, int64_t(params.size()), params.data());
  const auto xd = RandomVec(N * H, 6);
  const std::vector<float> x(xd.begin(), xd.end());
  const auto mask = AttnMaskFor(d, rows);
  const auto keys = SampleKeys(rows);
  std::vector<float> ws(BlockWorkspaceElems(d, rows));
  auto run = [&](StepContext ctx) {
    std::vector<float> y(N * H);
    BlockForward(d, ctx, params.data(), x.data(), mask.data(), rows, y.data(), ws.data());
    return y;
  };
  const StepContext ctx{
      .seed = 1, .step = 2, .layer = 1, .training = true, .sample_keys = keys.data()};
  const auto y1 = run(ctx);
  std::fill(ws.begin(), ws.end(), -7.0f);  // stale workspace must not matter
  const auto y2 = run(ctx);
  ASSERT_EQ(0, std::memcmp(y1.data(), y2.data(), y1.size() * sizeof(float)));
  StepContext other_step = ctx;
  other_step.step = 3;
  EXPECT_NE(run(other_step), y1);
  StepContext eval = ctx;
  eval.training = false;
  EXPECT_NE(run(eval), y1);
}

// ---- Heads ---------------------------------------------------------------------

struct HeadCase {
  Arch arch;
  bool tied;
};

std::string HeadCaseName(const ::testing::TestParamInfo<HeadCase>& info) {
  return std::string(ArchName(info.param.arch)) + (info.param.tied ? "Tied" : "Untied");
}

class HeadGradTest : public ::testing::TestWithParam<HeadCase> {};

// With tied embeddings the decoder's gradient lands in layer 0's tok_emb
// (and nowhere else in layer 0).
TEST_P(HeadGradTest, MatchesFiniteDifferences) {
  const HeadCase c = GetParam();
  ModelDims d = TinyDims(c.arch);
  d.tie_embeddings = c.tied;
  const int rows = 2;
  const int64_t N = int64_t{rows} * d.seq_len, H = d.hidden;
  const ParamLayout l = LayoutFor(d, LayerKind::kHead);
  const ParamLayout le = LayoutFor(d, LayerKind::kEmbedding);
  auto params = RandomParams(l, 7);
  auto emb = RandomParams(le, 17);
  auto x = RandomVec(N * H, 8, -1.5, 1.5);
  std::vector<int32_t> targets(N);
  for (int64_t i = 0; i < N; ++i) targets[i] = static_cast<int32_t>((i * 5 + 1) % d.vocab);
  targets[1] = targets[4] = targets[N - 1] = -1;
  const double scale = 0.3;
  const auto keys = SampleKeys(rows);
  const StepContext ctx{.seed = 1,
                        .step = 1,
                        .layer = d.num_blocks + 1,
                        .training = true,
                        .sample_keys = keys.data()};
  Workspace ws(HeadWorkspaceElems(d, rows));
  auto loss = [&] {
    return scale * HeadForwardBackward<double>(d, ctx, params.data(), emb.data(), x.data(),
                                               targets.data(), rows, scale, nullptr, nullptr,
                                               nullptr, ws.data())
                       .loss_sum;
  };
  std::vector<double> dparams(l.size_elems(), -0.25), demb(le.size_elems(), 0.75), dx(N * H, 99.0);
  const HeadResult res =
      HeadForwardBackward(d, ctx, params.data(), emb.data(), x.data(), targets.data(), rows, scale,
                          dx.data(), dparams.data(), demb.data(), ws.data());
  EXPECT_TRUE(ws.GuardIntact());
  EXPECT_EQ(res.count, N - 3);
  EXPECT_NEAR(scale * res.loss_sum, loss(), 1e-12);
  EXPECT_GT(res.loss_sum / res.count, 1.0);  // roughly log(V) for a random model
  for (auto& v : dparams) v += 0.25;
  for (auto& v : demb) v -= 0.75;
  ExpectParamGradsMatch(l, dparams, NumericGrad(&params, loss), ArchName(c.arch));
  const auto nemb = NumericGrad(&emb, loss);
  const TensorSpec& tok = *le.Find("tok_emb");
  for (int64_t i = 0; i < le.size_elems(); ++i) {
    const bool decoder =
        c.tied && i >= tok.offset_elems && i < tok.offset_elems + tok.shape.num_elements();
    if (!decoder) {
      ASSERT_EQ(demb[i], 0.0) << "embedding element " << i;
    }
  }
  if (c.tied) {
    EXPECT_GT(MaxAbs(nemb.data() + tok.offset_elems, tok.shape.num_elements()), 1e-4);
    EXPECT_LT(RelErr(demb.data() + tok.offset_elems, nemb.data() + tok.offset_elems,
                     tok.shape.num_elements()),
              kFdTol)
        << "tied decoder gradient";
  } else {
    EXPECT_EQ(MaxAbs(nemb.data(), le.size_elems()), 0.0) << "untied head read layer 0";
  }
  const auto ndx = NumericGrad(&x, loss);
  EXPECT_GT(MaxAbs(ndx.data(), N * H), 1e-3);
  EXPECT_LT(RelErr(dx.data(), ndx.data(), N * H), kFdTol) << "dx";
  for (int64_t j = 0; j < H; ++j) EXPECT_EQ(dx[1 * H + j], 0.0) << "row without target";
}

INSTANTIATE_TEST_SUITE_P(
    Archs, HeadGradTest,
    ::testing::Values(HeadCase{Arch::kBert, true}, HeadCase{Arch::kBert, false},
                      HeadCase{Arch::kGpt2, true}, HeadCase{Arch::kGpt2, false},
                      HeadCase{Arch::kLlama, true}, HeadCase{Arch::kLlama, false}),
    HeadCaseName);

// HeadLogits gives the logits whose cross-entropy the loss is.
TEST(Head, LogitsAreTheLossesLogits) {
  for (Arch arch : kArchs) {
    for (bool tied : {false, true}) {
      ModelDims d = TinyDims(arch);
      d.tie_embeddings = tied;
      const int rows = 2;
      const int64_t N = int64_t{rows} * d.seq_len, H = d.hidden, V = d.vocab;
      const auto params = RandomParams(LayoutFor(d, LayerKind::kHead), 31);
      const auto emb = RandomParams(LayoutFor(d, LayerKind::kEmbedding), 32);
      const auto x = RandomVec(N * H, 33);
      std::vector<int32_t> targets(N);
      for (int64_t i = 0; i < N; ++i) targets[i] = static_cast<int32_t>((i * 3 + 2) % V);
      std::vector<double> ws(HeadWorkspaceElems(d, rows)), logits(N * V);
      HeadLogits(d, params.data(), emb.data(), x.data(), rows, logits.data(), ws.data());
      double want = 0;
      for (int64_t i = 0; i < N; ++i) {
        const double* z = logits.data() + i * V;
        const double mx = *std::max_element(z, z + V);
        double sum = 0;
        for (int64_t v = 0; v < V; ++v) sum += std::exp(z[v] - mx);
        want += mx + std::log(sum) - z[targets[i]];
      }
      const HeadResult r = HeadForwardBackward<double>(d, StepContext{}, params.data(), emb.data(),
                                                       x.data(), targets.data(), rows, 1.0, nullptr,
                                                       nullptr, nullptr, ws.data());
      EXPECT_NEAR(r.loss_sum, want, 1e-12 * want) << ArchName(arch) << (tied ? " tied" : "");
    }
  }
}

TEST(Head, NoTargetsGivesZeroLossAndGradients) {
  const ModelDims d = TinyDims(Arch::kBert);
  const int rows = 2;
  const int64_t N = int64_t{rows} * d.seq_len, H = d.hidden;
  const ParamLayout l = LayoutFor(d, LayerKind::kHead);
  const auto params = RandomParams(l, 11);
  const auto emb = RandomParams(LayoutFor(d, LayerKind::kEmbedding), 12);
  const auto x = RandomVec(N * H, 12);
  const std::vector<int32_t> targets(N, -1);
  std::vector<double> ws(HeadWorkspaceElems(d, rows)), dparams(l.size_elems(), 0.0), dx(N * H, 5.0),
      demb(emb.size(), 0.0);
  const HeadResult r =
      HeadForwardBackward(d, StepContext{}, params.data(), emb.data(), x.data(), targets.data(),
                          rows, 1.0, dx.data(), dparams.data(), demb.data(), ws.data());
  EXPECT_EQ(r.count, 0);
  EXPECT_EQ(r.loss_sum, 0.0);
  EXPECT_EQ(dx, std::vector<double>(N * H, 0.0));
  EXPECT_EQ(dparams, std::vector<double>(l.size_elems(), 0.0));
  EXPECT_EQ(demb, std::vector<double>(emb.size(), 0.0));
}

// More target rows than kHeadLogitRows: the chunked decoder must give the same
// loss and gradients as two calls that each fit in one chunk.
TEST(Head, ChunkedLogitsMatchUnchunked) {
  ModelDims d = TinyDims(Arch::kGpt2);
  d.hidden = 4;
  d.heads = 1;
  d.vocab = 5;
  d.seq_len = kHeadLogitRows / 2 + 300;
  d.max_positions = 0;
  d.tie_embeddings = true;
  const int rows = 2;
  const int64_t S = d.seq_len, H = d.hidden, N = rows * S;
  const ParamLayout l = LayoutFor(d, LayerKind::kHead);
  const ParamLayout le = LayoutFor(d, LayerKind::kEmbedding);
  const auto params = RandomParams(l, 9);
  const auto emb = RandomParams(le, 19);
  const auto x = RandomVec(N * H, 10);
  std::vector<int32_t> targets(N);
  for (int64_t i = 0; i < N; ++i) targets[i] = i % 11 == 0 ? -1 : static_cast<int32_t>(i % 5);
  const StepContext ctx{};
  std::vector<double> ws(HeadWorkspaceElems(d, rows));
  std::vector<double> dp_all(l.size_elems(), 0.0), de_all(le.size_elems(), 0.0), dx_all(N * H);
  const HeadResult all =
      HeadForwardBackward(d, ctx, params.data(), emb.data(), x.data(), targets.data(), rows, 1.0,
                          dx_all.data(), dp_all.data(), de_all.data(), ws.data());
  ASSERT_GT(all.count, kHeadLogitRows);
  std::vector<double> dp_split(l.size_elems(), 0.0), de_split(le.size_elems(), 0.0),
      dx_split(N * H);
  HeadResult split;
  for (int r = 0; r < rows; ++r) {
    const HeadResult h = HeadForwardBackward(
        d, ctx, params.data(), emb.data(), x.data() + r * S * H, targets.data() + r * S, 1, 1.0,
        dx_split.data() + r * S * H, dp_split.data(), de_split.data(), ws.data());
    split.loss_sum += h.loss_sum;
    split.count += h.count;
  }
  EXPECT_EQ(all.count, split.count);
  EXPECT_NEAR(all.loss_sum, split.loss_sum, 1e-12 * split.loss_sum);
  EXPECT_LT(RelErr(dp_all.data(), dp_split.data(), l.size_elems()), 1e-12);
  EXPECT_LT(RelErr(de_all.data(), de_split.data(), le.size_elems()), 1e-12);
  EXPECT_EQ(dx_all, dx_split);
}

// ---- float vs double -----------------------------------------------------------

TEST(Precision, FloatForwardAgreesWithDouble) {
  for (Arch arch : kArchs) {
    ModelDims d = TinyDims(arch);
    d.tie_embeddings = arch != Arch::kLlama;
    const int rows = 2;
    const int64_t N = int64_t{rows} * d.seq_len, H = d.hidden;
    const auto keys = SampleKeys(rows);
    const auto mask = AttnMaskFor(d, rows);
    std::vector<int32_t> tokens(N), targets(N);
    for (int64_t i = 0; i < N; ++i) {
      tokens[i] = static_cast<int32_t>((i * 3 + 1) % d.vocab);
      targets[i] = i % 3 == 0 ? static_cast<int32_t>(i % d.vocab) : -1;
    }
    // Embedding -> block -> head, with dropout on, in both precisions.
    auto run = [&](auto zero) {
      using T = decltype(zero);
      std::vector<T> out(N * H), out2(N * H);
      const int64_t ws_elems =
          std::max({EmbeddingWorkspaceElems(d, rows), BlockWorkspaceElems(d, rows),
                    HeadWorkspaceElems(d, rows)});
      std::vector<T> ws(ws_elems);
      auto params_of = [&](int layer) {
        const auto p = RandomParams(LayoutForLayer(d, layer), 100 + layer);
        return std::vector<T>(p.begin(), p.end());
      };
      const auto pe = params_of(0), pb = params_of(1), ph = params_of(d.num_blocks + 1);
      StepContext ctx{
          .seed = 3, .step = 1, .layer = 0, .training = true, .sample_keys = keys.data()};
      EmbeddingForward(d, ctx, pe.data(), tokens.data(), nullptr, rows, out.data(), ws.data());
      ctx.layer = 1;
      BlockForward(d, ctx, pb.data(), out.data(), mask.data(), rows, out2.data(), ws.data());
      ctx.layer = d.num_blocks + 1;
      const HeadResult h =
          HeadForwardBackward<T>(d, ctx, ph.data(), pe.data(), out2.data(), targets.data(), rows,
                                 1.0, nullptr, nullptr, nullptr, ws.data());
      return std::make_pair(std::vector<double>(out2.begin(), out2.end()), h.loss_sum);
    };
    const auto [yf, lf] = run(0.0f);
    const auto [yd, ld] = run(0.0);
    EXPECT_LT(RelErr(yf.data(), yd.data(), N * H), 1e-5) << ArchName(arch);
    EXPECT_NEAR(lf, ld, 1e-5 * ld) << ArchName(arch);
  }
}

// Every layer's backward in float (with workspaces of exactly the stated size,
// so a sanitizer build catches overruns) agrees with double.
TEST(Precision, FloatBackwardAgreesWithDouble) {
  for (Arch arch : kArchs) {
    ModelDims d = TinyDims(arch);
    d.tie_embeddings = true;
    const int rows = 2;
    const int64_t N = int64_t{rows} * d.seq_len, H = d.hidden;
    const auto keys = SampleKeys(rows);
    const auto mask = AttnMaskFor(d, rows);
    std::vector<int32_t> tokens(N), types(N), targets(N);
    for (int64_t i = 0; i < N; ++i) {
      tokens[i] = static_cast<int32_t>((i * 3 + 1) % d.vocab);
      types[i] = static_cast<int32_t>(i % 2);
      targets[i] = i % 4 == 0 ? -1 : static_cast<int32_t>(i % d.vocab);
    }
    const auto xd = RandomVec(N * H, 20), dyd = RandomVec(N * H, 21);
    // Returns the concatenated gradients of all three layer kinds.
    auto run = [&](auto zero) {
      using T = decltype(zero);
      const std::vector<T> x(xd.begin(), xd.end()), dy(dyd.begin(), dyd.end());
      std::vector<double> all;
      auto params_of = [&](int layer) {
        const auto p = RandomParams(LayoutForLayer(d, layer), 200 + layer);
        return std::vector<T>(p.begin(), p.end());
      };
      auto append = [&](const std::vector<T>& v) { all.insert(all.end(), v.begin(), v.end()); };
      const auto pe = params_of(0);
      std::vector<T> ge(pe.size(), T(0));
      {
        std::vector<T> ws(EmbeddingWorkspaceElems(d, rows));
        EmbeddingBackward(
            d,
            StepContext{
                .seed = 4, .step = 2, .layer = 0, .training = true, .sample_keys = keys.data()},
            pe.data(), tokens.data(), types.data(), rows, dy.data(), ge.data(), ws.data());
      }
      {
        const auto p = params_of(1);
        std::vector<T> g(p.size(), T(0)), dx(N * H), ws(BlockWorkspaceElems(d, rows));
        BlockBackward(
            d,
            StepContext{
                .seed = 4, .step = 2, .layer = 1, .training = true, .sample_keys = keys.data()},
            p.data(), x.data(), mask.data(), rows, dy.data(), dx.data(), g.data(), ws.data());
        append(g);
        append(dx);
      }
      {
        const int head = d.num_blocks + 1;
        const auto p = params_of(head);
        std::vector<T> g(p.size(), T(0)), dx(N * H), ws(HeadWorkspaceElems(d, rows));
        HeadForwardBackward(
            d,
            StepContext{
                .seed = 4, .step = 2, .layer = head, .training = true, .sample_keys = keys.data()},
            p.data(), pe.data(), x.data(), targets.data(), rows, 0.5, dx.data(), g.data(),
            ge.data(), ws.data());
        append(g);
        append(dx);
      }
      append(ge);  // both uses of the tied table
      return all;
    };
    const auto gf = run(0.0f);
    const auto gd = run(0.0);
    ASSERT_EQ(gf.size(), gd.size());
    EXPECT_LT(RelErr(gf.data(), gd.data(), int64_t(gd.size())), 1e-5) << ArchName(arch);
  }
}

}  // namespace
}  // namespace l2l::model
