// Run configuration: one YAML file (plus `--set section.key=value` overrides)
// parsed once at start-up into plain, validated structs.
//
// Why plain structs: every module reads its settings from a const Config& and
// nothing parses strings after start-up. All checks that can be made without
// knowing the world size happen in ParseConfig/LoadConfig; the one that needs
// it is ValidateForWorld. ToYaml writes the whole configuration back (the
// checkpoint stores it in /meta) so that a run can be reproduced from it.
//
// Error contract: every failure is a Status whose message is ONE line naming
// where the value came from (the file, or the `--set` text), the key and the
// rule, e.g.
//   configs/x.yaml: model.layers: expected a positive integer, got 'abc'
//   --set model.hiden=3: unknown key 'model.hiden' (did you mean 'model.hidden'?)
// Nothing here throws, exits or aborts on bad input (yaml-cpp exceptions are
// caught). All functions are pure and thread-safe. docs/config.md lists every
// key with its type, default and rule.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "l2l/core/status.h"

namespace l2l::config {

// Enum spellings in YAML are the Name() strings, lower case ("bert", "gpt", ...).
// Each model kind is an exact twin of one transformers class (docs/model.md):
// bert = BertForMaskedLM, gpt = GPT2LMHeadModel, llama = LlamaForCausalLM
// (also Mistral without sliding window, and Qwen2 with attention_bias).
enum class ModelKind { kBert, kGpt, kLlama };
// The MLP activation of bert and gpt (llama's SwiGLU uses SiLU): gelu = the
// exact erf form (BERT's "gelu"), gelu_tanh = the tanh approximation
// (GPT-2's "gelu_new").
enum class Activation { kGelu, kGeluTanh };
// normal: every normal tensor N(0, init_std); gpt2: the same, but the
// residual output projections (attention and MLP outputs) use
// init_std / sqrt(2 * layers), as GPT-2 and transformers' GPT2 init do.
enum class InitScheme { kNormal, kGpt2 };
enum class RopeScalingType { kNone, kLlama3 };        // llama's rope_scaling.rope_type
enum class Schedule { kCosine, kLinear, kConstant };  // LR decay after warmup
// Which parameters AdamW decays: all, or matrices = 2-D weights and
// embeddings (no decay on biases and norm gains).
enum class WeightDecayOn { kAll, kMatrices };
enum class ExecMode { kL2L, kResident };  // layer-to-layer relay / all on device
enum class DeviceKind { kCpu, kCuda };
enum class Precision { kFp32, kBf16 };  // compute dtype; masters are always fp32
enum class StashPlacement { kHost, kDevice };
// What a training sample is: a window of the token stream, one example
// (document) per row, padded, or consecutive examples packed into a row
// (data::SampleUnit).
enum class Sampling { kWindows, kExamples, kPacked };
// Whether a causal model's attention crosses document boundaries in a row.
enum class DocAttention { kCross, kWithin };
// Whether position ids run on across document starts in a row or restart at 0.
enum class DocPositions { kContinue, kRestart };

// Llama-3's rope_scaling (transformers' "llama3" rope type); the fields and
// their meaning are those of config.json.
struct RopeScalingConfig {
  RopeScalingType type = RopeScalingType::kNone;
  double factor = 8.0;                // > 0
  double low_freq_factor = 1.0;       // > 0
  double high_freq_factor = 4.0;      // > low_freq_factor
  int original_max_positions = 8192;  // original_max_position_embeddings, >= 1

