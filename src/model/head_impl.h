// Template of the language-model head (the last layer) over a kernel table
// `Ops` (l2l/kernels/cpu_ops.h); head.cc instantiates the CPU one. See head.cc
// for the maths.
#pragma once

#include <algorithm>

#include "internal.h"
#include "l2l/model/model.h"

namespace l2l::model::internal {

// The head's tensors; P is const T* (params) or G* (grads, all nullptr if the
// gradient buffer is null).
template <typename P>
struct HeadTensors {
  P dense_w;  // (H, H), BERT only
  P dense_b;  // (H), BERT only
  P ln_gain;  // (H)
  P ln_bias;  // (H)
  P dec_w;    // (H, V)
  P dec_b;    // (V)
};

template <typename P>
HeadTensors<P> BindHead(const ModelDims& d, P base) {
  if (base == nullptr) return {};
  const ParamLayout l = LayoutFor(d, LayerKind::kHead);
  return {d.causal ? nullptr : base + l.OffsetOf("dense.weight"),
          d.causal ? nullptr : base + l.OffsetOf("dense.bias"),
          base + l.OffsetOf("ln.gain"),
          base + l.OffsetOf("ln.bias"),
          base + l.OffsetOf("decoder.weight"),
          base + l.OffsetOf("decoder.bias")};
}

// Workspace regions; M <= N = rows * S is the number of target rows.
template <class Ops>
struct HeadBuffers {
  using T = typename Ops::T;
  T* xg;                      // (N, H) gathered inputs
  T* dense;                   // (N, H) BERT: dense output, pre-GELU; later dL/dxg
  T* act;                     // (N, H) BERT: GELU output = the layernorm input
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
  b.dense = d.causal ? nullptr : c.Take<T>(N * H);
  b.act = d.causal ? nullptr : c.Take<T>(N * H);
  b.z = c.Take<T>(N * H);
  b.mean = c.Take<typename Ops::S>(N);
  b.rstd = c.Take<typename Ops::S>(N);
  b.dz = c.Take<T>(N * H);
  b.logits = c.Take<T>(chunk * V);
  b.row_loss = c.Take<double>(Ops::CrossEntropyRowElems(chunk));
  b.gscratch = c.Take<typename Ops::G>(
      std::max({Ops::ColumnSumScratchElems(N, H), Ops::ColumnSumScratchElems(chunk, V),
                Ops::LayerNormBackwardScratchElems(N, H)}));
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

// Forward + loss (added to the ops' totals) + backward for the target rows
// `t` of the micro-batch. dx (N, H) is written (0 for rows without a
// target) unless null; dparams accumulated unless null.
template <class Ops>
void HeadForwardBackwardImpl(Ops& k, const ModelDims& d, const StepContext& ctx,
                             const typename Ops::T* params, const typename Ops::T* x,
                             const TargetRows& t, int rows, double grad_scale, typename Ops::T* dx,
                             typename Ops::G* dparams, void* workspace) {
  using T = typename Ops::T;
  CheckDims(d);
  (void)ctx;  // the head has no dropout
  const int64_t H = d.hidden, V = d.vocab, N = int64_t{rows} * d.seq_len;
  L2L_CHECK(t.count >= 0 && t.count <= N) << "target rows " << t.count << " of " << N;
  int64_t used = 0;
  const auto b = CarveHead<Ops>(d, rows, workspace, &used);
  const auto p = BindHead(d, params);
  const auto g = BindHead(d, dparams);
  const bool grads = dx != nullptr || dparams != nullptr;
  const int64_t m = t.count;

  if (dx != nullptr) k.Zero(dx, N * H);
  if (m == 0) return;

  // Forward up to the decoder input z (m, H).
  k.GatherRows(x, t.rows, m, H, b.xg);
  const T* ln_in = b.xg;
  if (!d.causal) {
    k.LinearForward(b.xg, p.dense_w, p.dense_b, m, H, H, b.dense);
    k.GeluForward(b.dense, m * H, b.act);
    ln_in = b.act;
  }
  k.LayerNormForward(ln_in, p.ln_gain, p.ln_bias, m, H, kernels::kLayerNormEps, b.z, b.mean,
                     b.rstd);

  // Decoder + cross-entropy + decoder backward, chunk by chunk.
  for (int64_t c0 = 0; c0 < m; c0 += kHeadLogitRows) {
    const int64_t rc = std::min<int64_t>(kHeadLogitRows, m - c0);
    const T* zc = b.z + c0 * H;
    k.LinearForward(zc, p.dec_w, p.dec_b, rc, H, V, b.logits);
    k.CrossEntropy(b.logits, t.targets + c0, rc, V, grad_scale, grads ? b.logits : nullptr,
                   b.row_loss);
    if (grads) {
      k.LinearBackward(zc, p.dec_w, b.logits, rc, H, V, b.dz + c0 * H, g.dec_w, g.dec_b,
                       b.gscratch);
    }
  }
  if (!grads) return;

  // Back through the layernorm (dz in place), then (BERT) GELU and dense.
  k.LayerNormBackward(ln_in, p.ln_gain, b.mean, b.rstd, b.dz, m, H, b.dz, g.ln_gain, g.ln_bias,
                      b.gscratch);
  const T* dxg = b.dz;
  if (!d.causal) {
    k.GeluBackward(b.dense, b.dz, m * H, b.dz);
    k.LinearBackward(b.xg, p.dense_w, b.dz, m, H, H, dx != nullptr ? b.dense : nullptr, g.dense_w,
                     g.dense_b, b.gscratch);
    dxg = b.dense;
  }
  if (dx != nullptr) k.ScatterRows(dxg, t.rows, m, H, dx);
}

}  // namespace l2l::model::internal
