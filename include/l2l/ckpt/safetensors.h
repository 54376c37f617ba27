// The safetensors container (what `l2l-ckpt export` writes):
//
//   8 bytes   N, the header length, unsigned little-endian
//   N bytes   JSON: {"<name>": {"dtype": "F32"|"BF16", "shape": [...],
//                               "data_offsets": [begin, end]}, ...,
//                    "__metadata__": {"<key>": "<string>", ...}}
//             padded with spaces so that 8 + N is a multiple of 8
//   data      the tensors' raw little-endian bytes; offsets are relative to
//             the start of this section and cover it exactly (EncodeSafetensorsHeader
//             lays the tensors out contiguously in header order)
//
// Pure functions plus one local file reader; no MPI, no HDF5.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "l2l/core/status.h"

namespace l2l::ckpt {

enum class SafetensorsDType { kF32, kBF16 };
const char* SafetensorsDTypeName(SafetensorsDType t);  // "F32", "BF16"
int SafetensorsDTypeSizeBytes(SafetensorsDType t);     // 4, 2

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

}  // namespace l2l::ckpt
