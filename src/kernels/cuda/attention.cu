// Row softmax and multi-head / grouped-query self-attention. Attention runs
// query head by query head over all sequences at once: scores and products
// are strided-batched cuBLAS GEMMs (batch = the rows, stride = one sequence),
// and the mask + softmax + dropout forward and its backward are fused
// warp-per-query-row kernels. The (S, S) probabilities are materialised (no
// flash-style tiling): the backward needs them, exactly as the CPU kernel
// saves them. Grouped-query attention needs no repeat_kv copy: the GEMMs of
// query head h read key/value head h / group in place (any head's columns are
// a strided matrix of the qkv rows), and in the backward the query heads of a
// group add their dk / dv onto the first one's (beta = 1), in head order.
#include <cmath>
#include <type_traits>

#include "common.cuh"

namespace l2l::kernels::cuda {
namespace {

using internal::kRowWarps;
using internal::kWarp;
using internal::Load;
using internal::RowBlocks;
using internal::Store;
using internal::WarpMax;
using internal::WarpSum;

// The value v takes once stored as T (what a later Load returns).
template <typename T>
__device__ __forceinline__ float AsStored(float v) {
  if constexpr (std::is_same_v<T, float>) {
    return v;
  } else {
    return internal::BF16BitsToF32(internal::F32ToBF16Bits(v));
  }
}

// ---- Generic row softmax -------------------------------------------------------

template <typename T>
__global__ void __launch_bounds__(kRowWarps* kWarp)
    SoftmaxForwardKernel(const T* x, int64_t n, int64_t c, T* y) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowWarps + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (row >= n) return;
  const T* xr = x + row * c;
  T* yr = y + row * c;
  float mx = -INFINITY;
  for (int64_t j = lane; j < c; j += kWarp) mx = fmaxf(mx, Load(xr + j));
  mx = WarpMax(mx);
  float sum = 0.0f;
  for (int64_t j = lane; j < c; j += kWarp) sum += expf(Load(xr + j) - mx);
  const float inv = 1.0f / WarpSum(sum);
  for (int64_t j = lane; j < c; j += kWarp) Store(yr + j, expf(Load(xr + j) - mx) * inv);
}

template <typename T>
__global__ void __launch_bounds__(kRowWarps* kWarp)
    SoftmaxBackwardKernel(const T* y, const T* dy, int64_t n, int64_t c, T* dx) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowWarps + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (row >= n) return;
  const T* yr = y + row * c;
  const T* dyr = dy + row * c;
  T* dxr = dx + row * c;
  float dot = 0.0f;
  for (int64_t j = lane; j < c; j += kWarp) dot += Load(dyr + j) * Load(yr + j);
  dot = WarpSum(dot);
  for (int64_t j = lane; j < c; j += kWarp) Store(dxr + j, Load(yr + j) * (Load(dyr + j) - dot));
}

// ---- Attention -----------------------------------------------------------------

// Where one head's (S, S) blocks live. probs / keep: (rows, heads, S, S) at
// this head, so sequence r starts r * heads * S * S further; scratch blocks:
// (rows, S, S).
struct HeadLayout {
  int64_t rows, seq, heads;
  bool causal;
  __device__ int64_t pair_offset(int64_t r) const { return r * heads * seq * seq; }
  __device__ int64_t scratch_offset(int64_t r) const { return r * seq * seq; }
};

