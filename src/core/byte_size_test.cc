#include "l2l/core/byte_size.h"

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

namespace l2l {
namespace {

// The parse failed with one line containing `expected`.
::testing::AssertionResult FailsWith(const StatusOr<int64_t>& r, const std::string& expected) {
  if (r.ok()) return ::testing::AssertionFailure() << "succeeded, expected: " << expected;
  const std::string m = r.status().message();
  if (m.find('\n') != std::string::npos || m.find(expected) == std::string::npos) {
    return ::testing::AssertionFailure() << "message '" << m << "' lacks '" << expected << "'";
  }
  return ::testing::AssertionSuccess();
}

TEST(ByteSize, ParsesUnits) {
  const std::vector<std::pair<std::string, int64_t>> cases = {
      {"0", 0},
      {"1000", 1000},
      {"12B", 12},
      {"64KiB", 64 * 1024},
      {"512MiB", int64_t{512} << 20},
      {"2GiB", int64_t{2} << 30},
      {"1.5GB", 1'500'000'000},
      {"1.5 GiB", int64_t{3} << 29},
      {"3tb", 3'000'000'000'000},
      {" 7 kb ", 7000},
      {"9223372036854775807", 9223372036854775807},
  };
  for (const auto& [text, bytes] : cases) {
    StatusOr<int64_t> r = ParseByteSize(text);
    ASSERT_TRUE(r.ok()) << text << ": " << r.status().message();
    EXPECT_EQ(*r, bytes) << text;
  }
}

TEST(ByteSize, ErrorsNameTheText) {
  EXPECT_TRUE(FailsWith(ParseByteSize("12XB"), "invalid byte size '12XB': unknown unit 'XB'"));
  EXPECT_TRUE(FailsWith(ParseByteSize("-1MiB"), "invalid byte size '-1MiB': must not be negative"));
  EXPECT_TRUE(FailsWith(ParseByteSize(""), "invalid byte size ''"));
  EXPECT_TRUE(FailsWith(ParseByteSize("GiB"), "invalid byte size 'GiB'"));
  EXPECT_TRUE(FailsWith(ParseByteSize("1.2.3GB"), "invalid byte size '1.2.3GB': bad number"));
  EXPECT_TRUE(FailsWith(ParseByteSize("9000PiB"), "invalid byte size '9000PiB': larger than"));
  EXPECT_TRUE(FailsWith(ParseByteSize("9223372036854775808"), "larger than"));
  EXPECT_TRUE(FailsWith(ParseByteSize("8192.0PiB"), "larger than"));
}

TEST(ByteSize, Formats) {
  EXPECT_EQ(FormatBytes(0), "0 B");
  EXPECT_EQ(FormatBytes(12), "12 B");
  EXPECT_EQ(FormatBytes(1023), "1023 B");
  EXPECT_EQ(FormatBytes(1024), "1.00 KiB");
  EXPECT_EQ(FormatBytes(int64_t{512} << 20), "512.00 MiB");
  EXPECT_EQ(FormatBytes(int64_t{3} << 29), "1.50 GiB");
  EXPECT_EQ(FormatBytes((int64_t{1} << 20) - 1), "1.00 MiB");  // not "1024.00 KiB"
  EXPECT_EQ(FormatBytes(-(int64_t{3} << 29)), "-1.50 GiB");
}

}  // namespace
}  // namespace l2l
