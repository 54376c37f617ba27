#include "l2l/config/config.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

namespace l2l::config {
namespace {

constexpr char kSource[] = "configs/x.yaml";

// The smallest valid config: only the required keys.
constexpr char kMinimal[] = R"(model:
  kind: bert
  layers: 2
  hidden: 64
  heads: 4
  ffn: 256
  vocab: 1000
  seq_len: 32
data:
  path: data/tiny.tok
train:
  steps: 100
  global_batch: 16
  micro_batch: 4
)";

StatusOr<Config> Parse(std::string_view text, const std::vector<std::string>& overrides = {}) {
  return ParseConfig(text, kSource, overrides);
}

StatusOr<Config> ParseMinimalWith(const std::vector<std::string>& overrides) {
  return Parse(kMinimal, overrides);
}

// Passes when `r` failed with a one-line message that contains `expected`.
template <typename T>
::testing::AssertionResult FailsWith(const StatusOr<T>& r, const std::string& expected) {
  if (r.ok()) return ::testing::AssertionFailure() << "succeeded, expected: " << expected;
  const std::string m = r.status().message();  // status() returns a copy
  if (m.find('\n') != std::string::npos) {
    return ::testing::AssertionFailure() << "message is not one line: " << m;
  }
  if (m.find(expected) == std::string::npos) {
    return ::testing::AssertionFailure() << "message '" << m << "' lacks '" << expected << "'";
  }
  return ::testing::AssertionSuccess();
}

TEST(ParseConfig, MinimalConfigGetsDocumentedDefaults) {
  StatusOr<Config> r = Parse(kMinimal);
  ASSERT_TRUE(r.ok()) << r.status().message();
  const Config& c = *r;
  EXPECT_EQ(c.source, kSource);
  EXPECT_EQ(c.model.layers, 2);
  EXPECT_EQ(c.model.hidden, 64);
  EXPECT_EQ(c.model.dropout, 0.1);
  EXPECT_EQ(c.model.activation, Activation::kGelu);  // bert defaults, as BertConfig's
  EXPECT_EQ(c.model.norm_eps, 1e-12);
  EXPECT_TRUE(c.model.tie_embeddings);
  EXPECT_EQ(c.model.max_positions, 32);  // = seq_len
  EXPECT_EQ(c.model.type_vocab, 2);
  EXPECT_EQ(c.model.pad_token_id, 0);  // BertConfig's
  EXPECT_EQ(c.model.init, InitScheme::kNormal);
  EXPECT_EQ(c.train.weight_decay_on, WeightDecayOn::kMatrices);
  EXPECT_EQ(c.data.path, "data/tiny.tok");
  EXPECT_EQ(c.data.mask_prob, 0.15);
  EXPECT_EQ(c.train.seed, 1234u);
  EXPECT_EQ(c.train.lr, 1e-4);
  EXPECT_EQ(c.train.schedule, Schedule::kCosine);
  EXPECT_EQ(c.train.weight_decay, 0.01);
  EXPECT_EQ(c.train.grad_clip, 1.0);
  EXPECT_EQ(c.train.beta1, 0.9);
  EXPECT_EQ(c.train.beta2, 0.999);
  EXPECT_EQ(c.exec.mode, ExecMode::kL2L);
  EXPECT_EQ(c.exec.device, DeviceKind::kCpu);
  EXPECT_EQ(c.exec.precision, Precision::kFp32);
  EXPECT_EQ(c.exec.stash, StashPlacement::kHost);
  EXPECT_EQ(c.exec.prefetch_depth, 1);
  EXPECT_EQ(c.exec.device_memory_limit_bytes, 0);
  EXPECT_EQ(c.checkpoint.dir, "checkpoints");
  EXPECT_EQ(c.log.every_steps, 10);
}

TEST(ParseConfig, KindDefaultsFollowTransformers) {
  StatusOr<Config> r = ParseMinimalWith({"model.kind=gpt"});  // GPT2Config
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->model.activation, Activation::kGeluTanh);
  EXPECT_EQ(r->model.norm_eps, 1e-5);
  EXPECT_TRUE(r->model.tie_embeddings);
  EXPECT_EQ(r->model.init, InitScheme::kGpt2);
  EXPECT_EQ(r->model.dropout, 0.1);
  r = ParseMinimalWith({"model.kind=llama"});  // LlamaConfig
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->model.kv_heads, 4);  // = heads
  EXPECT_EQ(r->model.norm_eps, 1e-6);
  EXPECT_EQ(r->model.pad_token_id, -1);
  EXPECT_FALSE(r->model.tie_embeddings);
  EXPECT_FALSE(r->model.attention_bias);
  EXPECT_EQ(r->model.rope_theta, 10000.0);
  EXPECT_EQ(r->model.rope_scaling.type, RopeScalingType::kNone);
  EXPECT_EQ(r->model.dropout, 0.0);
  EXPECT_EQ(r->model.init, InitScheme::kNormal);
  r = ParseMinimalWith({"model.kind=llama", "model.kv_heads=2", "model.tie_embeddings=true",
                        "model.rope_scaling={rope_type: llama3, factor: 32.0}"});
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->model.kv_heads, 2);
  EXPECT_TRUE(r->model.tie_embeddings);
  EXPECT_EQ(r->model.rope_scaling.type, RopeScalingType::kLlama3);
  EXPECT_EQ(r->model.rope_scaling.factor, 32.0);
  EXPECT_EQ(r->model.rope_scaling.high_freq_factor, 4.0);  // Llama-3.1's
  EXPECT_EQ(r->model.rope_scaling.original_max_positions, 8192);
}

