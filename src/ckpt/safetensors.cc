// safetensors header encoding and a validating reader (see safetensors.h).
// The reader carries a small JSON parser: enough for any safetensors header
// (objects, arrays, strings with escapes, numbers, true/false/null).
#include "l2l/ckpt/safetensors.h"

#include <sys/stat.h>

#include <algorithm>
#include <bit>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <set>

#include "l2l/core/check.h"

namespace l2l::ckpt {
namespace {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; this code writes host order");

// Safetensors' own limit on the header (100 MB), guarding against a garbage
// length prefix.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

// ---- JSON parsing

struct Json {
  enum class Kind { kNull, kBool, kNumber, kString, kArray, kObject } kind = Kind::kNull;
  std::string text;  // string value, or the number's literal text
  std::vector<Json> items;
  std::vector<std::pair<std::string, Json>> members;  // in document order
};

class JsonParser {
 public:
  explicit JsonParser(const std::string& s) : s_(s) {}

  // Parses the whole text as one value; "" on success, else the problem.
  std::string Parse(Json* out) {
    std::string err = Value(out, 0);
    if (!err.empty()) return err;
    SkipSpace();
    if (pos_ != s_.size()) return At("trailing characters");
    return "";
  }

 private:
  static constexpr int kMaxDepth = 64;

