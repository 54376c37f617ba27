// Checkpoints under 1, 2 and 4 ranks: bitwise save/load round trips at the
// save partition and at other partitions (resharding), checksum additivity,
// each kind of damaged file giving its own code and one-line message on every
// rank, and the directory protocol (latest, keep_last, stale temp files).
// The crash-in-the-middle case runs as a subprocess job in
// tests/ckpt/ckpt_crash_test.sh (a job that aborts cannot report to gtest).
//
// Every value is a pure function of (layer, dataset, element), so each rank
// knows what every slice of every layer must contain.
#include "l2l/ckpt/checkpoint.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <hdf5.h>
#include <mpi.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "h5.h"  // SetMaxIoChunkElemsForTesting
#include "l2l/ckpt/reader.h"
#include "l2l/comm/mpi_comm.h"
#include "l2l/core/rng.h"
#include "l2l/eps/partition.h"

namespace l2l::ckpt {
namespace {

MpiComm* g_comm = nullptr;
std::string g_root;  // per-job scratch directory, same on every rank

int Rank() { return g_comm->rank(); }
int World() { return g_comm->size(); }
void Barrier() { MPI_Barrier(g_comm->handle()); }

// A fresh directory for one test (created by rank 0, visible to all).
std::string TestDir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const std::string dir = g_root + "/" + info->name();
  if (Rank() == 0) {
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
  }
  Barrier();
  return dir;
}

// Three layers with awkward sizes: 70 elements (two tensors, the last shard
// of most partitions empty), 3072 with alignment gaps between tensors, and a
// single scalar.
std::vector<LayerInfo> FakeLayers(int64_t qkv_rows = 10) {
  std::vector<LayerInfo> layers(3);
  layers[0].size_elems = 70;
  layers[0].tensors = {{"w", 0, {7, 9}}, {"b", 63, {7}}};
  const int64_t qkv = qkv_rows * 30;
  const int64_t bias_at = (qkv + 63) / 64 * 64;
  const int64_t big_at = bias_at + 64;
  layers[1].size_elems = big_at + 2681 + 7;
  layers[1].tensors = {{"attn.qkv.weight", 0, {qkv_rows, 30}},
                       {"attn.qkv.bias", bias_at, {30}},
                       {"big", big_at, {2681}}};
  layers[2].size_elems = 1;
  layers[2].tensors = {{"s", 0, {}}};
  return layers;
}

// Element i of dataset `which` (0 master, 1 adam_m, 2 adam_v) of `layer`,
// with a few special values so that "bitwise" means bitwise.
float Value(int layer, int which, int64_t i) {
  const uint64_t h = HashKeys(99, static_cast<uint64_t>(layer), static_cast<uint64_t>(which),
                              static_cast<uint64_t>(i));
  switch (h % 61) {
    case 0:
      return std::numeric_limits<float>::quiet_NaN();
    case 1:
      return -0.0f;
    case 2:
      return std::numeric_limits<float>::infinity();
    case 3:
      return std::numeric_limits<float>::denorm_min();
    default:
      return UniformFloat(h) - 0.5f;
  }
}

// One rank's buffers for a set of slices.
struct Buffers {
  std::vector<std::vector<float>> data[3];
  std::vector<LayerSlice> slices;

  // ranges[l] = (offset, size) of this rank's slice of layer l; `fill`
  // writes the expected values (for a save), otherwise a sentinel.
  static Buffers Make(const std::vector<std::pair<int64_t, int64_t>>& ranges, bool fill) {
    Buffers b;
    for (auto& d : b.data) d.resize(ranges.size());
    for (size_t l = 0; l < ranges.size(); ++l) {
      for (int which = 0; which < 3; ++which) {
        auto& v = b.data[which][l];
        v.resize(static_cast<size_t>(ranges[l].second));
        for (int64_t i = 0; i < ranges[l].second; ++i) {
          v[i] = fill ? Value(static_cast<int>(l), which, ranges[l].first + i) : 12345.0f;
        }
      }
      b.slices.push_back({.offset_elems = ranges[l].first,
                          .size_elems = ranges[l].second,
                          .master = b.data[0][l].data(),
                          .adam_m = b.data[1][l].data(),
                          .adam_v = b.data[2][l].data(),
                          .checksummed = true});
    }
    return b;
  }

