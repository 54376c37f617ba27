// YAML -> Config in three passes, so that every error names where its value came from:
//   1. Flatten: the YAML tree becomes a map "section.key" -> (node, origin), rejecting
//      unknown sections/keys, duplicates and non-mapping sections.
//   2. Overrides: each "--set section.key=value" replaces or adds one entry, origin = the
//      override text.
//   3. Decode: each field is read from its entry with its type and range rule; then the
//      cross-field rules run on the finished struct.
// yaml-cpp throws; every call into it sits under the try in ParseConfig.
#include "l2l/config/config.h"

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <system_error>
#include <tuple>
#include <type_traits>

#include "l2l/core/byte_size.h"
#include "l2l/core/fs.h"

namespace l2l::config {
namespace {

// ---------------------------------------------------------------------------
// Enum spellings, indexed by the enum's value (declaration order).

constexpr const char* kModelKindNames[] = {"bert", "gpt", "llama"};
constexpr const char* kActivationNames[] = {"gelu", "gelu_tanh"};
constexpr const char* kInitNames[] = {"normal", "gpt2"};
constexpr const char* kRopeScalingNames[] = {"none", "llama3"};
constexpr const char* kScheduleNames[] = {"cosine", "linear", "constant"};
constexpr const char* kWeightDecayOnNames[] = {"all", "matrices"};
constexpr const char* kExecModeNames[] = {"l2l", "resident"};
constexpr const char* kDeviceNames[] = {"cpu", "cuda"};
constexpr const char* kPrecisionNames[] = {"fp32", "bf16"};
constexpr const char* kStashNames[] = {"host", "device"};
constexpr const char* kSamplingNames[] = {"windows", "examples", "packed"};
constexpr const char* kDocAttentionNames[] = {"cross", "within"};
constexpr const char* kDocPositionsNames[] = {"continue", "restart"};

template <typename E, size_t N>
const char* EnumName(E v, const char* const (&names)[N]) {
  const auto i = static_cast<size_t>(v);
  L2L_CHECK_LT(i, N) << "enum value out of range";
  return names[i];
}

// The schema (sections and their keys, in ToYaml order) is derived from the
// field table below (Fields()); FindSection / HasKey read it.
struct Section {
  std::string_view name;
  std::vector<std::string_view> keys;
};
const std::vector<Section>& Schema();

const Section* FindSection(std::string_view name) {
  for (const Section& s : Schema()) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

bool HasKey(const Section& s, std::string_view key) {
  return std::find(s.keys.begin(), s.keys.end(), key) != s.keys.end();
}

// Optimal string alignment distance: edits, where swapping two adjacent
// characters counts as one edit ("hidedn" is one away from "hidden").
size_t EditDistance(std::string_view a, std::string_view b) {
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.size()][b.size()];
}

// True when one name contains the other ("warmup" in "warmup_steps"): a
// stronger hint than a small edit distance. Names under 3 characters relate
// to nothing, so "e" does not match every key.
bool Related(std::string_view a, std::string_view b) {
  if (a.size() > b.size()) std::swap(a, b);
  return a.size() >= 3 && b.find(a) != std::string_view::npos;
}

// How close a candidate name is to what was typed; smaller is better.
// Exact > related (substring) > edit distance.
struct Closeness {
  int tier;  // 0 equal, 1 related, 2 neither
  size_t distance;
  auto operator<=>(const Closeness&) const = default;
};

Closeness Measure(std::string_view typed, std::string_view candidate) {
  const int tier = typed == candidate ? 0 : Related(typed, candidate) ? 1 : 2;
  return {tier, EditDistance(typed, candidate)};
}

// The section whose name is closest to `name` (first one on ties).
const Section& NearestSection(std::string_view name) {
  const Section* best = &Schema().front();
  for (const Section& s : Schema()) {
    if (Measure(name, s.name) < Measure(name, best->name)) best = &s;
  }
  return *best;
}

struct Suggestion {
  std::string path;  // "section.key"
  bool related;      // same or related name (not just a small edit distance)
};

// The valid "section.key" to suggest for `key`. A key of the same or a
// related name anywhere wins ("train.device" -> "exec.device",
// "train.warmup" -> "train.warmup_steps"), preferring `home` on ties;
// otherwise the key of `home` (or of any section, when home is null) with
// the smallest edit distance.
Suggestion NearestKeyPath(std::string_view key, const Section* home) {
  const Section* best_section = nullptr;
  std::string_view best_key;
  std::tuple<int, bool, size_t> best_rank{3, true, 0};
  for (const Section& s : Schema()) {
    for (std::string_view k : s.keys) {
      const Closeness c = Measure(key, k);
      if (c.tier == 2 && home != nullptr && &s != home) continue;
      const std::tuple<int, bool, size_t> rank{c.tier, &s != home, c.distance};
      if (best_section == nullptr || rank < best_rank) {
        best_section = &s, best_key = k, best_rank = rank;
      }
    }
  }
  return {std::string(best_section->name) + "." + std::string(best_key),
          std::get<0>(best_rank) < 2};
}

// For a top-level name in the file that is not a section: a key written
// without its section is suggested as section.key, else the nearest section.
std::string UnknownSectionMessage(std::string_view name) {
  const Suggestion key = NearestKeyPath(name, nullptr);
  const std::string guess = key.related ? key.path : std::string(NearestSection(name).name);
  return "unknown section '" + std::string(name) + "' (did you mean '" + guess + "'?)";
}

// For a path that is not in the schema: "a.b" (from the file or --set) or a
// bare "b" (from --set, where a key without its section is the likely slip).
std::string UnknownKeyMessage(std::string_view path) {
  const size_t dot = path.find('.');
  std::string guess;
  if (dot == std::string_view::npos) {
    guess = NearestKeyPath(path, nullptr).path;
  } else {
    const std::string_view section = path.substr(0, dot);
    const Section* home = FindSection(section);
    if (home == nullptr) home = &NearestSection(section);
    guess = NearestKeyPath(path.substr(dot + 1), home).path;
  }
  return "unknown key '" + std::string(path) + "' (did you mean '" + guess + "'?)";
}

// ---------------------------------------------------------------------------
// Formatting helpers for messages and ToYaml.

// User text quoted for a one-line message: control characters escaped, long
// text shortened.
std::string Quote(std::string_view text) {
  constexpr size_t kMaxShown = 60;
  std::string out = "'";
  for (size_t i = 0; i < text.size() && i < kMaxShown; ++i) {
    const char ch = text[i];
    if (ch == '\n') {
      out += "\\n";
    } else if (ch == '\t') {
      out += "\\t";
    } else if (static_cast<unsigned char>(ch) < 0x20) {
      out += '?';
    } else {
      out += ch;
    }
  }
  if (text.size() > kMaxShown) out += "...";
  return out + "'";
}

// What a node holds, for "expected X, got <this>".
std::string Describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Scalar:
      return Quote(node.Scalar());
    case YAML::NodeType::Sequence:
      return "a sequence";
    case YAML::NodeType::Map:
      return "a mapping";
    default:
      return "an empty value";
  }
}

