// Parameter types shared by every kernel backend (CPU now, CUDA later).
//
// Kernels take plain pointers plus the small structs below, so a backend is a
// set of free functions with identical signatures and a test can run the same
// inputs through two backends and compare. Sizes are in elements, never bytes.
#pragma once

#include <cmath>
#include <cstdint>

#include "l2l/core/batch_format.h"
#include "l2l/core/rng.h"

// Functions here are also compiled into CUDA kernels.
#if defined(__CUDACC__)
#define L2L_HOST_DEVICE __host__ __device__
#else
#define L2L_HOST_DEVICE
#endif

namespace l2l::kernels {

// Whether a GEMM operand is used as stored or transposed.
enum class Trans { kNo, kYes };

// How a linear layer's weight is stored (row-major): kInOut = (in, out), as
// GPT-2's Conv1D; kOutIn = (out, in), as torch.nn.Linear (BERT, Llama). Both
// compute y = x · W + b in the (in, out) sense; l2l keeps each model's weights
// in the orientation of its transformers twin, so interop copies bytes.
enum class WeightLayout { kInOut, kOutIn };

// The GELU of an MLP: kTanh = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
// (GPT-2's gelu_new), kErf = 0.5 x (1 + erf(x / sqrt(2))) (BERT's gelu).
enum class Gelu { kTanh, kErf };

// Whether a kernel's output overwrites its destination or is added to it. Used
// for the input gradients (dx) of kernels whose callers sometimes sum several
// paths into one buffer (residual branches). Parameter gradients are always
// accumulated (+=) so micro-batches sum.
enum class Accum { kOverwrite, kAdd };

// Whether attention may look at later positions.
enum class AttnMask { kPaddingOnly, kCausal };

// The pad_mask bytes of AttentionForward: kMaskReal, kMaskDocStart (core/batch_format.h).

// Multi-head self-attention over a fused qkv activation, with grouped-query
// attention when kv_heads < heads (query head h reads key/value head
// h / (heads / kv_heads), as transformers' repeat_kv).
//   qkv:  (rows, seq_len, qkv_width()), per token [q | k | v]: q is
//         (heads, head_dim), k and v are (kv_heads, head_dim) each.
//   out:  (rows, seq_len, heads * head_dim)
//   probs:(rows, heads, seq_len, seq_len), softmax over the last axis.
struct AttentionDims {
  int rows = 0;
  int seq_len = 0;
  int heads = 0;
  int head_dim = 0;
  AttnMask mask = AttnMask::kPaddingOnly;
  int kv_heads = 0;  // 0 = heads (multi-head attention)
  L2L_HOST_DEVICE int hidden() const { return heads * head_dim; }
  L2L_HOST_DEVICE int num_kv_heads() const { return kv_heads > 0 ? kv_heads : heads; }
  L2L_HOST_DEVICE int kv_hidden() const { return num_kv_heads() * head_dim; }
  L2L_HOST_DEVICE int qkv_width() const { return hidden() + 2 * kv_hidden(); }
  L2L_HOST_DEVICE int group() const { return heads / num_kv_heads(); }  // query heads per kv head
};

// Rotary position embeddings (transformers' Llama: the rotate_half form).
// Within each head of q and k, element i < head_dim / 2 pairs with
// i + head_dim / 2 and the pair turns by the angle pos * inv_freq[i]:
//   x'[i]        = x[i] cos - x[i + hd/2] sin
//   x'[i + hd/2] = x[i + hd/2] cos + x[i] sin
// inv_freq and the angles are computed in fp32 as transformers does
// (RopeInvFreq below), then cos / sin in T's precision.
enum class RopeScaling { kNone, kLlama3 };
struct RopeParams {
  double theta = 10000.0;
  RopeScaling scaling = RopeScaling::kNone;
  // kLlama3 (transformers' _compute_llama3_parameters):
  double factor = 8.0, low_freq_factor = 1.0, high_freq_factor = 4.0;
  int original_max_positions = 8192;
};

// inv_freq[i] for i in [0, head_dim / 2), in fp32 exactly as transformers
// computes it: 1 / theta^(2i / head_dim), then the llama3 rescaling (long
// wavelengths divided by factor, a smooth blend in between).
L2L_HOST_DEVICE inline float RopeInvFreq(const RopeParams& p, int i, int head_dim) {
  const float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
  const float inv = 1.0f / powf(static_cast<float>(p.theta), exponent);
  if (p.scaling != RopeScaling::kLlama3) return inv;
  const float factor = static_cast<float>(p.factor);
  const float low = static_cast<float>(p.low_freq_factor);
  const float high = static_cast<float>(p.high_freq_factor);
  const float old_len = static_cast<float>(p.original_max_positions);
  const float low_freq_wavelen = old_len / low;
  const float high_freq_wavelen = old_len / high;
  const float wavelen = 2.0f * 3.14159265358979323846f / inv;
  const float scaled = wavelen > low_freq_wavelen ? inv / factor : inv;
  if (wavelen < high_freq_wavelen || wavelen > low_freq_wavelen) return scaled;
  const float smooth = (old_len / wavelen - low) / (high - low);
  return (1.0f - smooth) * scaled / factor + smooth * scaled;
}

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

// GPT-2's layernorm epsilon (BERT uses 1e-12; the model passes its own).
inline constexpr double kLayerNormEps = 1e-5;

}  // namespace l2l::kernels