// data.mask_token_id: bert's [MASK] id (an import sets it), below model.vocab;
// -1 (the default) keeps the token file's vocab_size as the mask token.
TEST(ParseConfig, MaskTokenIdIsBertsAndBelowTheVocab) {
  StatusOr<Config> r = Parse(kMinimal);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->data.mask_token_id, -1);
  r = ParseMinimalWith({"data.mask_token_id=7"});
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->data.mask_token_id, 7);
  StatusOr<Config> again = ParseConfig(ToYaml(*r), "again", {});
  ASSERT_TRUE(again.ok()) << again.status().message();
  EXPECT_EQ(again->data.mask_token_id, 7);
  EXPECT_TRUE(FailsWith(ParseMinimalWith({"data.mask_token_id=1000"}),
                        "data.mask_token_id=1000 is not below model.vocab="));
  EXPECT_TRUE(FailsWith(ParseMinimalWith({"model.kind=gpt", "data.mask_token_id=3"}),
                        "data.mask_token_id: applies to kind bert (the masked-LM objective) only"));
}

TEST(ParseConfigErrors, KeysOfAnotherKindAreRefused) {
  EXPECT_TRUE(FailsWith(ParseMinimalWith({"model.kv_heads=2"}),
                        "--set model.kv_heads=2: model.kv_heads: applies to kind llama only "
                        "(model.kind is bert)"));
  EXPECT_TRUE(FailsWith(ParseMinimalWith({"model.kind=gpt", "model.type_vocab=3"}),
                        "model.type_vocab: applies to kind bert only (model.kind is gpt)"));
  EXPECT_TRUE(FailsWith(ParseMinimalWith({"model.kind=llama", "model.activation=gelu"}),
                        "model.activation: applies to kinds bert and gpt"));
  EXPECT_TRUE(FailsWith(ParseMinimalWith({"model.kind=llama", "model.kv_heads=3"}),
                        "model.kv_heads=3 does not divide model.heads=4"));
  EXPECT_TRUE(FailsWith(ParseMinimalWith({"model.kind=llama", "model.rope_scaling=linear"}),
                        "model.rope_scaling: expected none or a mapping"));
  EXPECT_TRUE(
      FailsWith(ParseMinimalWith({"model.kind=llama", "model.rope_scaling={rope_type: yarn}"}),
                "model.rope_scaling.rope_type: expected one of none, llama3, got 'yarn'"));
  EXPECT_TRUE(FailsWith(ParseMinimalWith({"model.kind=llama", "model.rope_scaling={factor: 8.0}"}),
                        "model.rope_scaling: missing rope_type"));
  EXPECT_TRUE(FailsWith(
      ParseMinimalWith({"model.kind=llama", "model.rope_scaling={rope_type: llama3, beta: 1}"}),
      "model.rope_scaling: unknown key 'beta'"));
  EXPECT_TRUE(FailsWith(
      ParseMinimalWith({"model.kind=llama", "model.rope_scaling={rope_type: none, factor: 2.0}"}),
      "rope_type none takes no other keys"));
  EXPECT_TRUE(FailsWith(ParseMinimalWith({"model.max_positions=16"}),
                        "model.max_positions=16 is less than model.seq_len=32"));
  EXPECT_TRUE(FailsWith(ParseMinimalWith({"model.kind=llama", "model.hidden=12", "model.heads=4"}),
                        "the head dimension model.hidden / model.heads = 3 must be even"));
  EXPECT_TRUE(FailsWith(ParseMinimalWith({"model.kind=gpt", "data.sampling=packed"}),
                        "data.sampling: packed needs data.doc_attention: within"));
  EXPECT_TRUE(FailsWith(ParseMinimalWith({"data.doc_positions=reset"}),
                        "data.doc_positions: expected one of continue, restart, got 'reset'"));
}

