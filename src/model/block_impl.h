// Templates of one transformer block over a kernel table `Ops` (CpuOps or
// CudaOps, l2l/kernels/cpu_ops.h): block.cc instantiates the CPU ones, the
// CUDA layer executor the GPU ones. See block.cc for the maths.
#pragma once

#include <algorithm>

#include "internal.h"
#include "l2l/model/model.h"

namespace l2l::model::internal {

using kernels::Accum;

// The block's tensors inside a flat buffer; P is const T* (params) or G* (grads).
template <typename P>
struct BlockTensors {
  P ln1_gain, ln1_bias;  // (H)
  P qkv_w;               // (H, 3H)
  P qkv_b;               // (3H)
  P proj_w;              // (H, H)
  P proj_b;              // (H)
  P ln2_gain, ln2_bias;  // (H)
  P fc1_w;               // (H, F)
  P fc1_b;               // (F)
  P fc2_w;               // (F, H)
  P fc2_b;               // (H)
};

template <typename P>
BlockTensors<P> BindBlock(const ModelDims& d, P base) {
  const ParamLayout l = LayoutFor(d, LayerKind::kBlock);
  auto at = [&](const char* name) { return base + l.OffsetOf(name); };
  return {at("ln1.gain"),         at("ln1.bias"),       at("attn.qkv.weight"), at("attn.qkv.bias"),
          at("attn.proj.weight"), at("attn.proj.bias"), at("ln2.gain"),        at("ln2.bias"),
          at("mlp.fc1.weight"),   at("mlp.fc1.bias"),   at("mlp.fc2.weight"),  at("mlp.fc2.bias")};
}

inline kernels::AttentionDims BlockAttnDims(const ModelDims& d, int rows) {
  return {rows, d.seq_len, d.heads, d.hidden / d.heads,
          d.causal ? kernels::AttnMask::kCausal : kernels::AttnMask::kPaddingOnly};
}

// Workspace regions. N = rows * S tokens.
template <class Ops>
struct BlockBuffers {
  using T = typename Ops::T;
  using G = typename Ops::G;
  using S = typename Ops::S;
  // Saved by the forward for the backward.
  T* qkv;      // (N, 3H)
  T* probs;    // (rows, heads, S, S) pre-dropout attention probabilities
  T* a;        // (N, H) attention output (before the projection)
  T* ln1_in;   // (N, H) post: r1 = x + drop1(o);  pre: unused (LN1's input is x)
  T* ln1_out;  // (N, H) post: x1;                 pre: l1 = LN1(x)
  T* ln2_in;   // (N, H) post: r2 = x1 + drop2(m); pre: x1
  T* ln2_out;  // (N, H) pre: l2 = LN2(x1);        post: unused (LN2's output is y)
  T* h;        // (N, F) fc1 output, pre-GELU
  T* g;        // (N, F) GELU output; the backward reuses it for dg / dh
  S *mean1, *rstd1, *mean2, *rstd2;  // (N)
  uint8_t* keep_probs;               // (rows, heads * S * S)
  uint8_t* keep_attn;                // (rows, S * H)
  uint8_t* keep_mlp;                 // (rows, S * H)
  // Scratch: the projection / fc2 outputs in the forward, gradients in the backward.
  T* o;         // (N, H)
  T* d0;        // (N, H)
  T* d1;        // (N, H)
  T* dqkv;      // (N, 3H)
  G* gscratch;  // reductions of the bias / gain gradients (GPU)
  T* ascratch;  // attention (GPU)
};

template <class Ops>
BlockBuffers<Ops> CarveBlock(const ModelDims& d, int rows, void* ws, int64_t* used) {
  using T = typename Ops::T;
  using G = typename Ops::G;
  using S = typename Ops::S;
  const int64_t Sq = d.seq_len, H = d.hidden, F = d.ffn, N = rows * Sq;
  const int64_t probs = int64_t{rows} * d.heads * Sq * Sq;
  Carver c(ws);
  BlockBuffers<Ops> b;
  b.qkv = c.Take<T>(N * 3 * H);
  b.probs = c.Take<T>(probs);
  b.a = c.Take<T>(N * H);
  b.ln1_in = d.norm == Norm::kPost ? c.Take<T>(N * H) : nullptr;
  b.ln1_out = c.Take<T>(N * H);
  b.ln2_in = c.Take<T>(N * H);
  b.ln2_out = d.norm == Norm::kPre ? c.Take<T>(N * H) : nullptr;
  b.h = c.Take<T>(N * F);
  b.g = c.Take<T>(N * F);
  b.mean1 = c.Take<S>(N);
  b.rstd1 = c.Take<S>(N);
  b.mean2 = c.Take<S>(N);
  b.rstd2 = c.Take<S>(N);
  b.keep_probs = c.Take<uint8_t>(probs);
  b.keep_attn = c.Take<uint8_t>(N * H);
  b.keep_mlp = c.Take<uint8_t>(N * H);
  b.o = c.Take<T>(N * H);
  b.d0 = c.Take<T>(N * H);
  b.d1 = c.Take<T>(N * H);
  b.dqkv = c.Take<T>(N * 3 * H);
  b.gscratch = c.Take<G>(
      std::max({Ops::ColumnSumScratchElems(N, 3 * H), Ops::ColumnSumScratchElems(N, H),
                Ops::ColumnSumScratchElems(N, F), Ops::LayerNormBackwardScratchElems(N, H)}));
  b.ascratch = c.Take<T>(Ops::AttentionScratchElems(BlockAttnDims(d, rows)));
  *used = c.used_bytes();
  return b;
}

template <class Ops>
int64_t BlockWorkspaceBytes(const ModelDims& d, int rows) {
  CheckDims(d);
  int64_t used = 0;
  CarveBlock<Ops>(d, rows, nullptr, &used);
  return used;
}

// x (N, H) -> y (N, H), saving activations and masks into b.
template <class Ops>
void BlockForwardPass(Ops& k, const ModelDims& d, const StepContext& ctx,
                      const BlockTensors<const typename Ops::T*>& p, const typename Ops::T* x,
                      const uint8_t* attn_mask, int rows, typename Ops::T* y,
                      const BlockBuffers<Ops>& b) {
  using T = typename Ops::T;
  const int64_t S = d.seq_len, H = d.hidden, F = d.ffn, N = rows * S;
  const bool drop = DropoutOn(d, ctx);
  const float pdrop = static_cast<float>(d.dropout);
  const bool post = d.norm == Norm::kPost;
  const auto ad = BlockAttnDims(d, rows);
  if (drop) {
    k.DropoutMask(KeysFor(d, ctx, kAttnProbsDropoutSite), rows, int64_t{d.heads} * S * S,
                  b.keep_probs);
    k.DropoutMask(KeysFor(d, ctx, kAttnOutDropoutSite), rows, S * H, b.keep_attn);
    k.DropoutMask(KeysFor(d, ctx, kMlpOutDropoutSite), rows, S * H, b.keep_mlp);
  }

  // Attention sub-block.
  const T* attn_in = x;
  if (!post) {
    k.LayerNormForward(x, p.ln1_gain, p.ln1_bias, N, H, kernels::kLayerNormEps, b.ln1_out, b.mean1,
                       b.rstd1);
    attn_in = b.ln1_out;
  }
  k.LinearForward(attn_in, p.qkv_w, p.qkv_b, N, H, 3 * H, b.qkv);
  k.AttentionForward(ad, b.qkv, attn_mask, drop ? b.keep_probs : nullptr, pdrop, b.probs, b.a,
                     b.ascratch);
  k.LinearForward(b.a, p.proj_w, p.proj_b, N, H, H, b.o);
  if (drop) k.DropoutForward(b.o, b.keep_attn, N * H, pdrop, b.o);
  T* x1;  // the MLP sub-block's residual input
  if (post) {
    k.Add(x, b.o, N * H, b.ln1_in);
    k.LayerNormForward(b.ln1_in, p.ln1_gain, p.ln1_bias, N, H, kernels::kLayerNormEps, b.ln1_out,
                       b.mean1, b.rstd1);
    x1 = b.ln1_out;
  } else {
    k.Add(x, b.o, N * H, b.ln2_in);
    x1 = b.ln2_in;
  }

  // MLP sub-block.
  const T* mlp_in = x1;
  if (!post) {
    k.LayerNormForward(x1, p.ln2_gain, p.ln2_bias, N, H, kernels::kLayerNormEps, b.ln2_out, b.mean2,
                       b.rstd2);
    mlp_in = b.ln2_out;
  }
  k.LinearForward(mlp_in, p.fc1_w, p.fc1_b, N, H, F, b.h);
  k.GeluForward(b.h, N * F, b.g);
  k.LinearForward(b.g, p.fc2_w, p.fc2_b, N, F, H, b.o);
  if (drop) k.DropoutForward(b.o, b.keep_mlp, N * H, pdrop, b.o);
  if (post) {
    k.Add(x1, b.o, N * H, b.ln2_in);
    k.LayerNormForward(b.ln2_in, p.ln2_gain, p.ln2_bias, N, H, kernels::kLayerNormEps, y, b.mean2,
                       b.rstd2);
  } else {
    k.Add(x1, b.o, N * H, y);
  }
}

template <class Ops>
void BlockForwardImpl(Ops& k, const ModelDims& d, const StepContext& ctx,
                      const typename Ops::T* params, const typename Ops::T* x,
                      const uint8_t* attn_mask, int rows, typename Ops::T* y, void* workspace) {
  CheckDims(d);
  int64_t used = 0;
  const auto b = CarveBlock<Ops>(d, rows, workspace, &used);
  BlockForwardPass(k, d, ctx, BindBlock(d, params), x, attn_mask, rows, y, b);
}

template <class Ops>
void BlockBackwardImpl(Ops& k, const ModelDims& d, const StepContext& ctx,
                       const typename Ops::T* params, const typename Ops::T* x,
                       const uint8_t* attn_mask, int rows, const typename Ops::T* dy,
                       typename Ops::T* dx, typename Ops::G* dparams, void* workspace) {
  using T = typename Ops::T;
  CheckDims(d);
  L2L_CHECK(dx != nullptr && dparams != nullptr);
  L2L_CHECK(dx != x && dx != dy) << "dx must not alias x or dy";
  const int64_t S = d.seq_len, H = d.hidden, F = d.ffn, N = rows * S;
  int64_t used = 0;
  const auto b = CarveBlock<Ops>(d, rows, workspace, &used);
  const auto p = BindBlock(d, params);
  const auto g = BindBlock(d, dparams);
  const bool drop = DropoutOn(d, ctx);
  const float pdrop = static_cast<float>(d.dropout);
  const bool post = d.norm == Norm::kPost;
  const auto ad = BlockAttnDims(d, rows);
  typename Ops::G* gs = b.gscratch;

  // Recompute the forward; dx is free until written below, so y goes there.
  BlockForwardPass(k, d, ctx, p, x, attn_mask, rows, dx, b);

  // ---- MLP sub-block. Afterwards dres = dL/dx1 (the MLP's residual input).
  T* dres;
  const T* dm;  // dL/d(fc2 output), through Drop2
  if (post) {
    // y = LN2(r2): dr2 -> d0; r2 = x1 + m, so dx1 = dr2 + (MLP path).
    k.LayerNormBackward(b.ln2_in, p.ln2_gain, b.mean2, b.rstd2, dy, N, H, b.d0, g.ln2_gain,
                        g.ln2_bias, gs);
    dres = b.d0;
  } else {
    k.Copy(dy, N * H, dx);  // y = x1 + m
    dres = dx;
  }
  if (drop) {
    k.DropoutBackward(dres, b.keep_mlp, N * H, pdrop, b.d1);
    dm = b.d1;
  } else {
    dm = dres;
  }
  k.LinearBackward(b.g, p.fc2_w, dm, N, F, H, nullptr, g.fc2_w, g.fc2_b, gs);  // reads g
  k.LinearBackward(nullptr, p.fc2_w, dm, N, F, H, b.g, nullptr, nullptr, gs);  // g := dg
  k.GeluBackward(b.h, b.g, N * F, b.g);                                        // g := dh
  if (post) {
    // fc1 input is x1 itself: its gradient joins the residual one.
    k.LinearBackward(b.ln1_out, p.fc1_w, b.g, N, H, F, dres, g.fc1_w, g.fc1_b, gs, Accum::kAdd);
  } else {
    // fc1 input is l2 = LN2(x1): dl2 -> d1 (dm is dead), then through LN2 into dres.
    k.LinearBackward(b.ln2_out, p.fc1_w, b.g, N, H, F, b.d1, g.fc1_w, g.fc1_b, gs);
    k.LayerNormBackward(b.ln2_in, p.ln2_gain, b.mean2, b.rstd2, b.d1, N, H, dres, g.ln2_gain,
                        g.ln2_bias, gs, Accum::kAdd);
  }

  // ---- Attention sub-block. Afterwards dx is complete.
  if (post) {
    // x1 = LN1(r1), r1 = x + o: dx = dr1 + (attention path).
    k.LayerNormBackward(b.ln1_in, p.ln1_gain, b.mean1, b.rstd1, dres, N, H, dx, g.ln1_gain,
                        g.ln1_bias, gs);
  }               // pre: x1 = x + o, and dres already is dx.
  const T* dout;  // dL/d(projection output), through Drop1
  if (drop) {
    k.DropoutBackward(dx, b.keep_attn, N * H, pdrop, b.d1);
    dout = b.d1;
  } else {
    dout = dx;
  }
  k.LinearBackward(b.a, p.proj_w, dout, N, H, H, b.d0, g.proj_w, g.proj_b, gs);  // d0 := da
  k.AttentionBackward(ad, b.qkv, drop ? b.keep_probs : nullptr, pdrop, b.probs, b.d0, b.dqkv,
                      b.ascratch);
  if (post) {
    k.LinearBackward(x, p.qkv_w, b.dqkv, N, H, 3 * H, dx, g.qkv_w, g.qkv_b, gs, Accum::kAdd);
  } else {
    k.LinearBackward(b.ln1_out, p.qkv_w, b.dqkv, N, H, 3 * H, b.d1, g.qkv_w, g.qkv_b, gs);
    k.LayerNormBackward(x, p.ln1_gain, b.mean1, b.rstd1, b.d1, N, H, dx, g.ln1_gain, g.ln1_bias, gs,
                        Accum::kAdd);
  }
}

}  // namespace l2l::model::internal
