// A small JSON reader and string quoting, for the formats of the Hugging Face
// world: safetensors headers, config.json, model.safetensors.index.json,
// tokenizer files. Values keep their literal text (numbers are parsed by the
// caller with the precision it needs), objects keep document order.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "l2l/core/status.h"

namespace l2l::interop {

struct Json {
  enum class Kind { kNull, kBool, kNumber, kString, kArray, kObject } kind = Kind::kNull;
  std::string text;         // string value, the number's literal text, "true"/"false"/"null"
  std::vector<Json> items;  // arrays
  std::vector<std::pair<std::string, Json>> members;  // objects, in document order

  bool is_object() const { return kind == Kind::kObject; }
  bool is_string() const { return kind == Kind::kString; }
  bool is_number() const { return kind == Kind::kNumber; }
  bool is_bool() const { return kind == Kind::kBool; }
  bool is_null() const { return kind == Kind::kNull; }
  // The member `key` of an object, or nullptr (also for non-objects).
  const Json* Find(const std::string& key) const;
};

// Parses the whole of `text` as one JSON value (nesting at most 64 deep,
// duplicate object keys refused). InvalidArgument "<problem> at byte N" on
// bad input; callers prefix the file name.
StatusOr<Json> ParseJson(const std::string& text);

// The JSON document in the file at `path`: NotFound "<path>: cannot open",
// InvalidArgument "<path>: not valid JSON: <problem>".
StatusOr<Json> ReadJsonFile(const std::string& path);

// A non-negative integer literal (no sign, fraction or exponent), < 10^18.
bool JsonCount(const Json& v, int64_t* out);
// Any JSON number, as a finite double.
bool JsonNumber(const Json& v, double* out);

// `s` as a JSON string literal, quotes included.
std::string JsonQuote(const std::string& s);

// A value back as JSON text (numbers keep their literal text), indented by
// `indent` spaces per level; 0 = one line.
std::string JsonText(const Json& v, int indent = 0);

// Builds a JSON object from values given as JSON text, in insertion order.
class JsonObjectWriter {
 public:
  // Adds (or replaces) `key` with `json_text`, e.g. Set("n", "12"),
  // Set("s", JsonQuote("x")), Set("o", JsonText(value)).
  void Set(const std::string& key, std::string json_text);
  void SetString(const std::string& key, const std::string& s) { Set(key, JsonQuote(s)); }
  void SetInt(const std::string& key, int64_t v) { Set(key, std::to_string(v)); }
  void SetNumber(const std::string& key, double v);  // shortest text that reads back exactly
  void SetBool(const std::string& key, bool v) { Set(key, v ? "true" : "false"); }
  bool Has(const std::string& key) const;
  // The object, two-space indented, ending with a newline.
  std::string Text() const;

 private:
  std::vector<std::pair<std::string, std::string>> members_;
};

}  // namespace l2l::interop