// Every field away from its default, every enum away from its first value.
Config FullConfig() {
  Config c;
  c.model = {.kind = ModelKind::kLlama,
             .layers = 24,
             .hidden = 1024,
             .heads = 16,
             .ffn = 4096,
             .vocab = 50257,
             .seq_len = 512,
             .max_positions = 2048,
             .kv_heads = 4,
             .type_vocab = 2,  // bert only: not written, the default comes back
             .dropout = 0.05,
             .activation = Activation::kGeluTanh,  // bert and gpt only: the canonical default
             .norm_eps = 1e-6,
             .tie_embeddings = true,
             .attention_bias = true,
             .rope_theta = 500000.0,
             .rope_scaling = {.type = RopeScalingType::kLlama3,
                              .factor = 32.0,
                              .low_freq_factor = 1.5,
                              .high_freq_factor = 3.0,
                              .original_max_positions = 4096},
             .init = InitScheme::kGpt2,
             .init_std = 0.015};
  c.data = {.path = "data/my corpus: \"v2\".tok",
            .mask_prob = 0.2,
            .eval_fraction = 0.0,
            .eval_path = "held-out/eval.tok",
            .sampling = Sampling::kPacked,
            .doc_attention = DocAttention::kWithin,
            .doc_positions = DocPositions::kRestart};
  c.train.steps = 100000;
  c.train.seed = 18446744073709551615u;  // uint64 max survives
  c.train.lr = 3e-4;
  c.train.warmup_steps = 2000;
  c.train.schedule = Schedule::kLinear;
  c.train.min_lr_ratio = 0.0;
  c.train.weight_decay = 0.1;
  c.train.weight_decay_on = WeightDecayOn::kAll;
  c.train.beta1 = 0.8;
  c.train.beta2 = 0.95;
  c.train.eps = 1e-6;
  c.train.grad_clip = 0.0;
  c.train.global_batch = 512;
  c.train.micro_batch = 8;
  c.train.init_from = "checkpoints/imported";
  c.train.eval_every_steps = 0;
  c.train.eval_batches = 4;
  c.exec = {.mode = ExecMode::kResident,
            .device = DeviceKind::kCuda,
            .precision = Precision::kBf16,
            .prefetch_depth = 3,
            .stash = StashPlacement::kDevice,
            .device_memory_limit_bytes = 1536 * 1024 * 1024 + 7,
            .optimizer_threads = 6};
  c.checkpoint = {.dir = "/scratch/ckpt", .every_steps = 500, .keep_last = 5, .at_end = false};
  c.log = {.dir = "yes", .every_steps = 1};  // "yes" must stay a string
  c.source = "generated";
  return c;
}

TEST(ToYaml, RoundTripsEveryField) {
  const Config c = FullConfig();
  const std::string yaml = ToYaml(c);
  StatusOr<Config> r = ParseConfig(yaml, "again.yaml", {});
  ASSERT_TRUE(r.ok()) << r.status().message() << "\n" << yaml;
  EXPECT_TRUE(*r == c) << yaml;
  EXPECT_EQ(r->source, "again.yaml");
  r->source = c.source;
  EXPECT_EQ(ToYaml(*r), ToYaml(c));  // a fixed point: nothing drifts on a second trip
  // Floats carry a decimal point in the mantissa: YAML 1.1 readers (PyYAML)
  // read "1e-06" as a string.
  EXPECT_NE(yaml.find("eps: 1.0e-06"), std::string::npos) << yaml;
  EXPECT_EQ(yaml.find("type_vocab"), std::string::npos) << "bert-only key written for llama";
  // An unset optional string is left out (an empty value would not parse back).
  Config unset = c;
  unset.train.init_from.clear();
  const std::string y2 = ToYaml(unset);
  EXPECT_EQ(y2.find("init_from"), std::string::npos);
  StatusOr<Config> r2 = ParseConfig(y2, "again.yaml", {});
  ASSERT_TRUE(r2.ok()) << r2.status().message();
  EXPECT_TRUE(*r2 == unset);
  EXPECT_TRUE(
      FailsWith(ParseMinimalWith({"train.init_from=''"}), "train.init_from: must not be empty"));
}

