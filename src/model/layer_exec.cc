// The layer executor factory: the CPU row here, the CUDA rows in
// layer_exec_cuda.cc (built only with the CUDA backend).
#include "l2l/model/layer_exec.h"

#include "l2l/kernels/cpu_ops.h"
#include "typed_exec.h"

namespace l2l::model {

#ifdef L2L_HAVE_CUDA
// layer_exec_cuda.cc
StatusOr<std::unique_ptr<LayerExec>> CreateCudaLayerExec(Device* device, const ModelDims& dims,
                                                         const LayerExecOptions& options);
#endif

StatusOr<std::unique_ptr<LayerExec>> CreateLayerExec(Device* device, const ModelDims& dims,
                                                     const LayerExecOptions& options) {
  RETURN_IF_ERROR(ValidateModelDims(dims));
  switch (device->type()) {
    case DeviceType::kCpu:
      if (options.dtype != DType::kF32) {
        return InvalidArgument(std::string("exec.precision: ") + DTypeName(options.dtype) +
                               " needs exec.device: cuda; the CPU backend computes in fp32");
      }
      return std::unique_ptr<LayerExec>(
          std::make_unique<internal::TypedLayerExec<kernels::CpuOps<float>>>(
              dims, DType::kF32, kernels::CpuOps<float>{}));
    case DeviceType::kCuda:
#ifdef L2L_HAVE_CUDA
      return CreateCudaLayerExec(device, dims, options);
#else
      return Unimplemented("exec.device: cuda is not available in this build of l2l");
#endif
  }
  return InvalidArgument("unknown device type");
}

}  // namespace l2l::model
