// Layer num_blocks+1: the language-model head with its loss.
//   bert (MLM):  z = LN(GELU(x·Wd + bd)),  logits = z·Wdecᵀ + bdec
//   gpt2 (LM):   z = LN(x),                logits = z·Wdecᵀ
//   llama (LM):  z = RMSNorm(x),           logits = z·Wdecᵀ
// Wdec (V, H) is the head's own or, tied, layer 0's token embedding table.
// Only token rows with a target are gathered and decoded, in chunks of at most
// kHeadLogitRows rows, and the cross-entropy's gradient flows back right away
// (forward and backward are adjacent for the last layer). The layer itself is
// in head_impl.h, written against the kernel table.
#include <vector>

#include "head_impl.h"
#include "l2l/kernels/cpu_ops.h"
#include "l2l/model/model.h"

namespace l2l::model {

StatusOr<int64_t> CompactTargets(const int32_t* targets, int64_t n, int vocab, int32_t* rows,
                                 int32_t* row_targets) {
  int64_t m = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (targets[i] == kNoTarget) continue;
    if (targets[i] < 0 || targets[i] >= vocab) {
      return InvalidArgument("target " + std::to_string(targets[i]) + " at token " +
                             std::to_string(i) + " outside [0, " + std::to_string(vocab) + ")");
    }
    rows[m] = static_cast<int32_t>(i);
    row_targets[m] = targets[i];
    ++m;
  }
  return m;
}

int64_t HeadWorkspaceElems(const ModelDims& d, int rows) {
  return internal::ElemsFor<float>(internal::HeadWorkspaceBytes<kernels::CpuOps<float>>(d, rows));
}

template <typename T>
HeadResult HeadForwardBackward(const ModelDims& d, const StepContext& ctx, const T* params,
                               const T* embedding_params, const T* x, const int32_t* targets,
                               int rows, double grad_scale, T* dx, T* dparams, T* embedding_grads,
                               T* workspace) {
  internal::CheckDims(d);
  L2L_CHECK_LE(internal::HeadWorkspaceBytes<kernels::CpuOps<T>>(d, rows),
               HeadWorkspaceElems(d, rows) * int64_t{sizeof(T)});
  const int64_t N = int64_t{rows} * d.seq_len;
  std::vector<int32_t> idx(N), tg(N);
  const StatusOr<int64_t> m = CompactTargets(targets, N, d.vocab, idx.data(), tg.data());
  L2L_CHECK(m.ok()) << m.status().message();
  kernels::CpuOps<T> ops;
  internal::HeadForwardBackwardImpl(ops, d, ctx, params, embedding_params, x,
                                    TargetRows{idx.data(), tg.data(), *m}, rows, grad_scale, dx,
                                    dparams, embedding_grads, workspace);
  const kernels::LossTotals loss = ops.TakeLoss();
  return HeadResult{loss.loss_sum, loss.count};
}

template <typename T>
void HeadLogits(const ModelDims& d, const T* params, const T* embedding_params, const T* x,
                int rows, T* logits, T* workspace) {
  kernels::CpuOps<T> ops;
  internal::HeadLogitsImpl(ops, d, params, embedding_params, x, rows, logits, workspace);
}

#define L2L_INSTANTIATE(T)                                                                        \
  template HeadResult HeadForwardBackward<T>(const ModelDims&, const StepContext&, const T*,      \
                                             const T*, const T*, const int32_t*, int, double, T*, \
                                             T*, T*, T*);                                         \
  template void HeadLogits<T>(const ModelDims&, const T*, const T*, const T*, int, T*, T*);
L2L_INSTANTIATE(float)
L2L_INSTANTIATE(double)
#undef L2L_INSTANTIATE

}  // namespace l2l::model