// One warp per query row (r, i) of head h: scores (stored in probs by the
// GEMM) -> masked softmax, written back to probs; with keep, also the dropped
// probabilities keep ? p * keep_scale : 0 into `dropped` (scratch layout).
template <typename T>
__global__ void __launch_bounds__(kRowWarps* kWarp)
    AttnSoftmaxForwardKernel(HeadLayout l, T* probs, const uint8_t* pad, const uint8_t* keep,
                             float keep_scale, T* dropped) {
  const int64_t q = static_cast<int64_t>(blockIdx.x) * kRowWarps + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (q >= l.rows * l.seq) return;
  const int64_t r = q / l.seq, i = q % l.seq, S = l.seq;
  T* p = probs + l.pair_offset(r) + i * S;
  const uint8_t* kp = keep != nullptr ? keep + l.pair_offset(r) + i * S : nullptr;
  T* pd = dropped != nullptr ? dropped + l.scratch_offset(r) + i * S : nullptr;
  const uint8_t* pad_r = pad != nullptr ? pad + r * S : nullptr;
  const int64_t jend = l.causal ? i + 1 : S;  // keys j < jend may be attended
  // Causal: keys before the query's document start (the last kMaskDocStart at
  // or before i) are masked. Positions are < 2^24, exact in float.
  float start = 0.0f;
  if (l.causal && pad_r != nullptr) {
    for (int64_t j = lane; j <= i; j += kWarp) {
      if ((pad_r[j] & kMaskDocStart) != 0) start = fmaxf(start, static_cast<float>(j));
    }
    start = WarpMax(start);
  }
  const int64_t jbegin = static_cast<int64_t>(start);
  auto attended = [&](int64_t j) {
    return j >= jbegin && j < jend && (pad_r == nullptr || (pad_r[j] & kMaskReal) != 0);
  };

  float mx = -INFINITY;
  for (int64_t j = lane; j < jend; j += kWarp) {
    if (attended(j)) mx = fmaxf(mx, Load(p + j));
  }
  mx = WarpMax(mx);
  if (mx == -INFINITY) {  // every key masked: zero probabilities, zero output
    for (int64_t j = lane; j < S; j += kWarp) {
      Store(p + j, 0.0f);
      if (pd != nullptr) Store(pd + j, 0.0f);
    }
    return;
  }
  float sum = 0.0f;
  for (int64_t j = lane; j < jend; j += kWarp) {
    if (attended(j)) sum += expf(Load(p + j) - mx);
  }
  const float inv = 1.0f / WarpSum(sum);
  // Each lane reads, then overwrites, its own j: in place is safe.
  for (int64_t j = lane; j < S; j += kWarp) {
    const float pr = attended(j) ? AsStored<T>(expf(Load(p + j) - mx) * inv) : 0.0f;
    Store(p + j, pr);
    if (pd != nullptr) Store(pd + j, kp[j] ? pr * keep_scale : 0.0f);
  }
}

// One warp per query row (r, i) of head h. In: g = dL/d(dropped probs) (the
// dout · vᵀ GEMM, scratch layout). Out, in place: dL/d(scores) =
// scale * p ⊙ (dp - Σ_j p_j dp_j) with dp = keep-scaled g. With keep, also the
// dropped probabilities into `dropped` for the dv GEMM. Masked keys have
// p = 0 and get no gradient.
template <typename T>
__global__ void __launch_bounds__(kRowWarps* kWarp)
    AttnSoftmaxBackwardKernel(HeadLayout l, const T* probs, const uint8_t* keep, float keep_scale,
                              float scale, T* grad, T* dropped) {
  const int64_t q = static_cast<int64_t>(blockIdx.x) * kRowWarps + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (q >= l.rows * l.seq) return;
  const int64_t r = q / l.seq, i = q % l.seq, S = l.seq;
  const T* p = probs + l.pair_offset(r) + i * S;
  const uint8_t* kp = keep != nullptr ? keep + l.pair_offset(r) + i * S : nullptr;
  T* g = grad + l.scratch_offset(r) + i * S;
  T* pd = dropped != nullptr ? dropped + l.scratch_offset(r) + i * S : nullptr;
  auto dp = [&](int64_t j) {
    const float gj = Load(g + j);
    return kp == nullptr ? gj : (kp[j] ? gj * keep_scale : 0.0f);
  };
  float dsum = 0.0f;
  for (int64_t j = lane; j < S; j += kWarp) dsum += Load(p + j) * dp(j);
  dsum = WarpSum(dsum);
  for (int64_t j = lane; j < S; j += kWarp) {  // each lane reads, then overwrites, its own j
    const float pj = Load(p + j);
    const float ds = scale * pj * (dp(j) - dsum);
    if (pd != nullptr) Store(pd + j, kp[j] ? pj * keep_scale : 0.0f);
    Store(g + j, ds);
  }
}

Status ValidateAttention(internal::Validator& v, const AttentionDims& d) {
  return v.NonNegative("rows", d.rows)
      .Positive("seq_len", d.seq_len)
      .Positive("heads", d.heads)
      .Positive("head_dim", d.head_dim)
      .NonNegative("kv_heads", d.kv_heads)
      // (heads > 0 checked above, but every argument is evaluated: guard the %)
      .That(d.num_kv_heads() > 0 && d.kv_heads <= d.heads && d.heads % d.num_kv_heads() == 0,
            "kv_heads dividing heads")
      .status();
}

// Where query head h's q columns and its key/value head's k and v columns
// start within a token's qkv row of width d.qkv_width():
// [q: heads * hd | k: kv_heads * hd | v: kv_heads * hd].
struct HeadColumns {
  int64_t q, k, v;
  bool first_of_group;  // h is the first query head of its key/value head
};
HeadColumns ColumnsOf(const AttentionDims& d, int64_t h) {
  const int64_t hd = d.head_dim, kh = h / d.group();
  return {h * hd, d.hidden() + kh * hd, d.hidden() + d.kv_hidden() + kh * hd, h % d.group() == 0};
}

}  // namespace