// Shortest text that parses back to exactly `v`.
std::string FormatDouble(double v) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, r.ptr);
}

// Parses all of `text` as a finite double.
bool ParseDouble(std::string_view text, double* out) {
  const char* end = text.data() + text.size();
  const auto r = std::from_chars(text.data(), end, *out);
  return r.ec == std::errc() && r.ptr == end && std::isfinite(*out);
}

// ---------------------------------------------------------------------------
// Pass 1 and 2: the flat map of entries.

// One value as it arrived, and where from: the source file, or "--set a.b=c".
struct Entry {
  YAML::Node node;
  std::string origin;
};
using Entries = std::map<std::string, Entry, std::less<>>;  // "section.key" -> entry

// Flattens the parsed file into `entries`, rejecting anything not in the schema.
// An empty document or an empty (null) section is fine: it just sets nothing.
Status Flatten(const YAML::Node& root, const std::string& source, Entries* entries) {
  if (root.IsNull()) return OkStatus();
  if (!root.IsMap()) {
    return InvalidArgument(source +
                           ": expected a mapping of sections (model, data, train, ...), got " +
                           Describe(root));
  }
  std::set<std::string> seen_sections;
  for (const auto& section_it : root) {
    if (!section_it.first.IsScalar()) {
      return InvalidArgument(source + ": section names must be plain words, got " +
                             Describe(section_it.first));
    }
    const std::string name = section_it.first.Scalar();
    const Section* section = FindSection(name);
    if (section == nullptr) return InvalidArgument(source + ": " + UnknownSectionMessage(name));
    if (!seen_sections.insert(name).second) {
      return InvalidArgument(source + ": duplicate section '" + name + "'");
    }
    const YAML::Node& body = section_it.second;
    if (body.IsNull()) continue;
    if (!body.IsMap()) {
      return InvalidArgument(source + ": " + name + ": expected a mapping of keys, got " +
                             Describe(body));
    }
    for (const auto& key_it : body) {
      if (!key_it.first.IsScalar()) {
        return InvalidArgument(source + ": " + name + ": keys must be plain words, got " +
                               Describe(key_it.first));
      }
      const std::string path = name + "." + key_it.first.Scalar();
      if (!HasKey(*section, key_it.first.Scalar())) {
        return InvalidArgument(source + ": " + UnknownKeyMessage(path));
      }
      if (!entries->emplace(path, Entry{key_it.second, source}).second) {
        return InvalidArgument(source + ": duplicate key '" + path + "'");
      }
    }
  }
  return OkStatus();
}

std::string_view Trim(std::string_view s) {
  const auto space = [](char c) { return c == ' ' || c == '\t'; };
  while (!s.empty() && space(s.front())) s.remove_prefix(1);
  while (!s.empty() && space(s.back())) s.remove_suffix(1);
  return s;
}

// Applies one "section.key=value" override.
Status ApplyOverride(const std::string& text, Entries* entries) {
  // A newline or control byte would make the error below several lines or
  // raw terminal bytes; no key or value needs one.
  if (std::any_of(text.begin(), text.end(),
                  [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; })) {
    return InvalidArgument("--set " + fs::Printable(text) +
                           ": contains a control character (newline, tab, ...), expected "
                           "section.key=value on one line");
  }
  const std::string origin = "--set " + text;
  const size_t eq = text.find('=');
  if (eq == std::string::npos) {
    return InvalidArgument(origin + ": expected section.key=value (e.g. --set model.layers=12)");
  }
  const std::string path(Trim(std::string_view(text).substr(0, eq)));
  const std::string value_text(Trim(std::string_view(text).substr(eq + 1)));
  if (path.empty()) {
    return InvalidArgument(origin + ": expected section.key=value (e.g. --set model.layers=12)");
  }
  const size_t dot = path.find('.');
  if (dot == std::string::npos && FindSection(path) != nullptr) {
    return InvalidArgument(origin + ": '" + path +
                           "' is a section; set one key as section.key=value");
  }
  const Section* section = dot == std::string::npos ? nullptr : FindSection(path.substr(0, dot));
  if (section == nullptr || !HasKey(*section, std::string_view(path).substr(dot + 1))) {
    return InvalidArgument(origin + ": " + UnknownKeyMessage(path));
  }
  YAML::Node value;
  try {
    value = YAML::Load(value_text);
  } catch (const YAML::Exception& e) {
    return InvalidArgument(origin + ": invalid YAML value: " + e.msg);
  }
  (*entries)[path] = Entry{value, origin};
  return OkStatus();
}

// ---------------------------------------------------------------------------
// Pass 3: typed, range-checked reads from the entries.

// True when `s` is well-formed UTF-8 (no overlong forms, surrogates or code
// points past U+10FFFF) without control characters (C0, DEL).
bool IsPrintableUtf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      if (c < 0x20 || c == 0x7f) return false;
      ++i;
      continue;
    }
    // Continuation bytes after the lead byte: 1, 2 or 3 (-1: not a lead byte).
    const int n = c >= 0xf8 ? -1 : c >= 0xf0 ? 3 : c >= 0xe0 ? 2 : c >= 0xc0 ? 1 : -1;
    if (n < 0 || i + static_cast<size_t>(n) >= s.size()) return false;
    uint32_t cp = c & (0x3f >> n);
    for (int k = 1; k <= n; ++k) {
      const unsigned char d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3f);
    }
    static constexpr uint32_t kMinForLength[] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMinForLength[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += static_cast<size_t>(n) + 1;
  }
  return true;
}

// A closed or open interval on doubles; infinite ends are unbounded.
struct DoubleRange {
  double lo = -std::numeric_limits<double>::infinity();
  bool lo_open = false;
  double hi = std::numeric_limits<double>::infinity();
  bool hi_open = false;

