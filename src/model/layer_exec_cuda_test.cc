// The CUDA layer executor against the CPU one, layer by layer: embedding,
// block and head, forward and backward, for BERT (post-norm, padding mask,
// tied decoder), GPT-2 (pre-norm, causal, tied) and Llama (RMSNorm, rotary
// embeddings with llama3 scaling, grouped-query attention with q/k/v biases,
// SwiGLU; untied and tied), dropout on. Both run through the
// same code below, which talks only to the Device and LayerExec interfaces.
// Tolerances (relative L2 norm of the difference, per tensor): fp32 1e-4
// (true fp32 GEMMs, no TF32; the sums differ only in order); bf16 4e-2
// (activations and parameters rounded to 8 bits of mantissa at every
// stored value). Skips when no GPU is visible.
#include "l2l/model/layer_exec_cuda.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "l2l/core/dtype.h"
#include "l2l/device/cpu_device.h"
#include "l2l/device/gpu_test_env.h"
#include "l2l/device/test_buffers.h"
#include "l2l/model/layer_exec.h"

namespace l2l::model {
namespace {

// The executor for `dev`'s backend (the engine picks through train/backend.h,
// a module above this one).
StatusOr<std::unique_ptr<LayerExec>> CreateLayerExec(Device* dev, const ModelDims& d,
                                                     const LayerExecOptions& eo) {
  if (dev->type() == DeviceType::kCuda) {
    return CreateCudaLayerExec(static_cast<CudaDevice*>(dev), d, eo);
  }
  return CreateCpuLayerExec(d, eo);
}
StatusOr<std::unique_ptr<Device>> CreateDevice(const DeviceOptions& o) {
  if (o.type == DeviceType::kCuda) {
    ASSIGN_OR_RETURN(std::unique_ptr<CudaDevice> dev, CudaDevice::Create(o));
    return std::unique_ptr<Device>(std::move(dev));
  }
  return std::unique_ptr<Device>(std::make_unique<CpuDevice>(o.memory_limit_bytes));
}

struct Inputs {
  ModelDims d;
  int rows = 2;
  std::vector<float> emb_params, block_params, head_params;
  std::vector<float> x, dy;  // (rows, S, H)
  std::vector<int32_t> tokens, types, targets;
  std::vector<uint8_t> mask;
  std::vector<uint64_t> keys;
  std::vector<int32_t> positions;  // (rows, S) when packed, else empty
};

struct Outputs {
  std::vector<float> emb_out, emb_grad, block_y, block_dx, block_grad, head_dx, head_grad;
  std::vector<float> tied_grad;  // layer 0's gradient after the head added its decoder's
  double loss_sum = 0;
  int64_t count = 0;
};

ModelDims Dims(Arch arch, bool tied) {
  ModelDims d;
  d.arch = arch;
  d.tie_embeddings = tied;
  d.num_blocks = 1;
  d.hidden = 64;
  d.heads = 4;
  d.ffn = 128;
  d.vocab = 50;
  d.seq_len = 32;
  d.max_positions = 40;
  d.dropout = 0.1;
  d.norm_eps = arch == Arch::kBert ? 1e-12 : 1e-5;
  d.gelu = arch == Arch::kBert ? kernels::Gelu::kErf : kernels::Gelu::kTanh;
  if (arch == Arch::kLlama) {
    d.kv_heads = 2;
    d.attention_bias = true;
    d.rope.theta = 500000.0;
    d.rope.scaling = kernels::RopeScaling::kLlama3;
    d.rope.factor = 8.0;
    d.rope.original_max_positions = 64;
  }
  return d;
}

struct Case {
  Arch arch;
  bool tied;
  // Causal only: each row holds two documents (attention within, positions
  // restarting at the second), as data.sampling: packed makes them.
  bool packed = false;
};

std::vector<float> Params(const ModelDims& d, int layer, std::mt19937& rng) {
  const ParamLayout l = LayoutForLayer(d, layer);
  std::vector<float> p(l.size_elems());
  InitParamRange(d, layer, 7, 0, l.size_elems(), p.data());
  // Non-trivial gains and biases: perturb every tensor element a little.
  std::normal_distribution<float> n(0.0f, 0.05f);
  for (const TensorSpec& t : l.tensors()) {
    for (int64_t i = 0; i < t.shape.num_elements(); ++i) p[t.offset_elems + i] += n(rng);
  }
  return p;
}

Inputs MakeInputs(const Case& c) {
  Inputs in;
  in.d = Dims(c.arch, c.tied);
  const ModelDims& d = in.d;
  const bool causal = IsCausal(d);
  std::mt19937 rng(11 + static_cast<int>(c.arch));
  in.emb_params = Params(d, 0, rng);
  in.block_params = Params(d, 1, rng);
  in.head_params = Params(d, 2, rng);
  const int64_t cells = int64_t{in.rows} * d.seq_len, n = cells * d.hidden;
  std::normal_distribution<float> g(0.0f, 1.0f);
  in.x.resize(n);
  in.dy.resize(n);
  for (auto& v : in.x) v = g(rng);
  for (auto& v : in.dy) v = 0.1f * g(rng);
  std::uniform_int_distribution<int32_t> tok(0, d.vocab - 1), typ(0, 1), coin(0, 3);
  for (int64_t i = 0; i < cells; ++i) {
    in.tokens.push_back(tok(rng));
    in.types.push_back(typ(rng));
    // BERT: ~1/4 of tokens carry a target; GPT: every token.
    in.targets.push_back(causal || coin(rng) == 0 ? tok(rng) : kNoTarget);
    // Last 5 tokens of row 1 are padding (BERT only).
    in.mask.push_back(!causal && i >= cells - 5 ? 0 : 1);
  }
  in.keys = {101, 202};
  if (c.packed) {
    for (int r = 0; r < in.rows; ++r) {
      const int second = 7 + 9 * r;  // the second document's first token in row r
      in.mask[static_cast<size_t>(r) * d.seq_len] |= kMaskDocStart;
      in.mask[static_cast<size_t>(r) * d.seq_len + second] |= kMaskDocStart;
      for (int t = 0; t < d.seq_len; ++t) in.positions.push_back(t < second ? t : t - second);
    }
  }
  return in;
}

using testing::Download;
using testing::Upload;
using testing::UploadRaw;
using testing::Zeros;

Outputs RunLayers(Device& dev, const Inputs& in, DType dtype) {
  const ModelDims& d = in.d;
  LayerExecOptions eo;
  eo.dtype = dtype;
  eo.micro_batch = in.rows;
  eo.max_head_calls_per_step = 4;
  StatusOr<std::unique_ptr<LayerExec>> exec = CreateLayerExec(&dev, d, eo);
  L2L_CHECK(exec.ok()) << exec.status().message();
  LayerExec& e = **exec;
  StatusOr<DeviceBuffer> ws = dev.Allocate(e.WorkspaceBytes(in.rows), "workspace");
  L2L_CHECK(ws.ok());
  const size_t n = in.x.size();
  DeviceBuffer ep = Upload(dev, in.emb_params, dtype), bp = Upload(dev, in.block_params, dtype),
               hp = Upload(dev, in.head_params, dtype);
  DeviceBuffer x = Upload(dev, in.x, dtype), dy = Upload(dev, in.dy, dtype);
  DeviceBuffer out = Upload(dev, std::vector<float>(n), dtype),
               dx = Upload(dev, std::vector<float>(n), dtype);
  DeviceBuffer tokens = UploadRaw(dev, in.tokens), types = UploadRaw(dev, in.types),
               mask = UploadRaw(dev, in.mask), keys = UploadRaw(dev, in.keys);
  DeviceBuffer positions = in.positions.empty() ? DeviceBuffer() : UploadRaw(dev, in.positions);
  std::vector<int32_t> rows(in.targets.size()), row_targets(in.targets.size());
  StatusOr<int64_t> m = CompactTargets(in.targets.data(), in.targets.size(), d.vocab, rows.data(),
                                       row_targets.data());
  L2L_CHECK(m.ok());
  DeviceBuffer drows = UploadRaw(dev, rows), dtargets = UploadRaw(dev, row_targets);
  DeviceBuffer eg = Zeros(dev, in.emb_params.size()), bg = Zeros(dev, in.block_params.size()),
               hg = Zeros(dev, in.head_params.size());

  Outputs o;
  StepContext ctx{
      .seed = 3, .step = 5, .layer = 0, .training = true, .sample_keys = keys.as<uint64_t>()};
  ctx.positions = in.positions.empty() ? nullptr : positions.as<int32_t>();
  e.EmbeddingForward(ctx, ep.data(), tokens.as<int32_t>(), types.as<int32_t>(), in.rows, out.data(),
                     ws->data());
  o.emb_out = Download(dev, out, n, dtype);
  e.EmbeddingBackward(ctx, ep.data(), tokens.as<int32_t>(), types.as<int32_t>(), in.rows, dy.data(),
                      eg.as<float>(), ws->data());
  o.emb_grad = Download(dev, eg, in.emb_params.size(), DType::kF32);

  ctx.layer = 1;
  e.BlockForward(ctx, bp.data(), x.data(), mask.as<uint8_t>(), in.rows, out.data(), ws->data());
  o.block_y = Download(dev, out, n, dtype);
  e.BlockBackward(ctx, bp.data(), x.data(), mask.as<uint8_t>(), in.rows, dy.data(), dx.data(),
                  bg.as<float>(), ws->data());
  o.block_dx = Download(dev, dx, n, dtype);
  o.block_grad = Download(dev, bg, in.block_params.size(), DType::kF32);

  ctx.layer = 2;
  e.HeadForwardBackward(ctx, hp.data(), ep.data(), x.data(),
                        TargetRows{drows.as<int32_t>(), dtargets.as<int32_t>(), *m}, in.rows,
                        1.0 / static_cast<double>(*m), dx.data(), hg.as<float>(), eg.as<float>(),
                        ws->data());
  const HeadResult loss = e.TakeLoss();
  o.loss_sum = loss.loss_sum;
  o.count = loss.count;
  o.head_dx = Download(dev, dx, n, dtype);
  o.head_grad = Download(dev, hg, in.head_params.size(), DType::kF32);
  o.tied_grad = Download(dev, eg, in.emb_params.size(), DType::kF32);
  return o;
}

double RelErr(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double diff = static_cast<double>(got[i]) - want[i];
    num += diff * diff;
    den += static_cast<double>(want[i]) * want[i];
  }
  return den == 0 ? std::sqrt(num) : std::sqrt(num / den);
}

void Compare(const Case& c, DType dtype, double tol) {
  L2L_SKIP_WITHOUT_GPU();
  const Inputs in = MakeInputs(c);
  DeviceOptions cpu_opt, gpu_opt;
  gpu_opt.type = DeviceType::kCuda;
  auto cpu = CreateDevice(cpu_opt);
  auto gpu = CreateDevice(gpu_opt);
  ASSERT_TRUE(cpu.ok() && gpu.ok()) << gpu.status().ToString();
  const Outputs want = RunLayers(**cpu, in, DType::kF32);
  const Outputs got = RunLayers(**gpu, in, dtype);
  const std::string what =
      std::string(ArchName(c.arch)) + (c.tied ? " tied" : "") + (c.packed ? " packed" : "");
  EXPECT_EQ(got.count, want.count) << what;
  EXPECT_LE(std::abs(got.loss_sum - want.loss_sum), tol * std::abs(want.loss_sum)) << what;
  const std::pair<const char*, std::pair<const std::vector<float>*, const std::vector<float>*>>
      cases[] = {{"embedding out", {&got.emb_out, &want.emb_out}},
                 {"embedding grad", {&got.emb_grad, &want.emb_grad}},
                 {"block y", {&got.block_y, &want.block_y}},
                 {"block dx", {&got.block_dx, &want.block_dx}},
                 {"block grad", {&got.block_grad, &want.block_grad}},
                 {"head dx", {&got.head_dx, &want.head_dx}},
                 {"head grad", {&got.head_grad, &want.head_grad}},
                 {"embedding grad after the head", {&got.tied_grad, &want.tied_grad}}};
  for (const auto& [name, pair] : cases) {
    const double err = RelErr(*pair.first, *pair.second);
    EXPECT_LE(err, tol) << what << " " << name << " (" << DTypeName(dtype) << ")";
    std::printf("%s %s %s: relative error %.3g\n", what.c_str(), DTypeName(dtype), name, err);
  }
}

TEST(CudaLayerExec, BertFp32MatchesCpu) { Compare({Arch::kBert, true}, DType::kF32, 1e-4); }
TEST(CudaLayerExec, Gpt2Fp32MatchesCpu) { Compare({Arch::kGpt2, true}, DType::kF32, 1e-4); }
TEST(CudaLayerExec, LlamaFp32MatchesCpu) { Compare({Arch::kLlama, false}, DType::kF32, 1e-4); }
TEST(CudaLayerExec, LlamaTiedFp32MatchesCpu) { Compare({Arch::kLlama, true}, DType::kF32, 1e-4); }
TEST(CudaLayerExec, Gpt2PackedFp32MatchesCpu) {
  Compare({Arch::kGpt2, false, true}, DType::kF32, 1e-4);
}
TEST(CudaLayerExec, LlamaPackedFp32MatchesCpu) {
  Compare({Arch::kLlama, false, true}, DType::kF32, 1e-4);
}
TEST(CudaLayerExec, BertBf16NearCpu) { Compare({Arch::kBert, true}, DType::kBF16, 4e-2); }
TEST(CudaLayerExec, Gpt2Bf16NearCpu) { Compare({Arch::kGpt2, true}, DType::kBF16, 4e-2); }
TEST(CudaLayerExec, LlamaBf16NearCpu) { Compare({Arch::kLlama, false}, DType::kBF16, 4e-2); }

// The runner above on the CPU executor against the model.h functions: pins
// the harness itself (and the CPU executor), with or without a GPU.
TEST(CudaLayerExec, CpuExecutorMatchesModelFunctions) {
  for (const Case& c : {Case{Arch::kBert, true}, Case{Arch::kGpt2, false}, Case{Arch::kLlama, true},
                        Case{Arch::kLlama, false, true}}) {
    const Inputs in = MakeInputs(c);
    DeviceOptions cpu_opt;
    auto cpu = CreateDevice(cpu_opt);
    ASSERT_TRUE(cpu.ok());
    const Outputs got = RunLayers(**cpu, in, DType::kF32);
    const ModelDims& d = in.d;
    StepContext ctx{
        .seed = 3, .step = 5, .layer = 1, .training = true, .sample_keys = in.keys.data()};
    ctx.positions = in.positions.empty() ? nullptr : in.positions.data();
    std::vector<float> ws(BlockWorkspaceElems(d, in.rows)), y(in.x.size());
    BlockForward<float>(d, ctx, in.block_params.data(), in.x.data(), in.mask.data(), in.rows,
                        y.data(), ws.data());
    EXPECT_EQ(std::memcmp(y.data(), got.block_y.data(), y.size() * sizeof(float)), 0);
    std::vector<float> hws(HeadWorkspaceElems(d, in.rows)), dx(in.x.size()),
        g(in.head_params.size(), 0.0f);
    int64_t m = 0;
    for (int32_t t : in.targets) m += t != kNoTarget;
    std::vector<float> eg(in.emb_params.size(), 0.0f);
    const HeadResult r = HeadForwardBackward<float>(
        d,
        StepContext{
            .seed = 3, .step = 5, .layer = 2, .training = true, .sample_keys = in.keys.data()},
        in.head_params.data(), in.emb_params.data(), in.x.data(), in.targets.data(), in.rows,
        1.0 / m, dx.data(), g.data(), eg.data(), hws.data());
    EXPECT_EQ(r.loss_sum, got.loss_sum);
    EXPECT_EQ(r.count, got.count);
    EXPECT_EQ(std::memcmp(g.data(), got.head_grad.data(), g.size() * sizeof(float)), 0);
  }
}

TEST(CudaLayerExec, CpuRefusesBf16) {
  DeviceOptions cpu_opt;
  auto cpu = CreateDevice(cpu_opt);
  ASSERT_TRUE(cpu.ok());
  LayerExecOptions eo;
  eo.dtype = DType::kBF16;
  auto e = CreateLayerExec(cpu->get(), Dims(Arch::kBert, true), eo);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(e.status().message().find("exec.precision"), std::string::npos);
}

}  // namespace
}  // namespace l2l::model