  friend bool operator==(const RopeScalingConfig&, const RopeScalingConfig&) = default;
};

// Fields marked (required) have no default: the YAML must set them. Their
// initialisers here (0, empty) only make a default-built struct well defined.
// Defaults that depend on the kind are applied by ParseConfig (see
// docs/config.md); keys that do not apply to the kind are refused.
struct ModelConfig {
  ModelKind kind = ModelKind::kBert;  // required
  int layers = 0;                     // transformer blocks, >= 1 (required)
  int hidden = 0;                     // model width, >= 1 (required)
  int heads = 0;                      // attention heads, >= 1, divides hidden (required)
  int ffn = 0;                        // feed-forward inner width, >= 1 (required)
  int vocab = 0;                      // vocabulary size in tokens, >= 2 (required)
  int seq_len = 0;                    // tokens per sample, >= 1 (required)
  int max_positions = 0;  // position embeddings (bert, gpt); >= seq_len; default seq_len
  int kv_heads = 0;       // llama: key/value heads, divides heads; default heads
  int type_vocab = 2;     // bert: token types, >= 1
  // bert, llama: transformers' pad_token_id as the embedding's padding_idx
  // (its row gets no lookup gradient and starts at 0); -1 = none. Default 0
  // for bert (BertConfig's), -1 for llama.
  int pad_token_id = -1;
  // bert, gpt: every dropout site; llama: the attention probabilities only
  // (transformers' attention_dropout). In [0, 1); default 0.1 (bert, gpt), 0 (llama).
  double dropout = 0.1;
  Activation activation = Activation::kGelu;  // bert, gpt; default gelu (bert), gelu_tanh (gpt)
  double norm_eps =
      1e-12;  // layernorm / RMSNorm eps, > 0; default 1e-12 bert, 1e-5 gpt, 1e-6 llama
  bool tie_embeddings = true;  // decoder = word embeddings; default true (bert, gpt), false (llama)
  bool attention_bias = false;     // llama: q, k, v biases (Qwen2's; Llama's would add o_proj's)
  double rope_theta = 10000.0;     // llama: rotary base, > 0
  RopeScalingConfig rope_scaling;  // llama
  InitScheme init = InitScheme::kNormal;  // default gpt2 for gpt, normal otherwise
  double init_std = 0.02;                 // > 0 (transformers' initializer_range)

  friend bool operator==(const ModelConfig&, const ModelConfig&) = default;
};

struct DataConfig {
  std::string path;             // token file (required, non-empty)
  double mask_prob = 0.15;      // MLM masking probability, in (0, 1); bert only
  double eval_fraction = 0.05;  // share of samples held out for eval, in [0, 1)
  // A separate held-out token file; "" = none. When set, evaluation (periodic
  // and --eval-only) reads all of it instead of data.path's held-out share.
  std::string eval_path;
  // examples, packed: causal models, version-2 files; packed: doc_attention within
  Sampling sampling = Sampling::kWindows;
  DocAttention doc_attention = DocAttention::kCross;     // within: causal, version-2 files
  DocPositions doc_positions = DocPositions::kContinue;  // restart: version-2 files
  // MLM (bert) mask token: -1 = the token file's vocab_size (a token the data
  // never holds; model.vocab must exceed it), else the id of the tokenizer's
  // [MASK] (< model.vocab; set by an import).
  int mask_token_id = -1;

  friend bool operator==(const DataConfig&, const DataConfig&) = default;
};

struct TrainConfig {
  int64_t steps = 0;         // optimizer steps, >= 1 (required)
  uint64_t seed = 1234;      // init, dropout and data order all derive from it
  double lr = 1e-4;          // peak learning rate, > 0
  int64_t warmup_steps = 0;  // linear warmup from 0 to lr, in [0, steps]
  Schedule schedule = Schedule::kCosine;
  double min_lr_ratio = 0.1;   // final lr = lr * min_lr_ratio (cosine, linear), in [0, 1]
  double weight_decay = 0.01;  // decoupled (AdamW), >= 0
  WeightDecayOn weight_decay_on = WeightDecayOn::kMatrices;
  double beta1 = 0.9, beta2 = 0.999;  // YAML: train.betas: [b1, b2], each in [0, 1)
  double eps = 1e-8;                  // > 0
  double grad_clip = 1.0;             // global-norm clip, >= 0; 0 = no clipping
  int global_batch = 0;               // samples per optimizer step over all ranks, >= 1 (required)
  int micro_batch = 0;  // samples per rank per forward pass, >= 1, divides global_batch (required)
  // Fine-tuning: start from this checkpoint's weights (a file, or a directory
  // whose `latest` names one) with fresh AdamW state at step 0; "" = no.
  std::string init_from;
  int64_t eval_every_steps = 0;  // 0 = never; > 0 needs data.eval_fraction > 0
  int eval_batches = 1;          // global batches per evaluation, >= 1

  friend bool operator==(const TrainConfig&, const TrainConfig&) = default;
};

struct ExecConfig {
  ExecMode mode = ExecMode::kL2L;
  DeviceKind device = DeviceKind::kCpu;
  Precision precision = Precision::kFp32;  // bf16 needs device cuda
  int prefetch_depth = 1;                  // layers gathered ahead of the one running, >= 0
  StashPlacement stash = StashPlacement::kHost;
  // Device arena cap in bytes; 0 = unlimited. YAML: exec.device_memory_limit,
  // a byte size ("2GiB", "512MiB", 1000000) or "unlimited".
  int64_t device_memory_limit_bytes = 0;
  int optimizer_threads = 0;  // CPU optimizer threads, >= 0; 0 = auto

