// Test-only helpers: host vectors to and from device buffers, for tests that
// run the same code on any Device (CPU or CUDA). Each call synchronises, so
// tests stay simple; CHECK-fails on allocation errors.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "l2l/core/check.h"
#include "l2l/core/dtype.h"
#include "l2l/device/device.h"

namespace l2l::testing {

// `v` in `dtype` (fp32 or bf16, rounded to nearest even) in a new device buffer.
inline DeviceBuffer Upload(Device& dev, const std::vector<float>& v, DType dtype) {
  const size_t elem = DTypeSizeBytes(dtype);
  StatusOr<DeviceBuffer> b = dev.Allocate(v.size() * elem + 256, "test");
  L2L_CHECK(b.ok()) << b.status().message();
  std::vector<uint16_t> half;
  const void* src = v.data();
  if (dtype == DType::kBF16) {
    for (float f : v) half.push_back(F32ToBF16(f));
    src = half.data();
  }
  dev.CopyH2D(b->data(), src, v.size() * elem, StreamKind::kCompute);
  dev.SynchronizeStream(StreamKind::kCompute);
  return std::move(b).value();
}

// Raw bytes of `v` (ids, masks) in a new device buffer.
template <typename U>
DeviceBuffer UploadRaw(Device& dev, const std::vector<U>& v) {
  StatusOr<DeviceBuffer> b = dev.Allocate(v.size() * sizeof(U) + 256, "test");
  L2L_CHECK(b.ok()) << b.status().message();
  dev.CopyH2D(b->data(), v.data(), v.size() * sizeof(U), StreamKind::kCompute);
  dev.SynchronizeStream(StreamKind::kCompute);
  return std::move(b).value();
}

// n elements of `dtype` from a device buffer, as fp32.
inline std::vector<float> Download(Device& dev, const DeviceBuffer& b, size_t n, DType dtype) {
  std::vector<float> out(n);
  dev.SynchronizeStream(StreamKind::kCompute);
  if (dtype == DType::kBF16) {
    std::vector<uint16_t> half(n);
    dev.CopyD2H(half.data(), b.data(), n * 2, StreamKind::kCompute);
    dev.SynchronizeStream(StreamKind::kCompute);
    for (size_t i = 0; i < n; ++i) out[i] = BF16ToF32(half[i]);
  } else {
    dev.CopyD2H(out.data(), b.data(), n * 4, StreamKind::kCompute);
    dev.SynchronizeStream(StreamKind::kCompute);
  }
  return out;
}

inline DeviceBuffer Zeros(Device& dev, size_t n) {
  return Upload(dev, std::vector<float>(n, 0.0f), DType::kF32);
}

}  // namespace l2l::testing
