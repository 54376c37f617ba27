// NcclComm under 1 and 2 ranks: every collective, run by NCCL on device
// buffers, equals the same collective run by MpiComm on host copies of the
// same inputs. Skips on every rank (GTEST_SKIP, with the reason) unless every
// rank has a GPU of its own.
#include "l2l/comm/nccl_comm.h"

#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <iterator>
#include <string>
#include <vector>

#include "l2l/comm/mpi_comm.h"
#include "l2l/core/dtype.h"
#include "l2l/device/cuda_check.h"
#include "l2l/device/cuda_device.h"

namespace l2l {
namespace {

// Set once by the environment; the fixture skips or fails on them.
std::string g_skip_reason;
Status g_setup;
MpiComm* g_mpi = nullptr;
CudaDevice* g_device = nullptr;
NcclComm* g_nccl = nullptr;

class NcclEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    int world_rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    MPI_Comm node;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, world_rank, MPI_INFO_NULL, &node);
    int local_rank = 0, local_size = 1;
    MPI_Comm_rank(node, &local_rank);
    MPI_Comm_size(node, &local_size);
    MPI_Comm_free(&node);

    std::string reason;
    StatusOr<int> gpus = CountCudaDevices();
    if (!gpus.ok()) {
      reason = gpus.status().message();
    } else if (*gpus < local_size) {
      reason = std::to_string(local_size) + " ranks on this node but " + std::to_string(*gpus) +
               " visible GPU(s); NCCL needs one GPU per rank";
    }
    // Skip together or run together: a collective with a missing rank hangs.
    int usable = reason.empty() ? 1 : 0;
    MPI_Allreduce(MPI_IN_PLACE, &usable, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (!usable) {
      g_skip_reason = reason.empty() ? "another rank has no GPU of its own" : reason;
      return;
    }
    g_mpi = new MpiComm();
    auto dev = CudaDevice::Create(DeviceOptions{DeviceType::kCuda, 0, local_rank});
    g_setup = g_mpi->Agree(dev.ok() ? OkStatus() : dev.status());
    if (!g_setup.ok()) return;
    g_device = dev->release();
    auto nccl = NcclComm::Create(*g_mpi, *g_device);
    if (!nccl.ok()) {
      g_setup = nccl.status();
      return;
    }
    g_nccl = nccl->release();
  }

  void TearDown() override {
    delete g_nccl;
    delete g_device;
    delete g_mpi;
    g_nccl = nullptr;
    g_device = nullptr;
    g_mpi = nullptr;
    int world_rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    // Tells ctest (SKIP_REGULAR_EXPRESSION) the run was skipped, not passed.
    if (!g_skip_reason.empty() && world_rank == 0 &&
        ::testing::UnitTest::GetInstance()->failed_test_count() == 0) {
      std::printf("L2L_GPU_TESTS_SKIPPED: %s\n", g_skip_reason.c_str());
    }
  }
};
const auto* const kEnv = ::testing::AddGlobalTestEnvironment(new NcclEnvironment);

class NcclCommTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!g_skip_reason.empty()) GTEST_SKIP() << "needs one GPU per rank: " << g_skip_reason;
    ASSERT_TRUE(g_setup.ok()) << g_setup.message();
    ASSERT_NE(g_nccl, nullptr);
    n_ = g_mpi->size();
    r_ = g_mpi->rank();
  }

  template <typename T>
  DeviceBuffer ToDevice(const std::vector<T>& v) {
    auto b = g_device->Allocate(v.size() * sizeof(T), "test input");
    L2L_CHECK(b.ok()) << b.status().message();
    g_device->CopyH2D(b->data(), v.data(), v.size() * sizeof(T), StreamKind::kH2D);
    g_device->SynchronizeStream(StreamKind::kH2D);
    return std::move(*b);
  }

  template <typename T>
  std::vector<T> ToHost(const DeviceBuffer& b, size_t count) {
    std::vector<T> v(count);
    g_device->CopyD2H(v.data(), b.data(), count * sizeof(T), StreamKind::kComm);
    g_device->SynchronizeStream(StreamKind::kComm);
    return v;
  }

  int n_ = 1, r_ = 0;
};

float Input(int rank, size_t i) { return std::sin(0.37f * rank + 0.011f * i) * (rank + 1); }

