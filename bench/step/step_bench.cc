// bench_step: tokens/s and the time split of whole training steps on the CPU
// backend, l2l against resident in the same run (same process, same data,
// same shapes), so the ratio is meaningful on a shared, noisy machine.
//
//   bench_step [--model tiny-bert|bert-base] [--layers N] [--steps N] [--micro N]
//   launch/mpiexec-local.sh 2 build/bench/step/bench_step --model tiny-bert
//
// Reports the median over the timed steps (the first step is a warm-up).
#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "l2l/comm/mpi_comm.h"
#include "l2l/core/rng.h"
#include "l2l/data/data.h"
#include "l2l/train/trainer.h"

namespace {

using l2l::config::Config;

struct Row {
  std::string mode;
  double step_s, tokens_per_s, compute_s, gather_s, opt_s;
  int64_t peak;
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  l2l::MpiRuntime mpi(&argc, &argv);
  std::string model = "tiny-bert";
  int layers = -1, steps = 4, micro = -1;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--model") && i + 1 < argc)
      model = argv[++i];
    else if (!std::strcmp(argv[i], "--layers") && i + 1 < argc)
      layers = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--steps") && i + 1 < argc)
      steps = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--micro") && i + 1 < argc)
      micro = std::atoi(argv[++i]);
    else {
      if (mpi.world_rank() == 0)
        std::fprintf(stderr,
                     "usage: bench_step [--model tiny-bert|bert-base] [--layers N] "
                     "[--steps N] [--micro N]\n");
      return 2;
    }
  }
  Config cfg;
  cfg.model.kind = l2l::config::ModelKind::kBert;
  if (model == "bert-base") {
    cfg.model.layers = 2;
    cfg.model.hidden = 768;
    cfg.model.heads = 12;
    cfg.model.ffn = 3072;
    cfg.model.vocab = 30522;
    cfg.model.seq_len = 128;
    cfg.train.micro_batch = 4;
  } else if (model == "tiny-bert") {
    cfg.model.layers = 4;
    cfg.model.hidden = 128;
    cfg.model.heads = 4;
    cfg.model.ffn = 512;
    cfg.model.vocab = 128;
    cfg.model.seq_len = 64;
    cfg.train.micro_batch = 8;
  } else {
    if (mpi.world_rank() == 0)
      std::fprintf(stderr, "bench_step: unknown --model %s\n", model.c_str());
    return 2;
  }
  if (layers > 0) cfg.model.layers = layers;
  if (micro > 0) cfg.train.micro_batch = micro;
  const int world = mpi.world_size();
  cfg.train.global_batch = cfg.train.micro_batch * 2 * world;  // 2 micro-batches per rank
  cfg.train.steps = steps + 1;
  cfg.train.grad_clip = 1.0;
  cfg.data.eval_fraction = 0.0;
  cfg.log.dir = "bench_step_runs";
  cfg.checkpoint.dir = "bench_step_ckpt";
  cfg.log.every_steps = 1000000;

  // Uniform random tokens: the bench measures speed, not learning.
  const uint32_t data_vocab = static_cast<uint32_t>(cfg.model.vocab - 1);
  cfg.data.path = "bench_step_" + model + ".tok";
  if (mpi.world_rank() == 0) {
    const int64_t n = int64_t(cfg.train.global_batch) * (steps + 2) * (cfg.model.seq_len + 1);
    std::vector<uint32_t> toks(n);
    for (int64_t i = 0; i < n; ++i) toks[i] = l2l::HashKeys(99, i) % data_vocab;
    l2l::Status s = l2l::data::WriteTokenFile(cfg.data.path, data_vocab, toks);
    if (!s.ok()) l2l::MpiRuntime::AbortJob(s.ToString(), 1);
  }
  MPI_Barrier(MPI_COMM_WORLD);

  std::vector<Row> rows;
  {
    l2l::MpiComm comm;
    for (auto mode : {l2l::config::ExecMode::kResident, l2l::config::ExecMode::kL2L}) {
      cfg.exec.mode = mode;
      auto t = l2l::train::Trainer::Create(cfg, &comm, world);
      if (!t.ok()) l2l::MpiRuntime::AbortJob(t.status().ToString(), 1);
      std::vector<double> st, tps, cs, gs, os;
      for (int s = 0; s <= steps; ++s) {
        auto r = (*t)->Step();
        if (!r.ok()) l2l::MpiRuntime::AbortJob(r.status().ToString(), 1);
        if (s == 0) continue;
        st.push_back(r->step_s);
        tps.push_back(r->tokens_per_s);
        cs.push_back(r->compute_s);
        gs.push_back(r->gather_wait_s);
        os.push_back(r->optimizer_wait_s);
      }
      rows.push_back({l2l::config::Name(mode), Median(st), Median(tps), Median(cs), Median(gs),
                      Median(os), (*t)->device().memory_stats().peak_bytes});
    }
  }
  if (mpi.world_rank() == 0) {
    std::printf(
        "bench_step: %s shape, %d blocks, %d ranks, global batch %d x %d tokens, "
        "median of %d steps, CPU backend, OMP/BLAS threads per rank %s\n",
        model.c_str(), cfg.model.layers, world, cfg.train.global_batch, cfg.model.seq_len, steps,
        std::getenv("OMP_NUM_THREADS") ? std::getenv("OMP_NUM_THREADS") : "default");
    std::printf(
        "| mode | step s | tokens/s | compute s | gather/comm wait s | optimizer wait s | "
        "device peak MiB | tokens/s vs resident |\n|---|---|---|---|---|---|---|---|\n");
    for (const Row& r : rows) {
      std::printf("| %s | %.3f | %.0f | %.3f | %.3f | %.3f | %.1f | %.2f |\n", r.mode.c_str(),
                  r.step_s, r.tokens_per_s, r.compute_s, r.gather_s, r.opt_s, r.peak / 1048576.0,
                  r.tokens_per_s / rows[0].tokens_per_s);
    }
  }
  return 0;
}
