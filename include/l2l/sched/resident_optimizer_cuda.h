// The CUDA resident optimizer (builds with the CUDA backend only): AdamW is
// kernels::cuda::AdamWUpdate (bitwise the CPU update) on the compute stream;
// the norm is kernels::cuda::SumSquares.
#pragma once

#include <cstdint>
#include <memory>

#include "l2l/device/cuda_device.h"
#include "l2l/sched/resident_optimizer.h"

namespace l2l::sched {

// Device arena bytes it allocates: norm scratch and one result per layer.
int64_t CudaResidentOptimizerDeviceBytes(int num_layers, int64_t max_elems);

// `max_elems`: the largest n SumSquares will see (sizes the scratch).
// `device` outlives the optimizer.
StatusOr<std::unique_ptr<ResidentOptimizer>> CreateCudaResidentOptimizer(CudaDevice* device,
                                                                         int num_layers,
                                                                         int64_t max_elems);

}  // namespace l2l::sched
