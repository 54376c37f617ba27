// Device-side helpers shared by the kernel files: fp32 load / store of the
// storage types, warp reductions, and launch geometry. nvcc only.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "device_math.h"
#include "host_util.h"
#include "l2l/kernels/cuda.h"

namespace l2l::kernels::cuda::internal {

inline constexpr int kWarp = 32;
inline constexpr unsigned kFullMask = 0xffffffffu;

// Threads per block of the elementwise (grid-stride) kernels, and the most
// blocks they launch; each thread then walks the range with a grid stride.
inline constexpr int kThreads = 256;
inline constexpr int64_t kMaxBlocks = int64_t{1} << 16;

// Blocks for a grid-stride loop over n items (n > 0).
inline unsigned GridFor(int64_t n, int threads = kThreads) {
  const int64_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned>(blocks < kMaxBlocks ? blocks : kMaxBlocks);
}

// Rows per block (one warp per row) of the row-wise kernels.
inline constexpr int kRowWarps = 8;
inline unsigned RowBlocks(int64_t rows) {
  return static_cast<unsigned>((rows + kRowWarps - 1) / kRowWarps);
}

__device__ __forceinline__ int64_t GlobalThread() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t GridStride() {
  return static_cast<int64_t>(gridDim.x) * blockDim.x;
}

// fp32 view of a stored value, and the store of an fp32 result (bf16: round to
// nearest even, exactly as core/dtype.h's F32ToBF16).
__device__ __forceinline__ float Load(const float* p) { return *p; }
// A shift of the bits, not cvt.f32.bf16 (which sm_90 would use): exact for
// every pattern, NaN payloads included, matching core/dtype.h's BF16ToF32.
__device__ __forceinline__ float Load(const bf16* p) {
  return BF16BitsToF32(static_cast<__nv_bfloat16_raw>(*p).x);
}

__device__ __forceinline__ bf16 RoundToBF16(float v) {
  __nv_bfloat16_raw raw;
  raw.x = F32ToBF16Bits(v);
  return bf16(raw);
}
__device__ __forceinline__ void Store(float* p, float v) { *p = v; }
__device__ __forceinline__ void Store(bf16* p, float v) { *p = RoundToBF16(v); }

// Butterfly reductions: every lane ends with the same, order-fixed result.
__device__ __forceinline__ float WarpSum(float v) {
  for (int o = kWarp / 2; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}
__device__ __forceinline__ float WarpMax(float v) {
  for (int o = kWarp / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, o));
  return v;
}

}  // namespace l2l::kernels::cuda::internal
