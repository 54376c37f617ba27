// The CPU executor; the CUDA rows are in layer_exec_cuda.cc.
#include "l2l/model/layer_exec.h"

#include "l2l/kernels/cpu_ops.h"
#include "typed_exec.h"

namespace l2l::model {

StatusOr<std::unique_ptr<LayerExec>> CreateCpuLayerExec(const ModelDims& dims,
                                                        const LayerExecOptions& options) {
  RETURN_IF_ERROR(ValidateModelDims(dims));
  if (options.dtype != DType::kF32) {
    return InvalidArgument(std::string("exec.precision: ") + DTypeName(options.dtype) +
                           " needs exec.device: cuda; the CPU backend computes in fp32");
  }
  return std::unique_ptr<LayerExec>(
      std::make_unique<internal::TypedLayerExec<kernels::CpuOps<float>>>(dims, DType::kF32,
                                                                         kernels::CpuOps<float>{}));
}

}  // namespace l2l::model