  // Empty string if every buffer holds the expected values bitwise.
  std::string Mismatch() const {
    for (size_t l = 0; l < slices.size(); ++l) {
      for (int which = 0; which < 3; ++which) {
        for (int64_t i = 0; i < slices[l].size_elems; ++i) {
          const float want = Value(static_cast<int>(l), which, slices[l].offset_elems + i);
          if (std::memcmp(&want, &data[which][l][i], sizeof want) != 0) {
            return "layer " + std::to_string(l) + " dataset " + std::to_string(which) +
                   " element " + std::to_string(slices[l].offset_elems + i);
          }
        }
      }
    }
    return "";
  }
};

// The EPS partition: rank r's valid part of the padded shard.
std::vector<std::pair<int64_t, int64_t>> ShardRanges(const std::vector<LayerInfo>& layers,
                                                     int world, int rank) {
  std::vector<std::pair<int64_t, int64_t>> out;
  for (const LayerInfo& l : layers) {
    const int64_t padded = eps::PaddedSizeElems(l.size_elems, world, 64);
    const eps::Shard s = eps::ValidPart(eps::ShardOf(padded, world, rank), l.size_elems);
    out.emplace_back(s.offset_elems, s.size_elems);
  }
  return out;
}

// An uneven partition from random cut points (the same on every rank for
// the same seed); some ranks may get nothing.
std::vector<std::pair<int64_t, int64_t>> RandomRanges(const std::vector<LayerInfo>& layers,
                                                      int world, int rank, uint32_t seed) {
  std::mt19937 gen(seed);
  std::vector<std::pair<int64_t, int64_t>> out;
  for (const LayerInfo& l : layers) {
    std::vector<int64_t> cuts = {0, l.size_elems};
    for (int r = 1; r < world; ++r) {
      cuts.push_back(std::uniform_int_distribution<int64_t>(0, l.size_elems)(gen));
    }
    std::sort(cuts.begin(), cuts.end());
    out.emplace_back(cuts[rank], cuts[rank + 1] - cuts[rank]);
  }
  return out;
}

std::vector<std::pair<int64_t, int64_t>> WholeRanges(const std::vector<LayerInfo>& layers) {
  std::vector<std::pair<int64_t, int64_t>> out;
  for (const LayerInfo& l : layers) out.emplace_back(0, l.size_elems);
  return out;
}

Meta TestMeta(int64_t step) {
  Meta m;
  m.step = step;
  m.tokens_seen = step * 4096;
  m.seed = 0xfeedfacecafebeefull;
  m.config_yaml = "model:\n  kind: bert\n  layers: 1\n";
  m.sampler_state = "epoch=0 cursor=" + std::to_string(step);
  return m;
}

// Saves the fake model at `step` with the EPS partition; asserts success.
void SaveStep(const std::string& dir, int64_t step, int keep_last = 2) {
  const auto layers = FakeLayers();
  Buffers b = Buffers::Make(ShardRanges(layers, World(), Rank()), true);
  const Status s =
      Save(g_comm->handle(), dir, TestMeta(step), layers, b.slices, keep_last, nullptr);
  ASSERT_TRUE(s.ok()) << s.message();
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Loads the fake model at the EPS partition from `path`.
Status LoadFake(const std::string& path, const std::vector<LayerInfo>& layers) {
  Buffers b = Buffers::Make(ShardRanges(layers, World(), Rank()), false);
  return Load(g_comm->handle(), path, layers, b.slices, nullptr);
}

// ------------------------------------------------------------------ checksums

TEST(DatasetChecksum, AddsUpOverRandomPartitions) {
  std::vector<float> x(5000);
  for (size_t i = 0; i < x.size(); ++i) x[i] = Value(7, 0, static_cast<int64_t>(i));
  const uint64_t whole = DatasetChecksum(x.data(), 0, static_cast<int64_t>(x.size()));
  std::mt19937 gen(Rank() + 1);
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<int64_t> cuts = {0, static_cast<int64_t>(x.size())};
    for (int k = 0; k < trial; ++k) cuts.push_back(gen() % (x.size() + 1));
    std::sort(cuts.begin(), cuts.end());
    uint64_t sum = 0;
    for (size_t k = 0; k + 1 < cuts.size(); ++k) {
      sum += DatasetChecksum(x.data() + cuts[k], cuts[k], cuts[k + 1] - cuts[k]);
    }
    ASSERT_EQ(sum, whole) << "trial " << trial;
  }
  EXPECT_EQ(DatasetChecksum(x.data(), 0, 0), 0u);
}

TEST(DatasetChecksum, SeesBitsAndPositions) {
  std::vector<float> x = {1.0f, 2.0f, 0.0f, 4.0f};
  const uint64_t base = DatasetChecksum(x.data(), 0, 4);
  std::vector<float> swapped = {2.0f, 1.0f, 0.0f, 4.0f};
  EXPECT_NE(DatasetChecksum(swapped.data(), 0, 4), base);  // order matters
  std::vector<float> neg_zero = {1.0f, 2.0f, -0.0f, 4.0f};
  EXPECT_NE(DatasetChecksum(neg_zero.data(), 0, 4), base);  // bits, not values
  EXPECT_NE(DatasetChecksum(x.data(), 1, 4), base);         // global offsets
}

TEST(CheckpointPath, EightDigitSteps) {
  EXPECT_EQ(CheckpointPath("ck", 10), "ck/step-00000010.h5");
  EXPECT_EQ(CheckpointPath("ck/", 123456789), "ck/step-123456789.h5");
}

// ------------------------------------------------------------------ round trips

TEST(Checkpoint, SaveLoadSamePartitionIsBitwise) {
  const std::string dir = TestDir();
  const auto layers = FakeLayers();
  Buffers saved = Buffers::Make(ShardRanges(layers, World(), Rank()), true);
  IoStats save_stats;
  Status s = Save(g_comm->handle(), dir, TestMeta(10), layers, saved.slices, 2, &save_stats);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(save_stats.bytes, (70 + 3072 + 1) * 3 * 4);
  EXPECT_GT(save_stats.seconds, 0);

  auto latest = FindLatest(dir);
  ASSERT_TRUE(latest.ok()) << latest.status().message();
  EXPECT_EQ(*latest, CheckpointPath(dir, 10));

  auto meta = ReadMeta(g_comm->handle(), *latest);
  ASSERT_TRUE(meta.ok()) << meta.status().message();
  const Meta want = TestMeta(10);
  EXPECT_EQ(meta->step, want.step);
  EXPECT_EQ(meta->tokens_seen, want.tokens_seen);
  EXPECT_EQ(meta->world_size, World());
  EXPECT_EQ(meta->seed, want.seed);
  EXPECT_EQ(meta->config_yaml, want.config_yaml);
  EXPECT_EQ(meta->sampler_state, want.sampler_state);

  auto infos = ReadLayerInfos(g_comm->handle(), *latest);
  ASSERT_TRUE(infos.ok()) << infos.status().message();
  ASSERT_EQ(infos->size(), layers.size());
  for (size_t l = 0; l < layers.size(); ++l) {
    EXPECT_EQ((*infos)[l].size_elems, layers[l].size_elems);
    EXPECT_EQ((*infos)[l].tensors, layers[l].tensors);
  }

  Buffers loaded = Buffers::Make(ShardRanges(layers, World(), Rank()), false);
  IoStats load_stats;
  s = Load(g_comm->handle(), *latest, layers, loaded.slices, &load_stats);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(loaded.Mismatch(), "");
  EXPECT_EQ(load_stats.bytes, (70 + 3072 + 1) * 3 * 4);
}

// Resharding: a file saved at this world size's partition loads at other
// partitions: a random uneven one, one rank alone (MPI_COMM_SELF), every rank
// holding a full replica, and each half of a split communicator.
TEST(Checkpoint, LoadsAtOtherPartitions) {
  const std::string dir = TestDir();
  SaveStep(dir, 3);
  const std::string path = CheckpointPath(dir, 3);
  const auto layers = FakeLayers();

  for (uint32_t seed = 1; seed <= 3; ++seed) {
    Buffers b = Buffers::Make(RandomRanges(layers, World(), Rank(), seed), false);
    const Status s = Load(g_comm->handle(), path, layers, b.slices, nullptr);
    ASSERT_TRUE(s.ok()) << s.message();
    EXPECT_EQ(b.Mismatch(), "") << "random partition " << seed;
  }

  if (Rank() == 0) {
    Buffers b = Buffers::Make(WholeRanges(layers), false);
    const Status s = Load(MPI_COMM_SELF, path, layers, b.slices, nullptr);
    ASSERT_TRUE(s.ok()) << s.message();
    EXPECT_EQ(b.Mismatch(), "") << "world size 1 on rank 0";
  }
  Barrier();

  {
    Buffers b = Buffers::Make(WholeRanges(layers), false);
    for (LayerSlice& sl : b.slices) sl.checksummed = Rank() == 0;
    const Status s = Load(g_comm->handle(), path, layers, b.slices, nullptr);
    ASSERT_TRUE(s.ok()) << s.message();
    EXPECT_EQ(b.Mismatch(), "") << "replica";
  }

  MPI_Comm half;
  MPI_Comm_split(g_comm->handle(), Rank() % 2, Rank(), &half);
  int half_rank = 0, half_size = 1;
  MPI_Comm_rank(half, &half_rank);
  MPI_Comm_size(half, &half_size);
  {
    Buffers b = Buffers::Make(ShardRanges(layers, half_size, half_rank), false);
    const Status s = Load(half, path, layers, b.slices, nullptr);
    EXPECT_TRUE(s.ok()) << s.message();
    EXPECT_EQ(b.Mismatch(), "") << "split communicator";
  }
  MPI_Comm_free(&half);
}

// A file saved at an uneven partition loads at the EPS partition.
TEST(Checkpoint, SaveAtUnevenPartitionLoadsAtShards) {
  const std::string dir = TestDir();
  const auto layers = FakeLayers();
  Buffers saved = Buffers::Make(RandomRanges(layers, World(), Rank(), 77), true);
  Status s = Save(g_comm->handle(), dir, TestMeta(5), layers, saved.slices, 1, nullptr);
  ASSERT_TRUE(s.ok()) << s.message();
  Buffers loaded = Buffers::Make(ShardRanges(layers, World(), Rank()), false);
  s = Load(g_comm->handle(), CheckpointPath(dir, 5), layers, loaded.slices, nullptr);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(loaded.Mismatch(), "");
}

// Slices larger than the per-call I/O piece are written and read in several
// collective rounds; ranks with fewer (or no) pieces join the extra rounds
// with empty selections.
TEST(Checkpoint, MultiRoundIoRoundTrips) {
  const std::string dir = TestDir();
  const auto layers = FakeLayers();
  internal::SetMaxIoChunkElemsForTesting(100);
  Buffers saved = Buffers::Make(RandomRanges(layers, World(), Rank(), 5), true);
  Status s = Save(g_comm->handle(), dir, TestMeta(2), layers, saved.slices, 1, nullptr);
  Buffers loaded = Buffers::Make(RandomRanges(layers, World(), Rank(), 6), false);
  if (s.ok()) s = Load(g_comm->handle(), CheckpointPath(dir, 2), layers, loaded.slices, nullptr);
  internal::SetMaxIoChunkElemsForTesting(0);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(loaded.Mismatch(), "");
}

// StreamMaster hands out the layer front to back in pieces of the I/O size,
// equal to the whole layer as ReadLayer reads it; a visitor error stops it.
// Lowers the I/O piece size for one scope (restored on every exit, ASSERTs
// included).
struct SmallIoPieces {
  explicit SmallIoPieces(int64_t n) { internal::SetMaxIoChunkElemsForTesting(n); }
  ~SmallIoPieces() { internal::SetMaxIoChunkElemsForTesting(0); }
};

TEST(Checkpoint, StreamMasterVisitsTheLayerInOrder) {
  const std::string dir = TestDir();
  SaveStep(dir, 3);
  // Rank 0 alone (the reader is local); the lambda keeps its ASSERTs from
  // skipping the Barrier below.
  if (Rank() == 0)
    [&] {
      const SmallIoPieces small(100);
      const std::string path = CheckpointPath(dir, 3);
      for (int layer = 0; layer < static_cast<int>(FakeLayers().size()); ++layer) {
        StatusOr<LayerData> whole = ReadLayer(path, layer, LayerParts::kMasterOnly);
        ASSERT_TRUE(whole.ok()) << whole.status().message();
        std::vector<float> streamed;
        int pieces = 0;
        const Status s = StreamMaster(path, layer, [&](int64_t offset, int64_t n, const float* x) {
          EXPECT_EQ(offset, static_cast<int64_t>(streamed.size()));
          EXPECT_LE(n, 100);
          streamed.insert(streamed.end(), x, x + n);
          ++pieces;
          return OkStatus();
        });
        ASSERT_TRUE(s.ok()) << s.message();
        // Bitwise: the test values include NaN and infinities.
        ASSERT_EQ(streamed.size(), whole->master.size());
        EXPECT_EQ(
            std::memcmp(streamed.data(), whole->master.data(), streamed.size() * sizeof(float)), 0)
            << "layer " << layer;
        EXPECT_EQ(pieces, (whole->master.size() + 99) / 100);
        int calls = 0;
        const Status stop = StreamMaster(path, layer, [&](int64_t, int64_t, const float*) {
          ++calls;
          return InvalidArgument("stop");
        });
        if (!whole->master.empty()) {
          EXPECT_EQ(stop.message(), "stop");
          EXPECT_EQ(calls, 1);
        }
      }
      EXPECT_EQ(
          StreamMaster(path, 99, [](int64_t, int64_t, const float*) { return OkStatus(); }).code(),
          StatusCode::kInvalidArgument);
    }();
  Barrier();
}

// A layer with no elements (and no tensors) is stored as an empty dataset.
TEST(Checkpoint, EmptyLayerRoundTrips) {
  const std::string dir = TestDir();
  auto layers = FakeLayers();
  layers.insert(layers.begin() + 1, LayerInfo{});
  Buffers saved = Buffers::Make(ShardRanges(layers, World(), Rank()), true);
  Status s = Save(g_comm->handle(), dir, TestMeta(2), layers, saved.slices, 1, nullptr);
  ASSERT_TRUE(s.ok()) << s.message();
  auto infos = ReadLayerInfos(g_comm->handle(), CheckpointPath(dir, 2));
  ASSERT_TRUE(infos.ok()) << infos.status().message();
  ASSERT_EQ(infos->size(), 4u);
  EXPECT_EQ((*infos)[1].size_elems, 0);
  EXPECT_TRUE((*infos)[1].tensors.empty());
  Buffers loaded = Buffers::Make(ShardRanges(layers, World(), Rank()), false);
  s = Load(g_comm->handle(), CheckpointPath(dir, 2), layers, loaded.slices, nullptr);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(loaded.Mismatch(), "");
}

// A config above HDF5's 64 KiB compact-attribute limit survives.
TEST(Checkpoint, LargeConfigRoundTrips) {
  const std::string dir = TestDir();
  const auto layers = FakeLayers();
  Buffers b = Buffers::Make(ShardRanges(layers, World(), Rank()), true);
  Meta m = TestMeta(1);
  m.config_yaml.clear();
  for (int i = 0; i < 20000; ++i) m.config_yaml += "k" + std::to_string(i) + ": v\n";
  ASSERT_GT(m.config_yaml.size(), 150000u);
  Status s = Save(g_comm->handle(), dir, m, layers, b.slices, 1, nullptr);
  ASSERT_TRUE(s.ok()) << s.message();
  auto meta = ReadMeta(g_comm->handle(), CheckpointPath(dir, 1));
  ASSERT_TRUE(meta.ok()) << meta.status().message();
  EXPECT_EQ(meta->config_yaml, m.config_yaml);
}

TEST(Checkpoint, SaveRejectsSlicesThatDoNotTile) {
  const std::string dir = TestDir();
  const auto layers = FakeLayers();
  auto ranges = ShardRanges(layers, World(), Rank());
  if (Rank() == 0) ranges[1] = {1, ranges[1].second - 1};  // element 0 of layer 1 is nobody's
  Buffers b = Buffers::Make(ranges, true);
  const Status s = Save(g_comm->handle(), dir, TestMeta(1), layers, b.slices, 1, nullptr);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("layer 1: the ranks' slices do not tile [0, 3072)"), std::string::npos)
      << s.message();
  EXPECT_FALSE(Exists(CheckpointPath(dir, 1)));
  EXPECT_FALSE(Exists(dir + "/latest"));
}