  bool Contains(double v) const {
    return (lo_open ? v > lo : v >= lo) && (hi_open ? v < hi : v <= hi);
  }
  std::string Describe() const {
    if (std::isinf(hi)) return std::string(lo_open ? "> " : ">= ") + FormatDouble(lo);
    if (std::isinf(lo)) return std::string(hi_open ? "< " : "<= ") + FormatDouble(hi);
    return std::string("in ") + (lo_open ? "(" : "[") + FormatDouble(lo) + ", " + FormatDouble(hi) +
           (hi_open ? ")" : "]");
  }
};

DoubleRange AtLeast(double lo) { return {.lo = lo}; }
DoubleRange Above(double lo) { return {.lo = lo, .lo_open = true}; }
DoubleRange HalfOpen(double lo, double hi) { return {.lo = lo, .hi = hi, .hi_open = true}; }
DoubleRange Open(double lo, double hi) {
  return {.lo = lo, .lo_open = true, .hi = hi, .hi_open = true};
}
DoubleRange Closed(double lo, double hi) { return {.lo = lo, .hi = hi}; }

// Reads fields out of the entries. Each read leaves *out untouched when the
// key is absent, so the default stands; required keys are checked up front
// against the field table.
class Decoder {
 public:
  Decoder(const Entries& entries, std::string source)
      : entries_(entries), source_(std::move(source)) {}

  bool Has(std::string_view key) const { return entries_.find(key) != entries_.end(); }
  const std::string& source() const { return source_; }

  // Where a key's value came from: the --set text if overridden, else the file.
  const std::string& Origin(std::string_view key) const {
    const auto it = entries_.find(key);
    return it == entries_.end() ? source_ : it->second.origin;
  }

  // An error about one key: "<origin>: <key>: <what>".
  Status Error(std::string_view key, const std::string& what) const {
    return InvalidArgument(Origin(key) + ": " + std::string(key) + ": " + what);
  }

  // Integers: int, int64_t or uint64_t in [min, max].
  template <typename T>
  Status Int(std::string_view key, T min, T max, T* out) const {
    const YAML::Node* node = Find(key);
    if (node == nullptr) return OkStatus();
    return CheckInt(key, *node, min, max, out, Origin(key));
  }

  Status Double(std::string_view key, const DoubleRange& range, double* out) const {
    const YAML::Node* node = Find(key);
    if (node == nullptr) return OkStatus();
    return CheckDouble(key, *node, range, out, Origin(key));
  }

  // true / false (YAML 1.2 core spellings only: no yes/no/on/off).
  Status Bool(std::string_view key, bool* out) const {
    const YAML::Node* node = Find(key);
    if (node == nullptr) return OkStatus();
    if (node->IsScalar() && (node->Scalar() == "true" || node->Scalar() == "false")) {
      *out = node->Scalar() == "true";
      return OkStatus();
    }
    return Error(key, "expected true or false, got " + Describe(*node));
  }

  // A non-empty string. Numbers are fine ("path: 123" is the path "123").
  Status String(std::string_view key, std::string* out) const {
    const YAML::Node* node = Find(key);
    if (node == nullptr) return OkStatus();
    if (!node->IsScalar()) return Error(key, "expected a string, got " + Describe(*node));
    if (node->Scalar().empty()) return Error(key, "must not be empty");
    // The config is printed into checkpoints and --print-config; a control
    // byte or invalid UTF-8 would not read back as the same string.
    if (!IsPrintableUtf8(node->Scalar())) {
      return Error(key,
                   "must be printable UTF-8 text, got \"" + fs::Printable(node->Scalar()) + "\"");
    }
    *out = node->Scalar();
    return OkStatus();
  }

  template <typename E, size_t N>
  Status Enum(std::string_view key, const char* const (&names)[N], E* out) const {
    const YAML::Node* node = Find(key);
    if (node == nullptr) return OkStatus();
    return CheckEnum(key, *node, names, out, Origin(key));
  }

  // train.betas: a two-element sequence [beta1, beta2].
  Status Betas(std::string_view key, const DoubleRange& range, double* b1, double* b2) const {
    const YAML::Node* node = Find(key);
    if (node == nullptr) return OkStatus();
    if (!node->IsSequence() || node->size() != 2) {
      return Error(key, "expected a sequence of two numbers like [0.9, 0.999], got " +
                            (node->IsSequence() ? "a sequence of " + std::to_string(node->size())
                                                : Describe(*node)));
    }
    const std::string k(key);
    RETURN_IF_ERROR(CheckDouble(k + "[0]", (*node)[0], range, b1, Origin(key)));
    return CheckDouble(k + "[1]", (*node)[1], range, b2, Origin(key));
  }

  // model.rope_scaling: `none`, or a mapping with transformers' config.json
  // keys {rope_type: llama3, factor, low_freq_factor, high_freq_factor,
  // original_max_position_embeddings}; rope_type is required, the others
  // default to Llama-3.1's values.
  Status RopeScaling(std::string_view key, RopeScalingConfig* out) const {
    const YAML::Node* node = Find(key);
    if (node == nullptr) return OkStatus();
    const std::string& origin = Origin(key);
    if (node->IsScalar() && node->Scalar() == "none") {
      *out = RopeScalingConfig{};
      return OkStatus();
    }
    if (node->IsMap()) {
      const YAML::Node type = (*node)["rope_type"];
      if (type && type.IsScalar() && type.Scalar() == "none" && node->size() > 1) {
        return Error(key, "rope_type none takes no other keys (they would be dropped)");
      }
    }
    if (!node->IsMap()) {
      return Error(key, "expected none or a mapping like {rope_type: llama3, factor: 8.0}, got " +
                            Describe(*node));
    }
    RopeScalingConfig r;
    bool has_type = false;
    const std::string k(key);
    for (const auto& it : *node) {
      const std::string name = it.first.IsScalar() ? it.first.Scalar() : std::string();
      const std::string sub = k + "." + name;
      if (name == "rope_type") {
        RETURN_IF_ERROR(CheckEnum(sub, it.second, kRopeScalingNames, &r.type, origin));
        has_type = true;
      } else if (name == "factor") {
        RETURN_IF_ERROR(CheckDouble(sub, it.second, Above(0), &r.factor, origin));
      } else if (name == "low_freq_factor") {
        RETURN_IF_ERROR(CheckDouble(sub, it.second, Above(0), &r.low_freq_factor, origin));
      } else if (name == "high_freq_factor") {
        RETURN_IF_ERROR(CheckDouble(sub, it.second, Above(0), &r.high_freq_factor, origin));
      } else if (name == "original_max_position_embeddings") {
        RETURN_IF_ERROR(CheckInt(sub, it.second, 1, kMaxSize, &r.original_max_positions, origin));
      } else {
        return Error(key, "unknown key " + Quote(name) +
                              " (expected rope_type, factor, low_freq_factor, high_freq_factor, "
                              "original_max_position_embeddings)");
      }
    }
    if (!has_type) return Error(key, "missing rope_type (e.g. rope_type: llama3)");
    if (r.type == RopeScalingType::kLlama3 && !(r.high_freq_factor > r.low_freq_factor)) {
      return Error(key, "high_freq_factor (" + FormatDouble(r.high_freq_factor) +
                            ") must exceed low_freq_factor (" + FormatDouble(r.low_freq_factor) +
                            ")");
    }
    *out = r;
    return OkStatus();
  }

