// bench_kernels: how close the CPU kernels get to the BLAS they sit on, and
// what one BERT-base block costs.
//
//  1. GEMM GFLOP/s of l2l's linear path (LinearForward / LinearBackward, which
//     add the bias and bias-gradient work) against raw cblas_sgemm on the same
//     BERT-base shapes. The limit is raw sgemm: "ratio" = l2l / raw.
//  2. One BERT-base block (H=768, 12 heads, FFN=3072, post-norm, dropout 0.1)
//     BlockForward + BlockBackward (the backward recomputes the forward, as in
//     the L2L relay), in tokens/s and achieved GFLOP/s (4x the forward FLOPs).
// Both at 1 thread and at all threads (OpenMP and OpenBLAS set together).
// "cpu/wall" is process CPU time over wall time: the cores the run really got
// (on a shared machine it can stay near 1 at any thread count). With more
// threads than free cores, OMP_WAIT_POLICY=passive avoids spin-wait contention
// between OpenMP and OpenBLAS threads.
//
// Usage: bench_kernels [--tokens N ...] [--only gemm|block]   (default tokens: 2048 4096)
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "l2l/kernels/cpu.h"
#include "l2l/model/model.h"

namespace {

namespace k = l2l::kernels::cpu;
using Clock = std::chrono::steady_clock;

constexpr double kMinSeconds = 0.3;  // per measurement, after one warm-up
constexpr int kMinReps = 2;

void SetThreads(int n) {
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

struct Timing {
  double seconds;   // wall time per call
  double cpu_busy;  // process CPU time / wall time: the cores actually used
};

// Per call: one warm-up, then repeat until kMinSeconds and kMinReps.
Timing TimeIt(const std::function<void()>& fn) {
  fn();
  int reps = 0;
  const auto t0 = Clock::now();
  const std::clock_t c0 = std::clock();
  double elapsed = 0;
  while (reps < kMinReps || elapsed < kMinSeconds) {
    fn();
    ++reps;
    elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
  }
  const double cpu = static_cast<double>(std::clock() - c0) / CLOCKS_PER_SEC;
  return {elapsed / reps, cpu / elapsed};
}

std::vector<float> Random(int64_t n, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<float> v(n);
  for (auto& x : v) x = u(gen);
  return v;
}

struct LinearShape {
  const char* name;
  int64_t in, out;
};

// One row per (shape, pass): y = x·W (fwd), dx = dy·Wᵀ (bwd-data),
// dW += xᵀ·dy (bwd-weight, with db).
void BenchGemm(int threads, const std::vector<int64_t>& token_counts) {
  const LinearShape shapes[] = {{"attn.qkv", 768, 2304},
                                {"attn.proj", 768, 768},
                                {"mlp.fc1", 768, 3072},
                                {"mlp.fc2", 3072, 768}};
  for (int64_t n : token_counts) {
    for (const LinearShape& s : shapes) {
      const auto x = Random(n * s.in, 1), w = Random(s.in * s.out, 2), b = Random(s.out, 3);
      const auto dy = Random(n * s.out, 4);
      std::vector<float> y(n * s.out), dx(n * s.in), dw(s.in * s.out, 0.f), db(s.out, 0.f);
      const double flops = 2.0 * n * s.in * s.out;
      struct Pass {
        const char* pass;
        std::function<void()> l2l, raw;
        const char* blas;  // the raw call, for the table
      };
      const Pass passes[] = {
          {"fwd", [&] { k::LinearForward(x.data(), w.data(), b.data(), n, s.in, s.out, y.data()); },
           [&] {
             cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, s.out, s.in, 1.f, x.data(),
                         s.in, w.data(), s.out, 0.f, y.data(), s.out);
           },
           "NN"},
          {"bwd-data",
           [&] {
             k::LinearBackward<float>(x.data(), w.data(), dy.data(), n, s.in, s.out, dx.data(),
                                      nullptr, nullptr);
           },
           [&] {
             cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, s.in, s.out, 1.f, dy.data(),
                         s.out, w.data(), s.out, 0.f, dx.data(), s.in);
           },
           "NT"},
          {"bwd-weight",
           [&] {
             k::LinearBackward<float>(x.data(), w.data(), dy.data(), n, s.in, s.out, nullptr,
                                      dw.data(), db.data());
           },
           [&] {
             cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, s.in, s.out, n, 1.f, x.data(),
                         s.in, dy.data(), s.out, 1.f, dw.data(), s.out);
           },
           "TN"},
      };
      for (const Pass& p : passes) {
        const Timing t_l2l = TimeIt(p.l2l);
        const Timing t_raw = TimeIt(p.raw);
        const double g_l2l = flops / t_l2l.seconds * 1e-9, g_raw = flops / t_raw.seconds * 1e-9;
        std::printf(
            "%7d  %6lld  %-9s %-10s %2s  %5lld x %5lld x %5lld  %9.1f  %9.1f  %6.2f  %8.2f\n",
            threads, static_cast<long long>(n), s.name, p.pass, p.blas, static_cast<long long>(n),
            static_cast<long long>(s.in), static_cast<long long>(s.out), g_l2l, g_raw,
            g_l2l / g_raw, t_l2l.cpu_busy);
      }
    }
  }
}