// Sums may be reduced in another order by NCCL than by MPI.
void ExpectClose(const std::vector<float>& got, const std::vector<float>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(got[i], want[i], 1e-5 * (1 + std::fabs(want[i]))) << "element " << i;
  }
}

TEST_F(NcclCommTest, AllGatherMatchesMpi) {
  const size_t count = 1001;
  std::vector<float> send(count);
  for (size_t i = 0; i < count; ++i) send[i] = Input(r_, i);
  std::vector<float> want(count * n_);
  ASSERT_TRUE(g_mpi->AllGather(send.data(), want.data(), count, CommDType::kF32).ok());

  DeviceBuffer d_send = ToDevice(send);
  DeviceBuffer d_recv = ToDevice(std::vector<float>(count * n_, -1.f));
  Status st = g_nccl->AllGather(d_send.data(), d_recv.data(), count, CommDType::kF32);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(ToHost<float>(d_recv, count * n_), want);

  // In place: the own slice already sits at rank * count.
  std::vector<float> buf(count * n_, -1.f);
  std::copy(send.begin(), send.end(), buf.begin() + r_ * count);
  DeviceBuffer d_buf = ToDevice(buf);
  st = g_nccl->AllGather(d_buf.as<float>() + r_ * count, d_buf.data(), count, CommDType::kF32);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(ToHost<float>(d_buf, count * n_), want);
}

TEST_F(NcclCommTest, ReduceScatterSumMatchesMpiOutOfPlaceAndInPlace) {
  const size_t count = 513;
  std::vector<float> send(count * n_);
  for (size_t i = 0; i < send.size(); ++i) send[i] = Input(r_, i);
  std::vector<float> want(count);
  ASSERT_TRUE(
      g_mpi->ReduceScatter(send.data(), want.data(), count, CommDType::kF32, ReduceOp::kSum).ok());

  DeviceBuffer d_send = ToDevice(send);
  DeviceBuffer d_recv = ToDevice(std::vector<float>(count, -1.f));
  Status st =
      g_nccl->ReduceScatter(d_send.data(), d_recv.data(), count, CommDType::kF32, ReduceOp::kSum);
  ASSERT_TRUE(st.ok()) << st.message();
  ExpectClose(ToHost<float>(d_recv, count), want);

  // Comm's in-place form: send == recv, the result lands at the start.
  st = g_nccl->ReduceScatter(d_send.data(), d_send.data(), count, CommDType::kF32, ReduceOp::kSum);
  ASSERT_TRUE(st.ok()) << st.message();
  ExpectClose(ToHost<float>(d_send, count), want);

  // Integers are exact.
  std::vector<int64_t> isend(count * n_);
  for (size_t i = 0; i < isend.size(); ++i) isend[i] = (r_ + 1) * 1000003LL + int64_t(i);
  std::vector<int64_t> iwant(count);
  ASSERT_TRUE(
      g_mpi->ReduceScatter(isend.data(), iwant.data(), count, CommDType::kI64, ReduceOp::kSum)
          .ok());
  DeviceBuffer d_isend = ToDevice(isend);
  st =
      g_nccl->ReduceScatter(d_isend.data(), d_isend.data(), count, CommDType::kI64, ReduceOp::kSum);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(ToHost<int64_t>(d_isend, count), iwant);
}

