// Counter-based random numbers: every draw is a pure function of its keys, so
// initialisation, dropout masks and data order never depend on rank, world
// size, thread count or call order (DESIGN §4). A recompute reproduces a mask
// exactly by asking for the same keys.
#pragma once

#include <cstdint>

namespace l2l {

// splitmix64 finaliser: a bijective 64-bit mixer with full avalanche.
inline uint64_t Mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Hash of an ordered tuple of keys. Different tuples give independent streams.
inline uint64_t HashKeys(uint64_t a) { return Mix64(a); }
template <typename... Rest>
inline uint64_t HashKeys(uint64_t a, Rest... rest) {
  return Mix64(a ^ Mix64(HashKeys(static_cast<uint64_t>(rest)...) + 0x632be59bd9b4e019ull));
}

// Uniform in [0, 1) with 24 bits (exactly representable as float).
inline float UniformFloat(uint64_t bits) {
  return static_cast<float>(bits >> 40) * (1.0f / 16777216.0f);
}
// Uniform in [0, 1) with 53 bits.
inline double UniformDouble(uint64_t bits) {
  return static_cast<double>(bits >> 11) * (1.0 / 9007199254740992.0);
}

// Standard normal from two independent uniforms keyed by `key` (Box-Muller).
double NormalFromKey(uint64_t key);

// Stream ids for the purposes that draw randomness; part of every key so that
// e.g. init and dropout never share a stream.
enum class RngPurpose : uint64_t {
  kInit = 1,
  kDropout = 2,
  kDataOrder = 3,
  kMasking = 4,
  kData = 5
};

}  // namespace l2l
