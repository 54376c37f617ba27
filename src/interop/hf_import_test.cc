// l2l-ckpt import / export against the committed transformers fixtures, at
// 1, 2 and 4 ranks (MPI; import is collective, export local on rank 0):
//   - the imported checkpoint holds exactly the fixture's weights (bitwise,
//     whatever the number of ranks), zero AdamW moments, step 0, no training
//     state, a config.yaml that parses, and the tokenizer / generation files;
//     its logits are the fixture's (1e-5);
//   - export --format hf writes every fixture tensor back bit for bit, from
//     fp32 and from bf16 sources, in one file or in shards with an index;
//     a sharded export imports to the same checkpoint.
#include "l2l/interop/hf_import.h"

#include <gtest/gtest.h>
#include <mpi.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "fixture_util.h"
#include "l2l/ckpt/reader.h"
#include "l2l/interop/hf_export.h"

// src/ckpt/h5.h's test hook: caps every I/O piece of saves and streams.
namespace l2l::ckpt::internal {
void SetMaxIoChunkElemsForTesting(int64_t n);
}  // namespace l2l::ckpt::internal

namespace l2l::interop {
namespace {

namespace fs = std::filesystem;
int g_rank = 0, g_size = 1;

class Env : public ::testing::Environment {
 public:
  void SetUp() override {
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
  }
};
const auto* const kEnv = ::testing::AddGlobalTestEnvironment(new Env);

// A fresh scratch directory of this test binary (rank 0 clears it).
std::string Scratch(const std::string& name) {
  const std::string d = "hf_import_test_np" + std::to_string(g_size) + "/" + name;
  if (g_rank == 0) {
    fs::remove_all(d);
    fs::create_directories(fs::path(d).parent_path());
  }
  MPI_Barrier(MPI_COMM_WORLD);
  return d;
}

// name -> raw bytes of every tensor of a safetensors file (or of the files an
// index names).
std::map<std::string, std::string> TensorBytes(const std::string& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    // The weights only (model.safetensors or model-0000k-of-0000n.safetensors).
    if (e.path().extension() != ".safetensors" || e.path().filename().string().rfind("model", 0))
      continue;
    StatusOr<SafetensorsFile> f = SafetensorsFile::Open(e.path().string());
    EXPECT_TRUE(f.ok()) << f.status().message();
    for (const SafetensorsTensor& t : f->header().tensors) {
      std::string b(static_cast<size_t>(t.end_bytes - t.begin_bytes), '\0');
      EXPECT_TRUE(f->ReadBytes(t, 0, static_cast<int64_t>(b.size()), b.data()).ok());
      out[t.name] = std::move(b);
    }
  }
  return out;
}

// Same tensor names, and each tensor's bytes equal (named on failure).
void ExpectSameTensors(const std::map<std::string, std::string>& got,
                       const std::map<std::string, std::string>& want) {
  std::vector<std::string> gn, wn;
  for (const auto& [n, b] : got) gn.push_back(n);
  for (const auto& [n, b] : want) wn.push_back(n);
  ASSERT_EQ(gn, wn);
  for (const auto& [n, b] : want) EXPECT_TRUE(got.at(n) == b) << "tensor " << n << " differs";
}

// The imported checkpoint's layers equal `fx`'s, moments are 0.
void ExpectCheckpointHolds(const std::string& ckpt, const testing::Fixture& fx) {
  for (int l = 0; l < model::NumLayers(fx.d); ++l) {
    StatusOr<ckpt::LayerData> layer = ckpt::ReadLayer(ckpt, l, ckpt::LayerParts::kAll);
    ASSERT_TRUE(layer.ok()) << layer.status().message();
    EXPECT_EQ(layer->master, fx.params[l]) << "layer " << l << " master";
    EXPECT_EQ(layer->adam_m, std::vector<float>(fx.params[l].size(), 0.0f)) << "layer " << l;
    EXPECT_EQ(layer->adam_v, std::vector<float>(fx.params[l].size(), 0.0f)) << "layer " << l;
  }
}

void CheckRoundTrip(const std::string& name) {
  SCOPED_TRACE(name);
  const std::string dir = Scratch(name);
  const std::string src = testing::kDir + "/" + name;
  StatusOr<HfImportReport> r =
      ImportHf(MPI_COMM_WORLD, src, dir + "/ckpt", HfImportOptions{testing::kSeq});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  if (g_rank != 0) return;
  const testing::Fixture fx = testing::Load(name);
  ExpectCheckpointHolds(r->checkpoint, fx);
  StatusOr<ckpt::Summary> s = ckpt::Inspect(r->checkpoint);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->meta.step, 0);
  EXPECT_EQ(s->meta.world_size, g_size);
  EXPECT_TRUE(s->meta.sampler_state.empty()) << "an import has no training state";
  EXPECT_TRUE(config::LoadConfig(dir + "/ckpt/config.yaml", {}).ok());
  EXPECT_TRUE(fs::exists(dir + "/ckpt/hf/config.json"));
  for (const auto& e : fs::directory_iterator(src)) {
    const std::string f = e.path().filename().string();
    if (f.rfind("tokenizer", 0) == 0) {
      EXPECT_TRUE(fs::exists(dir + "/ckpt/hf/" + f)) << f;
    }
  }
  // Logits from the imported weights.
  std::vector<std::vector<float>> params;
  for (int l = 0; l < model::NumLayers(fx.d); ++l) {
    params.push_back(ckpt::ReadLayer(r->checkpoint, l, ckpt::LayerParts::kMasterOnly)->master);
  }
  const testing::Expected x = testing::LoadExpected(name);
  const std::vector<float> logits = testing::ForwardLogits(fx.d, params, x);
  EXPECT_LT(testing::RelMaxErr(logits.data(), x.logits.data(), static_cast<int64_t>(logits.size())),
            1e-5);
  // Export: the fixture's tensors, bit for bit, and its tokenizer files.
  StatusOr<HfExportReport> e = ExportHf(dir + "/ckpt", dir + "/export", HfExportOptions{});
  ASSERT_TRUE(e.ok()) << e.status().message();
  ExpectSameTensors(TensorBytes(dir + "/export"), TensorBytes(src));
  for (const auto& f : fs::directory_iterator(src)) {
    const std::string n = f.path().filename().string();
    if (n.rfind("tokenizer", 0) == 0) {
      EXPECT_TRUE(fs::exists(dir + "/export/" + n)) << n;
    }
  }
  EXPECT_FALSE(ExportHf(dir + "/ckpt", dir + "/export", HfExportOptions{}).ok())
      << "export replaced an existing directory";
}

