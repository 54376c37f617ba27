// cuda::SumSquares against a plain host sum (long double, the reference: the
// GPU's double sum must be within 1e-12 relative of it), run twice and compared
// bitwise, over sizes around the chunk boundaries, an empty array and values
// whose squares overflow fp32. The scratch sizing and argument validation need
// no GPU and always run; the rest skips (GTEST_SKIP, with the reason) when no
// GPU is visible, and the binary then prints the marker that makes ctest report
// "Skipped".
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "l2l/device/cuda_device.h"
#include "l2l/device/gpu_test_env.h"
#include "l2l/kernels/cuda.h"

namespace l2l::kernels::cuda {
namespace {

constexpr double kRelTol = 1e-12;

// GPU visibility and the ctest "Skipped" marker (SKIP_REGULAR_EXPRESSION).
using ::l2l::testing::NoGpuReason;

// ---- Host-side: no GPU needed ------------------------------------------------------

TEST(SumSquaresScratch, ZeroForEmptyAndBoundedOtherwise) {
  EXPECT_EQ(SumSquaresScratchElems(0), 0);
  EXPECT_EQ(SumSquaresScratchElems(1), 1);
  for (int64_t n : {int64_t{2}, int64_t{8191}, int64_t{8192}, int64_t{8193}, int64_t{1} << 20,
                    int64_t{1} << 23, (int64_t{1} << 23) + 1, int64_t{1} << 40}) {
    const int64_t elems = SumSquaresScratchElems(n);
    EXPECT_GE(elems, 1) << n;
    EXPECT_LE(elems, kSumSquaresMaxPartials) << n;
    EXPECT_LE(elems, n) << n;
  }
}

TEST(SumSquaresValidation, BadArgumentsAreInvalidArgumentAndNameTheOp) {
  double d = 0;
  const float f = 0;
  const auto expect_invalid = [](const Status& st, const char* arg) {
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.ToString();
    EXPECT_NE(st.message().find("SumSquares"), std::string::npos) << st.message();
    EXPECT_NE(st.message().find(arg), std::string::npos) << st.message();
  };
  expect_invalid(SumSquares(nullptr, &f, -1, &d, &d), "n = -1");
  expect_invalid(SumSquares(nullptr, nullptr, 5, &d, &d), "x is null");
  expect_invalid(SumSquares(nullptr, &f, 5, nullptr, &d), "scratch is null");
  expect_invalid(SumSquares(nullptr, &f, 5, &d, nullptr), "out is null");
  // out is always written, so it is needed even for an empty array.
  expect_invalid(SumSquares(nullptr, nullptr, 0, nullptr, nullptr), "out is null");
}

// ---- GPU ---------------------------------------------------------------------------

// A device array of n elements of T (RAII).
template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(int64_t n) {
    if (n > 0) {
      void* p = nullptr;
      const cudaError_t err = cudaMalloc(&p, static_cast<size_t>(n) * sizeof(T));
      EXPECT_EQ(err, cudaSuccess) << cudaGetErrorString(err);
      p_ = err == cudaSuccess ? static_cast<T*>(p) : nullptr;
    }
  }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  ~DeviceArray() {
    if (p_ != nullptr) (void)cudaFree(p_);
  }
  T* get() const { return p_; }

 private:
  T* p_ = nullptr;
};

class SumSquaresTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!NoGpuReason().empty()) GTEST_SKIP() << "needs a GPU: " << NoGpuReason();
    ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
    ASSERT_EQ(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), cudaSuccess);
  }
  void TearDown() override {
    if (stream_ != nullptr) (void)cudaStreamDestroy(stream_);
  }

  // SumSquares of `x` on the device, run twice; fails the test unless both
  // runs succeed and agree bitwise. Returns the first result.
  double RunTwiceBitwise(const std::vector<float>& x) {
    const int64_t n = static_cast<int64_t>(x.size());
    DeviceArray<float> d_x(n);
    DeviceArray<double> scratch(SumSquaresScratchElems(n));
    DeviceArray<double> out(2);
    if (n > 0) {
      EXPECT_EQ(
          cudaMemcpyAsync(d_x.get(), x.data(), n * sizeof(float), cudaMemcpyHostToDevice, stream_),
          cudaSuccess);
    }
    // Poison the outputs so that "n == 0 writes 0" is a real check.
    const double poison[2] = {-1.0, -2.0};
    EXPECT_EQ(cudaMemcpyAsync(out.get(), poison, sizeof poison, cudaMemcpyHostToDevice, stream_),
              cudaSuccess);
    for (int run = 0; run < 2; ++run) {
      const Status st = SumSquares(stream_, d_x.get(), n, scratch.get(), out.get() + run);
      EXPECT_TRUE(st.ok()) << st.ToString();
    }
    double got[2] = {0, 0};
    EXPECT_EQ(cudaMemcpyAsync(got, out.get(), sizeof got, cudaMemcpyDeviceToHost, stream_),
              cudaSuccess);
    EXPECT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
    EXPECT_EQ(std::memcmp(&got[0], &got[1], sizeof(double)), 0)
        << "two runs differ: " << got[0] << " vs " << got[1] << " (n = " << n << ")";
    return got[0];
  }

  cudaStream_t stream_ = nullptr;
};

// The reference: each square exact, summed in long double in index order.
long double HostSumSquares(const std::vector<float>& x) {
  long double s = 0;
  for (float v : x) s += static_cast<long double>(v) * static_cast<long double>(v);
  return s;
}

std::vector<float> Random(int64_t n, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<double> mant(-1.0, 1.0);
  std::uniform_int_distribution<int> exp(-20, 20);  // a spread of magnitudes, as in gradients
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(std::ldexp(mant(gen), exp(gen)));
  return v;
}

TEST_F(SumSquaresTest, MatchesTheHostSumAndIsBitwiseReproducible) {
  // Around one block's minimum chunk (8192), the block count cap (1024 such
  // chunks = 2^23 elements), and odd lengths that leave partial chunks.
  for (int64_t n : {int64_t{1}, int64_t{255}, int64_t{257}, int64_t{8191}, int64_t{8193},
                    int64_t{1000003}, (int64_t{1} << 23) - 1, (int64_t{1} << 23) + 12345}) {
    const std::vector<float> x = Random(n, 1000 + n);
    const long double want = HostSumSquares(x);
    const double got = RunTwiceBitwise(x);
    EXPECT_LE(std::fabs(static_cast<long double>(got) - want), kRelTol * want)
        << "n = " << n << ": got " << got << ", want " << static_cast<double>(want);
  }
}

TEST_F(SumSquaresTest, EmptyArrayWritesZero) {
  const double got = RunTwiceBitwise({});
  EXPECT_EQ(got, 0.0);
  EXPECT_FALSE(std::signbit(got));
}

TEST_F(SumSquaresTest, SquaresThatOverflowFp32StayFiniteAndNaNPropagates) {
  const float big = std::numeric_limits<float>::max();
  std::vector<float> x = {big, -big, 1.0f, 3e20f};
  const long double want = HostSumSquares(x);
  const double got = RunTwiceBitwise(x);
  ASSERT_TRUE(std::isfinite(got)) << got;
  EXPECT_LE(std::fabs(static_cast<long double>(got) - want), kRelTol * want) << got;
  x.push_back(std::numeric_limits<float>::quiet_NaN());
  EXPECT_TRUE(std::isnan(RunTwiceBitwise(x)));
}

}  // namespace
}  // namespace l2l::kernels::cuda
