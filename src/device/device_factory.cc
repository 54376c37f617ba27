// The one place that knows which device backends were compiled in.
#include <memory>

#include "l2l/device/cpu_device.h"
#include "l2l/device/device.h"
#ifdef L2L_HAVE_CUDA
#include "l2l/device/cuda_device.h"
#endif

namespace l2l {

StatusOr<std::unique_ptr<Device>> CreateDevice(const DeviceOptions& options) {
  switch (options.type) {
    case DeviceType::kCpu:
      return std::unique_ptr<Device>(std::make_unique<CpuDevice>(options.memory_limit_bytes));
    case DeviceType::kCuda: {
#ifdef L2L_HAVE_CUDA
      // GPU local_rank % visible GPUs; FailedPrecondition when none is visible.
      ASSIGN_OR_RETURN(std::unique_ptr<CudaDevice> dev, CudaDevice::Create(options));
      return std::unique_ptr<Device>(std::move(dev));
#else
      return Unimplemented(
          "exec.device: cuda is not available in this build of l2l (it was configured without "
          "the CUDA toolkit, cuBLAS and NCCL; reconfigure with -DL2L_CUDA=ON on a machine that "
          "has them); use exec.device: cpu");
#endif
    }
  }
  return InvalidArgument("unknown device type");
}

}  // namespace l2l
