// Every CUDA op against the CPU op of the same name (l2l::kernels::cpu, the
// reference) on the same random inputs, for T = float and bf16 (the ggml
// test-backend-ops pattern), plus bit-exact dropout masks, AdamW and
// conversions, and run-twice bitwise determinism of every backward.
//
// Method: inputs are drawn in fp32 and rounded to T, so the device and the CPU
// see exactly the same values; the CPU runs in fp32 on them. Tolerances are
// relative max-norm errors max|gpu - cpu| / max|cpu|:
//   kF32Tol  = 1e-5  outputs stored in fp32 (all of T = float; in bf16 mode the
//                    fp32 parameter gradients, GEMMs with fp32 output, losses);
//   kBF16Tol = 2e-2  outputs stored in bf16 (one rounding is 2^-9 = 0.2%; the
//                    margin covers bf16 intermediates such as attention scores).
// Ops whose arithmetic is a single IEEE operation per element, or a fixed
// order of additions the CPU shares (dropout, add, embeddings, position
// embeddings, row moves, conversions, AdamW), are compared BITWISE with the
// CPU result rounded once to T.
//
// Tests that need a GPU skip (GTEST_SKIP, with the reason) when none is
// visible; the host-side tests (hash, bf16 bits, GEMM mapping, argument
// validation) run everywhere.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "device_math.h"
#include "host_util.h"
#include "l2l/core/dtype.h"
#include "l2l/core/rng.h"
#include "l2l/kernels/adamw.h"
#include "l2l/kernels/cpu.h"
#include "l2l/kernels/cuda.h"

namespace l2l::kernels::cuda {
namespace {

namespace ref = ::l2l::kernels::cpu;

constexpr double kF32Tol = 1e-5;
constexpr double kBF16Tol = 2e-2;

template <typename T>
constexpr double Tol() {
  return std::is_same_v<T, float> ? kF32Tol : kBF16Tol;
}

#define ASSERT_OK(expr)                                                \
  do {                                                                 \
    const ::l2l::Status l2l_test_status_ = (expr);                     \
    ASSERT_TRUE(l2l_test_status_.ok()) << l2l_test_status_.ToString(); \
  } while (0)

// ---- Host images of the storage types ------------------------------------------

template <typename T>
struct Host;
template <>
struct Host<float> {
  using type = float;
  static float Encode(float v) { return v; }
  static float Decode(float v) { return v; }
};
template <>
struct Host<bf16> {
  using type = uint16_t;
  static uint16_t Encode(float v) { return F32ToBF16(v); }
  static float Decode(uint16_t h) { return BF16ToF32(h); }
};
template <typename T>
using HostT = typename Host<T>::type;

template <typename T>
std::vector<HostT<T>> Encode(const std::vector<float>& v) {
  std::vector<HostT<T>> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = Host<T>::Encode(v[i]);
  return out;
}
template <typename T>
std::vector<float> Decode(const std::vector<HostT<T>>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = Host<T>::Decode(v[i]);
  return out;
}
// v with every element rounded to T's precision (what a T buffer holds).
template <typename T>
std::vector<float> AsT(const std::vector<float>& v) {
  return Decode<T>(Encode<T>(v));
}

std::vector<float> Random(int64_t n, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(dist(gen));
  return v;
}
// Random values exactly representable in T.
template <typename T>
std::vector<float> RandomT(int64_t n, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  return AsT<T>(Random(n, seed, lo, hi));
}

double RelErr(const std::vector<float>& got, const std::vector<float>& want) {
  EXPECT_EQ(got.size(), want.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size() && i < want.size(); ++i) {
    const double g = got[i], w = want[i];
    num = std::max(num, std::isnan(g) ? std::numeric_limits<double>::infinity() : std::abs(g - w));
    den = std::max(den, std::abs(w));
  }
  return den == 0 ? num : num / den;
}

double MaxAbs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, std::abs(static_cast<double>(x)));
  return m;
}

// ---- Device memory -----------------------------------------------------------------

// A device array of n elements of T (RAII); T may be bf16 (2-byte images).
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(int64_t n) : n_(n) {
    if (n > 0) {
      void* p = nullptr;
      const cudaError_t err = cudaMalloc(&p, static_cast<size_t>(n) * sizeof(T));
      EXPECT_EQ(err, cudaSuccess) << cudaGetErrorString(err);
      p_ = err == cudaSuccess ? static_cast<T*>(p) : nullptr;
    }
  }
  DeviceBuffer(DeviceBuffer&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(o.n_) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    std::swap(p_, o.p_);
    std::swap(n_, o.n_);
    return *this;
  }
  ~DeviceBuffer() {
    if (p_ != nullptr) (void)cudaFree(p_);
  }
  T* get() const { return p_; }
  int64_t size() const { return n_; }

 private:
  T* p_ = nullptr;
  int64_t n_ = 0;
};

template <typename U>
DeviceBuffer<U> UploadRaw(const void* src, int64_t n) {
  DeviceBuffer<U> b(n);
  if (n > 0 && b.get() != nullptr) {
    EXPECT_EQ(cudaMemcpy(b.get(), src, n * sizeof(U), cudaMemcpyHostToDevice), cudaSuccess);
  }
  return b;
}

// Plain element types (uint8_t, int32_t, uint64_t, float) go up as they are.
template <typename U>
DeviceBuffer<U> Upload(const std::vector<U>& v) {
  return UploadRaw<U>(v.data(), static_cast<int64_t>(v.size()));
}
// fp32 values stored as T (rounded for bf16).
template <typename T>
DeviceBuffer<T> UploadAs(const std::vector<float>& v) {
  const auto enc = Encode<T>(v);
  return UploadRaw<T>(enc.data(), static_cast<int64_t>(enc.size()));
}

// Copies back after the whole device is idle (so kernel faults surface here).
template <typename U>
std::vector<U> Download(const DeviceBuffer<U>& b) {
  std::vector<U> v(b.size());
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  if (b.size() > 0) {
    EXPECT_EQ(cudaMemcpy(v.data(), b.get(), b.size() * sizeof(U), cudaMemcpyDeviceToHost),
              cudaSuccess);
  }
  return v;
}
// The raw images of a T buffer (float or bf16 bits), for bitwise checks.
template <typename T>
std::vector<HostT<T>> DownloadRaw(const DeviceBuffer<T>& b) {
  std::vector<HostT<T>> v(b.size());
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  if (b.size() > 0) {
    EXPECT_EQ(cudaMemcpy(v.data(), b.get(), b.size() * sizeof(T), cudaMemcpyDeviceToHost),
              cudaSuccess);
  }
  return v;
}
template <typename T>
std::vector<float> DownloadAsFloat(const DeviceBuffer<T>& b) {
  return Decode<T>(DownloadRaw(b));
}

// Bitwise equality of float vectors (NaN-safe, -0 != +0).
std::vector<uint32_t> Bits(const std::vector<float>& v) {
  std::vector<uint32_t> out(v.size());
  if (!v.empty()) std::memcpy(out.data(), v.data(), v.size() * sizeof(float));
  return out;
}

// ---- Fixtures ----------------------------------------------------------------------

// Skips unless a CUDA device is visible; owns a stream and a CublasHandles.
class CudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int count = 0;
    const cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
      (void)cudaGetLastError();
      GTEST_SKIP() << "no usable CUDA device: cudaGetDeviceCount failed with "
                   << cudaGetErrorName(err) << " (" << cudaGetErrorString(err) << ")";
    }
    if (count == 0) GTEST_SKIP() << "no CUDA device visible (cudaGetDeviceCount = 0)";
    ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
    // A blocking stream: it waits for the test's synchronous cudaMemcpy uploads
    // (legacy default stream), whose DMA may still be running when they return.
    ASSERT_EQ(cudaStreamCreate(&stream_), cudaSuccess);
    auto h = CublasHandles::Create();
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    handles_.emplace(std::move(h).value());
  }
  void TearDown() override {
    handles_.reset();
    if (stream_ != nullptr) (void)cudaStreamDestroy(stream_);
  }
  const CublasHandles& handles() const { return *handles_; }

  cudaStream_t stream_ = nullptr;
  std::optional<CublasHandles> handles_;
};

template <typename T>
class CudaTypedTest : public CudaTest {};

struct TypeNames {
  template <typename T>
  static std::string GetName(int) {
    return std::is_same_v<T, float> ? "f32" : "bf16";
  }
};
using StorageTypes = ::testing::Types<float, bf16>;
TYPED_TEST_SUITE(CudaTypedTest, StorageTypes, TypeNames);

// ====================================================================================
// Host-side tests: no GPU needed.
// ====================================================================================

TEST(DeviceMath, DropoutHashIsDropoutKeep) {
  const std::vector<uint64_t> sample_keys = {0, 1000, 0xdeadbeefcafef00dull};
  for (float p : {0.0f, 0.1f, 0.25f, 0.5f, 0.999f}) {
    const DropoutKeys keys{p, 42, 7, 3, 2, sample_keys.data()};
    const internal::DropoutHashKeys k{42, 7, 3, 2, internal::DropoutThreshold(p)};
    for (int64_t r = 0; r < 3; ++r) {
      for (int64_t e = 0; e < 3000; ++e) {
        ASSERT_EQ(internal::DropoutKeepHash(k, sample_keys[r], e), DropoutKeep(keys, r, e))
            << "p=" << p << " row=" << r << " elem=" << e;
      }
    }
  }
}

TEST(DeviceMath, BF16BitsAreCoreConversion) {
  std::vector<uint32_t> patterns = {0x00000000u, 0x80000000u, 0x3f800000u, 0x3f808000u,
                                    0x3f818000u, 0x3f80ffffu, 0x7f7fffffu, 0xff7fffffu,
                                    0x7f800000u, 0xff800000u, 0x7f800001u, 0xffc00001u,
                                    0x7fa00000u, 0x00000001u, 0x00008000u, 0x007fffffu};
  std::mt19937_64 gen(5);
  for (int i = 0; i < 100000; ++i) patterns.push_back(static_cast<uint32_t>(gen()));
  for (uint32_t u : patterns) {
    float f;
    std::memcpy(&f, &u, sizeof f);
    ASSERT_EQ(internal::F32ToBF16Bits(f), F32ToBF16(f)) << std::hex << u;
  }
  for (uint32_t h = 0; h < 65536; ++h) {
    const float a = internal::BF16BitsToF32(static_cast<uint16_t>(h));
    const float b = BF16ToF32(static_cast<uint16_t>(h));
    ASSERT_EQ(std::memcmp(&a, &b, sizeof a), 0) << h;
  }
}

