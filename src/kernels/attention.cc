// Multi-head (and grouped-query) self-attention, one (sequence, head) pair
// per OpenMP work item in the forward, one (sequence, key/value head) group in
// the backward (its query heads in order, so shared dk / dv sum
// deterministically), and one query row at a time, so the scratch is one (head_dim, S) transposed
// K or V per thread plus a seq_len vector. Every inner loop runs over a
// contiguous axis in axpy form (keys j for scores, head_dim for outputs), so it
// vectorises without reassociating sums; the per-pair bodies are compiled for
// several vector widths (L2L_TARGET_CLONES).
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "l2l/core/check.h"
#include "l2l/kernels/cpu.h"
#include "simd.h"

namespace l2l::kernels::cpu {
namespace {

template <typename T>
L2L_ALWAYS_INLINE void Axpy(T alpha, const T* x, int n, T* y) {
#pragma omp simd
  for (int i = 0; i < n; ++i) y[i] += alpha * x[i];
}

// One (row, head) pair. q_i / k_j / v_j point at head_dim contiguous values.
template <typename T>
struct Pair {
  const T* qkv;    // this row's (S, W), offset to this head's q columns
  int64_t k_off;   // from q_i to this head's k columns (H + kv head * hd - h * hd)
  int64_t v_off;   // from q_i to this head's v columns
  int64_t stride;  // W = qkv width
  int hidden;      // H (row stride of out / dout)
  int seq_len;     // S
  int head_dim;    // hd
  bool causal;
  const uint8_t* pad;   // (S) 1 = real key, or nullptr
  const uint8_t* keep;  // (S, S) dropout mask of this pair's probs, or nullptr
  T keep_scale;         // 1 / (1 - p)
  T scale;              // 1 / sqrt(hd)
  T* probs;             // (S, S)
  const T* probs_in;    // (S, S) backward: saved probs
  T* out;               // forward: this row's (S, H) output at this head's columns
  const T* dout;        // backward: this row's (S, H) output gradient, same columns
  T* dqkv;              // backward: like qkv
  T* kvt;               // scratch (hd, S): kᵀ (forward) or vᵀ (backward)
  T* vec;               // scratch (S)

  const T* q(int i) const { return qkv + i * stride; }
  const T* k(int j) const { return qkv + j * stride + k_off; }
  const T* v(int j) const { return qkv + j * stride + v_off; }
  int end(int i) const { return causal ? i + 1 : seq_len; }  // keys j < end(i) may be attended
  T mask_scale(int i, int j) const {                         // dropout factor of probs[i, j]
    return keep == nullptr ? T(1) : (keep[i * seq_len + j] ? keep_scale : T(0));
  }
};

// (hd, S) transpose of the k (offset = k_off) or v (offset = v_off) columns.
template <typename T>
L2L_ALWAYS_INLINE void Transpose(const Pair<T>& a, int64_t offset, T* dst) {
  for (int j = 0; j < a.seq_len; ++j) {
    const T* src = a.qkv + j * a.stride + offset;
    for (int d = 0; d < a.head_dim; ++d) dst[d * a.seq_len + j] = src[d];
  }
}

template <typename T>
L2L_ALWAYS_INLINE void ForwardBody(const Pair<T>& a) {
  const int S = a.seq_len, hd = a.head_dim;
  Transpose(a, a.k_off, a.kvt);
  const uint8_t* pad = a.pad;
  int jbegin = 0;  // causal: keys before the query's document start are masked
  for (int i = 0; i < S; ++i) {
    T* p = a.probs + i * S;
    T* o = a.out + static_cast<int64_t>(i) * a.hidden;
    const int jend = a.end(i);
    if (a.causal && pad != nullptr && (pad[i] & kMaskDocStart) != 0) jbegin = i;
    // scores[j] = scale * q_i · k_j, accumulated over d as axpys along j.
    std::fill(p, p + S, T(0));
    const T* q = a.q(i);
    for (int d = 0; d < hd; ++d) Axpy(q[d] * a.scale, a.kvt + d * S, jend, p);
    T maxv = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : maxv)
    for (int j = 0; j < jend; ++j) {
      const bool ok = j >= jbegin && (pad == nullptr || (pad[j] & kMaskReal) != 0);
      maxv = std::max(maxv, ok ? p[j] : -std::numeric_limits<T>::infinity());
    }
    std::fill(o, o + hd, T(0));
    if (maxv == -std::numeric_limits<T>::infinity()) {  // every key masked
      std::fill(p, p + S, T(0));
      continue;
    }
    T sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int j = 0; j < jend; ++j) {
      const bool ok = j >= jbegin && (pad == nullptr || (pad[j] & kMaskReal) != 0);
      const T e = ok ? internal::FastExp(p[j] - maxv) : T(0);
      p[j] = e;
      sum += e;
    }
    const T inv = T(1) / sum;
#pragma omp simd
    for (int j = 0; j < jend; ++j) p[j] *= inv;
    for (int j = 0; j < jend; ++j) {
      const T w = p[j] * a.mask_scale(i, j);
      if (w != T(0)) Axpy(w, a.v(j), hd, o);
    }
  }
}