  // A byte size (see ParseByteSize) or "unlimited" (stored as 0).
  Status ByteSize(std::string_view key, int64_t* out) const {
    const YAML::Node* node = Find(key);
    if (node == nullptr) return OkStatus();
    if (!node->IsScalar()) {
      return Error(key, "expected a byte size like 2GiB or 'unlimited', got " + Describe(*node));
    }
    if (node->Scalar() == "unlimited") {
      *out = 0;
      return OkStatus();
    }
    StatusOr<int64_t> bytes = ParseByteSize(node->Scalar());
    if (!bytes.ok()) return Error(key, bytes.status().message());
    *out = *bytes;
    return OkStatus();
  }

  // The largest model size key (layers, widths, vocab, positions): sizes are
  // multiplied together in 64-bit arithmetic downstream.
  static constexpr int kMaxSize = 1 << 24;

 private:
  const YAML::Node* Find(std::string_view key) const {
    const auto it = entries_.find(key);
    return it == entries_.end() ? nullptr : &it->second.node;
  }

  static Status Fail(const std::string& origin, std::string_view key, const std::string& what) {
    return InvalidArgument(origin + ": " + std::string(key) + ": " + what);
  }

  template <typename T>
  static Status CheckInt(std::string_view key, const YAML::Node& node, T min, T max, T* out,
                         const std::string& origin) {
    const std::string expected = min == 1   ? "a positive integer"
                                 : min == 0 ? "a non-negative integer"
                                            : "an integer";
    if (!node.IsScalar())
      return Fail(origin, key, "expected " + expected + ", got " + Describe(node));
    const std::string& text = node.Scalar();
    T v{};
    const auto r = std::from_chars(text.data(), text.data() + text.size(), v);
    if (r.ec == std::errc::result_out_of_range) {
      return Fail(
          origin, key,
          "must be " +
              (text.starts_with('-') ? ">= " + std::to_string(min) : "<= " + std::to_string(max)) +
              ", got " + Quote(text));
    }
    if (r.ec != std::errc() || r.ptr != text.data() + text.size()) {
      return Fail(origin, key, "expected " + expected + ", got " + Quote(text));
    }
    if (v < min) return Fail(origin, key, "must be >= " + std::to_string(min) + ", got " + text);
    if (v > max) return Fail(origin, key, "must be <= " + std::to_string(max) + ", got " + text);
    *out = v;
    return OkStatus();
  }

  static Status CheckDouble(std::string_view key, const YAML::Node& node, const DoubleRange& range,
                            double* out, const std::string& origin) {
    double v = 0;
    if (!node.IsScalar() || !ParseDouble(node.Scalar(), &v)) {
      return Fail(origin, key, "expected a number, got " + Describe(node));
    }
    if (!range.Contains(v)) {
      return Fail(origin, key, "must be " + range.Describe() + ", got " + node.Scalar());
    }
    *out = v;
    return OkStatus();
  }

  template <typename E, size_t N>
  static Status CheckEnum(std::string_view key, const YAML::Node& node,
                          const char* const (&names)[N], E* out, const std::string& origin) {
    if (node.IsScalar()) {
      for (size_t i = 0; i < N; ++i) {
        if (node.Scalar() == names[i]) {
          *out = static_cast<E>(i);
          return OkStatus();
        }
      }
    }
    std::string allowed;
    for (size_t i = 0; i < N; ++i) allowed += (i ? ", " : "") + std::string(names[i]);
    return Fail(origin, key, "expected one of " + allowed + ", got " + Describe(node));
  }

  const Entries& entries_;
  std::string source_;
};

// ---------------------------------------------------------------------------
// The field table: every key once, with how it is read, defaulted and
// written. The schema, the required keys, decoding and ToYaml all come from
// it, in this order (a field's default may depend on the fields before it).

// ToYaml helpers.

// A double as YAML text that reads back exactly and is a float to every YAML
// reader: a decimal point in the mantissa ("1.0", "1.0e-08"; YAML 1.1 readers
// such as PyYAML read "1e-08" as a string).
std::string YamlDouble(double v) {
  std::string s = FormatDouble(v);
  const size_t e = s.find('e');
  const std::string mantissa = s.substr(0, e);
  if (mantissa.find('.') == std::string::npos) s.insert(mantissa.size(), ".0");
  return s;
}

// exec.device_memory_limit as written: "unlimited", an exact binary unit, or bytes.
std::string YamlByteSize(int64_t bytes) {
  if (bytes == 0) return "unlimited";
  constexpr std::pair<int64_t, const char*> kUnits[] = {{int64_t{1} << 40, "TiB"},
                                                        {int64_t{1} << 30, "GiB"},
                                                        {int64_t{1} << 20, "MiB"},
                                                        {int64_t{1} << 10, "KiB"}};
  for (const auto& [size, unit] : kUnits) {
    if (bytes % size == 0) return std::to_string(bytes / size) + unit;
  }
  return std::to_string(bytes);
}

enum class Need { kOptional, kRequired };

struct Field {
  std::string_view path;  // "section.key"
  Need need = Need::kOptional;
  // Which configs the key applies to (null: all), judged on the fields
  // decoded before it; `applies_to` names them for the error when a key is
  // given where it does not apply. ToYaml leaves such keys out.
  std::function<bool(const Config&)> applies;
  std::string_view applies_to;
  // Sets the default when the key is absent (null: the struct's initialiser).
  std::function<void(Config&)> set_default;
  // ToYaml leaves the key out when this holds (an unset optional string).
  std::function<bool(const Config&)> omit;
  std::function<Status(const Decoder&, Config&)> decode;
  std::function<void(YAML::Emitter&, const Config&)> encode;

  std::string_view section() const { return path.substr(0, path.find('.')); }
  std::string_view key() const { return path.substr(path.find('.') + 1); }
};

