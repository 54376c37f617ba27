// CpuOps<T>: the CPU row of the kernel table (DESIGN §2 `kernels`).
//
// The model's layers are written once against an "ops" type: a class with the
// member functions below, called the same way on every backend. CudaOps<T>
// (cuda_ops.h) has the identical member set; a layer template instantiated
// with either runs the same sequence of ops, so the CPU backend is the
// reference for the GPU one op by op and layer by layer.
//
// The table's types:
//   T — storage of activations and of the gathered parameters;
//   G — parameter gradients (accumulated, +=);
//   S — layernorm statistics (mean, rstd).
// On the CPU all three are T (float, or double for finite-difference checks).
//
// Scratch: some GPU ops need caller-provided scratch (so that all device
// memory comes from the arena); the *ScratchElems functions say how much, and
// are 0 here. The layer code carves them from its workspace on every backend.
//
// Loss: CrossEntropy adds its loss sum and target count to the ops object;
// TakeLoss() returns and clears the totals. (On the GPU the totals live on the
// device and TakeLoss synchronises.)
//
// Pointers are host memory; every call completes before it returns.
#pragma once

#include <algorithm>
#include <cstdint>
#include <utility>

#include "l2l/kernels/cpu.h"
#include "l2l/kernels/params.h"

namespace l2l::kernels {

// Summed loss of the CrossEntropy calls since the last TakeLoss.
struct LossTotals {
  double loss_sum = 0;  // nats, over rows with a target
  int64_t count = 0;    // rows with a target
};

template <typename TT>
class CpuOps {
 public:
  using T = TT;
  using G = TT;
  using S = TT;

  static int64_t ColumnSumScratchElems(int64_t, int64_t) { return 0; }
  static int64_t LayerNormBackwardScratchElems(int64_t, int64_t) { return 0; }
  static int64_t RmsNormBackwardScratchElems(int64_t, int64_t) { return 0; }
  static int64_t AttentionScratchElems(const AttentionDims&) { return 0; }
  static int64_t CrossEntropyRowElems(int64_t) { return 0; }  // doubles

  void LinearForward(WeightLayout layout, const T* x, const T* w, const T* bias, int64_t n,
                     int64_t in, int64_t out, T* y) {
    cpu::LinearForward(x, w, bias, n, in, out, y, layout);
  }
  void LinearBackward(WeightLayout layout, const T* x, const T* w, const T* dy, int64_t n,
                      int64_t in, int64_t out, T* dx, G* dw, G* dbias, G* /*scratch*/,
                      Accum dx_accum = Accum::kOverwrite) {
    cpu::LinearBackward(x, w, dy, n, in, out, dx, dw, dbias, dx_accum, layout);
  }
  void LayerNormForward(const T* x, const T* gain, const T* bias, int64_t n, int64_t c, double eps,
                        T* y, S* mean, S* rstd) {
    cpu::LayerNormForward(x, gain, bias, n, c, eps, y, mean, rstd);
  }
  void LayerNormBackward(const T* x, const T* gain, const S* mean, const S* rstd, const T* dy,
                         int64_t n, int64_t c, T* dx, G* dgain, G* dbias, G* /*scratch*/,
                         Accum dx_accum = Accum::kOverwrite) {
    cpu::LayerNormBackward(x, gain, mean, rstd, dy, n, c, dx, dgain, dbias, dx_accum);
  }
  void RmsNormForward(const T* x, const T* gain, int64_t n, int64_t c, double eps, T* y, S* rstd) {
    cpu::RmsNormForward(x, gain, n, c, eps, y, rstd);
  }
  void RmsNormBackward(const T* x, const T* gain, const S* rstd, const T* dy, int64_t n, int64_t c,
                       T* dx, G* dgain, G* /*scratch*/, Accum dx_accum = Accum::kOverwrite) {
    cpu::RmsNormBackward(x, gain, rstd, dy, n, c, dx, dgain, dx_accum);
  }
  void RopeForward(const AttentionDims& d, const RopeParams& p, const int32_t* positions, T* qkv) {
    cpu::RopeForward(d, p, positions, qkv);
  }
  void RopeBackward(const AttentionDims& d, const RopeParams& p, const int32_t* positions,
                    T* dqkv) {
    cpu::RopeBackward(d, p, positions, dqkv);
  }
  void AttentionForward(const AttentionDims& d, const T* qkv, const uint8_t* pad_mask,
                        const uint8_t* prob_keep, float dropout_p, T* probs, T* out,
                        T* /*scratch*/) {
    cpu::AttentionForward(d, qkv, pad_mask, prob_keep, dropout_p, probs, out);
  }
  void AttentionBackward(const AttentionDims& d, const T* qkv, const uint8_t* prob_keep,
                         float dropout_p, const T* probs, const T* dout, T* dqkv, T* /*scratch*/) {
    cpu::AttentionBackward(d, qkv, prob_keep, dropout_p, probs, dout, dqkv);
  }
  void GeluForward(Gelu kind, const T* x, int64_t n, T* y) { cpu::GeluForward(x, n, y, kind); }
  void GeluBackward(Gelu kind, const T* x, const T* dy, int64_t n, T* dx) {
    cpu::GeluBackward(x, dy, n, dx, kind);
  }
  void SwigluForward(const T* gu, int64_t n, int64_t f, T* y) { cpu::SwigluForward(gu, n, f, y); }
  void SwigluBackward(const T* gu, const T* dy, int64_t n, int64_t f, T* dgu) {
    cpu::SwigluBackward(gu, dy, n, f, dgu);
  }
  void DropoutMask(const DropoutKeys& keys, int64_t rows, int64_t row_elems, uint8_t* keep) {
    cpu::DropoutMask(keys, rows, row_elems, keep);
  }
  void DropoutForward(const T* x, const uint8_t* keep, int64_t n, float p, T* y) {
    cpu::DropoutForward(x, keep, n, p, y);
  }
  void DropoutBackward(const T* dy, const uint8_t* keep, int64_t n, float p, T* dx) {
    cpu::DropoutBackward(dy, keep, n, p, dx);
  }
  void Add(const T* a, const T* b, int64_t n, T* y) { cpu::Add(a, b, n, y); }
  void Copy(const T* src, int64_t n, T* dst) { std::copy(src, src + n, dst); }
  void Zero(T* dst, int64_t n) { std::fill(dst, dst + n, T(0)); }

