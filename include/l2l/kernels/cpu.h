// CPU kernels: the reference implementation of every op a transformer layer
// needs (DESIGN §2 `kernels`). A CUDA backend mirrors these signatures and is
// tested against them on random inputs.
//
// Contracts shared by all kernels here:
//  - Pointers are host memory, row-major, contiguous unless a leading
//    dimension (ld*) says otherwise. Sizes are in elements.
//  - T is float or double (double is used by the finite-difference gradient
//    checks).
//  - Parameter gradients (dw, dbias, dgain, dtable, ...) are ACCUMULATED (+=);
//    input gradients (dx) are written or added as `Accum` says.
//  - Reductions over rows (bias / gain / embedding gradients, loss sums) run in
//    a fixed order that depends on neither the thread count nor the schedule:
//    results are bitwise reproducible run to run and at any OMP_NUM_THREADS.
//    GEMMs go to OpenBLAS, whose results are reproducible for a fixed
//    OPENBLAS_NUM_THREADS.
//  - Row loops are parallelised with OpenMP. The kernels are not re-entrant
//    with respect to their outputs: do not share output buffers across
//    concurrent calls.
#pragma once

#include <cstdint>

#include "l2l/kernels/params.h"

namespace l2l::kernels::cpu {

// ---- GEMM ------------------------------------------------------------------

// c (m, n) = alpha * op(a) (m, k) · op(b) (k, n) + beta * c, row-major.
// lda / ldb / ldc are the row strides of the matrices as stored (a is stored
// (k, m) when trans_a == kYes). With beta == 0, c need not be initialised.
template <typename T>
void Gemm(Trans trans_a, Trans trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
          int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc);

// y (n, out) = x (n, in) · W + bias (out), W stored (in, out) or (out, in)
// per `layout` (nn.Linear: y = x · wᵀ). bias may be nullptr. y must not
// alias x.
template <typename T>
void LinearForward(const T* x, const T* w, const T* bias, int64_t n, int64_t in, int64_t out, T* y,
                   WeightLayout layout = WeightLayout::kInOut);

// Backward of LinearForward for dy (n, out):
//   dx (n, in)  = dy · Wᵀ       written or added per dx_accum; skipped if dx == nullptr
//   dw         += ∂L/∂W         in w's layout ((in, out): xᵀ · dy; (out, in): dyᵀ · x);
//                               skipped if dw == nullptr
//   dbias (out) += Σ_rows dy    skipped if dbias == nullptr
template <typename T>
void LinearBackward(const T* x, const T* w, const T* dy, int64_t n, int64_t in, int64_t out, T* dx,
                    T* dw, T* dbias, Accum dx_accum = Accum::kOverwrite,
                    WeightLayout layout = WeightLayout::kInOut);

// out (c) += Σ_r x (n, c)[r], rows added in order 0..n-1.
template <typename T>
void ColumnSumAccumulate(const T* x, int64_t n, int64_t c, T* out);

// ---- Layernorm ---------------------------------------------------------------

// Per row of c elements: y = (x - mean) * rstd * gain + bias with
// rstd = 1 / sqrt(var + eps) (biased variance). mean and rstd (n) are saved for
// the backward when non-null. y may alias x.
template <typename T>
void LayerNormForward(const T* x, const T* gain, const T* bias, int64_t n, int64_t c, double eps,
                      T* y, T* mean, T* rstd);

// Backward of LayerNormForward given the forward's input x (n, c) and its saved
// mean / rstd (n). dx (n, c) is written or added per dx_accum; with kOverwrite
// it may alias dy. dgain and dbias (c) are accumulated.
template <typename T>
void LayerNormBackward(const T* x, const T* gain, const T* mean, const T* rstd, const T* dy,
                       int64_t n, int64_t c, T* dx, T* dgain, T* dbias,
                       Accum dx_accum = Accum::kOverwrite);

// RMSNorm (Llama) per row of c elements: y = x * rstd * gain with
// rstd = 1 / sqrt(mean(x²) + eps), as transformers' LlamaRMSNorm. rstd (n) is
// saved for the backward when non-null. y may alias x.
template <typename T>
void RmsNormForward(const T* x, const T* gain, int64_t n, int64_t c, double eps, T* y, T* rstd);

// Backward of RmsNormForward given its input x (n, c) and saved rstd (n):
// dx written or added per dx_accum (kOverwrite may alias dy); dgain (c)
// accumulated, rows in order.
template <typename T>
void RmsNormBackward(const T* x, const T* gain, const T* rstd, const T* dy, int64_t n, int64_t c,
                     T* dx, T* dgain, Accum dx_accum = Accum::kOverwrite);

// ---- Softmax -----------------------------------------------------------------

// y (n, c) = softmax over each row of x (n, c). y may alias x.
template <typename T>
void SoftmaxForward(const T* x, int64_t n, int64_t c, T* y);

// dx = y ⊙ (dy - Σ_c dy ⊙ y) per row, given the forward's output y. dx may alias dy.
template <typename T>
void SoftmaxBackward(const T* y, const T* dy, int64_t n, int64_t c, T* dx);

// ---- Attention ---------------------------------------------------------------

// Multi-head self-attention (see AttentionDims for the layouts):
//   scores = q·kᵀ / sqrt(head_dim), masked where pad_mask[row, key] == 0 or
//   (kCausal) key > query; probs = softmax(scores) (masked entries exactly 0;
//   a query whose every key is masked gets all-zero probs and a zero output);
//   out = dropout(probs) · v.
// pad_mask (rows, seq_len): kMaskReal per real token, plus kMaskDocStart where
// a document starts (causal only: queries then attend within their document);
// may be nullptr (all real, one document).
// prob_keep (rows, heads * seq_len * seq_len) is the dropout mask of the
// probabilities from DropoutMask (element index (h * S + i) * S + j within a
// row), or nullptr for no dropout; dropout_p is its drop probability.
// probs (rows, heads, S, S) receives the pre-dropout probabilities, which the
// backward needs.
template <typename T>
void AttentionForward(const AttentionDims& d, const T* qkv, const uint8_t* pad_mask,
                      const uint8_t* prob_keep, float dropout_p, T* probs, T* out);

// Backward of AttentionForward with the same masks and the saved probs;
// dout (rows, S, H) -> dqkv (rows, S, qkv_width), written. With grouped
// heads, a key/value head's gradient sums its query heads in head order.
template <typename T>
void AttentionBackward(const AttentionDims& d, const T* qkv, const uint8_t* prob_keep,
                       float dropout_p, const T* probs, const T* dout, T* dqkv);

// Rotary embeddings in place on the q and k parts of qkv (rows, S,
// d.qkv_width()), see RopeParams. The position of token s of a row is
// positions[row * S + s] when positions is non-null, else s.
template <typename T>
void RopeForward(const AttentionDims& d, const RopeParams& p, const int32_t* positions, T* qkv);
// Backward: turns the q and k gradients in dqkv back by the same angles
// (the transpose of a rotation); v's gradient is untouched.
template <typename T>
void RopeBackward(const AttentionDims& d, const RopeParams& p, const int32_t* positions, T* dqkv);

// ---- Pointwise ---------------------------------------------------------------

// GELU (see Gelu: tanh form or exact erf). y may alias x.
template <typename T>
void GeluForward(const T* x, int64_t n, T* y, Gelu kind = Gelu::kTanh);
// dx = dy ⊙ gelu'(x) for the forward's input x. dx may alias dy.
template <typename T>
void GeluBackward(const T* x, const T* dy, int64_t n, T* dx, Gelu kind = Gelu::kTanh);

// SwiGLU (Llama's MLP): gu (n, 2f) holds [gate | up] per row;
// y (n, f) = silu(gate) ⊙ up with silu(g) = g * sigmoid(g).
template <typename T>
void SwigluForward(const T* gu, int64_t n, int64_t f, T* y);
// dgu (n, 2f) written: [dy ⊙ up ⊙ silu'(gate) | dy ⊙ silu(gate)]. dgu may
// alias gu (each (gate, up) pair is read before it is written), not dy.
template <typename T>
void SwigluBackward(const T* gu, const T* dy, int64_t n, int64_t f, T* dgu);

// keep (rows, row_elems) = 1 where DropoutKeep(keys, row, elem), else 0.
void DropoutMask(const DropoutKeys& keys, int64_t rows, int64_t row_elems, uint8_t* keep);
// y = keep ? x / (1 - p) : 0 over n elements. y may alias x.
template <typename T>
void DropoutForward(const T* x, const uint8_t* keep, int64_t n, float p, T* y);
// dx = keep ? dy / (1 - p) : 0. dx may alias dy.
template <typename T>
void DropoutBackward(const T* dy, const uint8_t* keep, int64_t n, float p, T* dx);

// y = a + b over n elements (residual connection). y may alias a or b.
template <typename T>
void Add(const T* a, const T* b, int64_t n, T* y);

// ---- Embeddings and row movement -------------------------------------------

// out (n, dim) = table (vocab, dim)[ids (n)], written or added per accum.
// CHECKs 0 <= id < vocab.
template <typename T>
void EmbeddingForward(const T* table, int64_t vocab, int64_t dim, const int32_t* ids, int64_t n,
                      T* out, Accum accum = Accum::kOverwrite);

// dtable[ids[i]] += dout[i] for i = 0..n-1 in that order (deterministic: each
// thread owns a block of columns and walks all tokens in order). Tokens equal
// to skip_id add nothing (torch's padding_idx; -1 = none).
template <typename T>
void EmbeddingBackward(const int32_t* ids, int64_t n, const T* dout, int64_t vocab, int64_t dim,
                       T* dtable, int32_t skip_id = -1);

// out (rows, seq, dim)[r, s] = pos (seq, dim)[s], written or added per accum.
template <typename T>
void PositionEmbeddingForward(const T* pos, int64_t rows, int64_t seq, int64_t dim, T* out,
                              Accum accum = Accum::kOverwrite);

// dpos (seq, dim)[s] += Σ_r dout (rows, seq, dim)[r, s], rows in order.
template <typename T>
void PositionEmbeddingBackward(const T* dout, int64_t rows, int64_t seq, int64_t dim, T* dpos);

// out (m, c)[i] = x[idx[i]] for i < m.
template <typename T>
void GatherRows(const T* x, const int32_t* idx, int64_t m, int64_t c, T* out);
// out[idx[i]] = src (m, c)[i] for i < m; other rows of out are untouched.
// idx must not repeat.
template <typename T>
void ScatterRows(const T* src, const int32_t* idx, int64_t m, int64_t c, T* out);

// ---- Loss --------------------------------------------------------------------

struct CrossEntropyResult {
  double loss_sum = 0;  // Σ over rows with target != -1 of -log softmax(logits)[target], nats
  int64_t count = 0;    // number of such rows
};

// Softmax cross-entropy of logits (n, vocab) against targets (n); rows whose
// target is kNoTarget contribute nothing. CHECKs other targets are in
// [0, vocab). If dlogits (n, vocab) is non-null it receives
// grad_scale * (softmax - onehot) for counted rows and 0 for ignored rows; it
// may alias logits. The loss is summed in double in a fixed order.
template <typename T>
CrossEntropyResult CrossEntropy(const T* logits, const int32_t* targets, int64_t n, int64_t vocab,
                                double grad_scale, T* dlogits);

}  // namespace l2l::kernels::cpu
