// Element types for parameters and activations, and the bf16 / f16 <-> f32
// conversions the CPU backend uses to emulate and check reduced precision.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "l2l/core/status.h"

namespace l2l {

enum class DType : uint8_t { kF32, kBF16, kF16 };

size_t DTypeSizeBytes(DType t);
const char* DTypeName(DType t);  // "f32", "bf16", "f16"
StatusOr<DType> ParseDType(std::string_view name);

// bf16 is the upper half of an IEEE f32. Conversion rounds to nearest, ties to
// even; NaN stays NaN (quiet), infinities stay infinite.
inline uint16_t F32ToBF16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu) != 0) {
    return static_cast<uint16_t>((u >> 16) | 0x0040u);  // quiet NaN
  }
  const uint32_t lsb = (u >> 16) & 1u;
  u += 0x7fffu + lsb;
  return static_cast<uint16_t>(u >> 16);
}

inline float BF16ToF32(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// IEEE binary16, round to nearest even, with subnormals, overflow to inf.
uint16_t F32ToF16(float f);
float F16ToF32(uint16_t h);

}  // namespace l2l