// Field builders. `acc` is a generic lambda returning a reference to the
// field's member for a const or non-const Config.
template <typename T, typename Acc>
Field IntField(std::string_view path, Acc acc, T min, T max = std::numeric_limits<T>::max(),
               Need need = Need::kOptional) {
  Field f;
  f.path = path;
  f.need = need;
  f.decode = [path, acc, min, max](const Decoder& d, Config& c) {
    return d.Int<T>(path, min, max, &acc(c));
  };
  f.encode = [acc](YAML::Emitter& out, const Config& c) {
    if constexpr (std::is_same_v<T, uint64_t>) {
      out << std::to_string(acc(c));  // yaml-cpp has no uint64 overload on every version
    } else {
      out << acc(c);
    }
  };
  return f;
}

template <typename Acc>
Field SizeField(std::string_view path, Acc acc, int min, Need need = Need::kOptional) {
  return IntField<int>(path, acc, min, Decoder::kMaxSize, need);
}

template <typename Acc>
Field DoubleField(std::string_view path, Acc acc, DoubleRange range) {
  Field f;
  f.path = path;
  f.decode = [path, acc, range](const Decoder& d, Config& c) {
    return d.Double(path, range, &acc(c));
  };
  f.encode = [acc](YAML::Emitter& out, const Config& c) { out << YamlDouble(acc(c)); };
  return f;
}

template <typename Acc, size_t N>
Field EnumField(std::string_view path, Acc acc, const char* const (&names)[N],
                Need need = Need::kOptional) {
  Field f;
  f.path = path;
  f.need = need;
  f.decode = [path, acc, &names](const Decoder& d, Config& c) {
    return d.Enum(path, names, &acc(c));
  };
  f.encode = [acc, &names](YAML::Emitter& out, const Config& c) { out << EnumName(acc(c), names); };
  return f;
}

template <typename Acc>
Field BoolField(std::string_view path, Acc acc) {
  Field f;
  f.path = path;
  f.decode = [path, acc](const Decoder& d, Config& c) { return d.Bool(path, &acc(c)); };
  f.encode = [acc](YAML::Emitter& out, const Config& c) { out << acc(c); };
  return f;
}

template <typename Acc>
Field StringField(std::string_view path, Acc acc, Need need = Need::kOptional) {
  Field f;
  f.path = path;
  f.need = need;
  f.decode = [path, acc](const Decoder& d, Config& c) { return d.String(path, &acc(c)); };
  f.encode = [acc](YAML::Emitter& out, const Config& c) { out << YAML::DoubleQuoted << acc(c); };
  return f;
}

// Chainable modifiers.
Field WithDefault(Field f, std::function<void(Config&)> set_default) {
  f.set_default = std::move(set_default);
  return f;
}
Field OnlyFor(Field f, std::string_view applies_to, std::function<bool(const Config&)> applies) {
  f.applies = std::move(applies);
  f.applies_to = applies_to;
  return f;
}

bool IsBert(const Config& c) { return c.model.kind == ModelKind::kBert; }
bool IsLlama(const Config& c) { return c.model.kind == ModelKind::kLlama; }
bool NotLlama(const Config& c) { return !IsLlama(c); }

