// gemm_rate: the bf16 GEMM rate of l2l::kernels::cuda::Gemm on BERT-large shapes,
// against raw cublasGemmEx in cuBLAS's default math mode on the same buffers.
// It is the denominator for MFU: a step's useful FLOPs over its time, divided
// by what the GEMMs it runs can do at best on this card.
//
//   gemm_rate [--tokens N] [--seq S] [--ms-per-shape T] [--json FILE] [--quick]
//
// Shapes (H = 1024, F = 4096, heads 16, head_dim 64, N tokens, S seq):
//   the 12 linear GEMMs of one post-norm BERT block (fwd NN, bwd-data NT,
//   bwd-weight TN with fp32 output and beta = 1, as LinearForward/Backward run
//   them), the two attention batched GEMMs (q·kᵀ, p·v), one MLM decoder chunk
//   (2048 x 30522 x 1024, kHeadLogitRows) and an 8192³ square for reference.
//
// Method (docs/.../METHOD.md of the device tool): random bf16 inputs in
// [-1, 1) (never zeros); each shape first runs once with beta = 0 into a
// poisoned (NaN) output and 32 sampled elements are compared with a float64
// reference (‖out − ref‖ / ‖ref‖; bf16 outputs < 1e-2, fp32 outputs < 1e-3);
// then 3 warm-ups and as many timed repetitions as fit in --ms-per-shape
// (10..500), each between two CUDA events; the median is reported. Every CUDA
// and cuBLAS return code is checked.
//
// Without a GPU it prints "L2L_GPU_TESTS_SKIPPED: <reason>" and exits 0.
// Exit 1: a failed CUDA/cuBLAS call or a failed numerical check.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "l2l/core/dtype.h"
#include "l2l/core/status.h"
#include "l2l/kernels/cuda.h"
#include "l2l/kernels/params.h"

