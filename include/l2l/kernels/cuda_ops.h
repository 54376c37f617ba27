// CudaOps<T>: the CUDA row of the kernel table; the same member functions as
// CpuOps<T> (cpu_ops.h, which explains the table), implemented by the
// launchers of cuda.h on one stream.
//
// Types: T = float or bf16 (activations and gathered parameters), G = S =
// float (parameter gradients and layernorm / RMSNorm statistics are fp32 on
// the GPU).
//
// Every call enqueues work on `stream` and returns; pointers are device
// memory. A launcher error is an l2l bug or a device fault, never bad user
// input (inputs are validated on the host before upload), so it aborts with
// the launcher's message (DESIGN §7: one check for CUDA calls) rather than
// returning a Status through every layer function.
//
// Loss: each CrossEntropy call writes its stats into the next of `capacity`
// device slots; TakeLoss() copies the used slots to the host, synchronises
// the stream, sums them in call order (deterministic) and frees the slots.
// More calls than slots between two TakeLoss() calls is a CHECK failure (the
// relay sizes the slots for one step).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "l2l/core/check.h"
#include "l2l/device/cuda_device.h"
#include "l2l/kernels/cpu_ops.h"
#include "l2l/kernels/cuda.h"

namespace l2l::kernels {

namespace cuda_ops_internal {
inline void Check(const Status& s) { L2L_CHECK(s.ok()) << s.message(); }
inline void CheckCuda(cudaError_t e, const char* what) {
  L2L_CHECK(e == cudaSuccess) << what << ": " << cudaGetErrorString(e);
}
}  // namespace cuda_ops_internal

// Device slots for the loss statistics, with their pinned host mirror. Owned
// by the caller (the layer executor), shared by the ops objects it creates.
struct CudaLossSlots {
  cuda::CrossEntropyStats* device = nullptr;  // capacity slots
  cuda::CrossEntropyStats* host = nullptr;    // capacity slots, pinned
  int capacity = 0;
  int used = 0;
};

template <typename TT>
class CudaOps {
 public:
  using T = TT;
  using G = float;
  using S = float;

  // `handles`, `device` and `slots` outlive the ops object. Every op runs on
  // the device's compute stream (the handles are bound to it before each
  // GEMM); TakeLoss waits through the device, so its wait watchdog applies.
  CudaOps(const cuda::CublasHandles* handles, CudaDevice* device, CudaLossSlots* slots)
      : h_(handles), device_(device), s_(device->stream(StreamKind::kCompute)), slots_(slots) {}

  static int64_t ColumnSumScratchElems(int64_t n, int64_t c) {
    return cuda::ColumnSumScratchElems(n, c);
  }
  static int64_t LayerNormBackwardScratchElems(int64_t n, int64_t c) {
    return cuda::LayerNormBackwardScratchElems(n, c);
  }
  static int64_t RmsNormBackwardScratchElems(int64_t n, int64_t c) {
    return cuda::RmsNormBackwardScratchElems(n, c);
  }
  static int64_t AttentionScratchElems(const AttentionDims& d) {
    return cuda::AttentionScratchElems(d);
  }
  static int64_t CrossEntropyRowElems(int64_t n) { return n; }