TEST(DeviceMath, AdamWStepIsCpuAdamWBitwise) {
  const int64_t n = 4099;
  auto p = Random(n, 1), g = Random(n, 2, -3, 3), m = Random(n, 3, -0.1, 0.1),
       v = Random(n, 4, 0, 0.01);
  for (int64_t step : {int64_t{1}, int64_t{2}, int64_t{1000}}) {
    const AdamWParams hp{1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, step, 0.7f};
    auto pc = p, mc = m, vc = v;
    std::vector<uint16_t> copy(n);
    kernels::AdamWUpdate(hp, n, pc.data(), g.data(), mc.data(), vc.data(), copy.data());
    const auto c = internal::MakeAdamWConstants(hp.lr, hp.beta1, hp.beta2, hp.eps, hp.weight_decay,
                                                hp.step, hp.grad_scale);
    auto ph = p, mh = m, vh = v;
    for (int64_t i = 0; i < n; ++i) internal::AdamWStep(c, &ph[i], g[i], &mh[i], &vh[i]);
    EXPECT_EQ(Bits(ph), Bits(pc)) << "step " << step;
    EXPECT_EQ(Bits(mh), Bits(mc));
    EXPECT_EQ(Bits(vh), Bits(vc));
  }
}

// Naive column-major GEMM, as cuBLAS defines it.
void ColumnMajorGemmNaive(Trans op_a, Trans op_b, int64_t m, int64_t n, int64_t k, const float* a,
                          int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc) {
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t i = 0; i < m; ++i) {
      double s = 0;
      for (int64_t p = 0; p < k; ++p) {
        const double av = op_a == Trans::kNo ? a[i + p * lda] : a[p + i * lda];
        const double bv = op_b == Trans::kNo ? b[p + j * ldb] : b[j + p * ldb];
        s += av * bv;
      }
      c[i + j * ldc] = static_cast<float>(s);
    }
  }
}

TEST(GemmMapping, RowMajorGemmIsTheSwappedColumnMajorGemm) {
  const int64_t m = 4, n = 6, k = 5, pad = 2;
  for (Trans ta : {Trans::kNo, Trans::kYes}) {
    for (Trans tb : {Trans::kNo, Trans::kYes}) {
      const int64_t a_rows = ta == Trans::kNo ? m : k, a_cols = ta == Trans::kNo ? k : m;
      const int64_t b_rows = tb == Trans::kNo ? k : n, b_cols = tb == Trans::kNo ? n : k;
      const int64_t lda = a_cols + pad, ldb = b_cols + pad, ldc = n + pad;
      auto a = Random(a_rows * lda, 1), b = Random(b_rows * ldb, 2);
      std::vector<float> want(m * ldc, 0.f), got(m * ldc, 0.f);
      ref::Gemm<float>(ta, tb, m, n, k, 1.0f, a.data(), lda, b.data(), ldb, 0.0f, want.data(), ldc);
      const auto g = internal::ToColumnMajor(ta, tb, m, n, k, lda, ldb, ldc);
      ASSERT_TRUE(internal::ValidateGemm("test", ta, tb, m, n, k, lda, ldb, ldc).ok());
      ColumnMajorGemmNaive(g.op_first, g.op_second, g.m, g.n, g.k, b.data(), g.ld_first, a.data(),
                           g.ld_second, got.data(), g.ldc);
      EXPECT_LT(RelErr(got, want), kF32Tol) << "ta=" << int(ta) << " tb=" << int(tb);
    }
  }
  // Leading dimensions too small for the stored shapes are rejected.
  EXPECT_EQ(internal::ValidateGemm("Gemm", Trans::kNo, Trans::kNo, 4, 6, 5, 4, 6, 6).code(),
            StatusCode::kInvalidArgument);  // lda < k
  EXPECT_EQ(internal::ValidateGemm("Gemm", Trans::kYes, Trans::kNo, 4, 6, 5, 4, 6, 6).code(),
            StatusCode::kOk);  // a stored (k, m): lda >= m
  EXPECT_EQ(internal::ValidateGemm("Gemm", Trans::kNo, Trans::kNo, 4, 6, 5, 5, 6, 5).code(),
            StatusCode::kInvalidArgument);  // ldc < n
}

TEST(ColumnChunks, FixedByTheRowCountAndBounded) {
  for (int64_t n : {int64_t{1}, int64_t{63}, int64_t{64}, int64_t{65}, int64_t{1000},
                    int64_t{16384}, int64_t{1} << 24}) {
    const int64_t rows = internal::ColumnChunkRows(n), chunks = internal::ColumnChunks(n);
    EXPECT_GE(rows, internal::kColumnChunkMinRows);
    EXPECT_LE(chunks, internal::kColumnMaxChunks) << n;
    EXPECT_GE(chunks * rows, n);
    EXPECT_LT((chunks - 1) * rows, n);
    EXPECT_GE(ColumnSumScratchElems(n, 7), chunks * 7);
  }
  // Monotone in n: a buffer sized for the most rows serves every smaller call
  // (ColumnChunks alone is not: 256 chunks at 16384 rows, 255 at 16512).
  int64_t prev = 0;
  for (int64_t n = 1; n <= 70000; ++n) {
    const int64_t s = ColumnSumScratchElems(n, 3);
    ASSERT_GE(s, prev) << n;
    ASSERT_GE(s, internal::ColumnChunks(n) * 3) << n;
    prev = s;
  }
}

// Launchers validate before touching the device: these run without a GPU.
TEST(Validation, BadArgumentsAreInvalidArgumentAndNameTheOp) {
  const cudaStream_t s = nullptr;
  float f = 0;
  auto expect_invalid = [](const Status& st, const char* op, const char* what) {
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.ToString();
    EXPECT_NE(st.message().find(op), std::string::npos) << st.message();
    EXPECT_NE(st.message().find(what), std::string::npos) << st.message();
  };
  expect_invalid(LayerNormForward<float>(s, &f, &f, &f, -1, 4, 1e-5, &f, nullptr, nullptr),
                 "LayerNormForward", "n = -1");
  expect_invalid(LayerNormForward<float>(s, &f, &f, &f, 2, 4, 0.0, &f, nullptr, nullptr),
                 "LayerNormForward", "eps");
  expect_invalid(LayerNormBackward<float>(s, &f, &f, &f, &f, &f, 2, 4, &f, &f, nullptr, nullptr),
                 "LayerNormBackward", "scratch");
  expect_invalid(LayerNormBackward<float>(s, &f, &f, &f, &f, &f, 2, 4, &f, nullptr, nullptr,
                                          nullptr, Accum::kAdd),
                 "LayerNormBackward", "aliasing");
  const uint64_t key = 1;
  uint8_t keep = 0;
  expect_invalid(DropoutMask(s, DropoutKeys{1.0f, 0, 0, 0, 0, &key}, 1, 4, &keep), "DropoutMask",
                 "keys.p");
  expect_invalid(DropoutMask(s, DropoutKeys{0.1f, 0, 0, 0, 0, nullptr}, 1, 4, &keep), "DropoutMask",
                 "sample_keys");
  expect_invalid(ColumnSumAccumulate<float>(s, &f, 3, 2, &f, nullptr), "ColumnSumAccumulate",
                 "scratch");
  int32_t id = 0;
  expect_invalid(EmbeddingForward<float>(s, &f, 1, 1, &id, 1, &f), "EmbeddingForward",
                 "aliasing table");
  double row_loss = 0;
  CrossEntropyStats* no_stats = nullptr;
  expect_invalid(CrossEntropy<float>(s, &f, &id, 1, 0, 1.0, nullptr, &row_loss, no_stats),
                 "CrossEntropy", "vocab = 0");
  expect_invalid(
      AdamWUpdate(s, AdamWParams{1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f, 0}, 1, &f, &f, &f, &f, nullptr),
      "AdamWUpdate", "step");
  expect_invalid(GeluForward<float>(s, nullptr, 3, &f), "GeluForward", "x is null");
  expect_invalid(GeluBackward<float>(s, &f, nullptr, 3, &f, Gelu::kErf), "GeluBackward",
                 "dy is null");
  expect_invalid(RmsNormForward<float>(s, &f, &f, 2, 4, 0.0, &f, nullptr), "RmsNormForward", "eps");
  expect_invalid(RmsNormBackward<float>(s, &f, &f, &f, &f, 2, 4, &f, &f, nullptr),
                 "RmsNormBackward", "scratch");
  expect_invalid(RmsNormBackward<float>(s, &f, &f, &f, &f, 2, 4, &f, nullptr, nullptr, Accum::kAdd),
                 "RmsNormBackward", "aliasing");
  const RopeParams rope;
  expect_invalid(RopeForward<float>(s, AttentionDims{1, 2, 2, 5}, rope, nullptr, &f), "RopeForward",
                 "even head_dim");
  expect_invalid(
      RopeBackward<float>(s, AttentionDims{1, 2, 1, 2 * kRopeMaxHeadDim}, rope, nullptr, &f),
      "RopeBackward", "head_dim");
  expect_invalid(
      RopeForward<float>(s, AttentionDims{1, 2, 4, 4, AttnMask::kCausal, 3}, rope, nullptr, &f),
      "RopeForward", "kv_heads dividing heads");
  // heads = 0 is refused, not a division by zero in the group arithmetic.
  expect_invalid(RopeForward<float>(s, AttentionDims{1, 2, 0, 4}, rope, nullptr, &f), "RopeForward",
                 "heads = 0");
  expect_invalid(SwigluForward<float>(s, &f, 1, 1, &f), "SwigluForward", "aliasing");
  float g = 0;
  expect_invalid(SwigluBackward<float>(s, &f, &g, 1, 1, &g), "SwigluBackward", "aliasing");
  expect_invalid(SwigluBackward<float>(s, &f, &g, 1, 1, nullptr), "SwigluBackward", "dgu");
  // Empty problems are OK and touch nothing (null pointers allowed).
  EXPECT_TRUE(GeluForward<float>(s, nullptr, 0, nullptr).ok());
  EXPECT_TRUE(Add<bf16>(s, nullptr, nullptr, 0, nullptr).ok());
  EXPECT_TRUE(
      LayerNormForward<bf16>(s, nullptr, nullptr, nullptr, 0, 8, 1e-5, nullptr, nullptr, nullptr)
          .ok());
  EXPECT_TRUE(RmsNormForward<bf16>(s, nullptr, nullptr, 0, 8, 1e-5, nullptr, nullptr).ok());
  EXPECT_TRUE(RopeForward<bf16>(s, AttentionDims{0, 4, 4, 8, AttnMask::kCausal, 2}, RopeParams{},
                                nullptr, nullptr)
                  .ok());
  EXPECT_TRUE(SwigluForward<bf16>(s, nullptr, 0, 16, nullptr).ok());
  EXPECT_TRUE(SwigluBackward<bf16>(s, nullptr, nullptr, 5, 0, nullptr).ok());
}

