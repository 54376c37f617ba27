// YAML -> Config in three passes, so that every error names where its value came from:
//   1. Flatten: the YAML tree becomes a map "section.key" -> (node, origin), rejecting
//      unknown sections/keys, duplicates and non-mapping sections.
//   2. Overrides: each "--set section.key=value" replaces or adds one entry, origin = the
//      override text.
//   3. Decode: each field is read from its entry with its type and range rule; then the
//      cross-field rules run on the finished struct.
// yaml-cpp throws; every call into it sits under the try in ParseConfig.
#include "l2l/config/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <set>
#include <system_error>
#include <tuple>

namespace l2l::config {
namespace {

// ---------------------------------------------------------------------------
// Enum spellings, indexed by the enum's value (declaration order).

constexpr const char* kModelKindNames[] = {"bert", "gpt"};
constexpr const char* kNormNames[] = {"pre", "post"};
constexpr const char* kScheduleNames[] = {"cosine", "linear", "constant"};
constexpr const char* kExecModeNames[] = {"l2l", "resident"};
constexpr const char* kDeviceNames[] = {"cpu", "cuda"};
constexpr const char* kPrecisionNames[] = {"fp32", "bf16"};
constexpr const char* kStashNames[] = {"host", "device"};

template <typename E, size_t N>
const char* EnumName(E v, const char* const (&names)[N]) {
  const auto i = static_cast<size_t>(v);
  L2L_CHECK_LT(i, N) << "enum value out of range";
  return names[i];
}

// ---------------------------------------------------------------------------
// The schema: every section and its keys, in the order ToYaml writes them.

struct Section {
  std::string_view name;
  std::vector<std::string_view> keys;
};

const std::vector<Section>& Schema() {
  static const std::vector<Section> schema = {
      {"model",
       {"kind", "layers", "hidden", "heads", "ffn", "vocab", "seq_len", "dropout", "norm"}},
      {"data", {"path", "mask_prob", "eval_fraction"}},
      {"train",
       {"steps", "seed", "lr", "warmup_steps", "schedule", "min_lr_ratio", "weight_decay", "betas",
        "eps", "grad_clip", "global_batch", "micro_batch", "eval_every_steps", "eval_batches"}},
      {"exec",
       {"mode", "device", "precision", "prefetch_depth", "stash", "device_memory_limit",
        "optimizer_threads"}},
      {"checkpoint", {"dir", "every_steps", "keep_last", "at_end"}},
      {"log", {"dir", "every_steps"}},
  };
  return schema;
}

// Keys without a default: absent -> NotFound.
constexpr std::string_view kRequiredKeys[] = {
    "model.kind",  "model.layers",       "model.hidden",     "model.heads",
    "model.ffn",   "model.vocab",        "model.seq_len",    "data.path",
    "train.steps", "train.global_batch", "train.micro_batch"};

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

// Reads fields out of the entries. Each Read* leaves *out untouched when the
// key is absent, so the struct's default stands; required keys are checked
// up front by CheckRequired.
class Decoder {
 public:
  Decoder(const Entries& entries, std::string source)
      : entries_(entries), source_(std::move(source)) {}

  Status CheckRequired() const {
    for (std::string_view key : kRequiredKeys) {
      if (entries_.find(key) == entries_.end()) {
        return NotFound(source_ + ": missing required key '" + std::string(key) + "'");
      }
    }
    return OkStatus();
  }

  bool Has(std::string_view key) const { return entries_.find(key) != entries_.end(); }

  // Where a key's value came from: the --set text if overridden, else the file.
  const std::string& Origin(std::string_view key) const {
    const auto it = entries_.find(key);
    return it == entries_.end() ? source_ : it->second.origin;
  }

  // An error about one key: "<origin>: <key>: <what>".
  Status Error(std::string_view key, const std::string& what) const {
    return InvalidArgument(Origin(key) + ": " + std::string(key) + ": " + what);
  }

