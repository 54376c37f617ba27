// Σ x[i]² in double for the resident mode's global gradient norm, without
// atomics: block b squares and sums one fixed contiguous chunk (each thread a
// strided lane of it, then a shared-memory tree), and one thread adds the
// per-block partials in block order. The chunking is a function of n alone,
// so the result is bitwise reproducible on a given GPU model and toolkit.
// x[i]² of a float is exact in double (24-bit significands), so whether nvcc
// contracts `acc + v * v` into an FMA does not change the bits either.
#include "common.cuh"

namespace l2l::kernels::cuda {
namespace {

constexpr int kSumThreads = 256;  // per partial block; the tree needs a power of two
static_assert((kSumThreads & (kSumThreads - 1)) == 0);
// Enough elements per block (32 per thread) that short arrays use few blocks;
// long ones use at most kSumSquaresMaxPartials blocks with longer chunks.
constexpr int64_t kSumMinChunkElems = int64_t{32} * kSumThreads;

// Elements per block: a pure function of n (n > 0).
int64_t ChunkElems(int64_t n) {
  const int64_t spread = (n + kSumSquaresMaxPartials - 1) / kSumSquaresMaxPartials;
  return spread > kSumMinChunkElems ? spread : kSumMinChunkElems;
}

// partial (gridDim.x) [b] = Σ x[i]² over block b's chunk [b*chunk, min((b+1)*chunk, n)):
// thread t sums i = begin + t, begin + t + kSumThreads, ... in order, then the
// threads' sums meet in a fixed tree.
__global__ void __launch_bounds__(kSumThreads)
    SumSquaresPartialKernel(const float* x, int64_t n, int64_t chunk, double* partial) {
  __shared__ double red[kSumThreads];
  const int t = threadIdx.x;
  const int64_t begin = static_cast<int64_t>(blockIdx.x) * chunk;
  const int64_t end = begin + chunk < n ? begin + chunk : n;
  double acc = 0.0;
  for (int64_t i = begin + t; i < end; i += kSumThreads) {
    const double v = x[i];
    acc += v * v;
  }
  red[t] = acc;
  __syncthreads();
  for (int s = kSumThreads / 2; s > 0; s >>= 1) {
    if (t < s) red[t] += red[t + s];
    __syncthreads();
  }
  if (t == 0) partial[blockIdx.x] = red[0];
}

// *out = Σ partial[b] for b = 0, 1, ..., blocks - 1, in that order (0 when
// blocks == 0). One thread: at most kSumSquaresMaxPartials additions.
__global__ void SumSquaresFinishKernel(const double* partial, int64_t blocks, double* out) {
  double sum = 0.0;
  for (int64_t b = 0; b < blocks; ++b) sum += partial[b];
  *out = sum;
}

}  // namespace

int64_t SumSquaresScratchElems(int64_t n) {
  if (n <= 0) return 0;
  const int64_t chunk = ChunkElems(n);
  return (n + chunk - 1) / chunk;
}

Status SumSquares(cudaStream_t stream, const float* x, int64_t n, double* scratch, double* out) {
  const int64_t blocks = SumSquaresScratchElems(n);
  RETURN_IF_ERROR(internal::Validator("SumSquares")
                      .NonNegative("n", n)
                      .NotNull("x", x, n)
                      .NotNull("scratch", scratch, blocks)
                      .NotNull("out", out, 1)
                      .status());
  if (blocks > 0) {
    SumSquaresPartialKernel<<<static_cast<unsigned>(blocks), kSumThreads, 0, stream>>>(
        x, n, ChunkElems(n), scratch);
    L2L_CUDA_RETURN_IF_LAUNCH_FAILED();
  }
  // Also for n == 0, so that *out is always written.
  SumSquaresFinishKernel<<<1, 1, 0, stream>>>(scratch, blocks, out);
  L2L_CUDA_RETURN_IF_LAUNCH_FAILED();
  return OkStatus();
}

}  // namespace l2l::kernels::cuda