const std::vector<Field>& Fields() {
  // clang-format off
#define L2L_ACC(member) [](auto& c) -> auto& { return c.member; }
  static const std::vector<Field> fields = [] {
    std::vector<Field> f;
    constexpr Need kReq = Need::kRequired;
    // model
    f.push_back(EnumField("model.kind", L2L_ACC(model.kind), kModelKindNames, kReq));
    f.push_back(SizeField("model.layers", L2L_ACC(model.layers), 1, kReq));
    f.push_back(SizeField("model.hidden", L2L_ACC(model.hidden), 1, kReq));
    f.push_back(SizeField("model.heads", L2L_ACC(model.heads), 1, kReq));
    f.push_back(OnlyFor(WithDefault(SizeField("model.kv_heads", L2L_ACC(model.kv_heads), 1),
                                    [](Config& c) { c.model.kv_heads = c.model.heads; }),
                        "kind llama", IsLlama));
    f.push_back(SizeField("model.ffn", L2L_ACC(model.ffn), 1, kReq));
    f.push_back(SizeField("model.vocab", L2L_ACC(model.vocab), 2, kReq));
    f.push_back(SizeField("model.seq_len", L2L_ACC(model.seq_len), 1, kReq));
    f.push_back(WithDefault(SizeField("model.max_positions", L2L_ACC(model.max_positions), 1),
                            [](Config& c) { c.model.max_positions = c.model.seq_len; }));
    f.push_back(OnlyFor(SizeField("model.type_vocab", L2L_ACC(model.type_vocab), 1),
                        "kind bert", IsBert));
    f.push_back(OnlyFor(
        WithDefault(IntField<int>("model.pad_token_id", L2L_ACC(model.pad_token_id), -1,
                                  Decoder::kMaxSize),
                    [](Config& c) { c.model.pad_token_id = IsBert(c) ? 0 : -1; }),
        "kinds bert and llama (GPT-2's embedding has no padding row)",
        [](const Config& c) { return c.model.kind != ModelKind::kGpt; }));
    f.push_back(WithDefault(DoubleField("model.dropout", L2L_ACC(model.dropout), HalfOpen(0, 1)),
                            [](Config& c) { c.model.dropout = IsLlama(c) ? 0.0 : 0.1; }));
    f.push_back(OnlyFor(
        WithDefault(EnumField("model.activation", L2L_ACC(model.activation), kActivationNames),
                    [](Config& c) {
                      c.model.activation = IsBert(c) ? Activation::kGelu : Activation::kGeluTanh;
                    }),
        "kinds bert and gpt (llama's MLP is SwiGLU)", NotLlama));
    f.push_back(WithDefault(DoubleField("model.norm_eps", L2L_ACC(model.norm_eps), Above(0)),
                            [](Config& c) {
                              c.model.norm_eps = IsBert(c) ? 1e-12 : IsLlama(c) ? 1e-6 : 1e-5;
                            }));
    f.push_back(WithDefault(BoolField("model.tie_embeddings", L2L_ACC(model.tie_embeddings)),
                            [](Config& c) { c.model.tie_embeddings = NotLlama(c); }));
    f.push_back(OnlyFor(BoolField("model.attention_bias", L2L_ACC(model.attention_bias)),
                        "kind llama", IsLlama));
    f.push_back(OnlyFor(DoubleField("model.rope_theta", L2L_ACC(model.rope_theta), Above(0)),
                        "kind llama", IsLlama));
    {
      Field r;
      r.path = "model.rope_scaling";
      r.decode = [](const Decoder& d, Config& c) {
        return d.RopeScaling("model.rope_scaling", &c.model.rope_scaling);
      };
      r.encode = [](YAML::Emitter& out, const Config& c) {
        const RopeScalingConfig& s = c.model.rope_scaling;
        if (s.type == RopeScalingType::kNone) {
          out << "none";
          return;
        }
        out << YAML::Flow << YAML::BeginMap;
        out << YAML::Key << "rope_type" << YAML::Value << EnumName(s.type, kRopeScalingNames);
        out << YAML::Key << "factor" << YAML::Value << YamlDouble(s.factor);
        out << YAML::Key << "low_freq_factor" << YAML::Value << YamlDouble(s.low_freq_factor);
        out << YAML::Key << "high_freq_factor" << YAML::Value << YamlDouble(s.high_freq_factor);
        out << YAML::Key << "original_max_position_embeddings" << YAML::Value
            << s.original_max_positions;
        out << YAML::EndMap;
      };
      f.push_back(OnlyFor(std::move(r), "kind llama", IsLlama));
    }
    f.push_back(WithDefault(EnumField("model.init", L2L_ACC(model.init), kInitNames),
                            [](Config& c) {
                              c.model.init = c.model.kind == ModelKind::kGpt ? InitScheme::kGpt2
                                                                            : InitScheme::kNormal;
                            }));
    f.push_back(DoubleField("model.init_std", L2L_ACC(model.init_std), Above(0)));
    // data
    f.push_back(StringField("data.path", L2L_ACC(data.path), kReq));
    f.push_back(DoubleField("data.mask_prob", L2L_ACC(data.mask_prob), Open(0, 1)));
    f.push_back(DoubleField("data.eval_fraction", L2L_ACC(data.eval_fraction), HalfOpen(0, 1)));
    {
      Field eval_path = StringField("data.eval_path", L2L_ACC(data.eval_path));
      eval_path.omit = [](const Config& c) { return c.data.eval_path.empty(); };
      f.push_back(std::move(eval_path));
    }
    f.push_back(EnumField("data.sampling", L2L_ACC(data.sampling), kSamplingNames));
    f.push_back(
        EnumField("data.doc_attention", L2L_ACC(data.doc_attention), kDocAttentionNames));
    f.push_back(
        EnumField("data.doc_positions", L2L_ACC(data.doc_positions), kDocPositionsNames));
    f.push_back(OnlyFor(IntField<int>("data.mask_token_id", L2L_ACC(data.mask_token_id), -1,
                                      Decoder::kMaxSize),
                        "kind bert (the masked-LM objective)", IsBert));
    // train
    f.push_back(IntField<int64_t>("train.steps", L2L_ACC(train.steps), 1,
                                  std::numeric_limits<int64_t>::max(), kReq));
    f.push_back(IntField<uint64_t>("train.seed", L2L_ACC(train.seed), 0));
    f.push_back(DoubleField("train.lr", L2L_ACC(train.lr), Above(0)));
    f.push_back(IntField<int64_t>("train.warmup_steps", L2L_ACC(train.warmup_steps), 0));
    f.push_back(EnumField("train.schedule", L2L_ACC(train.schedule), kScheduleNames));
    f.push_back(DoubleField("train.min_lr_ratio", L2L_ACC(train.min_lr_ratio), Closed(0, 1)));
    f.push_back(DoubleField("train.weight_decay", L2L_ACC(train.weight_decay), AtLeast(0)));
    f.push_back(EnumField("train.weight_decay_on", L2L_ACC(train.weight_decay_on),
                          kWeightDecayOnNames));
    {
      Field b;
      b.path = "train.betas";
      b.decode = [](const Decoder& d, Config& c) {
        return d.Betas("train.betas", HalfOpen(0, 1), &c.train.beta1, &c.train.beta2);
      };
      b.encode = [](YAML::Emitter& out, const Config& c) {
        out << YAML::Flow << YAML::BeginSeq << YamlDouble(c.train.beta1)
            << YamlDouble(c.train.beta2) << YAML::EndSeq;
      };
      f.push_back(std::move(b));
    }
    f.push_back(DoubleField("train.eps", L2L_ACC(train.eps), Above(0)));
    f.push_back(DoubleField("train.grad_clip", L2L_ACC(train.grad_clip), AtLeast(0)));
    f.push_back(IntField<int>("train.global_batch", L2L_ACC(train.global_batch), 1,
                              std::numeric_limits<int>::max(), kReq));
    f.push_back(IntField<int>("train.micro_batch", L2L_ACC(train.micro_batch), 1,
                              std::numeric_limits<int>::max(), kReq));
    {
      Field init = StringField("train.init_from", L2L_ACC(train.init_from));
      init.omit = [](const Config& c) { return c.train.init_from.empty(); };
      f.push_back(std::move(init));
    }
    f.push_back(IntField<int64_t>("train.eval_every_steps", L2L_ACC(train.eval_every_steps), 0));
    f.push_back(IntField<int>("train.eval_batches", L2L_ACC(train.eval_batches), 1));
    // exec
    f.push_back(EnumField("exec.mode", L2L_ACC(exec.mode), kExecModeNames));
    f.push_back(EnumField("exec.device", L2L_ACC(exec.device), kDeviceNames));
    f.push_back(EnumField("exec.precision", L2L_ACC(exec.precision), kPrecisionNames));
    f.push_back(IntField<int>("exec.prefetch_depth", L2L_ACC(exec.prefetch_depth), 0));
    f.push_back(EnumField("exec.stash", L2L_ACC(exec.stash), kStashNames));
    {
      Field m;
      m.path = "exec.device_memory_limit";
      m.decode = [](const Decoder& d, Config& c) {
        return d.ByteSize("exec.device_memory_limit", &c.exec.device_memory_limit_bytes);
      };
      m.encode = [](YAML::Emitter& out, const Config& c) {
        out << YamlByteSize(c.exec.device_memory_limit_bytes);
      };
      f.push_back(std::move(m));
    }
    // Threads are OS threads per rank: beyond a few hundred std::thread
    // creation fails (std::system_error) long before it would help.
    f.push_back(IntField<int>("exec.optimizer_threads", L2L_ACC(exec.optimizer_threads), 0, 1024));
    // checkpoint
    f.push_back(StringField("checkpoint.dir", L2L_ACC(checkpoint.dir)));
    f.push_back(IntField<int64_t>("checkpoint.every_steps", L2L_ACC(checkpoint.every_steps), 0));
    f.push_back(IntField<int>("checkpoint.keep_last", L2L_ACC(checkpoint.keep_last), 1));
    f.push_back(BoolField("checkpoint.at_end", L2L_ACC(checkpoint.at_end)));
    // log
    f.push_back(StringField("log.dir", L2L_ACC(log.dir)));
    f.push_back(IntField<int64_t>("log.every_steps", L2L_ACC(log.every_steps), 1));
    return f;
  }();
#undef L2L_ACC
  // clang-format on
  return fields;
}

