// MpiComm under 1, 2 and 4 ranks: every collective's result equals the same
// computation done in one process (each rank can compute every rank's input,
// since inputs are a pure function of (rank, index)).
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iterator>
#include <string>
#include <vector>

#include "l2l/comm/mpi_comm.h"
#include "l2l/core/dtype.h"

namespace l2l {
namespace {

MpiComm* g_comm = nullptr;

// One communicator for all tests, created once MPI is up.
class CommEnvironment : public ::testing::Environment {
 public:
  void SetUp() override { g_comm = new MpiComm(); }
  void TearDown() override {
    delete g_comm;
    g_comm = nullptr;
  }
};
const auto* const kEnv = ::testing::AddGlobalTestEnvironment(new CommEnvironment);

float Input(int rank, size_t i) { return std::sin(0.37f * rank + 0.011f * i) * (rank + 1); }

TEST(MpiComm, AllGatherEqualsConcatenation) {
  const int n = g_comm->size(), r = g_comm->rank();
  const size_t count = 1001;
  std::vector<float> send(count), recv(count * n, -1);
  for (size_t i = 0; i < count; ++i) send[i] = Input(r, i);
  ASSERT_TRUE(g_comm->AllGather(send.data(), recv.data(), count, CommDType::kF32).ok());
  for (int q = 0; q < n; ++q)
    for (size_t i = 0; i < count; ++i) ASSERT_EQ(recv[q * count + i], Input(q, i));
}

TEST(MpiComm, AllGatherInPlace) {
  const int n = g_comm->size(), r = g_comm->rank();
  const size_t count = 77;
  std::vector<float> buf(count * n, -1);
  for (size_t i = 0; i < count; ++i) buf[r * count + i] = Input(r, i);
  ASSERT_TRUE(g_comm->AllGather(buf.data() + r * count, buf.data(), count, CommDType::kF32).ok());
  for (int q = 0; q < n; ++q)
    for (size_t i = 0; i < count; ++i) ASSERT_EQ(buf[q * count + i], Input(q, i));
}

TEST(MpiComm, ReduceScatterEqualsSumOfSlices) {
  const int n = g_comm->size(), r = g_comm->rank();
  const size_t count = 513;
  std::vector<float> send(count * n), recv(count);
  for (size_t i = 0; i < count * n; ++i) send[i] = Input(r, i);
  ASSERT_TRUE(
      g_comm->ReduceScatter(send.data(), recv.data(), count, CommDType::kF32, ReduceOp::kSum).ok());
  for (size_t i = 0; i < count; ++i) {
    double want = 0;
    for (int q = 0; q < n; ++q) want += Input(q, r * count + i);
    ASSERT_NEAR(recv[i], want, 1e-5 * (1 + std::fabs(want))) << i;
  }
  // In place: the result lands at the start of the buffer.
  ASSERT_TRUE(
      g_comm->ReduceScatter(send.data(), send.data(), count, CommDType::kF32, ReduceOp::kSum).ok());
  for (size_t i = 0; i < count; ++i) ASSERT_EQ(send[i], recv[i]);
}

TEST(MpiComm, AllReduceSumAndMax) {
  const int n = g_comm->size(), r = g_comm->rank();
  std::vector<double> v(10);
  for (size_t i = 0; i < v.size(); ++i) v[i] = Input(r, i);
  std::vector<double> sum(v.size()), mx(v.size());
  ASSERT_TRUE(
      g_comm->AllReduce(v.data(), sum.data(), v.size(), CommDType::kF64, ReduceOp::kSum).ok());
  ASSERT_TRUE(
      g_comm->AllReduce(v.data(), mx.data(), v.size(), CommDType::kF64, ReduceOp::kMax).ok());
  for (size_t i = 0; i < v.size(); ++i) {
    double want_sum = 0, want_max = -1e300;
    for (int q = 0; q < n; ++q) {
      want_sum += static_cast<float>(Input(q, i));
      want_max = std::max(want_max, static_cast<double>(Input(q, i)));
    }
    EXPECT_NEAR(sum[i], want_sum, 1e-9);
    EXPECT_EQ(mx[i], want_max);
  }
  int64_t x = r + 1;
  ASSERT_TRUE(g_comm->AllReduce(&x, &x, 1, CommDType::kI64, ReduceOp::kSum).ok());
  EXPECT_EQ(x, int64_t(n) * (n + 1) / 2);
}

TEST(MpiComm, BroadcastFromLastRank) {
  const int n = g_comm->size();
  std::vector<int32_t> v(5, g_comm->rank());
  ASSERT_TRUE(g_comm->Broadcast(v.data(), v.size(), CommDType::kI32, n - 1).ok());
  for (int32_t x : v) EXPECT_EQ(x, n - 1);
  EXPECT_TRUE(g_comm->Barrier().ok());
}

// bf16 words rank r contributes: special patterns (±0, ±inf, quiet and
// signalling NaNs with payloads, the smallest subnormal, the largest finite)
// then ordinary values, all different per rank so a misplaced slice shows.
std::vector<uint16_t> BF16Words(int rank, size_t count) {
  const uint16_t special[] = {0x0000, 0x8000, 0x7f80, 0xff80, 0x7fc0, 0xffc1,
                              0x7f81, 0x0001, 0x7f7f, 0xff7f, 0x3f80, 0xbf80};
  std::vector<uint16_t> w(count);
  for (size_t i = 0; i < count; ++i) {
    w[i] = i < std::size(special) ? special[i] : F32ToBF16(Input(rank, i));
  }
  // The last word names the rank, so slices from different ranks differ even
  // where the patterns above coincide.
  w[count - 1] = static_cast<uint16_t>(0x4000 + rank);
  return w;
}

TEST(MpiComm, AllGatherAndBroadcastOfBF16AreBitExact) {
  const int n = g_comm->size(), r = g_comm->rank();
  const size_t count = 257;
  const std::vector<uint16_t> send = BF16Words(r, count);
  std::vector<uint16_t> recv(count * n, 0x1234);
  ASSERT_TRUE(g_comm->AllGather(send.data(), recv.data(), count, CommDType::kBF16).ok());
  for (int q = 0; q < n; ++q) {
    const std::vector<uint16_t> want = BF16Words(q, count);
    for (size_t i = 0; i < count; ++i) {
      ASSERT_EQ(recv[q * count + i], want[i]) << "rank " << q << " word " << i;
    }
  }
  // In place, and a broadcast of the same words from the last rank.
  std::vector<uint16_t> buf(count * n, 0x1234);
  std::copy(send.begin(), send.end(), buf.begin() + r * count);
  ASSERT_TRUE(g_comm->AllGather(buf.data() + r * count, buf.data(), count, CommDType::kBF16).ok());
  EXPECT_EQ(buf, recv);
  std::vector<uint16_t> b = BF16Words(r, count);
  ASSERT_TRUE(g_comm->Broadcast(b.data(), count, CommDType::kBF16, n - 1).ok());
  EXPECT_EQ(b, BF16Words(n - 1, count));
}

// Unsigned 64-bit words (checkpoint checksums): min and max order them as
// unsigned (a signed reduction would put 2^63 + r below 1), and sums wrap
// modulo 2^64.
TEST(MpiComm, U64ReducesAsUnsigned) {
  EXPECT_EQ(CommDTypeSizeBytes(CommDType::kU64), 8u);
  const int n = g_comm->size(), r = g_comm->rank();
  const uint64_t big = (uint64_t{1} << 63) + static_cast<uint64_t>(r);
  uint64_t v[2] = {r == 0 ? uint64_t{1} : big, big};
  uint64_t lo[2] = {}, hi[2] = {};
  ASSERT_TRUE(g_comm->AllReduce(v, lo, 2, CommDType::kU64, ReduceOp::kMin).ok());
  ASSERT_TRUE(g_comm->AllReduce(v, hi, 2, CommDType::kU64, ReduceOp::kMax).ok());
  EXPECT_EQ(lo[0], uint64_t{1});  // rank 0 passes 1, the others 2^63 + r
  EXPECT_EQ(hi[0], n > 1 ? (uint64_t{1} << 63) + static_cast<uint64_t>(n - 1) : uint64_t{1});
  EXPECT_EQ(lo[1], uint64_t{1} << 63);
  EXPECT_EQ(hi[1], (uint64_t{1} << 63) + static_cast<uint64_t>(n - 1));
  uint64_t sum = ~uint64_t{0};  // every rank adds 2^64 - 1: the sum is 2^64 - n mod 2^64
  ASSERT_TRUE(g_comm->AllReduce(&sum, &sum, 1, CommDType::kU64, ReduceOp::kSum).ok());
  EXPECT_EQ(sum, uint64_t{0} - static_cast<uint64_t>(n));
}

TEST(MpiComm, BF16ReductionsAreInvalidArgumentOnEveryRank) {
  EXPECT_EQ(CommDTypeSizeBytes(CommDType::kBF16), 2u);
  const int n = g_comm->size();
  std::vector<uint16_t> send(4 * n, F32ToBF16(1.0f)), recv(4 * n, 0);
  const Status all =
      g_comm->AllReduce(send.data(), recv.data(), 4, CommDType::kBF16, ReduceOp::kSum);
  EXPECT_EQ(all.code(), StatusCode::kInvalidArgument) << all.ToString();
  EXPECT_NE(all.message().find("bf16 reductions are not supported by MpiComm; reduce in fp32"),
            std::string::npos)
      << all.message();
  const Status rs =
      g_comm->ReduceScatter(send.data(), recv.data(), 4, CommDType::kBF16, ReduceOp::kMax);
  EXPECT_EQ(rs.code(), StatusCode::kInvalidArgument) << rs.ToString();
  EXPECT_EQ(recv, std::vector<uint16_t>(4 * n, 0)) << "nothing may be written";
  // The ranks are still in step: a collective after the refusals completes.
  int64_t x = 1;
  ASSERT_TRUE(g_comm->AllReduce(&x, &x, 1, CommDType::kI64, ReduceOp::kSum).ok());
  EXPECT_EQ(x, n);
}

TEST(MpiComm, AgreeReportsLowestFailingRankEverywhere) {
  const int n = g_comm->size(), r = g_comm->rank();
  EXPECT_TRUE(g_comm->Agree(OkStatus()).ok());
  // The last rank fails alone; every rank must return its message.
  Status local =
      (r == n - 1) ? NotFound("rank " + std::to_string(r) + ": no such file") : OkStatus();
  Status agreed = g_comm->Agree(local);
  EXPECT_EQ(agreed.code(), StatusCode::kNotFound);
  EXPECT_EQ(agreed.message(), "rank " + std::to_string(n - 1) + ": no such file");
}

}  // namespace
}  // namespace l2l