// Writes `text` to dir/name.
void Put(const std::string& dir, const std::string& name, const std::string& text) {
  std::ofstream(dir + "/" + name, std::ios::binary) << text;
}

// Each place a tokenizer names its mask token, and each place it gives the
// id, in the order TokenizerMaskTokenId promises.
TEST(TokenizerMaskTokenId, FindsTheMaskTokenWhereTheTokenizerFilesSayIt) {
  if (g_rank != 0) return;  // reads files only
  const std::string d = "hf_import_test_mask";
  auto fresh = [&] {
    fs::remove_all(d);
    fs::create_directories(d);
  };
  fresh();
  EXPECT_EQ(TokenizerMaskTokenId(d), -1) << "no tokenizer files";
  Put(d, "vocab.txt", "[PAD]\r\n[UNK]\r\n[MASK]\r\nthe\r\n");
  EXPECT_EQ(TokenizerMaskTokenId(d), 2) << "vocab.txt with CRLF line ends";

  fresh();
  Put(d, "tokenizer.json", R"({"added_tokens": [{"id": 9, "content": "<mask>"}],
                               "model": {"vocab": {"<mask>": 3, "[MASK]": 5}}})");
  EXPECT_EQ(TokenizerMaskTokenId(d), 5) << "default name [MASK] in model.vocab";
  Put(d, "special_tokens_map.json", R"({"mask_token": {"content": "<mask>", "lstrip": true}})");
  EXPECT_EQ(TokenizerMaskTokenId(d), 9) << "special_tokens_map's {content}; added_tokens first";
  Put(d, "tokenizer_config.json", R"({"mask_token": "[MASK]"})");
  EXPECT_EQ(TokenizerMaskTokenId(d), 5) << "tokenizer_config.json before special_tokens_map";
  Put(d, "tokenizer_config.json", R"({"mask_token": "<nope>"})");
  Put(d, "vocab.txt", "<nope>\n");
  EXPECT_EQ(TokenizerMaskTokenId(d), 0) << "not in tokenizer.json: vocab.txt";
  fs::remove(d + "/vocab.txt");
  EXPECT_EQ(TokenizerMaskTokenId(d), -1) << "named but nowhere to be found";
  fs::remove_all(d);
}

