// Rotary position embeddings (Llama's rotate_half form), in place on the q and
// k heads of a fused qkv activation: the GPU mirror of src/kernels/rope.cc.
//
// Why the inv_freq table is computed on the host: RopeInvFreq calls powf, and
// the device powf may differ from the host's by an ulp; computed once per call
// on the host (head_dim / 2 floats, passed by value as a kernel parameter) it
// is bitwise the CPU kernel's table, so the angles pos * inv_freq (one fp32
// multiply) are bitwise the CPU's too. Only cos / sin differ (sincosf, within
// 2 ulp; the accurate path, with its slow range reduction for large angles).
#include "common.cuh"

namespace l2l::kernels::cuda {
namespace {

using internal::GlobalThread;
using internal::GridFor;
using internal::GridStride;
using internal::kThreads;
using internal::Load;
using internal::Store;

// inv_freq[i] for i < head_dim / 2, by value (kRopeMaxHeadDim / 2 floats = 1 KiB
// of kernel parameters, well inside the 4 KiB limit).
struct RopeTable {
  float inv_freq[kRopeMaxHeadDim / 2];
};

// One thread per (token t, frequency i): the angle and its sincos once, then
// the pair (i, i + half) of each of the `rot_heads` q and k heads. Threads of
// consecutive i touch consecutive elements of a head (coalesced).
// sign = -1 turns back (the backward).
template <typename T>
__global__ void RopeKernel(RopeTable table, int64_t tokens, int seq_len, int head_dim,
                           int rot_heads, int64_t width, const int32_t* positions, float sign,
                           T* qkv) {
  const int half = head_dim / 2;
  const int64_t total = tokens * half;
  for (int64_t e = GlobalThread(); e < total; e += GridStride()) {
    const int64_t t = e / half;
    const int i = static_cast<int>(e - t * half);
    const int32_t pos = positions != nullptr ? positions[t] : static_cast<int32_t>(t % seq_len);
    // transformers: freqs = position.float() * inv_freq, in fp32.
    const float angle = __fmul_rn(static_cast<float>(pos), table.inv_freq[i]);
    float sn, cs;
    sincosf(angle, &sn, &cs);
    sn *= sign;
    T* tok = qkv + t * width;
    for (int h = 0; h < rot_heads; ++h) {
      T* x = tok + static_cast<int64_t>(h) * head_dim;
      const float a = Load(x + i), b = Load(x + i + half);
      Store(x + i, a * cs - b * sn);
      Store(x + i + half, b * cs + a * sn);
    }
  }
}

template <typename T>
Status Rope(const char* op, cudaStream_t stream, const AttentionDims& d, const RopeParams& p,
            const int32_t* positions, float sign, T* qkv) {
  RETURN_IF_ERROR(
      internal::Validator(op)
          .NonNegative("rows", d.rows)
          .Positive("seq_len", d.seq_len)
          .Positive("heads", d.heads)
          .Positive("head_dim", d.head_dim)
          .AtMost("head_dim", d.head_dim, kRopeMaxHeadDim)
          .That(d.head_dim % 2 == 0, "an even head_dim")
          .NonNegative("kv_heads", d.kv_heads)
          .That(d.num_kv_heads() > 0 && d.kv_heads <= d.heads && d.heads % d.num_kv_heads() == 0,
                "kv_heads dividing heads")
          .NotNull("qkv", qkv, int64_t{d.rows} * d.seq_len * d.qkv_width())
          .status());
  const int64_t tokens = int64_t{d.rows} * d.seq_len;
  if (tokens == 0) return OkStatus();
  const int half = d.head_dim / 2;
  RopeTable table{};
  for (int i = 0; i < half; ++i) table.inv_freq[i] = RopeInvFreq(p, i, d.head_dim);
  RopeKernel<<<GridFor(tokens * half), kThreads, 0, stream>>>(table, tokens, d.seq_len, d.head_dim,
                                                              d.heads + d.num_kv_heads(),
                                                              d.qkv_width(), positions, sign, qkv);
  L2L_CUDA_RETURN_IF_LAUNCH_FAILED();
  return OkStatus();
}

}  // namespace

template <typename T>
Status RopeForward(cudaStream_t stream, const AttentionDims& d, const RopeParams& p,
                   const int32_t* positions, T* qkv) {
  return Rope("RopeForward", stream, d, p, positions, 1.0f, qkv);
}

template <typename T>
Status RopeBackward(cudaStream_t stream, const AttentionDims& d, const RopeParams& p,
                    const int32_t* positions, T* dqkv) {
  return Rope("RopeBackward", stream, d, p, positions, -1.0f, dqkv);
}

#define L2L_INSTANTIATE(T)                                                               \
  template Status RopeForward<T>(cudaStream_t, const AttentionDims&, const RopeParams&,  \
                                 const int32_t*, T*);                                    \
  template Status RopeBackward<T>(cudaStream_t, const AttentionDims&, const RopeParams&, \
                                  const int32_t*, T*);
L2L_INSTANTIATE(float)
L2L_INSTANTIATE(bf16)
#undef L2L_INSTANTIATE

}  // namespace l2l::kernels::cuda