  friend bool operator==(const ExecConfig&, const ExecConfig&) = default;
};

struct CheckpointConfig {
  std::string dir = "checkpoints";  // non-empty
  int64_t every_steps = 0;          // 0 = only at the end of the run, >= 0
  int keep_last = 2;                // checkpoints kept on disk, >= 1
  // Save after the last step. A stop request (SIGTERM/SIGUSR1) saves anyway.
  bool at_end = true;

  friend bool operator==(const CheckpointConfig&, const CheckpointConfig&) = default;
};

struct LogConfig {
  std::string dir = "runs";  // metrics JSONL goes here; non-empty
  int64_t every_steps = 10;  // >= 1

  friend bool operator==(const LogConfig&, const LogConfig&) = default;
};

struct Config {
  ModelConfig model;
  DataConfig data;
  TrainConfig train;
  ExecConfig exec;
  CheckpointConfig checkpoint;
  LogConfig log;
  std::string source;  // file path (or source_name) it came from; not a YAML key
};

// Field-wise equality. Each section struct has a defaulted operator== (so a
// new field is compared without anyone remembering to). The Config operator
// compares the six sections and ignores `source` (provenance, not a setting):
// a config re-read from a checkpoint equals the one read from the file.
bool operator==(const Config&, const Config&);

// Reads the YAML file at `path` and returns ParseConfig(text, path, overrides).
// A missing or unreadable file is NotFound / IoError naming the path.
StatusOr<Config> LoadConfig(const std::string& path, const std::vector<std::string>& overrides);

// Parses `yaml_text`, applies `overrides` in order, checks every key, type,
// range and cross-field rule. `source_name` prefixes messages and becomes
// Config::source. Each override is "section.key=value": the value is parsed as
// a YAML scalar or flow sequence ("train.betas=[0.9,0.95]"), replaces the
// file's value or adds a key the file lacks; a later override of the same key
// wins. Status codes: NotFound for a missing required key, InvalidArgument for
// everything else.
StatusOr<Config> ParseConfig(std::string_view yaml_text, std::string_view source_name,
                             const std::vector<std::string>& overrides);

// Sets every model default that depends on the kind or on other keys
// (kv_heads = heads, max_positions = seq_len, dropout, activation, norm_eps,
// tie_embeddings, init) from m->kind and the sizes, as ParseConfig does for
// absent keys; for configs built in code.
void ApplyModelDefaults(ModelConfig* m);

// The first key of the model section that differs between a and b among
// those that define the network's tensors and math (all but seq_len,
// dropout, init and init_std, which a fine-tune may change, and llama's
// max_positions, which is only recorded), as
// "model.<key>: <a's value> vs <b's value>"; "" when they agree.
std::string FirstNetworkDifference(const ModelConfig& a, const ModelConfig& b);

// The complete configuration as YAML (every key, defaults included, in schema
// order). Re-parseable: ParseConfig(ToYaml(c), ...) == c for any valid c.
std::string ToYaml(const Config& c);

// The rule that needs the world size: global_batch must split evenly into
// world_size * micro_batch. The error names both keys, the world size and the
// numbers. world_size < 1 is an error too.
Status ValidateForWorld(const Config& c, int world_size);

// Micro-batches each rank runs per optimizer step:
// global_batch / (world_size * micro_batch).
// Precondition (CHECKed): ValidateForWorld(c, world_size).ok().
int MicroBatchesPerRank(const Config& c, int world_size);

// The YAML spelling of each enum value ("bert", "post", "cosine", "l2l", ...).
const char* Name(ModelKind v);
const char* Name(Activation v);
const char* Name(InitScheme v);
const char* Name(RopeScalingType v);
const char* Name(Schedule v);
const char* Name(WeightDecayOn v);
const char* Name(ExecMode v);
const char* Name(DeviceKind v);
const char* Name(Precision v);
const char* Name(StashPlacement v);
const char* Name(Sampling v);
const char* Name(DocAttention v);
const char* Name(DocPositions v);

}  // namespace l2l::config