TEST_F(NcclCommTest, AllReduceSumMaxMinMatchesMpi) {
  const size_t count = 10007;
  std::vector<float> send(count);
  for (size_t i = 0; i < count; ++i) send[i] = Input(r_, i);
  DeviceBuffer d_send = ToDevice(send);
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMax, ReduceOp::kMin}) {
    SCOPED_TRACE(static_cast<int>(op));
    std::vector<float> want(count);
    ASSERT_TRUE(g_mpi->AllReduce(send.data(), want.data(), count, CommDType::kF32, op).ok());
    DeviceBuffer d_recv = ToDevice(std::vector<float>(count, -1.f));
    Status st = g_nccl->AllReduce(d_send.data(), d_recv.data(), count, CommDType::kF32, op);
    ASSERT_TRUE(st.ok()) << st.message();
    if (op == ReduceOp::kSum) {
      ExpectClose(ToHost<float>(d_recv, count), want);
    } else {
      EXPECT_EQ(ToHost<float>(d_recv, count), want);  // max and min are exact
    }
  }
  // In place, f64 and i32.
  std::vector<double> dv(257);
  for (size_t i = 0; i < dv.size(); ++i) dv[i] = Input(r_, i);
  std::vector<double> dwant(dv.size());
  ASSERT_TRUE(
      g_mpi->AllReduce(dv.data(), dwant.data(), dv.size(), CommDType::kF64, ReduceOp::kMax).ok());
  DeviceBuffer d_dv = ToDevice(dv);
  ASSERT_TRUE(
      g_nccl->AllReduce(d_dv.data(), d_dv.data(), dv.size(), CommDType::kF64, ReduceOp::kMax).ok());
  EXPECT_EQ(ToHost<double>(d_dv, dv.size()), dwant);
  std::vector<int32_t> iv(33, r_ + 1);
  DeviceBuffer d_iv = ToDevice(iv);
  ASSERT_TRUE(
      g_nccl->AllReduce(d_iv.data(), d_iv.data(), iv.size(), CommDType::kI32, ReduceOp::kSum).ok());
  EXPECT_EQ(ToHost<int32_t>(d_iv, iv.size()), std::vector<int32_t>(33, n_ * (n_ + 1) / 2));
}

TEST_F(NcclCommTest, BroadcastFromLastRankMatchesMpi) {
  std::vector<double> host(999);
  for (size_t i = 0; i < host.size(); ++i) host[i] = Input(r_, i);
  std::vector<double> want = host;
  ASSERT_TRUE(g_mpi->Broadcast(want.data(), want.size(), CommDType::kF64, n_ - 1).ok());
  DeviceBuffer d = ToDevice(host);
  Status st = g_nccl->Broadcast(d.data(), host.size(), CommDType::kF64, n_ - 1);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(ToHost<double>(d, host.size()), want);
}

// kBF16 is ncclBfloat16: words (NaN, inf and -0 patterns included) move bit
// for bit on device buffers and through host staging, and small integers,
// exact in bf16 at every step of any summation order, reduce exactly.
TEST_F(NcclCommTest, BF16GathersBitExactlyAndReducesSmallIntegersExactly) {
  const size_t count = 301;
  const uint16_t special[] = {0x0000, 0x8000, 0x7f80, 0xff80, 0x7fc0, 0xffc1, 0x7f81, 0x0001};
  std::vector<uint16_t> send(count);
  for (size_t i = 0; i < count; ++i) {
    send[i] = i < std::size(special) ? special[i] : F32ToBF16(Input(r_, i));
  }
  std::vector<uint16_t> want(count * n_);
  ASSERT_TRUE(g_mpi->AllGather(send.data(), want.data(), count, CommDType::kBF16).ok());

  DeviceBuffer d_send = ToDevice(send);
  DeviceBuffer d_recv = ToDevice(std::vector<uint16_t>(count * n_, 0x1234));
  Status st = g_nccl->AllGather(d_send.data(), d_recv.data(), count, CommDType::kBF16);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(ToHost<uint16_t>(d_recv, count * n_), want) << "device buffers";
  std::vector<uint16_t> recv(count * n_, 0x1234);
  st = g_nccl->AllGather(send.data(), recv.data(), count, CommDType::kBF16);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(recv, want) << "host staging";
  std::vector<uint16_t> b = send;
  st = g_nccl->Broadcast(b.data(), count, CommDType::kBF16, n_ - 1);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(b, std::vector<uint16_t>(want.begin() + (n_ - 1) * count, want.end()))
      << "broadcast through host staging";

  // Element i of every rank's input is (rank + 1) + i % 8; every partial sum
  // is an integer below 256, so bf16 adds are exact whatever NCCL's order.
  const auto sum_at = [&](size_t i) {
    return static_cast<float>(n_ * (n_ + 1) / 2 + n_ * static_cast<int>(i % 8));
  };
  std::vector<uint16_t> ints(count * n_);
  for (size_t i = 0; i < ints.size(); ++i)
    ints[i] = F32ToBF16(static_cast<float>(r_ + 1 + static_cast<int>(i % 8)));
  std::vector<uint16_t> all(ints.size(), 0x1234);
  st = g_nccl->AllReduce(ints.data(), all.data(), ints.size(), CommDType::kBF16, ReduceOp::kSum);
  ASSERT_TRUE(st.ok()) << st.message();
  for (size_t i = 0; i < all.size(); ++i) ASSERT_EQ(BF16ToF32(all[i]), sum_at(i)) << i;
  DeviceBuffer d_ints = ToDevice(ints);
  st = g_nccl->ReduceScatter(d_ints.data(), d_ints.data(), count, CommDType::kBF16, ReduceOp::kSum);
  ASSERT_TRUE(st.ok()) << st.message();
  const std::vector<uint16_t> mine = ToHost<uint16_t>(d_ints, count);
  for (size_t i = 0; i < count; ++i) ASSERT_EQ(BF16ToF32(mine[i]), sum_at(r_ * count + i)) << i;
}