TEST(HfImport, Gpt2RoundTrip) { CheckRoundTrip("gpt2"); }
TEST(HfImport, BertRoundTrip) { CheckRoundTrip("bert"); }
TEST(HfImport, LlamaGqaUntiedRoundTrip) { CheckRoundTrip("llama-gqa-untied"); }
TEST(HfImport, LlamaGqaTiedRoundTrip) { CheckRoundTrip("llama-gqa-tied"); }
TEST(HfImport, Llama3RopeRoundTrip) { CheckRoundTrip("llama3-rope"); }
TEST(HfImport, Qwen2RoundTrip) { CheckRoundTrip("qwen2-bias"); }
TEST(HfImport, MistralRoundTrip) { CheckRoundTrip("mistral"); }

// A bf16 checkpoint imports exactly (bf16 -> fp32 is exact) and exports back
// to the same bits.
TEST(HfImport, Bf16SourcesExportBitForBit) {
  for (const std::string name : {"gpt2", "llama-gqa-tied"}) {
    SCOPED_TRACE(name);
    const std::string dir = Scratch("bf16-" + name);
    const std::string src = testing::kDir + "-bf16/" + name;
    StatusOr<HfImportReport> r =
        ImportHf(MPI_COMM_WORLD, src, dir + "/ckpt", HfImportOptions{testing::kSeq});
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    if (g_rank != 0) continue;
    HfExportOptions o;
    o.dtype = SafetensorsDType::kBF16;
    StatusOr<HfExportReport> e = ExportHf(dir + "/ckpt", dir + "/export", o);
    ASSERT_TRUE(e.ok()) << e.status().message();
    ExpectSameTensors(TensorBytes(dir + "/export"), TensorBytes(src));
  }
}

// Shards: an export split at a small size has an index and several files
// whose union is the one-file export; importing it gives the same weights.
TEST(HfImport, ShardedExportImportsToTheSameCheckpoint) {
  const std::string name = "llama-gqa-untied";
  const std::string dir = Scratch("sharded");
  const std::string src = testing::kDir + "/" + name;
  ASSERT_TRUE(ImportHf(MPI_COMM_WORLD, src, dir + "/a", HfImportOptions{testing::kSeq}).ok());
  Status exported;
  if (g_rank == 0) {
    HfExportOptions o;
    o.max_shard_bytes = 20000;
    StatusOr<HfExportReport> e = ExportHf(dir + "/a", dir + "/sharded", o);
    exported = e.ok() ? OkStatus() : e.status();
    if (e.ok()) {
      EXPECT_GT(e->shards, 3);
      EXPECT_TRUE(fs::exists(dir + "/sharded/model.safetensors.index.json"));
      EXPECT_FALSE(fs::exists(dir + "/sharded/model.safetensors"));
      ExpectSameTensors(TensorBytes(dir + "/sharded"), TensorBytes(src));
    }
  }
  int ok = exported.ok() ? 1 : 0;
  MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
  ASSERT_TRUE(ok) << exported.message();
  StatusOr<HfImportReport> b =
      ImportHf(MPI_COMM_WORLD, dir + "/sharded", dir + "/b", HfImportOptions{testing::kSeq});
  ASSERT_TRUE(b.ok()) << b.status().message();
  if (g_rank == 0) ExpectCheckpointHolds(b->checkpoint, testing::Load(name));
}

}  // namespace
}  // namespace l2l::interop

namespace l2l::interop {
namespace {

// With I/O pieces of 37 elements every tensor is split across pieces (and
// pieces across tensors, alignment gaps and shards): import fills and export
// writes / verifies at offsets inside tensors. Same bytes as the fixture.
TEST(HfImport, PiecesSmallerThanTensorsGiveTheSameBytes) {
  const std::string name = "llama-gqa-untied";
  const std::string dir = Scratch("pieces");
  const std::string src = testing::kDir + "/" + name;
  ckpt::internal::SetMaxIoChunkElemsForTesting(37);
  StatusOr<HfImportReport> r =
      ImportHf(MPI_COMM_WORLD, src, dir + "/ckpt", HfImportOptions{testing::kSeq});
  if (g_rank == 0 && r.ok()) {
    ExpectCheckpointHolds(r->checkpoint, testing::Load(name));
    HfExportOptions o;
    o.max_shard_bytes = 20000;
    StatusOr<HfExportReport> e = ExportHf(dir + "/ckpt", dir + "/export", o);
    EXPECT_TRUE(e.ok()) << e.status().message();
    if (e.ok()) ExpectSameTensors(TensorBytes(dir + "/export"), TensorBytes(src));
  }
  ckpt::internal::SetMaxIoChunkElemsForTesting(0);
  ASSERT_TRUE(r.ok()) << r.status().message();
}

}  // namespace
}  // namespace l2l::interop