TEST(Checkpoint, SaveRejectsBadKeepLast) {
  const std::string dir = TestDir();
  const auto layers = FakeLayers();
  Buffers b = Buffers::Make(ShardRanges(layers, World(), Rank()), true);
  const Status s = Save(g_comm->handle(), dir, TestMeta(1), layers, b.slices, 0, nullptr);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("keep_last"), std::string::npos) << s.message();
}

TEST(Checkpoint, SaveToUnwritableDirIsIoError) {
  const std::string dir = TestDir();
  if (Rank() == 0) std::ofstream(dir + "/plain-file") << "x";
  Barrier();
  const auto layers = FakeLayers();
  Buffers b = Buffers::Make(ShardRanges(layers, World(), Rank()), true);
  const std::string bad = dir + "/plain-file/ckpt";  // a directory below a regular file
  const Status s = Save(g_comm->handle(), bad, TestMeta(1), layers, b.slices, 1, nullptr);
  EXPECT_EQ(s.code(), StatusCode::kIoError);
  EXPECT_EQ(s.message().rfind(bad + ": cannot create directory", 0), 0u) << s.message();
}

// ------------------------------------------------------------------ damaged files

// Rank 0 makes a copy of `src` at `dst` and applies `damage` to it.
template <typename F>
void DamagedCopy(const std::string& src, const std::string& dst, F damage) {
  if (Rank() == 0) {
    std::filesystem::copy_file(src, dst, std::filesystem::copy_options::overwrite_existing);
    damage(dst);
  }
  Barrier();
}

