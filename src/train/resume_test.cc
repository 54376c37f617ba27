// Checkpoint / resume properties of the trainer (issue: partitioned HDF5
// checkpoints): bitwise resume at the same world size, resharding to smaller
// world sizes, and preemption agreed across ranks. Runs with 4 ranks; smaller
// worlds run on sub-communicators.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "l2l/ckpt/checkpoint.h"
#include "l2l/model/config_dims.h"
#include "l2l/train/signals.h"
#include "l2l/train/trainer.h"
#include "test_util.h"

namespace l2l::train {
namespace {

using testing::SubWorld;
using testing::Weights;

int g_rank = 0, g_size = 1;
const char* kData = "resume_test.tok";

class ResumeEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    ASSERT_TRUE(testing::WriteTinyCorpus(kData).ok());
  }
};
const auto* const kEnv = ::testing::AddGlobalTestEnvironment(new ResumeEnvironment);

config::Config Config(const std::string& name) {
  config::Config c = testing::TinyConfig(config::ModelKind::kBert, kData, "resume_test_" + name);
  c.train.steps = 20;
  c.train.grad_clip = 1.0;
  c.train.micro_batch = 1;     // global 8: 8, 4 or 2 micro-batches at world 1, 2, 4
  c.checkpoint.at_end = true;  // these tests read the saved checkpoints
  c.train.eval_every_steps = 0;
  return c;
}