// ====================================================================================
// Device tests: every op against the CPU op.
// ====================================================================================

// Launchers that take a CublasHandles validate before touching the device
// too, but a CublasHandles needs one.
TEST_F(CudaTest, GemmLaunchersRejectBadArgumentsToo) {
  float f = 0;
  auto expect_invalid = [](const Status& st, const char* op, const char* what) {
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.ToString();
    EXPECT_NE(st.message().find(op), std::string::npos) << st.message();
    EXPECT_NE(st.message().find(what), std::string::npos) << st.message();
  };
  expect_invalid(
      LinearForward<float>(handles(), stream_, &f, &f, nullptr, 1, 1, 1, &f, WeightLayout::kOutIn),
      "LinearForward", "aliasing");
  expect_invalid(
      AttentionForward<float>(handles(), stream_, AttentionDims{1, 2, 4, 4, AttnMask::kCausal, 3},
                              &f, nullptr, nullptr, 0.0f, &f, &f, nullptr),
      "AttentionForward", "kv_heads dividing heads");
  expect_invalid(AttentionBackward<float>(handles(), stream_, AttentionDims{1, 2, 0, 4}, &f,
                                          nullptr, 0.0f, &f, &f, &f, &f),
                 "AttentionBackward", "heads = 0");
}

// ---- GEMM / linear ---------------------------------------------------------------

TYPED_TEST(CudaTypedTest, GemmMatchesCpuForAllTransposesWithStrides) {
  using T = TypeParam;
  const int64_t m = 37, n = 45, k = 70, pad = 3;
  const float alpha = 1.5f, beta = 0.5f;
  for (Trans ta : {Trans::kNo, Trans::kYes}) {
    for (Trans tb : {Trans::kNo, Trans::kYes}) {
      SCOPED_TRACE(::testing::Message() << "ta=" << int(ta) << " tb=" << int(tb));
      const int64_t a_rows = ta == Trans::kNo ? m : k, a_cols = ta == Trans::kNo ? k : m;
      const int64_t b_rows = tb == Trans::kNo ? k : n, b_cols = tb == Trans::kNo ? n : k;
      const int64_t lda = a_cols + pad, ldb = b_cols + pad, ldc = n + pad;
      const auto a = RandomT<T>(a_rows * lda, 1), b = RandomT<T>(b_rows * ldb, 2);
      const auto c0 = RandomT<T>(m * ldc, 3);
      auto want = c0;
      ref::Gemm<float>(ta, tb, m, n, k, alpha, a.data(), lda, b.data(), ldb, beta, want.data(),
                       ldc);
      auto da = UploadAs<T>(a), db = UploadAs<T>(b), dc = UploadAs<T>(c0);
      ASSERT_OK((Gemm<T, T>(this->handles(), this->stream_, ta, tb, m, n, k, alpha, da.get(), lda,
                            db.get(), ldb, beta, dc.get(), ldc)));
      EXPECT_LT(RelErr(DownloadAsFloat(dc), want), Tol<T>());
      if constexpr (std::is_same_v<T, bf16>) {  // bf16 inputs, fp32 output: fp32 accuracy
        auto dcf = Upload(c0);
        ASSERT_OK((Gemm<bf16, float>(this->handles(), this->stream_, ta, tb, m, n, k, alpha,
                                     da.get(), lda, db.get(), ldb, beta, dcf.get(), ldc)));
        EXPECT_LT(RelErr(Download(dcf), want), kF32Tol);
      }
    }
  }
}

TYPED_TEST(CudaTypedTest, GemmStridedBatchedMatchesCpuPerBatch) {
  using T = TypeParam;
  const int64_t m = 9, n = 11, k = 13, batch = 3;
  const int64_t lda = k + 1, ldb = k + 2, ldc = n + 3;  // a (m, k), b stored (n, k): trans_b
  const int64_t sa = m * lda + 5, sb = n * ldb + 7, sc = m * ldc + 2;
  const auto a = RandomT<T>(batch * sa, 1), b = RandomT<T>(batch * sb, 2);
  const auto c0 = RandomT<T>(batch * sc, 3);
  auto want = c0;
  for (int64_t i = 0; i < batch; ++i) {
    ref::Gemm<float>(Trans::kNo, Trans::kYes, m, n, k, 0.75f, a.data() + i * sa, lda,
                     b.data() + i * sb, ldb, 0.25f, want.data() + i * sc, ldc);
  }
  auto da = UploadAs<T>(a), db = UploadAs<T>(b), dc = UploadAs<T>(c0);
  ASSERT_OK((GemmStridedBatched<T, T>(this->handles(), this->stream_, Trans::kNo, Trans::kYes, m, n,
                                      k, 0.75f, da.get(), lda, sa, db.get(), ldb, sb, 0.25f,
                                      dc.get(), ldc, sc, batch)));
  EXPECT_LT(RelErr(DownloadAsFloat(dc), want), Tol<T>());
}

TYPED_TEST(CudaTypedTest, GemmWithEmptyInnerDimensionScalesC) {
  using T = TypeParam;
  const int64_t m = 3, n = 4;
  auto c0 = RandomT<T>(m * n, 1);
  c0[5] = std::numeric_limits<float>::quiet_NaN();  // beta == 0 must overwrite, not scale
  auto dc = UploadAs<T>(c0);
  ASSERT_OK((Gemm<T, T>(this->handles(), this->stream_, Trans::kNo, Trans::kNo, m, n, 0, 1.0f,
                        nullptr, 1, nullptr, n, 0.0f, dc.get(), n)));
  EXPECT_EQ(DownloadAsFloat(dc), std::vector<float>(m * n, 0.0f));
  c0[5] = 1.0f;
  auto dc2 = UploadAs<T>(c0);
  ASSERT_OK((Gemm<T, T>(this->handles(), this->stream_, Trans::kNo, Trans::kNo, m, n, 0, 1.0f,
                        nullptr, 1, nullptr, n, 2.0f, dc2.get(), n)));
  std::vector<float> want(c0);
  for (auto& x : want) x *= 2.0f;
  EXPECT_EQ(DownloadAsFloat(dc2), want);
}

// Both weight layouts: kInOut (w stored (in, out)) and kOutIn (nn.Linear's
// (out, in), y = x · wᵀ); dw is accumulated in w's own layout.
TYPED_TEST(CudaTypedTest, LinearForwardAndBackwardMatchCpuInBothLayouts) {
  using T = TypeParam;
  const int64_t n = 67, in = 40, out = 33;
  const auto x = RandomT<T>(n * in, 1), w = RandomT<T>(in * out, 2);
  const auto bias = RandomT<T>(out, 3), dy = RandomT<T>(n * out, 4);
  const auto dx0 = RandomT<T>(n * in, 5);
  const auto dw0 = Random(in * out, 6), db0 = Random(out, 7);  // fp32 accumulators
  auto dx = UploadAs<T>(x), dw_ = UploadAs<T>(w), dbias = UploadAs<T>(bias), ddy = UploadAs<T>(dy);

  for (WeightLayout layout : {WeightLayout::kInOut, WeightLayout::kOutIn}) {
    SCOPED_TRACE(layout == WeightLayout::kInOut ? "w (in, out)" : "w (out, in)");
    // Forward, with and without bias.
    for (bool with_bias : {true, false}) {
      std::vector<float> want(n * out);
      ref::LinearForward<float>(x.data(), w.data(), with_bias ? bias.data() : nullptr, n, in, out,
                                want.data(), layout);
      DeviceBuffer<T> y(n * out);
      ASSERT_OK(LinearForward<T>(this->handles(), this->stream_, dx.get(), dw_.get(),
                                 with_bias ? dbias.get() : nullptr, n, in, out, y.get(), layout));
      EXPECT_LT(RelErr(DownloadAsFloat(y), want), Tol<T>()) << "bias " << with_bias;
    }

    // Backward: dx written and added, dw and dbias accumulated onto non-zero values.
    std::vector<float> want_dx(n * in), want_dx_add = dx0, want_dw = dw0, want_db = db0;
    ref::LinearBackward<float>(x.data(), w.data(), dy.data(), n, in, out, want_dx.data(),
                               want_dw.data(), want_db.data(), Accum::kOverwrite, layout);
    ref::LinearBackward<float>(x.data(), w.data(), dy.data(), n, in, out, want_dx_add.data(),
                               nullptr, nullptr, Accum::kAdd, layout);
    std::vector<float> dw_runs[2], db_runs[2];
    for (int run = 0; run < 2; ++run) {
      DeviceBuffer<T> gdx(n * in);
      auto gdx_add = UploadAs<T>(dx0);
      auto gdw = Upload(dw0), gdb = Upload(db0);
      DeviceBuffer<float> scratch(ColumnSumScratchElems(n, out));
      ASSERT_OK(LinearBackward<T>(this->handles(), this->stream_, dx.get(), dw_.get(), ddy.get(), n,
                                  in, out, gdx.get(), gdw.get(), gdb.get(), scratch.get(),
                                  Accum::kOverwrite, layout));
      ASSERT_OK(LinearBackward<T>(this->handles(), this->stream_, dx.get(), dw_.get(), ddy.get(), n,
                                  in, out, gdx_add.get(), nullptr, nullptr, nullptr, Accum::kAdd,
                                  layout));
      EXPECT_LT(RelErr(DownloadAsFloat(gdx), want_dx), Tol<T>());
      EXPECT_LT(RelErr(DownloadAsFloat(gdx_add), want_dx_add), Tol<T>());
      dw_runs[run] = Download(gdw);
      db_runs[run] = Download(gdb);
      EXPECT_LT(RelErr(dw_runs[run], want_dw), kF32Tol);  // fp32 accumulation of exact products
      EXPECT_LT(RelErr(db_runs[run], want_db), kF32Tol);
    }
    EXPECT_EQ(Bits(dw_runs[0]), Bits(dw_runs[1])) << "dw not reproducible";
    EXPECT_EQ(Bits(db_runs[0]), Bits(db_runs[1])) << "dbias not reproducible";
  }
}

