#include "l2l/data/data.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace l2l::data {
namespace {

std::string TempPath(const std::string& name) {
  return ::testing::TempDir() + "l2l_data_test_" + std::to_string(::getpid()) + "_" + name;
}

bool Exists(const std::string& path) { return std::ifstream(path).good(); }

std::vector<unsigned char> ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void WriteBytes(const std::string& path, const std::vector<unsigned char>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

// A file whose token i is i, so a row's first token names its window.
std::string WriteIotaFile(const std::string& name, int64_t n) {
  std::vector<uint32_t> tokens(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) tokens[i] = static_cast<uint32_t>(i);
  const std::string path = TempPath(name);
  EXPECT_TRUE(WriteTokenFile(path, static_cast<uint32_t>(n), tokens).ok());
  return path;
}

// ---------------------------------------------------------------- token files

TEST(TokenFile, RoundTripsUint16AndUint32) {
  struct Case {
    uint32_t vocab;
    uint32_t expect_token_bytes;
  };
  for (const Case c : {Case{65536, 2}, Case{65537, 4}, Case{256, 2}}) {
    std::vector<uint32_t> tokens;
    for (uint32_t i = 0; i < 1000; ++i) tokens.push_back((i * 7919u) % c.vocab);
    tokens.push_back(c.vocab - 1);  // the largest id survives
    const std::string path = TempPath("roundtrip_" + std::to_string(c.vocab));
    ASSERT_TRUE(WriteTokenFile(path, c.vocab, tokens).ok());
    EXPECT_FALSE(Exists(path + ".tmp"));
    StatusOr<TokenFile> f = TokenFile::Open(path);
    ASSERT_TRUE(f.ok()) << f.status().ToString();
    EXPECT_EQ(f->vocab_size(), c.vocab);
    EXPECT_EQ(f->token_bytes(), c.expect_token_bytes);
    EXPECT_EQ(f->num_tokens(), static_cast<int64_t>(tokens.size()));
    EXPECT_EQ(f->file_size_bytes(), kTokenFileHeaderBytes + tokens.size() * c.expect_token_bytes);
    EXPECT_EQ(f->path(), path);
    std::vector<uint32_t> read(tokens.size());
    ASSERT_TRUE(f->Read(0, f->num_tokens(), read.data()).ok());
    EXPECT_EQ(read, tokens);
    // Moving keeps the descriptor open; a range read starts where asked.
    TokenFile moved = std::move(f).value();
    uint32_t two[2];
    ASSERT_TRUE(moved.Read(3, 2, two).ok());
    EXPECT_EQ(two[0], tokens[3]);
    EXPECT_EQ(two[1], tokens[4]);
    std::remove(path.c_str());
  }
}

// The file is read with pread, never mapped: truncating or rewriting it after
// Open is a DataLoss naming it (a mapped read of a truncated file is SIGBUS).
TEST(TokenFile, ChangedAfterOpenIsDataLossNotACrash) {
  const std::string path = TempPath("changing");
  std::vector<uint32_t> tokens(4096);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<uint32_t>(i % 50);
  ASSERT_TRUE(WriteTokenFile(path, 50, tokens).ok());
  StatusOr<TokenFile> f = TokenFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  std::vector<uint32_t> out(100);
  ASSERT_TRUE(f->Read(4000, 96, out.data()).ok());

  ASSERT_EQ(::truncate(path.c_str(), kTokenFileHeaderBytes + 2 * 1000), 0);
  Status s = f->Read(4000, 96, out.data());
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_NE(s.message().find(path + ": changed while this run was reading it (it was 8224 bytes "
                                    "when opened, now 2032"),
            std::string::npos)
      << s.message();
  EXPECT_EQ(UnigramEntropyNats(*f).status().code(), StatusCode::kDataLoss);

  // Rewritten in place at the same size: caught by the modification time (and
  // the out-of-vocab id would be caught by the read's range check).
  ASSERT_EQ(::truncate(path.c_str(), kTokenFileHeaderBytes + 2 * tokens.size()), 0);
  StatusOr<TokenFile> g = TokenFile::Open(path);
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  std::FILE* w = std::fopen(path.c_str(), "r+b");
  ASSERT_NE(w, nullptr);
  const unsigned char bad[2] = {0xff, 0xff};
  std::fseek(w, static_cast<long>(kTokenFileHeaderBytes + 2 * 10), SEEK_SET);
  std::fwrite(bad, 1, 2, w);
  std::fclose(w);
  s = g->Read(0, 20, out.data());
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_NE(s.message().find(path + ": changed while this run was reading it"), std::string::npos)
      << s.message();
  std::remove(path.c_str());
}

TEST(TokenFile, HeaderIsLittleEndianAsDocumented) {
  const std::string path = TempPath("header");
  ASSERT_TRUE(WriteTokenFile(path, 300, {1, 299}).ok());
  const std::vector<unsigned char> b = ReadBytes(path);
  const std::vector<unsigned char> expect = {'L', '2', 'L', 'T', 'O', 'K', 0, 0,  // magic
                                             1,   0,   0,   0,                    // version
                                             2,   0,   0,   0,                    // token_bytes
                                             44,  1,   0,   0,                    // vocab 300
                                             0,   0,   0,   0,                    // reserved
                                             2,   0,   0,   0,   0,   0,   0, 0,  // num_tokens
                                             1,   0,   43,  1};                   // 1, 299
  EXPECT_EQ(b, expect);
  std::remove(path.c_str());
}

TEST(TokenFile, EmptyFileIsValid) {
  const std::string path = TempPath("empty");
  ASSERT_TRUE(WriteTokenFile(path, 10, {}).ok());
  StatusOr<TokenFile> f = TokenFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ(f->num_tokens(), 0);
  EXPECT_EQ(UnigramEntropyNats(*f).value(), 0.0);
  std::remove(path.c_str());
}

TEST(TokenFile, WriteRejectsTokenOutOfVocabAndLeavesNoFile) {
  const std::string path = TempPath("bad_write");
  Status s = WriteTokenFile(path, 10, {1, 2, 10});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("token 2 is 10"), std::string::npos) << s.message();
  EXPECT_FALSE(Exists(path));
  EXPECT_FALSE(Exists(path + ".tmp"));
}

TEST(TokenFile, WriteToMissingDirectoryIsIoError) {
  const std::string path = TempPath("no_such_dir") + "/x.tok";
  Status s = WriteTokenFile(path, 10, {1});
  EXPECT_EQ(s.code(), StatusCode::kIoError);
  EXPECT_NE(s.message().find(path), std::string::npos) << s.message();
}

TEST(TokenFile, MissingFileIsNotFound) {
  const std::string path = TempPath("missing");
  StatusOr<TokenFile> f = TokenFile::Open(path);
  EXPECT_EQ(f.status().code(), StatusCode::kNotFound);
  EXPECT_NE(f.status().message().find(path), std::string::npos);
}

TEST(TokenFile, WrongMagicIsDataLoss) {
  const std::string path = TempPath("magic");
  ASSERT_TRUE(WriteTokenFile(path, 10, {1, 2, 3}).ok());
  std::vector<unsigned char> b = ReadBytes(path);
  b[3] = 'X';
  WriteBytes(path, b);
  StatusOr<TokenFile> f = TokenFile::Open(path);
  EXPECT_EQ(f.status().code(), StatusCode::kDataLoss);
  const std::string m = f.status().message();
  EXPECT_NE(m.find(path), std::string::npos) << m;
  EXPECT_NE(m.find("magic is \"L2LXOK\\0\\0\""), std::string::npos) << m;
  std::remove(path.c_str());
}

TEST(TokenFile, DocumentIndexRoundTripsAsVersion2) {
  const std::string path = TempPath("docs");
  const std::vector<uint32_t> tokens = {5, 6, 7, 8, 9, 1, 2};
  ASSERT_TRUE(WriteTokenFile(path, 10, tokens, {0, 3, 5}).ok());
  // Header + 7 uint16 tokens + the count + three starts, nothing else.
  EXPECT_EQ(ReadBytes(path).size(), kTokenFileHeaderBytes + 7 * 2 + 8 + 3 * 8);
  StatusOr<TokenFile> f = TokenFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status().message();
  EXPECT_EQ(f->version(), kTokenFileVersionDocuments);
  EXPECT_TRUE(f->has_documents());
  EXPECT_EQ(f->document_starts(), (std::vector<int64_t>{0, 3, 5}));
  std::vector<uint32_t> back(tokens.size());
  ASSERT_TRUE(f->Read(0, 7, back.data()).ok());
  EXPECT_EQ(back, tokens);
  // Without starts the same tokens are a version-1 file, as before.
  ASSERT_TRUE(WriteTokenFile(path, 10, tokens).ok());
  f = TokenFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status().message();
  EXPECT_EQ(f->version(), kTokenFileVersion);
  EXPECT_FALSE(f->has_documents());
  EXPECT_EQ(f->num_documents(), 0);
  std::remove(path.c_str());
}

TEST(TokenFile, BadDocumentIndexIsDataLossNamingTheDocument) {
  const std::string path = TempPath("baddocs");
  ASSERT_TRUE(WriteTokenFile(path, 10, {1, 2, 3, 4}, {0, 1, 3}).ok());
  const std::vector<unsigned char> good = ReadBytes(path);
  const size_t index = kTokenFileHeaderBytes + 4 * 2 + 8;  // start[0]
  struct Case {
    size_t doc;
    unsigned char value;
    std::string want;
  };
  for (const Case& c : {Case{0, 1, "document 0 starts at token 1, expected 0"},
                        Case{2, 1, "document 2 starts at token 1, expected > 1"},
                        Case{2, 4,
                             "document 2 starts at token 4, expected > 1 (document 1) and "
                             "< num_tokens 4"}}) {
    std::vector<unsigned char> b = good;
    b[index + 8 * c.doc] = c.value;
    WriteBytes(path, b);
    StatusOr<TokenFile> f = TokenFile::Open(path);
    EXPECT_EQ(f.status().code(), StatusCode::kDataLoss);
    EXPECT_NE(f.status().message().find("document index: " + c.want), std::string::npos)
        << f.status().message();
  }
  // A cut index is a size error that counts the documents.
  std::vector<unsigned char> cut(good.begin(), good.end() - 8);
  WriteBytes(path, cut);
  StatusOr<TokenFile> f = TokenFile::Open(path);
  EXPECT_EQ(f.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(f.status().message().find("expected " + std::to_string(good.size()) +
                                      " (32-byte header + 4 tokens x 2 bytes + the document "
                                      "index of 3 documents)"),
            std::string::npos)
      << f.status().message();
  std::remove(path.c_str());
}

TEST(TokenFile, WriteRejectsBadDocumentStartsAndLeavesNoFile) {
  const std::string path = TempPath("writedocs");
  for (const std::vector<int64_t>& starts :
       {std::vector<int64_t>{1}, std::vector<int64_t>{0, 2, 2}, std::vector<int64_t>{0, 3}}) {
    const Status s = WriteTokenFile(path, 10, {1, 2, 3}, starts);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.message();
    EXPECT_FALSE(Exists(path));
    EXPECT_FALSE(Exists(path + ".tmp"));
  }
}

TEST(TokenFile, LossMaskRoundTripsAndABadByteIsDataLoss) {
  const std::string path = TempPath("lossmask");
  const std::vector<uint32_t> tokens = {1, 2, 3, 4, 5};
  ASSERT_TRUE(WriteTokenFile(path, 10, tokens, {0, 2}, {0, 1, 0, 0, 1}).ok());
  const std::vector<unsigned char> good = ReadBytes(path);
  EXPECT_EQ(good.size(), kTokenFileHeaderBytes + 5 * 2 + 8 + 2 * 8 + 5);
  EXPECT_EQ(good[kFlagsOffset], kFlagLossMask);
  StatusOr<TokenFile> f = TokenFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status().message();
  ASSERT_TRUE(f->has_loss_mask());
  std::vector<uint8_t> mask(4);
  ASSERT_TRUE(f->ReadLossMask(1, 4, mask.data()).ok());
  EXPECT_EQ(mask, (std::vector<uint8_t>{1, 0, 0, 1}));
  std::vector<unsigned char> b = good;
  b.back() = 2;
  WriteBytes(path, b);
  f = TokenFile::Open(path);
  EXPECT_EQ(f.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(f.status().message().find("loss mask: token 4's byte at offset"), std::string::npos)
      << f.status().message();
  // Unknown flags, and any flag in version 1, are refused.
  b = good;
  b[kFlagsOffset] = 3;
  WriteBytes(path, b);
  f = TokenFile::Open(path);
  EXPECT_NE(f.status().message().find("header flags are 3, expected 0 or 1"), std::string::npos)
      << f.status().message();
  ASSERT_TRUE(WriteTokenFile(path, 10, tokens).ok());
  b = ReadBytes(path);
  b[kFlagsOffset] = 1;
  WriteBytes(path, b);
  f = TokenFile::Open(path);
  EXPECT_NE(f.status().message().find("header flags are 1, expected 0 in version 1"),
            std::string::npos)
      << f.status().message();
  // A mask needs documents and one 0/1 per token.
  EXPECT_EQ(WriteTokenFile(path, 10, tokens, {}, {1, 1, 1, 1, 1}).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(WriteTokenFile(path, 10, tokens, {0}, {1, 1}).code(), StatusCode::kInvalidArgument);
  std::remove(path.c_str());
}

TEST(TokenFile, BadVersionAndTokenBytesAreDataLoss) {
  const std::string path = TempPath("version");
  ASSERT_TRUE(WriteTokenFile(path, 10, {1, 2, 3}).ok());
  const std::vector<unsigned char> good = ReadBytes(path);
  std::vector<unsigned char> b = good;
  b[kVersionOffset] = 3;
  WriteBytes(path, b);
  StatusOr<TokenFile> f = TokenFile::Open(path);
  EXPECT_EQ(f.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(f.status().message().find("version is 3, expected 1 or 2"), std::string::npos)
      << f.status().message();
  b = good;
  b[kTokenBytesOffset] = 3;
  WriteBytes(path, b);
  f = TokenFile::Open(path);
  EXPECT_EQ(f.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(f.status().message().find("token_bytes is 3"), std::string::npos)
      << f.status().message();
  std::remove(path.c_str());
}

TEST(TokenFile, TruncatedIsDataLossWithSizes) {
  const std::string path = TempPath("truncated");
  ASSERT_TRUE(WriteTokenFile(path, 10, {1, 2, 3, 4}).ok());  // 32 + 8 bytes
  std::vector<unsigned char> b = ReadBytes(path);
  b.resize(b.size() - 3);
  WriteBytes(path, b);
  StatusOr<TokenFile> f = TokenFile::Open(path);
  EXPECT_EQ(f.status().code(), StatusCode::kDataLoss);
  const std::string m = f.status().message();
  EXPECT_NE(m.find(path), std::string::npos) << m;
  EXPECT_NE(m.find("file is 37 bytes, expected 40"), std::string::npos) << m;
  // Shorter than the header.
  b.resize(10);
  WriteBytes(path, b);
  f = TokenFile::Open(path);
  EXPECT_EQ(f.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(f.status().message().find("file is 10 bytes, expected at least 32"), std::string::npos)
      << f.status().message();
  std::remove(path.c_str());
}

TEST(TokenFile, TokenOutOfVocabIsDataLossWithOffsetAndValue) {
  const std::string path = TempPath("bad_token");
  ASSERT_TRUE(WriteTokenFile(path, 10, {1, 2, 3, 4}).ok());
  std::vector<unsigned char> b = ReadBytes(path);
  b[kTokenFileHeaderBytes + 2 * 2] = 77;  // token 2 (uint16) := 77
  WriteBytes(path, b);
  StatusOr<TokenFile> f = TokenFile::Open(path);
  EXPECT_EQ(f.status().code(), StatusCode::kDataLoss);
  const std::string m = f.status().message();
  EXPECT_NE(m.find(path), std::string::npos) << m;
  EXPECT_NE(m.find("byte offset 36 is 77"), std::string::npos) << m;
  EXPECT_NE(m.find("vocab_size 10"), std::string::npos) << m;
  std::remove(path.c_str());
}

TEST(TokenFile, UnigramEntropy) {
  const std::string path = TempPath("unigram");
  ASSERT_TRUE(WriteTokenFile(path, 4, {0, 1, 2, 3, 0, 1, 2, 3}).ok());
  StatusOr<TokenFile> f = TokenFile::Open(path);
  ASSERT_TRUE(f.ok());
  EXPECT_NEAR(UnigramEntropyNats(*f).value(), std::log(4.0), 1e-12);
  std::remove(path.c_str());
}

TEST(ByteTokenize, MapsBytesIncludingMultibyteUtf8) {
  EXPECT_EQ(ByteTokenize("A\xc3\xa9"), (std::vector<uint32_t>{65, 0xc3, 0xa9}));
  EXPECT_TRUE(ByteTokenize("").empty());
}

// ------------------------------------------------------------------- sampler

class SamplerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = WriteIotaFile("iota", kTokens);
    StatusOr<TokenFile> f = TokenFile::Open(path_);
    ASSERT_TRUE(f.ok()) << f.status().ToString();
    file_ = std::make_unique<TokenFile>(std::move(f).value());
  }
  void TearDown() override { std::remove(path_.c_str()); }

  BatchSpec Spec(Objective objective) const {
    BatchSpec s;
    s.objective = objective;
    s.seq_len = kSeqLen;
    s.micro_batch = 2;
    s.global_batch = 16;
    s.mask_prob = 0.15;
    s.eval_fraction = 0.1;
    s.seed = 42;
    s.model_vocab = static_cast<int>(kTokens) + 1;
    return s;
  }
  Sampler Make(const BatchSpec& spec) const {
    StatusOr<Sampler> s = Sampler::Create(file_.get(), spec);
    L2L_CHECK(s.ok()) << s.status().ToString();
    return std::move(s).value();
  }

  static constexpr int kSeqLen = 8;
  static constexpr int64_t kTokens = 1001;  // 125 windows of 8 (+1)
  std::string path_;
  std::unique_ptr<TokenFile> file_;
};

// A row's full content, to compare rows across world sizes.
struct Row {
  std::vector<int32_t> tokens, targets;
  bool operator==(const Row&) const = default;
};

std::map<uint64_t, Row> RowsOfStep(const Sampler& s, int64_t step, int world_size, bool eval) {
  std::map<uint64_t, Row> rows;
  const int n_micro = s.MicroBatchesPerStep(world_size);
  for (int r = 0; r < world_size; ++r) {
    for (int m = 0; m < n_micro; ++m) {
      const MicroBatch mb = eval ? s.EvalMicroBatch(step, r, world_size, m).value()
                                 : s.TrainMicroBatch(step, r, world_size, m).value();
      for (int j = 0; j < mb.rows; ++j) {
        Row row;
        row.tokens.assign(mb.tokens.begin() + j * mb.seq_len,
                          mb.tokens.begin() + (j + 1) * mb.seq_len);
        row.targets.assign(mb.targets.begin() + j * mb.seq_len,
                           mb.targets.begin() + (j + 1) * mb.seq_len);
        EXPECT_TRUE(rows.emplace(mb.sample_keys[j], row).second)
            << "duplicate key " << mb.sample_keys[j];
      }
    }
  }
  return rows;
}

TEST_F(SamplerTest, SplitCounts) {
  Sampler s = Make(Spec(Objective::kCausal));
  // (1001 - 1) / 8 = 125 samples; ceil(0.1 * 125) = 13 eval.
  EXPECT_EQ(s.num_eval_samples(), 13);
  EXPECT_EQ(s.num_train_samples(), 112);
  EXPECT_EQ(s.num_eval_batches(), 1);
  BatchSpec spec = Spec(Objective::kCausal);
  spec.eval_fraction = 0.001;  // rounds up to one eval sample
  EXPECT_EQ(Make(spec).num_eval_samples(), 1);
  spec.eval_fraction = 0;
  EXPECT_EQ(Make(spec).num_eval_samples(), 0);
  EXPECT_EQ(Make(spec).num_train_samples(), 125);
}

TEST_F(SamplerTest, CausalTargetsAreInputsShiftedByOne) {
  Sampler s = Make(Spec(Objective::kCausal));
  const MicroBatch mb = s.TrainMicroBatch(3, 1, 2, 2).value();
  ASSERT_EQ(mb.rows, 2);
  ASSERT_EQ(mb.seq_len, kSeqLen);
  EXPECT_EQ(mb.num_targets, 2 * kSeqLen);
  for (int j = 0; j < mb.rows; ++j) {
    const int32_t* t = &mb.tokens[j * kSeqLen];
    const int32_t* y = &mb.targets[j * kSeqLen];
    EXPECT_EQ(t[0] % kSeqLen, 0) << "windows start at multiples of seq_len";
    for (int i = 0; i < kSeqLen; ++i) {
      EXPECT_EQ(t[i], t[0] + i);
      EXPECT_EQ(y[i], t[i] + 1);
      EXPECT_EQ(mb.token_types[j * kSeqLen + i], 0);
      EXPECT_EQ(mb.attn_mask[j * kSeqLen + i], 1);
    }
    // Row j of micro 2 on rank 1 of 2: k = (2*2 + 1)*2 + j.
    EXPECT_EQ(mb.sample_keys[j], 3u * 16u + 10u + j);
    EXPECT_EQ(t[0] / kSeqLen, s.TrainSampleIndex(3 * 16 + 10 + j));
  }
}

TEST_F(SamplerTest, WorldSizesCoverTheSameGlobalBatch) {
  for (Objective obj : {Objective::kCausal, Objective::kMlm}) {
    Sampler s = Make(Spec(obj));
    for (int64_t step : {0, 1, 6, 7, 20}) {  // steps 6-7 cross the first epoch boundary (112)
      const std::map<uint64_t, Row> w1 = RowsOfStep(s, step, 1, false);
      ASSERT_EQ(w1.size(), 16u);
      EXPECT_EQ(w1.begin()->first, static_cast<uint64_t>(step * 16));
      EXPECT_EQ(w1.rbegin()->first, static_cast<uint64_t>(step * 16 + 15));
      for (int world : {2, 4, 8}) {
        EXPECT_EQ(RowsOfStep(s, step, world, false), w1)
            << ObjectiveName(obj) << " step " << step << " world " << world;
      }
    }
  }
}

TEST_F(SamplerTest, IsDeterministicAndSeedDependent) {
  BatchSpec spec = Spec(Objective::kMlm);
  Sampler a = Make(spec), b = Make(spec);
  spec.seed = 43;
  Sampler c = Make(spec);
  bool differs = false;
  for (int64_t step = 0; step < 10; ++step) {
    const MicroBatch x = a.TrainMicroBatch(step, 0, 1, 1).value();
    const MicroBatch y = b.TrainMicroBatch(step, 0, 1, 1).value();
    EXPECT_EQ(x.tokens, y.tokens);
    EXPECT_EQ(x.targets, y.targets);
    EXPECT_EQ(x.sample_keys, y.sample_keys);
    differs |= c.TrainMicroBatch(step, 0, 1, 1).value().tokens != x.tokens;
  }
  EXPECT_TRUE(differs) << "seed has no effect";
}

TEST_F(SamplerTest, EachEpochVisitsEveryTrainSampleOnce) {
  Sampler s = Make(Spec(Objective::kCausal));
  const int64_t n = s.num_train_samples();
  std::vector<int64_t> epoch0, epoch1;
  for (int64_t p = 0; p < n; ++p) epoch0.push_back(s.TrainSampleIndex(p));
  for (int64_t p = n; p < 2 * n; ++p) epoch1.push_back(s.TrainSampleIndex(p));
  EXPECT_NE(epoch0, epoch1) << "epochs are shuffled differently";
  std::sort(epoch0.begin(), epoch0.end());
  std::sort(epoch1.begin(), epoch1.end());
  for (int64_t i = 0; i < n; ++i) {
    EXPECT_EQ(epoch0[i], i);
    EXPECT_EQ(epoch1[i], i);
  }
  EXPECT_EQ(EpochPermutation(42, 0, n)[5], s.TrainSampleIndex(5));
}

TEST_F(SamplerTest, EvalSplitIsDisjointFromTrainAndDeterministic) {
  Sampler s = Make(Spec(Objective::kCausal));
  std::set<int64_t> train, eval;
  const int64_t steps = 2 * s.num_train_samples() / 16 + 1;  // two epochs and a bit
  for (int64_t step = 0; step < steps; ++step) {
    for (const auto& [key, row] : RowsOfStep(s, step, 2, false)) train.insert(row.tokens[0] / 8);
  }
  for (int64_t b = 0; b < 3; ++b) {
    const std::map<uint64_t, Row> rows = RowsOfStep(s, b, 2, true);
    EXPECT_EQ(rows, RowsOfStep(s, b, 4, true)) << "eval batch " << b << " depends on world size";
    for (const auto& [key, row] : rows) eval.insert(row.tokens[0] / 8);
  }
  EXPECT_EQ(static_cast<int64_t>(train.size()), s.num_train_samples());
  EXPECT_EQ(static_cast<int64_t>(eval.size()), s.num_eval_samples());
  EXPECT_EQ(*train.rbegin(), s.num_train_samples() - 1);
  EXPECT_EQ(*eval.begin(), s.num_train_samples()) << "eval is the last samples";
  EXPECT_EQ(*eval.rbegin(), 124);
  // Wrap-around: eval position p reads eval sample p % n_eval.
  EXPECT_EQ(s.EvalSampleIndex(13), s.EvalSampleIndex(0));
}

TEST_F(SamplerTest, MlmMaskingFollows80_10_10AndMaskProb) {
  // A bigger corpus with a small vocab, so random replacements are visible.
  std::vector<uint32_t> tokens(400001);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<uint32_t>((i * 31) % 1000);
  const std::string path = TempPath("mlm");
  ASSERT_TRUE(WriteTokenFile(path, 1000, tokens).ok());
  StatusOr<TokenFile> f = TokenFile::Open(path);
  ASSERT_TRUE(f.ok());
  BatchSpec spec = Spec(Objective::kMlm);
  spec.seq_len = 128;
  spec.micro_batch = 16;
  spec.global_batch = 64;
  spec.model_vocab = 1001;
  StatusOr<Sampler> s = Sampler::Create(&*f, spec);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  ASSERT_EQ(s->mask_token(), 1000);

  int64_t positions = 0, selected = 0, masked = 0, kept = 0, replaced = 0;
  for (int64_t step = 0; step < 40; ++step) {
    for (int m = 0; m < 4; ++m) {
      const MicroBatch mb = s->TrainMicroBatch(step, 0, 1, m).value();
      int64_t count = 0;
      for (size_t i = 0; i < mb.tokens.size(); ++i) {
        ++positions;
        if (mb.targets[i] == kNoTarget) continue;
        ++count;
        ++selected;
        ASSERT_GE(mb.targets[i], 0);
        ASSERT_LT(mb.targets[i], 1000);
        if (mb.tokens[i] == 1000) {
          ++masked;
        } else if (mb.tokens[i] == mb.targets[i]) {
          ++kept;
        } else {
          ++replaced;
          ASSERT_LT(mb.tokens[i], 1000) << "random replacement is a data token";
        }
      }
      EXPECT_EQ(count, mb.num_targets);
    }
  }
  // ~163840 positions, ~24576 selected: 5 sigma is about 0.0045 for 0.15 and
  // 0.013 / 0.0096 for the 0.8 / 0.1 shares.
  const double sel = static_cast<double>(selected);
  EXPECT_NEAR(sel / positions, 0.15, 0.005);
  EXPECT_NEAR(masked / sel, 0.8, 0.013);
  // A random token equals the original with probability 1/1000.
  EXPECT_NEAR(kept / sel, 0.1 + 0.1 / 1000, 0.01);
  EXPECT_NEAR(replaced / sel, 0.1 * 999 / 1000, 0.01);
  std::remove(path.c_str());
}

TEST_F(SamplerTest, MlmHasAtLeastOneTargetPerRow) {
  BatchSpec spec = Spec(Objective::kMlm);
  spec.mask_prob = 0;
  Sampler s = Make(spec);
  std::set<int> chosen_positions;
  for (int64_t step = 0; step < 8; ++step) {
    const MicroBatch mb = s.TrainMicroBatch(step, 0, 1, 0).value();
    EXPECT_EQ(mb.num_targets, mb.rows);
    for (int j = 0; j < mb.rows; ++j) {
      int n = 0;
      for (int t = 0; t < kSeqLen; ++t) {
        if (mb.targets[j * kSeqLen + t] != kNoTarget) {
          ++n;
          chosen_positions.insert(t);
        }
      }
      EXPECT_EQ(n, 1) << "step " << step << " row " << j;
    }
  }
  EXPECT_GT(chosen_positions.size(), 1u) << "the fallback position should vary by row";
}

TEST_F(SamplerTest, VocabCheckNamesFileAndBothVocabs) {
  BatchSpec spec = Spec(Objective::kMlm);
  spec.model_vocab = static_cast<int>(kTokens);  // no room for the mask token
  StatusOr<Sampler> s = Sampler::Create(file_.get(), spec);
  EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
  const std::string m = s.status().message();
  EXPECT_NE(m.find(path_), std::string::npos) << m;
  EXPECT_NE(m.find("vocab_size 1001"), std::string::npos) << m;
  EXPECT_NE(m.find("model.vocab is 1001"), std::string::npos) << m;
  spec.objective = Objective::kCausal;  // causal needs no extra id
  EXPECT_TRUE(Sampler::Create(file_.get(), spec).ok());
  spec.model_vocab = static_cast<int>(kTokens) - 1;
  EXPECT_EQ(Sampler::Create(file_.get(), spec).status().code(), StatusCode::kInvalidArgument);
}

// With the tokenizer's own [MASK] id (data.mask_token_id, as an imported
// BERT has), masked positions carry that id and the model needs no extra row.
TEST_F(SamplerTest, MlmUsesTheGivenMaskToken) {
  BatchSpec spec = Spec(Objective::kMlm);
  spec.model_vocab = static_cast<int>(kTokens);  // the file's vocab: no extra row
  spec.mask_token = 103;
  spec.mask_prob = 0.5;
  Sampler s = Make(spec);
  EXPECT_EQ(s.mask_token(), 103);
  const BatchSpec plain_spec = [&] {
    BatchSpec p = spec;
    p.mask_token = -1;
    p.model_vocab = static_cast<int>(kTokens) + 1;
    return p;
  }();
  Sampler plain = Make(plain_spec);
  int masked = 0;
  for (int64_t step = 0; step < 4; ++step) {
    const MicroBatch a = s.TrainMicroBatch(step, 0, 1, 0).value();
    const MicroBatch b = plain.TrainMicroBatch(step, 0, 1, 0).value();
    ASSERT_EQ(a.targets, b.targets) << "the same positions are selected";
    for (size_t i = 0; i < a.tokens.size(); ++i) {
      if (b.tokens[i] == static_cast<int32_t>(kTokens)) {
        EXPECT_EQ(a.tokens[i], 103);
        ++masked;
      } else {
        EXPECT_EQ(a.tokens[i], b.tokens[i]);
      }
    }
  }
  EXPECT_GT(masked, 0);
  spec.mask_token = static_cast<int32_t>(kTokens);  // not below model.vocab
  EXPECT_EQ(Sampler::Create(file_.get(), spec).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(SamplerTest, TooFewTokensForATrainSample) {
  BatchSpec spec = Spec(Objective::kCausal);
  spec.seq_len = 1000;  // one sample, and it goes to eval
  StatusOr<Sampler> s = Sampler::Create(file_.get(), spec);
  EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
  const std::string m = s.status().message();
  EXPECT_NE(m.find(path_), std::string::npos) << m;
  EXPECT_NE(m.find("1001 tokens"), std::string::npos) << m;
  EXPECT_NE(m.find("seq_len 1000"), std::string::npos) << m;
  spec.eval_fraction = 0;
  EXPECT_TRUE(Sampler::Create(file_.get(), spec).ok());
}

TEST_F(SamplerTest, RejectsBadSpecs) {
  BatchSpec spec = Spec(Objective::kCausal);
  spec.global_batch = 15;  // not a multiple of micro_batch 2
  EXPECT_EQ(Sampler::Create(file_.get(), spec).status().code(), StatusCode::kInvalidArgument);
  spec = Spec(Objective::kCausal);
  spec.eval_fraction = 1.0;
  EXPECT_EQ(Sampler::Create(file_.get(), spec).status().code(), StatusCode::kInvalidArgument);
  spec = Spec(Objective::kMlm);
  spec.mask_prob = 1.5;
  EXPECT_EQ(Sampler::Create(file_.get(), spec).status().code(), StatusCode::kInvalidArgument);

  Sampler s = Make(Spec(Objective::kCausal));
  EXPECT_TRUE(s.CheckWorldSize(8).ok());
  const Status bad = s.CheckWorldSize(3);
  EXPECT_EQ(bad.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find("world_size 3"), std::string::npos) << bad.message();
  EXPECT_EQ(s.MicroBatchesPerStep(4), 2);
}

TEST_F(SamplerTest, StateRoundTripsAndGuardsResume) {
  Sampler s = Make(Spec(Objective::kMlm));
  const SamplerState st = s.state();
  StatusOr<SamplerState> parsed = SamplerState::Parse(st.ToString());
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ(*parsed, st);
  EXPECT_TRUE(s.CheckResume(*parsed).ok());

  SamplerState other = st;
  other.seq_len = 16;
  const Status r = s.CheckResume(other);
  EXPECT_EQ(r.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(r.message().find("checkpoint has seq_len=16, this run has seq_len=8"),
            std::string::npos)
      << r.message();
  EXPECT_EQ(SamplerState::Parse("seed=1").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(SamplerState::Parse(st.ToString() + " extra=1").status().code(),
            StatusCode::kInvalidArgument);
}

// The MLM mask token is part of the resumable state: a resume with another
// data.mask_token_id is refused, naming it; a state saved before the key
// existed (mask token = the file's vocab_size) still resumes.
TEST_F(SamplerTest, StateRecordsTheMaskToken) {
  Sampler s = Make(Spec(Objective::kMlm));
  const SamplerState st = s.state();
  EXPECT_EQ(st.mask_token, static_cast<int32_t>(file_->vocab_size()));
  BatchSpec other_spec = Spec(Objective::kMlm);
  other_spec.mask_token = 3;
  Sampler other = Make(other_spec);
  const Status r = other.CheckResume(st);
  EXPECT_EQ(r.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(r.message().find("checkpoint has mask_token=" + std::to_string(st.mask_token) +
                             ", this run has mask_token=3"),
            std::string::npos)
      << r.message();

  std::string old = st.ToString();
  old.erase(old.find(" mask_token="));
  StatusOr<SamplerState> parsed = SamplerState::Parse(old);
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_TRUE(s.CheckResume(*parsed).ok()) << s.CheckResume(*parsed).message();
  EXPECT_EQ(Make(Spec(Objective::kCausal)).state().mask_token, -1);
}

// -------------------------------------------------------------------- Markov

// Plug-in estimate of H(next | previous `order` tokens) in nats.
double EmpiricalConditionalEntropy(const std::vector<uint32_t>& x, int vocab, int order) {
  std::map<uint64_t, std::map<uint32_t, int64_t>> counts;
  for (size_t t = order; t < x.size(); ++t) {
    uint64_t ctx = 0;
    for (int i = order; i >= 1; --i) ctx = ctx * vocab + x[t - i];
    ++counts[ctx][x[t]];
  }
  const double n = static_cast<double>(x.size() - order);
  double h = 0;
  for (const auto& [ctx, next] : counts) {
    int64_t total = 0;
    for (const auto& [v, c] : next) total += c;
    for (const auto& [v, c] : next) h -= c / n * std::log(static_cast<double>(c) / total);
  }
  return h;
}

TEST(Markov, EntropyRateMatchesEmpiricalConditionalEntropy) {
  for (const MarkovSpec spec :
       {MarkovSpec{16, 1, 7, 0.1}, MarkovSpec{8, 2, 3, 0.3}, MarkovSpec{32, 0, 5, 0.05}}) {
    ASSERT_TRUE(ValidateMarkovSpec(spec).ok());
    const MarkovSource src(spec);
    const std::vector<uint32_t> x = src.Generate(1000000);
    const double rate = src.EntropyRateNats();
    const double empirical = EmpiricalConditionalEntropy(x, spec.vocab, spec.order);
    EXPECT_GT(rate, 0.05);
    EXPECT_LT(rate, std::log(static_cast<double>(spec.vocab)));
    EXPECT_NEAR(empirical, rate, 0.01) << "vocab " << spec.vocab << " order " << spec.order;
    for (uint32_t t : x) ASSERT_LT(t, static_cast<uint32_t>(spec.vocab));
  }
}

TEST(Markov, IsDeterministicAndConcentrationControlsEntropy) {
  const MarkovSource a({64, 2, 1, 0.1}), b({64, 2, 1, 0.1});
  EXPECT_EQ(a.Generate(1000), b.Generate(1000));
  EXPECT_EQ(a.EntropyRateNats(), b.EntropyRateNats());
  // A prefix of a longer sequence is the shorter sequence.
  const std::vector<uint32_t> longer = a.Generate(2000);
  EXPECT_TRUE(std::equal(longer.begin(), longer.begin() + 1000, a.Generate(1000).begin()));
  EXPECT_NE(MarkovSource({64, 2, 2, 0.1}).Generate(1000), a.Generate(1000));
  const double sparse = MarkovSource({64, 1, 1, 0.05}).EntropyRateNats();
  const double dense = MarkovSource({64, 1, 1, 10.0}).EntropyRateNats();
  EXPECT_LT(sparse, dense);
  EXPECT_GT(dense, 0.9 * std::log(64.0));
  for (int64_t c = 0; c < a.num_contexts(); c += 97) {
    double sum = 0;
    for (int v = 0; v < 64; ++v) sum += a.Probability(c, v);
    EXPECT_NEAR(sum, 1.0, 1e-12);
  }
}

TEST(Markov, ValidateNamesTheField) {
  EXPECT_NE(ValidateMarkovSpec({1, 1, 1, 0.1}).message().find("vocab is 1"), std::string::npos);
  EXPECT_NE(ValidateMarkovSpec({4, -1, 1, 0.1}).message().find("order is -1"), std::string::npos);
  EXPECT_NE(ValidateMarkovSpec({4, 1, 1, 0}).message().find("concentration"), std::string::npos);
  EXPECT_NE(ValidateMarkovSpec({256, 3, 1, 0.1}).message().find("table limit"), std::string::npos);
}

// ---------------------------------------------------------------- examples

// Three SFT-style examples: the loss mask marks the responses.
std::string WriteExamples(const std::string& name) {
  const std::string path = TempPath(name);
  EXPECT_TRUE(WriteTokenFile(path, 10, {1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3}, {0, 4, 6},
                             {0, 0, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1})
                  .ok());
  return path;
}

BatchSpec ExampleSpec(int seq_len) {
  BatchSpec spec;
  spec.objective = Objective::kCausal;
  spec.unit = SampleUnit::kDocuments;
  spec.seq_len = seq_len;
  spec.micro_batch = 1;
  spec.global_batch = 1;
  spec.model_vocab = 10;
  return spec;
}

TEST(Sampler, ExamplesAreOneDocumentPerRowPaddedWithLossOnTheMaskedTokens) {
  const std::string path = WriteExamples("examples");
  StatusOr<TokenFile> f = TokenFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status().message();
  // Held out: eval sample i is document i.
  StatusOr<Sampler> s = Sampler::CreateHeldOut(&*f, ExampleSpec(5));
  ASSERT_TRUE(s.ok()) << s.status().message();
  ASSERT_EQ(s->num_eval_samples(), 3);
  struct Want {
    std::vector<int32_t> tokens, targets;
    std::vector<uint8_t> mask;
    int64_t num_targets;
  };
  // Position t predicts token t + 1 when it is in the example and marked.
  const Want want[] = {{{1, 2, 3, 4, 0}, {-1, 3, 4, -1, -1}, {1, 1, 1, 1, 0}, 2},
                       {{5, 6, 0, 0, 0}, {6, -1, -1, -1, -1}, {1, 1, 0, 0, 0}, 1},
                       {{7, 8, 9, 1, 2}, {8, 9, 1, 2, 3}, {1, 1, 1, 1, 1}, 5}};
  for (int d = 0; d < 3; ++d) {
    StatusOr<MicroBatch> mb = s->EvalMicroBatch(d, 0, 1, 0);
    ASSERT_TRUE(mb.ok()) << mb.status().message();
    EXPECT_EQ(mb->tokens, want[d].tokens) << "example " << d;
    EXPECT_EQ(mb->targets, want[d].targets) << "example " << d;
    EXPECT_EQ(mb->attn_mask, want[d].mask) << "example " << d;
    EXPECT_EQ(mb->num_targets, want[d].num_targets) << "example " << d;
  }
  SamplerState st = s->state();
  EXPECT_NE(st.ToString().find(" sampling=documents"), std::string::npos) << st.ToString();
  StatusOr<SamplerState> back = SamplerState::Parse(st.ToString());
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(*back, st);
  std::remove(path.c_str());
}

TEST(Sampler, WindowsOverAFileWithALossMaskPutNoLossOnTheMaskedOutTokens) {
  const std::string path = WriteExamples("examples_windows");
  StatusOr<TokenFile> f = TokenFile::Open(path);
  ASSERT_TRUE(f.ok());
  BatchSpec spec = ExampleSpec(5);
  spec.unit = SampleUnit::kWindows;
  StatusOr<Sampler> s = Sampler::CreateHeldOut(&*f, spec);
  ASSERT_TRUE(s.ok()) << s.status().message();
  // Window 0 predicts tokens 1..5, whose mask is 0 1 1 0 1.
  StatusOr<MicroBatch> mb = s->EvalMicroBatch(0, 0, 1, 0);
  ASSERT_TRUE(mb.ok());
  EXPECT_EQ(mb->targets, (std::vector<int32_t>{-1, 3, 4, -1, 6}));
  EXPECT_EQ(mb->num_targets, 3);
  std::remove(path.c_str());
}

TEST(Sampler, ExamplesLongerThanARowOrWithoutAnIndexAreRefused) {
  const std::string path = WriteExamples("examples_long");
  StatusOr<TokenFile> f = TokenFile::Open(path);
  ASSERT_TRUE(f.ok());
  StatusOr<Sampler> s = Sampler::Create(&*f, ExampleSpec(4));
  EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.status().message().find("1 of 3 examples are longer than seq_len + 1 = 5 tokens "
                                      "(the longest has 6)"),
            std::string::npos)
      << s.status().message();
  const std::string flat = WriteIotaFile("examples_flat", 20);
  StatusOr<TokenFile> g = TokenFile::Open(flat);
  ASSERT_TRUE(g.ok());
  BatchSpec wide = ExampleSpec(4);
  wide.model_vocab = 20;
  s = Sampler::Create(&*g, wide);
  EXPECT_NE(s.status().message().find("has no document index (version 1)"), std::string::npos)
      << s.status().message();
  BatchSpec mlm = ExampleSpec(5);
  mlm.objective = Objective::kMlm;
  mlm.model_vocab = 11;
  s = Sampler::Create(&*f, mlm);
  EXPECT_NE(s.status().message().find("needs a causal model"), std::string::npos)
      << s.status().message();
  std::remove(path.c_str());
  std::remove(flat.c_str());
}

// Packing: consecutive examples share a row while their lengths sum to at
// most seq_len + 1, each starts a document (attention, positions), and each
// one's targets stay inside it, with its loss mask.
TEST(Sampler, PackedRowsHoldWholeConsecutiveExamplesThatNeverSeeEachOther) {
  const std::string path = WriteExamples("packed");
  StatusOr<TokenFile> f = TokenFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status().message();
  BatchSpec spec = ExampleSpec(5);
  spec.unit = SampleUnit::kPacked;
  spec.doc_attention = DocAttention::kWithin;
  spec.doc_positions = DocPositions::kRestart;
  StatusOr<Sampler> s = Sampler::CreateHeldOut(&*f, spec);
  ASSERT_TRUE(s.ok()) << s.status().message();
  // Examples of 4, 2 and 6 tokens; rows hold 6: [0 1] and [2].
  ASSERT_EQ(s->num_eval_samples(), 2);
  EXPECT_EQ(s->num_documents(), 3);
  const uint8_t R = kMaskReal, D = kMaskReal | kMaskDocStart;
  struct Want {
    std::vector<int32_t> tokens, targets, positions;
    std::vector<uint8_t> mask;
    int64_t num_targets;
  };
  // Row 0: example 0 (1 2 3 4), then example 1 (5 6), whose last token is
  // only a target; example 0's last input predicts nothing (5 is not its).
  const Want want[] = {{{1, 2, 3, 4, 5}, {-1, 3, 4, -1, 6}, {0, 1, 2, 3, 0}, {D, R, R, R, D}, 3},
                       {{7, 8, 9, 1, 2}, {8, 9, 1, 2, 3}, {0, 1, 2, 3, 4}, {D, R, R, R, R}, 5}};
  for (int r = 0; r < 2; ++r) {
    StatusOr<MicroBatch> mb = s->EvalMicroBatch(r, 0, 1, 0);
    ASSERT_TRUE(mb.ok()) << mb.status().message();
    EXPECT_EQ(mb->tokens, want[r].tokens) << "row " << r;
    EXPECT_EQ(mb->targets, want[r].targets) << "row " << r;
    EXPECT_EQ(mb->positions, want[r].positions) << "row " << r;
    EXPECT_EQ(mb->attn_mask, want[r].mask) << "row " << r;
    EXPECT_EQ(mb->num_targets, want[r].num_targets) << "row " << r;
  }
  // A row of 7 holds examples 0 and 1 (6 tokens, all inputs); 2 no longer fits.
  spec.seq_len = 6;
  s = Sampler::CreateHeldOut(&*f, spec);
  ASSERT_TRUE(s.ok()) << s.status().message();
  ASSERT_EQ(s->num_eval_samples(), 2);
  StatusOr<MicroBatch> mb = s->EvalMicroBatch(0, 0, 1, 0);
  ASSERT_TRUE(mb.ok());
  EXPECT_EQ(mb->tokens, (std::vector<int32_t>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(mb->targets, (std::vector<int32_t>{-1, 3, 4, -1, 6, -1}));
  SamplerState st = s->state();
  EXPECT_NE(st.ToString().find(" sampling=packed"), std::string::npos) << st.ToString();
  StatusOr<SamplerState> back = SamplerState::Parse(st.ToString());
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(*back, st);
  // Packed rows without doc_attention within would let examples see each other.
  spec.doc_attention = DocAttention::kCross;
  s = Sampler::CreateHeldOut(&*f, spec);
  EXPECT_NE(s.status().message().find("packed sampling needs doc_attention within"),
            std::string::npos)
      << s.status().message();
  std::remove(path.c_str());
}

// Without a loss mask every next token is a target, except across an
// example's end: the token after it belongs to the next example. Padding is
// token 0, attention mask 0, position 0, no target.
TEST(Sampler, PackedExamplesPredictNothingAcrossTheirEndAndPadTheRow) {
  const std::string path = TempPath("packed_nomask");
  ASSERT_TRUE(WriteTokenFile(path, 10, {1, 2, 3, 4, 5, 6, 7, 8, 9}, {0, 3, 5}).ok());
  StatusOr<TokenFile> f = TokenFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status().message();
  BatchSpec spec = ExampleSpec(6);
  spec.unit = SampleUnit::kPacked;
  spec.doc_attention = DocAttention::kWithin;
  spec.doc_positions = DocPositions::kRestart;
  StatusOr<Sampler> s = Sampler::CreateHeldOut(&*f, spec);
  ASSERT_TRUE(s.ok()) << s.status().message();
  ASSERT_EQ(s->num_eval_samples(), 2);  // [0 1] (5 tokens), [2] (4: 5 + 4 > 7)
  const uint8_t R = kMaskReal, D = kMaskReal | kMaskDocStart;
  StatusOr<MicroBatch> mb = s->EvalMicroBatch(0, 0, 1, 0);
  ASSERT_TRUE(mb.ok());
  EXPECT_EQ(mb->tokens, (std::vector<int32_t>{1, 2, 3, 4, 5, 0}));
  EXPECT_EQ(mb->targets, (std::vector<int32_t>{2, 3, -1, 5, -1, -1}));
  EXPECT_EQ(mb->attn_mask, (std::vector<uint8_t>{D, R, R, D, R, 0}));
  EXPECT_EQ(mb->positions, (std::vector<int32_t>{0, 1, 2, 0, 1, 0}));
  EXPECT_EQ(mb->num_targets, 3);
  mb = s->EvalMicroBatch(1, 0, 1, 0);
  ASSERT_TRUE(mb.ok());
  EXPECT_EQ(mb->tokens, (std::vector<int32_t>{6, 7, 8, 9, 0, 0}));
  EXPECT_EQ(mb->targets, (std::vector<int32_t>{7, 8, 9, -1, -1, -1}));
  EXPECT_EQ(mb->attn_mask, (std::vector<uint8_t>{D, R, R, R, 0, 0}));
  EXPECT_EQ(mb->positions, (std::vector<int32_t>{0, 1, 2, 3, 0, 0}));
  std::remove(path.c_str());
}

// Causal windows of 8 over a file of 20 ones whose documents start at 0, 5
// and 12, held out (every window is eval).
BatchSpec DocumentWindowSpec() {
  BatchSpec spec;
  spec.seq_len = 8;
  spec.micro_batch = 1;
  spec.global_batch = 1;
  spec.model_vocab = 10;
  return spec;
}
std::string WriteDocumentWindows(const std::string& name) {
  const std::string path = TempPath(name);
  EXPECT_TRUE(WriteTokenFile(path, 10, std::vector<uint32_t>(20, 1), {0, 5, 12}).ok());
  return path;
}

// `spec` over a version-1 file (no document index) is refused with `want`.
void ExpectRefusedWithoutDocumentIndex(BatchSpec spec, const std::string& want) {
  const std::string flat = WriteIotaFile("no_index", 20);
  StatusOr<TokenFile> g = TokenFile::Open(flat);
  ASSERT_TRUE(g.ok());
  spec.model_vocab = 20;
  StatusOr<Sampler> s = Sampler::Create(&*g, spec);
  EXPECT_NE(s.status().message().find(want), std::string::npos) << s.status().message();
  std::remove(flat.c_str());
}

TEST(Sampler, RestartedPositionsCountFromEachDocumentStartInTheWindow) {
  const std::string path = WriteDocumentWindows("positions");
  StatusOr<TokenFile> f = TokenFile::Open(path);
  ASSERT_TRUE(f.ok());
  BatchSpec spec = DocumentWindowSpec();
  StatusOr<Sampler> s = Sampler::CreateHeldOut(&*f, spec);
  ASSERT_TRUE(s.ok()) << s.status().message();
  StatusOr<MicroBatch> mb = s->EvalMicroBatch(0, 0, 1, 0);
  ASSERT_TRUE(mb.ok());
  EXPECT_TRUE(mb->positions.empty()) << "continue: no position ids are carried";
  spec.doc_positions = DocPositions::kRestart;
  s = Sampler::CreateHeldOut(&*f, spec);
  ASSERT_TRUE(s.ok()) << s.status().message();
  // Documents start at 0, 5 and 12. Window 1 (inputs 8..15) begins inside
  // document 1 and counts from its own first token, as Megatron's
  // reset_position_ids does, so no id reaches past the row.
  const std::vector<int32_t> want[] = {{0, 1, 2, 3, 4, 0, 1, 2}, {0, 1, 2, 3, 0, 1, 2, 3}};
  for (int w = 0; w < 2; ++w) {
    mb = s->EvalMicroBatch(w, 0, 1, 0);
    ASSERT_TRUE(mb.ok());
    EXPECT_EQ(mb->positions, want[w]) << "window " << w;
    EXPECT_EQ(mb->attn_mask, std::vector<uint8_t>(8, kMaskReal)) << "attention still crosses";
  }
  ExpectRefusedWithoutDocumentIndex(
      spec, "data.doc_positions: restart needs a token file with a document index");
  std::remove(path.c_str());
}

TEST(Sampler, DocAttentionWithinMarksEachDocumentStartInTheWindow) {
  const std::string path = WriteDocumentWindows("within");
  StatusOr<TokenFile> f = TokenFile::Open(path);
  ASSERT_TRUE(f.ok());
  BatchSpec spec = DocumentWindowSpec();
  spec.doc_attention = DocAttention::kWithin;
  StatusOr<Sampler> s = Sampler::CreateHeldOut(&*f, spec);
  ASSERT_TRUE(s.ok()) << s.status().message();
  const uint8_t R = kMaskReal, D = kMaskReal | kMaskDocStart;
  // Window 0 holds inputs 0..7 (documents start at 0 and 5), window 1 inputs
  // 8..15 (one starts at 12); the targets are untouched.
  const std::vector<uint8_t> want[] = {{D, R, R, R, R, D, R, R}, {R, R, R, R, D, R, R, R}};
  for (int w = 0; w < 2; ++w) {
    StatusOr<MicroBatch> mb = s->EvalMicroBatch(w, 0, 1, 0);
    ASSERT_TRUE(mb.ok());
    EXPECT_EQ(mb->attn_mask, want[w]) << "window " << w;
    EXPECT_EQ(mb->num_targets, 8);
  }
  // A file without a document index cannot say where documents start.
  ExpectRefusedWithoutDocumentIndex(spec,
                                    "data.doc_attention: within needs a causal model (gpt or "
                                    "llama) and a token file with a document index");
  std::remove(path.c_str());
}

}  // namespace
}  // namespace l2l::data