  std::string At(const std::string& what) const {
    return what + " at byte " + std::to_string(pos_) + " of the JSON header";
  }
  void SkipSpace() {
    while (pos_ < s_.size() &&
           (s_[pos_] == ' ' || s_[pos_] == '\n' || s_[pos_] == '\r' || s_[pos_] == '\t')) {
      ++pos_;
    }
  }
  bool Consume(char c) {
    SkipSpace();
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  std::string Literal(const char* word, Json::Kind kind, Json* out) {
    const size_t n = std::strlen(word);
    if (s_.compare(pos_, n, word) != 0) return At("invalid value");
    pos_ += n;
    out->kind = kind;
    out->text = word;
    return "";
  }

  std::string String(std::string* out) {
    if (!Consume('"')) return At("expected a string");
    out->clear();
    while (pos_ < s_.size()) {
      const char c = s_[pos_++];
      if (c == '"') return "";
      if (static_cast<unsigned char>(c) < 0x20) return At("control character in a string");
      if (c != '\\') {
        *out += c;
        continue;
      }
      if (pos_ >= s_.size()) break;
      const char e = s_[pos_++];
      switch (e) {
        case '"':
          *out += '"';
          break;
        case '\\':
          *out += '\\';
          break;
        case '/':
          *out += '/';
          break;
        case 'b':
          *out += '\b';
          break;
        case 'f':
          *out += '\f';
          break;
        case 'n':
          *out += '\n';
          break;
        case 'r':
          *out += '\r';
          break;
        case 't':
          *out += '\t';
          break;
        case 'u': {
          uint32_t cp = 0;
          if (!Hex4(&cp)) return At("bad \\u escape");
          if (cp >= 0xD800 && cp < 0xDC00) {  // surrogate pair
            uint32_t lo = 0;
            if (s_.compare(pos_, 2, "\\u") != 0) return At("lone surrogate");
            pos_ += 2;
            if (!Hex4(&lo) || lo < 0xDC00 || lo >= 0xE000) return At("bad surrogate pair");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          AppendUtf8(cp, out);
          break;
        }
        default:
          return At("bad escape");
      }
    }
    return At("unterminated string");
  }
  bool Hex4(uint32_t* v) {
    if (pos_ + 4 > s_.size()) return false;
    for (int i = 0; i < 4; ++i) {
      const char c = s_[pos_++];
      *v <<= 4;
      if (c >= '0' && c <= '9')
        *v |= c - '0';
      else if (c >= 'a' && c <= 'f')
        *v |= c - 'a' + 10;
      else if (c >= 'A' && c <= 'F')
        *v |= c - 'A' + 10;
      else
        return false;
    }
    return true;
  }
  static void AppendUtf8(uint32_t cp, std::string* out) {
    if (cp < 0x80) {
      *out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      *out += static_cast<char>(0xC0 | (cp >> 6));
      *out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      *out += static_cast<char>(0xE0 | (cp >> 12));
      *out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      *out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      *out += static_cast<char>(0xF0 | (cp >> 18));
      *out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      *out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      *out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  std::string Value(Json* out, int depth) {
    if (depth > kMaxDepth) return At("nesting too deep");
    SkipSpace();
    if (pos_ >= s_.size()) return At("unexpected end");
    const char c = s_[pos_];
    if (c == '{') {
      ++pos_;
      out->kind = Json::Kind::kObject;
      if (Consume('}')) return "";
      do {
        std::string key;
        std::string err = String(&key);
        if (!err.empty()) return err;
        if (!Consume(':')) return At("expected ':'");
        Json v;
        err = Value(&v, depth + 1);
        if (!err.empty()) return err;
        for (const auto& m : out->members) {
          if (m.first == key) return At("duplicate key '" + key + "'");
        }
        out->members.emplace_back(std::move(key), std::move(v));
      } while (Consume(','));
      return Consume('}') ? "" : At("expected ',' or '}'");
    }
    if (c == '[') {
      ++pos_;
      out->kind = Json::Kind::kArray;
      if (Consume(']')) return "";
      do {
        Json v;
        std::string err = Value(&v, depth + 1);
        if (!err.empty()) return err;
        out->items.push_back(std::move(v));
      } while (Consume(','));
      return Consume(']') ? "" : At("expected ',' or ']'");
    }
    if (c == '"') {
      out->kind = Json::Kind::kString;
      return String(&out->text);
    }
    if (c == 't') return Literal("true", Json::Kind::kBool, out);
    if (c == 'f') return Literal("false", Json::Kind::kBool, out);
    if (c == 'n') return Literal("null", Json::Kind::kNull, out);
    if (c == '-' || (c >= '0' && c <= '9')) {
      const size_t start = pos_;
      while (pos_ < s_.size() && std::strchr("+-0123456789.eE", s_[pos_]) != nullptr) ++pos_;
      out->kind = Json::Kind::kNumber;
      out->text = s_.substr(start, pos_ - start);
      return "";
    }
    return At("unexpected character");
  }

  const std::string& s_;
  size_t pos_ = 0;
};

// A non-negative integer literal (no sign, fraction or exponent).
bool ParseCount(const Json& v, int64_t* out) {
  if (v.kind != Json::Kind::kNumber || v.text.empty() || v.text.size() > 18) return false;
  int64_t x = 0;
  for (char c : v.text) {
    if (c < '0' || c > '9') return false;
    x = x * 10 + (c - '0');
  }
  *out = x;
  return true;
}

const Json* Member(const Json& obj, const std::string& key) {
  for (const auto& m : obj.members) {
    if (m.first == key) return &m.second;
  }
  return nullptr;
}

}  // namespace

const char* SafetensorsDTypeName(SafetensorsDType t) {
  return t == SafetensorsDType::kF32 ? "F32" : "BF16";
}

int SafetensorsDTypeSizeBytes(SafetensorsDType t) { return t == SafetensorsDType::kF32 ? 4 : 2; }

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
    json += JsonString(t.name) + ":{\"dtype\":\"" + SafetensorsDTypeName(t.dtype) +
            "\",\"shape\":" + shape + ",\"data_offsets\":[" + std::to_string(t.begin_bytes) + "," +
            std::to_string(t.end_bytes) + "]}";
  }
  if (!metadata.empty()) {
    if (json.size() > 1) json += ",";
    json += "\"__metadata__\":{";
    for (size_t i = 0; i < metadata.size(); ++i) {
      json += (i ? "," : "") + JsonString(metadata[i].first) + ":" + JsonString(metadata[i].second);
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
  Json root;
  const std::string err = JsonParser(text).Parse(&root);
  if (!err.empty()) return bad(err);
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
    const Json* dtype = Member(v, "dtype");
    const Json* shape = Member(v, "shape");
    const Json* offsets = Member(v, "data_offsets");
    if (dtype == nullptr || shape == nullptr || offsets == nullptr) {
      return bad("tensor '" + name + "' lacks dtype, shape or data_offsets");
    }
    SafetensorsTensor t;
    t.name = name;
    if (dtype->kind == Json::Kind::kString && dtype->text == "F32") {
      t.dtype = SafetensorsDType::kF32;
    } else if (dtype->kind == Json::Kind::kString && dtype->text == "BF16") {
      t.dtype = SafetensorsDType::kBF16;
    } else {
      return bad("tensor '" + name + "' has unsupported dtype " +
                 (dtype->kind == Json::Kind::kString ? dtype->text : std::string("?")));
    }
    if (shape->kind != Json::Kind::kArray) return bad("tensor '" + name + "' shape not an array");
    int64_t elems = 1;
    for (const Json& d : shape->items) {
      int64_t dim = 0;
      if (!ParseCount(d, &dim)) return bad("tensor '" + name + "' has a bad dimension");
      t.shape.push_back(dim);
      elems *= dim;
    }
    if (offsets->kind != Json::Kind::kArray || offsets->items.size() != 2 ||
        !ParseCount(offsets->items[0], &t.begin_bytes) ||
        !ParseCount(offsets->items[1], &t.end_bytes) || t.end_bytes < t.begin_bytes) {
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

}  // namespace l2l::ckpt
