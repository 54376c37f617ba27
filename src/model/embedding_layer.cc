// Layer 0: token embeddings (+ positions for bert and gpt2, token types and
// a layernorm for bert), dropout (bert, gpt2).
// The layer itself is in embedding_impl.h, written against the kernel table.
#include "embedding_impl.h"
#include "l2l/kernels/cpu_ops.h"
#include "l2l/model/model.h"

namespace l2l::model {

int64_t EmbeddingWorkspaceElems(const ModelDims& d, int rows) {
  return internal::ElemsFor<float>(
      internal::EmbeddingWorkspaceBytes<kernels::CpuOps<float>>(d, rows));
}

template <typename T>
void EmbeddingForward(const ModelDims& d, const StepContext& ctx, const T* params,
                      const int32_t* tokens, const int32_t* token_types, int rows, T* out,
                      T* workspace) {
  L2L_CHECK_LE(internal::EmbeddingWorkspaceBytes<kernels::CpuOps<T>>(d, rows),
               EmbeddingWorkspaceElems(d, rows) * int64_t{sizeof(T)});
  kernels::CpuOps<T> ops;
  internal::EmbeddingForwardImpl(ops, d, ctx, params, tokens, token_types, rows, out, workspace);
}

template <typename T>
void EmbeddingBackward(const ModelDims& d, const StepContext& ctx, const T* params,
                       const int32_t* tokens, const int32_t* token_types, int rows, const T* dout,
                       T* dparams, T* workspace) {
  L2L_CHECK_LE(internal::EmbeddingWorkspaceBytes<kernels::CpuOps<T>>(d, rows),
               EmbeddingWorkspaceElems(d, rows) * int64_t{sizeof(T)});
  kernels::CpuOps<T> ops;
  internal::EmbeddingBackwardImpl(ops, d, ctx, params, tokens, token_types, rows, dout, dparams,
                                  workspace);
}

#define L2L_INSTANTIATE(T)                                                           \
  template void EmbeddingForward<T>(const ModelDims&, const StepContext&, const T*,  \
                                    const int32_t*, const int32_t*, int, T*, T*);    \
  template void EmbeddingBackward<T>(const ModelDims&, const StepContext&, const T*, \
                                     const int32_t*, const int32_t*, int, const T*, T*, T*);
L2L_INSTANTIATE(float)
L2L_INSTANTIATE(double)
#undef L2L_INSTANTIATE

}  // namespace l2l::model
