// safetensors header encoding and a validating reader (see safetensors.h).
#include "l2l/interop/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <utility>
#include <vector>

#include "l2l/core/check.h"
#include "l2l/core/dtype.h"
#include "l2l/interop/json.h"

namespace l2l::interop {
namespace {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; this code writes host order");

// Safetensors' own limit on the header (100 MB), guarding against a garbage
// length prefix.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

}  // namespace

namespace {
constexpr std::pair<SafetensorsDType, const char*> kDTypeNames[] = {
    {SafetensorsDType::kF32, "F32"},
    {SafetensorsDType::kBF16, "BF16"},
    {SafetensorsDType::kF16, "F16"},
    {SafetensorsDType::kI32, "I32"},
    {SafetensorsDType::kI64, "I64"}};
}  // namespace

const char* SafetensorsDTypeName(SafetensorsDType t) {
  for (const auto& [dt, name] : kDTypeNames) {
    if (dt == t) return name;
  }
  return "?";
}

int SafetensorsDTypeSizeBytes(SafetensorsDType t) {
  switch (t) {
    case SafetensorsDType::kF32:
    case SafetensorsDType::kI32:
      return 4;
    case SafetensorsDType::kBF16:
    case SafetensorsDType::kF16:
      return 2;
    case SafetensorsDType::kI64:
      return 8;
  }
  return 0;
}

std::string EncodeSafetensorsHeader(
    std::vector<SafetensorsTensor>* tensors,
    const std::vector<std::pair<std::string, std::string>>& metadata) {
  std::set<std::string> names;
  std::string json = "{";
  int64_t offset = 0;
  for (SafetensorsTensor& t : *tensors) {
    L2L_CHECK(names.insert(t.name).second) << "duplicate safetensors tensor " << t.name;
    L2L_CHECK(t.name != "__metadata__");
    int64_t elems = 1;
    std::string shape = "[";
    for (size_t i = 0; i < t.shape.size(); ++i) {
      L2L_CHECK_GE(t.shape[i], 0);
      elems *= t.shape[i];
      shape += (i ? "," : "") + std::to_string(t.shape[i]);
    }
    shape += "]";
    t.begin_bytes = offset;
    t.end_bytes = offset + elems * SafetensorsDTypeSizeBytes(t.dtype);
    offset = t.end_bytes;
    if (json.size() > 1) json += ",";
    json += JsonQuote(t.name) + ":{\"dtype\":\"" + SafetensorsDTypeName(t.dtype) +
            "\",\"shape\":" + shape + ",\"data_offsets\":[" + std::to_string(t.begin_bytes) + "," +
            std::to_string(t.end_bytes) + "]}";
  }
  if (!metadata.empty()) {
    if (json.size() > 1) json += ",";
    json += "\"__metadata__\":{";
    for (size_t i = 0; i < metadata.size(); ++i) {
      json += (i ? "," : "") + JsonQuote(metadata[i].first) + ":" + JsonQuote(metadata[i].second);
    }
    json += "}";
  }
  json += "}";
  while ((8 + json.size()) % 8 != 0) json += ' ';
  std::string out(8, '\0');
  const uint64_t n = json.size();
  std::memcpy(out.data(), &n, 8);  // little-endian host (static_assert above)
  return out + json;
}

StatusOr<SafetensorsHeader> ReadSafetensorsHeader(const std::string& path) {
  const auto bad = [&](const std::string& what) {
    return DataLoss(path + ": not a valid safetensors file (" + what + ")");
  };
  std::ifstream in(path, std::ios::binary);
  struct stat st;
  if (!in || ::stat(path.c_str(), &st) != 0) return NotFound(path + ": no such file");
  const int64_t file_bytes = st.st_size;
  uint64_t n = 0;
  if (!in.read(reinterpret_cast<char*>(&n), 8)) return bad("shorter than 8 bytes");
  if (n > kMaxHeaderBytes || static_cast<int64_t>(8 + n) > file_bytes) {
    return bad("header length " + std::to_string(n) + " exceeds the file");
  }
  std::string text(n, '\0');
  if (!in.read(text.data(), static_cast<std::streamsize>(n))) return bad("header unreadable");
  StatusOr<Json> parsed = ParseJson(text);
  if (!parsed.ok()) return bad(parsed.status().message() + " of the JSON header");
  const Json& root = *parsed;
  if (root.kind != Json::Kind::kObject) return bad("the header is not a JSON object");

  SafetensorsHeader h;
  h.data_start_bytes = static_cast<int64_t>(8 + n);
  for (const auto& [name, v] : root.members) {
    if (name == "__metadata__") {
      if (v.kind != Json::Kind::kObject) return bad("__metadata__ is not an object");
      for (const auto& [k, mv] : v.members) {
        if (mv.kind != Json::Kind::kString)
          return bad("__metadata__ value '" + k + "' not a string");
        h.metadata.emplace_back(k, mv.text);
      }
      continue;
    }
    if (v.kind != Json::Kind::kObject) return bad("entry '" + name + "' is not an object");
    const Json* dtype = v.Find("dtype");
    const Json* shape = v.Find("shape");
    const Json* offsets = v.Find("data_offsets");
    if (dtype == nullptr || shape == nullptr || offsets == nullptr) {
      return bad("tensor '" + name + "' lacks dtype, shape or data_offsets");
    }
    SafetensorsTensor t;
    t.name = name;
    bool known = false;
    for (const auto& [dt, dname] : kDTypeNames) {
      if (dtype->is_string() && dtype->text == dname) {
        t.dtype = dt;
        known = true;
      }
    }
    if (!known) {
      return bad("tensor '" + name + "' has unsupported dtype " +
                 (dtype->is_string() ? dtype->text : std::string("?")) +
                 " (expected F32, BF16, F16, I32 or I64)");
    }
    if (shape->kind != Json::Kind::kArray) return bad("tensor '" + name + "' shape not an array");
    int64_t elems = 1;
    for (const Json& d : shape->items) {
      int64_t dim = 0;
      if (!JsonCount(d, &dim)) return bad("tensor '" + name + "' has a bad dimension");
      if (dim > 0 && elems > file_bytes / dim) {
        return bad("tensor '" + name + "' has more elements than the file has bytes");
      }
      t.shape.push_back(dim);
      elems *= dim;
    }
    if (offsets->kind != Json::Kind::kArray || offsets->items.size() != 2 ||
        !JsonCount(offsets->items[0], &t.begin_bytes) ||
        !JsonCount(offsets->items[1], &t.end_bytes) || t.end_bytes < t.begin_bytes) {
      return bad("tensor '" + name + "' has bad data_offsets");
    }
    if (t.end_bytes - t.begin_bytes != elems * SafetensorsDTypeSizeBytes(t.dtype)) {
      return bad("tensor '" + name + "' data_offsets span " +
                 std::to_string(t.end_bytes - t.begin_bytes) + " bytes, its shape needs " +
                 std::to_string(elems * SafetensorsDTypeSizeBytes(t.dtype)));
    }
    h.tensors.push_back(std::move(t));
  }
  // The data section is covered exactly, without gaps or overlaps.
  std::vector<const SafetensorsTensor*> by_offset;
  for (const auto& t : h.tensors) by_offset.push_back(&t);
  std::stable_sort(by_offset.begin(), by_offset.end(),
                   [](const auto* a, const auto* b) { return a->begin_bytes < b->begin_bytes; });
  int64_t next = 0;
  for (const SafetensorsTensor* t : by_offset) {
    if (t->begin_bytes != next) {
      return bad("tensor '" + t->name + "' starts at byte " + std::to_string(t->begin_bytes) +
                 ", expected " + std::to_string(next));
    }
    next = t->end_bytes;
  }
  if (h.data_start_bytes + next != file_bytes) {
    return bad("the data section has " + std::to_string(file_bytes - h.data_start_bytes) +
               " bytes, the header describes " + std::to_string(next));
  }
  return h;
}

// ---- SafetensorsFile

StatusOr<SafetensorsFile> SafetensorsFile::Open(const std::string& path) {
  ASSIGN_OR_RETURN(SafetensorsHeader h, ReadSafetensorsHeader(path));
  SafetensorsFile f;
  f.fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (f.fd_ < 0) return IoError(path + ": cannot open (" + std::strerror(errno) + ")");
  f.path_ = path;
  f.header_ = std::move(h);
  return f;
}

SafetensorsFile::SafetensorsFile(SafetensorsFile&& o) noexcept
    : path_(std::move(o.path_)), header_(std::move(o.header_)), fd_(std::exchange(o.fd_, -1)) {}

SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    path_ = std::move(o.path_);
    header_ = std::move(o.header_);
    fd_ = std::exchange(o.fd_, -1);
  }
  return *this;
}

