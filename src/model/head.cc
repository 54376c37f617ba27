// Layer num_blocks+1: the language-model head with its loss.
//   BERT (MLM):  z = LN(GELU(x·Wd + bd)),  logits = z·Wdec + bdec
//   GPT (LM):    z = LN(x),                logits = z·Wdec + bdec
// Only token rows with a target are gathered and decoded, in chunks of at most
// kHeadLogitRows rows, and the cross-entropy's gradient flows back right away
// (forward and backward are adjacent for the last layer).
#include <algorithm>

#include "internal.h"
#include "l2l/kernels/cpu.h"
#include "l2l/model/model.h"

namespace l2l::model {
namespace {

namespace k = kernels::cpu;
using kernels::Accum;

// The head's tensors; P is const T* (params) or T* (grads, all nullptr if the
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
HeadTensors<P> Bind(const ModelDims& d, P base) {
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
template <typename T>
struct HeadBuffers {
  int32_t* idx;      // (N) token row of each target, ascending
  int32_t* targets;  // (N) the gathered targets
  T* xg;             // (N, H) gathered inputs
  T* dense;          // (N, H) BERT: dense output, pre-GELU; later dL/dxg
  T* act;            // (N, H) BERT: GELU output = the layernorm input
  T* z;              // (N, H) layernorm output = decoder input
  T* mean;           // (N)
  T* rstd;           // (N)
  T* dz;             // (N, H) dL/dz, then back through LN (and GELU, dense)
  T* logits;         // (min(N, kHeadLogitRows), V), then dlogits in place
};

template <typename T>
HeadBuffers<T> Carve(const ModelDims& d, int rows, T* ws, int64_t* used) {
  const int64_t H = d.hidden, N = int64_t{rows} * d.seq_len;
  internal::Carver<T> c(ws);
  HeadBuffers<T> b;
  b.idx = c.TakeInts(N);
  b.targets = c.TakeInts(N);
  b.xg = c.Take(N * H);
  b.dense = d.causal ? nullptr : c.Take(N * H);
  b.act = d.causal ? nullptr : c.Take(N * H);
  b.z = c.Take(N * H);
  b.mean = c.Take(N);
  b.rstd = c.Take(N);
  b.dz = c.Take(N * H);
  b.logits = c.Take(std::min<int64_t>(N, kHeadLogitRows) * d.vocab);
  *used = c.used_elems();
  return b;
}

}  // namespace

int64_t HeadWorkspaceElems(const ModelDims& d, int rows) {
  internal::CheckDims(d);
  int64_t used = 0;
  Carve<float>(d, rows, nullptr, &used);
  return used;
}

template <typename T>
HeadResult HeadForwardBackward(const ModelDims& d, const StepContext& ctx, const T* params,
                               const T* x, const int32_t* targets, int rows, double grad_scale,
                               T* dx, T* dparams, T* workspace) {
  internal::CheckDims(d);
  const int64_t H = d.hidden, V = d.vocab, N = int64_t{rows} * d.seq_len;
  int64_t used = 0;
  const auto b = Carve<T>(d, rows, workspace, &used);
  L2L_CHECK_LE(used, HeadWorkspaceElems(d, rows));  // the float count bounds every T
  const auto p = Bind(d, params);
  const auto g = Bind(d, dparams);
  const bool grads = dx != nullptr || dparams != nullptr;

  // Gather the rows that carry a target.
  int64_t m = 0;
  for (int64_t i = 0; i < N; ++i) {
    if (targets[i] == k::kIgnoreTarget) continue;
    L2L_CHECK(targets[i] >= 0 && targets[i] < V)
        << "target " << targets[i] << " at token " << i << " outside [0, " << V << ")";
    b.idx[m] = static_cast<int32_t>(i);
    b.targets[m] = targets[i];
    ++m;
  }
  if (dx != nullptr) std::fill(dx, dx + N * H, T(0));
  HeadResult res;
  if (m == 0) return res;

  // Forward up to the decoder input z (m, H).
  k::GatherRows(x, b.idx, m, H, b.xg);
  const T* ln_in = b.xg;
  if (!d.causal) {
    k::LinearForward(b.xg, p.dense_w, p.dense_b, m, H, H, b.dense);
    k::GeluForward(b.dense, m * H, b.act);
    ln_in = b.act;
  }
  k::LayerNormForward(ln_in, p.ln_gain, p.ln_bias, m, H, kernels::kLayerNormEps, b.z, b.mean,
                      b.rstd);

  // Decoder + cross-entropy + decoder backward, chunk by chunk.
  for (int64_t c0 = 0; c0 < m; c0 += kHeadLogitRows) {
    const int64_t rc = std::min<int64_t>(kHeadLogitRows, m - c0);
    const T* zc = b.z + c0 * H;
    k::LinearForward(zc, p.dec_w, p.dec_b, rc, H, V, b.logits);
    const auto ce =
        k::CrossEntropy(b.logits, b.targets + c0, rc, V, grad_scale, grads ? b.logits : nullptr);
    res.loss_sum += ce.loss_sum;
    res.count += ce.count;
    if (grads) {
      k::LinearBackward(zc, p.dec_w, b.logits, rc, H, V, b.dz + c0 * H, g.dec_w, g.dec_b);
    }
  }
  if (!grads) return res;

  // Back through the layernorm (dz in place), then (BERT) GELU and dense.
  k::LayerNormBackward(ln_in, p.ln_gain, b.mean, b.rstd, b.dz, m, H, b.dz, g.ln_gain, g.ln_bias);
  const T* dxg = b.dz;
  if (!d.causal) {
    k::GeluBackward(b.dense, b.dz, m * H, b.dz);
    k::LinearBackward(b.xg, p.dense_w, b.dz, m, H, H, dx != nullptr ? b.dense : nullptr, g.dense_w,
                      g.dense_b);
    dxg = b.dense;
  }
  if (dx != nullptr) k::ScatterRows(dxg, b.idx, m, H, dx);
  return res;
}

template HeadResult HeadForwardBackward<float>(const ModelDims&, const StepContext&, const float*,
                                               const float*, const int32_t*, int, double, float*,
                                               float*, float*);
template HeadResult HeadForwardBackward<double>(const ModelDims&, const StepContext&, const double*,
                                                const double*, const int32_t*, int, double, double*,
                                                double*, double*);

}  // namespace l2l::model