TEST(ToYaml, RoundTripsDefaultsAndByteSizes) {
  for (int64_t limit : {int64_t{0}, int64_t{1} << 30, int64_t{3} << 20, int64_t{12345}}) {
    StatusOr<Config> base = Parse(kMinimal);
    ASSERT_TRUE(base.ok());
    Config c = *base;
    c.exec.device_memory_limit_bytes = limit;
    StatusOr<Config> r = ParseConfig(ToYaml(c), kSource, {});
    ASSERT_TRUE(r.ok()) << r.status().message();
    EXPECT_TRUE(*r == c) << ToYaml(c);
  }
}

TEST(ConfigEquality, ComparesEveryFieldButSource) {
  const Config a = FullConfig();
  Config b = a;
  EXPECT_TRUE(a == b);
  b.source = "elsewhere.yaml";
  EXPECT_TRUE(a == b);
  b.train.beta2 = 0.9;
  EXPECT_FALSE(a == b);
  b = a;
  b.exec.stash = StashPlacement::kHost;
  EXPECT_FALSE(a == b);
  b = a;
  b.log.dir = "other";
  EXPECT_FALSE(a == b);
}

// What a fine-tune may change (seq_len, dropout, init, init_std, and llama's
// max_positions, which has no table) is not a difference; anything else is,
// named with both values.
TEST(FirstNetworkDifference, SkipsOnlyWhatAFineTuneMayChange) {
  StatusOr<Config> base = ParseMinimalWith({"model.kind=llama", "model.kv_heads=2"});
  ASSERT_TRUE(base.ok()) << base.status().message();
  const ModelConfig a = base->model;
  ModelConfig b = a;
  b.seq_len = 64;
  b.dropout = 0.1;
  b.init = a.init == InitScheme::kGpt2 ? InitScheme::kNormal : InitScheme::kGpt2;
  b.init_std = 0.5;
  b.max_positions = 4096;
  EXPECT_EQ(FirstNetworkDifference(a, b), "");
  b.ffn = 128;
  EXPECT_EQ(FirstNetworkDifference(a, b), "model.ffn: 256 vs 128");
  b = a;
  b.kv_heads = 4;
  EXPECT_EQ(FirstNetworkDifference(a, b), "model.kv_heads: 2 vs 4");
  b = a;
  b.rope_theta = 500000;
  EXPECT_NE(FirstNetworkDifference(a, b).find("model.rope_theta: "), std::string::npos);

  // gpt and bert learn a position table of max_positions rows.
  StatusOr<Config> gpt = ParseMinimalWith({"model.kind=gpt"});
  ASSERT_TRUE(gpt.ok()) << gpt.status().message();
  b = gpt->model;
  b.max_positions = gpt->model.max_positions * 2;
  EXPECT_EQ(FirstNetworkDifference(gpt->model, b),
            "model.max_positions: " + std::to_string(gpt->model.max_positions) + " vs " +
                std::to_string(b.max_positions));
  EXPECT_EQ(FirstNetworkDifference(gpt->model, a), "model.kind: gpt vs llama");
}

TEST(ParseConfigErrors, UnknownKeySuggestsNearest) {
  std::string yaml = kMinimal;
  yaml.replace(yaml.find("hidden"), 6, "hiden");
  EXPECT_TRUE(FailsWith(
      Parse(yaml), "configs/x.yaml: unknown key 'model.hiden' (did you mean 'model.hidden'?)"));
  // A key that lives in another section is suggested there.
  EXPECT_TRUE(FailsWith(Parse(std::string(kMinimal) + "  device: cuda\n"),
                        "unknown key 'train.device' (did you mean 'exec.device'?)"));
}

TEST(ParseConfigErrors, UnknownSectionSuggestsNearest) {
  EXPECT_TRUE(FailsWith(Parse(std::string(kMinimal) + "exce:\n  mode: l2l\n"),
                        "configs/x.yaml: unknown section 'exce' (did you mean 'exec'?)"));
  EXPECT_TRUE(FailsWith(Parse(std::string(kMinimal) + "seed: 3\n"),
                        "configs/x.yaml: unknown section 'seed' (did you mean 'train.seed'?)"));
}

TEST(ParseConfigErrors, DuplicateKey) {
  EXPECT_TRUE(FailsWith(Parse(std::string(kMinimal) + "  steps: 5\n"),
                        "configs/x.yaml: duplicate key 'train.steps'"));
}

