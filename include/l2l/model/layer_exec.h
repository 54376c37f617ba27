// LayerExec: the model's layers bound to one backend and compute dtype, for
// the relay (DESIGN §2: "forward/backward over a Device").
//
// The layer functions of model.h are templates over a kernel table; a
// LayerExec picks the row once (CPU fp32, CUDA fp32, CUDA bf16) and erases
// the types: activations and gathered parameters are `void*` in dtype(),
// parameter gradients are always fp32. Semantics of each call are those of
// the model.h function of the same name; pointers are in the device's memory
// (host memory on the CPU backend).
//
// Ordering: on the GPU every call enqueues work on the device's compute
// stream and returns; TakeLoss() synchronises that stream. On the CPU every
// call completes before it returns.
#pragma once

#include <cstdint>
#include <memory>

#include "l2l/core/dtype.h"
#include "l2l/core/status.h"
#include "l2l/device/device.h"
#include "l2l/model/model.h"

namespace l2l::model {

class LayerExec {
 public:
  virtual ~LayerExec() = default;

  // Storage dtype of activations and gathered parameters.
  virtual DType dtype() const = 0;
  size_t elem_bytes() const { return DTypeSizeBytes(dtype()); }
  // Workspace bytes for any layer of a `rows`-sequence micro-batch.
  virtual int64_t WorkspaceBytes(int rows) const = 0;
  // Device arena bytes the executor itself holds (the GPU loss slots).
  virtual int64_t device_bytes() const = 0;

  virtual void EmbeddingForward(const StepContext& ctx, const void* params, const int32_t* tokens,
                                const int32_t* token_types, int rows, void* out,
                                void* workspace) = 0;
  virtual void EmbeddingBackward(const StepContext& ctx, const void* params, const int32_t* tokens,
                                 const int32_t* token_types, int rows, const void* dout,
                                 float* dparams, void* workspace) = 0;
  virtual void BlockForward(const StepContext& ctx, const void* params, const void* x,
                            const uint8_t* attn_mask, int rows, void* y, void* workspace) = 0;
  virtual void BlockBackward(const StepContext& ctx, const void* params, const void* x,
                             const uint8_t* attn_mask, int rows, const void* dy, void* dx,
                             float* dparams, void* workspace) = 0;
  // The loss is added to totals that TakeLoss returns. embedding_params /
  // embedding_grads: layer 0's buffers, read (and accumulated into) for a
  // tied decoder; ignored otherwise (see model.h HeadForwardBackward).
  virtual void HeadForwardBackward(const StepContext& ctx, const void* params,
                                   const void* embedding_params, const void* x,
                                   const TargetRows& targets, int rows, double grad_scale, void* dx,
                                   float* dparams, float* embedding_grads, void* workspace) = 0;
  // Loss totals of the head calls since the last TakeLoss; synchronises.
  virtual HeadResult TakeLoss() = 0;
};

struct LayerExecOptions {
  DType dtype = DType::kF32;  // kBF16 needs a CUDA device
  int micro_batch = 1;        // rows per call (sizes the workspace)
  // Most head calls between two TakeLoss calls (GPU loss slots): a step's
  // micro-batches times ceil(micro_batch * seq_len / kHeadLogitRows).
  int max_head_calls_per_step = 1;
};

// The CPU executor (fp32; InvalidArgument for another dtype). The CUDA one is
// CreateCudaLayerExec (layer_exec_cuda.h); the engine picks either through
// its backend (train/backend.h). InvalidArgument for invalid dims.
StatusOr<std::unique_ptr<LayerExec>> CreateCpuLayerExec(const ModelDims& dims,
                                                        const LayerExecOptions& options);

}  // namespace l2l::model
