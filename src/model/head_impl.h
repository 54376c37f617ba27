// Templates of the language-model head (the last layer) over a kernel table
// `Ops` (l2l/kernels/cpu_ops.h); head.cc instantiates the CPU ones. See
// head.cc for the maths.
#pragma once

#include <algorithm>

#include "internal.h"
#include "l2l/model/model.h"

namespace l2l::model::internal {

// The head's tensors; P is const T* (params) or G* (grads, all nullptr if the
// gradient buffer is null). Tensors the architecture lacks are nullptr.
template <typename P>
struct HeadTensors {
  P dense_w;  // (H, H), bert only
  P dense_b;  // (H), bert only
  P ln_gain;  // (H)
  P ln_bias;  // (H); not llama
  P dec_w;    // (V, H): the head's own decoder, or layer 0's tok_emb when tied
  P dec_b;    // (V), bert only
};

// `embedding` is layer 0's buffer (params or grads), used for a tied decoder.
template <typename P>
HeadTensors<P> BindHead(const ModelDims& d, P base, P embedding) {
  if (base == nullptr) return {};
  const ParamLayout l = LayoutFor(d, LayerKind::kHead);
  auto at = [&](const char* name) { return TensorOrNull(l, base, name); };
  P dec_w = at("decoder.weight");
  if (d.tie_embeddings) {
    L2L_CHECK(embedding != nullptr) << "tied embeddings: the head needs layer 0's buffer";
    dec_w = embedding + LayoutFor(d, LayerKind::kEmbedding).OffsetOf("tok_emb");
  }
  return {at("dense.weight"), at("dense.bias"), at("ln.gain"), at("ln.bias"), dec_w,
          at("decoder.bias")};
}

// Workspace regions; M <= N = rows * S is the number of target rows.
template <class Ops>
struct HeadBuffers {
  using T = typename Ops::T;
  T* xg;                      // (N, H) gathered inputs
  T* dense;                   // (N, H) bert: dense output, pre-GELU; later dL/dxg
  T* act;                     // (N, H) bert: GELU output = the norm input
  T* z;                       // (N, H) layernorm output = decoder input
  typename Ops::S* mean;      // (N)
  typename Ops::S* rstd;      // (N)
  T* dz;                      // (N, H) dL/dz, then back through LN (and GELU, dense)
  T* logits;                  // (min(N, kHeadLogitRows), V), then dlogits in place
  double* row_loss;           // per logit row (GPU)
  typename Ops::G* gscratch;  // bias / gain gradient reductions (GPU)
};

template <class Ops>
HeadBuffers<Ops> CarveHead(const ModelDims& d, int rows, void* ws, int64_t* used) {
  using T = typename Ops::T;
  const int64_t H = d.hidden, V = d.vocab, N = int64_t{rows} * d.seq_len;
  const int64_t chunk = std::min<int64_t>(N, kHeadLogitRows);
  Carver c(ws);
  HeadBuffers<Ops> b;
  b.xg = c.Take<T>(N * H);
  const bool bert = d.arch == Arch::kBert;
  b.dense = bert ? c.Take<T>(N * H) : nullptr;
  b.act = bert ? c.Take<T>(N * H) : nullptr;
  b.z = c.Take<T>(N * H);
  b.mean = c.Take<typename Ops::S>(N);
  b.rstd = c.Take<typename Ops::S>(N);
  b.dz = c.Take<T>(N * H);
  b.logits = c.Take<T>(chunk * V);
  b.row_loss = c.Take<double>(Ops::CrossEntropyRowElems(chunk));
  b.gscratch = c.Take<typename Ops::G>(
      std::max({Ops::ColumnSumScratchElems(N, H), Ops::ColumnSumScratchElems(chunk, V),
                NormBackwardScratchElems<Ops>(d, N, H)}));
  *used = c.used_bytes();
  return b;
}

template <class Ops>
int64_t HeadWorkspaceBytes(const ModelDims& d, int rows) {
  CheckDims(d);
  int64_t used = 0;
  CarveHead<Ops>(d, rows, nullptr, &used);
  return used;
}

// Forward from the head's input rows in (m, H) to the decoder input b.z;
// returns the norm's input (in itself, or bert's activation).
template <class Ops>
const typename Ops::T* HeadForwardToZ(Ops& k, const ModelDims& d,
                                      const HeadTensors<const typename Ops::T*>& p,
                                      const typename Ops::T* in, int64_t m,
                                      const HeadBuffers<Ops>& b) {
  const int64_t H = d.hidden;
  const typename Ops::T* norm_in = in;
  if (d.arch == Arch::kBert) {
    k.LinearForward(LinearLayoutOf(d), in, p.dense_w, p.dense_b, m, H, H, b.dense);
    k.GeluForward(d.gelu, b.dense, m * H, b.act);
    norm_in = b.act;
  }
  NormForward(k, d, norm_in, p.ln_gain, p.ln_bias, m, H, b.z, b.mean, b.rstd);
  return norm_in;
}

// Forward + loss (added to the ops' totals) + backward for the target rows
// `t` of the micro-batch. dx (N, H) is written (0 for rows without a
// target) unless null; dparams (and, tied, embedding_grads) accumulated
// unless null.
template <class Ops>
void HeadForwardBackwardImpl(Ops& k, const ModelDims& d, const StepContext& ctx,
                             const typename Ops::T* params, const typename Ops::T* embedding_params,
                             const typename Ops::T* x, const TargetRows& t, int rows,
                             double grad_scale, typename Ops::T* dx, typename Ops::G* dparams,
                             typename Ops::G* embedding_grads, void* workspace) {
  using T = typename Ops::T;
  using kernels::WeightLayout;
  CheckDims(d);
  (void)ctx;  // the head has no dropout
  const int64_t H = d.hidden, V = d.vocab, N = int64_t{rows} * d.seq_len;
  L2L_CHECK(t.count >= 0 && t.count <= N) << "target rows " << t.count << " of " << N;
  int64_t used = 0;
  const auto b = CarveHead<Ops>(d, rows, workspace, &used);
  const auto p = BindHead(d, params, embedding_params);
  const auto g = BindHead(d, dparams, embedding_grads);
  const bool grads = dx != nullptr || dparams != nullptr;
  const int64_t m = t.count;

  if (dx != nullptr) k.Zero(dx, N * H);
  if (m == 0) return;

  // Forward up to the decoder input z (m, H).
  k.GatherRows(x, t.rows, m, H, b.xg);
  const T* norm_in = HeadForwardToZ(k, d, p, b.xg, m, b);

  // Decoder + cross-entropy + decoder backward, chunk by chunk.
  for (int64_t c0 = 0; c0 < m; c0 += kHeadLogitRows) {
    const int64_t rc = std::min<int64_t>(kHeadLogitRows, m - c0);
    const T* zc = b.z + c0 * H;
    k.LinearForward(WeightLayout::kOutIn, zc, p.dec_w, p.dec_b, rc, H, V, b.logits);
    k.CrossEntropy(b.logits, t.targets + c0, rc, V, grad_scale, grads ? b.logits : nullptr,
                   b.row_loss);
    if (grads) {
      k.LinearBackward(WeightLayout::kOutIn, zc, p.dec_w, b.logits, rc, H, V, b.dz + c0 * H,
                       g.dec_w, g.dec_b, b.gscratch);
    }
  }
  if (!grads) return;

  // Back through the norm (dz in place), then (bert) GELU and dense.
  NormBackward(k, d, norm_in, p.ln_gain, b.mean, b.rstd, b.dz, m, H, b.dz, g.ln_gain, g.ln_bias,
               b.gscratch);
  const T* dxg = b.dz;
  if (d.arch == Arch::kBert) {
    k.GeluBackward(d.gelu, b.dense, b.dz, m * H, b.dz);
    k.LinearBackward(LinearLayoutOf(d), b.xg, p.dense_w, b.dz, m, H, H,
                     dx != nullptr ? b.dense : nullptr, g.dense_w, g.dense_b, b.gscratch);
    dxg = b.dense;
  }
  if (dx != nullptr) k.ScatterRows(dxg, t.rows, m, H, dx);
}

// Logits (N, V) of every token of x (N, H).
template <class Ops>
void HeadLogitsImpl(Ops& k, const ModelDims& d, const typename Ops::T* params,
                    const typename Ops::T* embedding_params, const typename Ops::T* x, int rows,
                    typename Ops::T* logits, void* workspace) {
  CheckDims(d);
  const int64_t N = int64_t{rows} * d.seq_len;
  int64_t used = 0;
  const auto b = CarveHead<Ops>(d, rows, workspace, &used);
  const auto p = BindHead(d, params, embedding_params);
  HeadForwardToZ(k, d, p, x, N, b);
  k.LinearForward(kernels::WeightLayout::kOutIn, b.z, p.dec_w, p.dec_b, N, d.hidden, d.vocab,
                  logits);
}

}  // namespace l2l::model::internal
