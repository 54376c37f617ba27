// The JSON reader of json.h: recursive descent over the text, with byte
// offsets in every error.
#include "l2l/interop/json.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <unordered_set>

#include "l2l/core/fs.h"

namespace l2l::interop {
namespace {

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
  // Arrays and objects nested deeper than this are refused: recursion depth
  // is bounded by the input, and no config or header nests past a few levels.
  static constexpr int kMaxDepth = 64;

  std::string At(const std::string& what) const {
    return what + " at byte " + std::to_string(pos_);
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
    if (depth >= kMaxDepth) return At("nesting too deep");
    SkipSpace();
    if (pos_ >= s_.size()) return At("unexpected end");
    const char c = s_[pos_];
    if (c == '{') {
      ++pos_;
      out->kind = Json::Kind::kObject;
      if (Consume('}')) return "";
      // A tokenizer.json vocab has ~10^5 keys: a set, not a scan per key.
      std::unordered_set<std::string> seen;
      do {
        std::string key;
        std::string err = String(&key);
        if (!err.empty()) return err;
        if (!Consume(':')) return At("expected ':'");
        Json v;
        err = Value(&v, depth + 1);
        if (!err.empty()) return err;
        if (!seen.insert(key).second) return At("duplicate key '" + key + "'");
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

}  // namespace

const Json* Json::Find(const std::string& key) const {
  for (const auto& m : members) {
    if (m.first == key) return &m.second;
  }
  return nullptr;
}

StatusOr<Json> ParseJson(const std::string& text) {
  Json root;
  const std::string err = JsonParser(text).Parse(&root);
  if (!err.empty()) return InvalidArgument(err);
  return root;
}

bool JsonCount(const Json& v, int64_t* out) {
  if (v.kind != Json::Kind::kNumber || v.text.empty() || v.text.size() > 18) return false;
  int64_t x = 0;
  for (char c : v.text) {
    if (c < '0' || c > '9') return false;
    x = x * 10 + (c - '0');
  }
  *out = x;
  return true;
}

bool JsonNumber(const Json& v, double* out) {
  if (v.kind != Json::Kind::kNumber) return false;
  const char* end = v.text.data() + v.text.size();
  const auto r = std::from_chars(v.text.data(), end, *out);
  return r.ec == std::errc() && r.ptr == end && std::isfinite(*out);
}

std::string JsonQuote(const std::string& s) {
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

namespace {
void AppendJsonText(const Json& v, int indent, int depth, std::string* out) {
  const std::string nl = indent > 0 ? "\n" : "";
  const std::string pad(static_cast<size_t>(indent * (depth + 1)), ' ');
  const std::string close_pad(static_cast<size_t>(indent * depth), ' ');
  switch (v.kind) {
    case Json::Kind::kString:
      *out += JsonQuote(v.text);
      return;
    case Json::Kind::kArray:
      if (v.items.empty()) {
        *out += "[]";
        return;
      }
      *out += "[" + nl;
      for (size_t i = 0; i < v.items.size(); ++i) {
        *out += pad;
        AppendJsonText(v.items[i], indent, depth + 1, out);
        *out += (i + 1 < v.items.size() ? "," : "") + nl;
      }
      *out += close_pad + "]";
      return;
    case Json::Kind::kObject:
      if (v.members.empty()) {
        *out += "{}";
        return;
      }
      *out += "{" + nl;
      for (size_t i = 0; i < v.members.size(); ++i) {
        *out += pad + JsonQuote(v.members[i].first) + (indent > 0 ? ": " : ":");
        AppendJsonText(v.members[i].second, indent, depth + 1, out);
        *out += (i + 1 < v.members.size() ? "," : "") + nl;
      }
      *out += close_pad + "}";
      return;
    default:  // null, bool, number: their literal text
      *out += v.text;
  }
}
}  // namespace

std::string JsonText(const Json& v, int indent) {
  std::string out;
  AppendJsonText(v, indent, 0, &out);
  return out;
}

void JsonObjectWriter::Set(const std::string& key, std::string json_text) {
  for (auto& m : members_) {
    if (m.first == key) {
      m.second = std::move(json_text);
      return;
    }
  }
  members_.emplace_back(key, std::move(json_text));
}

void JsonObjectWriter::SetNumber(const std::string& key, double v) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  std::string text(buf, r.ptr);
  // JSON readers take "1e-05"; keep integral values looking like floats ("1.0").
  if (text.find_first_of(".eE") == std::string::npos) text += ".0";
  Set(key, text);
}

bool JsonObjectWriter::Has(const std::string& key) const {
  for (const auto& m : members_) {
    if (m.first == key) return true;
  }
  return false;
}

std::string JsonObjectWriter::Text() const {
  std::string out = "{\n";
  for (size_t i = 0; i < members_.size(); ++i) {
    std::string value = members_[i].second;
    // Re-indent a nested multi-line value by one level.
    std::string shifted;
    for (char c : value) {
      shifted += c;
      if (c == '\n') shifted += "  ";
    }
    out += "  " + JsonQuote(members_[i].first) + ": " + shifted +
           (i + 1 < members_.size() ? "," : "") + "\n";
  }
  return out + "}\n";
}

StatusOr<Json> ReadJsonFile(const std::string& path) {
  ASSIGN_OR_RETURN(const std::string text, fs::ReadFile(path));
  StatusOr<Json> j = ParseJson(text);
  if (!j.ok()) return InvalidArgument(path + ": not valid JSON: " + j.status().message());
  return j;
}

}  // namespace l2l::interop
