// End-to-end properties of the engine on the CPU backend (issue: the L2L
// engine). Runs under mpirun with 1, 2 or 4 ranks; world sizes smaller than
// the job run on sub-communicators (ranks 0..w-1), so one job compares
// several world sizes.
#include "l2l/train/trainer.h"

#include <gtest/gtest.h>
#include <mpi.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "l2l/comm/mpi_comm.h"
#include "l2l/model/config_dims.h"
#include "test_util.h"

namespace l2l::train {
namespace {

int g_rank = 0, g_size = 1;
std::string g_data_path;

// Rank, world size and a small corpus, once MPI is up.
class EngineEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    g_data_path = "trainer_test_np" + std::to_string(g_size) + ".tok";
    ASSERT_TRUE(testing::WriteTinyCorpus(g_data_path).ok());
  }
};
const auto* const kEnv = ::testing::AddGlobalTestEnvironment(new EngineEnvironment);

config::Config TinyConfig(config::ModelKind kind) {
  // Every rank must pass the same config (checkpoints check it).
  return testing::TinyConfig(kind, g_data_path, "trainer_test_np" + std::to_string(g_size));
}

using testing::BitwiseEqual;
using testing::RelativeNorm;
using testing::RunResult;

RunResult RunOn(int world, const config::Config& cfg) { return testing::RunOn(world, cfg, g_size); }

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
        << "final weights differ at world size " << world << ", relative norm "
        << RelativeNorm(a.weights, b.weights);
  }
}

TEST(Engine, L2LEqualsResidentBertWithDropout) {
  ExpectL2LEqualsResident(TinyConfig(config::ModelKind::kBert));
}

TEST(Engine, L2LEqualsResidentGptWithClipping) {
  config::Config cfg = TinyConfig(config::ModelKind::kGpt);
  cfg.train.grad_clip = 0.05;  // well below the norm: the clip factor matters
  RunResult probe = RunOn(1, cfg);
  if (probe.ran) {
    EXPECT_GT(probe.history[0].grad_norm, 0.05) << "clip would not be active";
  }
  ExpectL2LEqualsResident(cfg);
}

// Llama with grouped-query attention (4 heads, 2 key/value heads), llama3
// rope scaling and attention dropout; untied, and tied (layer 0 held by the
// l2l source across the step) with clipping.
config::Config LlamaConfig(bool tied) {
  config::Config cfg = TinyConfig(config::ModelKind::kLlama);
  cfg.model.kv_heads = 2;
  cfg.model.tie_embeddings = tied;
  cfg.model.rope_scaling.type = config::RopeScalingType::kLlama3;
  cfg.model.rope_scaling.original_max_positions = 8;
  return cfg;
}

TEST(Engine, L2LEqualsResidentLlamaGqaUntied) { ExpectL2LEqualsResident(LlamaConfig(false)); }

TEST(Engine, L2LEqualsResidentLlamaGqaTiedWithClipping) {
  config::Config cfg = LlamaConfig(true);
  cfg.train.grad_clip = 0.05;
  ExpectL2LEqualsResident(cfg);
}

void ExpectWorldSizeInvariance(config::Config cfg) {
  if (g_size < 4) GTEST_SKIP() << "needs 4 ranks";
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
    std::printf("world-size invariance (%s): final weights relative norm %.3g\n",
                config::Name(cfg.model.kind), rel);
    EXPECT_LT(rel, 1e-5);
  }
}

TEST(Engine, WorldSizeInvariance) {
  ExpectWorldSizeInvariance(TinyConfig(config::ModelKind::kBert));
}
TEST(Engine, WorldSizeInvarianceLlamaTied) { ExpectWorldSizeInvariance(LlamaConfig(true)); }
TEST(Engine, WorldSizeInvarianceLlamaUntied) { ExpectWorldSizeInvariance(LlamaConfig(false)); }

