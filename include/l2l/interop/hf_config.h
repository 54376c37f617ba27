// transformers' config.json <-> l2l's `model` section. Reading accepts
// exactly what l2l represents without approximation; anything else is refused
// with one line naming the file, the key and its value (a silently different
// model is worse than none).
//
// model_type -> kind: gpt2 -> gpt, bert -> bert, llama / mistral (without
// sliding window) / qwen2 -> llama (qwen2: attention_bias true, as Qwen2's
// q/k/v projections always have biases).
#pragma once

#include <string>

#include "l2l/config/config.h"
#include "l2l/core/status.h"
#include "l2l/interop/json.h"

namespace l2l::interop {

// The model section of the config.json at `path`. seq_len (tokens per
// training sample, which config.json does not record) is `seq_len` when > 0,
// else min(max_position_embeddings, 2048). The result has every key set (no
// kind defaults left to apply) and passes ParseConfig's rules.
StatusOr<config::ModelConfig> ModelConfigFromHfFile(const std::string& path, int seq_len);
// The same from parsed JSON; `source` names it in errors.
StatusOr<config::ModelConfig> ModelConfigFromHf(const Json& root, const std::string& source,
                                                int seq_len);

// transformers' model_type and architectures[0] of a model section, e.g.
// ("llama", "LlamaForCausalLM"); `flavour` picks among the llama family
// ("llama", "mistral", "qwen2"; ignored for other kinds).
struct HfArchitecture {
  std::string model_type;
  std::string architecture;
};
HfArchitecture HfArchitectureOf(const config::ModelConfig& m, const std::string& flavour);

// config.json for a model section: the keys transformers' class reads, as
// the reader above maps them (a write-read round trip gives `m` back, seq_len
// aside), plus `torch_dtype` / `dtype` ("float32" or "bfloat16"). `original`
// (nullable) is the config.json the model came from: its other keys (token
// ids, transformers_version, ...) are kept. `model_type` picks the llama
// flavour ("llama", "mistral", "qwen2"; "" = the original's, else "llama").
// Returns the JSON text.
StatusOr<std::string> HfConfigJson(const config::ModelConfig& m, const Json* original,
                                   const std::string& model_type, const std::string& dtype_name);

}  // namespace l2l::interop