  void LinearForward(WeightLayout layout, const T* x, const T* w, const T* bias, int64_t n,
                     int64_t in, int64_t out, T* y) {
    Check(cuda::LinearForward(*h_, s_, x, w, bias, n, in, out, y, layout));
  }
  void LinearBackward(WeightLayout layout, const T* x, const T* w, const T* dy, int64_t n,
                      int64_t in, int64_t out, T* dx, G* dw, G* dbias, G* scratch,
                      Accum dx_accum = Accum::kOverwrite) {
    Check(cuda::LinearBackward(*h_, s_, x, w, dy, n, in, out, dx, dw, dbias, scratch, dx_accum,
                               layout));
  }
  void LayerNormForward(const T* x, const T* gain, const T* bias, int64_t n, int64_t c, double eps,
                        T* y, S* mean, S* rstd) {
    Check(cuda::LayerNormForward(s_, x, gain, bias, n, c, eps, y, mean, rstd));
  }
  void LayerNormBackward(const T* x, const T* gain, const S* mean, const S* rstd, const T* dy,
                         int64_t n, int64_t c, T* dx, G* dgain, G* dbias, G* scratch,
                         Accum dx_accum = Accum::kOverwrite) {
    Check(cuda::LayerNormBackward(s_, x, gain, mean, rstd, dy, n, c, dx, dgain, dbias, scratch,
                                  dx_accum));
  }
  void RmsNormForward(const T* x, const T* gain, int64_t n, int64_t c, double eps, T* y, S* rstd) {
    Check(cuda::RmsNormForward(s_, x, gain, n, c, eps, y, rstd));
  }
  void RmsNormBackward(const T* x, const T* gain, const S* rstd, const T* dy, int64_t n, int64_t c,
                       T* dx, G* dgain, G* scratch, Accum dx_accum = Accum::kOverwrite) {
    Check(cuda::RmsNormBackward(s_, x, gain, rstd, dy, n, c, dx, dgain, scratch, dx_accum));
  }
  void RopeForward(const AttentionDims& d, const RopeParams& p, const int32_t* positions, T* qkv) {
    Check(cuda::RopeForward(s_, d, p, positions, qkv));
  }
  void RopeBackward(const AttentionDims& d, const RopeParams& p, const int32_t* positions,
                    T* dqkv) {
    Check(cuda::RopeBackward(s_, d, p, positions, dqkv));
  }
  void AttentionForward(const AttentionDims& d, const T* qkv, const uint8_t* pad_mask,
                        const uint8_t* prob_keep, float dropout_p, T* probs, T* out, T* scratch) {
    Check(cuda::AttentionForward(*h_, s_, d, qkv, pad_mask, prob_keep, dropout_p, probs, out,
                                 scratch));
  }
  void AttentionBackward(const AttentionDims& d, const T* qkv, const uint8_t* prob_keep,
                         float dropout_p, const T* probs, const T* dout, T* dqkv, T* scratch) {
    Check(
        cuda::AttentionBackward(*h_, s_, d, qkv, prob_keep, dropout_p, probs, dout, dqkv, scratch));
  }
  void GeluForward(Gelu kind, const T* x, int64_t n, T* y) {
    Check(cuda::GeluForward(s_, x, n, y, kind));
  }
  void GeluBackward(Gelu kind, const T* x, const T* dy, int64_t n, T* dx) {
    Check(cuda::GeluBackward(s_, x, dy, n, dx, kind));
  }
  void SwigluForward(const T* gu, int64_t n, int64_t f, T* y) {
    Check(cuda::SwigluForward(s_, gu, n, f, y));
  }
  void SwigluBackward(const T* gu, const T* dy, int64_t n, int64_t f, T* dgu) {
    Check(cuda::SwigluBackward(s_, gu, dy, n, f, dgu));
  }
  void DropoutMask(const DropoutKeys& keys, int64_t rows, int64_t row_elems, uint8_t* keep) {
    Check(cuda::DropoutMask(s_, keys, rows, row_elems, keep));
  }
  void DropoutForward(const T* x, const uint8_t* keep, int64_t n, float p, T* y) {
    Check(cuda::DropoutForward(s_, x, keep, n, p, y));
  }
  void DropoutBackward(const T* dy, const uint8_t* keep, int64_t n, float p, T* dx) {
    Check(cuda::DropoutBackward(s_, dy, keep, n, p, dx));
  }
  void Add(const T* a, const T* b, int64_t n, T* y) { Check(cuda::Add(s_, a, b, n, y)); }
  void Copy(const T* src, int64_t n, T* dst) {
    if (n == 0 || src == dst) return;
    CheckCuda(cudaMemcpyAsync(dst, src, n * sizeof(T), cudaMemcpyDeviceToDevice, s_),
              "CudaOps::Copy");
  }
  void Zero(T* dst, int64_t n) {
    if (n == 0) return;  // all-zero bits are +0 in float and bf16
    CheckCuda(cudaMemsetAsync(dst, 0, n * sizeof(T), s_), "CudaOps::Zero");
  }