// The two layouts are each other's transpose: y from w (in, out) equals y from
// wᵀ stored (out, in), and dw of one is the transpose of the other's. Checks
// the GPU against itself, so a shared misreading of the layouts would show.
TYPED_TEST(CudaTypedTest, LinearOutInIsTheTransposedInOut) {
  using T = TypeParam;
  const int64_t n = 19, in = 24, out = 10;
  const auto x = RandomT<T>(n * in, 1), w = RandomT<T>(in * out, 2), dy = RandomT<T>(n * out, 3);
  std::vector<float> wt(out * in);
  for (int64_t i = 0; i < in; ++i)
    for (int64_t o = 0; o < out; ++o) wt[o * in + i] = w[i * out + o];
  auto dx = UploadAs<T>(x), dw_io = UploadAs<T>(w), dw_oi = UploadAs<T>(wt), ddy = UploadAs<T>(dy);
  DeviceBuffer<T> y_io(n * out), y_oi(n * out);
  ASSERT_OK(LinearForward<T>(this->handles(), this->stream_, dx.get(), dw_io.get(), nullptr, n, in,
                             out, y_io.get(), WeightLayout::kInOut));
  ASSERT_OK(LinearForward<T>(this->handles(), this->stream_, dx.get(), dw_oi.get(), nullptr, n, in,
                             out, y_oi.get(), WeightLayout::kOutIn));
  EXPECT_LT(RelErr(DownloadAsFloat(y_oi), DownloadAsFloat(y_io)), Tol<T>());
  auto g_io = Upload(std::vector<float>(in * out, 0.0f));
  auto g_oi = Upload(std::vector<float>(out * in, 0.0f));
  ASSERT_OK(LinearBackward<T>(this->handles(), this->stream_, dx.get(), dw_io.get(), ddy.get(), n,
                              in, out, nullptr, g_io.get(), nullptr, nullptr, Accum::kOverwrite,
                              WeightLayout::kInOut));
  ASSERT_OK(LinearBackward<T>(this->handles(), this->stream_, dx.get(), dw_oi.get(), ddy.get(), n,
                              in, out, nullptr, g_oi.get(), nullptr, nullptr, Accum::kOverwrite,
                              WeightLayout::kOutIn));
  const auto got_io = Download(g_io), got_oi = Download(g_oi);
  std::vector<float> oi_transposed(in * out);
  for (int64_t i = 0; i < in; ++i)
    for (int64_t o = 0; o < out; ++o) oi_transposed[i * out + o] = got_oi[o * in + i];
  EXPECT_LT(RelErr(oi_transposed, got_io), kF32Tol);
}

TYPED_TEST(CudaTypedTest, ColumnSumMatchesCpuAndIsReproducible) {
  using T = TypeParam;
  for (int64_t n : {int64_t{5}, int64_t{1000}}) {  // one chunk; 16 chunks
    const int64_t c = 70;
    const auto x = RandomT<T>(n * c, 1), out0 = Random(c, 2);
    auto want = out0;
    ref::ColumnSumAccumulate<float>(x.data(), n, c, want.data());
    auto dx = UploadAs<T>(x);
    std::vector<float> runs[2];
    for (auto& got : runs) {
      auto dout = Upload(out0);
      DeviceBuffer<float> scratch(ColumnSumScratchElems(n, c));
      ASSERT_OK(ColumnSumAccumulate<T>(this->stream_, dx.get(), n, c, dout.get(), scratch.get()));
      got = Download(dout);
      EXPECT_LT(RelErr(got, want), kF32Tol) << "n=" << n;
    }
    EXPECT_EQ(Bits(runs[0]), Bits(runs[1])) << "n=" << n;
  }
}

// ---- Layernorm -------------------------------------------------------------------------

TYPED_TEST(CudaTypedTest, LayerNormForwardMatchesCpuAndWorksInPlace) {
  using T = TypeParam;
  const int64_t n = 50, c = 300;
  const auto x = RandomT<T>(n * c, 1, -2, 3), gain = RandomT<T>(c, 2, 0.5, 1.5),
             bias = RandomT<T>(c, 3);
  std::vector<float> want(n * c), want_mean(n), want_rstd(n);
  ref::LayerNormForward<float>(x.data(), gain.data(), bias.data(), n, c, kLayerNormEps, want.data(),
                               want_mean.data(), want_rstd.data());
  auto dx = UploadAs<T>(x), dg = UploadAs<T>(gain), db = UploadAs<T>(bias);
  DeviceBuffer<T> y(n * c);
  DeviceBuffer<float> mean(n), rstd(n);
  ASSERT_OK(LayerNormForward<T>(this->stream_, dx.get(), dg.get(), db.get(), n, c, kLayerNormEps,
                                y.get(), mean.get(), rstd.get()));
  EXPECT_LT(RelErr(DownloadAsFloat(y), want), Tol<T>());
  EXPECT_LT(RelErr(Download(mean), want_mean), kF32Tol);
  EXPECT_LT(RelErr(Download(rstd), want_rstd), kF32Tol);
  // In place (y aliases x): the same bits as out of place.
  ASSERT_OK(LayerNormForward<T>(this->stream_, dx.get(), dg.get(), db.get(), n, c, kLayerNormEps,
                                dx.get(), nullptr, nullptr));
  EXPECT_EQ(DownloadRaw(dx), DownloadRaw(y));
}

TYPED_TEST(CudaTypedTest, LayerNormBackwardMatchesCpuAndIsReproducible) {
  using T = TypeParam;
  const int64_t n = 300, c = 100;  // 5 row chunks
  const auto x = RandomT<T>(n * c, 1, -2, 3), gain = RandomT<T>(c, 2, 0.5, 1.5),
             bias = RandomT<T>(c, 3), dy = RandomT<T>(n * c, 4), dx0 = RandomT<T>(n * c, 5);
  const auto dgain0 = Random(c, 6), dbias0 = Random(c, 7);
  std::vector<float> y(n * c), mean(n), rstd(n);
  ref::LayerNormForward<float>(x.data(), gain.data(), bias.data(), n, c, kLayerNormEps, y.data(),
                               mean.data(), rstd.data());
  std::vector<float> want_dx(n * c), want_dx_add = dx0, want_dg = dgain0, want_db = dbias0;
  ref::LayerNormBackward<float>(x.data(), gain.data(), mean.data(), rstd.data(), dy.data(), n, c,
                                want_dx.data(), want_dg.data(), want_db.data());
  ref::LayerNormBackward<float>(x.data(), gain.data(), mean.data(), rstd.data(), dy.data(), n, c,
                                want_dx_add.data(), nullptr, nullptr, Accum::kAdd);
  EXPECT_GT(MaxAbs(want_dx), 0.1);

  auto dx_in = UploadAs<T>(x), dgain = UploadAs<T>(gain), dmean = Upload(mean),
       drstd = Upload(rstd), ddy = UploadAs<T>(dy);
  DeviceBuffer<float> scratch(LayerNormBackwardScratchElems(n, c));
  std::vector<HostT<T>> dx_runs[2];
  std::vector<float> dg_runs[2], db_runs[2];
  for (int run = 0; run < 2; ++run) {
    DeviceBuffer<T> gdx(n * c);
    auto gdg = Upload(dgain0), gdb = Upload(dbias0);
    ASSERT_OK(LayerNormBackward<T>(this->stream_, dx_in.get(), dgain.get(), dmean.get(),
                                   drstd.get(), ddy.get(), n, c, gdx.get(), gdg.get(), gdb.get(),
                                   scratch.get()));
    dx_runs[run] = DownloadRaw(gdx);
    dg_runs[run] = Download(gdg);
    db_runs[run] = Download(gdb);
    EXPECT_LT(RelErr(Decode<T>(dx_runs[run]), want_dx), Tol<T>());
    EXPECT_LT(RelErr(dg_runs[run], want_dg), kF32Tol);
    EXPECT_LT(RelErr(db_runs[run], want_db), kF32Tol);
  }
  EXPECT_EQ(dx_runs[0], dx_runs[1]);
  EXPECT_EQ(Bits(dg_runs[0]), Bits(dg_runs[1])) << "dgain not reproducible";
  EXPECT_EQ(Bits(db_runs[0]), Bits(db_runs[1])) << "dbias not reproducible";

  // dx added onto existing values.
  auto gdx_add = UploadAs<T>(dx0);
  ASSERT_OK(LayerNormBackward<T>(this->stream_, dx_in.get(), dgain.get(), dmean.get(), drstd.get(),
                                 ddy.get(), n, c, gdx_add.get(), nullptr, nullptr, nullptr,
                                 Accum::kAdd));
  EXPECT_LT(RelErr(DownloadAsFloat(gdx_add), want_dx_add), Tol<T>());
  // dx written over dy (aliasing allowed with kOverwrite): the same bits.
  auto dy_inplace = UploadAs<T>(dy);
  ASSERT_OK(LayerNormBackward<T>(this->stream_, dx_in.get(), dgain.get(), dmean.get(), drstd.get(),
                                 dy_inplace.get(), n, c, dy_inplace.get(), nullptr, nullptr,
                                 nullptr));
  EXPECT_EQ(DownloadRaw(dy_inplace), dx_runs[0]);
}