// DESIGN §5: with stash=host nothing on the device scales with depth.
void ExpectDeviceMemoryConstantInDepth(config::Config cfg) {
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

TEST(Engine, DeviceMemoryIsConstantInDepthWithHostStash) {
  ExpectDeviceMemoryConstantInDepth(TinyConfig(config::ModelKind::kBert));
}
TEST(Engine, DeviceMemoryIsConstantInDepthLlamaUntied) {
  ExpectDeviceMemoryConstantInDepth(LlamaConfig(false));
}
TEST(Engine, DeviceMemoryIsConstantInDepthLlamaTied) {
  ExpectDeviceMemoryConstantInDepth(LlamaConfig(true));
}

// The gather ring: depth 0 gathers once per visit of the relay's schedule
// (forward 0..L+1, backward L..0), depth 1 reuses the last block across the
// head, and deeper prefetch never gathers more (it may reuse more). With
// tied embeddings layer 0 is held for the step: gathered once, not twice.
TEST(Engine, PrefetchNeverGathersMoreThanOncePerVisit) {
  for (bool tied : {false, true}) {
    config::Config cfg = TinyConfig(config::ModelKind::kBert);
    cfg.model.tie_embeddings = tied;
    cfg.model.layers = 6;
    cfg.train.steps = 1;
    const int64_t visits = 2 * (cfg.model.layers + 2) - 1 - (tied ? 1 : 0);
    std::vector<int64_t> gathers;
    for (int depth = 0; depth <= 4; ++depth) {
      cfg.exec.prefetch_depth = depth;
      RunResult r = RunOn(1, cfg);  // collective: every rank calls it
      if (r.ran) gathers.push_back(r.history[0].gathers);
    }
    if (g_rank != 0) continue;
    ASSERT_EQ(gathers.size(), 5u);
    EXPECT_EQ(gathers[0], visits) << (tied ? "tied" : "untied");
    EXPECT_EQ(gathers[1], visits - 1) << (tied ? "tied" : "untied");
    for (int depth = 2; depth <= 4; ++depth) {
      EXPECT_LE(gathers[depth], gathers[depth - 1]) << "prefetch depth " << depth;
    }
  }
}

// train.weight_decay_on: matrices decays 2-D weights and embeddings only.
// The no-decay ranges are exactly the 1-D tensors (biases and gains), packed
// neighbours merged. Against `all`, one step from the same start (same
// gradients): every matrix is bitwise the same in both, every gain (1 at
// init, so decay moves it) differs, in l2l and resident mode alike.
TEST(Engine, WeightDecayOnMatricesSparesBiasesAndGains) {
  {
    config::Config cfg = TinyConfig(config::ModelKind::kLlama);
    cfg.model.attention_bias = true;
    const model::ModelDims d = model::DimsFromConfig(cfg.model);
    const model::ParamLayout block = model::LayoutForLayer(d, 1);
    const std::vector<eps::Shard> r = NoDecayRanges(block);
    const int64_t H = d.hidden, KV = int64_t{model::KvHeads(d)} * model::HeadDim(d);
    const std::vector<eps::Shard> want = {{block.OffsetOf("ln1.gain"), H},
                                          {block.OffsetOf("attn.q.bias"), H + 2 * KV},
                                          {block.OffsetOf("ln2.gain"), H}};
    EXPECT_EQ(r, want);
  }
  // Two ranks too: each EPS shard starts inside a layer (shard vs layer coordinates).
  for (const auto& [mode, world] :
       {std::pair{config::ExecMode::kL2L, 1}, std::pair{config::ExecMode::kL2L, 2},
        std::pair{config::ExecMode::kResident, 1}}) {
    if (world > g_size) continue;
    config::Config cfg = TinyConfig(config::ModelKind::kGpt);
    cfg.exec.mode = mode;
    cfg.train.steps = 1;
    cfg.train.weight_decay = 0.5;  // large, so one step's decay is far above rounding
    cfg.train.weight_decay_on = config::WeightDecayOn::kMatrices;
    RunResult matrices = RunOn(world, cfg);
    cfg.train.weight_decay_on = config::WeightDecayOn::kAll;
    RunResult all = RunOn(world, cfg);
    if (!matrices.ran) continue;
    const model::ModelDims d = model::DimsFromConfig(cfg.model);
    int gains = 0;
    for (int l = 0; l < model::NumLayers(d); ++l) {
      const model::ParamLayout layout = model::LayoutForLayer(d, l);
      for (const model::TensorSpec& t : layout.tensors()) {
        const float* a = matrices.weights[l].data() + t.offset_elems;
        const float* b = all.weights[l].data() + t.offset_elems;
        const size_t bytes = t.shape.num_elements() * sizeof(float);
        if (t.matrix()) {
          EXPECT_EQ(std::memcmp(a, b, bytes), 0) << "layer " << l << " " << t.name;
        } else if (t.init == model::Init::kOnes) {
          EXPECT_NE(std::memcmp(a, b, bytes), 0) << "layer " << l << " " << t.name;
          ++gains;
        }
      }
    }
    EXPECT_GT(gains, 3);
  }
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

// A token file truncated while the run reads it (another job rewriting the
// corpus) used to be a SIGBUS in the mapped read; now every rank stops at the
// next step with the same DataLoss naming the file.
TEST(Engine, TokenFileTruncatedUnderTheRunStopsEveryRankWithOneError) {
  const std::string path = "trainer_test_np" + std::to_string(g_size) + "_changing.tok";
  ASSERT_TRUE(testing::WriteTinyCorpus(path).ok());
  config::Config cfg = TinyConfig(config::ModelKind::kGpt);
  cfg.data.path = path;
  MpiComm comm;
  auto t = Trainer::Create(cfg, &comm, g_size);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  ASSERT_TRUE((*t)->Step().ok());
  MPI_Barrier(MPI_COMM_WORLD);
  if (g_rank == 0) {
    ASSERT_EQ(::truncate(path.c_str(), data::kTokenFileHeaderBytes + 64), 0);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  StatusOr<StepRecord> r = (*t)->Step();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(r.status().message().find(path + ": changed while this run was reading it"),
            std::string::npos)
      << r.status().message();
  StatusOr<double> eval = (*t)->Evaluate();
  EXPECT_EQ(eval.status().code(), StatusCode::kDataLoss) << eval.status().ToString();
}

// A held-out file of `samples` whole samples of seq_len 16 (rank 0 writes; collective).
std::string WriteHeldOut(const std::string& name, int samples) {
  const std::string path = "trainer_test_np" + std::to_string(g_size) + "_" + name + ".tok";
  if (g_rank == 0) {
    data::MarkovSource src({32, 2, 11, 0.2});
    EXPECT_TRUE(data::WriteTokenFile(path, 32, src.Generate(16 * samples + 1)).ok());
  }
  MPI_Barrier(MPI_COMM_WORLD);
  return path;
}

// --eval-only's pass: 28 held-out samples do not fill the last global batch
// of 8, so the rows past the end (on different ranks at each world size)
// must count nothing. The loss is then the same at every world size and
// every sample's 16 targets count once.
TEST(Engine, EvaluateAllCountsEachHeldOutSampleOnceAtEveryWorldSize) {
  config::Config cfg = TinyConfig(config::ModelKind::kGpt);
  cfg.model.dropout = 0;
  cfg.data.eval_path = WriteHeldOut("heldout28", 28);
  std::vector<EvalSummary> got;
  for (int world : {1, g_size}) {
    testing::SubWorld sub(world);
    if (sub.comm() == nullptr) continue;
    auto t = Trainer::Create(cfg, sub.comm(), g_size, 0, Trainer::Purpose::kEvaluate);
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    StatusOr<EvalSummary> r = (*t)->EvaluateAll();
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    got.push_back(*r);
  }
  if (g_rank != 0) return;
  ASSERT_EQ(got.size(), 2u);
  for (const EvalSummary& r : got) {
    EXPECT_EQ(r.samples, 28);
    EXPECT_EQ(r.batches, 4);  // ceil(28 / 8)
    EXPECT_EQ(r.targets, 28 * 16);
  }
  EXPECT_NEAR(got[1].loss, got[0].loss, 1e-12 * got[0].loss) << "world " << g_size << " vs 1";
}

// The eval pass is the training forward without the update: with the train
// file as the eval file and one global batch holding every sample, the
// first step's training loss (before any update) is the eval loss of the
// initial weights. Causal and masked-LM (the eval masks are epoch 0's).
TEST(Engine, EvaluateAllEqualsTheFirstTrainingLossOnTheSameSamples) {
  const std::string path = WriteHeldOut("all32", 32);
  for (config::ModelKind kind : {config::ModelKind::kGpt, config::ModelKind::kBert}) {
    config::Config cfg = TinyConfig(kind);
    cfg.model.dropout = 0;
    cfg.data.path = path;
    cfg.data.eval_path = path;
    cfg.data.eval_fraction = 0;
    cfg.train.global_batch = 32;
    MpiComm comm;
    auto t = Trainer::Create(cfg, &comm, g_size);
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    StatusOr<EvalSummary> eval = (*t)->EvaluateAll();
    ASSERT_TRUE(eval.ok()) << eval.status().ToString();
    StatusOr<StepRecord> step = (*t)->Step();
    ASSERT_TRUE(step.ok()) << step.status().ToString();
    EXPECT_EQ(eval->samples, 32);
    EXPECT_NEAR(eval->loss, step->loss, 1e-6 * step->loss) << config::Name(kind);
  }
}

// data.doc_attention: within end to end: a corpus of documents (every 7th
// token starts one) trains the same at every world size, and differently from
// attention across the documents.
TEST(Engine, DocAttentionWithinTrainsTheSameAtEveryWorldSizeAndDiffersFromCross) {
  const std::string path = "trainer_test_np" + std::to_string(g_size) + "_documents.tok";
  if (g_rank == 0) {
    data::MarkovSource src({32, 2, 7, 0.2});
    const std::vector<uint32_t> tokens = src.Generate(4000);
    std::vector<int64_t> starts;
    for (int64_t t = 0; t < 4000; t += 7) starts.push_back(t);
    ASSERT_TRUE(data::WriteTokenFile(path, 32, tokens, starts).ok());
  }
  MPI_Barrier(MPI_COMM_WORLD);
  config::Config cfg = TinyConfig(config::ModelKind::kGpt);
  cfg.data.path = path;
  cfg.data.doc_attention = config::DocAttention::kWithin;
  RunResult one = RunOn(1, cfg);
  RunResult all = RunOn(g_size, cfg);
  cfg.data.doc_attention = config::DocAttention::kCross;
  RunResult cross = RunOn(1, cfg);
  if (g_rank != 0) return;
  ASSERT_EQ(one.history.size(), 3u);
  ASSERT_EQ(all.history.size(), 3u);
  for (size_t s = 0; s < 3; ++s) {
    EXPECT_NEAR(all.history[s].loss, one.history[s].loss, 1e-6 * one.history[s].loss) << s;
  }
  EXPECT_NE(cross.history[0].loss, one.history[0].loss);
}

// Packed SFT end to end (data.sampling: packed): examples of 3..13 tokens
// with loss masks, several to a row with doc_attention within and restarted
// positions, give every example exactly the targets and the loss it has alone
// in a row (sampling: examples), at any world size, for gpt2 (a position
// table) and llama (rotary). Without restarted positions gpt2's packed
// examples sit at other positions of the table: not the same loss.
TEST(Engine, PackedExamplesHaveTheLossTheyHaveAloneAtEveryWorldSize) {
  const std::string path = "trainer_test_np" + std::to_string(g_size) + "_sft.tok";
  if (g_rank == 0) {
    data::MarkovSource src({32, 2, 5, 0.2});
    const std::vector<uint32_t> tokens = src.Generate(2400);
    std::vector<int64_t> starts;
    for (int64_t t = 0, d = 0; t < 2400; t += 3 + (d * 7) % 11, ++d) starts.push_back(t);
    std::vector<uint8_t> loss(tokens.size());
    for (size_t i = 0; i < loss.size(); ++i) loss[i] = (i * 2654435761u >> 7) % 3 != 0;
    EXPECT_TRUE(data::WriteTokenFile(path, 32, tokens, starts, loss).ok());  // no rank waits
  }
  MPI_Barrier(MPI_COMM_WORLD);
  for (config::ModelKind kind : {config::ModelKind::kGpt, config::ModelKind::kLlama}) {
    SCOPED_TRACE(config::Name(kind));
    config::Config cfg = TinyConfig(kind);
    cfg.model.dropout = 0;
    cfg.data.path = path;
    cfg.data.eval_path = path;
    cfg.data.doc_attention = config::DocAttention::kWithin;
    auto eval = [&](int world, const config::Config& c) -> std::optional<EvalSummary> {
      testing::SubWorld sub(world);
      if (sub.comm() == nullptr) return std::nullopt;
      auto t = Trainer::Create(c, sub.comm(), g_size, 0, Trainer::Purpose::kEvaluate);
      EXPECT_TRUE(t.ok()) << t.status().ToString();
      if (!t.ok()) return std::nullopt;
      StatusOr<EvalSummary> r = (*t)->EvaluateAll();
      EXPECT_TRUE(r.ok()) << r.status().ToString();
      return r.ok() ? std::optional<EvalSummary>(*r) : std::nullopt;
    };
    cfg.data.sampling = config::Sampling::kExamples;
    const auto alone = eval(1, cfg);
    cfg.data.sampling = config::Sampling::kPacked;
    cfg.data.doc_positions = config::DocPositions::kRestart;
    const auto packed = eval(g_size, cfg);
    cfg.data.doc_positions = config::DocPositions::kContinue;
    const auto shifted = eval(1, cfg);
    if (g_rank != 0) continue;
    if (!(alone && packed && shifted)) {  // reported above; the other ranks wait at the barrier
      ADD_FAILURE() << "an evaluation failed";
      continue;
    }
    EXPECT_LT(packed->samples * 3, alone->samples * 2) << "rows should hold 1.5 examples or more";
    EXPECT_EQ(packed->targets, alone->targets);
    EXPECT_NEAR(packed->loss, alone->loss, 1e-6 * alone->loss);
    if (kind == config::ModelKind::kGpt) {
      EXPECT_GT(std::abs(shifted->loss - alone->loss), 1e-4 * alone->loss)
          << "positions did not matter: the restart above proves nothing";
    }
  }
  MPI_Barrier(MPI_COMM_WORLD);
  if (g_rank == 0) std::remove(path.c_str());
}

}  // namespace
}  // namespace l2l::train
