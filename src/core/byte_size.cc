// Byte sizes as people write them in configs ("2GiB", "1.5GB") and as logs print them.
#include "l2l/core/byte_size.h"

#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>

namespace l2l {
namespace {

struct Unit {
  std::string_view name;
  int64_t bytes;
};

constexpr int64_t kKiB = int64_t{1} << 10;
constexpr Unit kUnits[] = {
    {"B", 1},
    {"KB", 1000},
    {"MB", 1000 * 1000},
    {"GB", 1000 * 1000 * 1000},
    {"TB", int64_t{1000} * 1000 * 1000 * 1000},
    {"PB", int64_t{1000} * 1000 * 1000 * 1000 * 1000},
    {"KiB", kKiB},
    {"MiB", kKiB* kKiB},
    {"GiB", kKiB* kKiB* kKiB},
    {"TiB", kKiB* kKiB* kKiB* kKiB},
    {"PiB", kKiB* kKiB* kKiB* kKiB* kKiB},
};

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

std::string_view TrimSpaces(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

}  // namespace

StatusOr<int64_t> ParseByteSize(std::string_view text) {
  const std::string quoted = "'" + std::string(text) + "'";
  const auto fail = [&](const std::string& why) {
    return InvalidArgument("invalid byte size " + quoted + ": " + why);
  };
  const std::string_view s = TrimSpaces(text);
  if (s.starts_with('-')) return fail("must not be negative");

  // Split "<number><spaces><unit>".
  size_t number_end = 0;
  while (number_end < s.size() &&
         (std::isdigit(static_cast<unsigned char>(s[number_end])) || s[number_end] == '.')) {
    ++number_end;
  }
  const std::string_view number = s.substr(0, number_end);
  const std::string_view unit_text = TrimSpaces(s.substr(number_end));
  if (number.empty()) return fail("expected a number with an optional unit, e.g. 512MiB or 2GiB");

  const Unit* unit = nullptr;
  if (unit_text.empty()) {
    unit = &kUnits[0];
  } else {
    for (const Unit& u : kUnits) {
      if (EqualsIgnoreCase(unit_text, u.name)) unit = &u;
    }
  }
  if (unit == nullptr) {
    return fail("unknown unit '" + std::string(unit_text) +
                "' (use B, KB, MB, GB, TB, PB, KiB, MiB, GiB, TiB or PiB)");
  }

  const char* end = number.data() + number.size();
  const std::string too_large =
      "larger than " + std::to_string(std::numeric_limits<int64_t>::max()) + " bytes";
  if (number.find('.') == std::string_view::npos) {
    // Whole numbers stay exact in integer arithmetic.
    int64_t count = 0;
    const auto r = std::from_chars(number.data(), end, count);
    if (r.ec == std::errc::result_out_of_range) return fail(too_large);
    if (r.ec != std::errc() || r.ptr != end) return fail("bad number");
    if (count > std::numeric_limits<int64_t>::max() / unit->bytes) return fail(too_large);
    return count * unit->bytes;
  }
  double count = 0;
  const auto r = std::from_chars(number.data(), end, count);
  if (r.ec != std::errc() || r.ptr != end) return fail("bad number");
  const double bytes = std::round(count * static_cast<double>(unit->bytes));
  // 2^63 is exactly representable; anything at or above it does not fit.
  if (!(bytes < 9223372036854775808.0)) return fail(too_large);
  return static_cast<int64_t>(bytes);
}

std::string FormatBytes(int64_t bytes) {
  static constexpr const char* kBinaryUnits[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  // Magnitude in double so INT64_MIN is safe.
  const double magnitude = std::fabs(static_cast<double>(bytes));
  if (magnitude < 1024) return std::to_string(bytes) + " B";
  double value = magnitude / 1024;
  size_t unit = 0;
  // 1023.995 and up would print as "1024.00": move to the next unit instead.
  while (value >= 1023.995 && unit + 1 < std::size(kBinaryUnits)) {
    value /= 1024;
    ++unit;
  }
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%s%.2f %s", bytes < 0 ? "-" : "", value, kBinaryUnits[unit]);
  return buf;
}

}  // namespace l2l