// ---- RMSNorm ---------------------------------------------------------------------------

constexpr double kRmsNormEps = 1e-6;  // Llama's rms_norm_eps

TYPED_TEST(CudaTypedTest, RmsNormForwardMatchesCpuAndWorksInPlace) {
  using T = TypeParam;
  const int64_t n = 50, c = 300;
  const auto x = RandomT<T>(n * c, 1, -2, 3), gain = RandomT<T>(c, 2, 0.5, 1.5);
  std::vector<float> want(n * c), want_rstd(n);
  ref::RmsNormForward<float>(x.data(), gain.data(), n, c, kRmsNormEps, want.data(),
                             want_rstd.data());
  auto dx = UploadAs<T>(x), dg = UploadAs<T>(gain);
  DeviceBuffer<T> y(n * c);
  DeviceBuffer<float> rstd(n);
  ASSERT_OK(
      RmsNormForward<T>(this->stream_, dx.get(), dg.get(), n, c, kRmsNormEps, y.get(), rstd.get()));
  EXPECT_LT(RelErr(DownloadAsFloat(y), want), Tol<T>());
  EXPECT_LT(RelErr(Download(rstd), want_rstd), kF32Tol);
  // In place (y aliases x), without saving rstd: the same bits as out of place.
  ASSERT_OK(
      RmsNormForward<T>(this->stream_, dx.get(), dg.get(), n, c, kRmsNormEps, dx.get(), nullptr));
  EXPECT_EQ(DownloadRaw(dx), DownloadRaw(y));
}

TYPED_TEST(CudaTypedTest, RmsNormBackwardMatchesCpuAndIsReproducible) {
  using T = TypeParam;
  const int64_t n = 300, c = 100;  // 5 row chunks
  const auto x = RandomT<T>(n * c, 1, -2, 3), gain = RandomT<T>(c, 2, 0.5, 1.5),
             dy = RandomT<T>(n * c, 4), dx0 = RandomT<T>(n * c, 5);
  const auto dgain0 = Random(c, 6);
  std::vector<float> y(n * c), rstd(n);
  ref::RmsNormForward<float>(x.data(), gain.data(), n, c, kRmsNormEps, y.data(), rstd.data());
  std::vector<float> want_dx(n * c), want_dx_add = dx0, want_dg = dgain0;
  ref::RmsNormBackward<float>(x.data(), gain.data(), rstd.data(), dy.data(), n, c, want_dx.data(),
                              want_dg.data());
  ref::RmsNormBackward<float>(x.data(), gain.data(), rstd.data(), dy.data(), n, c,
                              want_dx_add.data(), nullptr, Accum::kAdd);
  EXPECT_GT(MaxAbs(want_dx), 0.1);

  auto dx_in = UploadAs<T>(x), dgain = UploadAs<T>(gain), drstd = Upload(rstd),
       ddy = UploadAs<T>(dy);
  DeviceBuffer<float> scratch(RmsNormBackwardScratchElems(n, c));
  std::vector<HostT<T>> dx_runs[2];
  std::vector<float> dg_runs[2];
  for (int run = 0; run < 2; ++run) {
    DeviceBuffer<T> gdx(n * c);
    auto gdg = Upload(dgain0);
    ASSERT_OK(RmsNormBackward<T>(this->stream_, dx_in.get(), dgain.get(), drstd.get(), ddy.get(), n,
                                 c, gdx.get(), gdg.get(), scratch.get()));
    dx_runs[run] = DownloadRaw(gdx);
    dg_runs[run] = Download(gdg);
    EXPECT_LT(RelErr(Decode<T>(dx_runs[run]), want_dx), Tol<T>());
    EXPECT_LT(RelErr(dg_runs[run], want_dg), kF32Tol);
  }
  EXPECT_EQ(dx_runs[0], dx_runs[1]);
  EXPECT_EQ(Bits(dg_runs[0]), Bits(dg_runs[1])) << "dgain not reproducible";

  // dx added onto existing values (the residual branch), dgain accumulated again.
  auto gdx_add = UploadAs<T>(dx0);
  auto gdg_add = Upload(dgain0);
  ASSERT_OK(RmsNormBackward<T>(this->stream_, dx_in.get(), dgain.get(), drstd.get(), ddy.get(), n,
                               c, gdx_add.get(), gdg_add.get(), scratch.get(), Accum::kAdd));
  EXPECT_LT(RelErr(DownloadAsFloat(gdx_add), want_dx_add), Tol<T>());
  EXPECT_EQ(Bits(Download(gdg_add)), Bits(dg_runs[0])) << "dgain depends on dx_accum";
  // dx written over dy (aliasing allowed with kOverwrite): the same bits.
  auto dy_inplace = UploadAs<T>(dy);
  ASSERT_OK(RmsNormBackward<T>(this->stream_, dx_in.get(), dgain.get(), drstd.get(),
                               dy_inplace.get(), n, c, dy_inplace.get(), nullptr, nullptr));
  EXPECT_EQ(DownloadRaw(dy_inplace), dx_runs[0]);
}

// ---- Softmax -----------------------------------------------------------------------------

TYPED_TEST(CudaTypedTest, SoftmaxForwardAndBackwardMatchCpu) {
  using T = TypeParam;
  const int64_t n = 20, c = 300;
  const auto x = RandomT<T>(n * c, 1, -3, 3), dy = RandomT<T>(n * c, 2);
  std::vector<float> want_y(n * c), want_dx(n * c);
  ref::SoftmaxForward<float>(x.data(), n, c, want_y.data());
  const auto y = AsT<T>(want_y);  // the backward's input, as the device would hold it
  ref::SoftmaxBackward<float>(y.data(), dy.data(), n, c, want_dx.data());
  auto dx = UploadAs<T>(x), ddy = UploadAs<T>(dy), dy_saved = UploadAs<T>(y);
  DeviceBuffer<T> gy(n * c), gdx(n * c);
  ASSERT_OK(SoftmaxForward<T>(this->stream_, dx.get(), n, c, gy.get()));
  ASSERT_OK(SoftmaxBackward<T>(this->stream_, dy_saved.get(), ddy.get(), n, c, gdx.get()));
  EXPECT_LT(RelErr(DownloadAsFloat(gy), want_y), Tol<T>());
  EXPECT_LT(RelErr(DownloadAsFloat(gdx), want_dx), Tol<T>());
  EXPECT_GT(MaxAbs(want_dx), 1e-3);
}

// ---- Attention ---------------------------------------------------------------------------

std::vector<uint8_t> PadMask(int rows, int S, bool docs = false) {
  // Row 0 fully real; row 1 has its last five positions padded; row 2 is all
  // padding (zero probs, zero output, zero gradient). With docs, documents
  // start at 5 and 33 of row 0 (past one warp) and at 2 of row 1.
  std::vector<uint8_t> pad(rows * S, kMaskReal);
  for (int j = S - 5; j < S; ++j) pad[S + j] = 0;
  if (rows > 2) std::fill(pad.begin() + 2 * S, pad.begin() + 3 * S, uint8_t{0});
  if (docs) {
    pad[5] |= kMaskDocStart;
    pad[33] |= kMaskDocStart;
    pad[S + 2] |= kMaskDocStart;
  }
  return pad;
}

std::vector<uint64_t> SampleKeys(int rows) {
  std::vector<uint64_t> k(rows);
  for (int r = 0; r < rows; ++r) k[r] = 1000 + 7 * r;
  return k;
}

// AttentionForward and Backward against the CPU for dims d (rows >= 3: row 1
// is partly padded, row 2 fully), with or without probability dropout: probs,
// out and dqkv within Tol<T>, masked probabilities exactly zero, and the
// backward bitwise reproducible.
template <typename T>
void ExpectAttentionMatchesCpu(const CublasHandles& handles, cudaStream_t stream,
                               const AttentionDims& d, bool dropout, bool docs = false) {
  SCOPED_TRACE(::testing::Message()
               << (d.mask == AttnMask::kCausal ? "causal" : "padding") << (docs ? " documents" : "")
               << (dropout ? " dropout" : " no dropout") << ", heads " << d.heads << ", kv_heads "
               << d.num_kv_heads());
  const int rows = d.rows, S = d.seq_len;
  const float p = 0.2f;
  const auto keys = SampleKeys(rows);
  std::vector<uint8_t> keep(int64_t{rows} * d.heads * S * S);
  ref::DropoutMask({p, 11, 2, 3, 0, keys.data()}, rows, int64_t{d.heads} * S * S, keep.data());
  const auto pad = PadMask(rows, S, docs);
  const auto qkv = RandomT<T>(int64_t{rows} * S * d.qkv_width(), 1);
  const auto dout = RandomT<T>(int64_t{rows} * S * d.hidden(), 2);
  const uint8_t* kp = dropout ? keep.data() : nullptr;
  std::vector<float> want_probs(keep.size()), want_out(dout.size()), want_dqkv(qkv.size());
  ref::AttentionForward<float>(d, qkv.data(), pad.data(), kp, p, want_probs.data(),
                               want_out.data());
  ref::AttentionBackward<float>(d, qkv.data(), kp, p, want_probs.data(), dout.data(),
                                want_dqkv.data());
  EXPECT_GT(MaxAbs(want_out), 0.05);
  EXPECT_GT(MaxAbs(want_dqkv), 0.01);

  auto dqkv_in = UploadAs<T>(qkv), ddout = UploadAs<T>(dout);
  auto dpad = Upload(pad), dkeep = Upload(keep);
  const uint8_t* gkp = dropout ? dkeep.get() : nullptr;
  DeviceBuffer<T> probs(keep.size()), out(dout.size()), scratch(AttentionScratchElems(d));
  ASSERT_OK(AttentionForward<T>(handles, stream, d, dqkv_in.get(), dpad.get(), gkp, p, probs.get(),
                                out.get(), scratch.get()));
  const auto got_probs = DownloadAsFloat(probs);
  EXPECT_LT(RelErr(got_probs, want_probs), Tol<T>());
  EXPECT_LT(RelErr(DownloadAsFloat(out), want_out), Tol<T>());
  // Masked keys are exactly zero, as on the CPU.
  for (size_t i = 0; i < want_probs.size(); ++i) {
    if (want_probs[i] == 0.0f) {
      ASSERT_EQ(got_probs[i], 0.0f) << i;
    }
  }
  std::vector<HostT<T>> dqkv_runs[2];
  for (auto& run : dqkv_runs) {
    DeviceBuffer<T> gdqkv(qkv.size());
    ASSERT_OK(AttentionBackward<T>(handles, stream, d, dqkv_in.get(), gkp, p, probs.get(),
                                   ddout.get(), gdqkv.get(), scratch.get()));
    run = DownloadRaw(gdqkv);
    EXPECT_LT(RelErr(Decode<T>(run), want_dqkv), Tol<T>());
  }
  EXPECT_EQ(dqkv_runs[0], dqkv_runs[1]) << "attention backward not reproducible";
}

