// The CUDA rows of the layer executor (builds with the CUDA backend only):
// CudaOps<float> and CudaOps<bf16> on the device's compute stream, with one
// cuBLAS handle and the GPU loss slots.
#pragma once

#include <memory>

#include "l2l/device/cuda_device.h"
#include "l2l/model/layer_exec.h"

namespace l2l::model {

// options.dtype kF32 or kBF16 (InvalidArgument otherwise, or for invalid
// dims). `device` outlives the executor; its cuBLAS handle and loss slots
// are allocated from it.
StatusOr<std::unique_ptr<LayerExec>> CreateCudaLayerExec(CudaDevice* device, const ModelDims& dims,
                                                         const LayerExecOptions& options);

}  // namespace l2l::model