TEST_F(NcclCommTest, BarrierCompletesAndAgreeWorksThroughHostStaging) {
  EXPECT_TRUE(g_nccl->Barrier().ok());
  // Comm::Agree passes host buffers; NcclComm stages them.
  EXPECT_TRUE(g_nccl->Agree(OkStatus()).ok());
  Status local =
      (r_ == n_ - 1) ? NotFound("rank " + std::to_string(r_) + ": no such file") : OkStatus();
  Status agreed = g_nccl->Agree(local);
  EXPECT_EQ(agreed.code(), StatusCode::kNotFound);
  EXPECT_EQ(agreed.message(), "rank " + std::to_string(n_ - 1) + ": no such file");
  // Host buffers on the other collectives too.
  std::vector<float> send(17), got(17 * n_), want(17 * n_);
  for (size_t i = 0; i < send.size(); ++i) send[i] = Input(r_, i);
  ASSERT_TRUE(g_mpi->AllGather(send.data(), want.data(), 17, CommDType::kF32).ok());
  ASSERT_TRUE(g_nccl->AllGather(send.data(), got.data(), 17, CommDType::kF32).ok());
  EXPECT_EQ(got, want);
  std::vector<float> rs(17 * n_), rs_want(17);
  for (size_t i = 0; i < rs.size(); ++i) rs[i] = Input(r_, i);
  ASSERT_TRUE(
      g_mpi->ReduceScatter(rs.data(), rs_want.data(), 17, CommDType::kF32, ReduceOp::kSum).ok());
  ASSERT_TRUE(
      g_nccl->ReduceScatter(rs.data(), rs.data(), 17, CommDType::kF32, ReduceOp::kSum).ok());
  ExpectClose(std::vector<float>(rs.begin(), rs.begin() + 17), rs_want);
}

TEST_F(NcclCommTest, BlockingCallsRunAfterWorkQueuedOnTheOtherStreams) {
  // 32 MiB uploaded on kH2D with no host wait: the all-reduce on kComm must
  // still see all of it.
  const size_t count = size_t{8} << 20;
  auto pinned = g_device->AllocatePinned(count * sizeof(float), "upload");
  auto d = g_device->Allocate(count * sizeof(float), "reduced");
  ASSERT_TRUE(pinned.ok() && d.ok());
  for (size_t i = 0; i < count; ++i) pinned->as<float>()[i] = static_cast<float>(i % 1000);
  g_device->Memset(d->data(), 0, count * sizeof(float), StreamKind::kCompute);
  g_device->CopyH2D(d->data(), pinned->data(), count * sizeof(float), StreamKind::kH2D);
  ASSERT_TRUE(g_nccl->AllReduce(d->data(), d->data(), count, CommDType::kF32, ReduceOp::kMax).ok());
  std::vector<float> got = ToHost<float>(*d, count);
  for (size_t i = 0; i < count; ++i) ASSERT_EQ(got[i], static_cast<float>(i % 1000)) << i;
}