TYPED_TEST(CudaTypedTest, AttentionMatchesCpuForEveryMaskAndDropout) {
  // S = 37 > one warp's width; head_dim 8; a padded and a fully padded row;
  // packed documents (doc_attention: within) under both masks.
  for (AttnMask mask : {AttnMask::kPaddingOnly, AttnMask::kCausal}) {
    for (bool dropout : {false, true}) {
      for (bool docs : {false, true}) {
        ExpectAttentionMatchesCpu<TypeParam>(this->handles(), this->stream_,
                                             AttentionDims{3, 37, 3, 8, mask}, dropout, docs);
      }
    }
  }
}

// Grouped-query attention: 4 query heads on 2 key/value heads (pairs) and on
// 1 (multi-query); qkv rows are [q: 4 heads | k: kv heads | v: kv heads].
TYPED_TEST(CudaTypedTest, GroupedQueryAttentionMatchesCpu) {
  for (int kv_heads : {2, 1}) {
    for (AttnMask mask : {AttnMask::kPaddingOnly, AttnMask::kCausal}) {
      for (bool dropout : {false, true}) {
        ExpectAttentionMatchesCpu<TypeParam>(this->handles(), this->stream_,
                                             AttentionDims{3, 37, 4, 8, mask, kv_heads}, dropout);
      }
    }
  }
}

// kv_heads == heads is plain multi-head attention, the same bits as kv_heads = 0.
TYPED_TEST(CudaTypedTest, AttentionWithAsManyKvHeadsAsHeadsIsMultiHead) {
  using T = TypeParam;
  const AttentionDims mha{3, 37, 4, 8, AttnMask::kCausal, 0};
  AttentionDims explicit_kv = mha;
  explicit_kv.kv_heads = 4;
  ASSERT_EQ(explicit_kv.qkv_width(), 3 * mha.hidden());
  const int64_t S = mha.seq_len;
  const auto qkv = RandomT<T>(int64_t{mha.rows} * S * mha.qkv_width(), 1);
  const auto dout = RandomT<T>(int64_t{mha.rows} * S * mha.hidden(), 2);
  auto dqkv_in = UploadAs<T>(qkv), ddout = UploadAs<T>(dout);
  std::vector<HostT<T>> outs[2], grads[2];
  int i = 0;
  for (const AttentionDims& d : {mha, explicit_kv}) {
    DeviceBuffer<T> probs(int64_t{d.rows} * d.heads * S * S), out(dout.size()), gdqkv(qkv.size()),
        scratch(AttentionScratchElems(d));
    ASSERT_OK(AttentionForward<T>(this->handles(), this->stream_, d, dqkv_in.get(), nullptr,
                                  nullptr, 0.0f, probs.get(), out.get(), scratch.get()));
    ASSERT_OK(AttentionBackward<T>(this->handles(), this->stream_, d, dqkv_in.get(), nullptr, 0.0f,
                                   probs.get(), ddout.get(), gdqkv.get(), scratch.get()));
    outs[i] = DownloadRaw(out);
    grads[i] = DownloadRaw(gdqkv);
    ++i;
  }
  EXPECT_EQ(outs[0], outs[1]);
  EXPECT_EQ(grads[0], grads[1]);
}

// ---- Rotary embeddings ---------------------------------------------------------------

// transformers' llama3 rope_scaling with a short original context, so that
// head_dim 16 has frequencies in all three bands (kept, divided, blended).
RopeParams Llama3Rope() {
  RopeParams p;
  p.theta = 500000.0;
  p.scaling = RopeScaling::kLlama3;
  p.factor = 8.0;
  p.low_freq_factor = 1.0;
  p.high_freq_factor = 4.0;
  p.original_max_positions = 64;
  return p;
}

TYPED_TEST(CudaTypedTest, RopeForwardAndBackwardMatchCpu) {
  using T = TypeParam;
  // 4 query heads on 2 key/value heads: 6 rotated heads, 2 untouched v heads per token.
  const AttentionDims d{3, 37, 4, 16, AttnMask::kCausal, 2};
  const int64_t tokens = int64_t{d.rows} * d.seq_len, W = d.qkv_width();
  // Explicit positions: packed sequences restarting at 0, and large ones (the
  // slow range reduction of sincosf for angles in the thousands of radians).
  std::vector<int32_t> positions(tokens);
  for (int64_t t = 0; t < tokens; ++t) {
    positions[t] = static_cast<int32_t>(t < tokens / 2 ? t % 11 : 7 * t + 3000);
  }
  auto dpositions = Upload(positions);
  const auto qkv = RandomT<T>(tokens * W, 1, -2, 2);
  RopeParams plain;
  plain.theta = 10000.0;
  for (const RopeParams& p : {plain, Llama3Rope()}) {
    for (bool with_positions : {false, true}) {
      SCOPED_TRACE(::testing::Message() << (p.scaling == RopeScaling::kLlama3 ? "llama3" : "plain")
                                        << (with_positions ? ", positions" : ", t % S"));
      const int32_t* cpu_pos = with_positions ? positions.data() : nullptr;
      const int32_t* gpu_pos = with_positions ? dpositions.get() : nullptr;
      std::vector<float> want = qkv, want_back = qkv;
      ref::RopeForward<float>(d, p, cpu_pos, want.data());
      ref::RopeBackward<float>(d, p, cpu_pos, want_back.data());
      auto x = UploadAs<T>(qkv), g = UploadAs<T>(qkv);
      ASSERT_OK(RopeForward<T>(this->stream_, d, p, gpu_pos, x.get()));
      ASSERT_OK(RopeBackward<T>(this->stream_, d, p, gpu_pos, g.get()));
      const auto got = DownloadAsFloat(x), got_back = DownloadAsFloat(g);
      EXPECT_LT(RelErr(got, want), Tol<T>());
      EXPECT_LT(RelErr(got_back, want_back), Tol<T>());
      // v is untouched, bit for bit.
      for (int64_t t = 0; t < tokens; ++t) {
        for (int64_t j = d.hidden() + d.kv_hidden(); j < W; ++j) {
          ASSERT_EQ(got[t * W + j], qkv[t * W + j]) << "token " << t << " column " << j;
          ASSERT_EQ(got_back[t * W + j], qkv[t * W + j]) << "token " << t << " column " << j;
        }
      }
      // The backward undoes the forward (a rotation's transpose is its inverse).
      ASSERT_OK(RopeBackward<T>(this->stream_, d, p, gpu_pos, x.get()));
      EXPECT_LT(RelErr(DownloadAsFloat(x), qkv), 2 * Tol<T>());
    }
  }
}

// ---- Pointwise ---------------------------------------------------------------------------

const char* GeluName(Gelu kind) { return kind == Gelu::kTanh ? "gelu tanh" : "gelu erf"; }

TYPED_TEST(CudaTypedTest, GeluForwardAndBackwardMatchCpuForBothForms) {
  using T = TypeParam;
  const int64_t n = 5000;
  const auto x = RandomT<T>(n, 1, -5, 5), dy = RandomT<T>(n, 2);
  for (Gelu kind : {Gelu::kTanh, Gelu::kErf}) {
    SCOPED_TRACE(GeluName(kind));
    std::vector<float> want_y(n), want_dx(n);
    ref::GeluForward<float>(x.data(), n, want_y.data(), kind);
    ref::GeluBackward<float>(x.data(), dy.data(), n, want_dx.data(), kind);
    auto dx = UploadAs<T>(x), ddy = UploadAs<T>(dy);
    DeviceBuffer<T> y(n), gdx(n);
    ASSERT_OK(GeluForward<T>(this->stream_, dx.get(), n, y.get(), kind));
    ASSERT_OK(GeluBackward<T>(this->stream_, dx.get(), ddy.get(), n, gdx.get(), kind));
    EXPECT_LT(RelErr(DownloadAsFloat(y), want_y), Tol<T>());
    EXPECT_LT(RelErr(DownloadAsFloat(gdx), want_dx), Tol<T>());
  }
  // The two forms differ by up to 4.7e-4 (~1e-4 of max|y| on [-5, 5]): a
  // mix-up fails the fp32 tolerance above; this keeps the inputs able to tell.
  std::vector<float> tanh_y(n), erf_y(n);
  ref::GeluForward<float>(x.data(), n, tanh_y.data(), Gelu::kTanh);
  ref::GeluForward<float>(x.data(), n, erf_y.data(), Gelu::kErf);
  EXPECT_GT(RelErr(tanh_y, erf_y), 5 * kF32Tol);
}