template <typename T>
Status SoftmaxForward(cudaStream_t stream, const T* x, int64_t n, int64_t c, T* y) {
  RETURN_IF_ERROR(internal::Validator("SoftmaxForward")
                      .NonNegative("n", n)
                      .Positive("c", c)
                      .NotNull("x", x, n * c)
                      .NotNull("y", y, n * c)
                      .status());
  if (n == 0) return OkStatus();
  SoftmaxForwardKernel<<<RowBlocks(n), kRowWarps * kWarp, 0, stream>>>(x, n, c, y);
  L2L_CUDA_RETURN_IF_LAUNCH_FAILED();
  return OkStatus();
}

template <typename T>
Status SoftmaxBackward(cudaStream_t stream, const T* y, const T* dy, int64_t n, int64_t c, T* dx) {
  RETURN_IF_ERROR(internal::Validator("SoftmaxBackward")
                      .NonNegative("n", n)
                      .Positive("c", c)
                      .NotNull("y", y, n * c)
                      .NotNull("dy", dy, n * c)
                      .NotNull("dx", dx, n * c)
                      .status());
  if (n == 0) return OkStatus();
  SoftmaxBackwardKernel<<<RowBlocks(n), kRowWarps * kWarp, 0, stream>>>(y, dy, n, c, dx);
  L2L_CUDA_RETURN_IF_LAUNCH_FAILED();
  return OkStatus();
}

int64_t AttentionScratchElems(const AttentionDims& d) {
  return 2 * int64_t{d.rows} * d.seq_len * d.seq_len;
}

template <typename T>
Status AttentionForward(const CublasHandles& handles, cudaStream_t stream, const AttentionDims& d,
                        const T* qkv, const uint8_t* pad_mask, const uint8_t* prob_keep,
                        float dropout_p, T* probs, T* out, T* scratch) {
  internal::Validator v("AttentionForward");
  RETURN_IF_ERROR(ValidateAttention(v, d));
  const int64_t rows = d.rows, S = d.seq_len, H = d.hidden(), hd = d.head_dim;
  const int64_t W = d.qkv_width();  // 3H without grouping
  RETURN_IF_ERROR(v.DropoutP("dropout_p", dropout_p)
                      .NotNull("qkv", qkv, rows * S * W)
                      .NotNull("probs", probs, rows * d.heads * S * S)
                      .NotNull("out", out, rows * S * H)
                      .NotNull("scratch", scratch, prob_keep != nullptr ? rows * S * S : 0)
                      .status());
  if (rows == 0) return OkStatus();
  const HeadLayout layout{rows, S, d.heads, d.mask == AttnMask::kCausal};
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const float keep_scale = DropoutScale<float>(dropout_p);
  const int64_t pair_stride = d.heads * S * S;  // next sequence, same head
  for (int64_t h = 0; h < d.heads; ++h) {
    const HeadColumns col = ColumnsOf(d, h);
    const T* q = qkv + col.q;
    const T* k = qkv + col.k;
    const T* val = qkv + col.v;
    T* ph = probs + h * S * S;
    // scores (S, S) = scale * q (S, hd) · k (S, hd)ᵀ, per sequence.
    RETURN_IF_ERROR(
        (GemmStridedBatched<T, T>(handles, stream, Trans::kNo, Trans::kYes, S, S, hd, scale, q, W,
                                  S * W, k, W, S * W, 0.0f, ph, S, pair_stride, rows)));
    const uint8_t* keep_h = prob_keep != nullptr ? prob_keep + h * S * S : nullptr;
    T* dropped = prob_keep != nullptr ? scratch : nullptr;
    AttnSoftmaxForwardKernel<<<RowBlocks(rows * S), kRowWarps * kWarp, 0, stream>>>(
        layout, ph, pad_mask, keep_h, keep_scale, dropped);
    L2L_CUDA_RETURN_IF_LAUNCH_FAILED();
    // out (S, hd) = dropout(probs) (S, S) · v (S, hd), per sequence.
    const T* pa = dropped != nullptr ? dropped : ph;
    const int64_t stride_pa = dropped != nullptr ? S * S : pair_stride;
    RETURN_IF_ERROR(
        (GemmStridedBatched<T, T>(handles, stream, Trans::kNo, Trans::kNo, S, hd, S, 1.0f, pa, S,
                                  stride_pa, val, W, S * W, 0.0f, out + h * hd, H, S * H, rows)));
  }
  return OkStatus();
}

