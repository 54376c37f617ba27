// CUDA kernels: the GPU mirror of l2l/kernels/cpu.h (DESIGN §2 `kernels`).
// Every op here has the CPU op of the same name as its reference, and
// src/kernels/cuda/cuda_kernels_test.cc runs both on the same random inputs.
//
// Contracts shared by all launchers here:
//  - Pointers are DEVICE memory on the current CUDA device (cudaSetDevice is
//    the caller's job), row-major, contiguous unless a leading dimension says
//    otherwise. Sizes are in elements, never bytes.
//  - Every launcher is asynchronous: it validates its arguments on the host,
//    enqueues work on `stream` and returns. InvalidArgument means nothing was
//    enqueued; Internal carries a CUDA / cuBLAS error with file:line. Kernel
//    faults surface at the caller's next synchronisation, as with any CUDA op.
//    With a zero-size problem nothing is enqueued (CrossEntropy still writes
//    its stats), the result is OK, and untouched pointers may be null.
//  - T is the storage type of activations and of the gathered parameters:
//    float or __nv_bfloat16 (alias bf16). Arithmetic is fp32 throughout
//    (fp32 accumulation in GEMMs, reductions and statistics); bf16 values are
//    rounded once, to nearest even, when stored.
//  - Parameter gradients (dw, dbias, dgain, dtable, dpos) are fp32 and
//    ACCUMULATED (+=) so micro-batches sum; input gradients (dx) are written or
//    added as `Accum` says, in T. Norm statistics (mean, rstd) are fp32.
//  - Determinism: no kernel here uses floating-point atomics. Every reduction
//    runs in an order fixed by the problem shape alone, so results are bitwise
//    reproducible run to run on the same GPU model and toolkit. cuBLAS GEMMs are
//    reproducible under the same conditions (one stream per CublasHandles, a
//    dedicated workspace; see the cuBLAS "Results reproducibility" notes).
//  - Some ops need a caller-provided fp32 or T `scratch` buffer of a size given
//    by the matching *ScratchElems function (so that all device memory comes
//    from the caller's arena); its contents on entry and exit are unspecified.
//  - Launchers are not re-entrant with respect to their outputs and scratch:
//    two calls in flight at once (on different streams) must not share them.
//
// docs/cuda-kernels.md lists the precisions, tolerances against the CPU ops
// and what is not implemented.
#pragma once

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "l2l/core/status.h"
#include "l2l/kernels/adamw.h"
#include "l2l/kernels/params.h"

namespace l2l::kernels::cuda {

using bf16 = __nv_bfloat16;

// ---- cuBLAS handle ---------------------------------------------------------

// Owns one cuBLAS handle and its device workspace on the device that was
// current at Create(). Every GEMM launcher binds the handle to its stream and
// workspace first, so one CublasHandles serves any number of streams used ONE
// AT A TIME; streams that run GEMMs concurrently (or threads) each need their
// own CublasHandles (the workspace is shared by every GEMM of a handle, and a
// handle's stream binding is not thread-safe). The math mode is fixed at
// creation: fp32 GEMMs run in true fp32 (no TF32), bf16 GEMMs accumulate and
// reduce in fp32 (CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION).
//
// The workspace is allocated here with cudaMalloc, outside any Device arena:
// the one device allocation this file makes.
class CublasHandles {
 public:
  // 32 MiB: what cuBLAS itself reserves per handle on Hopper.
  static constexpr size_t kDefaultWorkspaceBytes = size_t{32} << 20;

  static StatusOr<CublasHandles> Create(size_t workspace_bytes = kDefaultWorkspaceBytes);

  CublasHandles(CublasHandles&& other) noexcept;
  CublasHandles& operator=(CublasHandles&& other) noexcept;
  CublasHandles(const CublasHandles&) = delete;
  CublasHandles& operator=(const CublasHandles&) = delete;
  ~CublasHandles();

  cublasHandle_t blas() const { return blas_; }
  int device() const { return device_; }
  size_t workspace_bytes() const { return workspace_bytes_; }

