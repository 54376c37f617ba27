// Layer 0: token + position (+ token-type) embeddings, layernorm, dropout.
#include <algorithm>

#include "internal.h"
#include "l2l/kernels/cpu.h"
#include "l2l/model/model.h"

namespace l2l::model {
namespace {

namespace k = kernels::cpu;
using kernels::Accum;

// The layer's tensors inside a flat buffer; P is const T* (params) or T* (grads).
template <typename P>
struct EmbeddingTensors {
  P tok;      // (V, H)
  P pos;      // (S, H)
  P type;     // (type_vocab, H), BERT only, else nullptr
  P ln_gain;  // (H)
  P ln_bias;  // (H)
};

template <typename P>
EmbeddingTensors<P> Bind(const ModelDims& d, P base) {
  const ParamLayout l = LayoutFor(d, LayerKind::kEmbedding);
  return {base + l.OffsetOf("tok_emb"), base + l.OffsetOf("pos_emb"),
          d.causal ? nullptr : base + l.OffsetOf("type_emb"), base + l.OffsetOf("ln.gain"),
          base + l.OffsetOf("ln.bias")};
}

template <typename T>
struct EmbeddingBuffers {
  T* sum;         // (N, H) embedding sum before the layernorm
  T* out;         // (N, H) scratch for the recomputed output / its gradient
  T* mean;        // (N)
  T* rstd;        // (N)
  uint8_t* keep;  // (N, H) dropout mask
};

template <typename T>
EmbeddingBuffers<T> Carve(const ModelDims& d, int rows, T* ws, int64_t* used) {
  const int64_t N = int64_t{rows} * d.seq_len, H = d.hidden;
  internal::Carver<T> c(ws);
  EmbeddingBuffers<T> b;
  b.sum = c.Take(N * H);
  b.out = c.Take(N * H);
  b.mean = c.Take(N);
  b.rstd = c.Take(N);
  b.keep = c.TakeBytes(N * H);
  *used = c.used_elems();
  return b;
}

// Writes the layer output to `out` and fills sum / mean / rstd / keep.
template <typename T>
void Forward(const ModelDims& d, const StepContext& ctx, const EmbeddingTensors<const T*>& p,
             const int32_t* tokens, const int32_t* token_types, int rows, T* out,
             const EmbeddingBuffers<T>& b) {
  const int64_t S = d.seq_len, H = d.hidden, N = rows * S;
  k::EmbeddingForward(p.tok, d.vocab, H, tokens, N, b.sum);
  k::PositionEmbeddingForward(p.pos, rows, S, H, b.sum, Accum::kAdd);
  if (!d.causal) {
    if (token_types != nullptr) {
      k::EmbeddingForward(p.type, d.type_vocab, H, token_types, N, b.sum, Accum::kAdd);
    } else {  // all type 0: type_emb[0] broadcast to every token
      k::PositionEmbeddingForward(p.type, N, 1, H, b.sum, Accum::kAdd);
    }
  }
  k::LayerNormForward(b.sum, p.ln_gain, p.ln_bias, N, H, kernels::kLayerNormEps, out, b.mean,
                      b.rstd);
  if (internal::DropoutOn(d, ctx)) {
    const auto keys = internal::KeysFor(d, ctx, kEmbeddingDropoutSite);
    kernels::cpu::DropoutMask(keys, rows, S * H, b.keep);
    k::DropoutForward(out, b.keep, N * H, keys.p, out);
  }
}

}  // namespace

int64_t EmbeddingWorkspaceElems(const ModelDims& d, int rows) {
  internal::CheckDims(d);
  int64_t used = 0;
  Carve<float>(d, rows, nullptr, &used);
  return used;
}

template <typename T>
void EmbeddingForward(const ModelDims& d, const StepContext& ctx, const T* params,
                      const int32_t* tokens, const int32_t* token_types, int rows, T* out,
                      T* workspace) {
  internal::CheckDims(d);
  int64_t used = 0;
  const auto b = Carve<T>(d, rows, workspace, &used);
  L2L_CHECK_LE(used, EmbeddingWorkspaceElems(d, rows));  // the float count bounds every T
  Forward(d, ctx, Bind(d, params), tokens, token_types, rows, out, b);
}

template <typename T>
void EmbeddingBackward(const ModelDims& d, const StepContext& ctx, const T* params,
                       const int32_t* tokens, const int32_t* token_types, int rows, const T* dout,
                       T* dparams, T* workspace) {
  internal::CheckDims(d);
  const int64_t S = d.seq_len, H = d.hidden, N = rows * S;
  int64_t used = 0;
  const auto b = Carve<T>(d, rows, workspace, &used);
  L2L_CHECK_LE(used, EmbeddingWorkspaceElems(d, rows));  // the float count bounds every T
  const auto p = Bind(d, params);
  L2L_CHECK(dparams != nullptr);
  const auto g = Bind(d, dparams);
  Forward(d, ctx, p, tokens, token_types, rows, b.out, b);  // recompute: same masks
  // b.out := dL/d(layernorm output), then dL/d(sum) in place.
  if (internal::DropoutOn(d, ctx)) {
    k::DropoutBackward(dout, b.keep, N * H, static_cast<float>(d.dropout), b.out);
  } else {
    std::copy(dout, dout + N * H, b.out);
  }
  k::LayerNormBackward(b.sum, p.ln_gain, b.mean, b.rstd, b.out, N, H, b.out, g.ln_gain, g.ln_bias);
  k::EmbeddingBackward(tokens, N, b.out, d.vocab, H, g.tok);
  k::PositionEmbeddingBackward(b.out, rows, S, H, g.pos);
  if (!d.causal) {
    if (token_types != nullptr) {
      k::EmbeddingBackward(token_types, N, b.out, d.type_vocab, H, g.type);
    } else {
      k::PositionEmbeddingBackward(b.out, N, 1, H, g.type);
    }
  }
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