TEST(ParseConfigErrors, MissingRequiredKeyIsNamed) {
  for (const char* key : {"kind", "layers", "seq_len", "path", "steps", "micro_batch"}) {
    std::string yaml = kMinimal;
    const size_t line = yaml.find(std::string("  ") + key + ":");
    ASSERT_NE(line, std::string::npos) << key;
    yaml.erase(line, yaml.find('\n', line) + 1 - line);
    StatusOr<Config> r = Parse(yaml);
    EXPECT_TRUE(FailsWith(r, "configs/x.yaml: missing required key '")) << key;
    EXPECT_TRUE(FailsWith(r, std::string(".") + key + "'")) << key;
    EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  }
  EXPECT_TRUE(FailsWith(Parse(""), "missing required key 'model.kind'"));
}

TEST(ParseConfigErrors, WrongType) {
  std::string yaml = kMinimal;
  yaml.replace(yaml.find("layers: 2"), 9, "layers: abc");
  EXPECT_TRUE(FailsWith(Parse(yaml),
                        "configs/x.yaml: model.layers: expected a positive integer, got 'abc'"));
  EXPECT_TRUE(FailsWith(ParseMinimalWith({"model.dropout=high"}),
                        "model.dropout: expected a number, got 'high'"));
  EXPECT_TRUE(FailsWith(ParseMinimalWith({"train.steps=1.5"}),
                        "train.steps: expected a positive integer, got '1.5'"));
  EXPECT_TRUE(FailsWith(ParseMinimalWith({"train.seed=-1"}),
                        "train.seed: expected a non-negative integer, got '-1'"));
  EXPECT_TRUE(FailsWith(ParseMinimalWith({"data.path=[a, b]"}),
                        "data.path: expected a string, got a sequence"));
  EXPECT_TRUE(FailsWith(ParseMinimalWith({"train.betas=0.9"}),
                        "train.betas: expected a sequence of two numbers"));
  EXPECT_TRUE(FailsWith(ParseMinimalWith({"model.dropout=.nan"}),
                        "model.dropout: expected a number, got '.nan'"));
  EXPECT_TRUE(FailsWith(ParseMinimalWith({"model.layers=99999999999"}),
                        "model.layers: must be <= 16777216, got '99999999999'"));
  EXPECT_TRUE(FailsWith(ParseMinimalWith({"model.hidden=2147483647"}),
                        "model.hidden: must be <= 16777216, got 2147483647"));
  EXPECT_TRUE(FailsWith(Parse("model: 3\n"), "configs/x.yaml: model: expected a mapping"));
  EXPECT_TRUE(FailsWith(Parse("- a\n- b\n"), "configs/x.yaml: expected a mapping of sections"));
}

TEST(ParseConfigErrors, OutOfRangeNamesKeyAndRule) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"model.layers=0", "model.layers: must be >= 1, got 0"},
      {"model.hidden=-4", "model.hidden: must be >= 1, got -4"},
      {"model.heads=0", "model.heads: must be >= 1, got 0"},
      {"model.ffn=0", "model.ffn: must be >= 1, got 0"},
      {"model.vocab=1", "model.vocab: must be >= 2, got 1"},
      {"model.seq_len=0", "model.seq_len: must be >= 1, got 0"},
      {"model.dropout=1", "model.dropout: must be in [0, 1), got 1"},
      {"model.dropout=-0.1", "model.dropout: must be in [0, 1), got -0.1"},
      {"data.mask_prob=0", "data.mask_prob: must be in (0, 1), got 0"},
      {"data.mask_prob=1", "data.mask_prob: must be in (0, 1), got 1"},
      {"data.eval_fraction=1", "data.eval_fraction: must be in [0, 1), got 1"},
      {"train.lr=0", "train.lr: must be > 0, got 0"},
      {"train.betas=[0.9, 1.0]", "train.betas[1]: must be in [0, 1), got 1.0"},
      {"train.betas=[-0.1, 0.9]", "train.betas[0]: must be in [0, 1), got -0.1"},
      {"train.eps=0", "train.eps: must be > 0, got 0"},
      {"train.weight_decay=-1", "train.weight_decay: must be >= 0, got -1"},
      {"train.grad_clip=-1", "train.grad_clip: must be >= 0, got -1"},
      {"train.min_lr_ratio=1.5", "train.min_lr_ratio: must be in [0, 1], got 1.5"},
      {"train.steps=0", "train.steps: must be >= 1, got 0"},
      {"train.warmup_steps=-1", "train.warmup_steps: must be >= 0, got -1"},
      {"exec.optimizer_threads=100000", "exec.optimizer_threads: must be <= 1024, got 100000"},
      {"train.global_batch=0", "train.global_batch: must be >= 1, got 0"},
      {"train.micro_batch=0", "train.micro_batch: must be >= 1, got 0"},
      {"train.eval_every_steps=-1", "train.eval_every_steps: must be >= 0, got -1"},
      {"train.eval_batches=0", "train.eval_batches: must be >= 1, got 0"},
      {"exec.prefetch_depth=-1", "exec.prefetch_depth: must be >= 0, got -1"},
      {"exec.optimizer_threads=-2", "exec.optimizer_threads: must be >= 0, got -2"},
      {"exec.device_memory_limit=-5", "exec.device_memory_limit: invalid byte size '-5'"},
      {"checkpoint.keep_last=0", "checkpoint.keep_last: must be >= 1, got 0"},
      {"checkpoint.every_steps=-1", "checkpoint.every_steps: must be >= 0, got -1"},
      {"checkpoint.at_end=yes", "checkpoint.at_end: expected true or false, got"},
      {"log.every_steps=0", "log.every_steps: must be >= 1, got 0"},
      {"log.dir=''", "log.dir: must not be empty"},
  };
  for (const auto& [override, expected] : cases) {
    EXPECT_TRUE(FailsWith(ParseMinimalWith({override}), "--set " + override + ": " + expected))
        << override;
  }
}

