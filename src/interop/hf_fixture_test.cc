// l2l's models against transformers itself: for every committed fixture
// (tests/fixtures/make_hf_fixtures.py: a tiny transformers model, its
// weights, fixed inputs, and the logits, loss and parameter gradients that
// transformers computed), the weights are loaded into l2l's layouts through
// the name map, and l2l's CPU layer functions (fp32) must reproduce
//   logits    to 1e-5 relative (max-norm over the whole tensor),
//   the loss  to 1e-5 relative,
//   every parameter gradient to 1e-4 relative (per tensor; a tied embedding's
//             is the sum of both uses in both frameworks).
// It also reads config.json through ModelConfigFromHfFile, so the config
// mapping is pinned by the same numbers.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "fixture_util.h"

namespace l2l::interop {
namespace {

using model::ModelDims;
using testing::kRows;
using testing::kSeq;
constexpr double kLogitTol = 1e-5, kLossTol = 1e-5, kGradTol = 1e-4;

void CheckFixture(const std::string& name) {
  SCOPED_TRACE(name);
  const testing::Fixture fx = testing::Load(name);
  const testing::Expected x = testing::LoadExpected(name);
  const ModelDims& d = fx.d;
  const int64_t N = int64_t{kRows} * kSeq, H = d.hidden, V = d.vocab;
  const int L = d.num_blocks, head = L + 1;
  const model::StepContext ctx{
      .seed = 0, .step = 0, .layer = 0, .training = false, .sample_keys = nullptr};
  std::vector<float> ws(
      std::max({model::EmbeddingWorkspaceElems(d, kRows), model::BlockWorkspaceElems(d, kRows),
                model::HeadWorkspaceElems(d, kRows)}));

  // Forward, keeping every layer's input for the backward.
  std::vector<std::vector<float>> act(L + 2, std::vector<float>(N * H));
  model::EmbeddingForward(d, ctx, fx.params[0].data(), x.ids.data(), x.types.data(), kRows,
                          act[1].data(), ws.data());
  for (int l = 1; l <= L; ++l) {
    model::BlockForward(d, ctx, fx.params[l].data(), act[l].data(), x.mask.data(), kRows,
                        act[l + 1].data(), ws.data());
  }
  std::vector<float> logits(N * V);
  model::HeadLogits(d, fx.params[head].data(), fx.params[0].data(), act[head].data(), kRows,
                    logits.data(), ws.data());
  ASSERT_EQ(x.logits.size(), logits.size());
  EXPECT_LT(testing::RelMaxErr(logits.data(), x.logits.data(), N * V), kLogitTol) << "logits";

  // Loss and the backward relay, as the engine runs it.
  ASSERT_GT(x.target_count, 0);
  std::vector<std::vector<float>> grads;
  for (const auto& p : fx.params) grads.emplace_back(p.size(), 0.0f);
  std::vector<float> dy(N * H), dx(N * H);
  const model::HeadResult r = model::HeadForwardBackward(
      d, ctx, fx.params[head].data(), fx.params[0].data(), act[head].data(), x.targets.data(),
      kRows, 1.0 / static_cast<double>(x.target_count), dy.data(), grads[head].data(),
      grads[0].data(), ws.data());
  ASSERT_EQ(r.count, x.target_count);
  EXPECT_LT(std::abs(r.loss_sum / r.count - x.loss), kLossTol * x.loss) << "loss";
  for (int l = L; l >= 1; --l) {
    model::BlockBackward(d, ctx, fx.params[l].data(), act[l].data(), x.mask.data(), kRows,
                         dy.data(), dx.data(), grads[l].data(), ws.data());
    std::swap(dx, dy);
  }
  model::EmbeddingBackward(d, ctx, fx.params[0].data(), x.ids.data(), x.types.data(), kRows,
                           dy.data(), grads[0].data(), ws.data());
  testing::ExpectGradientsMatch(d, *x.file, grads, kGradTol);
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
  for (const auto& entry : std::filesystem::directory_iterator(testing::kDir)) {
    if (entry.is_directory()) dirs.push_back(entry.path().filename().string());
  }
  std::sort(dirs.begin(), dirs.end());
  EXPECT_EQ(dirs, testing::FixtureNames());
}

}  // namespace
}  // namespace l2l::interop