void Clean(const config::Config& c) {
  if (g_rank == 0) {
    std::filesystem::remove_all(c.checkpoint.dir);
    std::filesystem::remove_all(c.log.dir);
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

struct RunResult {
  bool ran = false;
  std::vector<double> losses;  // per step, from the first step this run took
  Weights weights;
  std::string checkpoint;  // last saved
};

void Finish(Trainer& t, RunResult* r) {
  r->ran = true;
  for (const StepRecord& s : t.history()) r->losses.push_back(s.loss);
  for (int l = 0; l < model::NumLayers(t.dims()); ++l) {
    r->weights.emplace_back();
    EXPECT_TRUE(t.ReadLayer(l, &r->weights.back()).ok());
  }
  r->checkpoint = t.last_checkpoint();
}

// Trains from scratch (or from `resume`) to train.steps on `world` ranks.
RunResult Train(int world, const config::Config& cfg, const std::string& resume = "") {
  RunResult r;
  SubWorld sub(world);
  if (sub.comm() == nullptr) return r;
  auto t = Trainer::Create(cfg, sub.comm(), g_size);
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  if (!t.ok()) return r;
  if (!resume.empty()) {
    Status s = (*t)->Resume(resume);
    EXPECT_TRUE(s.ok()) << s.ToString();
  }
  Status s = (*t)->Run();
  EXPECT_TRUE(s.ok()) << s.ToString();
  Finish(**t, &r);
  return r;
}

// Trains `steps` steps from scratch and saves, like a job cut off there.
RunResult TrainPart(int world, const config::Config& cfg, int steps) {
  RunResult r;
  SubWorld sub(world);
  if (sub.comm() == nullptr) return r;
  auto t = Trainer::Create(cfg, sub.comm(), g_size);
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  if (!t.ok()) return r;
  for (int i = 0; i < steps; ++i) EXPECT_TRUE((*t)->Step().ok());
  EXPECT_TRUE((*t)->SaveCheckpoint().ok());
  Finish(**t, &r);
  return r;
}

// The final checkpoints of two runs hold bitwise the same master weights and
// AdamW moments (read back at world size 1 on rank 0).
void ExpectSameCheckpointState(const std::string& a, const std::string& b,
                               const std::vector<ckpt::LayerInfo>& layers) {
  auto read = [&](const std::string& path, std::vector<std::vector<float>>* state) {
    std::vector<ckpt::LayerSlice> slices;
    state->assign(3 * layers.size(), {});
    for (size_t l = 0; l < layers.size(); ++l) {
      for (int k = 0; k < 3; ++k) (*state)[3 * l + k].resize(layers[l].size_elems);
      slices.push_back({0, layers[l].size_elems, (*state)[3 * l].data(), (*state)[3 * l + 1].data(),
                        (*state)[3 * l + 2].data(), true});
    }
    ckpt::IoStats stats;
    Status s = ckpt::Load(MPI_COMM_SELF, path, layers, slices, &stats);
    EXPECT_TRUE(s.ok()) << s.ToString();
  };
  std::vector<std::vector<float>> sa, sb;
  read(a, &sa);
  read(b, &sb);
  EXPECT_TRUE(testing::BitwiseEqual(sa, sb)) << a << " and " << b << " differ";
}

std::vector<ckpt::LayerInfo> LayersOf(const config::Config& cfg) {
  const model::ModelDims d = model::DimsFromConfig(cfg.model);
  std::vector<ckpt::LayerInfo> layers;
  for (int l = 0; l < model::NumLayers(d); ++l) {
    const model::ParamLayout p = model::LayoutFor(d, model::KindOf(d, l));
    ckpt::LayerInfo info;
    info.size_elems = p.size_elems();
    for (const auto& t : p.tensors()) {
      ckpt::TensorEntry e{t.name, t.offset_elems, {}};
      for (int i = 0; i < t.shape.rank(); ++i) e.shape.push_back(t.shape.dim(i));
      info.tensors.push_back(e);
    }
    layers.push_back(info);
  }
  return layers;
}

TEST(Resume, TenPlusTenEqualsTwentyBitwiseAtWorldSize2) {
  if (g_size < 2) GTEST_SKIP() << "needs 2 ranks";
  config::Config straight = Config("straight2"), cut = Config("cut2");
  Clean(straight);
  Clean(cut);
  RunResult full = Train(2, straight);
  RunResult first = TrainPart(2, cut, 10);
  RunResult second = Train(2, cut, "auto");
  if (!full.ran) return;
  ASSERT_EQ(full.losses.size(), 20u);
  ASSERT_EQ(first.losses.size(), 10u);
  ASSERT_EQ(second.losses.size(), 10u);
  for (int s = 0; s < 20; ++s) {
    const double resumed = s < 10 ? first.losses[s] : second.losses[s - 10];
    EXPECT_EQ(full.losses[s], resumed) << "step " << s + 1;
  }
  EXPECT_TRUE(testing::BitwiseEqual(full.weights, second.weights));
  if (g_rank == 0) ExpectSameCheckpointState(full.checkpoint, second.checkpoint, LayersOf(cut));
}

TEST(Resume, SavedAtWorldSize4ResumesAt2And1) {
  if (g_size < 4) GTEST_SKIP() << "needs 4 ranks";
  config::Config straight = Config("straight4"), cut = Config("cut4");
  Clean(straight);
  Clean(cut);
  RunResult full = Train(4, straight);
  RunResult first = TrainPart(4, cut, 10);
  for (int world : {2, 1}) {
    // Each resume starts from the world-size-4 checkpoint of step 10.
    RunResult second = Train(world, cut, ckpt::CheckpointPath(cut.checkpoint.dir, 10));
    if (g_rank != 0) continue;
    ASSERT_EQ(second.losses.size(), 10u);
    for (int s = 0; s < 10; ++s) {
      EXPECT_NEAR(second.losses[s], full.losses[10 + s], 1e-5 * std::fabs(full.losses[10 + s]))
          << "world " << world << " step " << 11 + s;
    }
    const double rel = testing::RelativeNorm(second.weights, full.weights);
    std::printf("reshard 4 -> %d: final weights relative norm %.3g\n", world, rel);
    EXPECT_LT(rel, 1e-5);
  }
}

// A stop request on one rank: every rank finishes the same step, saves the
// same checkpoint, and the resumed run continues bitwise.
TEST(Resume, StopRequestOnOneRankStopsAllAndResumesBitwise) {
  config::Config straight = Config("straight_stop"), cut = Config("stop");
  Clean(straight);
  Clean(cut);
  const int world = std::min(g_size, 2);
  RunResult full = Train(world, straight);
  RunResult first;
  {
    SubWorld sub(world);
    if (sub.comm() != nullptr) {
      auto t = Trainer::Create(cut, sub.comm(), g_size);
      ASSERT_TRUE(t.ok());
      for (int i = 0; i < 7; ++i) ASSERT_TRUE((*t)->Step().ok());
      // Only the last rank of the sub-world "receives the signal".
      SetLocalStopRequested(sub.comm()->rank() == world - 1);
      ASSERT_TRUE((*t)->Run().ok());
      SetLocalStopRequested(false);
      EXPECT_TRUE((*t)->stopped_by_signal());
      EXPECT_EQ((*t)->step(), 8);  // finished the step it was in, then stopped
      Finish(**t, &first);
    }
  }
  RunResult second = Train(world, cut, "auto");
  if (!full.ran) return;
  EXPECT_EQ(first.checkpoint, ckpt::CheckpointPath(cut.checkpoint.dir, 8));
  ASSERT_EQ(second.losses.size(), 12u);
  for (int s = 0; s < 12; ++s) EXPECT_EQ(second.losses[s], full.losses[8 + s]) << "step " << 9 + s;
  EXPECT_TRUE(testing::BitwiseEqual(full.weights, second.weights));
}

TEST(Resume, ResidentModeCheckpointsRoundTrip) {
  config::Config straight = Config("res_straight"), cut = Config("res_cut");
  straight.exec.mode = cut.exec.mode = config::ExecMode::kResident;
  Clean(straight);
  Clean(cut);
  const int world = std::min(g_size, 2);
  RunResult full = Train(world, straight);
  TrainPart(world, cut, 10);
  RunResult second = Train(world, cut, "auto");
  if (!full.ran) return;
  for (int s = 0; s < 10; ++s) EXPECT_EQ(second.losses[s], full.losses[10 + s]);
  EXPECT_TRUE(testing::BitwiseEqual(full.weights, second.weights));
}

}  // namespace
}  // namespace l2l::train
