// Layers 1..num_blocks: one transformer block. The forward saves what the
// backward needs in the workspace; the backward recomputes that forward from
// x (same dropout masks, they are keyed) and then back-propagates, so nothing
// but the layer input crosses layers.
//
//   bert (post-norm):  x1 = LN1(x + Drop(Attn(x)));    y = LN2(x1 + Drop(MLP(x1)))
//   gpt2 (pre-norm):   x1 = x + Drop(Attn(LN1(x)));    y = x1 + Drop(MLP(LN2(x1)))
//   llama (pre-norm):  x1 = x + Attn(RMS1(x));         y = x1 + SwiGLU(RMS2(x1))
//   Attn(u) = softmax(q·kᵀ/sqrt(hd), masked) with DropP on the probabilities, · v,
//             then ·Wo (+ bo), where [q|k|v] = u·Wqkv (+ bqkv), llama: q and k
//             rotated (RoPE) and k, v with kv_heads heads shared by groups of q heads;
//   MLP(u) = GELU(u·W1 + b1)·W2 + b2;  SwiGLU(u) = (silu(u·Wg) ⊙ u·Wu)·Wd.
#include "block_impl.h"
#include "l2l/kernels/cpu_ops.h"
#include "l2l/model/model.h"

namespace l2l::model {

int64_t BlockWorkspaceElems(const ModelDims& d, int rows) {
  return internal::ElemsFor<float>(internal::BlockWorkspaceBytes<kernels::CpuOps<float>>(d, rows));
}

template <typename T>
void BlockForward(const ModelDims& d, const StepContext& ctx, const T* params, const T* x,
                  const uint8_t* attn_mask, int rows, T* y, T* workspace) {
  L2L_CHECK_LE(internal::BlockWorkspaceBytes<kernels::CpuOps<T>>(d, rows),
               BlockWorkspaceElems(d, rows) * int64_t{sizeof(T)});
  kernels::CpuOps<T> ops;
  internal::BlockForwardImpl(ops, d, ctx, params, x, attn_mask, rows, y, workspace);
}

template <typename T>
void BlockBackward(const ModelDims& d, const StepContext& ctx, const T* params, const T* x,
                   const uint8_t* attn_mask, int rows, const T* dy, T* dx, T* dparams,
                   T* workspace) {
  L2L_CHECK_LE(internal::BlockWorkspaceBytes<kernels::CpuOps<T>>(d, rows),
               BlockWorkspaceElems(d, rows) * int64_t{sizeof(T)});
  kernels::CpuOps<T> ops;
  internal::BlockBackwardImpl(ops, d, ctx, params, x, attn_mask, rows, dy, dx, dparams, workspace);
}

#define L2L_INSTANTIATE(T)                                                                 \
  template void BlockForward<T>(const ModelDims&, const StepContext&, const T*, const T*,  \
                                const uint8_t*, int, T*, T*);                              \
  template void BlockBackward<T>(const ModelDims&, const StepContext&, const T*, const T*, \
                                 const uint8_t*, int, const T*, T*, T*, T*);
L2L_INSTANTIATE(float)
L2L_INSTANTIATE(double)
#undef L2L_INSTANTIATE

}  // namespace l2l::model
