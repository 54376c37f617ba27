// Partition arithmetic of the eager parameter server (DESIGN §3): pure
// functions over element counts. A layer's flat buffer of `size_elems` is
// padded to a multiple of world_size * align_elems; rank r owns the
// contiguous shard [r*S, (r+1)*S) with S = padded / world_size.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "l2l/core/check.h"

namespace l2l::eps {

// A contiguous range of a layer's flat buffer, in elements.
struct Shard {
  int64_t offset_elems = 0;
  int64_t size_elems = 0;
  int64_t end_elems() const { return offset_elems + size_elems; }
  bool operator==(const Shard&) const = default;
};

// Smallest multiple of world_size * align_elems that is >= size_elems.
inline int64_t PaddedSizeElems(int64_t size_elems, int world_size, int64_t align_elems) {
  L2L_CHECK_GE(size_elems, 0);
  L2L_CHECK_GE(world_size, 1);
  L2L_CHECK_GE(align_elems, 1);
  const int64_t unit = world_size * align_elems;
  return (size_elems + unit - 1) / unit * unit;
}

// Rank `rank`'s shard of a padded buffer.
inline Shard ShardOf(int64_t padded_elems, int world_size, int rank) {
  L2L_CHECK_EQ(padded_elems % world_size, 0);
  L2L_CHECK(rank >= 0 && rank < world_size) << "rank " << rank;
  const int64_t s = padded_elems / world_size;
  return Shard{rank * s, s};
}

// The part of `shard` that holds real elements (not padding) of a buffer of
// `size_elems`; empty (size 0) when the shard lies entirely in the padding.
inline Shard ValidPart(const Shard& shard, int64_t size_elems) {
  const int64_t begin = std::min(shard.offset_elems, size_elems);
  const int64_t end = std::min(shard.end_elems(), size_elems);
  return Shard{begin, end - begin};
}

// Calls f(begin, end, decay) for the runs of [begin, end) (layer
// coordinates) that lie inside / outside the ranges of `no_decay`
// (ascending, disjoint; biases and norm gains under weight_decay_on:
// matrices), in order: decay is false inside them. Runs are non-empty.
template <typename F>
void ForEachDecayRun(const std::vector<Shard>& no_decay, int64_t begin, int64_t end, F&& f) {
  int64_t at = begin;
  for (const Shard& r : no_decay) {
    if (at >= end) break;
    if (r.end_elems() <= at) continue;
    const int64_t lo = std::min(std::max(r.offset_elems, at), end);
    if (lo > at) f(at, lo, true);
    const int64_t hi = std::min(r.end_elems(), end);
    if (hi > lo) f(lo, hi, false);
    at = std::max(at, hi);
  }
  if (at < end) f(at, end, true);
}

}  // namespace l2l::eps
