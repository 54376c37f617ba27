// The safetensors container (Hugging Face's weights format; what
// `l2l-ckpt export` writes):
//
//   8 bytes   N, the header length, unsigned little-endian
//   N bytes   JSON: {"<name>": {"dtype": "F32"|"BF16"|..., "shape": [...],
//                               "data_offsets": [begin, end]}, ...,
//                    "__metadata__": {"<key>": "<string>", ...}}
//             padded with spaces so that 8 + N is a multiple of 8
//   data      the tensors' raw little-endian bytes; offsets are relative to
//             the start of this section and cover it exactly (EncodeSafetensorsHeader
//             lays the tensors out contiguously in header order)
//
// Pure functions plus a local file reader; no MPI, no HDF5.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "l2l/core/status.h"

namespace l2l::interop {

// The dtypes read (floats convert to fp32, integers to int32); the writer
// uses F32 and BF16.
enum class SafetensorsDType { kF32, kBF16, kF16, kI32, kI64 };
const char* SafetensorsDTypeName(SafetensorsDType t);  // "F32", "BF16", "F16", "I32", "I64"
int SafetensorsDTypeSizeBytes(SafetensorsDType t);     // 4, 2, 2, 4, 8

struct SafetensorsTensor {
  std::string name;
  SafetensorsDType dtype = SafetensorsDType::kF32;
  std::vector<int64_t> shape;
  int64_t begin_bytes = 0;  // data_offsets, relative to the data section
  int64_t end_bytes = 0;
  bool operator==(const SafetensorsTensor&) const = default;
};

struct SafetensorsHeader {
  std::vector<SafetensorsTensor> tensors;  // in header order
  std::vector<std::pair<std::string, std::string>> metadata;
  int64_t data_start_bytes = 0;  // 8 + N: file offset of the data section
};

// Assigns contiguous data offsets to `tensors` in order (overwriting
// begin/end_bytes) and returns the bytes that precede the data: the length
// prefix and the padded JSON header. Names must be unique (CHECKed).
std::string EncodeSafetensorsHeader(
    std::vector<SafetensorsTensor>* tensors,
    const std::vector<std::pair<std::string, std::string>>& metadata);

// Parses and validates the header of the file at `path`: JSON syntax, known
// dtypes, non-negative shapes whose byte size equals the offsets' span, and
// offsets that (sorted) tile the data section from 0 to the file's end.
// NotFound for a missing file, DataLoss naming the file and the problem
// otherwise. Local.
StatusOr<SafetensorsHeader> ReadSafetensorsHeader(const std::string& path);

// An open safetensors file with its validated header, for reading tensors
// in pieces (memory stays at what the caller asks for). Reads are pread()s:
// const calls may run concurrently. Errors name the file and the tensor.
class SafetensorsFile {
 public:
  static StatusOr<SafetensorsFile> Open(const std::string& path);
  SafetensorsFile(SafetensorsFile&& other) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&& other) noexcept;
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;
  ~SafetensorsFile();

  const std::string& path() const { return path_; }
  const SafetensorsHeader& header() const { return header_; }
  const SafetensorsTensor* Find(const std::string& name) const;  // nullptr if absent

  // Elements [begin, begin + n) of a float tensor (F32, BF16, F16) as fp32;
  // InvalidArgument for another dtype or a range outside the tensor.
  Status ReadF32(const SafetensorsTensor& t, int64_t begin, int64_t n, float* out) const;
  // The same for an integer tensor (I32, I64; I64 values outside int32 are
  // InvalidArgument).
  Status ReadI32(const SafetensorsTensor& t, int64_t begin, int64_t n, int32_t* out) const;
  // Bytes [begin, begin + n) of the tensor's data as stored.
  Status ReadBytes(const SafetensorsTensor& t, int64_t begin, int64_t n, void* out) const;

 private:
  SafetensorsFile() = default;
  std::string path_;
  SafetensorsHeader header_;
  int fd_ = -1;
};

}  // namespace l2l::interop
