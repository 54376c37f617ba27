// l2l's models against transformers itself: for every committed fixture
// (tests/fixtures/make_hf_fixtures.py: a tiny transformers model, its
// weights, fixed inputs, and the logits, loss and parameter gradients that
// transformers computed), the weights are loaded into l2l's layouts through
// the name map, and l2l's CPU layers (fp32) must reproduce
//   logits    to 1e-5 relative (max-norm over the whole tensor),
//   the loss  to 1e-5 relative,
//   every parameter gradient to 1e-4 relative (per tensor; a tied embedding's
//             is the sum of both uses in both frameworks).
// It also reads config.json through ModelConfigFromHfFile, so the config
// mapping is pinned by the same numbers.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "l2l/interop/hf_config.h"
#include "l2l/interop/hf_names.h"
#include "l2l/interop/safetensors.h"
#include "l2l/model/model.h"
#include "l2l/train/trainer.h"

namespace l2l::interop {
namespace {

using model::ModelDims;

const std::string kDir = L2L_FIXTURE_DIR;
constexpr int kRows = 2, kSeq = 12;  // make_hf_fixtures.py's B and S
constexpr double kLogitTol = 1e-5, kLossTol = 1e-5, kGradTol = 1e-4;

double RelMaxErr(const float* got, const float* want, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; ++i) {
    num = std::max(num, std::abs(double(got[i]) - want[i]));
    den = std::max(den, std::abs(double(want[i])));
  }
  return den == 0 ? num : num / den;
}

std::vector<float> F32(const SafetensorsFile& f, const std::string& name) {
  const SafetensorsTensor* t = f.Find(name);
  EXPECT_NE(t, nullptr) << f.path() << ": no tensor " << name;
  if (t == nullptr) return {};
  int64_t n = 1;
  for (int64_t d : t->shape) n *= d;
  std::vector<float> v(n);
  EXPECT_TRUE(f.ReadF32(*t, 0, n, v.data()).ok());
  return v;
}

std::vector<int32_t> I32(const SafetensorsFile& f, const std::string& name) {
  const SafetensorsTensor* t = f.Find(name);
  EXPECT_NE(t, nullptr) << name;
  std::vector<int32_t> v(int64_t{kRows} * kSeq);
  EXPECT_TRUE(f.ReadI32(*t, 0, static_cast<int64_t>(v.size()), v.data()).ok());
  return v;
}

struct Fixture {
  ModelDims d;
  std::vector<std::vector<float>> params;  // per layer, l2l layout
};

// config.json -> dims, model.safetensors -> layer buffers through the name map.
Fixture Load(const std::string& name) {
  Fixture fx;
  const std::string dir = kDir + "/" + name;
  StatusOr<config::ModelConfig> cfg = ModelConfigFromHfFile(dir + "/config.json", kSeq);
  EXPECT_TRUE(cfg.ok()) << cfg.status().message();
  fx.d = train::DimsFromConfig(*cfg);
  StatusOr<SafetensorsFile> w = SafetensorsFile::Open(dir + "/model.safetensors");
  EXPECT_TRUE(w.ok()) << w.status().message();
  size_t mapped = 0;
  for (int l = 0; l < model::NumLayers(fx.d); ++l) {
    const model::ParamLayout layout = model::LayoutForLayer(fx.d, l);
    fx.params.emplace_back(layout.size_elems(), 0.0f);
    for (const HfTensor& t : HfTensorsOfLayer(fx.d, l)) {
      const model::TensorSpec* spec = layout.Find(t.l2l);
      const SafetensorsTensor* st = w->Find(t.hf);
      EXPECT_NE(st, nullptr) << name << ": model.safetensors lacks " << t.hf;
      if (st == nullptr) continue;
      std::vector<int64_t> want;
      for (int i = 0; i < spec->shape.rank(); ++i) want.push_back(spec->shape.dim(i));
      EXPECT_EQ(st->shape, want) << name << ": " << t.hf << " vs l2l " << t.l2l;
      EXPECT_TRUE(w->ReadF32(*st, 0, spec->shape.num_elements(),
                             fx.params.back().data() + spec->offset_elems)
                      .ok());
      ++mapped;
    }
  }
  // Every tensor of the file is one of l2l's (tied aliases are not stored).
  EXPECT_EQ(mapped, w->header().tensors.size()) << name << ": unmapped tensors in the file";
  return fx;
}

void CheckFixture(const std::string& name) {
  SCOPED_TRACE(name);
  const Fixture fx = Load(name);
  const ModelDims& d = fx.d;
  StatusOr<SafetensorsFile> e =
      SafetensorsFile::Open(kDir + "/" + name + "/l2l_expected.safetensors");
  ASSERT_TRUE(e.ok()) << e.status().message();
  const std::vector<int32_t> ids = I32(*e, "input_ids"), mask32 = I32(*e, "attention_mask"),
                             types = I32(*e, "token_type_ids"), targets = I32(*e, "targets");
  std::vector<uint8_t> mask(mask32.begin(), mask32.end());
  const int64_t N = int64_t{kRows} * kSeq, H = d.hidden, V = d.vocab;
  const int L = d.num_blocks, head = L + 1;
  const model::StepContext ctx{0, 0, 0, /*training=*/false, nullptr};
  const int64_t ws_elems =
      std::max({model::EmbeddingWorkspaceElems(d, kRows), model::BlockWorkspaceElems(d, kRows),
                model::HeadWorkspaceElems(d, kRows)});
  std::vector<float> ws(ws_elems);

  // Forward, keeping every layer's input for the backward.
  std::vector<std::vector<float>> act(L + 2, std::vector<float>(N * H));
  model::EmbeddingForward(d, ctx, fx.params[0].data(), ids.data(), types.data(), kRows,
                          act[1].data(), ws.data());
  for (int l = 1; l <= L; ++l) {
    model::BlockForward(d, ctx, fx.params[l].data(), act[l].data(), mask.data(), kRows,
                        act[l + 1].data(), ws.data());
  }
  std::vector<float> logits(N * V);
  model::HeadLogits(d, fx.params[head].data(), fx.params[0].data(), act[head].data(), kRows,
                    logits.data(), ws.data());
  const std::vector<float> want_logits = F32(*e, "logits");
  ASSERT_EQ(want_logits.size(), logits.size());
  EXPECT_LT(RelMaxErr(logits.data(), want_logits.data(), N * V), kLogitTol) << "logits";

  // Loss and the backward relay, as the engine runs it.
  int64_t count = 0;
  for (int32_t t : targets) count += t != model::kNoTarget;
  ASSERT_GT(count, 0);
  std::vector<std::vector<float>> grads;
  for (const auto& p : fx.params) grads.emplace_back(p.size(), 0.0f);
  std::vector<float> dy(N * H), dx(N * H);
  const model::HeadResult r = model::HeadForwardBackward(
      d, ctx, fx.params[head].data(), fx.params[0].data(), act[head].data(), targets.data(), kRows,
      1.0 / static_cast<double>(count), dy.data(), grads[head].data(), grads[0].data(), ws.data());
  ASSERT_EQ(r.count, count);
  const float want_loss = F32(*e, "loss")[0];
  EXPECT_LT(std::abs(r.loss_sum / count - want_loss), kLossTol * want_loss) << "loss";
  for (int l = L; l >= 1; --l) {
    model::BlockBackward(d, ctx, fx.params[l].data(), act[l].data(), mask.data(), kRows, dy.data(),
                         dx.data(), grads[l].data(), ws.data());
    std::swap(dx, dy);
  }
  model::EmbeddingBackward(d, ctx, fx.params[0].data(), ids.data(), types.data(), kRows, dy.data(),
                           grads[0].data(), ws.data());

  int checked = 0;
  for (const HfTensor& t : HfTensorsOf(d)) {
    const model::ParamLayout layout = model::LayoutForLayer(d, t.layer);
    const model::TensorSpec* spec = layout.Find(t.l2l);
    const std::vector<float> want = F32(*e, "grad." + t.hf);
    ASSERT_EQ(static_cast<int64_t>(want.size()), spec->shape.num_elements()) << t.hf;
    const float* got = grads[t.layer].data() + spec->offset_elems;
    if (d.arch == model::Arch::kBert && t.l2l == "attn.k.bias") {
      // 0 in exact arithmetic (softmax ignores a shift of all of a query's
      // scores): both sides hold rounding noise, far below the query bias's.
      const std::vector<float> q =
          F32(*e, "grad." + std::string(t.hf).replace(t.hf.find("key"), 3, "query"));
      double qmax = 0, noise = 0;
      for (float v : q) qmax = std::max(qmax, double(std::abs(v)));
      for (int64_t i = 0; i < spec->shape.num_elements(); ++i) {
        noise = std::max({noise, double(std::abs(got[i])), double(std::abs(want[i]))});
      }
      EXPECT_LT(noise, 1e-4 * qmax) << t.hf;
    } else {
      EXPECT_LT(RelMaxErr(got, want.data(), spec->shape.num_elements()), kGradTol)
          << "gradient of " << t.hf << " (l2l " << t.l2l << ")";
    }
    ++checked;
  }
  EXPECT_GT(checked, 10);
}

TEST(TransformersFixtures, Gpt2) { CheckFixture("gpt2"); }
TEST(TransformersFixtures, Bert) { CheckFixture("bert"); }
TEST(TransformersFixtures, LlamaGqaUntied) { CheckFixture("llama-gqa-untied"); }
TEST(TransformersFixtures, LlamaGqaTied) { CheckFixture("llama-gqa-tied"); }
TEST(TransformersFixtures, Llama3RopeScaling) { CheckFixture("llama3-rope"); }
TEST(TransformersFixtures, Qwen2AttentionBias) { CheckFixture("qwen2-bias"); }
TEST(TransformersFixtures, MistralNoSlidingWindow) { CheckFixture("mistral"); }

// Every fixture directory has a test above.
TEST(TransformersFixtures, EveryFixtureIsChecked) {
  std::vector<std::string> dirs;
  for (const auto& entry : std::filesystem::directory_iterator(kDir)) {
    if (entry.is_directory()) dirs.push_back(entry.path().filename().string());
  }
  std::sort(dirs.begin(), dirs.end());
  EXPECT_EQ(dirs, (std::vector<std::string>{"bert", "gpt2", "llama-gqa-tied", "llama-gqa-untied",
                                            "llama3-rope", "mistral", "qwen2-bias"}));
}

}  // namespace
}  // namespace l2l::interop