  // Integers: int, int64_t or uint64_t, at least `min`, at most T's maximum.
  template <typename T>
  Status Int(std::string_view key, T min, T* out) const {
    const auto it = entries_.find(key);
    if (it == entries_.end()) return OkStatus();
    const YAML::Node& node = it->second.node;
    const std::string expected = min == 1   ? "a positive integer"
                                 : min == 0 ? "a non-negative integer"
                                            : "an integer";
    if (!node.IsScalar()) return Error(key, "expected " + expected + ", got " + Describe(node));
    const std::string& text = node.Scalar();
    T v{};
    const auto r = std::from_chars(text.data(), text.data() + text.size(), v);
    if (r.ec == std::errc::result_out_of_range) {
      return Error(
          key, "must be " +
                   (text.starts_with('-') ? ">= " + std::to_string(min)
                                          : "<= " + std::to_string(std::numeric_limits<T>::max())) +
                   ", got " + Quote(text));
    }
    if (r.ec != std::errc() || r.ptr != text.data() + text.size()) {
      return Error(key, "expected " + expected + ", got " + Quote(text));
    }
    if (v < min) return Error(key, "must be >= " + std::to_string(min) + ", got " + text);
    *out = v;
    return OkStatus();
  }

  Status Double(std::string_view key, const DoubleRange& range, double* out) const {
    const auto it = entries_.find(key);
    if (it == entries_.end()) return OkStatus();
    return CheckDouble(key, it->second.node, range, out);
  }

  // true / false (YAML 1.2 core spellings only: no yes/no/on/off).
  Status Bool(std::string_view key, bool* out) const {
    const auto it = entries_.find(key);
    if (it == entries_.end()) return OkStatus();
    const YAML::Node& node = it->second.node;
    if (node.IsScalar() && (node.Scalar() == "true" || node.Scalar() == "false")) {
      *out = node.Scalar() == "true";
      return OkStatus();
    }
    return Error(key, "expected true or false, got " + Describe(node));
  }

  // A non-empty string. Numbers are fine ("path: 123" is the path "123").
  Status String(std::string_view key, std::string* out) const {
    const auto it = entries_.find(key);
    if (it == entries_.end()) return OkStatus();
    const YAML::Node& node = it->second.node;
    if (!node.IsScalar()) return Error(key, "expected a string, got " + Describe(node));
    if (node.Scalar().empty()) return Error(key, "must not be empty");
    *out = node.Scalar();
    return OkStatus();
  }

  template <typename E, size_t N>
  Status Enum(std::string_view key, const char* const (&names)[N], E* out) const {
    const auto it = entries_.find(key);
    if (it == entries_.end()) return OkStatus();
    const YAML::Node& node = it->second.node;
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
    return Error(key, "expected one of " + allowed + ", got " + Describe(node));
  }

  // train.betas: a two-element sequence [beta1, beta2].
  Status Betas(std::string_view key, const DoubleRange& range, double* b1, double* b2) const {
    const auto it = entries_.find(key);
    if (it == entries_.end()) return OkStatus();
    const YAML::Node& node = it->second.node;
    if (!node.IsSequence() || node.size() != 2) {
      return Error(key, "expected a sequence of two numbers like [0.9, 0.999], got " +
                            (node.IsSequence() ? "a sequence of " + std::to_string(node.size())
                                               : Describe(node)));
    }
    const std::string k(key);
    RETURN_IF_ERROR(CheckDouble(k + "[0]", node[0], range, b1, Origin(key)));
    return CheckDouble(k + "[1]", node[1], range, b2, Origin(key));
  }

  // A byte size (see ParseByteSize) or "unlimited" (stored as 0).
  Status ByteSize(std::string_view key, int64_t* out) const {
    const auto it = entries_.find(key);
    if (it == entries_.end()) return OkStatus();
    const YAML::Node& node = it->second.node;
    if (!node.IsScalar()) {
      return Error(key, "expected a byte size like 2GiB or 'unlimited', got " + Describe(node));
    }
    if (node.Scalar() == "unlimited") {
      *out = 0;
      return OkStatus();
    }
    StatusOr<int64_t> bytes = ParseByteSize(node.Scalar());
    if (!bytes.ok()) return Error(key, bytes.status().message());
    *out = *bytes;
    return OkStatus();
  }

 private:
  Status CheckDouble(std::string_view key, const YAML::Node& node, const DoubleRange& range,
                     double* out, const std::string& origin_override = "") const {
    const std::string& origin = origin_override.empty() ? Origin(key) : origin_override;
    const auto fail = [&](const std::string& what) {
      return InvalidArgument(origin + ": " + std::string(key) + ": " + what);
    };
    double v = 0;
    if (!node.IsScalar() || !ParseDouble(node.Scalar(), &v)) {
      return fail("expected a number, got " + Describe(node));
    }
    if (!range.Contains(v)) return fail("must be " + range.Describe() + ", got " + node.Scalar());
    *out = v;
    return OkStatus();
  }

