// TypedLayerExec<Ops>: a LayerExec over one row of the kernel table. Shared
// by the CPU executor (layer_exec.cc) and the CUDA one (layer_exec_cuda.cc).
#pragma once

#include <algorithm>
#include <type_traits>
#include <utility>

#include "block_impl.h"
#include "embedding_impl.h"
#include "head_impl.h"
#include "l2l/model/layer_exec.h"

namespace l2l::model::internal {

template <class Ops>
class TypedLayerExec : public LayerExec {
 public:
  using T = typename Ops::T;
  using G = typename Ops::G;
  static_assert(std::is_same_v<G, float>, "the relay's gradient buffers are fp32");

  TypedLayerExec(const ModelDims& dims, DType dtype, Ops ops, int64_t device_bytes = 0)
      : dims_(dims), dtype_(dtype), ops_(std::move(ops)), device_bytes_(device_bytes) {}

  DType dtype() const override { return dtype_; }
  int64_t WorkspaceBytes(int rows) const override {
    return std::max({EmbeddingWorkspaceBytes<Ops>(dims_, rows),
                     BlockWorkspaceBytes<Ops>(dims_, rows), HeadWorkspaceBytes<Ops>(dims_, rows)});
  }

  int64_t device_bytes() const override { return device_bytes_; }

  void EmbeddingForward(const StepContext& ctx, const void* params, const int32_t* tokens,
                        const int32_t* token_types, int rows, void* out, void* ws) override {
    EmbeddingForwardImpl(ops_, dims_, ctx, C(params), tokens, token_types, rows, M(out), ws);
  }
  void EmbeddingBackward(const StepContext& ctx, const void* params, const int32_t* tokens,
                         const int32_t* token_types, int rows, const void* dout, float* dparams,
                         void* ws) override {
    EmbeddingBackwardImpl(ops_, dims_, ctx, C(params), tokens, token_types, rows, C(dout), dparams,
                          ws);
  }
  void BlockForward(const StepContext& ctx, const void* params, const void* x,
                    const uint8_t* attn_mask, int rows, void* y, void* ws) override {
    BlockForwardImpl(ops_, dims_, ctx, C(params), C(x), attn_mask, rows, M(y), ws);
  }
  void BlockBackward(const StepContext& ctx, const void* params, const void* x,
                     const uint8_t* attn_mask, int rows, const void* dy, void* dx, float* dparams,
                     void* ws) override {
    BlockBackwardImpl(ops_, dims_, ctx, C(params), C(x), attn_mask, rows, C(dy), M(dx), dparams,
                      ws);
  }
  void HeadForwardBackward(const StepContext& ctx, const void* params, const void* embedding_params,
                           const void* x, const TargetRows& targets, int rows, double grad_scale,
                           void* dx, float* dparams, float* embedding_grads, void* ws) override {
    HeadForwardBackwardImpl(ops_, dims_, ctx, C(params), C(embedding_params), C(x), targets, rows,
                            grad_scale, M(dx), dparams, embedding_grads, ws);
  }
  HeadResult TakeLoss() override {
    const kernels::LossTotals t = ops_.TakeLoss();
    return HeadResult{t.loss_sum, t.count};
  }

 private:
  static const T* C(const void* p) { return static_cast<const T*>(p); }
  static T* M(void* p) { return static_cast<T*>(p); }

  ModelDims dims_;
  DType dtype_;
  Ops ops_;
  int64_t device_bytes_;
};

}  // namespace l2l::model::internal