void BenchBlock(int threads, int rows, int seq) {
  l2l::model::ModelDims d;
  d.arch = l2l::model::Arch::kBert;
  d.num_blocks = 12;
  d.hidden = 768;
  d.heads = 12;
  d.ffn = 3072;
  d.vocab = 30522;
  d.seq_len = seq;
  d.dropout = 0.1;
  d.norm_eps = 1e-12;
  d.gelu = l2l::kernels::Gelu::kErf;
  const int64_t N = int64_t{rows} * seq, H = d.hidden;
  const int64_t P = l2l::model::LayoutFor(d, l2l::model::LayerKind::kBlock).size_elems();
  std::vector<float> params(P), dparams(P, 0.f);
  l2l::model::InitParamRange(d, 1, 1, 0, P, params.data());
  const auto x = Random(N * H, 5), dy = Random(N * H, 6);
  std::vector<float> y(N * H), dx(N * H), ws(l2l::model::BlockWorkspaceElems(d, rows));
  std::vector<uint8_t> mask(N, 1);
  std::vector<uint64_t> keys(rows);
  for (int r = 0; r < rows; ++r) keys[r] = r;
  const l2l::model::StepContext ctx{
      .seed = 1, .step = 1, .layer = 1, .training = true, .sample_keys = keys.data()};
  const Timing t_fwd = TimeIt([&] {
    l2l::model::BlockForward(d, ctx, params.data(), x.data(), mask.data(), rows, y.data(),
                             ws.data());
  });
  const Timing t_bwd = TimeIt([&] {
    l2l::model::BlockBackward(d, ctx, params.data(), x.data(), mask.data(), rows, dy.data(),
                              dx.data(), dparams.data(), ws.data());
  });
  // Forward FLOPs: linears 2·N·(3H² + H² + 2·H·F), attention 4·N·S·H.
  const double fwd_flops =
      2.0 * N * (4.0 * H * H + 2.0 * H * d.ffn) + 4.0 * static_cast<double>(N) * seq * H;
  const double total = t_fwd.seconds + t_bwd.seconds;
  const double busy = (t_fwd.cpu_busy * t_fwd.seconds + t_bwd.cpu_busy * t_bwd.seconds) / total;
  std::printf("%7d  %4d x %4d  %10.1f  %10.1f  %10.1f  %12.0f  %9.1f  %8.2f\n", threads, rows, seq,
              t_fwd.seconds * 1e3, t_bwd.seconds * 1e3, total * 1e3, N / total,
              4 * fwd_flops / total * 1e-9, busy);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int64_t> tokens;
  bool gemm = true, block = true;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--tokens") == 0 && i + 1 < argc) {
      tokens.push_back(std::atoll(argv[++i]));
    } else if (std::strcmp(argv[i], "--only") == 0 && i + 1 < argc) {
      const std::string what = argv[++i];
      gemm = what == "gemm";
      block = what == "block";
    } else {
      std::fprintf(stderr, "usage: %s [--tokens N ...] [--only gemm|block]\n", argv[0]);
      return 2;
    }
  }
  if (tokens.empty()) tokens = {2048, 4096};
  const int all = omp_get_num_procs();
  std::vector<int> thread_counts = {1};
  if (all > 1) thread_counts.push_back(all);

  if (gemm) {
    std::printf(
        "GEMM: l2l linear path vs raw cblas_sgemm (fp32, row-major), GFLOP/s; "
        "limit = raw sgemm\n");
    std::printf("%7s  %6s  %-9s %-10s %2s  %-21s  %9s  %9s  %6s  %8s\n", "threads", "tokens",
                "layer", "pass", "op", "m x k x n", "l2l", "cblas", "ratio", "cpu/wall");
    for (int t : thread_counts) {
      SetThreads(t);
      BenchGemm(t, tokens);
    }
    std::printf("\n");
  }
  if (block) {
    std::printf(
        "BERT-base block (H=768, 12 heads, FFN=3072, post-norm, dropout 0.1), fp32; "
        "backward includes the forward recompute\n");
    std::printf("%7s  %-11s  %10s  %10s  %10s  %12s  %9s  %8s\n", "threads", "rows x seq", "fwd ms",
                "bwd ms", "fwd+bwd ms", "tokens/s", "GFLOP/s", "cpu/wall");
    for (int t : thread_counts) {
      SetThreads(t);
      BenchBlock(t, 4, 128);
    }
  }
  return 0;
}