// Accumulates into dk and dv (the caller zeroes them once per key/value
// head); writes dq.
template <typename T>
L2L_ALWAYS_INLINE void BackwardBody(const Pair<T>& a) {
  const int S = a.seq_len, hd = a.head_dim;
  Transpose(a, a.v_off, a.kvt);
  T* dq0 = a.dqkv;
  auto dq = [&](int i) { return dq0 + i * a.stride; };
  auto dk = [&](int j) { return dq0 + j * a.stride + a.k_off; };
  auto dv = [&](int j) { return dq0 + j * a.stride + a.v_off; };
  T* ds = a.vec;
  for (int i = 0; i < S; ++i) {
    const T* p = a.probs_in + i * S;
    const T* g = a.dout + static_cast<int64_t>(i) * a.hidden;  // dL/d out_i, (hd)
    const int jend = a.end(i);
    // dp'[j] = g · v_j (gradient w.r.t. the dropped probs), as axpys along j.
    std::fill(ds, ds + jend, T(0));
    for (int d = 0; d < hd; ++d) Axpy(g[d], a.kvt + d * S, jend, ds);
    // Through the dropout: dp = m ⊙ dp'; dv_j += (m_j p_j) g.
    T dsum = 0;
    for (int j = 0; j < jend; ++j) {
      const T m = a.mask_scale(i, j);
      ds[j] *= m;
      dsum += p[j] * ds[j];
      const T w = p[j] * m;
      if (w != T(0)) Axpy(w, g, hd, dv(j));
    }
    // Softmax backward (masked entries have p = 0, so no gradient), then
    // scores = scale * q_i · k_j.
#pragma omp simd
    for (int j = 0; j < jend; ++j) ds[j] = a.scale * p[j] * (ds[j] - dsum);
    T* dqi = dq(i);
    std::fill(dqi, dqi + hd, T(0));
    for (int j = 0; j < jend; ++j) {
      if (ds[j] == T(0)) continue;
      Axpy(ds[j], a.k(j), hd, dqi);
      Axpy(ds[j], a.q(i), hd, dk(j));
    }
  }
}

L2L_TARGET_CLONES void ForwardPair(const Pair<float>& a) { ForwardBody(a); }
L2L_TARGET_CLONES void ForwardPair(const Pair<double>& a) { ForwardBody(a); }
L2L_TARGET_CLONES void BackwardPair(const Pair<float>& a) { BackwardBody(a); }
L2L_TARGET_CLONES void BackwardPair(const Pair<double>& a) { BackwardBody(a); }

void CheckDims(const AttentionDims& d) {
  L2L_CHECK(d.rows >= 0 && d.seq_len > 0 && d.heads > 0 && d.head_dim > 0 && d.kv_heads >= 0 &&
            d.heads % d.num_kv_heads() == 0)
      << "attention dims rows=" << d.rows << " seq_len=" << d.seq_len << " heads=" << d.heads
      << " kv_heads=" << d.kv_heads << " head_dim=" << d.head_dim;
}

