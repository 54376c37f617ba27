// The one place that knows which device backends were compiled in.
#include <memory>

#include "l2l/device/cpu_device.h"
#include "l2l/device/device.h"

namespace l2l {

StatusOr<std::unique_ptr<Device>> CreateDevice(const DeviceOptions& options) {
  switch (options.type) {
    case DeviceType::kCpu:
      return std::unique_ptr<Device>(std::make_unique<CpuDevice>(options.memory_limit_bytes));
    case DeviceType::kCuda:
      // The CUDA backend (CudaDevice, cuBLAS kernels, NCCL) is tracked as its
      // own work item; this build runs the CPU reference backend only.
      return Unimplemented(
          "exec.device: cuda is not available in this build of l2l (the CUDA backend is not "
          "built yet); use exec.device: cpu");
  }
  return InvalidArgument("unknown device type");
}

}  // namespace l2l
