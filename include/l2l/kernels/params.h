// Parameter types shared by every kernel backend (CPU now, CUDA later).
//
// Kernels take plain pointers plus the small structs below, so a backend is a
// set of free functions with identical signatures and a test can run the same
// inputs through two backends and compare. Sizes are in elements, never bytes.
#pragma once

#include <cstdint>

#include "l2l/core/rng.h"

namespace l2l::kernels {

// Whether a GEMM operand is used as stored or transposed.
enum class Trans { kNo, kYes };

// Whether a kernel's output overwrites its destination or is added to it. Used
// for the input gradients (dx) of kernels whose callers sometimes sum several
// paths into one buffer (residual branches). Parameter gradients are always
// accumulated (+=) so micro-batches sum.
enum class Accum { kOverwrite, kAdd };

// Whether attention may look at later positions.
enum class AttnMask { kPaddingOnly, kCausal };

// Multi-head self-attention over a fused qkv activation.
//   qkv:  (rows, seq_len, 3 * heads * head_dim), per token [q | k | v], each
//         split into heads as (heads, head_dim).
//   out:  (rows, seq_len, heads * head_dim)
//   probs:(rows, heads, seq_len, seq_len), softmax over the last axis.
struct AttentionDims {
  int rows = 0;
  int seq_len = 0;
  int heads = 0;
  int head_dim = 0;
  AttnMask mask = AttnMask::kPaddingOnly;
  int hidden() const { return heads * head_dim; }
};

// The keys of one dropout site (DESIGN §4). Element `e` of row `r` is kept iff
//   UniformFloat(HashKeys(seed, RngPurpose::kDropout, step, layer,
//                         sample_keys[r], site, e)) >= p
// and a kept value is scaled by 1 / (1 - p). The mask is a pure function of
// the keys: it does not depend on values, threads, backend or call order, so a
// recompute reproduces it bit for bit.
struct DropoutKeys {
  float p = 0.0f;  // drop probability in [0, 1)
  uint64_t seed = 0;
  int64_t step = 0;
  int layer = 0;
  int site = 0;                           // which dropout of the layer
  const uint64_t* sample_keys = nullptr;  // (rows): one key per sequence
};

inline bool DropoutKeep(const DropoutKeys& k, int64_t row, int64_t elem) {
  const uint64_t h = HashKeys(k.seed, RngPurpose::kDropout, static_cast<uint64_t>(k.step),
                              static_cast<uint64_t>(k.layer), k.sample_keys[row],
                              static_cast<uint64_t>(k.site), static_cast<uint64_t>(elem));
  return UniformFloat(h) >= k.p;
}

// 1 / (1 - p) in T, computed the same way by every backend.
template <typename T>
inline T DropoutScale(float p) {
  return T(1) / (T(1) - static_cast<T>(p));
}

// Layernorm epsilon used by BERT and GPT-2 alike.
inline constexpr double kLayerNormEps = 1e-5;

}  // namespace l2l::kernels
