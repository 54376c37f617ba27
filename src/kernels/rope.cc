// Rotary position embeddings (Llama), in place on a fused qkv activation.
// One token per OpenMP work item; the per-token angles come from one inv_freq
// table per call (head_dim / 2 fp32 values, computed as transformers does).
#include <cmath>
#include <vector>

#include "l2l/core/check.h"
#include "l2l/kernels/cpu.h"

namespace l2l::kernels::cpu {
namespace {

// Turns every q and k head of one token by the angles pos * inv_freq[i];
// sign = -1 turns back (the backward).
template <typename T>
void RotateToken(const AttentionDims& d, const float* inv_freq, int32_t pos, T sign, T* tok) {
  const int half = d.head_dim / 2;
  const int heads = d.heads + d.num_kv_heads();  // q heads, then k heads: contiguous
  for (int i = 0; i < half; ++i) {
    // transformers: freqs = position.float() * inv_freq (fp32), then cos / sin.
    const float angle = static_cast<float>(pos) * inv_freq[i];
    const T c = std::cos(static_cast<T>(angle));
    const T s = sign * std::sin(static_cast<T>(angle));
    for (int h = 0; h < heads; ++h) {
      T* x = tok + static_cast<int64_t>(h) * d.head_dim;
      const T a = x[i], b = x[i + half];
      x[i] = a * c - b * s;
      x[i + half] = b * c + a * s;
    }
  }
}

template <typename T>
void Rope(const AttentionDims& d, const RopeParams& p, const int32_t* positions, T sign, T* qkv) {
  L2L_CHECK(d.head_dim % 2 == 0) << "rotary embeddings need an even head_dim, got " << d.head_dim;
  L2L_CHECK(d.heads % d.num_kv_heads() == 0)
      << "kv_heads " << d.num_kv_heads() << " must divide heads " << d.heads;
  std::vector<float> inv_freq(d.head_dim / 2);
  for (int i = 0; i < d.head_dim / 2; ++i) inv_freq[i] = RopeInvFreq(p, i, d.head_dim);
  const int64_t tokens = int64_t{d.rows} * d.seq_len;
  const int64_t width = d.qkv_width();
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < tokens; ++t) {
    const int32_t pos = positions != nullptr ? positions[t] : static_cast<int32_t>(t % d.seq_len);
    RotateToken(d, inv_freq.data(), pos, sign, qkv + t * width);
  }
}

}  // namespace

template <typename T>
void RopeForward(const AttentionDims& d, const RopeParams& p, const int32_t* positions, T* qkv) {
  Rope(d, p, positions, T(1), qkv);
}

template <typename T>
void RopeBackward(const AttentionDims& d, const RopeParams& p, const int32_t* positions, T* dqkv) {
  Rope(d, p, positions, T(-1), dqkv);
}

#define L2L_INSTANTIATE(T)                                                                   \
  template void RopeForward<T>(const AttentionDims&, const RopeParams&, const int32_t*, T*); \
  template void RopeBackward<T>(const AttentionDims&, const RopeParams&, const int32_t*, T*);
L2L_INSTANTIATE(float)
L2L_INSTANTIATE(double)
#undef L2L_INSTANTIATE

}  // namespace l2l::kernels::cpu
