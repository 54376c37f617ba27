// Helpers shared by the engine's MPI tests: sub-communicators for running a
// smaller world inside a larger job, a tiny config, weight comparisons.
#pragma once

#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "l2l/comm/mpi_comm.h"
#include "l2l/config/config.h"
#include "l2l/data/data.h"
#include "l2l/train/trainer.h"

namespace l2l::train::testing {

// Ranks 0..world-1 of MPI_COMM_WORLD as a communicator; comm() is null on the
// other ranks. Collective over MPI_COMM_WORLD (construction and destruction).
class SubWorld {
 public:
  explicit SubWorld(int world) {
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_split(MPI_COMM_WORLD, rank < world ? 0 : MPI_UNDEFINED, rank, &sub_);
    if (sub_ != MPI_COMM_NULL) comm_ = std::make_unique<MpiComm>(sub_);
  }
  ~SubWorld() {
    comm_.reset();
    if (sub_ != MPI_COMM_NULL) MPI_Comm_free(&sub_);
  }
  MpiComm* comm() { return comm_.get(); }

 private:
  MPI_Comm sub_ = MPI_COMM_NULL;
  std::unique_ptr<MpiComm> comm_;
};

// A 2-block model on a small order-2 Markov corpus over 32 symbols.
inline config::Config TinyConfig(config::ModelKind kind, const std::string& data_path,
                                 const std::string& run_name) {
  config::Config c;
  c.model.kind = kind;
  c.model.layers = 2;
  c.model.hidden = 32;
  c.model.heads = 4;
  c.model.ffn = 64;
  c.model.vocab = 40;  // data vocab 32, + [MASK]
  c.model.seq_len = 16;
  config::ApplyModelDefaults(&c.model);
  c.model.dropout = 0.1;
  c.data.path = data_path;
  c.data.eval_fraction = 0.05;
  c.train.steps = 3;
  c.train.lr = 1e-3;
  c.train.warmup_steps = 1;
  c.train.global_batch = 8;
  c.train.micro_batch = 2;
  c.train.grad_clip = 0;
  c.exec.optimizer_threads = 2;
  c.log.dir = run_name + "_runs";
  c.checkpoint.dir = run_name + "_ckpt";
  // Runs are compared in memory; one saving at the end would make the next
  // run in the same directory refuse it (it holds checkpoints not resumed).
  c.checkpoint.at_end = false;
  return c;
}

// Writes the corpus on rank 0 of MPI_COMM_WORLD; collective.
inline Status WriteTinyCorpus(const std::string& path) {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  Status s;
  if (rank == 0) {
    data::MarkovSource src({32, 2, 7, 0.2});
    s = data::WriteTokenFile(path, 32, src.Generate(40000));
  }
  MPI_Barrier(MPI_COMM_WORLD);
  return s;
}

using Weights = std::vector<std::vector<float>>;

inline double RelativeNorm(const Weights& a, const Weights& b) {
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

inline bool BitwiseEqual(const Weights& a, const Weights& b) {
  if (a.size() != b.size()) return false;
  for (size_t l = 0; l < a.size(); ++l) {
    if (a[l].size() != b[l].size() ||
        std::memcmp(a[l].data(), b[l].data(), a[l].size() * sizeof(float)) != 0) {
      return false;
    }
  }
  return true;
}

struct RunResult {
  bool ran = false;  // false on ranks outside the sub-communicator
  std::vector<StepRecord> history;
  Weights weights;  // per layer, unpadded
  sched::DeviceMemoryPlan plan;
  int64_t device_peak_bytes = 0;
};

// Runs `cfg` on ranks 0..world-1 of MPI_COMM_WORLD; other ranks return
// ran=false. Collective over MPI_COMM_WORLD. Failures are gtest failures.
inline RunResult RunOn(int world, const config::Config& cfg, int local_ranks) {
  RunResult out;
  SubWorld sub(world);
  if (sub.comm() == nullptr) return out;
  auto trainer = Trainer::Create(cfg, sub.comm(), local_ranks);
  EXPECT_TRUE(trainer.ok()) << trainer.status().ToString();
  if (!trainer.ok()) return out;
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
  return out;
}

}  // namespace l2l::train::testing
