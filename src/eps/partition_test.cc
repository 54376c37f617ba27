#include "l2l/eps/partition.h"

#include <gtest/gtest.h>

namespace l2l::eps {
namespace {

TEST(Partition, PaddingIsTheSmallestAlignedMultiple) {
  EXPECT_EQ(PaddedSizeElems(0, 4, 64), 0);
  EXPECT_EQ(PaddedSizeElems(1, 1, 64), 64);
  EXPECT_EQ(PaddedSizeElems(64, 1, 64), 64);
  EXPECT_EQ(PaddedSizeElems(65, 1, 64), 128);
  EXPECT_EQ(PaddedSizeElems(1000, 3, 64), 1152);  // 3*64*6
  EXPECT_EQ(PaddedSizeElems(1152, 3, 64), 1152);
}

// For world sizes 1..8 and awkward sizes: shards tile the padded buffer
// exactly, each shard is aligned, and the valid parts tile the real buffer.
TEST(Partition, ShardsTileTheBufferForWorldSizes1To8) {
  const int64_t align = 64;
  for (int world = 1; world <= 8; ++world) {
    for (int64_t size : {1, 63, 64, 65, 1000, 4097, 123457}) {
      const int64_t padded = PaddedSizeElems(size, world, align);
      ASSERT_GE(padded, size);
      ASSERT_LT(padded - size, world * align);
      int64_t next = 0, valid_total = 0;
      for (int r = 0; r < world; ++r) {
        const Shard s = ShardOf(padded, world, r);
        EXPECT_EQ(s.offset_elems, next);
        EXPECT_EQ(s.offset_elems % align, 0);
        EXPECT_EQ(s.size_elems, padded / world);
        next = s.end_elems();
        const Shard v = ValidPart(s, size);
        EXPECT_GE(v.size_elems, 0);
        if (v.size_elems > 0) {
          EXPECT_EQ(v.offset_elems, s.offset_elems);
        }
        valid_total += v.size_elems;
      }
      EXPECT_EQ(next, padded);
      EXPECT_EQ(valid_total, size) << "world " << world << " size " << size;
    }
  }
}

TEST(Partition, ShardInPaddingHasNoValidPart) {
  // 10 elements, 4 ranks of 64: ranks 1..3 hold only padding.
  const int64_t padded = PaddedSizeElems(10, 4, 64);
  EXPECT_EQ(ValidPart(ShardOf(padded, 4, 0), 10), (Shard{0, 10}));
  EXPECT_EQ(ValidPart(ShardOf(padded, 4, 3), 10).size_elems, 0);
}

// The runs tile [begin, end) in order, alternate decay flags as the ranges
// say, and are never empty; ranges outside or straddling the span clip.
TEST(Partition, DecayRunsTileTheSpan) {
  const std::vector<Shard> no_decay = {{10, 5}, {15, 3}, {40, 10}, {90, 20}};
  struct Run {
    int64_t b, e;
    bool decay;
    bool operator==(const Run&) const = default;
  };
  auto runs = [&](int64_t b, int64_t e) {
    std::vector<Run> out;
    ForEachDecayRun(no_decay, b, e, [&](int64_t rb, int64_t re, bool d) {
      out.push_back({rb, re, d});
    });
    return out;
  };
  EXPECT_EQ(runs(0, 100), (std::vector<Run>{{0, 10, true},
                                            {10, 15, false},
                                            {15, 18, false},
                                            {18, 40, true},
                                            {40, 50, false},
                                            {50, 90, true},
                                            {90, 100, false}}));
  EXPECT_EQ(runs(12, 45),
            (std::vector<Run>{{12, 15, false}, {15, 18, false}, {18, 40, true}, {40, 45, false}}));
  EXPECT_EQ(runs(20, 30), (std::vector<Run>{{20, 30, true}}));
  EXPECT_EQ(runs(42, 48), (std::vector<Run>{{42, 48, false}}));
  EXPECT_TRUE(runs(5, 5).empty());
  std::vector<Run> none;
  ForEachDecayRun({}, 3, 7, [&](int64_t b, int64_t e, bool d) { none.push_back({b, e, d}); });
  EXPECT_EQ(none, (std::vector<Run>{{3, 7, true}}));
}

}  // namespace
}  // namespace l2l::eps