  const Entries& entries_;
  std::string source_;
};

Status DecodeModel(const Decoder& d, ModelConfig* m) {
  RETURN_IF_ERROR(d.Enum("model.kind", kModelKindNames, &m->kind));
  RETURN_IF_ERROR(d.Int("model.layers", 1, &m->layers));
  RETURN_IF_ERROR(d.Int("model.hidden", 1, &m->hidden));
  RETURN_IF_ERROR(d.Int("model.heads", 1, &m->heads));
  RETURN_IF_ERROR(d.Int("model.ffn", 1, &m->ffn));
  RETURN_IF_ERROR(d.Int("model.vocab", 2, &m->vocab));
  RETURN_IF_ERROR(d.Int("model.seq_len", 1, &m->seq_len));
  RETURN_IF_ERROR(d.Double("model.dropout", HalfOpen(0, 1), &m->dropout));
  m->norm = m->kind == ModelKind::kGpt ? NormPlacement::kPre : NormPlacement::kPost;
  return d.Enum("model.norm", kNormNames, &m->norm);
}

Status DecodeData(const Decoder& d, DataConfig* data) {
  RETURN_IF_ERROR(d.String("data.path", &data->path));
  RETURN_IF_ERROR(d.Double("data.mask_prob", Open(0, 1), &data->mask_prob));
  return d.Double("data.eval_fraction", HalfOpen(0, 1), &data->eval_fraction);
}

Status DecodeTrain(const Decoder& d, TrainConfig* t) {
  RETURN_IF_ERROR(d.Int<int64_t>("train.steps", 1, &t->steps));
  RETURN_IF_ERROR(d.Int<uint64_t>("train.seed", 0, &t->seed));
  RETURN_IF_ERROR(d.Double("train.lr", Above(0), &t->lr));
  RETURN_IF_ERROR(d.Int<int64_t>("train.warmup_steps", 0, &t->warmup_steps));
  RETURN_IF_ERROR(d.Enum("train.schedule", kScheduleNames, &t->schedule));
  RETURN_IF_ERROR(d.Double("train.min_lr_ratio", Closed(0, 1), &t->min_lr_ratio));
  RETURN_IF_ERROR(d.Double("train.weight_decay", AtLeast(0), &t->weight_decay));
  RETURN_IF_ERROR(d.Betas("train.betas", HalfOpen(0, 1), &t->beta1, &t->beta2));
  RETURN_IF_ERROR(d.Double("train.eps", Above(0), &t->eps));
  RETURN_IF_ERROR(d.Double("train.grad_clip", AtLeast(0), &t->grad_clip));
  RETURN_IF_ERROR(d.Int("train.global_batch", 1, &t->global_batch));
  RETURN_IF_ERROR(d.Int("train.micro_batch", 1, &t->micro_batch));
  RETURN_IF_ERROR(d.Int<int64_t>("train.eval_every_steps", 0, &t->eval_every_steps));
  return d.Int("train.eval_batches", 1, &t->eval_batches);
}

Status DecodeExec(const Decoder& d, ExecConfig* e) {
  RETURN_IF_ERROR(d.Enum("exec.mode", kExecModeNames, &e->mode));
  RETURN_IF_ERROR(d.Enum("exec.device", kDeviceNames, &e->device));
  RETURN_IF_ERROR(d.Enum("exec.precision", kPrecisionNames, &e->precision));
  RETURN_IF_ERROR(d.Int("exec.prefetch_depth", 0, &e->prefetch_depth));
  RETURN_IF_ERROR(d.Enum("exec.stash", kStashNames, &e->stash));
  RETURN_IF_ERROR(d.ByteSize("exec.device_memory_limit", &e->device_memory_limit_bytes));
  return d.Int("exec.optimizer_threads", 0, &e->optimizer_threads);
}

Status DecodeCheckpoint(const Decoder& d, CheckpointConfig* c) {
  RETURN_IF_ERROR(d.String("checkpoint.dir", &c->dir));
  RETURN_IF_ERROR(d.Int<int64_t>("checkpoint.every_steps", 0, &c->every_steps));
  RETURN_IF_ERROR(d.Int("checkpoint.keep_last", 1, &c->keep_last));
  return d.Bool("checkpoint.at_end", &c->at_end);
}

Status DecodeLog(const Decoder& d, LogConfig* l) {
  RETURN_IF_ERROR(d.String("log.dir", &l->dir));
  return d.Int<int64_t>("log.every_steps", 1, &l->every_steps);
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
  const ModelConfig& m = c.model;
  const TrainConfig& t = c.train;
  if (m.hidden % m.heads != 0) {
    return fail({"model.heads", "model.hidden"},
                "model.heads=" + std::to_string(m.heads) +
                    " does not divide model.hidden=" + std::to_string(m.hidden));
  }
  if (t.micro_batch > t.global_batch) {
    return fail({"train.micro_batch", "train.global_batch"},
                "train.micro_batch=" + std::to_string(t.micro_batch) +
                    " exceeds train.global_batch=" + std::to_string(t.global_batch));
  }
  if (t.global_batch % t.micro_batch != 0) {
    return fail({"train.global_batch", "train.micro_batch"},
                "train.global_batch=" + std::to_string(t.global_batch) +
                    " is not a multiple of train.micro_batch=" + std::to_string(t.micro_batch));
  }
  if (t.warmup_steps > t.steps) {
    return fail({"train.warmup_steps", "train.steps"},
                "train.warmup_steps=" + std::to_string(t.warmup_steps) +
                    " exceeds train.steps=" + std::to_string(t.steps));
  }
  if (t.eval_every_steps > 0 && c.data.eval_fraction == 0) {
    return fail({"train.eval_every_steps", "data.eval_fraction"},
                "train.eval_every_steps=" + std::to_string(t.eval_every_steps) +
                    " needs data.eval_fraction > 0 (no samples are held out)");
  }
  if (c.exec.precision == Precision::kBf16 && c.exec.device == DeviceKind::kCpu) {
    return fail({"exec.precision", "exec.device"},
                "exec.precision: bf16 needs exec.device: cuda (the CPU backend computes in fp32)");
  }
  return OkStatus();
}

StatusOr<Config> ParseConfigImpl(std::string_view yaml_text, const std::string& source,
                                 const std::vector<std::string>& overrides) {
  YAML::Node root;
  try {
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
  RETURN_IF_ERROR(d.CheckRequired());
  Config c;
  c.source = source;
  RETURN_IF_ERROR(DecodeModel(d, &c.model));
  RETURN_IF_ERROR(DecodeData(d, &c.data));
  RETURN_IF_ERROR(DecodeTrain(d, &c.train));
  RETURN_IF_ERROR(DecodeExec(d, &c.exec));
  RETURN_IF_ERROR(DecodeCheckpoint(d, &c.checkpoint));
  RETURN_IF_ERROR(DecodeLog(d, &c.log));
  RETURN_IF_ERROR(CheckConsistency(d, c));
  return c;
}

// ---------------------------------------------------------------------------
// ToYaml helpers.

// A double as YAML text that reads back exactly, with a decimal point so it
// reads as a number to humans too ("1.0", not "1").
std::string YamlDouble(double v) {
  std::string s = FormatDouble(v);
  if (s.find_first_of(".e") == std::string::npos) s += ".0";
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

}  // namespace

// ---------------------------------------------------------------------------
// Public API.

const char* Name(ModelKind v) { return EnumName(v, kModelKindNames); }
const char* Name(NormPlacement v) { return EnumName(v, kNormNames); }
const char* Name(Schedule v) { return EnumName(v, kScheduleNames); }
const char* Name(ExecMode v) { return EnumName(v, kExecModeNames); }
const char* Name(DeviceKind v) { return EnumName(v, kDeviceNames); }
const char* Name(Precision v) { return EnumName(v, kPrecisionNames); }
const char* Name(StashPlacement v) { return EnumName(v, kStashNames); }

bool operator==(const Config& a, const Config& b) {
  return a.model == b.model && a.data == b.data && a.train == b.train && a.exec == b.exec &&
         a.checkpoint == b.checkpoint && a.log == b.log;
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
  std::ifstream in(path, std::ios::binary);
  if (!in.is_open()) return IoError(path + ": cannot open config file (permissions?)");
  const std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  if (in.bad()) return IoError(path + ": error while reading config file");
  return ParseConfig(text, path, overrides);
}

std::string ToYaml(const Config& c) {
  YAML::Emitter out;
  out << YAML::Comment("l2l run configuration" +
                       (c.source.empty() ? std::string() : " (from " + c.source + ")"));
  out << YAML::BeginMap;

  const ModelConfig& m = c.model;
  out << YAML::Key << "model" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "kind" << YAML::Value << Name(m.kind);
  out << YAML::Key << "layers" << YAML::Value << m.layers;
  out << YAML::Key << "hidden" << YAML::Value << m.hidden;
  out << YAML::Key << "heads" << YAML::Value << m.heads;
  out << YAML::Key << "ffn" << YAML::Value << m.ffn;
  out << YAML::Key << "vocab" << YAML::Value << m.vocab;
  out << YAML::Key << "seq_len" << YAML::Value << m.seq_len;
  out << YAML::Key << "dropout" << YAML::Value << YamlDouble(m.dropout);
  out << YAML::Key << "norm" << YAML::Value << Name(m.norm);
  out << YAML::EndMap;

  const DataConfig& data = c.data;
  out << YAML::Key << "data" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "path" << YAML::Value << YAML::DoubleQuoted << data.path;
  out << YAML::Key << "mask_prob" << YAML::Value << YamlDouble(data.mask_prob);
  out << YAML::Key << "eval_fraction" << YAML::Value << YamlDouble(data.eval_fraction);
  out << YAML::EndMap;

  const TrainConfig& t = c.train;
  out << YAML::Key << "train" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "steps" << YAML::Value << t.steps;
  out << YAML::Key << "seed" << YAML::Value << std::to_string(t.seed);
  out << YAML::Key << "lr" << YAML::Value << YamlDouble(t.lr);
  out << YAML::Key << "warmup_steps" << YAML::Value << t.warmup_steps;
  out << YAML::Key << "schedule" << YAML::Value << Name(t.schedule);
  out << YAML::Key << "min_lr_ratio" << YAML::Value << YamlDouble(t.min_lr_ratio);
  out << YAML::Key << "weight_decay" << YAML::Value << YamlDouble(t.weight_decay);
  out << YAML::Key << "betas" << YAML::Value << YAML::Flow << YAML::BeginSeq << YamlDouble(t.beta1)
      << YamlDouble(t.beta2) << YAML::EndSeq;
  out << YAML::Key << "eps" << YAML::Value << YamlDouble(t.eps);
  out << YAML::Key << "grad_clip" << YAML::Value << YamlDouble(t.grad_clip);
  out << YAML::Key << "global_batch" << YAML::Value << t.global_batch;
  out << YAML::Key << "micro_batch" << YAML::Value << t.micro_batch;
  out << YAML::Key << "eval_every_steps" << YAML::Value << t.eval_every_steps;
  out << YAML::Key << "eval_batches" << YAML::Value << t.eval_batches;
  out << YAML::EndMap;

  const ExecConfig& e = c.exec;
  out << YAML::Key << "exec" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "mode" << YAML::Value << Name(e.mode);
  out << YAML::Key << "device" << YAML::Value << Name(e.device);
  out << YAML::Key << "precision" << YAML::Value << Name(e.precision);
  out << YAML::Key << "prefetch_depth" << YAML::Value << e.prefetch_depth;
  out << YAML::Key << "stash" << YAML::Value << Name(e.stash);
  out << YAML::Key << "device_memory_limit" << YAML::Value
      << YamlByteSize(e.device_memory_limit_bytes);
  out << YAML::Key << "optimizer_threads" << YAML::Value << e.optimizer_threads;
  out << YAML::EndMap;

  const CheckpointConfig& ck = c.checkpoint;
  out << YAML::Key << "checkpoint" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "dir" << YAML::Value << YAML::DoubleQuoted << ck.dir;
  out << YAML::Key << "every_steps" << YAML::Value << ck.every_steps;
  out << YAML::Key << "keep_last" << YAML::Value << ck.keep_last;
  out << YAML::Key << "at_end" << YAML::Value << ck.at_end;
  out << YAML::EndMap;

  const LogConfig& l = c.log;
  out << YAML::Key << "log" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "dir" << YAML::Value << YAML::DoubleQuoted << l.dir;
  out << YAML::Key << "every_steps" << YAML::Value << l.every_steps;
  out << YAML::EndMap;

  out << YAML::EndMap;
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
