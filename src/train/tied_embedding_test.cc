// Tied embeddings through the whole engine (l2l mode, one rank): the tied
// table is one tensor with one master, its gradient is the sum of its two
// uses, and after training both uses read the same values. The reference is
// the model's layer functions run directly on the trainer's own batches and
// weights, outside the relay, the EPS and the held-layer buffers:
//   - step 1's gradient norm equals the reference gradient's (a head
//     contribution dropped or added twice, e.g. a second zeroing of the held
//     gradient buffer, changes it by far more than the 1e-6 tolerance);
//   - after 3 steps the engine's evaluation loss equals the reference loss
//     computed from ReadLayer weights, where the decoder IS layer 0's
//     tok_emb (a decoder copy that drifted from the embedding would differ).
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <vector>

#include "l2l/comm/mpi_comm.h"
#include "l2l/train/trainer.h"
#include "test_util.h"

namespace l2l::train {
namespace {

using Weights = testing::Weights;

struct Reference {
  double loss_sum = 0;
  int64_t targets = 0;
  double grad_norm = 0;
};

// Forward (and, with grads, backward) of every micro-batch through the layer
// functions; gradients scaled like the engine's (1 / the step's targets).
Reference Run(const model::ModelDims& d, const Weights& w,
              const std::vector<data::MicroBatch>& batches, bool grads) {
  Reference r;
  for (const auto& b : batches) r.targets += b.num_targets;
  const int rows = batches.front().rows, L = d.num_blocks, head = L + 1;
  const int64_t N = int64_t{rows} * d.seq_len, H = d.hidden;
  std::vector<float> ws(
      std::max({model::EmbeddingWorkspaceElems(d, rows), model::BlockWorkspaceElems(d, rows),
                model::HeadWorkspaceElems(d, rows)}));
  Weights g;
  for (const auto& layer : w) g.emplace_back(layer.size(), 0.0f);
  const model::StepContext ctx{
      .seed = 0, .step = 0, .layer = 0, .training = false, .sample_keys = nullptr};
  for (const auto& b : batches) {
    std::vector<std::vector<float>> act(L + 2, std::vector<float>(N * H));
    model::EmbeddingForward(d, ctx, w[0].data(), b.tokens.data(), nullptr, rows, act[1].data(),
                            ws.data());
    for (int l = 1; l <= L; ++l) {
      model::BlockForward(d, ctx, w[l].data(), act[l].data(), b.attn_mask.data(), rows,
                          act[l + 1].data(), ws.data());
    }
    std::vector<float> dy(N * H), dx(N * H);
    const model::HeadResult h = model::HeadForwardBackward(
        d, ctx, w[head].data(), w[0].data(), act[head].data(), b.targets.data(), rows,
        1.0 / static_cast<double>(r.targets), grads ? dy.data() : nullptr,
        grads ? g[head].data() : nullptr, grads ? g[0].data() : nullptr, ws.data());
    r.loss_sum += h.loss_sum;
    if (!grads) continue;
    for (int l = L; l >= 1; --l) {
      model::BlockBackward(d, ctx, w[l].data(), act[l].data(), b.attn_mask.data(), rows, dy.data(),
                           dx.data(), g[l].data(), ws.data());
      std::swap(dx, dy);
    }
    model::EmbeddingBackward(d, ctx, w[0].data(), b.tokens.data(), nullptr, rows, dy.data(),
                             g[0].data(), ws.data());
  }
  double sq = 0;
  for (const auto& layer : g)
    for (float v : layer) sq += double(v) * v;
  r.grad_norm = std::sqrt(sq);
  return r;
}

Weights ReadWeights(Trainer& t) {
  Weights w;
  for (int l = 0; l < model::NumLayers(t.dims()); ++l) {
    w.emplace_back();
    EXPECT_TRUE(t.ReadLayer(l, &w.back()).ok());
  }
  return w;
}

void CheckTied(config::ModelKind kind) {
  const std::string data = "tied_embedding_test.tok";
  ASSERT_TRUE(testing::WriteTinyCorpus(data).ok());
  config::Config cfg = testing::TinyConfig(kind, data, "tied_embedding_test");
  cfg.model.tie_embeddings = true;
  if (kind == config::ModelKind::kLlama) cfg.model.kv_heads = 2;
  cfg.model.dropout = 0.0;
  cfg.train.grad_clip = 0.0;
  cfg.train.lr = 3e-3;
  cfg.checkpoint.at_end = false;
  MpiComm comm;
  auto t = Trainer::Create(cfg, &comm, 1);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  Trainer& tr = **t;
  const model::ModelDims& d = tr.dims();
  ASSERT_EQ(model::LayoutFor(d, model::LayerKind::kHead).Find("decoder.weight"), nullptr)
      << "a tied head must not hold a decoder of its own";

  std::vector<data::MicroBatch> step0;
  for (int m = 0; m < tr.micro_batches_per_rank(); ++m) {
    step0.push_back(tr.sampler().TrainMicroBatch(0, 0, 1, m).value());
  }
  const Reference ref = Run(d, ReadWeights(tr), step0, /*grads=*/true);
  StatusOr<StepRecord> rec = tr.Step();
  ASSERT_TRUE(rec.ok()) << rec.status().ToString();
  EXPECT_NEAR(rec->loss, ref.loss_sum / ref.targets, 1e-6 * rec->loss);
  EXPECT_NEAR(rec->grad_norm, ref.grad_norm, 1e-6 * ref.grad_norm)
      << "the engine's gradient is not the sum of both uses of the tied table";

  for (int s = 0; s < 2; ++s) ASSERT_TRUE(tr.Step().ok());
  std::vector<data::MicroBatch> eval;
  for (int m = 0; m < tr.micro_batches_per_rank(); ++m) {
    eval.push_back(tr.sampler().EvalMicroBatch(0, 0, 1, m).value());
  }
  const Reference after = Run(d, ReadWeights(tr), eval, /*grads=*/false);
  ASSERT_EQ(cfg.train.eval_batches, 1);  // Evaluate() runs eval batch 0 only, as above
  StatusOr<double> got = tr.Evaluate();
  ASSERT_TRUE(got.ok());
  EXPECT_NEAR(*got, after.loss_sum / after.targets, 1e-6 * *got)
      << "the head's decoder and the embedding read different tables";
}

TEST(TiedEmbeddings, Gpt2IsOneTensorWithTheSumOfBothGradients) {
  CheckTied(config::ModelKind::kGpt);
}
TEST(TiedEmbeddings, LlamaIsOneTensorWithTheSumOfBothGradients) {
  CheckTied(config::ModelKind::kLlama);
}

}  // namespace
}  // namespace l2l::train
