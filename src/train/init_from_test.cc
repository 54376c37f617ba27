// train.init_from (fine-tuning from a checkpoint's weights), on 2 ranks:
//   - a run initialised from a checkpoint saved at world size 1 after 3 steps
//     equals, bitwise (losses and final weights), a run resumed at step 0
//     from a checkpoint holding the same weights with zeroed AdamW state and
//     a fresh data order: fresh optimizer, step 0, the config's schedule and
//     data, at another world size than the checkpoint's;
//   - a checkpoint of another network is refused naming the first model key
//     that differs (by --resume too); a source inside checkpoint.dir is
//     refused; a weights-only (imported) checkpoint cannot be resumed.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "l2l/ckpt/checkpoint.h"
#include "l2l/ckpt/model_layers.h"
#include "l2l/ckpt/reader.h"
#include "test_util.h"

namespace l2l::train {
namespace {

namespace fs = std::filesystem;
using testing::RunResult;
using testing::SubWorld;

int g_rank = 0;
const std::string kData = "init_from_test.tok";

class Env : public ::testing::Environment {
 public:
  void SetUp() override {
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    ASSERT_TRUE(testing::WriteTinyCorpus(kData).ok());
  }
};
const auto* const kEnv = ::testing::AddGlobalTestEnvironment(new Env);

config::Config Config(const std::string& name) {
  config::Config c = testing::TinyConfig(config::ModelKind::kLlama, kData, "init_from_" + name);
  c.model.kv_heads = 2;
  c.model.tie_embeddings = true;
  c.model.dropout = 0.1;
  c.checkpoint.at_end = true;  // these tests read the saved checkpoints
  c.train.grad_clip = 1.0;
  if (g_rank == 0) {
    fs::remove_all(c.checkpoint.dir);
    fs::remove_all(c.log.dir);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  return c;
}

// Trains `cfg` on `world` ranks after `start` (InitFrom or Resume) and returns
// the history and the final weights (ranks outside the world: ran = false).
template <typename Start>
RunResult TrainAfter(int world, const config::Config& cfg, Start start) {
  RunResult out;
  SubWorld sub(world);
  if (sub.comm() == nullptr) return out;
  auto t = Trainer::Create(cfg, sub.comm(), world);
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  if (!t.ok()) return out;
  Status s = start(**t);
  EXPECT_TRUE(s.ok()) << s.ToString();
  s = (*t)->Run();
  EXPECT_TRUE(s.ok()) << s.ToString();
  out.ran = true;
  out.history = (*t)->history();
  for (int l = 0; l < model::NumLayers((*t)->dims()); ++l) {
    out.weights.emplace_back();
    EXPECT_TRUE((*t)->ReadLayer(l, &out.weights.back()).ok());
  }
  return out;
}

TEST(InitFrom, EqualsAResumeFromTheSameWeightsWithFreshOptimizerState) {
  // A: 3 steps at world size 1, saved.
  config::Config a = Config("a");
  a.train.steps = 3;
  RunResult ra = TrainAfter(1, a, [](Trainer&) { return OkStatus(); });
  const std::string ckpt_a = ckpt::CheckpointPath(a.checkpoint.dir, 3);

  // The reference: a checkpoint at step 0 with A's weights, zero moments and
  // the fresh run's data order, made by rank 0 alone.
  config::Config r = Config("r");
  r.train.steps = 3;
  {
    SubWorld one(1);
    if (one.comm() != nullptr) {
      auto fresh = Trainer::Create(r, one.comm(), 1);
      ASSERT_TRUE(fresh.ok());
      const model::ModelDims d = (*fresh)->dims();
      const std::vector<ckpt::LayerInfo> layers = ckpt::LayerInfosOf(d);
      std::vector<ckpt::LayerData> data;
      std::vector<ckpt::LayerSlice> slices;
      for (int l = 0; l < model::NumLayers(d); ++l) {
        auto layer = ckpt::ReadLayer(ckpt_a, l, ckpt::LayerParts::kAll);
        ASSERT_TRUE(layer.ok()) << layer.status().message();
        std::fill(layer->adam_m.begin(), layer->adam_m.end(), 0.0f);
        std::fill(layer->adam_v.begin(), layer->adam_v.end(), 0.0f);
        data.push_back(std::move(layer).value());
      }
      for (auto& l : data) {
        slices.push_back(
            {0, l.info.size_elems, l.master.data(), l.adam_m.data(), l.adam_v.data(), true});
      }
      ckpt::Meta meta;
      meta.step = 0;
      meta.seed = r.train.seed;
      meta.config_yaml = config::ToYaml(r);
      meta.sampler_state = (*fresh)->sampler().state().ToString();
      ASSERT_TRUE(ckpt::Save(one.comm()->handle(), r.checkpoint.dir + "-src", meta, layers, slices,
                             1, nullptr)
                      .ok());
    }
  }
  const std::string ref = ckpt::CheckpointPath(r.checkpoint.dir + "-src", 0);
  RunResult resumed = TrainAfter(2, r, [&](Trainer& t) { return t.Resume(ref); });

  // B: initialised from A at world size 2.
  config::Config b = Config("b");
  b.train.steps = 3;
  b.train.init_from = a.checkpoint.dir;  // the directory: its latest
  RunResult init = TrainAfter(2, b, [&](Trainer& t) { return t.InitFrom(b.train.init_from); });

  if (g_rank != 0) return;
  ASSERT_TRUE(ra.ran && resumed.ran && init.ran);
  ASSERT_EQ(init.history.size(), 3u);
  ASSERT_EQ(resumed.history.size(), 3u);
  for (size_t s = 0; s < 3; ++s) {
    EXPECT_EQ(init.history[s].step, static_cast<int64_t>(s + 1)) << "init_from starts at step 0";
    EXPECT_EQ(init.history[s].loss, resumed.history[s].loss) << "step " << s;
    EXPECT_EQ(init.history[s].lr, resumed.history[s].lr) << "step " << s;
  }
  EXPECT_TRUE(testing::BitwiseEqual(init.weights, resumed.weights))
      << "relative norm " << testing::RelativeNorm(init.weights, resumed.weights);
  // And it did start from A's weights, not from a fresh init: A's last loss
  // is far below a fresh model's first.
  EXPECT_LT(init.history[0].loss, ra.history[0].loss);
}

TEST(InitFrom, RefusesAnotherNetworkNamingTheKey) {
  config::Config a = Config("net");
  a.train.steps = 1;
  TrainAfter(1, a, [](Trainer&) { return OkStatus(); });
  config::Config b = Config("net-b");
  b.model.ffn = a.model.ffn * 2;
  b.model.seq_len = a.model.seq_len / 2;  // may differ: not part of the network
  SubWorld two(2);
  if (two.comm() == nullptr) return;
  auto t = Trainer::Create(b, two.comm(), 2);
  ASSERT_TRUE(t.ok());
  Status s = (*t)->InitFrom(a.checkpoint.dir);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("model.ffn: " + std::to_string(a.model.ffn) + " vs " +
                             std::to_string(b.model.ffn)),
            std::string::npos)
      << s.message();
}

// A resume is held to the same rule (a default that changed between
// versions, an edited YAML): the math must not change mid-run.
TEST(InitFrom, ResumeRefusesAnotherNetworkToo) {
  config::Config a = Config("resume-net");
  a.train.steps = 1;
  TrainAfter(1, a, [](Trainer&) { return OkStatus(); });
  config::Config b = a;
  b.model.norm_eps = a.model.norm_eps * 10;
  SubWorld two(2);
  if (two.comm() == nullptr) return;
  auto t = Trainer::Create(b, two.comm(), 2);
  ASSERT_TRUE(t.ok());
  const Status s = (*t)->Resume("auto");
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s.ToString();
  EXPECT_NE(s.message().find("--resume " + ckpt::CheckpointPath(a.checkpoint.dir, 1) +
                             ": the checkpoint's model differs from this config's: "
                             "model.norm_eps"),
            std::string::npos)
      << s.message();
}

// Saves restart at step 0 in checkpoint.dir and prune it: a source there is
// refused before anything is written.
TEST(InitFrom, RefusesASourceInsideCheckpointDir) {
  config::Config a = Config("inside");
  a.train.steps = 1;
  TrainAfter(1, a, [](Trainer&) { return OkStatus(); });
  SubWorld two(2);
  if (two.comm() == nullptr) return;
  config::Config b = a;
  b.log.dir = a.log.dir + "-b";
  auto t = Trainer::Create(b, two.comm(), 2);
  ASSERT_TRUE(t.ok());
  const Status s = (*t)->InitFrom(a.checkpoint.dir);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s.ToString();
  EXPECT_NE(s.message().find("lies in checkpoint.dir"), std::string::npos) << s.message();
  EXPECT_TRUE(fs::exists(ckpt::CheckpointPath(a.checkpoint.dir, 1)));
}

TEST(InitFrom, AWeightsOnlyCheckpointIsNotResumed) {
  config::Config a = Config("import");
  a.train.steps = 1;
  RunResult ra = TrainAfter(1, a, [](Trainer&) { return OkStatus(); });
  // Rewrite it as an import writes one: step 0, no sampler state.
  const std::string src = ckpt::CheckpointPath(a.checkpoint.dir, 1);
  const std::string dir = a.checkpoint.dir + "-weights";
  {
    SubWorld one(1);
    if (one.comm() != nullptr) {
      auto s = ckpt::Inspect(src);
      ASSERT_TRUE(s.ok());
      std::vector<ckpt::LayerData> data;
      std::vector<ckpt::LayerSlice> slices;
      for (int l = 0; l < static_cast<int>(s->layers.size()); ++l) {
        data.push_back(ckpt::ReadLayer(src, l, ckpt::LayerParts::kAll).value());
      }
      for (auto& l : data) {
        slices.push_back(
            {0, l.info.size_elems, l.master.data(), l.adam_m.data(), l.adam_v.data(), true});
      }
      ckpt::Meta meta = s->meta;
      meta.step = 0;
      meta.sampler_state = "";
      ASSERT_TRUE(ckpt::Save(one.comm()->handle(), dir, meta, s->layers, slices, 1, nullptr).ok());
    }
  }
  SubWorld two(2);
  if (two.comm() == nullptr) return;
  auto t = Trainer::Create(a, two.comm(), 2);
  ASSERT_TRUE(t.ok());
  Status st = (*t)->Resume(dir);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("start from it with --init-from"), std::string::npos)
      << st.ToString();
  EXPECT_TRUE((*t)->InitFrom(dir).ok());
}

}  // namespace
}  // namespace l2l::train