TEST_F(NcclCommTest, AsyncVariantsOnACallerStreamMatchMpi) {
  auto stream = CreateCudaStream(0);
  ASSERT_TRUE(stream.ok()) << stream.status().message();
  cudaStream_t s = stream->get();
  const size_t count = 4099;
  std::vector<float> send(count * n_);
  for (size_t i = 0; i < send.size(); ++i) send[i] = Input(r_, i);
  std::vector<float> gather_want(count * n_ * n_), rs_want(count), ar_want(count * n_);
  std::vector<float> bc_want = send;
  ASSERT_TRUE(g_mpi->AllGather(send.data(), gather_want.data(), count * n_, CommDType::kF32).ok());
  ASSERT_TRUE(
      g_mpi->ReduceScatter(send.data(), rs_want.data(), count, CommDType::kF32, ReduceOp::kSum)
          .ok());
  ASSERT_TRUE(
      g_mpi->AllReduce(send.data(), ar_want.data(), send.size(), CommDType::kF32, ReduceOp::kMin)
          .ok());
  ASSERT_TRUE(g_mpi->Broadcast(bc_want.data(), bc_want.size(), CommDType::kF32, 0).ok());

  DeviceBuffer d_send = ToDevice(send);
  DeviceBuffer d_gather = ToDevice(std::vector<float>(count * n_ * n_));
  DeviceBuffer d_rs = ToDevice(std::vector<float>(count));
  DeviceBuffer d_ar = ToDevice(std::vector<float>(count * n_));
  DeviceBuffer d_bc = ToDevice(std::vector<float>(count * n_));
  ASSERT_TRUE(
      g_nccl->AllGatherAsync(d_send.data(), d_gather.data(), count * n_, CommDType::kF32, s).ok());
  ASSERT_TRUE(g_nccl
                  ->ReduceScatterAsync(d_send.data(), d_rs.data(), count, CommDType::kF32,
                                       ReduceOp::kSum, s)
                  .ok());
  ASSERT_TRUE(g_nccl
                  ->AllReduceAsync(d_send.data(), d_ar.data(), count * n_, CommDType::kF32,
                                   ReduceOp::kMin, s)
                  .ok());
  ASSERT_TRUE(
      g_nccl->BroadcastAsync(d_send.data(), d_bc.data(), count * n_, CommDType::kF32, 0, s).ok());
  Status st = g_nccl->Wait(s, "async batch");
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(ToHost<float>(d_gather, gather_want.size()), gather_want);
  ExpectClose(ToHost<float>(d_rs, count), rs_want);
  EXPECT_EQ(ToHost<float>(d_ar, ar_want.size()), ar_want);
  EXPECT_EQ(ToHost<float>(d_bc, bc_want.size()), bc_want);
}

TEST_F(NcclCommTest, AFailedCallAbortsTheCommunicatorAndLaterCallsSayWhy) {
  // A communicator of its own: this test breaks it on purpose.
  auto comm = NcclComm::Create(*g_mpi, *g_device);
  ASSERT_TRUE(comm.ok()) << comm.status().message();
  std::vector<float> host(8, 1.f);
  DeviceBuffer d = ToDevice(host);
  // Every rank fails the same way, before NCCL is called: nobody waits.
  Status st = (*comm)->AllGatherAsync(host.data(), d.data(), 8 / n_, CommDType::kF32,
                                      g_device->stream(StreamKind::kComm));
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("ncclAllGather failed on rank " + std::to_string(r_)),
            std::string::npos)
      << st.message();
  EXPECT_NE(st.message().find(g_device->name()), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("aborted"), std::string::npos) << st.message();
  EXPECT_EQ((*comm)->handle(), nullptr);
  Status later = (*comm)->AllReduce(d.data(), d.data(), 8, CommDType::kF32, ReduceOp::kSum);
  EXPECT_EQ(later.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(later.message().find("earlier failure"), std::string::npos) << later.message();
  // The shared communicator is unaffected.
  EXPECT_TRUE(g_nccl->Barrier().ok());
}

// The NCCL check macros need no GPU; these always run.
Status NcclFails(ncclResult_t r) {
  L2L_NCCL_RETURN_IF_ERROR(r);
  return OkStatus();
}

TEST(NcclCheck, StatusVariantNamesTheSiteAndTheError) {
  L2L_NCCL_CHECK(ncclSuccess) << "never printed";
  EXPECT_TRUE(NcclFails(ncclSuccess).ok());
  Status st = NcclFails(ncclInvalidUsage);
  EXPECT_EQ(st.code(), StatusCode::kInternal);
  EXPECT_NE(st.message().find("NCCL error at "), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("nccl_comm_test.cc:"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find(": r: " + std::string(ncclGetErrorString(ncclInvalidUsage))),
            std::string::npos)
      << st.message();
}

}  // namespace
}  // namespace l2l