// Every rank must return exactly this code and message.
void ExpectAgreedError(const Status& s, StatusCode code, const std::string& message) {
  EXPECT_EQ(s.code(), code) << s.ToString();
  EXPECT_EQ(s.message(), message);
  EXPECT_EQ(s.message().find('\n'), std::string::npos) << "not one line";
}

class DamagedFile : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = TestDir();
    SaveStep(dir_, 4);
    good_ = CheckpointPath(dir_, 4);
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  }
  std::string dir_, good_;
};

TEST_F(DamagedFile, Truncated) {
  const std::string bad = dir_ + "/truncated.h5";
  DamagedCopy(good_, bad, [](const std::string& p) {
    std::filesystem::resize_file(p, std::filesystem::file_size(p) / 2);
  });
  const std::string msg = bad + ": file is truncated or corrupt (HDF5 could not open it)";
  ExpectAgreedError(LoadFake(bad, FakeLayers()), StatusCode::kDataLoss, msg);
  ExpectAgreedError(ReadMeta(g_comm->handle(), bad).status(), StatusCode::kDataLoss, msg);
}

// Flips one byte of element `elem` of `dataset` in the file at `path`.
void FlipByte(const std::string& path, const char* dataset, int64_t elem) {
  hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  ASSERT_GE(f, 0);
  hid_t d = H5Dopen2(f, dataset, H5P_DEFAULT);
  const haddr_t at = H5Dget_offset(d);
  H5Dclose(d);
  H5Fclose(f);
  ASSERT_NE(at, HADDR_UNDEF);
  const int fd = ::open(path.c_str(), O_RDWR);
  unsigned char byte = 0;
  const off_t where = static_cast<off_t>(at) + 4 * elem + 2;
  ASSERT_EQ(::pread(fd, &byte, 1, where), 1);
  byte ^= 0x5a;
  ASSERT_EQ(::pwrite(fd, &byte, 1, where), 1);
  ::close(fd);
}

