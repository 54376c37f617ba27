// Templates of one transformer block over a kernel table `Ops` (CpuOps or
// CudaOps, l2l/kernels/cpu_ops.h): block.cc instantiates the CPU ones, the
// CUDA layer executor the GPU ones. See block.cc for the maths.
#pragma once

#include <algorithm>

#include "internal.h"
#include "l2l/model/model.h"

namespace l2l::model::internal {

using kernels::Accum;

// The block's tensors inside a flat buffer; P is const T* (params) or G*
// (grads). Tensors the architecture lacks are nullptr.
template <typename P>
struct BlockTensors {
  P ln1_gain, ln1_bias;  // (H); no bias for llama
  // The fused [q | k | v] projection from H to W = QkvWidth features: gpt2's
  // c_attn (H, 3H); bert's and llama's packed q, k, v weights (W, H).
  P qkv_w;
  P qkv_b;               // (W); llama only with attention_bias
  P proj_w;              // (H, H)
  P proj_b;              // (H); not llama
  P ln2_gain, ln2_bias;  // (H); no bias for llama
  P fc1_w;               // gpt2 (H, F), bert (F, H); llama: packed [gate; up] (2F, H)
  P fc1_b;               // (F); not llama
  P fc2_w;               // gpt2 (F, H), bert and llama (H, F)
  P fc2_b;               // (H); not llama
};

template <typename P>
BlockTensors<P> BindBlock(const ModelDims& d, P base) {
  const ParamLayout l = LayoutFor(d, LayerKind::kBlock);
  auto at = [&](const char* name) { return TensorOrNull(l, base, name); };
  const bool gpt2 = d.arch == Arch::kGpt2, llama = d.arch == Arch::kLlama;
  return {at("ln1.gain"),
          at("ln1.bias"),
          at(gpt2 ? "attn.qkv.weight" : "attn.q.weight"),
          at(gpt2 ? "attn.qkv.bias" : "attn.q.bias"),
          at("attn.proj.weight"),
          at("attn.proj.bias"),
          at("ln2.gain"),
          at("ln2.bias"),
          at(llama ? "mlp.gate.weight" : "mlp.fc1.weight"),
          at("mlp.fc1.bias"),
          at(llama ? "mlp.down.weight" : "mlp.fc2.weight"),
          at("mlp.fc2.bias")};
}

inline kernels::AttentionDims BlockAttnDims(const ModelDims& d, int rows) {
  return {rows,
          d.seq_len,
          d.heads,
          HeadDim(d),
          IsCausal(d) ? kernels::AttnMask::kCausal : kernels::AttnMask::kPaddingOnly,
          KvHeads(d)};
}

// SwiGLU's fc1 produces [gate | up]: twice the inner width.
inline int64_t Fc1Width(const ModelDims& d) {
  return d.arch == Arch::kLlama ? 2 * int64_t{d.ffn} : d.ffn;
}

// Dropout on the attention and MLP outputs (bert, gpt2; llama drops only
// the attention probabilities).
inline bool ResidualDropoutOn(const ModelDims& d, const StepContext& ctx) {
  return DropoutOn(d, ctx) && d.arch != Arch::kLlama;
}

// Workspace regions. N = rows * S tokens, W = QkvWidth, F1 = Fc1Width.
template <class Ops>
struct BlockBuffers {
  using T = typename Ops::T;
  using G = typename Ops::G;
  using S = typename Ops::S;
  // Saved by the forward for the backward.
  T* qkv;      // (N, W), after the rotary embedding (llama)
  T* probs;    // (rows, heads, S, S) pre-dropout attention probabilities
  T* a;        // (N, H) attention output (before the projection)
  T* ln1_in;   // (N, H) post: r1 = x + drop1(o);  pre: unused (LN1's input is x)
  T* ln1_out;  // (N, H) post: x1;                 pre: l1 = LN1(x)
  T* ln2_in;   // (N, H) post: r2 = x1 + drop2(m); pre: x1
  T* ln2_out;  // (N, H) pre: l2 = LN2(x1);        post: unused (LN2's output is y)
  T* h;        // (N, F1) fc1 output (GELU input, or SwiGLU's [gate | up]); llama's
               // backward turns it into dL/dh in place
  T* g;        // (N, F) activation output; the backward reuses it for dg (and GELU's dh)
  S *mean1, *rstd1, *mean2, *rstd2;  // (N)
  uint8_t* keep_probs;               // (rows, heads * S * S)
  uint8_t* keep_attn;                // (rows, S * H)
  uint8_t* keep_mlp;                 // (rows, S * H)
  // Scratch: the projection / fc2 outputs in the forward, gradients in the backward.
  T* o;         // (N, H)
  T* d0;        // (N, H)
  T* d1;        // (N, H)
  T* dqkv;      // (N, W)
  G* gscratch;  // reductions of the bias / gain gradients (GPU)
  T* ascratch;  // attention (GPU)
};

template <class Ops>
BlockBuffers<Ops> CarveBlock(const ModelDims& d, int rows, void* ws, int64_t* used) {
  using T = typename Ops::T;
  using G = typename Ops::G;
  using S = typename Ops::S;
  const int64_t Sq = d.seq_len, H = d.hidden, F = d.ffn, N = rows * Sq;
  const int64_t W = QkvWidth(d), F1 = Fc1Width(d);
  const int64_t probs = int64_t{rows} * d.heads * Sq * Sq;
  const bool post = IsPostNorm(d), resid_drop = d.arch != Arch::kLlama;
  Carver c(ws);
  BlockBuffers<Ops> b;
  b.qkv = c.Take<T>(N * W);
  b.probs = c.Take<T>(probs);
  b.a = c.Take<T>(N * H);
  b.ln1_in = post ? c.Take<T>(N * H) : nullptr;
  b.ln1_out = c.Take<T>(N * H);
  b.ln2_in = c.Take<T>(N * H);
  b.ln2_out = post ? nullptr : c.Take<T>(N * H);
  b.h = c.Take<T>(N * F1);
  b.g = c.Take<T>(N * F);
  b.mean1 = c.Take<S>(N);
  b.rstd1 = c.Take<S>(N);
  b.mean2 = c.Take<S>(N);
  b.rstd2 = c.Take<S>(N);
  b.keep_probs = c.Take<uint8_t>(probs);
  b.keep_attn = resid_drop ? c.Take<uint8_t>(N * H) : nullptr;
  b.keep_mlp = resid_drop ? c.Take<uint8_t>(N * H) : nullptr;
  b.o = c.Take<T>(N * H);
  b.d0 = c.Take<T>(N * H);
  b.d1 = c.Take<T>(N * H);
  b.dqkv = c.Take<T>(N * W);
  b.gscratch = c.Take<G>(
      std::max({Ops::ColumnSumScratchElems(N, W), Ops::ColumnSumScratchElems(N, H),
                Ops::ColumnSumScratchElems(N, F), NormBackwardScratchElems<Ops>(d, N, H)}));
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
  const int64_t W = QkvWidth(d), F1 = Fc1Width(d);
  const bool drop = DropoutOn(d, ctx), resid_drop = ResidualDropoutOn(d, ctx);
  const float pdrop = static_cast<float>(d.dropout);
  const bool post = IsPostNorm(d);
  const kernels::WeightLayout lay = LinearLayoutOf(d);
  const auto ad = BlockAttnDims(d, rows);
  if (drop) {
    k.DropoutMask(KeysFor(d, ctx, kAttnProbsDropoutSite), rows, int64_t{d.heads} * S * S,
                  b.keep_probs);
  }
  if (resid_drop) {
    k.DropoutMask(KeysFor(d, ctx, kAttnOutDropoutSite), rows, S * H, b.keep_attn);
    k.DropoutMask(KeysFor(d, ctx, kMlpOutDropoutSite), rows, S * H, b.keep_mlp);
  }

  // Attention sub-block.
  const T* attn_in = x;
  if (!post) {
    NormForward(k, d, x, p.ln1_gain, p.ln1_bias, N, H, b.ln1_out, b.mean1, b.rstd1);
    attn_in = b.ln1_out;
  }
  k.LinearForward(lay, attn_in, p.qkv_w, p.qkv_b, N, H, W, b.qkv);
  if (d.arch == Arch::kLlama) k.RopeForward(ad, d.rope, ctx.positions, b.qkv);
  k.AttentionForward(ad, b.qkv, attn_mask, drop ? b.keep_probs : nullptr, pdrop, b.probs, b.a,
                     b.ascratch);
  k.LinearForward(lay, b.a, p.proj_w, p.proj_b, N, H, H, b.o);
  if (resid_drop) k.DropoutForward(b.o, b.keep_attn, N * H, pdrop, b.o);
  T* x1;  // the MLP sub-block's residual input
  if (post) {
    k.Add(x, b.o, N * H, b.ln1_in);
    NormForward(k, d, b.ln1_in, p.ln1_gain, p.ln1_bias, N, H, b.ln1_out, b.mean1, b.rstd1);
    x1 = b.ln1_out;
  } else {
    k.Add(x, b.o, N * H, b.ln2_in);
    x1 = b.ln2_in;
  }

  // MLP sub-block.
  const T* mlp_in = x1;
  if (!post) {
    NormForward(k, d, x1, p.ln2_gain, p.ln2_bias, N, H, b.ln2_out, b.mean2, b.rstd2);
    mlp_in = b.ln2_out;
  }
  k.LinearForward(lay, mlp_in, p.fc1_w, p.fc1_b, N, H, F1, b.h);
  if (d.arch == Arch::kLlama) {
    k.SwigluForward(b.h, N, F, b.g);
  } else {
    k.GeluForward(d.gelu, b.h, N * F, b.g);
  }
  k.LinearForward(lay, b.g, p.fc2_w, p.fc2_b, N, F, H, b.o);
  if (resid_drop) k.DropoutForward(b.o, b.keep_mlp, N * H, pdrop, b.o);
  if (post) {
    k.Add(x1, b.o, N * H, b.ln2_in);
    NormForward(k, d, b.ln2_in, p.ln2_gain, p.ln2_bias, N, H, y, b.mean2, b.rstd2);
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
  const int64_t W = QkvWidth(d), F1 = Fc1Width(d);
  int64_t used = 0;
  const auto b = CarveBlock<Ops>(d, rows, workspace, &used);
  const auto p = BindBlock(d, params);
  const auto g = BindBlock(d, dparams);
  const bool drop = DropoutOn(d, ctx), resid_drop = ResidualDropoutOn(d, ctx);
  const float pdrop = static_cast<float>(d.dropout);
  const bool post = IsPostNorm(d);
  const kernels::WeightLayout lay = LinearLayoutOf(d);
  const auto ad = BlockAttnDims(d, rows);
  typename Ops::G* gs = b.gscratch;

  // Recompute the forward; dx is free until written below, so y goes there.
  BlockForwardPass(k, d, ctx, p, x, attn_mask, rows, dx, b);

  // ---- MLP sub-block. Afterwards dres = dL/dx1 (the MLP's residual input).
  T* dres;
  const T* dm;  // dL/d(fc2 output), through Drop2
  if (post) {
    // y = LN2(r2): dr2 -> d0; r2 = x1 + m, so dx1 = dr2 + (MLP path).
    NormBackward(k, d, b.ln2_in, p.ln2_gain, b.mean2, b.rstd2, dy, N, H, b.d0, g.ln2_gain,
                 g.ln2_bias, gs);
    dres = b.d0;
  } else {
    k.Copy(dy, N * H, dx);  // y = x1 + m
    dres = dx;
  }
  if (resid_drop) {
    k.DropoutBackward(dres, b.keep_mlp, N * H, pdrop, b.d1);
    dm = b.d1;
  } else {
    dm = dres;
  }
  k.LinearBackward(lay, b.g, p.fc2_w, dm, N, F, H, nullptr, g.fc2_w, g.fc2_b, gs);  // reads g
  k.LinearBackward(lay, nullptr, p.fc2_w, dm, N, F, H, b.g, nullptr, nullptr, gs);  // g := dg
  T* dh;  // dL/d(fc1 output), (N, F1)
  if (d.arch == Arch::kLlama) {
    k.SwigluBackward(b.h, b.g, N, F, b.h);  // h := d[gate | up]
    dh = b.h;
  } else {
    k.GeluBackward(d.gelu, b.h, b.g, N * F, b.g);  // g := dh
    dh = b.g;
  }
  if (post) {
    // fc1 input is x1 itself: its gradient joins the residual one.
    k.LinearBackward(lay, b.ln1_out, p.fc1_w, dh, N, H, F1, dres, g.fc1_w, g.fc1_b, gs,
                     Accum::kAdd);
  } else {
    // fc1 input is l2 = Norm2(x1): dl2 -> d1 (dm is dead), then through Norm2 into dres.
    k.LinearBackward(lay, b.ln2_out, p.fc1_w, dh, N, H, F1, b.d1, g.fc1_w, g.fc1_b, gs);
    NormBackward(k, d, b.ln2_in, p.ln2_gain, b.mean2, b.rstd2, b.d1, N, H, dres, g.ln2_gain,
                 g.ln2_bias, gs, Accum::kAdd);
  }

  // ---- Attention sub-block. Afterwards dx is complete.
  if (post) {
    // x1 = LN1(r1), r1 = x + o: dx = dr1 + (attention path).
    NormBackward(k, d, b.ln1_in, p.ln1_gain, b.mean1, b.rstd1, dres, N, H, dx, g.ln1_gain,
                 g.ln1_bias, gs);
  }               // pre: x1 = x + o, and dres already is dx.
  const T* dout;  // dL/d(projection output), through Drop1
  if (resid_drop) {
    k.DropoutBackward(dx, b.keep_attn, N * H, pdrop, b.d1);
    dout = b.d1;
  } else {
    dout = dx;
  }
  k.LinearBackward(lay, b.a, p.proj_w, dout, N, H, H, b.d0, g.proj_w, g.proj_b, gs);  // d0 := da
  k.AttentionBackward(ad, b.qkv, drop ? b.keep_probs : nullptr, pdrop, b.probs, b.d0, b.dqkv,
                      b.ascratch);
  if (d.arch == Arch::kLlama) k.RopeBackward(ad, d.rope, ctx.positions, b.dqkv);
  if (post) {
    k.LinearBackward(lay, x, p.qkv_w, b.dqkv, N, H, W, dx, g.qkv_w, g.qkv_b, gs, Accum::kAdd);
  } else {
    k.LinearBackward(lay, b.ln1_out, p.qkv_w, b.dqkv, N, H, W, b.d1, g.qkv_w, g.qkv_b, gs);
    NormBackward(k, d, x, p.ln1_gain, b.mean1, b.rstd1, b.d1, N, H, dx, g.ln1_gain, g.ln1_bias, gs,
                 Accum::kAdd);
  }
}

}  // namespace l2l::model::internal
