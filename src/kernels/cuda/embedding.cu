// Embedding lookups, their deterministic sort-free backward, position
// embeddings, and row gather / scatter.
//
// EmbeddingBackward without atomics or a sort: vocab rows are split into
// buckets (id % buckets) and columns into tiles of 256; one block per (bucket,
// tile) walks the whole token list in order, 256 ids at a time, compacts the
// tokens of its bucket into shared memory with a ballot (keeping their order),
// and applies them. Each dtable element is therefore owned by one thread,
// which adds its tokens in token order, starting from dtable's value, exactly
// like cpu::EmbeddingBackward. Consecutive tokens with the same id accumulate
// in a register; the running value is written back whenever the id changes.
#include "common.cuh"

namespace l2l::kernels::cuda {
namespace {

using internal::GlobalThread;
using internal::GridFor;
using internal::GridStride;
using internal::kFullMask;
using internal::kThreads;
using internal::kWarp;
using internal::Load;
using internal::Store;

constexpr int kEmbedTile = 256;             // columns per block = threads per block
constexpr int64_t kEmbedMaxBuckets = 1024;  // blocks along the vocab axis

template <typename T>
__global__ void EmbeddingForwardKernel(const T* table, int64_t vocab, int64_t dim,
                                       const int32_t* ids, int64_t n, T* out, Accum accum) {
  for (int64_t e = GlobalThread(); e < n * dim; e += GridStride()) {
    const int64_t i = e / dim, j = e - (e / dim) * dim;
    const int32_t id = ids[i];
    const bool valid = id >= 0 && id < vocab;
    if (accum == Accum::kAdd) {
      if (valid) Store(out + e, Load(out + e) + Load(table + id * dim + j));
    } else {
      if (valid) {
        out[e] = table[id * dim + j];  // exact copy
      } else {
        Store(out + e, 0.0f);
      }
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kEmbedTile)
    EmbeddingBackwardKernel(const int32_t* ids, int64_t n, const T* dout, int64_t vocab,
                            int64_t dim, int32_t buckets, int32_t skip_id, float* dtable) {
  __shared__ int64_t tok[kEmbedTile];     // this bucket's tokens in the current id tile, in order
  __shared__ int32_t tok_id[kEmbedTile];  // and their ids
  __shared__ int warp_count[kEmbedTile / kWarp];
  const int t = threadIdx.x, lane = t % kWarp, warp = t / kWarp;
  const int32_t bucket = static_cast<int32_t>(blockIdx.x);
  const int64_t col = static_cast<int64_t>(blockIdx.y) * kEmbedTile + t;
  int32_t cur_id = -1;  // the dtable row whose running value is in acc
  float acc = 0.0f;
  for (int64_t base = 0; base < n; base += kEmbedTile) {
    const int64_t i = base + t;
    const int32_t id = i < n ? ids[i] : -1;
    const bool mine = id >= 0 && id < vocab && id != skip_id && id % buckets == bucket;
    const unsigned ballot = __ballot_sync(kFullMask, mine);
    if (lane == 0) warp_count[warp] = __popc(ballot);
    __syncthreads();
    int offset = 0, total = 0;
    for (int w = 0; w < kEmbedTile / kWarp; ++w) {
      if (w < warp) offset += warp_count[w];
      total += warp_count[w];
    }
    if (mine) {
      const int slot = offset + __popc(ballot & ((1u << lane) - 1u));
      tok[slot] = i;
      tok_id[slot] = id;
    }
    __syncthreads();
    if (col < dim) {
      for (int s = 0; s < total; ++s) {
        const int32_t id_s = tok_id[s];
        if (id_s != cur_id) {
          if (cur_id >= 0) dtable[cur_id * dim + col] = acc;
          cur_id = id_s;
          acc = dtable[id_s * dim + col];
        }
        acc += Load(dout + tok[s] * dim + col);
      }
    }
    __syncthreads();  // tok, tok_id and warp_count are rewritten by the next tile
  }
  if (col < dim && cur_id >= 0) dtable[cur_id * dim + col] = acc;
}

template <typename T>
__global__ void PositionForwardKernel(const T* pos, int64_t rows, int64_t seq, int64_t dim, T* out,
                                      Accum accum) {
  const int64_t per_row = seq * dim;
  for (int64_t e = GlobalThread(); e < rows * per_row; e += GridStride()) {
    const int64_t src = e % per_row;
    if (accum == Accum::kAdd) {
      Store(out + e, Load(out + e) + Load(pos + src));
    } else {
      out[e] = pos[src];
    }
  }
}

// One thread per dpos element, rows added in order from dpos's value.
template <typename T>
__global__ void PositionBackwardKernel(const T* dout, int64_t rows, int64_t seq, int64_t dim,
                                       float* dpos) {
  const int64_t per_row = seq * dim;
  for (int64_t e = GlobalThread(); e < per_row; e += GridStride()) {
    float acc = dpos[e];
    for (int64_t r = 0; r < rows; ++r) acc += Load(dout + r * per_row + e);
    dpos[e] = acc;
  }
}

template <typename T>
__global__ void GatherRowsKernel(const T* x, const int32_t* idx, int64_t m, int64_t c, T* out) {
  for (int64_t e = GlobalThread(); e < m * c; e += GridStride()) {
    const int64_t i = e / c, j = e - (e / c) * c;
    out[e] = x[static_cast<int64_t>(idx[i]) * c + j];
  }
}

template <typename T>
__global__ void ScatterRowsKernel(const T* src, const int32_t* idx, int64_t m, int64_t c, T* out) {
  for (int64_t e = GlobalThread(); e < m * c; e += GridStride()) {
    const int64_t i = e / c, j = e - (e / c) * c;
    out[static_cast<int64_t>(idx[i]) * c + j] = src[e];
  }
}

}  // namespace

template <typename T>
Status EmbeddingForward(cudaStream_t stream, const T* table, int64_t vocab, int64_t dim,
                        const int32_t* ids, int64_t n, T* out, Accum accum) {
  RETURN_IF_ERROR(internal::Validator("EmbeddingForward")
                      .Positive("vocab", vocab)
                      .AtMost("vocab", vocab, INT32_MAX)
                      .NonNegative("dim", dim)
                      .NonNegative("n", n)
                      .NotNull("table", table, n > 0 ? vocab * dim : 0)
                      .NotNull("ids", ids, n)
                      .NotNull("out", out, n * dim)
                      .That(out == nullptr || out != table, "out not aliasing table")
                      .status());
  if (n == 0 || dim == 0) return OkStatus();
  EmbeddingForwardKernel<<<GridFor(n * dim), kThreads, 0, stream>>>(table, vocab, dim, ids, n, out,
                                                                    accum);
  L2L_CUDA_RETURN_IF_LAUNCH_FAILED();
  return OkStatus();
}

template <typename T>
Status EmbeddingBackward(cudaStream_t stream, const int32_t* ids, int64_t n, const T* dout,
                         int64_t vocab, int64_t dim, float* dtable, int32_t skip_id) {
  const int64_t tiles = (dim + kEmbedTile - 1) / kEmbedTile;
  RETURN_IF_ERROR(internal::Validator("EmbeddingBackward")
                      .Positive("vocab", vocab)
                      .AtMost("vocab", vocab, INT32_MAX)
                      .NonNegative("dim", dim)
                      .AtMost("column tiles of 256", tiles, 65535)
                      .NonNegative("n", n)
                      .NotNull("ids", ids, n)
                      .NotNull("dout", dout, n * dim)
                      .NotNull("dtable", dtable, n > 0 ? vocab * dim : 0)
                      .status());
  if (n == 0 || dim == 0) return OkStatus();
  const int64_t buckets = vocab < kEmbedMaxBuckets ? vocab : kEmbedMaxBuckets;
  const dim3 grid(static_cast<unsigned>(buckets), static_cast<unsigned>(tiles));
  EmbeddingBackwardKernel<<<grid, kEmbedTile, 0, stream>>>(
      ids, n, dout, vocab, dim, static_cast<int32_t>(buckets), skip_id, dtable);
  L2L_CUDA_RETURN_IF_LAUNCH_FAILED();
  return OkStatus();
}

template <typename T>
Status PositionEmbeddingForward(cudaStream_t stream, const T* pos, int64_t rows, int64_t seq,
                                int64_t dim, T* out, Accum accum) {
  RETURN_IF_ERROR(internal::Validator("PositionEmbeddingForward")
                      .NonNegative("rows", rows)
                      .NonNegative("seq", seq)
                      .NonNegative("dim", dim)
                      .NotNull("pos", pos, rows > 0 ? seq * dim : 0)
                      .NotNull("out", out, rows * seq * dim)
                      .status());
  if (rows == 0 || seq == 0 || dim == 0) return OkStatus();
  PositionForwardKernel<<<GridFor(rows * seq * dim), kThreads, 0, stream>>>(pos, rows, seq, dim,
                                                                            out, accum);
  L2L_CUDA_RETURN_IF_LAUNCH_FAILED();
  return OkStatus();
}

template <typename T>
Status PositionEmbeddingBackward(cudaStream_t stream, const T* dout, int64_t rows, int64_t seq,
                                 int64_t dim, float* dpos) {
  RETURN_IF_ERROR(internal::Validator("PositionEmbeddingBackward")
                      .NonNegative("rows", rows)
                      .NonNegative("seq", seq)
                      .NonNegative("dim", dim)
                      .NotNull("dout", dout, rows * seq * dim)
                      .NotNull("dpos", dpos, rows > 0 ? seq * dim : 0)
                      .status());
  if (rows == 0 || seq == 0 || dim == 0) return OkStatus();
  PositionBackwardKernel<<<GridFor(seq * dim), kThreads, 0, stream>>>(dout, rows, seq, dim, dpos);
  L2L_CUDA_RETURN_IF_LAUNCH_FAILED();
  return OkStatus();
}

template <typename T>
Status GatherRows(cudaStream_t stream, const T* x, const int32_t* idx, int64_t m, int64_t c,
                  T* out) {
  RETURN_IF_ERROR(internal::Validator("GatherRows")
                      .NonNegative("m", m)
                      .NonNegative("c", c)
                      .NotNull("x", x, m * c)
                      .NotNull("idx", idx, m)
                      .NotNull("out", out, m * c)
                      .status());
  if (m == 0 || c == 0) return OkStatus();
  GatherRowsKernel<<<GridFor(m * c), kThreads, 0, stream>>>(x, idx, m, c, out);
  L2L_CUDA_RETURN_IF_LAUNCH_FAILED();
  return OkStatus();
}

template <typename T>
Status ScatterRows(cudaStream_t stream, const T* src, const int32_t* idx, int64_t m, int64_t c,
                   T* out) {
  RETURN_IF_ERROR(internal::Validator("ScatterRows")
                      .NonNegative("m", m)
                      .NonNegative("c", c)
                      .NotNull("src", src, m * c)
                      .NotNull("idx", idx, m)
                      .NotNull("out", out, m * c)
                      .status());
  if (m == 0 || c == 0) return OkStatus();
  ScatterRowsKernel<<<GridFor(m * c), kThreads, 0, stream>>>(src, idx, m, c, out);
  L2L_CUDA_RETURN_IF_LAUNCH_FAILED();
  return OkStatus();
}

#define L2L_INSTANTIATE(T)                                                                        \
  template Status EmbeddingForward<T>(cudaStream_t, const T*, int64_t, int64_t, const int32_t*,   \
                                      int64_t, T*, Accum);                                        \
  template Status EmbeddingBackward<T>(cudaStream_t, const int32_t*, int64_t, const T*, int64_t,  \
                                       int64_t, float*, int32_t);                                 \
  template Status PositionEmbeddingForward<T>(cudaStream_t, const T*, int64_t, int64_t, int64_t,  \
                                              T*, Accum);                                         \
  template Status PositionEmbeddingBackward<T>(cudaStream_t, const T*, int64_t, int64_t, int64_t, \
                                               float*);                                           \
  template Status GatherRows<T>(cudaStream_t, const T*, const int32_t*, int64_t, int64_t, T*);    \
  template Status ScatterRows<T>(cudaStream_t, const T*, const int32_t*, int64_t, int64_t, T*);
L2L_INSTANTIATE(float)
L2L_INSTANTIATE(bf16)
#undef L2L_INSTANTIATE

}  // namespace l2l::kernels::cuda