TEST_F(DamagedFile, FlippedBytesInsideADataset) {
  const std::string bad = dir_ + "/flipped.h5";
  DamagedCopy(good_, bad, [](const std::string& p) { FlipByte(p, "/layers/00001/adam_m", 1000); });
  const Status s = LoadFake(bad, FakeLayers());
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  const std::string prefix = bad + ": dataset /layers/00001/adam_m checksum mismatch (stored 0x";
  EXPECT_EQ(s.message().rfind(prefix, 0), 0u) << s.message();
  EXPECT_NE(s.message().find(", computed 0x"), std::string::npos) << s.message();
  // The single-process verifier finds the same problem.
  if (Rank() == 0) {
    const Status v = Verify(bad);
    EXPECT_EQ(v.code(), StatusCode::kDataLoss);
    EXPECT_EQ(v.message(), s.message());
    EXPECT_TRUE(Verify(good_).ok());
  }
  Barrier();
}

// A streamed layer is checked too: the mismatch is reported after the last
// piece (the caller has seen every piece and must discard what it made).
TEST_F(DamagedFile, StreamMasterReportsAFlippedByteAfterTheLastPiece) {
  const std::string bad = dir_ + "/flipped-master.h5";
  DamagedCopy(good_, bad, [](const std::string& p) { FlipByte(p, "/layers/00001/master", 7); });
  if (Rank() == 0) {
    const int64_t size = FakeLayers()[1].size_elems;
    const SmallIoPieces small(100);
    int64_t seen = 0;
    const Status s = StreamMaster(bad, 1, [&](int64_t offset, int64_t n, const float*) {
      EXPECT_EQ(offset, seen);
      seen += n;
      return OkStatus();
    });
    EXPECT_EQ(seen, size);
    EXPECT_EQ(s.code(), StatusCode::kDataLoss) << s.message();
    EXPECT_EQ(s.message().rfind(bad + ": dataset /layers/00001/master checksum mismatch", 0), 0u)
        << s.message();
  }
  Barrier();
}