// A second document is refused, not dropped; --set text with control bytes
// is refused with them escaped, so the error stays one printable line.
TEST(ParseConfigErrors, SecondDocumentAndControlBytes) {
  const int lines = static_cast<int>(std::count(kMinimal, kMinimal + std::strlen(kMinimal), '\n'));
  EXPECT_TRUE(
      FailsWith(Parse(std::string(kMinimal) + "---\nmodel: {kind: gpt}\n"),
                ":" + std::to_string(lines + 1) +
                    ":1: a second YAML document starts here (after '---'); expected one config"));
  // yaml-cpp 0.7's LoadAll reads a stray ',' as endless empty documents (it
  // filled memory until the OOM killer came): refused, in bounded time.
  // Strings are printed into checkpoints and --print-config: one that would
  // not read back the same (invalid UTF-8, a control byte) is refused.
  EXPECT_TRUE(FailsWith(ParseMinimalWith({"data.path=x\xff.tok"}),
                        "data.path: must be printable UTF-8 text, got \"x\\xff.tok\""));
  EXPECT_TRUE(FailsWith(ParseMinimalWith({"log.dir=\"a\\x01b\""}), "log.dir: must be printable"));
  EXPECT_TRUE(ParseMinimalWith({"log.dir=runs/\xc3\xa9t\xc3\xa9"}).ok());  // "runs/été"
  EXPECT_TRUE(FailsWith(Parse(std::string("  , untied\n") + kMinimal),
                        ":1:3: text outside any mapping that YAML cannot parse"));
  EXPECT_TRUE(Parse(std::string("---\n") + kMinimal).ok());  // one document, marked
  EXPECT_TRUE(FailsWith(ParseMinimalWith({"train.lr=1\n2"}),
                        "--set train.lr=1\\x0a2: contains a control character"));
  EXPECT_TRUE(FailsWith(ParseMinimalWith({"train.lr=\x1b[2J"}), "--set train.lr=\\x1b[2J:"));
}

TEST(ParseConfigErrors, InconsistentFields) {
  EXPECT_TRUE(FailsWith(ParseMinimalWith({"model.hidden=1000", "model.heads=12"}),
                        "model.heads=12 does not divide model.hidden=1000"));
  EXPECT_TRUE(FailsWith(ParseMinimalWith({"train.micro_batch=32"}),
                        "train.micro_batch=32 exceeds train.global_batch=16"));
  EXPECT_TRUE(FailsWith(ParseMinimalWith({"train.micro_batch=5"}),
                        "train.global_batch=16 is not a multiple of train.micro_batch=5"));
  // A warmup longer than the run is a smoke run of a preset, not an error.
  EXPECT_TRUE(ParseMinimalWith({"train.warmup_steps=101"}).ok());
  EXPECT_TRUE(FailsWith(ParseMinimalWith({"train.eval_every_steps=10", "data.eval_fraction=0"}),
                        "train.eval_every_steps=10 needs data.eval_fraction > 0"));
  EXPECT_TRUE(
      FailsWith(ParseMinimalWith({"exec.precision=bf16"}),
                "exec.precision: bf16 needs exec.device: cuda (the CPU backend computes in fp32)"));
  EXPECT_TRUE(ParseMinimalWith({"exec.precision=bf16", "exec.device=cuda"}).ok());
  // Without overrides the message names the file.
  std::string yaml = kMinimal;
  yaml.replace(yaml.find("heads: 4"), 8, "heads: 5");
  EXPECT_TRUE(FailsWith(Parse(yaml), "configs/x.yaml: model.heads=5 does not divide"));
}