// The fields of Pair shared by every pair of a call.
template <typename T>
Pair<T> Common(const AttentionDims& d, const T* qkv, float dropout_p) {
  Pair<T> a{};
  a.stride = d.qkv_width();
  a.hidden = d.hidden();
  a.seq_len = d.seq_len;
  a.head_dim = d.head_dim;
  a.causal = d.mask == AttnMask::kCausal;
  a.keep_scale = DropoutScale<T>(dropout_p);
  a.scale = T(1) / std::sqrt(static_cast<T>(d.head_dim));
  return a;
}

// Offsets from query head h's columns to its key / value head's columns.
template <typename T>
void SetHead(const AttentionDims& d, int h, Pair<T>* a) {
  const int64_t hd = d.head_dim, kh = h / d.group();
  a->k_off = d.hidden() + kh * hd - h * hd;
  a->v_off = d.hidden() + d.kv_hidden() + kh * hd - h * hd;
}

}  // namespace

template <typename T>
void AttentionForward(const AttentionDims& d, const T* qkv, const uint8_t* pad_mask,
                      const uint8_t* prob_keep, float dropout_p, T* probs, T* out) {
  CheckDims(d);
  const int64_t S = d.seq_len, H = d.hidden(), hd = d.head_dim;
  const int64_t pairs = int64_t{d.rows} * d.heads;
  const Pair<T> common = Common(d, qkv, dropout_p);
#pragma omp parallel
  {
    std::vector<T> kt(hd * S);
#pragma omp for schedule(static)
    for (int64_t pair = 0; pair < pairs; ++pair) {
      const int64_t row = pair / d.heads, h = pair % d.heads;
      Pair<T> a = common;
      SetHead(d, h, &a);
      a.qkv = qkv + row * S * a.stride + h * hd;
      a.pad = pad_mask != nullptr ? pad_mask + row * S : nullptr;
      a.keep = prob_keep != nullptr ? prob_keep + pair * S * S : nullptr;
      a.probs = probs + pair * S * S;
      a.out = out + row * S * H + h * hd;
      a.kvt = kt.data();
      ForwardPair(a);
    }
  }
}

template <typename T>
void AttentionBackward(const AttentionDims& d, const T* qkv, const uint8_t* prob_keep,
                       float dropout_p, const T* probs, const T* dout, T* dqkv) {
  CheckDims(d);
  const int64_t S = d.seq_len, H = d.hidden(), hd = d.head_dim;
  const int kv = d.num_kv_heads(), group = d.group();
  const int64_t groups = int64_t{d.rows} * kv;
  const Pair<T> common = Common(d, qkv, dropout_p);
#pragma omp parallel
  {
    std::vector<T> vt(hd * S), vec(S);
#pragma omp for schedule(static)
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t row = g / kv, kh = g % kv;
      // dk, dv of this key/value head accumulate over its query heads.
      T* row_d = dqkv + row * S * common.stride;
      for (int64_t j = 0; j < S; ++j) {
        T* dk = row_d + j * common.stride + H + kh * hd;
        std::fill(dk, dk + hd, T(0));
        std::fill(dk + d.kv_hidden(), dk + d.kv_hidden() + hd, T(0));
      }
      for (int t = 0; t < group; ++t) {
        const int64_t h = kh * group + t, pair = row * d.heads + h;
        Pair<T> a = common;
        SetHead(d, static_cast<int>(h), &a);
        a.qkv = qkv + row * S * a.stride + h * hd;
        a.keep = prob_keep != nullptr ? prob_keep + pair * S * S : nullptr;
        a.probs_in = probs + pair * S * S;
        a.dout = dout + row * S * H + h * hd;
        a.dqkv = row_d + h * hd;
        a.kvt = vt.data();
        a.vec = vec.data();
        BackwardPair(a);
      }
    }
  }
}

#define L2L_INSTANTIATE(T)                                                                  \
  template void AttentionForward<T>(const AttentionDims&, const T*, const uint8_t*,         \
                                    const uint8_t*, float, T*, T*);                         \
  template void AttentionBackward<T>(const AttentionDims&, const T*, const uint8_t*, float, \
                                     const T*, const T*, T*);
L2L_INSTANTIATE(float)
L2L_INSTANTIATE(double)
#undef L2L_INSTANTIATE

}  // namespace l2l::kernels::cpu