  void EmbeddingForward(const T* table, int64_t vocab, int64_t dim, const int32_t* ids, int64_t n,
                        T* out, Accum accum = Accum::kOverwrite) {
    cpu::EmbeddingForward(table, vocab, dim, ids, n, out, accum);
  }
  void EmbeddingBackward(const int32_t* ids, int64_t n, const T* dout, int64_t vocab, int64_t dim,
                         G* dtable, int32_t skip_id = -1) {
    cpu::EmbeddingBackward(ids, n, dout, vocab, dim, dtable, skip_id);
  }
  void PositionEmbeddingForward(const T* pos, int64_t rows, int64_t seq, int64_t dim, T* out,
                                Accum accum = Accum::kOverwrite) {
    cpu::PositionEmbeddingForward(pos, rows, seq, dim, out, accum);
  }
  void PositionEmbeddingBackward(const T* dout, int64_t rows, int64_t seq, int64_t dim, G* dpos) {
    cpu::PositionEmbeddingBackward(dout, rows, seq, dim, dpos);
  }
  void GatherRows(const T* x, const int32_t* idx, int64_t m, int64_t c, T* out) {
    cpu::GatherRows(x, idx, m, c, out);
  }
  void ScatterRows(const T* src, const int32_t* idx, int64_t m, int64_t c, T* out) {
    cpu::ScatterRows(src, idx, m, c, out);
  }

  // Cross-entropy of logits (n, vocab); see cpu::CrossEntropy. Targets must be
  // in [0, vocab) or kNoTarget (CHECKed). row_loss is unused here.
  void CrossEntropy(const T* logits, const int32_t* targets, int64_t n, int64_t vocab,
                    double grad_scale, T* dlogits, double* /*row_loss*/) {
    const cpu::CrossEntropyResult r =
        cpu::CrossEntropy(logits, targets, n, vocab, grad_scale, dlogits);
    totals_.loss_sum += r.loss_sum;
    totals_.count += r.count;
  }
  LossTotals TakeLoss() { return std::exchange(totals_, LossTotals{}); }

 private:
  LossTotals totals_;
};

}  // namespace l2l::kernels