TEST(ParseConfigErrors, BadEnumListsAllowedValues) {
  std::string yaml = kMinimal;
  yaml.replace(yaml.find("kind: bert"), 10, "kind: bart");
  EXPECT_TRUE(FailsWith(
      Parse(yaml), "configs/x.yaml: model.kind: expected one of bert, gpt, llama, got 'bart'"));
  EXPECT_TRUE(FailsWith(ParseMinimalWith({"train.schedule=step"}),
                        "train.schedule: expected one of cosine, linear, constant, got 'step'"));
  EXPECT_TRUE(FailsWith(ParseMinimalWith({"exec.stash=disk"}),
                        "exec.stash: expected one of host, device, got 'disk'"));
}

TEST(ParseConfigErrors, YamlSyntaxErrorHasLineAndColumn) {
  // Line 3 holds a second mapping value on one line ("a: b: c").
  StatusOr<Config> r = Parse("model:\n  kind: bert\n  layers: 2: 3\n");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(FailsWith(r, "configs/x.yaml:3:")) << r.status().message();
  EXPECT_TRUE(FailsWith(Parse("model: [1, 2\n"), "configs/x.yaml:"));
}

TEST(ParseConfigErrors, HostileInputNeverThrows) {
  for (const char* text :
       {"[", "{a: b", "- - -", "\t", "&a [*a]", "*undefined", "!!binary x", "model: {kind: [bert]}",
        "? [a]\n: 1\n", "model:\n  ? [a]\n  : 1\n", "%YAML 9.9\n---\n", "model: !!int x\n"}) {
    StatusOr<Config> r = Parse(text);
    EXPECT_FALSE(r.ok()) << text;
    EXPECT_EQ(r.status().message().find('\n'), std::string::npos) << r.status().message();
  }
}

TEST(LoadConfig, MissingFileIsNamed) {
  StatusOr<Config> r = LoadConfig("/nonexistent/dir/x.yaml", {});
  EXPECT_TRUE(FailsWith(r, "/nonexistent/dir/x.yaml"));
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
}

TEST(LoadConfig, EmptyFileReportsFirstMissingKey) {
  const std::string path = ::testing::TempDir() + "/l2l_config_empty.yaml";
  std::ofstream(path).close();
  StatusOr<Config> r = LoadConfig(path, {});
  std::remove(path.c_str());
  EXPECT_TRUE(FailsWith(r, path + ": missing required key 'model.kind'"));
}

TEST(LoadConfig, ReadsFileAndRecordsSource) {
  const std::string path = ::testing::TempDir() + "/l2l_config_test.yaml";
  {
    std::ofstream out(path);
    out << kMinimal;
  }
  StatusOr<Config> r = LoadConfig(path, {"train.steps=7"});
  std::remove(path.c_str());
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->source, path);
  EXPECT_EQ(r->train.steps, 7);
}

TEST(Overrides, AppliedInOrderAndMayAddKeys) {
  StatusOr<Config> r =
      ParseMinimalWith({"model.layers=4", "model.layers=6", "exec.stash=device",
                        "train.betas=[0.8, 0.95]", "exec.device_memory_limit=2GiB",
                        "data.path=other.tok", "train.lr=3e-4", " train.seed = 7 "});
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->model.layers, 6);
  EXPECT_EQ(r->exec.stash, StashPlacement::kDevice);
  EXPECT_EQ(r->train.beta1, 0.8);
  EXPECT_EQ(r->train.beta2, 0.95);
  EXPECT_EQ(r->exec.device_memory_limit_bytes, int64_t{2} << 30);
  EXPECT_EQ(r->data.path, "other.tok");
  EXPECT_EQ(r->train.lr, 3e-4);
  EXPECT_EQ(r->train.seed, 7u);
  r = ParseMinimalWith({"exec.device_memory_limit=2GiB", "exec.device_memory_limit=unlimited"});
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->exec.device_memory_limit_bytes, 0);
}

TEST(Overrides, RequiredKeysMayComeFromOverrides) {
  StatusOr<Config> r =
      Parse("", {"model.kind=gpt", "model.layers=1", "model.hidden=8", "model.heads=2",
                 "model.ffn=32", "model.vocab=16", "model.seq_len=4", "data.path=d.tok",
                 "train.steps=1", "train.global_batch=2", "train.micro_batch=1"});
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->model.kind, ModelKind::kGpt);
}