namespace {

using l2l::kernels::Trans;
using l2l::kernels::cuda::bf16;
using l2l::kernels::cuda::CublasHandles;

#define CK(expr)                                                                    \
  do {                                                                              \
    const cudaError_t e_ = (expr);                                                  \
    if (e_ != cudaSuccess) {                                                        \
      std::fprintf(stderr, "gemm_rate: %s:%d: %s: %s\n", __FILE__, __LINE__, #expr, \
                   cudaGetErrorString(e_));                                         \
      std::exit(1);                                                                 \
    }                                                                               \
  } while (0)
#define CKB(expr)                                                                   \
  do {                                                                              \
    const cublasStatus_t s_ = (expr);                                               \
    if (s_ != CUBLAS_STATUS_SUCCESS) {                                              \
      std::fprintf(stderr, "gemm_rate: %s:%d: %s: %s\n", __FILE__, __LINE__, #expr, \
                   cublasGetStatusString(s_));                                      \
      std::exit(1);                                                                 \
    }                                                                               \
  } while (0)
#define CKS(expr)                                                                                 \
  do {                                                                                            \
    const ::l2l::Status st_ = (expr);                                                             \
    if (!st_.ok()) {                                                                              \
      std::fprintf(stderr, "gemm_rate: %s:%d: %s\n", __FILE__, __LINE__, st_.ToString().c_str()); \
      std::exit(1);                                                                               \
    }                                                                                             \
  } while (0)

struct Shape {
  std::string name;
  std::string group;  // "fwd", "dx", "dw", "attn", "head", "ref"
  Trans ta, tb;
  int64_t m, n, k, batch;
  bool out_f32;  // bf16 x bf16 -> fp32 (the dw GEMMs)
  float beta;    // timed beta (1 for the accumulating dw GEMMs)
};

double Flops(const Shape& s) { return 2.0 * s.m * s.n * s.k * s.batch; }

// Row-major leading dimensions as stored (cpu::Gemm's convention).
int64_t Lda(const Shape& s) { return s.ta == Trans::kYes ? s.m : s.k; }
int64_t Ldb(const Shape& s) { return s.tb == Trans::kYes ? s.k : s.n; }
int64_t Ldc(const Shape& s) { return s.n; }

std::vector<Shape> MakeShapes(int64_t N, int64_t S) {
  const int64_t H = 1024, F = 4096, heads = 16, hd = 64, V = 30522, chunk = 2048;
  const Trans n = Trans::kNo, t = Trans::kYes;
  struct Lin {
    const char* name;
    int64_t in, out;
  };
  const Lin lins[] = {{"qkv", H, 3 * H}, {"proj", H, H}, {"fc1", H, F}, {"fc2", F, H}};
  std::vector<Shape> v;
  for (const Lin& l : lins)
    v.push_back({std::string(l.name) + ".fwd", "fwd", n, n, N, l.out, l.in, 1, false, 0.0f});
  for (const Lin& l : lins)
    v.push_back({std::string(l.name) + ".dx", "dx", n, t, N, l.in, l.out, 1, false, 0.0f});
  for (const Lin& l : lins)
    v.push_back({std::string(l.name) + ".dw", "dw", t, n, l.in, l.out, N, 1, true, 1.0f});
  const int64_t b = (N / S) * heads;
  v.push_back({"attn.qk", "attn", n, t, S, S, hd, b, false, 0.0f});
  v.push_back({"attn.pv", "attn", n, n, S, hd, S, b, false, 0.0f});
  v.push_back({"decoder.fwd", "head", n, n, chunk, V, H, 1, false, 0.0f});
  v.push_back({"square8192", "ref", n, n, 8192, 8192, 8192, 1, false, 0.0f});
  return v;
}

uint64_t SplitMix(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Row-major C = op(A)·op(B) on cuBLAS's column-major API: Cᵀ = op(B)ᵀ·op(A)ᵀ.
void RawGemm(cublasHandle_t h, cudaStream_t stream, const Shape& s, const bf16* a, const bf16* b,
             void* c, float beta) {
  const float alpha = 1.0f;
  const cublasOperation_t ob = s.tb == Trans::kYes ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t oa = s.ta == Trans::kYes ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cudaDataType_t ct = s.out_f32 ? CUDA_R_32F : CUDA_R_16BF;
  (void)stream;  // bound once with the workspace (cublasSetStream would reset the workspace)
  if (s.batch == 1) {
    CKB(cublasGemmEx(h, ob, oa, (int)s.n, (int)s.m, (int)s.k, &alpha, b, CUDA_R_16BF, (int)Ldb(s),
                     a, CUDA_R_16BF, (int)Lda(s), &beta, c, ct, (int)Ldc(s), CUBLAS_COMPUTE_32F,
                     CUBLAS_GEMM_DEFAULT));
  } else {
    CKB(cublasGemmStridedBatchedEx(h, ob, oa, (int)s.n, (int)s.m, (int)s.k, &alpha, b, CUDA_R_16BF,
                                   (int)Ldb(s), s.k * s.n, a, CUDA_R_16BF, (int)Lda(s), s.m * s.k,
                                   &beta, c, ct, (int)Ldc(s), s.m * s.n, (int)s.batch,
                                   CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }
}

void L2lGemm(const CublasHandles& h, cudaStream_t stream, const Shape& s, const bf16* a,
             const bf16* b, void* c, float beta) {
  if (s.batch == 1) {
    if (s.out_f32) {
      CKS((l2l::kernels::cuda::Gemm<bf16, float>(h, stream, s.ta, s.tb, s.m, s.n, s.k, 1.0f, a,
                                                 Lda(s), b, Ldb(s), beta, static_cast<float*>(c),
                                                 Ldc(s))));
    } else {
      CKS((l2l::kernels::cuda::Gemm<bf16, bf16>(h, stream, s.ta, s.tb, s.m, s.n, s.k, 1.0f, a,
                                                Lda(s), b, Ldb(s), beta, static_cast<bf16*>(c),
                                                Ldc(s))));
    }
  } else {
    if (s.out_f32) {
      CKS((l2l::kernels::cuda::GemmStridedBatched<bf16, float>(
          h, stream, s.ta, s.tb, s.m, s.n, s.k, 1.0f, a, Lda(s), s.m * s.k, b, Ldb(s), s.k * s.n,
          beta, static_cast<float*>(c), Ldc(s), s.m * s.n, s.batch)));
    } else {
      CKS((l2l::kernels::cuda::GemmStridedBatched<bf16, bf16>(
          h, stream, s.ta, s.tb, s.m, s.n, s.k, 1.0f, a, Lda(s), s.m * s.k, b, Ldb(s), s.k * s.n,
          beta, static_cast<bf16*>(c), Ldc(s), s.m * s.n, s.batch)));
    }
  }
}

struct Result {
  double ms = 0, tflops = 0;
  int reps = 0;
};

template <typename Fn>
Result Time(cudaStream_t stream, double flops, double budget_ms, Fn&& fn) {
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  for (int i = 0; i < 3; ++i) fn();
  CK(cudaGetLastError());
  CK(cudaStreamSynchronize(stream));
  // One timed probe to size the repetitions.
  CK(cudaEventRecord(e0, stream));
  fn();
  CK(cudaEventRecord(e1, stream));
  CK(cudaEventSynchronize(e1));
  float probe = 0;
  CK(cudaEventElapsedTime(&probe, e0, e1));
  const int reps = std::clamp(static_cast<int>(budget_ms / std::max(probe, 1e-3f)), 10, 500);
  std::vector<cudaEvent_t> ev(2 * reps);
  for (auto& e : ev) CK(cudaEventCreate(&e));
  for (int r = 0; r < reps; ++r) {
    CK(cudaEventRecord(ev[2 * r], stream));
    fn();
    CK(cudaEventRecord(ev[2 * r + 1], stream));
  }
  CK(cudaStreamSynchronize(stream));
  CK(cudaGetLastError());
  std::vector<float> t(reps);
  for (int r = 0; r < reps; ++r) CK(cudaEventElapsedTime(&t[r], ev[2 * r], ev[2 * r + 1]));
  for (auto& e : ev) CK(cudaEventDestroy(e));
  CK(cudaEventDestroy(e0));
  CK(cudaEventDestroy(e1));
  std::sort(t.begin(), t.end());
  Result res;
  res.reps = reps;
  res.ms = reps % 2 ? t[reps / 2] : 0.5 * (t[reps / 2 - 1] + t[reps / 2]);
  res.tflops = flops / (res.ms * 1e-3) / 1e12;
  return res;
}

// ‖out − ref‖ / ‖ref‖ over 32 sampled output elements (float64 reference from
// the host copy of the inputs). Also fails on a NaN (unwritten) sample.
double SpotCheck(const Shape& s, const std::vector<uint16_t>& host, int64_t off_a, int64_t off_b,
                 const void* c_dev, uint64_t seed) {
  double num = 0, den = 0;
  for (int i = 0; i < 32; ++i) {
    const int64_t bi = static_cast<int64_t>(SplitMix(seed) % s.batch);
    const int64_t r = static_cast<int64_t>(SplitMix(seed) % s.m);
    const int64_t col = static_cast<int64_t>(SplitMix(seed) % s.n);
    const uint16_t* a = host.data() + off_a + bi * s.m * s.k;
    const uint16_t* b = host.data() + off_b + bi * s.k * s.n;
    double ref = 0;
    for (int64_t p = 0; p < s.k; ++p) {
      const double av = l2l::BF16ToF32(s.ta == Trans::kYes ? a[p * Lda(s) + r] : a[r * Lda(s) + p]);
      const double bv =
          l2l::BF16ToF32(s.tb == Trans::kYes ? b[col * Ldb(s) + p] : b[p * Ldb(s) + col]);
      ref += av * bv;
    }
    const int64_t ci = bi * s.m * s.n + r * Ldc(s) + col;
    double got;
    if (s.out_f32) {
      float v;
      CK(cudaMemcpy(&v, static_cast<const float*>(c_dev) + ci, sizeof v, cudaMemcpyDeviceToHost));
      got = v;
    } else {
      uint16_t v;
      CK(cudaMemcpy(&v, static_cast<const uint16_t*>(c_dev) + ci, sizeof v,
                    cudaMemcpyDeviceToHost));
      got = l2l::BF16ToF32(v);
    }
    if (std::isnan(got)) return NAN;
    num += (got - ref) * (got - ref);
    den += ref * ref;
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

}  // namespace

int main(int argc, char** argv) {
  int64_t tokens = 32768, seq = 512;
  double budget_ms = 200;
  std::string json_path;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "gemm_rate: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--tokens")
      tokens = std::atoll(next());
    else if (a == "--seq")
      seq = std::atoll(next());
    else if (a == "--ms-per-shape")
      budget_ms = std::atof(next());
    else if (a == "--json")
      json_path = next();
    else if (a == "--quick") {
      tokens = 8192;
      budget_ms = 50;
    } else {
      std::fprintf(stderr,
                   "usage: gemm_rate [--tokens N] [--seq S] [--ms-per-shape T] [--json FILE] "
                   "[--quick]\n");
      return 2;
    }
  }
  if (tokens <= 0 || seq <= 0 || tokens % seq != 0) {
    std::fprintf(stderr, "gemm_rate: --tokens must be a positive multiple of --seq\n");
    return 2;
  }

  int count = 0;
  const cudaError_t cerr = cudaGetDeviceCount(&count);
  if (cerr != cudaSuccess || count == 0) {
    std::printf("L2L_GPU_TESTS_SKIPPED: no usable CUDA device (%s)\n",
                cerr != cudaSuccess ? cudaGetErrorString(cerr) : "cudaGetDeviceCount = 0");
    return 0;
  }
  CK(cudaSetDevice(0));
  cudaDeviceProp prop{};
  CK(cudaGetDeviceProperties(&prop, 0));
  int drv = 0, rt = 0, cublas_ver = 0;
  CK(cudaDriverGetVersion(&drv));
  CK(cudaRuntimeGetVersion(&rt));

  const std::vector<Shape> shapes = MakeShapes(tokens, seq);
  int64_t max_a = 0, max_b = 0, max_c_bytes = 0;
  for (const Shape& s : shapes) {
    max_a = std::max(max_a, s.m * s.k * s.batch);
    max_b = std::max(max_b, s.k * s.n * s.batch);
    max_c_bytes = std::max(max_c_bytes, s.m * s.n * s.batch * (s.out_f32 ? 4 : 2));
  }
  // One pool of random bf16: A at offset 0, B at the end (they may overlap; only reads).
  const int64_t pool = std::max(max_a, max_b) + 4096;
  std::vector<uint16_t> host(pool);
  uint64_t st = 0x12345678;
  for (int64_t i = 0; i < pool; ++i) {
    const double u = (SplitMix(st) >> 11) * 0x1.0p-53;  // [0, 1)
    host[i] = l2l::F32ToBF16(static_cast<float>(2.0 * u - 1.0));
  }
  uint16_t* d_pool = nullptr;
  void* d_c = nullptr;
  CK(cudaMalloc(reinterpret_cast<void**>(&d_pool), pool * sizeof(uint16_t)));
  CK(cudaMalloc(&d_c, max_c_bytes));
  CK(cudaMemcpy(d_pool, host.data(), pool * sizeof(uint16_t), cudaMemcpyHostToDevice));

  cudaStream_t stream;
  CK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  auto handles_or = CublasHandles::Create();
  CKS(handles_or.status());
  const CublasHandles& handles = *handles_or;
  // The raw baseline: cuBLAS defaults (reduced-precision reduction allowed), same workspace size.
  cublasHandle_t raw;
  void* raw_ws = nullptr;
  CKB(cublasCreate(&raw));
  CKB(cublasGetVersion(raw, &cublas_ver));
  CK(cudaMalloc(&raw_ws, CublasHandles::kDefaultWorkspaceBytes));
  CKB(cublasSetStream(raw, stream));
  CKB(cublasSetWorkspace(raw, raw_ws, CublasHandles::kDefaultWorkspaceBytes));

  std::printf(
      "device: %s, cc %d.%d, %d SMs, %.1f GiB, L2 %d MiB; driver %d, runtime %d, cuBLAS %d\n",
      prop.name, prop.major, prop.minor, prop.multiProcessorCount,
      prop.totalGlobalMem / 1073741824.0, prop.l2CacheSize >> 20, drv, rt, cublas_ver);
  std::printf("tokens %" PRId64 " (seq %" PRId64 "), %.0f ms per shape and variant\n", tokens, seq,
              budget_ms);
  std::printf("%-12s %-4s %6s %6s %6s %5s %3s %9s %9s %9s %9s\n", "shape", "op", "m", "n", "k",
              "batch", "out", "l2l_ms", "l2l_TF/s", "raw_TF/s", "rel_err");

  FILE* json = json_path.empty() ? nullptr : std::fopen(json_path.c_str(), "w");
  if (!json_path.empty() && json == nullptr) {
    std::fprintf(stderr, "gemm_rate: cannot write %s\n", json_path.c_str());
    return 2;
  }
  bool bad = false;
  double sum_flops[2] = {0, 0}, sum_ms[2] = {0, 0};  // [0] block fwd, [1] block train step
  double raw_ms[2] = {0, 0};
  for (const Shape& s : shapes) {
    const int64_t off_a = 0, off_b = pool - s.k * s.n * s.batch;
    const bf16* a = reinterpret_cast<const bf16*>(d_pool + off_a);
    const bf16* b = reinterpret_cast<const bf16*>(d_pool + off_b);
    // Correctness: beta = 0 into a NaN-poisoned output.
    CK(cudaMemsetAsync(d_c, 0xff, s.m * s.n * s.batch * (s.out_f32 ? 4 : 2), stream));
    L2lGemm(handles, stream, s, a, b, d_c, 0.0f);
    CK(cudaStreamSynchronize(stream));
    const double err = SpotCheck(s, host, off_a, off_b, d_c, 0xabcdef ^ s.m ^ (s.n << 20));
    const double tol = s.out_f32 ? 1e-3 : 1e-2;
    const bool ok = std::isfinite(err) && err < tol;
    bad |= !ok;
    const double flops = Flops(s);
    const Result l =
        Time(stream, flops, budget_ms, [&] { L2lGemm(handles, stream, s, a, b, d_c, s.beta); });
    const Result r =
        Time(stream, flops, budget_ms, [&] { RawGemm(raw, stream, s, a, b, d_c, s.beta); });
    const char* op = s.ta == Trans::kYes ? "TN" : (s.tb == Trans::kYes ? "NT" : "NN");
    std::printf("%-12s %-4s %6" PRId64 " %6" PRId64 " %6" PRId64 " %5" PRId64
                " %3s %9.3f %9.1f %9.1f %9.2e%s\n",
                s.name.c_str(), op, s.m, s.n, s.k, s.batch, s.out_f32 ? "f32" : "bf16", l.ms,
                l.tflops, r.tflops, err, ok ? "" : "  <-- CHECK FAILED");
    std::fflush(stdout);
    if (json != nullptr) {
      std::fprintf(json,
                   "{\"shape\":\"%s\",\"group\":\"%s\",\"op\":\"%s\",\"m\":%" PRId64
                   ",\"n\":%" PRId64 ",\"k\":%" PRId64 ",\"batch\":%" PRId64
                   ",\"out\":\"%s\",\"l2l_ms\":%.5f,"
                   "\"l2l_tflops\":%.2f,\"l2l_reps\":%d,\"raw_ms\":%.5f,\"raw_tflops\":%.2f,"
                   "\"rel_err\":%.3e,\"ok\":%s,\"tokens\":%" PRId64 ",\"device\":\"%s\"}\n",
                   s.name.c_str(), s.group.c_str(), op, s.m, s.n, s.k, s.batch,
                   s.out_f32 ? "f32" : "bf16", l.ms, l.tflops, l.reps, r.ms, r.tflops, err,
                   ok ? "true" : "false", tokens, prop.name);
    }
    if (s.group == "fwd") {
      sum_flops[0] += flops, sum_ms[0] += l.ms, raw_ms[0] += r.ms;
      // A training step runs each forward twice (forward relay + recompute).
      sum_flops[1] += 2 * flops, sum_ms[1] += 2 * l.ms, raw_ms[1] += 2 * r.ms;
    } else if (s.group == "dx" || s.group == "dw") {
      sum_flops[1] += flops, sum_ms[1] += l.ms, raw_ms[1] += r.ms;
    }
  }
  const double fwd_rate = sum_flops[0] / (sum_ms[0] * 1e-3) / 1e12;
  const double step_rate = sum_flops[1] / (sum_ms[1] * 1e-3) / 1e12;
  const double raw_step = sum_flops[1] / (raw_ms[1] * 1e-3) / 1e12;
  std::printf("block linear GEMMs, forward only:           l2l %.1f TFLOP/s, raw %.1f\n", fwd_rate,
              sum_flops[0] / (raw_ms[0] * 1e-3) / 1e12);
  std::printf(
      "block linear GEMMs, 2 x fwd + dx + dw:      l2l %.1f TFLOP/s, raw %.1f  "
      "(MFU denominator)\n",
      step_rate, raw_step);
  std::printf("GEMM_RATE_SUMMARY device=\"%s\" tokens=%" PRId64
              " block_step_tflops=%.1f "
              "raw_block_step_tflops=%.1f checks=%s\n",
              prop.name, tokens, step_rate, raw_step, bad ? "FAILED" : "ok");
  if (json != nullptr) {
    std::fprintf(json,
                 "{\"summary\":true,\"block_fwd_tflops\":%.2f,\"block_step_tflops\":%.2f,"
                 "\"raw_block_step_tflops\":%.2f,\"tokens\":%" PRId64
                 ",\"device\":\"%s\","
                 "\"checks_ok\":%s}\n",
                 fwd_rate, step_rate, raw_step, tokens, prop.name, bad ? "false" : "true");
    std::fclose(json);
  }
  CKB(cublasDestroy(raw));
  CK(cudaFree(raw_ws));
  CK(cudaFree(d_c));
  CK(cudaFree(d_pool));
  CK(cudaStreamDestroy(stream));
  return bad ? 1 : 0;
}
