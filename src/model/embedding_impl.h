// Templates of the embedding layer (layer 0) over a kernel table `Ops`
// (l2l/kernels/cpu_ops.h); embedding_layer.cc instantiates the CPU ones.
#pragma once

#include "internal.h"
#include "l2l/model/model.h"

namespace l2l::model::internal {

// The layer's tensors inside a flat buffer; P is const T* (params) or G*
// (grads). Tensors the architecture lacks are nullptr.
template <typename P>
struct EmbeddingTensors {
  P tok;      // (V, H)
  P pos;      // (P, H), bert and gpt2
  P type;     // (type_vocab, H), bert
  P ln_gain;  // (H), bert
  P ln_bias;  // (H), bert
};

template <typename P>
EmbeddingTensors<P> BindEmbedding(const ModelDims& d, P base) {
  const ParamLayout l = LayoutFor(d, LayerKind::kEmbedding);
  return {TensorOrNull(l, base, "tok_emb"), TensorOrNull(l, base, "pos_emb"),
          TensorOrNull(l, base, "type_emb"), TensorOrNull(l, base, "ln.gain"),
          TensorOrNull(l, base, "ln.bias")};
}

template <class Ops>
struct EmbeddingBuffers {
  typename Ops::T* sum;       // (N, H) embedding sum before the layernorm (bert)
  typename Ops::T* out;       // (N, H) scratch for the recomputed output / its gradient
  typename Ops::S* mean;      // (N)
  typename Ops::S* rstd;      // (N)
  uint8_t* keep;              // (N, H) dropout mask
  typename Ops::G* gscratch;  // layernorm gradient reduction (GPU)
};

template <class Ops>
EmbeddingBuffers<Ops> CarveEmbedding(const ModelDims& d, int rows, void* ws, int64_t* used) {
  const int64_t N = int64_t{rows} * d.seq_len, H = d.hidden;
  Carver c(ws);
  EmbeddingBuffers<Ops> b;
  const bool bert = d.arch == Arch::kBert;
  b.sum = bert ? c.Take<typename Ops::T>(N * H) : nullptr;
  b.out = c.Take<typename Ops::T>(N * H);
  b.mean = bert ? c.Take<typename Ops::S>(N) : nullptr;
  b.rstd = bert ? c.Take<typename Ops::S>(N) : nullptr;
  b.keep = d.arch != Arch::kLlama ? c.Take<uint8_t>(N * H) : nullptr;
  b.gscratch = bert ? c.Take<typename Ops::G>(Ops::LayerNormBackwardScratchElems(N, H)) : nullptr;
  *used = c.used_bytes();
  return b;
}

template <class Ops>
int64_t EmbeddingWorkspaceBytes(const ModelDims& d, int rows) {
  CheckDims(d);
  int64_t used = 0;
  CarveEmbedding<Ops>(d, rows, nullptr, &used);
  return used;
}

// Writes the layer output to `out` and fills sum / mean / rstd / keep.
template <class Ops>
void EmbeddingForwardPass(Ops& k, const ModelDims& d, const StepContext& ctx,
                          const EmbeddingTensors<const typename Ops::T*>& p, const int32_t* tokens,
                          const int32_t* token_types, int rows, typename Ops::T* out,
                          const EmbeddingBuffers<Ops>& b) {
  using kernels::Accum;
  const int64_t S = d.seq_len, H = d.hidden, N = rows * S;
  // bert sums into b.sum and normalises into out; the others sum into out.
  const bool norm = d.arch == Arch::kBert;
  typename Ops::T* sum = norm ? b.sum : out;
  k.EmbeddingForward(p.tok, d.vocab, H, tokens, N, sum);
  if (HasPositionTable(d)) {
    if (ctx.positions != nullptr) {
      k.EmbeddingForward(p.pos, MaxPositions(d), H, ctx.positions, N, sum, Accum::kAdd);
    } else {
      k.PositionEmbeddingForward(p.pos, rows, S, H, sum, Accum::kAdd);
    }
  }
  if (HasTokenTypes(d)) {
    if (token_types != nullptr) {
      k.EmbeddingForward(p.type, d.type_vocab, H, token_types, N, sum, Accum::kAdd);
    } else {  // all type 0: type_emb[0] broadcast to every token
      k.PositionEmbeddingForward(p.type, N, 1, H, sum, Accum::kAdd);
    }
  }
  if (norm) k.LayerNormForward(sum, p.ln_gain, p.ln_bias, N, H, d.norm_eps, out, b.mean, b.rstd);
  if (DropoutOn(d, ctx) && d.arch != Arch::kLlama) {
    const auto keys = KeysFor(d, ctx, kEmbeddingDropoutSite);
    k.DropoutMask(keys, rows, S * H, b.keep);
    k.DropoutForward(out, b.keep, N * H, keys.p, out);
  }
}

template <class Ops>
void EmbeddingForwardImpl(Ops& k, const ModelDims& d, const StepContext& ctx,
                          const typename Ops::T* params, const int32_t* tokens,
                          const int32_t* token_types, int rows, typename Ops::T* out,
                          void* workspace) {
  CheckDims(d);
  int64_t used = 0;
  const auto b = CarveEmbedding<Ops>(d, rows, workspace, &used);
  EmbeddingForwardPass(k, d, ctx, BindEmbedding(d, params), tokens, token_types, rows, out, b);
}

template <class Ops>
void EmbeddingBackwardImpl(Ops& k, const ModelDims& d, const StepContext& ctx,
                           const typename Ops::T* params, const int32_t* tokens,
                           const int32_t* token_types, int rows, const typename Ops::T* dout,
                           typename Ops::G* dparams, void* workspace) {
  CheckDims(d);
  const int64_t S = d.seq_len, H = d.hidden, N = rows * S;
  int64_t used = 0;
  const auto b = CarveEmbedding<Ops>(d, rows, workspace, &used);
  const auto p = BindEmbedding(d, params);
  L2L_CHECK(dparams != nullptr);
  const auto g = BindEmbedding(d, dparams);
  const bool drop = DropoutOn(d, ctx) && d.arch != Arch::kLlama;
  if (d.arch == Arch::kBert || drop) {
    // Recompute for the layernorm statistics and the dropout mask (keyed: the same).
    EmbeddingForwardPass(k, d, ctx, p, tokens, token_types, rows, b.out, b);
  }
  // b.out := dL/d(layer output before dropout), then (bert) dL/d(sum) in place.
  if (drop) {
    k.DropoutBackward(dout, b.keep, N * H, static_cast<float>(d.dropout), b.out);
  } else {
    k.Copy(dout, N * H, b.out);
  }
  if (d.arch == Arch::kBert) {
    k.LayerNormBackward(b.sum, p.ln_gain, b.mean, b.rstd, b.out, N, H, b.out, g.ln_gain, g.ln_bias,
                        b.gscratch);
  }
  k.EmbeddingBackward(tokens, N, b.out, d.vocab, H, g.tok, d.pad_token_id);
  if (HasPositionTable(d)) {
    if (ctx.positions != nullptr) {
      k.EmbeddingBackward(ctx.positions, N, b.out, MaxPositions(d), H, g.pos);
    } else {
      k.PositionEmbeddingBackward(b.out, rows, S, H, g.pos);
    }
  }
  if (HasTokenTypes(d)) {
    if (token_types != nullptr) {
      k.EmbeddingBackward(token_types, N, b.out, d.type_vocab, H, g.type);
    } else {
      k.PositionEmbeddingBackward(b.out, N, 1, H, g.type);
    }
  }
}

}  // namespace l2l::model::internal
