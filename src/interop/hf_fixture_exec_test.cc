// The transformers fixtures through the layer executors the engine runs
// (model::LayerExec): the CPU executor (fp32; pins this harness, runs with or
// without a GPU) and, with a GPU, the CUDA executors in fp32 and bf16. Same
// inputs and references as hf_fixture_test.cc; the loss and every parameter
// gradient are compared (max-norm relative error per tensor):
//   CPU fp32  loss 1e-5, gradients 1e-4 (as the layer functions);
//   CUDA fp32 loss 1e-4, gradients 1e-3 (true fp32 GEMMs, other summation orders);
//   CUDA bf16 loss 3e-2, gradients 1.5e-1 (activations and weights rounded to
//             8 mantissa bits at every stored value; a smoke check of the bf16 path).
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "fixture_util.h"
#include "l2l/device/gpu_test_env.h"
#include "l2l/device/test_buffers.h"
#include "l2l/model/layer_exec.h"
#include "l2l/train/backend.h"

namespace l2l::interop {
namespace {

using l2l::testing::Download;
using l2l::testing::Upload;
using l2l::testing::UploadRaw;
using l2l::testing::Zeros;
using testing::kRows;
using testing::kSeq;

struct Tolerance {
  double loss, grads;
};

void CheckOnDevice(const std::string& name, DeviceType type, DType dtype, Tolerance tol) {
  SCOPED_TRACE(name + " on " + (type == DeviceType::kCuda ? "cuda " : "cpu ") + DTypeName(dtype));
  const testing::Fixture fx = testing::Load(name);
  const testing::Expected x = testing::LoadExpected(name);
  const model::ModelDims& d = fx.d;
  DeviceOptions opt;
  opt.type = type;
  StatusOr<std::unique_ptr<Device>> dev_or = train::CreateDevice(opt);
  ASSERT_TRUE(dev_or.ok()) << dev_or.status().message();
  Device& dev = **dev_or;
  model::LayerExecOptions eo;
  eo.dtype = dtype;
  eo.micro_batch = kRows;
  eo.max_head_calls_per_step = 4;
  StatusOr<std::unique_ptr<model::LayerExec>> exec_or = train::CreateLayerExec(&dev, d, eo);
  ASSERT_TRUE(exec_or.ok()) << exec_or.status().message();
  model::LayerExec& e = **exec_or;
  StatusOr<DeviceBuffer> ws = dev.Allocate(e.WorkspaceBytes(kRows), "workspace");
  ASSERT_TRUE(ws.ok());

  const int L = d.num_blocks, head = L + 1;
  const int64_t n = int64_t{kRows} * kSeq * d.hidden;
  std::vector<DeviceBuffer> params, grads, act;
  for (const auto& p : fx.params) {
    params.push_back(Upload(dev, p, dtype));
    grads.push_back(Zeros(dev, p.size()));
  }
  for (int l = 0; l <= head; ++l) act.push_back(Upload(dev, std::vector<float>(n), dtype));
  DeviceBuffer dy = Upload(dev, std::vector<float>(n), dtype);
  DeviceBuffer dx = Upload(dev, std::vector<float>(n), dtype);
  DeviceBuffer ids = UploadRaw(dev, x.ids), types = UploadRaw(dev, x.types),
               mask = UploadRaw(dev, x.mask);
  std::vector<int32_t> rows(x.targets.size()), row_targets(x.targets.size());
  StatusOr<int64_t> m = model::CompactTargets(x.targets.data(), x.targets.size(), d.vocab,
                                              rows.data(), row_targets.data());
  ASSERT_TRUE(m.ok());
  DeviceBuffer drows = UploadRaw(dev, rows), dtargets = UploadRaw(dev, row_targets);

  const model::StepContext ctx{
      .seed = 0, .step = 0, .layer = 0, .training = false, .sample_keys = nullptr};
  e.EmbeddingForward(ctx, params[0].data(), ids.as<int32_t>(), types.as<int32_t>(), kRows,
                     act[1].data(), ws->data());
  for (int l = 1; l <= L; ++l) {
    e.BlockForward(ctx, params[l].data(), act[l].data(), mask.as<uint8_t>(), kRows,
                   act[l + 1].data(), ws->data());
  }
  e.HeadForwardBackward(ctx, params[head].data(), params[0].data(), act[head].data(),
                        model::TargetRows{drows.as<int32_t>(), dtargets.as<int32_t>(), *m}, kRows,
                        1.0 / static_cast<double>(*m), dy.data(), grads[head].as<float>(),
                        grads[0].as<float>(), ws->data());
  const model::HeadResult loss = e.TakeLoss();
  for (int l = L; l >= 1; --l) {
    e.BlockBackward(ctx, params[l].data(), act[l].data(), mask.as<uint8_t>(), kRows, dy.data(),
                    dx.data(), grads[l].as<float>(), ws->data());
    std::swap(dx, dy);
  }
  e.EmbeddingBackward(ctx, params[0].data(), ids.as<int32_t>(), types.as<int32_t>(), kRows,
                      dy.data(), grads[0].as<float>(), ws->data());

  ASSERT_EQ(loss.count, x.target_count);
  EXPECT_LT(std::abs(loss.loss_sum / loss.count - x.loss), tol.loss * x.loss) << "loss";
  std::vector<std::vector<float>> host;
  for (size_t l = 0; l < grads.size(); ++l) {
    host.push_back(Download(dev, grads[l], fx.params[l].size(), DType::kF32));
  }
  testing::ExpectGradientsMatch(d, *x.file, host, tol.grads);
}

void CheckAll(DeviceType type, DType dtype, Tolerance tol) {
  for (const std::string& name : testing::FixtureNames()) CheckOnDevice(name, type, dtype, tol);
}

TEST(TransformersFixturesExec, CpuExecutorFp32) {
  CheckAll(DeviceType::kCpu, DType::kF32, {1e-5, 1e-4});
}
TEST(TransformersFixturesExec, CudaExecutorFp32) {
  L2L_SKIP_WITHOUT_GPU();
  CheckAll(DeviceType::kCuda, DType::kF32, {1e-4, 1e-3});
}
TEST(TransformersFixturesExec, CudaExecutorBf16) {
  L2L_SKIP_WITHOUT_GPU();
  CheckAll(DeviceType::kCuda, DType::kBF16, {3e-2, 1.5e-1});
}

}  // namespace
}  // namespace l2l::interop