TYPED_TEST(CudaTypedTest, BiasGeluForwardAndBackwardMatchCpuForBothForms) {
  using T = TypeParam;
  const int64_t rows = 130, cols = 77;
  const auto x = RandomT<T>(rows * cols, 1, -3, 3), bias = RandomT<T>(cols, 2),
             dy = RandomT<T>(rows * cols, 3);
  const auto dbias0 = Random(cols, 4);
  std::vector<float> h(rows * cols);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < cols; ++j) h[r * cols + j] = x[r * cols + j] + bias[j];
  for (Gelu kind : {Gelu::kTanh, Gelu::kErf}) {
    SCOPED_TRACE(GeluName(kind));
    std::vector<float> want_y(rows * cols);
    ref::GeluForward<float>(h.data(), rows * cols, want_y.data(), kind);
    auto dx = UploadAs<T>(x), dbias = UploadAs<T>(bias);
    DeviceBuffer<T> pre(rows * cols), y(rows * cols);
    ASSERT_OK(BiasGeluForward<T>(this->stream_, dx.get(), dbias.get(), rows, cols, pre.get(),
                                 y.get(), kind));
    EXPECT_EQ(DownloadRaw(pre), Encode<T>(h));  // one fp32 add, rounded once
    EXPECT_LT(RelErr(DownloadAsFloat(y), want_y), Tol<T>());

    // Backward from the stored pre-activation.
    const auto pre_t = AsT<T>(h);
    std::vector<float> want_dx(rows * cols), want_db = dbias0;
    ref::GeluBackward<float>(pre_t.data(), dy.data(), rows * cols, want_dx.data(), kind);
    ref::ColumnSumAccumulate<float>(want_dx.data(), rows, cols, want_db.data());
    auto ddy = UploadAs<T>(dy);
    DeviceBuffer<T> gdx(rows * cols);
    auto gdb = Upload(dbias0);
    DeviceBuffer<float> scratch(ColumnSumScratchElems(rows, cols));
    ASSERT_OK(BiasGeluBackward<T>(this->stream_, pre.get(), ddy.get(), rows, cols, gdx.get(),
                                  gdb.get(), scratch.get(), kind));
    EXPECT_LT(RelErr(DownloadAsFloat(gdx), want_dx), Tol<T>());
    EXPECT_LT(RelErr(Download(gdb), want_db), Tol<T>());  // sums the stored (T) dx
  }
}

TYPED_TEST(CudaTypedTest, SwigluForwardAndBackwardMatchCpu) {
  using T = TypeParam;
  const int64_t n = 67, f = 301;  // rows of [gate (f) | up (f)]
  const auto gu = RandomT<T>(n * 2 * f, 1, -6, 6), dy = RandomT<T>(n * f, 2);
  std::vector<float> want_y(n * f), want_dgu(n * 2 * f);
  ref::SwigluForward<float>(gu.data(), n, f, want_y.data());
  ref::SwigluBackward<float>(gu.data(), dy.data(), n, f, want_dgu.data());
  EXPECT_GT(MaxAbs(want_dgu), 0.5);
  auto dgu_in = UploadAs<T>(gu), ddy = UploadAs<T>(dy);
  DeviceBuffer<T> y(n * f);
  ASSERT_OK(SwigluForward<T>(this->stream_, dgu_in.get(), n, f, y.get()));
  EXPECT_LT(RelErr(DownloadAsFloat(y), want_y), Tol<T>());
  // dgu is written, whatever it held.
  auto gdgu = UploadAs<T>(std::vector<float>(n * 2 * f, std::numeric_limits<float>::quiet_NaN()));
  ASSERT_OK(SwigluBackward<T>(this->stream_, dgu_in.get(), ddy.get(), n, f, gdgu.get()));
  const auto got = DownloadAsFloat(gdgu);
  EXPECT_LT(RelErr(got, want_dgu), Tol<T>());  // a NaN left behind is an infinite error
  // Separately per half, so that an error in the smaller one is not hidden.
  std::vector<float> got_gate, want_gate, got_up, want_up;
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t j = 0; j < f; ++j) {
      got_gate.push_back(got[r * 2 * f + j]);
      want_gate.push_back(want_dgu[r * 2 * f + j]);
      got_up.push_back(got[r * 2 * f + f + j]);
      want_up.push_back(want_dgu[r * 2 * f + f + j]);
    }
  }
  EXPECT_LT(RelErr(got_gate, want_gate), Tol<T>()) << "d gate";
  EXPECT_LT(RelErr(got_up, want_up), Tol<T>()) << "d up";
  // In place (dgu == gu), as the llama block calls it: the same values.
  auto inplace = UploadAs<T>(gu);
  ASSERT_OK(SwigluBackward<T>(this->stream_, inplace.get(), ddy.get(), n, f, inplace.get()));
  EXPECT_EQ(DownloadAsFloat(inplace), got) << "in place differs from out of place";
}

TEST_F(CudaTest, DropoutMaskIsBitIdenticalToCpu) {
  const int64_t rows = 3, elems = 5003;
  const auto keys = SampleKeys(rows);
  auto dkeys = Upload(keys);
  for (float p : {0.25f, 0.1f, 0.0f, 0.9f}) {
    for (int site : {1, 2}) {
      std::vector<uint8_t> want(rows * elems);
      ref::DropoutMask({p, 42, 7, 3, site, keys.data()}, rows, elems, want.data());
      DeviceBuffer<uint8_t> keep(rows * elems);
      ASSERT_OK(DropoutMask(stream_, {p, 42, 7, 3, site, dkeys.get()}, rows, elems, keep.get()));
      ASSERT_EQ(Download(keep), want) << "p=" << p << " site=" << site;
    }
  }
}

TYPED_TEST(CudaTypedTest, DropoutForwardAndBackwardAreBitwiseCpu) {
  using T = TypeParam;
  const int64_t n = 3001;
  const float p = 0.3f;
  const auto keys = SampleKeys(1);
  std::vector<uint8_t> keep(n);
  ref::DropoutMask({p, 1, 0, 0, 0, keys.data()}, 1, n, keep.data());
  const auto x = RandomT<T>(n, 1);
  std::vector<float> want(n);
  ref::DropoutForward<float>(x.data(), keep.data(), n, p, want.data());
  auto dx = UploadAs<T>(x);
  auto dkeep = Upload(keep);
  DeviceBuffer<T> y(n);
  ASSERT_OK(DropoutForward<T>(this->stream_, dx.get(), dkeep.get(), n, p, y.get()));
  EXPECT_EQ(DownloadRaw(y), Encode<T>(want));
  ASSERT_OK(DropoutBackward<T>(this->stream_, dx.get(), dkeep.get(), n, p, dx.get()));  // in place
  EXPECT_EQ(DownloadRaw(dx), Encode<T>(want));
}

TYPED_TEST(CudaTypedTest, AddIsBitwiseCpu) {
  using T = TypeParam;
  const int64_t n = 1001;
  const auto a = RandomT<T>(n, 1), b = RandomT<T>(n, 2);
  std::vector<float> want(n);
  ref::Add<float>(a.data(), b.data(), n, want.data());
  auto da = UploadAs<T>(a), db = UploadAs<T>(b);
  ASSERT_OK(Add<T>(this->stream_, da.get(), db.get(), n, da.get()));
  EXPECT_EQ(DownloadRaw(da), Encode<T>(want));
}

// ---- Embeddings and row movement -------------------------------------------------------

TYPED_TEST(CudaTypedTest, EmbeddingForwardIsBitwiseCpu) {
  using T = TypeParam;
  const int64_t vocab = 50, dim = 300, n = 999;
  const auto table = RandomT<T>(vocab * dim, 1), out0 = RandomT<T>(n * dim, 2);
  std::vector<int32_t> ids(n);
  for (int64_t i = 0; i < n; ++i) ids[i] = static_cast<int32_t>((i * 37 + i / 5) % vocab);
  auto dtable = UploadAs<T>(table);
  auto dids = Upload(ids);
  for (Accum accum : {Accum::kOverwrite, Accum::kAdd}) {
    auto want = out0;
    ref::EmbeddingForward<float>(table.data(), vocab, dim, ids.data(), n, want.data(), accum);
    auto out = UploadAs<T>(out0);
    ASSERT_OK(EmbeddingForward<T>(this->stream_, dtable.get(), vocab, dim, dids.get(), n, out.get(),
                                  accum));
    EXPECT_EQ(DownloadRaw(out), Encode<T>(want)) << "accum " << int(accum);
  }
}

TYPED_TEST(CudaTypedTest, EmbeddingBackwardIsBitwiseCpuAndReproducible) {
  using T = TypeParam;
  // vocab above the bucket count (rows share buckets and interleave), a tiny
  // vocab (type embeddings), and runs of repeated ids.
  for (int64_t vocab : {int64_t{3000}, int64_t{2}}) {
    const int64_t dim = 300, n = 2500;
    SCOPED_TRACE(::testing::Message() << "vocab " << vocab);
    std::mt19937_64 gen(9);
    std::vector<int32_t> ids(n);
    for (int64_t i = 0; i < n; ++i) {
      ids[i] = (i % 7 == 3) ? ids[i - 1] : static_cast<int32_t>(gen() % vocab);
    }
    const auto dout = RandomT<T>(n * dim, 1);
    const auto dtable0 = Random(vocab * dim, 2);
    auto want = dtable0;
    ref::EmbeddingBackward<float>(ids.data(), n, dout.data(), vocab, dim, want.data());
    auto dids = Upload(ids);
    auto ddout = UploadAs<T>(dout);
    std::vector<float> runs[2];
    for (auto& got : runs) {
      auto dtable = Upload(dtable0);
      ASSERT_OK(EmbeddingBackward<T>(this->stream_, dids.get(), n, ddout.get(), vocab, dim,
                                     dtable.get()));
      got = Download(dtable);
      EXPECT_EQ(Bits(got), Bits(want)) << "not the CPU's order of additions";
    }
    EXPECT_EQ(Bits(runs[0]), Bits(runs[1]));
  }
}

TYPED_TEST(CudaTypedTest, PositionEmbeddingIsBitwiseCpu) {
  using T = TypeParam;
  const int64_t rows = 5, seq = 37, dim = 70;
  const auto pos = RandomT<T>(seq * dim, 1), out0 = RandomT<T>(rows * seq * dim, 2);
  const auto dout = RandomT<T>(rows * seq * dim, 3);
  const auto dpos0 = Random(seq * dim, 4);
  auto dpos_in = UploadAs<T>(pos);
  for (Accum accum : {Accum::kOverwrite, Accum::kAdd}) {
    auto want = out0;
    ref::PositionEmbeddingForward<float>(pos.data(), rows, seq, dim, want.data(), accum);
    auto out = UploadAs<T>(out0);
    ASSERT_OK(PositionEmbeddingForward<T>(this->stream_, dpos_in.get(), rows, seq, dim, out.get(),
                                          accum));
    EXPECT_EQ(DownloadRaw(out), Encode<T>(want)) << "accum " << int(accum);
  }
  auto want_dpos = dpos0;
  ref::PositionEmbeddingBackward<float>(dout.data(), rows, seq, dim, want_dpos.data());
  auto ddout = UploadAs<T>(dout);
  auto gdpos = Upload(dpos0);
  ASSERT_OK(PositionEmbeddingBackward<T>(this->stream_, ddout.get(), rows, seq, dim, gdpos.get()));
  EXPECT_EQ(Bits(Download(gdpos)), Bits(want_dpos));
}

