// The backend registry: each compiled-in backend builds its pieces; one that
// is not compiled in is refused with one line naming exec.device.
#include "l2l/train/backend.h"

#include <gtest/gtest.h>

#include <string>

#ifdef L2L_HAVE_CUDA
#include "l2l/device/gpu_test_env.h"
#endif

namespace l2l::train {
namespace {

model::ModelDims TinyDims() {
  model::ModelDims d;
  d.arch = model::Arch::kGpt2;
  d.num_blocks = 1;
  d.hidden = 16;
  d.heads = 2;
  d.ffn = 32;
  d.vocab = 20;
  d.seq_len = 8;
  d.max_positions = 8;
  return d;
}

TEST(Backend, CpuBuildsHostDeviceNoDeviceCommAndFp32Layers) {
  StatusOr<const Backend*> b = FindBackend(DeviceType::kCpu);
  ASSERT_TRUE(b.ok()) << b.status().message();
  EXPECT_EQ((*b)->type, DeviceType::kCpu);
  auto dev = (*b)->create_device(DeviceOptions{DeviceType::kCpu, 1 << 20, 0});
  ASSERT_TRUE(dev.ok()) << dev.status().message();
  EXPECT_EQ((*dev)->type(), DeviceType::kCpu);
  EXPECT_EQ((*dev)->memory_stats().limit_bytes, 1 << 20);
  MpiComm mpi;
  auto comm = (*b)->create_device_comm(mpi, **dev);
  ASSERT_TRUE(comm.ok());
  EXPECT_EQ(*comm, nullptr) << "the host communicator serves host memory";
  model::LayerExecOptions eo;
  auto exec = CreateLayerExec(dev->get(), TinyDims(), eo);
  ASSERT_TRUE(exec.ok()) << exec.status().message();
  EXPECT_EQ((*exec)->dtype(), DType::kF32);
  eo.dtype = DType::kBF16;
  exec = CreateLayerExec(dev->get(), TinyDims(), eo);
  EXPECT_EQ(exec.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(exec.status().message().find("exec.precision: bf16 needs exec.device: cuda"),
            std::string::npos)
      << exec.status().message();
  auto opt = (*b)->create_resident_optimizer(dev->get(), 1, 3, 1000);
  ASSERT_TRUE(opt.ok());
  EXPECT_EQ((*b)->resident_optimizer_device_bytes(3, 1000), 0);
}

#ifdef L2L_HAVE_CUDA
TEST(Backend, CudaBuildsTheCudaDevice) {
  L2L_SKIP_WITHOUT_GPU();
  auto dev = CreateDevice(DeviceOptions{DeviceType::kCuda, 1 << 20, 0});
  ASSERT_TRUE(dev.ok()) << dev.status().message();
  EXPECT_EQ((*dev)->type(), DeviceType::kCuda);
  EXPECT_EQ((*dev)->name().rfind("cuda:", 0), 0u) << (*dev)->name();
  EXPECT_EQ((*dev)->memory_stats().limit_bytes, 1 << 20);
  auto exec = CreateLayerExec(dev->get(), TinyDims(), model::LayerExecOptions{});
  ASSERT_TRUE(exec.ok()) << exec.status().message();
}
#else
TEST(Backend, CudaIsRefusedWithAClearMessageWhenNotBuilt) {
  auto dev = CreateDevice(DeviceOptions{DeviceType::kCuda, 0, 0});
  ASSERT_FALSE(dev.ok());
  EXPECT_EQ(dev.status().code(), StatusCode::kUnimplemented);
  EXPECT_NE(dev.status().message().find("exec.device: cuda is not available in this build"),
            std::string::npos)
      << dev.status().message();
}
#endif

}  // namespace
}  // namespace l2l::train
