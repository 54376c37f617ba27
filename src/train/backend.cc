// The registry of compute backends: the one place besides CMake that knows
// which were compiled in.
#include "l2l/train/backend.h"

namespace l2l::train {

StatusOr<const Backend*> FindBackend(DeviceType type) {
  static const Backend* const kBackends[] = {
      &CpuBackend(),
#ifdef L2L_HAVE_CUDA
      &CudaBackend(),
#endif
  };
  for (const Backend* b : kBackends) {
    if (b->type == type) return b;
  }
  return Unimplemented(std::string("exec.device: ") + DeviceTypeName(type) +
                       " is not available in this build of l2l (it was configured without the "
                       "CUDA toolkit, cuBLAS and NCCL; reconfigure with -DL2L_CUDA=ON on a "
                       "machine that has them); use exec.device: cpu");
}

StatusOr<std::unique_ptr<Device>> CreateDevice(const DeviceOptions& options) {
  ASSIGN_OR_RETURN(const Backend* b, FindBackend(options.type));
  return b->create_device(options);
}

StatusOr<std::unique_ptr<model::LayerExec>> CreateLayerExec(
    Device* device, const model::ModelDims& dims, const model::LayerExecOptions& options) {
  ASSIGN_OR_RETURN(const Backend* b, FindBackend(device->type()));
  return b->create_layer_exec(device, dims, options);
}

}  // namespace l2l::train