const std::vector<Section>& Schema() {
  static const std::vector<Section> schema = [] {
    std::vector<Section> s;
    for (const Field& f : Fields()) {
      if (s.empty() || s.back().name != f.section()) s.push_back({f.section(), {}});
      s.back().keys.push_back(f.key());
    }
    return s;
  }();
  return schema;
}

// Rules across fields, on a config whose fields each passed their own rule.
Status CheckConsistency(const Decoder& d, const Config& c) {
  // The origin of the first overridden key among `keys`, else the file.
  const auto origin = [&](std::initializer_list<std::string_view> keys) {
    for (std::string_view k : keys) {
      if (d.Origin(k).starts_with("--set ")) return d.Origin(k);
    }
    return c.source;
  };
  const auto fail = [&](std::initializer_list<std::string_view> keys, const std::string& what) {
    return InvalidArgument(origin(keys) + ": " + what);
  };
  const auto num = [](auto v) { return std::to_string(v); };
  const ModelConfig& m = c.model;
  const TrainConfig& t = c.train;
  if (m.hidden % m.heads != 0) {
    return fail({"model.heads", "model.hidden"},
                "model.heads=" + num(m.heads) + " does not divide model.hidden=" + num(m.hidden));
  }
  if (m.heads % m.kv_heads != 0) {
    return fail({"model.kv_heads", "model.heads"},
                "model.kv_heads=" + num(m.kv_heads) +
                    " does not divide model.heads=" + num(m.heads) +
                    " (grouped-query attention shares each key/value head "
                    "among heads / kv_heads query heads)");
  }
  if (m.kind == ModelKind::kLlama && (m.hidden / m.heads) % 2 != 0) {
    return fail({"model.hidden", "model.heads"},
                "kind llama: the head dimension model.hidden / model.heads = " +
                    num(m.hidden / m.heads) + " must be even (rotary embeddings rotate pairs)");
  }
  if (m.pad_token_id >= m.vocab) {
    return fail(
        {"model.pad_token_id", "model.vocab"},
        "model.pad_token_id=" + num(m.pad_token_id) + " is not below model.vocab=" + num(m.vocab));
  }
  if (c.data.mask_token_id >= m.vocab) {
    return fail({"data.mask_token_id", "model.vocab"},
                "data.mask_token_id=" + num(c.data.mask_token_id) +
                    " is not below model.vocab=" + num(m.vocab));
  }
  if (m.max_positions < m.seq_len) {
    return fail({"model.max_positions", "model.seq_len"},
                "model.max_positions=" + num(m.max_positions) +
                    " is less than model.seq_len=" + num(m.seq_len));
  }
  if (t.micro_batch > t.global_batch) {
    return fail({"train.micro_batch", "train.global_batch"},
                "train.micro_batch=" + num(t.micro_batch) +
                    " exceeds train.global_batch=" + num(t.global_batch));
  }
  if (t.global_batch % t.micro_batch != 0) {
    return fail({"train.global_batch", "train.micro_batch"},
                "train.global_batch=" + num(t.global_batch) +
                    " is not a multiple of train.micro_batch=" + num(t.micro_batch));
  }
  // warmup_steps > steps is allowed: a short smoke run of a preset (`--set
  // train.steps=3`) warms up throughout; the trainer says so once.
  if (t.eval_every_steps > 0 && c.data.eval_fraction == 0 && c.data.eval_path.empty()) {
    return fail({"train.eval_every_steps", "data.eval_fraction"},
                "train.eval_every_steps=" + num(t.eval_every_steps) +
                    " needs data.eval_fraction > 0 or data.eval_path (no samples are held out)");
  }
  if (c.data.sampling == Sampling::kPacked && c.data.doc_attention != DocAttention::kWithin) {
    return fail({"data.sampling", "data.doc_attention"},
                "data.sampling: packed needs data.doc_attention: within (so the examples packed "
                "into a row never attend to each other)");
  }
  if (c.exec.precision == Precision::kBf16 && c.exec.device == DeviceKind::kCpu) {
    return fail({"exec.precision", "exec.device"},
                "exec.precision: bf16 needs exec.device: cuda (the CPU backend computes in fp32)");
  }
  return OkStatus();
}

// Records where the documents of a YAML stream start; ignores their content.
class DocumentStarts : public YAML::EventHandler {
 public:
  std::vector<YAML::Mark> starts;
  void OnDocumentStart(const YAML::Mark& mark) override { starts.push_back(mark); }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
};

// InvalidArgument naming where a second document starts: one after `---`
// would otherwise be dropped without a word (a config pasted twice). Parses
// at most two documents: YAML::LoadAll never returns on some malformed text
// (yaml-cpp 0.7 reads a stray ',' as endless empty documents and fills
// memory), so it is not used. Throws YAML::Exception on a syntax error.
Status CheckSingleDocument(std::string_view yaml_text, const std::string& source) {
  std::istringstream in{std::string(yaml_text)};
  YAML::Parser parser(in);
  DocumentStarts docs;
  if (!parser.HandleNextDocument(docs) || !parser.HandleNextDocument(docs)) return OkStatus();
  const YAML::Mark& at = docs.starts.back();
  const std::string where =
      source + ":" + std::to_string(at.line + 1) + ":" + std::to_string(at.column + 1) + ": ";
  // A "document" that starts where the previous one did consumed nothing:
  // text the parser cannot place (yaml-cpp's endless-documents case).
  if (docs.starts.size() == 2 && docs.starts[0].pos == at.pos) {
    return InvalidArgument(where +
                           "text outside any mapping that YAML cannot parse (a stray "
                           "',' or similar); expected one config mapping");
  }
  return InvalidArgument(where +
                         "a second YAML document starts here (after '---'); expected one config");
}