  // Points the handle at `stream` and this object's workspace (cublasSetStream
  // resets the workspace, so both are set each time). Launchers call it.
  Status Bind(cudaStream_t stream) const;

 private:
  CublasHandles() = default;
  void Reset();

  cublasHandle_t blas_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  int device_ = -1;
};

// ---- GEMM --------------------------------------------------------------------

// c (m, n) = alpha * op(a) (m, k) · op(b) (k, n) + beta * c, row-major, with the
// exact semantics of cpu::Gemm (lda / ldb / ldc are row strides as stored; a is
// stored (k, m) when trans_a == kYes; with beta == 0, c need not be
// initialised). Computed by cublasGemmEx with fp32 compute, alpha and beta.
// Supported (TIn, TOut): (float, float), (bf16, bf16), (bf16, float).
// Dimensions and leading dimensions must fit in int (cuBLAS).
template <typename TIn, typename TOut>
Status Gemm(const CublasHandles& handles, cudaStream_t stream, Trans trans_a, Trans trans_b,
            int64_t m, int64_t n, int64_t k, float alpha, const TIn* a, int64_t lda, const TIn* b,
            int64_t ldb, float beta, TOut* c, int64_t ldc);

// `batch` independent Gemms; matrix i of a / b / c starts stride_a / stride_b /
// stride_c elements after matrix i-1 (cublasGemmStridedBatchedEx).
template <typename TIn, typename TOut>
Status GemmStridedBatched(const CublasHandles& handles, cudaStream_t stream, Trans trans_a,
                          Trans trans_b, int64_t m, int64_t n, int64_t k, float alpha, const TIn* a,
                          int64_t lda, int64_t stride_a, const TIn* b, int64_t ldb,
                          int64_t stride_b, float beta, TOut* c, int64_t ldc, int64_t stride_c,
                          int64_t batch);

// ---- Deterministic column sums ---------------------------------------------

// out (c) += Σ_r x (n, c)[r] in fp32: a fixed-order two-pass reduction (rows in
// fixed chunks, chunk partials summed in chunk order). Bitwise reproducible;
// differs from cpu::ColumnSumAccumulate only by summation order.
// scratch: ColumnSumScratchElems(n, c) floats. The size never decreases as n
// or c grow, so scratch sized for (n, c) serves any smaller call (the layers
// size it once for the most rows a call can have).
int64_t ColumnSumScratchElems(int64_t n, int64_t c);
template <typename T>
Status ColumnSumAccumulate(cudaStream_t stream, const T* x, int64_t n, int64_t c, float* out,
                           float* scratch);

// ---- Linear ------------------------------------------------------------------

// y (n, out) = x (n, in) · W + bias (out), W stored (in, out) or (out, in) per
// `layout` (kOutIn, nn.Linear: y = x · wᵀ, done by cuBLAS's transpose flag, no
// copy); exactly cpu::LinearForward. bias may be nullptr. The bias is added
// inside the GEMM's fp32 epilogue (y is rounded once). y must not alias x.
template <typename T>
Status LinearForward(const CublasHandles& handles, cudaStream_t stream, const T* x, const T* w,
                     const T* bias, int64_t n, int64_t in, int64_t out, T* y,
                     WeightLayout layout = WeightLayout::kInOut);

// Backward of LinearForward for dy (n, out), as cpu::LinearBackward:
//   dx (n, in)   = dy · Wᵀ     written or added per dx_accum; skipped if dx == nullptr
//   dw          += ∂L/∂W       in w's own layout ((in, out): xᵀ · dy; (out, in): dyᵀ · x);
//                              fp32, accumulated inside the GEMM (beta = 1); skipped if null
//   dbias (out) += Σ_rows dy   fp32 (ColumnSumAccumulate); skipped if null
// scratch: ColumnSumScratchElems(n, out) floats when dbias != nullptr, else unused.
template <typename T>
Status LinearBackward(const CublasHandles& handles, cudaStream_t stream, const T* x, const T* w,
                      const T* dy, int64_t n, int64_t in, int64_t out, T* dx, float* dw,
                      float* dbias, float* scratch, Accum dx_accum = Accum::kOverwrite,
                      WeightLayout layout = WeightLayout::kInOut);

// ---- Layernorm ---------------------------------------------------------------

// Per row of c elements: y = (x - mean) * rstd * gain + bias, rstd = 1 /
// sqrt(var + eps) (biased variance, two-pass in fp32). mean and rstd (n, fp32)
// are saved when non-null. y may alias x.
template <typename T>
Status LayerNormForward(cudaStream_t stream, const T* x, const T* gain, const T* bias, int64_t n,
                        int64_t c, double eps, T* y, float* mean, float* rstd);

// Backward of LayerNormForward from its input x (n, c) and saved mean / rstd.
// dx (n, c) is written or added per dx_accum; with kOverwrite it may alias dy.
// dgain and dbias (c, fp32) are accumulated by a fixed-order two-pass column
// reduction (no atomics); either may be nullptr.
// scratch: LayerNormBackwardScratchElems(n, c) floats when dgain or dbias is set.
int64_t LayerNormBackwardScratchElems(int64_t n, int64_t c);
template <typename T>
Status LayerNormBackward(cudaStream_t stream, const T* x, const T* gain, const float* mean,
                         const float* rstd, const T* dy, int64_t n, int64_t c, T* dx, float* dgain,
                         float* dbias, float* scratch, Accum dx_accum = Accum::kOverwrite);

// RMSNorm (Llama) per row of c elements, as cpu::RmsNormForward: y = gain *
// (x * rstd), rstd = 1 / sqrt(mean(x²) + eps), the sum of squares in fp32 (one
// warp per row). rstd (n, fp32) is saved when non-null. y may alias x.
template <typename T>
Status RmsNormForward(cudaStream_t stream, const T* x, const T* gain, int64_t n, int64_t c,
                      double eps, T* y, float* rstd);

// Backward of RmsNormForward from its input x (n, c) and saved rstd (n):
// dx (n, c) written or added per dx_accum (with kOverwrite it may alias dy);
// dgain (c, fp32, nullable) accumulated by the fixed-order two-pass column
// reduction (no atomics, bitwise reproducible).
// scratch: RmsNormBackwardScratchElems(n, c) floats when dgain is set; like
// ColumnSumScratchElems it never decreases as n or c grow.
int64_t RmsNormBackwardScratchElems(int64_t n, int64_t c);
template <typename T>
Status RmsNormBackward(cudaStream_t stream, const T* x, const T* gain, const float* rstd,
                       const T* dy, int64_t n, int64_t c, T* dx, float* dgain, float* scratch,
                       Accum dx_accum = Accum::kOverwrite);

// ---- Softmax -----------------------------------------------------------------

// y (n, c) = softmax over each row of x. y may alias x.
template <typename T>
Status SoftmaxForward(cudaStream_t stream, const T* x, int64_t n, int64_t c, T* y);
// dx = y ⊙ (dy - Σ_c dy ⊙ y) per row. dx may alias dy.
template <typename T>
Status SoftmaxBackward(cudaStream_t stream, const T* y, const T* dy, int64_t n, int64_t c, T* dx);

// ---- Attention ---------------------------------------------------------------

// Multi-head and grouped-query self-attention with the semantics and layouts
// of cpu::AttentionForward / AttentionBackward (see AttentionDims: qkv rows
// are d.qkv_width() wide, [q: heads | k: kv_heads | v: kv_heads] heads of
// head_dim, query head h reading key/value head h / d.group()). Per query head,
// all sequences at once: scores = (1/sqrt(hd)) q·kᵀ by a strided-batched GEMM
// into `probs` (stored in T), a fused mask (pad_mask 0 = padded key, optional
// causal) + softmax (+ dropout) kernel, then out = dropout(probs) · v by a
// strided-batched GEMM. The GEMMs read the shared k / v heads in place (no
// repeat_kv copy). A query whose every key is masked gets zero probs and a
// zero output.
// pad_mask (rows, S): kMaskReal / kMaskDocStart bits as on the CPU
// (kernels/cpu.h); may be nullptr (all real). prob_keep (rows, heads*S*S)
// is the DropoutMask of the probabilities (device), or nullptr for none.
// probs (rows, heads, S, S) receives the pre-dropout probabilities.
// scratch: AttentionScratchElems(d) elements of T (forward: used only with
// prob_keep; backward: always). It depends on d.rows and d.seq_len only and
// grows with them, so scratch sized for d serves any call with fewer rows.
int64_t AttentionScratchElems(const AttentionDims& d);
template <typename T>
Status AttentionForward(const CublasHandles& handles, cudaStream_t stream, const AttentionDims& d,
                        const T* qkv, const uint8_t* pad_mask, const uint8_t* prob_keep,
                        float dropout_p, T* probs, T* out, T* scratch);
// dout (rows, S, H) -> dqkv (rows, S, qkv_width), written (every element). A
// key/value head's gradient sums its query heads in head order (each query
// head's GEMM adds onto the previous ones with beta = 1: fp32 inside each
// GEMM, one rounding to T per query head). dqkv must not alias qkv, probs or
// dout.
template <typename T>
Status AttentionBackward(const CublasHandles& handles, cudaStream_t stream, const AttentionDims& d,
                         const T* qkv, const uint8_t* prob_keep, float dropout_p, const T* probs,
                         const T* dout, T* dqkv, T* scratch);

// Rotary embeddings in place on the q and k heads of qkv (rows, S,
// d.qkv_width()) (the q heads then the k heads are contiguous at the start of
// each token's row; v is untouched), as cpu::RopeForward: the pair (i, i +
// hd/2) of every head turns by angle = float(pos) * inv_freq[i] (fp32).
// inv_freq is computed on the host by RopeInvFreq, so it is bitwise the CPU's;
// cos and sin are the accurate cosf / sinf (sincosf, not the fast intrinsics).
// positions (rows * S, device int32) gives token t's position; nullptr means
// t % S. head_dim must be even and at most kRopeMaxHeadDim.
inline constexpr int kRopeMaxHeadDim = 512;
template <typename T>
Status RopeForward(cudaStream_t stream, const AttentionDims& d, const RopeParams& p,
                   const int32_t* positions, T* qkv);
// Backward: the q and k gradients in dqkv turned back by -angle (the
// transpose of the rotation); v's gradient is untouched.
template <typename T>
Status RopeBackward(cudaStream_t stream, const AttentionDims& d, const RopeParams& p,
                    const int32_t* positions, T* dqkv);

// ---- Pointwise ---------------------------------------------------------------

// GELU per `kind` (see Gelu), as cpu::GeluForward: kTanh evaluated as
// x * sigmoid(2u) like the CPU float kernel, kErf as 0.5 x (1 + erff(x/√2)).
// y may alias x.
template <typename T>
Status GeluForward(cudaStream_t stream, const T* x, int64_t n, T* y, Gelu kind = Gelu::kTanh);
// dx = dy ⊙ gelu'(x). dx may alias dy.
template <typename T>
Status GeluBackward(cudaStream_t stream, const T* x, const T* dy, int64_t n, T* dx,
                    Gelu kind = Gelu::kTanh);

// Fused bias + GELU over x (rows, cols): h = x + bias (bias (cols) may be
// nullptr), y = gelu(h), all in fp32 with one rounding per stored value.
// pre (nullable) receives h, the input the backward needs; pre may alias x,
// y may alias x, pre and y must differ.
template <typename T>
Status BiasGeluForward(cudaStream_t stream, const T* x, const T* bias, int64_t rows, int64_t cols,
                       T* pre, T* y, Gelu kind = Gelu::kTanh);
// dx (rows, cols) = dy ⊙ gelu'(pre) (dx may alias dy), and dbias (cols, fp32,
// nullable) += Σ_rows dx (of the stored dx). scratch: ColumnSumScratchElems(rows,
// cols) floats when dbias != nullptr.
template <typename T>
Status BiasGeluBackward(cudaStream_t stream, const T* pre, const T* dy, int64_t rows, int64_t cols,
                        T* dx, float* dbias, float* scratch, Gelu kind = Gelu::kTanh);

// SwiGLU (Llama's MLP), as cpu::SwigluForward: gu (n, 2f) holds [gate | up]
// per row; y (n, f) = silu(gate) ⊙ up, silu(g) = g / (1 + exp(-g)), in fp32.
// y must not alias gu.
template <typename T>
Status SwigluForward(cudaStream_t stream, const T* gu, int64_t n, int64_t f, T* y);
// dgu (n, 2f) written: [dy ⊙ up ⊙ silu'(gate) | dy ⊙ silu(gate)]. dgu may
// alias gu (cpu::SwigluBackward's contract; the llama block does it), not dy.
template <typename T>
Status SwigluBackward(cudaStream_t stream, const T* gu, const T* dy, int64_t n, int64_t f, T* dgu);

// keep (rows, row_elems) = 1 where DropoutKeep(keys, row, elem), else 0: the
// same 64-bit keyed hash as cpu::DropoutMask, so the masks are bit-identical.
// keys.sample_keys is a DEVICE pointer to `rows` keys. keys.p in [0, 1).
Status DropoutMask(cudaStream_t stream, const DropoutKeys& keys, int64_t rows, int64_t row_elems,
                   uint8_t* keep);
// y = keep ? x * (1 / (1 - p)) : 0 (the scale computed in fp32 as
// DropoutScale<float>). For T = float the result is bitwise cpu::DropoutForward.
// y may alias x.
template <typename T>
Status DropoutForward(cudaStream_t stream, const T* x, const uint8_t* keep, int64_t n, float p,
                      T* y);
// dx = keep ? dy / (1 - p) : 0. dx may alias dy.
template <typename T>
Status DropoutBackward(cudaStream_t stream, const T* dy, const uint8_t* keep, int64_t n, float p,
                       T* dx);

// y = a + b over n elements. y may alias a or b.
template <typename T>
Status Add(cudaStream_t stream, const T* a, const T* b, int64_t n, T* y);

// ---- Embeddings and row movement -------------------------------------------

// out (n, dim) = table (vocab, dim)[ids (n)], written or added per accum.
// ids must lie in [0, vocab) (the host validates tokens before upload); a row
// with an id outside it is written as zeros (kOverwrite) or left unchanged
// (kAdd). out must not alias table.
template <typename T>
Status EmbeddingForward(cudaStream_t stream, const T* table, int64_t vocab, int64_t dim,
                        const int32_t* ids, int64_t n, T* out, Accum accum = Accum::kOverwrite);

// dtable (vocab, dim, fp32)[ids[i]] += dout[i] for i = 0..n-1 IN THAT ORDER,
// sort-free and atomic-free: each block owns a bucket of vocab rows and a tile
// of columns, scans the token list in order and applies its own tokens. The
// additions per element happen in exactly cpu::EmbeddingBackward's order, so
// for the same fp32 inputs the result equals the CPU's bit for bit. Ids outside
// [0, vocab), and ids equal to skip_id (padding_idx; -1 = none), are skipped.
template <typename T>
Status EmbeddingBackward(cudaStream_t stream, const int32_t* ids, int64_t n, const T* dout,
                         int64_t vocab, int64_t dim, float* dtable, int32_t skip_id = -1);

// out (rows, seq, dim)[r, s] = pos (seq, dim)[s], written or added per accum.
template <typename T>
Status PositionEmbeddingForward(cudaStream_t stream, const T* pos, int64_t rows, int64_t seq,
                                int64_t dim, T* out, Accum accum = Accum::kOverwrite);
// dpos (seq, dim, fp32)[s] += Σ_r dout (rows, seq, dim)[r, s], rows in order
// (cpu::PositionEmbeddingBackward's order: bitwise equal for equal inputs).
template <typename T>
Status PositionEmbeddingBackward(cudaStream_t stream, const T* dout, int64_t rows, int64_t seq,
                                 int64_t dim, float* dpos);

// out (m, c)[i] = x[idx[i]]. idx entries must be valid rows of x.
template <typename T>
Status GatherRows(cudaStream_t stream, const T* x, const int32_t* idx, int64_t m, int64_t c,
                  T* out);
// out[idx[i]] = src (m, c)[i]; other rows untouched; idx must not repeat.
template <typename T>
Status ScatterRows(cudaStream_t stream, const T* src, const int32_t* idx, int64_t m, int64_t c,
                   T* out);

// ---- Loss --------------------------------------------------------------------

// Written by CrossEntropy into device memory; copy it to the host when needed.
struct CrossEntropyStats {
  double loss_sum = 0;      // Σ over counted rows of -log softmax(logits)[target], nats
  int64_t count = 0;        // rows with target in [0, vocab)
  int64_t bad_targets = 0;  // rows whose target is neither kNoTarget nor in [0, vocab)
};

// Softmax cross-entropy of logits (n, vocab) against targets (n) with the
// semantics of cpu::CrossEntropy: rows with kNoTarget contribute nothing;
// dlogits (nullable, may alias logits) receives grad_scale * (softmax - onehot)
// for counted rows and 0 for the others. Where the CPU CHECK-fails on a bad
// target, this counts it in stats->bad_targets and treats the row as ignored.
// row_loss (n, fp64) receives each row's loss (0 when not counted); the sum is
// taken over it in a fixed order by one block, so it is bitwise reproducible.
// stats is a device pointer, written even when n == 0.
template <typename T>
Status CrossEntropy(cudaStream_t stream, const T* logits, const int32_t* targets, int64_t n,
                    int64_t vocab, double grad_scale, T* dlogits, double* row_loss,
                    CrossEntropyStats* stats);

// ---- Optimizer (resident mode) ---------------------------------------------

// The AdamW update of kernels::AdamWUpdate (l2l/kernels/adamw.h) on device
// arrays, taking the same AdamWParams: the same per-call constants (computed
// on the host in double exactly as the CPU does) and the same fp32 operations
// in the same order with IEEE rounding and no FMA contraction, so p, m, v and
// the bf16 copy are BITWISE those of the CPU kernel. p, m, v, g: n fp32 elements, no overlaps.
// compute_copy (nullable) receives the updated p rounded to bf16 (F32ToBF16: nearest even, quiet
// NaN).
Status AdamWUpdate(cudaStream_t stream, const AdamWParams& hp, int64_t n, float* p, const float* g,
                   float* m, float* v, bf16* compute_copy);
// Same update with an fp32 compute copy (nullable).
Status AdamWUpdateF32Copy(cudaStream_t stream, const AdamWParams& hp, int64_t n, float* p,
                          const float* g, float* m, float* v, float* compute_copy);

// ---- Conversions -------------------------------------------------------------

// y = F32ToBF16(x) (core/dtype.h: nearest even, NaN -> quiet NaN), bitwise.
Status ConvertF32ToBF16(cudaStream_t stream, const float* x, int64_t n, bf16* y);
// y = BF16ToF32(x), exact.
Status ConvertBF16ToF32(cudaStream_t stream, const bf16* x, int64_t n, float* y);

// ---- Gradient norm (resident mode) -----------------------------------------

// *out (DEVICE, one double) = Σ x[i]² over x (n, fp32), each square and the
// sum in double (x[i]² is exact in double, so fp32 gradients cannot overflow
// it): the GPU analogue of kernels::SumSquares for the global gradient norm.
// Order: block b sums a fixed contiguous chunk of x (a length set by n alone)
// in a fixed tree, then one thread adds the block partials in index order. No
// atomics: bitwise reproducible for a given n. Not bitwise kernels::SumSquares,
// whose order differs; both are within rounding of the exact sum. n == 0
// writes 0. NaN or inf in x propagate to *out. Asynchronous on `stream`.
// scratch: SumSquaresScratchElems(n) doubles, 0 when n == 0 and never more than
// kSumSquaresMaxPartials, so a caller may keep one fixed buffer of that size.
inline constexpr int64_t kSumSquaresMaxPartials = 1024;
int64_t SumSquaresScratchElems(int64_t n);
Status SumSquares(cudaStream_t stream, const float* x, int64_t n, double* scratch, double* out);

}  // namespace l2l::kernels::cuda
