// The JSON reader on the inputs the Hugging Face files give it: large
// objects (a tokenizer vocabulary), duplicate keys, bad text with its offset,
// nesting, and numbers kept as their literal text.
#include "l2l/interop/json.h"

#include <gtest/gtest.h>

#include <string>

namespace l2l::interop {
namespace {

// A tokenizer.json vocabulary is an object of ~10^5 keys (Qwen2's: 151,643):
// it parses whole, in document order, and every key is found. (The suite's
// timeout also stands guard here: a per-key scan for duplicates is ~10^10
// string compares at this size.)
TEST(Json, ParsesAVocabularySizedObject) {
  constexpr int kKeys = 150000;
  std::string text = "{";
  for (int i = 0; i < kKeys; ++i) {
    text += (i ? ",\"t" : "\"t") + std::to_string(i) + "\":" + std::to_string(i);
  }
  text += "}";
  StatusOr<Json> j = ParseJson(text);
  ASSERT_TRUE(j.ok()) << j.status().message();
  ASSERT_EQ(j->members.size(), size_t{kKeys});
  EXPECT_EQ(j->members.front().first, "t0");
  EXPECT_EQ(j->members.back().first, "t" + std::to_string(kKeys - 1));
  int64_t v = -1;
  const Json* last = j->Find("t" + std::to_string(kKeys - 1));
  ASSERT_NE(last, nullptr);
  EXPECT_TRUE(JsonCount(*last, &v));
  EXPECT_EQ(v, kKeys - 1);
}

TEST(Json, RefusesADuplicateKeyAtItsOffset) {
  // Two tensors of one name in a safetensors header would make the file
  // mean two things.
  StatusOr<Json> j = ParseJson(R"({"a": 1, "b": {"a": 2}, "a": 3})");
  ASSERT_FALSE(j.ok());
  EXPECT_EQ(j.status().message(), "duplicate key 'a' at byte 30");
  // The same key in different objects is fine.
  EXPECT_TRUE(ParseJson(R"({"a": 1, "b": {"a": 2}})").ok());
}

TEST(Json, NamesTheProblemAndItsByte) {
  EXPECT_EQ(ParseJson(R"({"a": 1,})").status().message(), "expected a string at byte 8");
  EXPECT_EQ(ParseJson("[1, 2] x").status().message(), "trailing characters at byte 7");
  EXPECT_EQ(ParseJson(std::string(65, '[') + std::string(65, ']')).ok(), false);
  EXPECT_TRUE(ParseJson(std::string(64, '[') + std::string(64, ']')).ok());
}

TEST(Json, KeepsNumbersAsTheirLiteralText) {
  // rope_theta 500000.0 and 1e-05 reach the caller as written, so it parses
  // them with the precision it needs.
  StatusOr<Json> j = ParseJson(R"({"x": 1e-05, "y": 500000.0, "s": "\u00e9\n"})");
  ASSERT_TRUE(j.ok()) << j.status().message();
  EXPECT_EQ(j->Find("x")->text, "1e-05");
  EXPECT_EQ(j->Find("y")->text, "500000.0");
  EXPECT_EQ(j->Find("s")->text, "\xc3\xa9\n");
  double y = 0;
  EXPECT_TRUE(JsonNumber(*j->Find("y"), &y));
  EXPECT_EQ(y, 500000.0);
}

}  // namespace
}  // namespace l2l::interop