TEST(Overrides, ErrorsNameTheOverrideText) {
  EXPECT_TRUE(FailsWith(ParseMinimalWith({"model.hiden=3"}),
                        "--set model.hiden=3: unknown key 'model.hiden' (did you mean "
                        "'model.hidden'?)"));
  EXPECT_TRUE(FailsWith(ParseMinimalWith({"modle.layers=3"}),
                        "--set modle.layers=3: unknown key 'modle.layers' (did you mean "
                        "'model.layers'?)"));
  // Partial names and keys typed without their section find the key they belong to.
  EXPECT_TRUE(FailsWith(ParseMinimalWith({"train.warmup=3"}),
                        "unknown key 'train.warmup' (did you mean 'train.warmup_steps'?)"));
  EXPECT_TRUE(FailsWith(ParseMinimalWith({"exec.memory=1GB"}),
                        "unknown key 'exec.memory' (did you mean 'exec.device_memory_limit'?)"));
  EXPECT_TRUE(FailsWith(ParseMinimalWith({"warmup_steps=3"}),
                        "unknown key 'warmup_steps' (did you mean 'train.warmup_steps'?)"));
  EXPECT_TRUE(FailsWith(ParseMinimalWith({"=3"}), "--set =3: expected section.key=value"));
  EXPECT_TRUE(FailsWith(ParseMinimalWith({"model.layers"}),
                        "--set model.layers: expected section.key=value"));
  EXPECT_TRUE(FailsWith(ParseMinimalWith({"model=3"}), "--set model=3: 'model' is a section"));
  EXPECT_TRUE(FailsWith(ParseMinimalWith({"model.layers=abc"}),
                        "--set model.layers=abc: model.layers: expected a positive integer, got "
                        "'abc'"));
  EXPECT_TRUE(FailsWith(ParseMinimalWith({"data.path=[oops"}),
                        "--set data.path=[oops: invalid YAML value"));
}

TEST(ValidateForWorld, GlobalBatchMustSplitOverRanks) {
  StatusOr<Config> r = ParseMinimalWith({"train.global_batch=96", "train.micro_batch=8"});
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_TRUE(ValidateForWorld(*r, 1).ok());
  EXPECT_TRUE(ValidateForWorld(*r, 4).ok());
  EXPECT_EQ(MicroBatchesPerRank(*r, 1), 12);
  EXPECT_EQ(MicroBatchesPerRank(*r, 4), 3);
  EXPECT_EQ(MicroBatchesPerRank(*r, 12), 1);
  Status s = ValidateForWorld(*r, 5);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.message(),
            "configs/x.yaml: train.global_batch=96 is not a multiple of world size 5 x "
            "train.micro_batch=8 = 40");
  EXPECT_FALSE(ValidateForWorld(*r, 24).ok());  // fewer samples than ranks x micro-batch
  EXPECT_FALSE(ValidateForWorld(*r, 0).ok());
}

TEST(EnumNames, MatchYamlSpelling) {
  EXPECT_STREQ(Name(ModelKind::kGpt), "gpt");
  EXPECT_STREQ(Name(ModelKind::kLlama), "llama");
  EXPECT_STREQ(Name(Activation::kGeluTanh), "gelu_tanh");
  EXPECT_STREQ(Name(InitScheme::kGpt2), "gpt2");
  EXPECT_STREQ(Name(RopeScalingType::kLlama3), "llama3");
  EXPECT_STREQ(Name(WeightDecayOn::kMatrices), "matrices");
  EXPECT_STREQ(Name(Schedule::kConstant), "constant");
  EXPECT_STREQ(Name(ExecMode::kL2L), "l2l");
  EXPECT_STREQ(Name(ExecMode::kResident), "resident");
  EXPECT_STREQ(Name(DeviceKind::kCuda), "cuda");
  EXPECT_STREQ(Name(Precision::kBf16), "bf16");
  EXPECT_STREQ(Name(StashPlacement::kDevice), "device");
  // Each name parses back to its value.
  for (Schedule s : {Schedule::kCosine, Schedule::kLinear, Schedule::kConstant}) {
    StatusOr<Config> r = ParseMinimalWith({std::string("train.schedule=") + Name(s)});
    ASSERT_TRUE(r.ok()) << r.status().message();
    EXPECT_EQ(r->train.schedule, s);
  }
}

}  // namespace
}  // namespace l2l::config