TEST_F(DamagedFile, MissingDataset) {
  const std::string bad = dir_ + "/missing.h5";
  DamagedCopy(good_, bad, [](const std::string& p) {
    hid_t f = H5Fopen(p.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    ASSERT_GE(f, 0);
    ASSERT_GE(H5Ldelete(f, "/layers/00002/master", H5P_DEFAULT), 0);
    H5Fclose(f);
  });
  ExpectAgreedError(LoadFake(bad, FakeLayers()), StatusCode::kDataLoss,
                    bad + ": missing dataset /layers/00002/master");
}

TEST_F(DamagedFile, ModelOfAnotherShape) {
  ExpectAgreedError(LoadFake(good_, FakeLayers(/*qkv_rows=*/12)), StatusCode::kFailedPrecondition,
                    good_ +
                        ": layer 1 has 3072 elements in the checkpoint, the model has 3136 "
                        "(tensor 'attn.qkv.weight' shape [10, 30] vs [12, 30])");
  auto fewer = FakeLayers();
  fewer.pop_back();
  ExpectAgreedError(LoadFake(good_, fewer), StatusCode::kFailedPrecondition,
                    good_ + ": the checkpoint has 3 layers, the model has 2");
  auto renamed = FakeLayers();
  renamed[0].tensors[1].name = "bias";
  ExpectAgreedError(LoadFake(good_, renamed), StatusCode::kFailedPrecondition,
                    good_ +
                        ": layer 0 differs from the model (tensor 1 is 'b' in the "
                        "checkpoint, 'bias' in the model)");
}

TEST_F(DamagedFile, NotAnHdf5File) {
  const std::string bad = dir_ + "/text.h5";
  DamagedCopy(good_, bad, [](const std::string& p) { std::ofstream(p) << "model: bert\n"; });
  ExpectAgreedError(LoadFake(bad, FakeLayers()), StatusCode::kDataLoss, bad + ": not an HDF5 file");
  ExpectAgreedError(ReadMeta(g_comm->handle(), bad).status(), StatusCode::kDataLoss,
                    bad + ": not an HDF5 file");
}

TEST_F(DamagedFile, MissingFile) {
  const std::string bad = dir_ + "/nope.h5";
  ExpectAgreedError(LoadFake(bad, FakeLayers()), StatusCode::kNotFound, bad + ": no such file");
}

// ------------------------------------------------------------------ directory protocol

TEST(Directory, LatestAndKeepLast) {
  const std::string dir = TestDir();
  for (int64_t step : {1, 2, 3}) SaveStep(dir, step, /*keep_last=*/2);
  EXPECT_FALSE(Exists(CheckpointPath(dir, 1)));
  EXPECT_TRUE(Exists(CheckpointPath(dir, 2)));
  EXPECT_TRUE(Exists(CheckpointPath(dir, 3)));
  EXPECT_EQ(ReadText(dir + "/latest"), "step-00000003.h5\n");
  auto latest = FindLatest(dir);
  ASSERT_TRUE(latest.ok()) << latest.status().message();
  EXPECT_EQ(*latest, CheckpointPath(dir, 3));
  EXPECT_TRUE(LoadFake(*latest, FakeLayers()).ok());
  Barrier();
  // keep_last 1 keeps only the new file, even when an older step is saved
  // after a newer one (a resumed run): the file `latest` names survives.
  SaveStep(dir, 2, /*keep_last=*/1);
  EXPECT_TRUE(Exists(CheckpointPath(dir, 2)));
  EXPECT_FALSE(Exists(CheckpointPath(dir, 3)));
  EXPECT_EQ(ReadText(dir + "/latest"), "step-00000002.h5\n");
}

TEST(Directory, StaleTempFilesAreRemovedAfterASave) {
  const std::string dir = TestDir();
  if (Rank() == 0) {
    std::ofstream(dir + "/.tmp-step-00000099.h5") << "half a checkpoint";
    std::ofstream(dir + "/.tmp-latest") << "step-00000099.h5\n";
    std::ofstream(dir + "/notes.txt") << "not ours";
    std::ofstream(dir + "/.tmp-export-1234") << "another program's temp file";
  }
  Barrier();
  SaveStep(dir, 7);
  EXPECT_FALSE(Exists(dir + "/.tmp-step-00000099.h5"));
  EXPECT_FALSE(Exists(dir + "/.tmp-latest"));
  EXPECT_TRUE(Exists(dir + "/notes.txt"));
  EXPECT_TRUE(Exists(dir + "/.tmp-export-1234"));  // not a name the protocol writes
  EXPECT_TRUE(Exists(CheckpointPath(dir, 7)));
  const std::vector<std::string> entries = CheckpointEntries(dir);
  EXPECT_EQ(entries, (std::vector<std::string>{"latest", "step-00000007.h5"}));
  EXPECT_TRUE(CheckpointEntries(dir + "/absent").empty());
}

// Index entries come from the file: extents that overflow int64 (eight
// dimensions of 2^20, an offset of INT64_MAX) are reported, not wrapped
// into a range that passes the bounds check.
TEST(Index, OverflowingExtentsAreProblems) {
  LayerInfo layer{.size_elems = 100, .tensors = {{"w", 0, {10, 10}}}};
  EXPECT_EQ(internal::IndexProblem(layer), "");
  layer.tensors[0].shape = std::vector<int64_t>(8, int64_t{1} << 20);
  EXPECT_EQ(internal::IndexProblem(layer), "tensor 'w' has more elements than the layer's 100");
  layer.tensors[0].shape = {10};
  layer.tensors[0].offset_elems = std::numeric_limits<int64_t>::max();
  EXPECT_EQ(internal::IndexProblem(layer),
            "tensor 'w' at offset 9223372036854775807 with 10 elements lies outside the layer's "
            "100 elements");
  layer.tensors[0].offset_elems = 90;  // [90, 100): the last element is still inside
  EXPECT_EQ(internal::IndexProblem(layer), "");
  layer.tensors[0].offset_elems = 91;
  EXPECT_NE(internal::IndexProblem(layer), "");
}

TEST(Directory, FindLatestErrors) {
  const std::string dir = TestDir();
  auto none = FindLatest(dir);
  EXPECT_EQ(none.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(none.status().message(), dir + ": no checkpoint (no 'latest' file)");
  auto no_dir = FindLatest(dir + "/absent");
  EXPECT_EQ(no_dir.status().code(), StatusCode::kNotFound);
  Barrier();
  if (Rank() == 0) std::ofstream(dir + "/latest") << "step-00000042.h5\n";
  Barrier();
  auto dangling = FindLatest(dir);
  EXPECT_EQ(dangling.status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(dangling.status().message(),
            dir + "/latest names step-00000042.h5, which does not exist or is not a file");
  // A `latest` that exists but names nothing usable is an error, never
  // "no checkpoint" (which would start a run from scratch).
  Barrier();
  if (Rank() == 0) {
    ::unlink((dir + "/latest").c_str());
    EXPECT_EQ(::symlink("gone.txt", (dir + "/latest").c_str()), 0);
  }
  Barrier();
  auto link = FindLatest(dir);
  EXPECT_EQ(link.status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(link.status().message(), dir +
                                         "/latest: a link to a file that does not exist, "
                                         "expected a file naming the latest checkpoint");
  Barrier();
  if (Rank() == 0) {
    ::unlink((dir + "/latest").c_str());
    std::ofstream(dir + "/latest") << "step-1.h5\n\x1b[2Jrm -rf\n";
  }
  Barrier();
  auto garbage = FindLatest(dir);
  EXPECT_EQ(garbage.status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(garbage.status().message(), dir +
                                            "/latest: expected one line naming a checkpoint "
                                            "file, found 'step-1.h5\\x0a\\x1b[2Jrm -rf\\x0a'");
  Barrier();
  if (Rank() == 0) {
    ::unlink((dir + "/latest").c_str());
    EXPECT_EQ(::mkfifo((dir + "/latest").c_str(), 0600), 0);
  }
  Barrier();
  auto fifo = FindLatest(dir);  // must not block
  EXPECT_EQ(fifo.status().message(), dir + "/latest: not a regular file (a FIFO)");
}

}  // namespace
}  // namespace l2l::ckpt

int main(int argc, char** argv) {
  l2l::MpiRuntime mpi(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  if (mpi.world_rank() != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  int rc;
  {
    l2l::MpiComm comm;
    l2l::ckpt::g_comm = &comm;
    // One scratch directory per job, named by rank 0.
    char name[64] = "/tmp/l2l_checkpoint_test.XXXXXX";
    if (mpi.world_rank() == 0 && ::mkdtemp(name) == nullptr)
      l2l::MpiRuntime::AbortJob("mkdtemp", 1);
    MPI_Bcast(name, sizeof name, MPI_CHAR, 0, comm.handle());
    l2l::ckpt::g_root = name;
    rc = RUN_ALL_TESTS();
    // Every rank reaches the same verdict.
    MPI_Allreduce(MPI_IN_PLACE, &rc, 1, MPI_INT, MPI_MAX, comm.handle());
    if (mpi.world_rank() == 0) std::filesystem::remove_all(name);
  }
  return rc;
}
