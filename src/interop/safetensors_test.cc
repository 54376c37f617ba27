// safetensors header encoding and the validating reader.
#include "l2l/interop/safetensors.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

namespace l2l::interop {
namespace {

std::string TempPath(const std::string& name) {
  return "/tmp/l2l_safetensors_test_" + std::to_string(::getpid()) + "_" + name;
}

void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

uint64_t LengthPrefix(const std::string& header) {
  uint64_t n = 0;
  std::memcpy(&n, header.data(), 8);
  return n;
}

TEST(Safetensors, HeaderIsPaddedJsonWithContiguousOffsets) {
  std::vector<SafetensorsTensor> t = {
      {.name = "embedding.tok_emb", .dtype = SafetensorsDType::kF32, .shape = {3, 2}},
      {.name = "head.ln.bias", .dtype = SafetensorsDType::kBF16, .shape = {5}},
      {.name = "scalar", .dtype = SafetensorsDType::kF32, .shape = {}},
  };
  const std::string h = EncodeSafetensorsHeader(&t, {{"format", "pt"}, {"l2l_step", "12"}});
  EXPECT_EQ(h.size() % 8, 0u);
  EXPECT_EQ(LengthPrefix(h), h.size() - 8);
  EXPECT_EQ(t[0].begin_bytes, 0);
  EXPECT_EQ(t[0].end_bytes, 24);
  EXPECT_EQ(t[1].begin_bytes, 24);
  EXPECT_EQ(t[1].end_bytes, 34);
  EXPECT_EQ(t[2].begin_bytes, 34);
  EXPECT_EQ(t[2].end_bytes, 38);
  const std::string json = h.substr(8);
  EXPECT_NE(json.find("\"embedding.tok_emb\":{\"dtype\":\"F32\",\"shape\":[3,2],"
                      "\"data_offsets\":[0,24]}"),
            std::string::npos)
      << json;
  EXPECT_NE(json.find("\"__metadata__\":{\"format\":\"pt\",\"l2l_step\":\"12\"}"),
            std::string::npos);
  EXPECT_EQ(json.find_last_not_of(' '), json.find_last_of('}'));
}

TEST(Safetensors, ReaderRoundTripsWhatTheEncoderWrites) {
  std::vector<SafetensorsTensor> t = {
      {.name = "a \"quoted\" name\\", .dtype = SafetensorsDType::kF32, .shape = {2, 3}},
      {.name = "b", .dtype = SafetensorsDType::kBF16, .shape = {0}},
      {.name = "c", .dtype = SafetensorsDType::kBF16, .shape = {7}},
  };
  const std::string h = EncodeSafetensorsHeader(&t, {{"format", "pt"}});
  const std::string path = TempPath("roundtrip");
  WriteBytes(path, h + std::string(static_cast<size_t>(t.back().end_bytes), 'x'));
  auto r = ReadSafetensorsHeader(path);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->tensors, t);
  EXPECT_EQ(r->data_start_bytes, static_cast<int64_t>(h.size()));
  ASSERT_EQ(r->metadata.size(), 1u);
  EXPECT_EQ(r->metadata[0].second, "pt");
  std::remove(path.c_str());
}

// Each malformed file is DataLoss naming the file and the problem.
TEST(Safetensors, ReaderRejectsMalformedFiles) {
  const std::string path = TempPath("bad");
  const auto expect_bad = [&](const std::string& bytes, const std::string& what) {
    WriteBytes(path, bytes);
    auto r = ReadSafetensorsHeader(path);
    ASSERT_FALSE(r.ok()) << what;
    EXPECT_EQ(r.status().code(), StatusCode::kDataLoss) << what;
    EXPECT_NE(r.status().message().find(path), std::string::npos) << r.status().message();
    EXPECT_NE(r.status().message().find(what), std::string::npos) << r.status().message();
  };
  const auto with_json = [](const std::string& json, size_t data_bytes) {
    std::string out(8, '\0');
    const uint64_t n = json.size();
    std::memcpy(out.data(), &n, 8);
    return out + json + std::string(data_bytes, '\0');
  };
  expect_bad("abc", "shorter than 8 bytes");
  expect_bad(with_json("{\"a\":", 0), "unexpected end");
  expect_bad(with_json("[]", 0), "not a JSON object");
  expect_bad(with_json(R"({"t":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})", 8),
             "unsupported dtype F64");
  expect_bad(with_json(R"({"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8),
             "its shape needs 12");
  expect_bad(with_json(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12),
             "starts at byte 4, expected 0");
  expect_bad(with_json(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 9),
             "the data section has 9 bytes, the header describes 8");
  std::string huge(8, '\xff');
  expect_bad(huge, "exceeds the file");
  std::remove(path.c_str());
  auto missing = ReadSafetensorsHeader(path);
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace l2l::interop
