// End-to-end properties of the engine on the CPU backend (issue: the L2L
// engine). Runs under mpirun with 1, 2 or 4 ranks; world sizes smaller than
// the job run on sub-communicators (ranks 0..w-1), so one job compares
// several world sizes.
#include <mpi.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "l2l/comm/mpi_comm.h"
#include "l2l/data/data.h"
#include "l2l/train/trainer.h"

namespace l2l::train {
namespace {

int g_rank = 0, g_size = 1;
std::string g_data_path;

struct RunResult {
  bool ran = false;  // false on ranks outside the sub-communicator
  std::vector<StepRecord> history;
  std::vector<std::vector<float>> weights;  // per layer, unpadded
  sched::DeviceMemoryPlan plan;
  int64_t device_peak_bytes = 0;
};

config::Config TinyConfig(config::ModelKind kind) {
  config::Config c;
  c.model.kind = kind;
  c.model.layers = 2;
  c.model.hidden = 32;
  c.model.heads = 4;
  c.model.ffn = 64;
  c.model.vocab = 40;  // data vocab 32, + [MASK]
  c.model.seq_len = 16;
  c.model.dropout = 0.1;
  c.model.norm =
      kind == config::ModelKind::kGpt ? config::NormPlacement::kPre : config::NormPlacement::kPost;
  c.data.path = g_data_path;
  c.data.eval_fraction = 0.05;
  c.train.steps = 3;
  c.train.lr = 1e-3;
  c.train.warmup_steps = 1;
  c.train.global_batch = 8;
  c.train.micro_batch = 2;
  c.train.grad_clip = 0;
  c.exec.optimizer_threads = 2;
  c.log.dir = "trainer_test_runs/np" + std::to_string(g_size) + "_r" + std::to_string(g_rank);
  return c;
}

// Runs `cfg` on ranks 0..world-1 of MPI_COMM_WORLD; other ranks return
// ran=false. Collective over MPI_COMM_WORLD.
RunResult RunOn(int world, const config::Config& cfg) {
  RunResult out;
  MPI_Comm sub;
  MPI_Comm_split(MPI_COMM_WORLD, g_rank < world ? 0 : MPI_UNDEFINED, g_rank, &sub);
  if (sub == MPI_COMM_NULL) return out;
  {
    MpiComm comm(sub);
    auto trainer = Trainer::Create(cfg, &comm, g_size);
    EXPECT_TRUE(trainer.ok()) << trainer.status().ToString();
    if (trainer.ok()) {
      Status s = (*trainer)->Run();
      EXPECT_TRUE(s.ok()) << s.ToString();
      out.ran = true;
      out.history = (*trainer)->history();
      out.plan = (*trainer)->memory_plan();
      out.device_peak_bytes = (*trainer)->device().memory_stats().peak_bytes;
      for (int l = 0; l < model::NumLayers((*trainer)->dims()); ++l) {
        out.weights.emplace_back();
        EXPECT_TRUE((*trainer)->ReadLayer(l, &out.weights.back()).ok());
      }
    }
  }
  MPI_Comm_free(&sub);
  return out;
}

double RelativeNorm(const std::vector<std::vector<float>>& a,
                    const std::vector<std::vector<float>>& b) {
  double num = 0, den = 0;
  for (size_t l = 0; l < a.size(); ++l) {
    for (size_t i = 0; i < a[l].size(); ++i) {
      const double d = static_cast<double>(a[l][i]) - b[l][i];
      num += d * d;
      den += static_cast<double>(b[l][i]) * b[l][i];
    }
  }
  return std::sqrt(num / den);
}

bool BitwiseEqual(const std::vector<std::vector<float>>& a,
                  const std::vector<std::vector<float>>& b) {
  if (a.size() != b.size()) return false;
  for (size_t l = 0; l < a.size(); ++l) {
    if (a[l].size() != b[l].size() ||
        std::memcmp(a[l].data(), b[l].data(), a[l].size() * sizeof(float)) != 0) {
      return false;
    }
  }
  return true;
}

// l2l (EPS, eager CPU optimizer, relay) against resident (all on device,
// all-reduce, then AdamW): same world size, dropout on, 3 steps. Clipping on
// and off. Resident is the straightforward reference for the eager queue:
// all gradients first, then the norm, then AdamW.
void ExpectL2LEqualsResident(config::Config cfg) {
  for (int world : {1, 2}) {
    if (world > g_size) continue;
    cfg.exec.mode = config::ExecMode::kL2L;
    RunResult a = RunOn(world, cfg);
    cfg.exec.mode = config::ExecMode::kResident;
    RunResult b = RunOn(world, cfg);
    if (!a.ran) continue;
    ASSERT_EQ(a.history.size(), 3u);
    ASSERT_EQ(b.history.size(), 3u);
    for (size_t s = 0; s < a.history.size(); ++s) {
      EXPECT_EQ(a.history[s].loss, b.history[s].loss) << "world " << world << " step " << s;
      EXPECT_EQ(a.history[s].grad_norm, b.history[s].grad_norm) << "world " << world;
    }
    EXPECT_TRUE(BitwiseEqual(a.weights, b.weights))
        << "final weights differ at world size " << world
        << ", relative norm " << RelativeNorm(a.weights, b.weights);
  }
}

TEST(Engine, L2LEqualsResidentBertWithDropout) {
  ExpectL2LEqualsResident(TinyConfig(config::ModelKind::kBert));
}

TEST(Engine, L2LEqualsResidentGptWithClipping) {
  config::Config cfg = TinyConfig(config::ModelKind::kGpt);
  cfg.train.grad_clip = 0.05;  // well below the norm: the clip factor matters
  RunResult probe = RunOn(1, cfg);
  if (probe.ran) EXPECT_GT(probe.history[0].grad_norm, 0.05) << "clip would not be active";
  ExpectL2LEqualsResident(cfg);
}

TEST(Engine, WorldSizeInvariance) {
  if (g_size < 4) GTEST_SKIP() << "needs 4 ranks";
  config::Config cfg = TinyConfig(config::ModelKind::kBert);
  cfg.train.grad_clip = 1.0;
  cfg.train.micro_batch = 1;  // global 8 = 4 ranks x 2 = 2 x 4 = 1 x 8 micro-batches
  RunResult w4 = RunOn(4, cfg);
  RunResult w2 = RunOn(2, cfg);
  RunResult w1 = RunOn(1, cfg);
  if (g_rank != 0) return;
  for (const RunResult* r : {&w2, &w1}) {
    ASSERT_EQ(r->history.size(), w4.history.size());
    for (size_t s = 0; s < w4.history.size(); ++s) {
      EXPECT_NEAR(r->history[s].loss, w4.history[s].loss, 1e-5 * std::fabs(w4.history[s].loss));
    }
    const double rel = RelativeNorm(r->weights, w4.weights);
    std::printf("world-size invariance: final weights relative norm %.3g\n", rel);
    EXPECT_LT(rel, 1e-5);
  }
}

// DESIGN §5: with stash=host nothing on the device scales with depth.
TEST(Engine, DeviceMemoryIsConstantInDepthWithHostStash) {
  config::Config cfg = TinyConfig(config::ModelKind::kBert);
  cfg.train.steps = 1;
  int64_t peak[2][2];  // [stash host/device][4 / 48 layers]
  int64_t predicted_stash[2][2];
  for (int stash = 0; stash < 2; ++stash) {
    cfg.exec.stash = stash == 0 ? config::StashPlacement::kHost : config::StashPlacement::kDevice;
    for (int i = 0; i < 2; ++i) {
      cfg.model.layers = i == 0 ? 4 : 48;
      RunResult r = RunOn(1, cfg);  // collective: every rank calls it
      if (!r.ran) continue;
      peak[stash][i] = r.device_peak_bytes;
      predicted_stash[stash][i] = r.plan.stash_bytes;
      EXPECT_EQ(r.device_peak_bytes, r.plan.total()) << "peak differs from the memory plan";
    }
  }
  if (g_rank != 0) return;
  std::printf("device peak, stash=host:   4 layers %lld B, 48 layers %lld B\n",
              (long long)peak[0][0], (long long)peak[0][1]);
  std::printf("device peak, stash=device: 4 layers %lld B, 48 layers %lld B\n",
              (long long)peak[1][0], (long long)peak[1][1]);
  EXPECT_LT(std::fabs(double(peak[0][1] - peak[0][0])) / peak[0][0], 0.05);
  // With stash=device the peak grows by exactly the predicted stash growth.
  EXPECT_EQ(peak[1][1] - peak[1][0], predicted_stash[1][1] - predicted_stash[1][0]);
  EXPECT_GT(peak[1][1], 2 * peak[1][0]);
}

TEST(Engine, LayerThatDoesNotFitTheCapIsRefused) {
  config::Config cfg = TinyConfig(config::ModelKind::kBert);
  cfg.exec.device_memory_limit_bytes = 64 * 1024;
  MpiComm comm;
  auto t = Trainer::Create(cfg, &comm, g_size);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), StatusCode::kOutOfMemory);
  EXPECT_NE(t.status().message().find("exec.device_memory_limit=64.00 KiB is too small"),
            std::string::npos)
      << t.status().message();
}

}  // namespace
}  // namespace l2l::train

int main(int argc, char** argv) {
  l2l::MpiRuntime mpi(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  l2l::train::g_rank = mpi.world_rank();
  l2l::train::g_size = mpi.world_size();
  if (mpi.world_rank() != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  // A small order-2 Markov corpus, written once by rank 0.
  l2l::train::g_data_path = "trainer_test_np" + std::to_string(mpi.world_size()) + ".tok";
  if (mpi.world_rank() == 0) {
    l2l::data::MarkovSource src({32, 2, 7, 0.2});
    l2l::Status s = l2l::data::WriteTokenFile(l2l::train::g_data_path, 32, src.Generate(40000));
    if (!s.ok()) l2l::MpiRuntime::AbortJob(s.ToString(), 1);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  int rc = RUN_ALL_TESTS();
  MPI_Allreduce(MPI_IN_PLACE, &rc, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  return rc;
}