TYPED_TEST(CudaTypedTest, GatherThenScatterRowsIsBitwiseCpu) {
  using T = TypeParam;
  const int64_t n = 40, c = 33;
  const auto x = RandomT<T>(n * c, 1), base = RandomT<T>(n * c, 2);
  const std::vector<int32_t> idx = {4, 1, 39, 17, 0, 22};
  const int64_t m = static_cast<int64_t>(idx.size());
  std::vector<float> want_g(m * c), want_s = base;
  ref::GatherRows<float>(x.data(), idx.data(), m, c, want_g.data());
  ref::ScatterRows<float>(want_g.data(), idx.data(), m, c, want_s.data());
  auto dx = UploadAs<T>(x), dbase = UploadAs<T>(base);
  auto didx = Upload(idx);
  DeviceBuffer<T> g(m * c);
  ASSERT_OK(GatherRows<T>(this->stream_, dx.get(), didx.get(), m, c, g.get()));
  ASSERT_OK(ScatterRows<T>(this->stream_, g.get(), didx.get(), m, c, dbase.get()));
  EXPECT_EQ(DownloadRaw(g), Encode<T>(want_g));
  EXPECT_EQ(DownloadRaw(dbase), Encode<T>(want_s));
}

// ---- Loss --------------------------------------------------------------------------------

TYPED_TEST(CudaTypedTest, CrossEntropyMatchesCpuIgnoresAndCountsBadTargets) {
  using T = TypeParam;
  const int64_t n = 37, vocab = 1000;
  const double grad_scale = 0.37;
  const auto logits = RandomT<T>(n * vocab, 1, -4, 4);
  std::vector<int32_t> targets(n), cpu_targets(n);
  for (int64_t r = 0; r < n; ++r) targets[r] = static_cast<int32_t>((r * 131) % vocab);
  targets[3] = kNoTarget;
  targets[10] = kNoTarget;
  targets[11] = static_cast<int32_t>(vocab + 5);  // bad: counted, treated as ignored
  targets[12] = -7;                               // bad
  targets[20] = static_cast<int32_t>(vocab - 1);
  for (int64_t r = 0; r < n; ++r) {
    const bool ok = targets[r] >= 0 && targets[r] < vocab;
    cpu_targets[r] = ok ? targets[r] : kNoTarget;
  }
  std::vector<float> want_dl(n * vocab);
  const auto want = ref::CrossEntropy<float>(logits.data(), cpu_targets.data(), n, vocab,
                                             grad_scale, want_dl.data());
  ASSERT_EQ(want.count, n - 4);

  auto dlogits_in = UploadAs<T>(logits);
  auto dtargets = Upload(targets);
  DeviceBuffer<double> row_loss(n);
  std::vector<HostT<T>> dl_runs[2];
  std::vector<CrossEntropyStats> stat_runs[2];
  for (int run = 0; run < 2; ++run) {
    DeviceBuffer<T> dl(n * vocab);
    DeviceBuffer<CrossEntropyStats> stats(1);
    ASSERT_OK(CrossEntropy<T>(this->stream_, dlogits_in.get(), dtargets.get(), n, vocab, grad_scale,
                              dl.get(), row_loss.get(), stats.get()));
    stat_runs[run] = Download(stats);
    dl_runs[run] = DownloadRaw(dl);
    const CrossEntropyStats s = stat_runs[run][0];
    EXPECT_EQ(s.count, want.count);
    EXPECT_EQ(s.bad_targets, 2);
    EXPECT_NEAR(s.loss_sum, want.loss_sum, kF32Tol * want.loss_sum);
    const auto got_dl = Decode<T>(dl_runs[run]);
    EXPECT_LT(RelErr(got_dl, want_dl), Tol<T>());
    for (int64_t r : {3, 10, 11, 12}) {
      for (int64_t j = 0; j < vocab; ++j) ASSERT_EQ(got_dl[r * vocab + j], 0.0f) << r;
    }
    const auto rl = Download(row_loss);
    double sum = 0;
    for (double v : rl) sum += v;
    EXPECT_NEAR(sum, s.loss_sum, 1e-9 * s.loss_sum);
  }
  EXPECT_EQ(stat_runs[0][0].loss_sum, stat_runs[1][0].loss_sum) << "loss not reproducible";
  EXPECT_EQ(dl_runs[0], dl_runs[1]);

  // In place (dlogits aliases logits): the same bits.
  DeviceBuffer<CrossEntropyStats> stats(1);
  ASSERT_OK(CrossEntropy<T>(this->stream_, dlogits_in.get(), dtargets.get(), n, vocab, grad_scale,
                            dlogits_in.get(), row_loss.get(), stats.get()));
  EXPECT_EQ(DownloadRaw(dlogits_in), dl_runs[0]);
  EXPECT_EQ(Download(stats)[0].loss_sum, stat_runs[0][0].loss_sum);

  // Loss only; and no rows at all (stats still written).
  DeviceBuffer<CrossEntropyStats> stats2(1);
  auto logits2 = UploadAs<T>(logits);
  ASSERT_OK(CrossEntropy<T>(this->stream_, logits2.get(), dtargets.get(), n, vocab, grad_scale,
                            nullptr, row_loss.get(), stats2.get()));
  EXPECT_EQ(Download(stats2)[0].loss_sum, stat_runs[0][0].loss_sum);
  const std::vector<CrossEntropyStats> garbage = {{99.0, 99, 99}};
  auto stats3 = Upload(garbage);
  ASSERT_OK(CrossEntropy<T>(this->stream_, logits2.get(), dtargets.get(), 0, vocab, grad_scale,
                            nullptr, row_loss.get(), stats3.get()));
  const auto empty = Download(stats3)[0];
  EXPECT_EQ(empty.loss_sum, 0.0);
  EXPECT_EQ(empty.count, 0);
  EXPECT_EQ(empty.bad_targets, 0);
}

// ---- AdamW and conversions ------------------------------------------------------------

TEST_F(CudaTest, AdamWIsBitwiseTheCpuUpdate) {
  const int64_t n = 10007;
  const auto p = Random(n, 1), g = Random(n, 2, -3, 3), m = Random(n, 3, -0.1, 0.1),
             v = Random(n, 4, 0, 0.01);
  const AdamWParams hp{1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, 3, 0.7f};
  // The reference: the CPU optimizer itself, on the same AdamWParams.
  auto pw = p, mw = m, vw = v;
  std::vector<uint16_t> copy_want(n);
  kernels::AdamWUpdate(hp, n, pw.data(), g.data(), mw.data(), vw.data(), copy_want.data());
  auto dp = Upload(p), dg = Upload(g), dm = Upload(m), dv = Upload(v);
  DeviceBuffer<bf16> copy(n);
  ASSERT_OK(AdamWUpdate(stream_, hp, n, dp.get(), dg.get(), dm.get(), dv.get(), copy.get()));
  EXPECT_EQ(Bits(Download(dp)), Bits(pw));
  EXPECT_EQ(Bits(Download(dm)), Bits(mw));
  EXPECT_EQ(Bits(Download(dv)), Bits(vw));
  EXPECT_EQ(DownloadRaw(copy), copy_want);

  auto dp2 = Upload(p), dm2 = Upload(m), dv2 = Upload(v);
  DeviceBuffer<float> copy32(n);
  ASSERT_OK(
      AdamWUpdateF32Copy(stream_, hp, n, dp2.get(), dg.get(), dm2.get(), dv2.get(), copy32.get()));
  EXPECT_EQ(Bits(Download(dp2)), Bits(pw));
  EXPECT_EQ(Bits(Download(copy32)), Bits(pw));
}

TEST_F(CudaTest, ConversionsAreBitwiseCore) {
  std::vector<uint32_t> patterns = {0x00000000u, 0x80000000u, 0x3f800000u, 0x3f808000u,
                                    0x3f818000u, 0x7f7fffffu, 0x7f800000u, 0xff800000u,
                                    0x7f800001u, 0xffc00001u, 0x00000001u, 0x007fffffu};
  std::mt19937_64 gen(3);
  for (int i = 0; i < 100000; ++i) patterns.push_back(static_cast<uint32_t>(gen()));
  std::vector<float> x(patterns.size());
  std::memcpy(x.data(), patterns.data(), x.size() * sizeof(float));
  std::vector<uint16_t> want(x.size());
  for (size_t i = 0; i < x.size(); ++i) want[i] = F32ToBF16(x[i]);
  auto dx = Upload(x);
  DeviceBuffer<bf16> y(static_cast<int64_t>(x.size()));
  ASSERT_OK(ConvertF32ToBF16(stream_, dx.get(), static_cast<int64_t>(x.size()), y.get()));
  EXPECT_EQ(DownloadRaw(y), want);

  std::vector<uint16_t> all(65536);
  for (uint32_t h = 0; h < 65536; ++h) all[h] = static_cast<uint16_t>(h);
  auto dall = UploadRaw<bf16>(all.data(), 65536);
  DeviceBuffer<float> back(65536);
  ASSERT_OK(ConvertBF16ToF32(stream_, dall.get(), 65536, back.get()));
  const auto got = Download(back);
  for (uint32_t h = 0; h < 65536; ++h) {
    const float w = BF16ToF32(static_cast<uint16_t>(h));
    ASSERT_EQ(std::memcmp(&got[h], &w, sizeof w), 0) << h;
  }
}

}  // namespace
}  // namespace l2l::kernels::cuda