StatusOr<Config> ParseConfigImpl(std::string_view yaml_text, const std::string& source,
                                 const std::vector<std::string>& overrides) {
  YAML::Node root;
  try {
    RETURN_IF_ERROR(CheckSingleDocument(yaml_text, source));
    root = YAML::Load(std::string(yaml_text));
  } catch (const YAML::Exception& e) {
    if (e.mark.is_null()) return InvalidArgument(source + ": " + e.msg);
    return InvalidArgument(source + ":" + std::to_string(e.mark.line + 1) + ":" +
                           std::to_string(e.mark.column + 1) + ": " + e.msg);
  }
  Entries entries;
  RETURN_IF_ERROR(Flatten(root, source, &entries));
  for (const std::string& o : overrides) RETURN_IF_ERROR(ApplyOverride(o, &entries));

  const Decoder d(entries, source);
  for (const Field& f : Fields()) {
    if (f.need == Need::kRequired && !d.Has(f.path)) {
      return NotFound(source + ": missing required key '" + std::string(f.path) + "'");
    }
  }
  Config c;
  c.source = source;
  for (const Field& f : Fields()) {
    // A key that does not apply keeps its canonical default (kv_heads = heads
    // for bert), so equal configs compare equal.
    if (f.set_default) f.set_default(c);
    if (f.applies && !f.applies(c)) {
      if (d.Has(f.path)) {
        return d.Error(f.path, "applies to " + std::string(f.applies_to) + " only (model.kind is " +
                                   Name(c.model.kind) + ")");
      }
      continue;
    }
    RETURN_IF_ERROR(f.decode(d, c));
  }
  RETURN_IF_ERROR(CheckConsistency(d, c));
  return c;
}

}  // namespace

// ---------------------------------------------------------------------------
// Public API.

const char* Name(ModelKind v) { return EnumName(v, kModelKindNames); }
const char* Name(Activation v) { return EnumName(v, kActivationNames); }
const char* Name(InitScheme v) { return EnumName(v, kInitNames); }
const char* Name(RopeScalingType v) { return EnumName(v, kRopeScalingNames); }
const char* Name(Schedule v) { return EnumName(v, kScheduleNames); }
const char* Name(WeightDecayOn v) { return EnumName(v, kWeightDecayOnNames); }
const char* Name(ExecMode v) { return EnumName(v, kExecModeNames); }
const char* Name(DeviceKind v) { return EnumName(v, kDeviceNames); }
const char* Name(Precision v) { return EnumName(v, kPrecisionNames); }
const char* Name(StashPlacement v) { return EnumName(v, kStashNames); }
const char* Name(Sampling v) { return EnumName(v, kSamplingNames); }
const char* Name(DocAttention v) { return EnumName(v, kDocAttentionNames); }
const char* Name(DocPositions v) { return EnumName(v, kDocPositionsNames); }

bool operator==(const Config& a, const Config& b) {
  return a.model == b.model && a.data == b.data && a.train == b.train && a.exec == b.exec &&
         a.checkpoint == b.checkpoint && a.log == b.log;
}

std::string FirstNetworkDifference(const ModelConfig& a, const ModelConfig& b) {
  Config ca, cb;
  ca.model = a;
  cb.model = b;
  for (const Field& f : Fields()) {
    if (f.section() != "model") continue;
    const std::string_view key = f.key();
    if (key == "seq_len" || key == "dropout" || key == "init" || key == "init_std") continue;
    // llama only records max_positions (rotary embeddings have no table).
    if (key == "max_positions" && a.kind == ModelKind::kLlama && b.kind == ModelKind::kLlama) {
      continue;
    }
    const bool in_a = !f.applies || f.applies(ca), in_b = !f.applies || f.applies(cb);
    if (!in_a && !in_b) continue;
    const auto text = [&](const Config& c, bool in) {
      if (!in) return std::string("(not applicable)");
      YAML::Emitter out;
      f.encode(out, c);
      return std::string(out.c_str());
    };
    const std::string va = text(ca, in_a), vb = text(cb, in_b);
    if (va != vb) return std::string(f.path) + ": " + va + " vs " + vb;
  }
  return "";
}

void ApplyModelDefaults(ModelConfig* m) {
  Config c;
  c.model = *m;
  for (const Field& f : Fields()) {
    if (f.section() == "model" && f.set_default) f.set_default(c);
  }
  *m = c.model;
}

StatusOr<Config> ParseConfig(std::string_view yaml_text, std::string_view source_name,
                             const std::vector<std::string>& overrides) {
  const std::string source = source_name.empty() ? "<config>" : std::string(source_name);
  try {
    return ParseConfigImpl(yaml_text, source, overrides);
  } catch (const std::exception& e) {
    // Not expected: every yaml-cpp call that can fail on user input is guarded above.
    return InvalidArgument(source + ": " + e.what());
  }
}

StatusOr<Config> LoadConfig(const std::string& path, const std::vector<std::string>& overrides) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    return NotFound(path + ": config file not found");
  }
  if (std::filesystem::is_directory(path, ec)) {
    return InvalidArgument(path + ": is a directory, expected a YAML config file");
  }
  StatusOr<std::string> text = fs::ReadFile(path);
  if (!text.ok()) return IoError(text.status().message() + " (the config file)");
  return ParseConfig(*text, path, overrides);
}

std::string ToYaml(const Config& c) {
  YAML::Emitter out;
  out << YAML::Comment("l2l run configuration" +
                       (c.source.empty() ? std::string() : " (from " + c.source + ")"));
  out << YAML::BeginMap;
  std::string_view section;
  for (const Field& f : Fields()) {
    if (f.section() != section) {
      if (!section.empty()) out << YAML::EndMap;
      section = f.section();
      out << YAML::Key << std::string(section) << YAML::Value << YAML::BeginMap;
    }
    if ((f.applies && !f.applies(c)) || (f.omit && f.omit(c))) continue;
    out << YAML::Key << std::string(f.key()) << YAML::Value;
    f.encode(out, c);
  }
  out << YAML::EndMap << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

Status ValidateForWorld(const Config& c, int world_size) {
  const std::string prefix = c.source.empty() ? "" : c.source + ": ";
  if (world_size < 1) {
    return InvalidArgument(prefix + "world size must be >= 1, got " + std::to_string(world_size));
  }
  const int64_t per_step = int64_t{world_size} * c.train.micro_batch;
  if (per_step < 1 || c.train.global_batch % per_step != 0) {
    return InvalidArgument(prefix + "train.global_batch=" + std::to_string(c.train.global_batch) +
                           " is not a multiple of world size " + std::to_string(world_size) +
                           " x train.micro_batch=" + std::to_string(c.train.micro_batch) + " = " +
                           std::to_string(per_step));
  }
  return OkStatus();
}

int MicroBatchesPerRank(const Config& c, int world_size) {
  L2L_CHECK(ValidateForWorld(c, world_size).ok()) << ValidateForWorld(c, world_size).message();
  return static_cast<int>(c.train.global_batch / (int64_t{world_size} * c.train.micro_batch));
}

}  // namespace l2l::config
