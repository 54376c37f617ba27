// The deterministic column reduction behind every fp32 parameter gradient that
// sums over rows (bias, layernorm gain and bias): out (c) += Σ_r f(r, col).
//
// Pass 1: a grid of (column tiles of 32) x (row chunks of ColumnChunkRows(n));
// in each block 8 row lanes walk their rows of the chunk in order and their
// partials are added in lane order, giving one fp32 partial per (chunk,
// column) in the scratch. Pass 2: one thread per column adds the partials in
// chunk order and accumulates into out. The order depends only on (n, c): no
// atomics, bitwise reproducible, and the chunking keeps the whole GPU busy
// (up to kColumnMaxChunks row chunks) where one thread per column would not.
#pragma once

#include "common.cuh"

namespace l2l::kernels::cuda::internal {

inline constexpr int kReduceCols = 32;  // columns per block: one warp wide (coalesced rows)
inline constexpr int kReduceLanes = 8;  // row lanes per block

// f(r, col) of a plain (n, c) matrix.
template <typename T>
struct ColumnOf {
  const T* x;
  int64_t c;
  __device__ float2 operator()(int64_t r, int64_t col) const {
    return make_float2(Load(x + r * c + col), 0.0f);
  }
};

// kSums = 1 reduces f().x into partial0; kSums = 2 also f().y into partial1.
template <int kSums, typename F>
__global__ void __launch_bounds__(kReduceCols* kReduceLanes)
    ColumnPartialKernel(F f, int64_t n, int64_t c, int64_t chunk_rows, float* partial0,
                        float* partial1) {
  __shared__ float s0[kReduceLanes][kReduceCols];
  __shared__ float s1[kReduceLanes][kReduceCols];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t col = static_cast<int64_t>(blockIdx.x) * kReduceCols + tx;
  const int64_t chunk = blockIdx.y;
  const int64_t r0 = chunk * chunk_rows;
  const int64_t r1 = r0 + chunk_rows < n ? r0 + chunk_rows : n;
  float a0 = 0.0f, a1 = 0.0f;
  if (col < c) {
    for (int64_t r = r0 + ty; r < r1; r += kReduceLanes) {
      const float2 v = f(r, col);
      a0 += v.x;
      if constexpr (kSums == 2) a1 += v.y;
    }
  }
  s0[ty][tx] = a0;
  s1[ty][tx] = a1;
  __syncthreads();
  if (ty == 0 && col < c) {
    float t0 = 0.0f, t1 = 0.0f;
    for (int l = 0; l < kReduceLanes; ++l) {
      t0 += s0[l][tx];
      t1 += s1[l][tx];
    }
    partial0[chunk * c + col] = t0;
    if constexpr (kSums == 2) partial1[chunk * c + col] = t1;
  }
}

template <int kSums>
__global__ void ColumnFinishKernel(const float* partial0, const float* partial1, int64_t chunks,
                                   int64_t c, float* out0, float* out1) {
  for (int64_t col = GlobalThread(); col < c; col += GridStride()) {
    float t0 = 0.0f, t1 = 0.0f;
    for (int64_t ch = 0; ch < chunks; ++ch) {
      t0 += partial0[ch * c + col];
      if constexpr (kSums == 2) t1 += partial1[ch * c + col];
    }
    if (out0 != nullptr) out0[col] += t0;
    if constexpr (kSums == 2) {
      if (out1 != nullptr) out1[col] += t1;
    }
  }
}

// out0 (and out1 for kSums = 2; either may be null) += column sums of f over
// n > 0 rows and c > 0 columns. scratch: kSums * ColumnChunks(n) * c floats.
template <int kSums, typename F>
Status ColumnReduce(cudaStream_t stream, F f, int64_t n, int64_t c, float* out0, float* out1,
                    float* scratch) {
  static_assert(kSums == 1 || kSums == 2);
  const int64_t chunks = ColumnChunks(n);
  float* partial0 = scratch;
  float* partial1 = kSums == 2 ? scratch + chunks * c : nullptr;
  const dim3 block(kReduceCols, kReduceLanes);
  const dim3 grid(static_cast<unsigned>((c + kReduceCols - 1) / kReduceCols),
                  static_cast<unsigned>(chunks));
  ColumnPartialKernel<kSums>
      <<<grid, block, 0, stream>>>(f, n, c, ColumnChunkRows(n), partial0, partial1);
  L2L_CUDA_RETURN_IF_LAUNCH_FAILED();
  ColumnFinishKernel<kSums>
      <<<GridFor(c), kThreads, 0, stream>>>(partial0, partial1, chunks, c, out0, out1);
  L2L_CUDA_RETURN_IF_LAUNCH_FAILED();
  return OkStatus();
}

}  // namespace l2l::kernels::cuda::internal
