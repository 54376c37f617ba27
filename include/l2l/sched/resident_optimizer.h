// ResidentOptimizer: AdamW and gradient norms on the DEVICE's memory, for the
// `resident` baseline (everything on the device). One CPU implementation
// (here) and one CUDA one (resident_optimizer_cuda.h); the engine picks
// through its backend (train/backend.h).
//
// CPU: AdamW runs on the optimizer threads (chunked, the eps::OptimizerQueue),
// the norm is kernels::SumSquares: bitwise what the EPS computes for the same
// shard, so l2l and resident agree bitwise on the CPU backend.
// CUDA: AdamW is kernels::cuda::AdamWUpdate (bitwise the CPU update) on the
// compute stream; the norm is kernels::cuda::SumSquares (double, fixed order,
// but a different order from the CPU's).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "l2l/core/dtype.h"
#include "l2l/core/status.h"
#include "l2l/device/device.h"
#include "l2l/eps/partition.h"
#include "l2l/kernels/adamw.h"

namespace l2l::sched {

class ResidentOptimizer {
 public:
  virtual ~ResidentOptimizer() = default;
  // Starts Σ x[i]² of n device floats (in double) as layer `layer`'s norm;
  // x must stay unchanged until TakeSumSquares.
  virtual void SumSquares(int layer, const float* x, int64_t n) = 0;
  // Every layer's sum since the last call (0 for layers without one); blocks
  // until they are known.
  virtual std::vector<double> TakeSumSquares() = 0;
  // Queues the update of layer `layer` (n elements; device arrays), without
  // weight decay on the element ranges `no_decay` (eps::ForEachDecayRun).
  // With a bf16 compute dtype `compute_copy` (n bf16, nullable) receives the
  // updated weights rounded to bf16; with fp32 it must be null (the master is
  // used).
  virtual void Update(int layer, const kernels::AdamWParams& hp,
                      const std::vector<eps::Shard>& no_decay, int64_t n, float* p, const float* g,
                      float* m, float* v, void* compute_copy) = 0;
  // Blocks until every queued update is done.
  virtual void WaitAll() = 0;
  // Writes the bf16 rounding of n device floats (initialisation, loads).
  virtual void ToBF16(const float* x, int64_t n, void* y) = 0;
  // Seconds blocked in WaitAll since the last call.
  virtual double TakeWaitSeconds() = 0;
};

// The CPU optimizer: AdamW on `optimizer_threads` threads; no device memory.
std::unique_ptr<ResidentOptimizer> CreateCpuResidentOptimizer(int optimizer_threads,
                                                              int num_layers);

}  // namespace l2l::sched
