// Byte sizes as people write them (configs: "2GiB", "1.5GB") and as logs and
// error messages print them: the one formatter of the project.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "l2l/core/status.h"

namespace l2l {

// Parses a byte count: a non-negative number with an optional unit, spaces
// allowed between them. Units (case-insensitive): B; KB MB GB TB PB (powers of
// 1000); KiB MiB GiB TiB PiB (powers of 1024). "512MiB", "2GiB", "1.5GB",
// "1000", "64 KiB", "0". A fraction rounds to the nearest byte. Errors
// (bad number, unknown unit, negative, above INT64_MAX) name the text.
StatusOr<int64_t> ParseByteSize(std::string_view text);

// Human-readable size in binary units: "12 B", "64.00 KiB", "1.50 GiB".
// Below 1 KiB prints whole bytes; otherwise two decimals of the largest unit
// that keeps the value >= 1. Not exact: for display, not for re-parsing.
std::string FormatBytes(int64_t bytes);

}  // namespace l2l