SafetensorsFile::~SafetensorsFile() {
  if (fd_ >= 0) ::close(fd_);
}

const SafetensorsTensor* SafetensorsFile::Find(const std::string& name) const {
  for (const SafetensorsTensor& t : header_.tensors) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

Status SafetensorsFile::ReadBytes(const SafetensorsTensor& t, int64_t begin, int64_t n,
                                  void* out) const {
  if (begin < 0 || n < 0 || begin + n > t.end_bytes - t.begin_bytes) {
    return InvalidArgument(path_ + ": tensor '" + t.name + "': bytes [" + std::to_string(begin) +
                           ", " + std::to_string(begin + n) + ") outside its " +
                           std::to_string(t.end_bytes - t.begin_bytes));
  }
  char* dst = static_cast<char*>(out);
  off_t at = static_cast<off_t>(header_.data_start_bytes + t.begin_bytes + begin);
  while (n > 0) {
    const ssize_t got = ::pread(fd_, dst, static_cast<size_t>(n), at);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      return IoError(path_ + ": reading tensor '" + t.name + "' failed (" +
                     (got < 0 ? std::strerror(errno) : "the file is shorter than its header") +
                     ")");
    }
    dst += got;
    at += got;
    n -= got;
  }
  return OkStatus();
}

Status SafetensorsFile::ReadF32(const SafetensorsTensor& t, int64_t begin, int64_t n,
                                float* out) const {
  const int size = SafetensorsDTypeSizeBytes(t.dtype);
  switch (t.dtype) {
    case SafetensorsDType::kF32:
      return ReadBytes(t, begin * size, n * size, out);
    case SafetensorsDType::kBF16:
    case SafetensorsDType::kF16: {
      // Convert in place from the back: the 2-byte values sit in out's first half.
      auto* half = reinterpret_cast<uint16_t*>(out);
      RETURN_IF_ERROR(ReadBytes(t, begin * size, n * size, half));
      const bool bf16 = t.dtype == SafetensorsDType::kBF16;
      for (int64_t i = n - 1; i >= 0; --i) {
        const uint16_t h = half[i];
        out[i] = bf16 ? BF16ToF32(h) : F16ToF32(h);
      }
      return OkStatus();
    }
    default:
      return InvalidArgument(path_ + ": tensor '" + t.name + "' is " +
                             SafetensorsDTypeName(t.dtype) + ", expected a float tensor");
  }
}

Status SafetensorsFile::ReadI32(const SafetensorsTensor& t, int64_t begin, int64_t n,
                                int32_t* out) const {
  if (t.dtype == SafetensorsDType::kI32) return ReadBytes(t, begin * 4, n * 4, out);
  if (t.dtype != SafetensorsDType::kI64) {
    return InvalidArgument(path_ + ": tensor '" + t.name + "' is " + SafetensorsDTypeName(t.dtype) +
                           ", expected an integer tensor");
  }
  std::vector<int64_t> wide(n);
  RETURN_IF_ERROR(ReadBytes(t, begin * 8, n * 8, wide.data()));
  for (int64_t i = 0; i < n; ++i) {
    if (wide[i] < INT32_MIN || wide[i] > INT32_MAX) {
      return InvalidArgument(path_ + ": tensor '" + t.name + "' element " +
                             std::to_string(begin + i) + " = " + std::to_string(wide[i]) +
                             " does not fit in int32");
    }
    out[i] = static_cast<int32_t>(wide[i]);
  }
  return OkStatus();
}

}  // namespace l2l::interop