template <typename T>
Status AttentionBackward(const CublasHandles& handles, cudaStream_t stream, const AttentionDims& d,
                         const T* qkv, const uint8_t* prob_keep, float dropout_p, const T* probs,
                         const T* dout, T* dqkv, T* scratch) {
  internal::Validator v("AttentionBackward");
  RETURN_IF_ERROR(ValidateAttention(v, d));
  const int64_t rows = d.rows, S = d.seq_len, H = d.hidden(), hd = d.head_dim;
  const int64_t W = d.qkv_width();
  RETURN_IF_ERROR(v.DropoutP("dropout_p", dropout_p)
                      .NotNull("qkv", qkv, rows * S * W)
                      .NotNull("probs", probs, rows * d.heads * S * S)
                      .NotNull("dout", dout, rows * S * H)
                      .NotNull("dqkv", dqkv, rows * S * W)
                      .NotNull("scratch", scratch, AttentionScratchElems(d))
                      .That(dqkv == nullptr || (dqkv != qkv && dqkv != probs && dqkv != dout),
                            "dqkv not aliasing qkv, probs or dout")
                      .status());
  if (rows == 0) return OkStatus();
  const HeadLayout layout{rows, S, d.heads, d.mask == AttnMask::kCausal};
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const float keep_scale = DropoutScale<float>(dropout_p);
  const int64_t pair_stride = d.heads * S * S;
  T* grad = scratch;                    // (rows, S, S): dL/d(dropped probs), then dL/d(scores)
  T* dropped = scratch + rows * S * S;  // (rows, S, S): dropout(probs), with prob_keep only
  // Query heads in order: the first of each group writes its key/value head's
  // dk and dv (beta = 0; every element of dqkv is written), the others add.
  for (int64_t h = 0; h < d.heads; ++h) {
    const HeadColumns col = ColumnsOf(d, h);
    const float kv_beta = col.first_of_group ? 0.0f : 1.0f;
    const T* q = qkv + col.q;
    const T* k = qkv + col.k;
    const T* val = qkv + col.v;
    const T* ph = probs + h * S * S;
    const T* gout = dout + h * hd;  // (S, hd) per sequence, row stride H
    // grad (S, S) = dout (S, hd) · v (S, hd)ᵀ
    RETURN_IF_ERROR(
        (GemmStridedBatched<T, T>(handles, stream, Trans::kNo, Trans::kYes, S, S, hd, 1.0f, gout, H,
                                  S * H, val, W, S * W, 0.0f, grad, S, S * S, rows)));
    const uint8_t* keep_h = prob_keep != nullptr ? prob_keep + h * S * S : nullptr;
    T* dropped_h = prob_keep != nullptr ? dropped : nullptr;
    AttnSoftmaxBackwardKernel<<<RowBlocks(rows * S), kRowWarps * kWarp, 0, stream>>>(
        layout, ph, keep_h, keep_scale, scale, grad, dropped_h);
    L2L_CUDA_RETURN_IF_LAUNCH_FAILED();
    // dv (S, hd) (+)= dropout(probs)ᵀ · dout
    const T* pa = dropped_h != nullptr ? dropped_h : ph;
    const int64_t stride_pa = dropped_h != nullptr ? S * S : pair_stride;
    RETURN_IF_ERROR((GemmStridedBatched<T, T>(handles, stream, Trans::kYes, Trans::kNo, S, hd, S,
                                              1.0f, pa, S, stride_pa, gout, H, S * H, kv_beta,
                                              dqkv + col.v, W, S * W, rows)));
    // dq (S, hd) = dscores · k;  dk (S, hd) (+)= dscoresᵀ · q   (scale is inside dscores)
    RETURN_IF_ERROR(
        (GemmStridedBatched<T, T>(handles, stream, Trans::kNo, Trans::kNo, S, hd, S, 1.0f, grad, S,
                                  S * S, k, W, S * W, 0.0f, dqkv + col.q, W, S * W, rows)));
    RETURN_IF_ERROR(
        (GemmStridedBatched<T, T>(handles, stream, Trans::kYes, Trans::kNo, S, hd, S, 1.0f, grad, S,
                                  S * S, q, W, S * W, kv_beta, dqkv + col.k, W, S * W, rows)));
  }
  return OkStatus();
}

#define L2L_INSTANTIATE(T)                                                                       \
  template Status SoftmaxForward<T>(cudaStream_t, const T*, int64_t, int64_t, T*);               \
  template Status SoftmaxBackward<T>(cudaStream_t, const T*, const T*, int64_t, int64_t, T*);    \
  template Status AttentionForward<T>(const CublasHandles&, cudaStream_t, const AttentionDims&,  \
                                      const T*, const uint8_t*, const uint8_t*, float, T*, T*,   \
                                      T*);                                                       \
  template Status AttentionBackward<T>(const CublasHandles&, cudaStream_t, const AttentionDims&, \
                                       const T*, const uint8_t*, float, const T*, const T*, T*,  \
                                       T*);
L2L_INSTANTIATE(float)
L2L_INSTANTIATE(bf16)
#undef L2L_INSTANTIATE

}  // namespace l2l::kernels::cuda