  void EmbeddingForward(const T* table, int64_t vocab, int64_t dim, const int32_t* ids, int64_t n,
                        T* out, Accum accum = Accum::kOverwrite) {
    Check(cuda::EmbeddingForward(s_, table, vocab, dim, ids, n, out, accum));
  }
  void EmbeddingBackward(const int32_t* ids, int64_t n, const T* dout, int64_t vocab, int64_t dim,
                         G* dtable, int32_t skip_id = -1) {
    Check(cuda::EmbeddingBackward(s_, ids, n, dout, vocab, dim, dtable, skip_id));
  }
  void PositionEmbeddingForward(const T* pos, int64_t rows, int64_t seq, int64_t dim, T* out,
                                Accum accum = Accum::kOverwrite) {
    Check(cuda::PositionEmbeddingForward(s_, pos, rows, seq, dim, out, accum));
  }
  void PositionEmbeddingBackward(const T* dout, int64_t rows, int64_t seq, int64_t dim, G* dpos) {
    Check(cuda::PositionEmbeddingBackward(s_, dout, rows, seq, dim, dpos));
  }
  void GatherRows(const T* x, const int32_t* idx, int64_t m, int64_t c, T* out) {
    Check(cuda::GatherRows(s_, x, idx, m, c, out));
  }
  void ScatterRows(const T* src, const int32_t* idx, int64_t m, int64_t c, T* out) {
    Check(cuda::ScatterRows(s_, src, idx, m, c, out));
  }

  // row_loss: CrossEntropyRowElems(n) doubles of device scratch.
  void CrossEntropy(const T* logits, const int32_t* targets, int64_t n, int64_t vocab,
                    double grad_scale, T* dlogits, double* row_loss) {
    L2L_CHECK(slots_ != nullptr && slots_->used < slots_->capacity)
        << "more cross-entropy calls than loss slots (" << (slots_ ? slots_->capacity : 0)
        << ") between two TakeLoss calls";
    Check(cuda::CrossEntropy(s_, logits, targets, n, vocab, grad_scale, dlogits, row_loss,
                             slots_->device + slots_->used));
    ++slots_->used;
  }

  // Synchronises the stream, also when no loss was computed (no targets):
  // the relay relies on it to know the step's work, uploads included, is
  // done. A target outside [0, vocab) is a CHECK failure, as on the CPU (the
  // relay validates targets before upload).
  LossTotals TakeLoss() {
    LossTotals t;
    const int used = slots_ == nullptr ? 0 : slots_->used;
    if (used > 0) {
      CheckCuda(cudaMemcpyAsync(slots_->host, slots_->device,
                                used * sizeof(cuda::CrossEntropyStats), cudaMemcpyDeviceToHost, s_),
                "CudaOps::TakeLoss copy");
    }
    device_->SynchronizeStream(StreamKind::kCompute);
    if (used == 0) return t;
    for (int i = 0; i < slots_->used; ++i) {
      L2L_CHECK_EQ(slots_->host[i].bad_targets, 0) << "cross-entropy target outside the vocab";
      t.loss_sum += slots_->host[i].loss_sum;
      t.count += slots_->host[i].count;
    }
    slots_->used = 0;
    return t;
  }

 private:
  static void Check(const Status& s) { cuda_ops_internal::Check(s); }
  static void CheckCuda(cudaError_t e, const char* what) { cuda_ops_internal::CheckCuda(e, what); }

  const cuda::CublasHandles* h_;
  CudaDevice* device_;
  cudaStream_t s_;
  CudaLossSlots* slots_;
};

}  // namespace l2l::kernels
