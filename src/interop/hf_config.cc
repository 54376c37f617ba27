// config.json -> config::ModelConfig for gpt2, bert, llama, mistral and
// qwen2, with the refusals of hf_config.h. Keys transformers has but that do
// not change the model's math (token ids, use_cache, torch_dtype, ...) are
// ignored; keys that would change it are checked one by one below.
#include "l2l/interop/hf_config.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <fstream>
#include <iterator>
#include <limits>

namespace l2l::interop {
namespace {

using config::ModelConfig;
using config::ModelKind;

// Typed reads of one config.json object; every error is one line
// "<file>: <key>: <problem>, got <value>".
class Reader {
 public:
  Reader(const Json& obj, std::string source) : obj_(obj), source_(std::move(source)) {}

  Status Error(const std::string& key, const std::string& what) const {
    return InvalidArgument(source_ + ": " + key + ": " + what);
  }
  Status Unsupported(const std::string& key, const std::string& what) const {
    return Error(key, what + " (l2l cannot represent this model exactly)");
  }
  const Json* Find(const std::string& key) const { return obj_.Find(key); }
  bool Present(const std::string& key) const {
    const Json* v = Find(key);
    return v != nullptr && !v->is_null();
  }
  static std::string Shown(const Json& v) {
    if (v.is_string()) return "\"" + v.text + "\"";
    if (v.kind == Json::Kind::kObject) return "an object";
    if (v.kind == Json::Kind::kArray) return "an array";
    return v.text;
  }

  // A positive integer in [min, kMaxSize]; `fallback` when absent or null
  // (< 0: required).
  Status Int(const std::string& key, int min, int fallback, int* out) const {
    const Json* v = Find(key);
    if (v == nullptr || v->is_null()) {
      if (fallback < 0) return Error(key, "missing");
      *out = fallback;
      return OkStatus();
    }
    int64_t x = 0;
    if (!JsonCount(*v, &x)) return Error(key, "expected a non-negative integer, got " + Shown(*v));
    if (x < min || x > kMaxSize) {
      return Error(key, "must be in [" + std::to_string(min) + ", " + std::to_string(kMaxSize) +
                            "], got " + v->text);
    }
    *out = static_cast<int>(x);
    return OkStatus();
  }
  Status Double(const std::string& key, double fallback, double* out) const {
    const Json* v = Find(key);
    if (v == nullptr || v->is_null()) {
      *out = fallback;
      return OkStatus();
    }
    if (!JsonNumber(*v, out)) return Error(key, "expected a number, got " + Shown(*v));
    return OkStatus();
  }
  Status Bool(const std::string& key, bool fallback, bool* out) const {
    const Json* v = Find(key);
    if (v == nullptr || v->is_null()) {
      *out = fallback;
      return OkStatus();
    }
    if (!v->is_bool()) return Error(key, "expected true or false, got " + Shown(*v));
    *out = v->text == "true";
    return OkStatus();
  }
  Status String(const std::string& key, const std::string& fallback, std::string* out) const {
    const Json* v = Find(key);
    if (v == nullptr || v->is_null()) {
      *out = fallback;
      return OkStatus();
    }
    if (!v->is_string()) return Error(key, "expected a string, got " + Shown(*v));
    *out = v->text;
    return OkStatus();
  }
  // The key must be absent, null or `want` (a JSON literal: "false", "true", "\"x\"").
  Status Expect(const std::string& key, const std::string& want, const std::string& why) const {
    const Json* v = Find(key);
    if (v == nullptr || v->is_null() || Shown(*v) == want) return OkStatus();
    return Unsupported(key, why + ", got " + Shown(*v));
  }

  static constexpr int kMaxSize = 1 << 24;  // config.cc's bound on size keys

 private:
  const Json& obj_;
  std::string source_;
};

// The one dropout of l2l from transformers' several rates, which must agree.
Status OneDropout(const Reader& r, const std::vector<std::string>& keys, double fallback,
                  double* out) {
  *out = -1;
  for (const std::string& k : keys) {
    double p = 0;
    RETURN_IF_ERROR(r.Double(k, fallback, &p));
    if (!(p >= 0 && p < 1)) return r.Error(k, "must be in [0, 1), got " + std::to_string(p));
    if (*out >= 0 && p != *out) {
      return r.Unsupported(k,
                           "l2l has one dropout rate; " + keys.front() + " and " + k + " differ");
    }
    *out = p;
  }
  return OkStatus();
}

Status Activation(const Reader& r, const std::string& key, const std::string& fallback,
                  config::Activation* out) {
  std::string act;
  RETURN_IF_ERROR(r.String(key, fallback, &act));
  if (act == "gelu") {
    *out = config::Activation::kGelu;
  } else if (act == "gelu_new" || act == "gelu_pytorch_tanh" || act == "gelu_fast") {
    *out = config::Activation::kGeluTanh;
  } else {
    return r.Unsupported(key, "expected gelu, gelu_new or gelu_pytorch_tanh, got \"" + act + "\"");
  }
  return OkStatus();
}

Status ReadGpt2(const Reader& r, ModelConfig* m) {
  m->kind = ModelKind::kGpt;
  RETURN_IF_ERROR(r.Int("vocab_size", 2, -1, &m->vocab));
  RETURN_IF_ERROR(r.Int("n_embd", 1, -1, &m->hidden));
  RETURN_IF_ERROR(r.Int("n_layer", 1, -1, &m->layers));
  RETURN_IF_ERROR(r.Int("n_head", 1, -1, &m->heads));
  RETURN_IF_ERROR(r.Int("n_inner", 1, 4 * m->hidden, &m->ffn));
  RETURN_IF_ERROR(r.Int("n_positions", 1, 1024, &m->max_positions));
  RETURN_IF_ERROR(Activation(r, "activation_function", "gelu_new", &m->activation));
  RETURN_IF_ERROR(OneDropout(r, {"resid_pdrop", "embd_pdrop", "attn_pdrop"}, 0.1, &m->dropout));
  RETURN_IF_ERROR(r.Double("layer_norm_epsilon", 1e-5, &m->norm_eps));
  RETURN_IF_ERROR(r.Bool("tie_word_embeddings", true, &m->tie_embeddings));
  RETURN_IF_ERROR(r.Expect("scale_attn_weights", "true", "l2l scales attention by 1/sqrt(d)"));
  RETURN_IF_ERROR(r.Expect("scale_attn_by_inverse_layer_idx", "false",
                           "per-layer attention scaling is not implemented"));
  RETURN_IF_ERROR(r.Expect("add_cross_attention", "false", "cross-attention is not implemented"));
  m->init = config::InitScheme::kGpt2;
  return OkStatus();
}

Status ReadBert(const Reader& r, ModelConfig* m) {
  m->kind = ModelKind::kBert;
  RETURN_IF_ERROR(r.Int("vocab_size", 2, -1, &m->vocab));
  RETURN_IF_ERROR(r.Int("hidden_size", 1, -1, &m->hidden));
  RETURN_IF_ERROR(r.Int("num_hidden_layers", 1, -1, &m->layers));
  RETURN_IF_ERROR(r.Int("num_attention_heads", 1, -1, &m->heads));
  RETURN_IF_ERROR(r.Int("intermediate_size", 1, -1, &m->ffn));
  RETURN_IF_ERROR(r.Int("max_position_embeddings", 1, 512, &m->max_positions));
  RETURN_IF_ERROR(r.Int("type_vocab_size", 1, 2, &m->type_vocab));
  RETURN_IF_ERROR(Activation(r, "hidden_act", "gelu", &m->activation));
  RETURN_IF_ERROR(
      OneDropout(r, {"hidden_dropout_prob", "attention_probs_dropout_prob"}, 0.1, &m->dropout));
  RETURN_IF_ERROR(r.Double("layer_norm_eps", 1e-12, &m->norm_eps));
  RETURN_IF_ERROR(r.Bool("tie_word_embeddings", true, &m->tie_embeddings));
  m->pad_token_id = 0;  // BertConfig's default (a present key overrides it below)
  RETURN_IF_ERROR(r.Expect("position_embedding_type", "\"absolute\"",
                           "only absolute position embeddings are implemented"));
  RETURN_IF_ERROR(r.Expect("is_decoder", "false", "BERT as a decoder is not implemented"));
  RETURN_IF_ERROR(r.Expect("add_cross_attention", "false", "cross-attention is not implemented"));
  m->init = config::InitScheme::kNormal;
  return OkStatus();
}

// rope_parameters (transformers >= 5) or the older rope_theta + rope_scaling.
Status ReadRope(const Reader& r, double default_theta, ModelConfig* m) {
  const Json* params = r.Find("rope_parameters");
  const Json* legacy = r.Find("rope_scaling");
  std::string key = "rope_parameters";
  const Json* rope = params != nullptr && !params->is_null() ? params : nullptr;
  RETURN_IF_ERROR(r.Double("rope_theta", default_theta, &m->rope_theta));
  if (rope == nullptr && legacy != nullptr && !legacy->is_null()) {
    rope = legacy;
    key = "rope_scaling";
  }
  m->rope_scaling = config::RopeScalingConfig{};
  if (rope == nullptr) return OkStatus();
  if (!rope->is_object()) return r.Error(key, "expected an object, got " + Reader::Shown(*rope));
  const auto sub = [&](const std::string& k) { return key + "." + k; };
  std::string type;
  const Json* t = rope->Find("rope_type");
  if (t == nullptr) t = rope->Find("type");  // the oldest spelling
  if (t != nullptr && t->is_string()) type = t->text;
  if (const Json* theta = rope->Find("rope_theta"); theta != nullptr) {
    if (!JsonNumber(*theta, &m->rope_theta) || !(m->rope_theta > 0)) {
      return r.Error(sub("rope_theta"), "expected a positive number, got " + Reader::Shown(*theta));
    }
  }
  if (type.empty() || type == "default") return OkStatus();
  if (type != "llama3") {
    return r.Unsupported(
        sub("rope_type"),
        "only default and llama3 rotary embeddings are implemented, got \"" + type + "\"");
  }
  config::RopeScalingConfig& s = m->rope_scaling;
  s.type = config::RopeScalingType::kLlama3;
  for (const auto& [name, field] :
       {std::pair{"factor", &s.factor}, std::pair{"low_freq_factor", &s.low_freq_factor},
        std::pair{"high_freq_factor", &s.high_freq_factor}}) {
    const Json* v = rope->Find(name);
    if (v == nullptr || !JsonNumber(*v, field) || !(*field > 0)) {
      return r.Error(sub(name), "llama3 rotary scaling needs a positive number, got " +
                                    (v ? Reader::Shown(*v) : std::string("nothing")));
    }
  }
  const Json* orig = rope->Find("original_max_position_embeddings");
  int64_t n = 0;
  if (orig == nullptr || !JsonCount(*orig, &n) || n < 1 || n > Reader::kMaxSize) {
    return r.Error(sub("original_max_position_embeddings"),
                   "llama3 rotary scaling needs a positive integer, got " +
                       (orig ? Reader::Shown(*orig) : std::string("nothing")));
  }
  s.original_max_positions = static_cast<int>(n);
  if (!(s.high_freq_factor > s.low_freq_factor)) {
    return r.Error(sub("high_freq_factor"), "must exceed low_freq_factor");
  }
  if (const Json* att = rope->Find("attention_factor"); att != nullptr && !att->is_null()) {
    double a = 0;
    if (!JsonNumber(*att, &a) || a != 1.0) {
      return r.Unsupported(sub("attention_factor"), "must be 1, got " + Reader::Shown(*att));
    }
  }
  return OkStatus();
}

Status ReadLlamaFamily(const Reader& r, const std::string& model_type, ModelConfig* m) {
  m->kind = ModelKind::kLlama;
  RETURN_IF_ERROR(r.Int("vocab_size", 2, -1, &m->vocab));
  RETURN_IF_ERROR(r.Int("hidden_size", 1, -1, &m->hidden));
  RETURN_IF_ERROR(r.Int("num_hidden_layers", 1, -1, &m->layers));
  RETURN_IF_ERROR(r.Int("num_attention_heads", 1, -1, &m->heads));
  RETURN_IF_ERROR(r.Int("num_key_value_heads", 1, m->heads, &m->kv_heads));
  RETURN_IF_ERROR(r.Int("intermediate_size", 1, -1, &m->ffn));
  RETURN_IF_ERROR(r.Int("max_position_embeddings", 1, 2048, &m->max_positions));
  RETURN_IF_ERROR(r.Double("rms_norm_eps", 1e-6, &m->norm_eps));
  RETURN_IF_ERROR(r.Double("attention_dropout", 0.0, &m->dropout));
  if (!(m->dropout >= 0 && m->dropout < 1)) {
    return r.Error("attention_dropout", "must be in [0, 1), got " + std::to_string(m->dropout));
  }
  RETURN_IF_ERROR(r.Bool("tie_word_embeddings", false, &m->tie_embeddings));
  std::string act;
  RETURN_IF_ERROR(r.String("hidden_act", "silu", &act));
  if (act != "silu") return r.Unsupported("hidden_act", "SwiGLU needs silu, got \"" + act + "\"");
  RETURN_IF_ERROR(r.Expect("mlp_bias", "false", "MLP biases are not implemented"));
  RETURN_IF_ERROR(r.Expect("pretraining_tp", "1", "tensor-parallel pretraining slices"));
  if (model_type == "qwen2") {
    m->attention_bias = true;  // Qwen2Attention: q, k, v always have biases
    bool sliding = false;
    RETURN_IF_ERROR(r.Bool("use_sliding_window", false, &sliding));
    if (sliding) {
      return r.Unsupported("use_sliding_window", "sliding-window attention is not implemented");
    }
  } else {
    // LlamaAttention's attention_bias puts a bias on o_proj too; l2l has the
    // q/k/v biases of Qwen2 only.
    RETURN_IF_ERROR(r.Expect("attention_bias", "false",
                             "attention_bias adds q, k, v and o_proj biases in " + model_type +
                                 "; l2l has Qwen2's q/k/v biases only"));
  }
  if (model_type == "mistral" && r.Present("sliding_window")) {
    int window = 0;
    RETURN_IF_ERROR(r.Int("sliding_window", 1, 0, &window));
    if (window < m->max_positions) {
      return r.Unsupported("sliding_window",
                           "sliding-window attention is not implemented (it would matter below "
                           "max_position_embeddings=" +
                               std::to_string(m->max_positions) + "), got " +
                               std::to_string(window));
    }
  }
  if (r.Present("head_dim")) {
    int head_dim = 0;
    RETURN_IF_ERROR(r.Int("head_dim", 1, 0, &head_dim));
    if (m->hidden % m->heads != 0 || head_dim != m->hidden / m->heads) {
      return r.Unsupported("head_dim", "must be hidden_size / num_attention_heads = " +
                                           std::to_string(m->hidden / std::max(1, m->heads)) +
                                           ", got " + std::to_string(head_dim));
    }
  }
  RETURN_IF_ERROR(ReadRope(r, 10000.0, m));  // every config class's default theta
  m->init = config::InitScheme::kNormal;
  return OkStatus();
}

}  // namespace

StatusOr<ModelConfig> ModelConfigFromHf(const Json& root, const std::string& source, int seq_len) {
  if (!root.is_object()) return InvalidArgument(source + ": expected a JSON object");
  const Reader r(root, source);
  std::string model_type;
  RETURN_IF_ERROR(r.String("model_type", "", &model_type));
  if (model_type.empty()) return r.Error("model_type", "missing");
  ModelConfig m;
  if (model_type == "gpt2") {
    RETURN_IF_ERROR(ReadGpt2(r, &m));
  } else if (model_type == "bert") {
    RETURN_IF_ERROR(ReadBert(r, &m));
  } else if (model_type == "llama" || model_type == "mistral" || model_type == "qwen2") {
    RETURN_IF_ERROR(ReadLlamaFamily(r, model_type, &m));
  } else {
    return r.Unsupported(
        "model_type", "expected gpt2, bert, llama, mistral or qwen2, got \"" + model_type + "\"");
  }
  // bert and the llama family use pad_token_id as the embedding's padding_idx.
  if (m.kind != ModelKind::kGpt && r.Present("pad_token_id")) {
    RETURN_IF_ERROR(r.Int("pad_token_id", 0, 0, &m.pad_token_id));
    if (m.pad_token_id >= m.vocab) {
      return r.Error("pad_token_id", "must be below vocab_size=" + std::to_string(m.vocab));
    }
  }
  // Keys that do not apply to the kind keep their canonical values (as
  // ParseConfig leaves them), so equal models compare equal.
  if (m.kind != ModelKind::kLlama) m.kv_heads = m.heads;
  if (m.kind == ModelKind::kLlama) m.activation = config::Activation::kGeluTanh;
  if (m.hidden % m.heads != 0) {
    return r.Error("num_attention_heads",
                   "does not divide the hidden size " + std::to_string(m.hidden));
  }
  if (m.heads % m.kv_heads != 0) {
    return r.Error("num_key_value_heads",
                   "does not divide num_attention_heads=" + std::to_string(m.heads));
  }
  if (!(m.norm_eps > 0)) return r.Error("norm epsilon", "must be > 0");
  RETURN_IF_ERROR(r.Double("initializer_range", 0.02, &m.init_std));
  if (!(m.init_std > 0)) m.init_std = 0.02;
  m.seq_len = seq_len > 0 ? seq_len : std::min(m.max_positions, 2048);
  if (m.seq_len > m.max_positions) {
    return InvalidArgument(source + ": seq_len " + std::to_string(m.seq_len) +
                           " exceeds max_position_embeddings " + std::to_string(m.max_positions));
  }
  return m;
}

StatusOr<ModelConfig> ModelConfigFromHfFile(const std::string& path, int seq_len) {
  ASSIGN_OR_RETURN(const Json root, ReadJsonFile(path));
  return ModelConfigFromHf(root, path, seq_len);
}

StatusOr<std::string> HfConfigJson(const ModelConfig& m, const Json* original,
                                   const std::string& model_type_in,
                                   const std::string& dtype_name) {
  std::string flavour = model_type_in;
  if (flavour.empty() && original != nullptr) {
    if (const Json* t = original->Find("model_type"); t != nullptr && t->is_string()) {
      flavour = t->text;
    }
  }
  if (m.kind == ModelKind::kLlama) {
    if (flavour.empty()) flavour = m.attention_bias ? "qwen2" : "llama";
    if (flavour != "llama" && flavour != "mistral" && flavour != "qwen2") {
      return InvalidArgument("export: model type '" + flavour +
                             "' is not one of llama, mistral, qwen2 for a kind llama model");
    }
    if (flavour == "qwen2" && !m.attention_bias) {
      return InvalidArgument(
          "export: qwen2 always has q/k/v biases; this model has model.attention_bias false");
    }
    if (flavour != "qwen2" && m.attention_bias) {
      return InvalidArgument("export: " + flavour +
                             " has no q/k/v-only biases (its attention_bias adds o_proj's too); "
                             "export this model as qwen2");
    }
  }
  const HfArchitecture arch = HfArchitectureOf(m, flavour);
  if (!model_type_in.empty() && model_type_in != arch.model_type) {
    return InvalidArgument("export: model type '" + model_type_in + "' does not fit a kind " +
                           config::Name(m.kind) + " model (expected " + arch.model_type + ")");
  }
  JsonObjectWriter w;
  w.Set("architectures", "[" + JsonQuote(arch.architecture) + "]");
  w.SetString("model_type", arch.model_type);
  w.SetInt("vocab_size", m.vocab);
  const auto act = [&] {
    return m.activation == config::Activation::kGelu ? std::string("gelu")
                                                     : std::string("gelu_new");
  };
  switch (m.kind) {
    case ModelKind::kGpt:
      w.SetInt("n_embd", m.hidden);
      w.SetInt("n_layer", m.layers);
      w.SetInt("n_head", m.heads);
      w.SetInt("n_inner", m.ffn);
      w.SetInt("n_positions", m.max_positions);
      w.SetInt("n_ctx", m.max_positions);
      w.SetString("activation_function", act());
      for (const char* k : {"resid_pdrop", "embd_pdrop", "attn_pdrop"}) w.SetNumber(k, m.dropout);
      w.SetNumber("layer_norm_epsilon", m.norm_eps);
      w.SetBool("scale_attn_weights", true);
      break;
    case ModelKind::kBert:
      w.SetInt("hidden_size", m.hidden);
      w.SetInt("num_hidden_layers", m.layers);
      w.SetInt("num_attention_heads", m.heads);
      w.SetInt("intermediate_size", m.ffn);
      w.SetInt("max_position_embeddings", m.max_positions);
      w.SetInt("type_vocab_size", m.type_vocab);
      w.SetString("hidden_act", act());
      w.SetNumber("hidden_dropout_prob", m.dropout);
      w.SetNumber("attention_probs_dropout_prob", m.dropout);
      w.SetNumber("layer_norm_eps", m.norm_eps);
      w.SetString("position_embedding_type", "absolute");
      w.Set("pad_token_id", m.pad_token_id >= 0 ? std::to_string(m.pad_token_id) : "null");
      break;
    case ModelKind::kLlama:
      w.SetInt("hidden_size", m.hidden);
      w.SetInt("num_hidden_layers", m.layers);
      w.SetInt("num_attention_heads", m.heads);
      w.SetInt("num_key_value_heads", m.kv_heads);
      w.SetInt("head_dim", m.hidden / m.heads);
      w.SetInt("intermediate_size", m.ffn);
      w.SetInt("max_position_embeddings", m.max_positions);
      w.SetString("hidden_act", "silu");
      w.SetNumber("rms_norm_eps", m.norm_eps);
      w.SetNumber("attention_dropout", m.dropout);
      w.SetBool("mlp_bias", false);
      if (arch.model_type == "qwen2") {
        w.SetBool("use_sliding_window", false);
      } else {
        w.SetBool("attention_bias", false);
      }
      if (arch.model_type == "mistral") w.Set("sliding_window", "null");
      w.Set("pad_token_id", m.pad_token_id >= 0 ? std::to_string(m.pad_token_id) : "null");
      // The rotary settings in the spelling of transformers 4 and 5 alike.
      w.SetNumber("rope_theta", m.rope_theta);
      if (m.rope_scaling.type == config::RopeScalingType::kLlama3) {
        JsonObjectWriter r;
        r.SetString("rope_type", "llama3");
        r.SetNumber("factor", m.rope_scaling.factor);
        r.SetNumber("low_freq_factor", m.rope_scaling.low_freq_factor);
        r.SetNumber("high_freq_factor", m.rope_scaling.high_freq_factor);
        r.SetInt("original_max_position_embeddings", m.rope_scaling.original_max_positions);
        std::string text = r.Text();
        text.pop_back();  // the trailing newline
        w.Set("rope_scaling", text);
      } else {
        w.Set("rope_scaling", "null");
      }
      break;
  }
  w.SetBool("tie_word_embeddings", m.tie_embeddings);
  w.SetNumber("initializer_range", m.init_std);
  w.SetString("torch_dtype", dtype_name);
  w.SetString("dtype", dtype_name);
  // The original's other keys (token ids, generation defaults, versions).
  if (original != nullptr && original->is_object()) {
    for (const auto& [key, value] : original->members) {
      if (w.Has(key) || key == "rope_parameters") continue;
      w.Set(key, JsonText(value, 2));
    }
  }
  return w.Text();
}

HfArchitecture HfArchitectureOf(const ModelConfig& m, const std::string& flavour) {
  switch (m.kind) {
    case ModelKind::kBert:
      return {"bert", "BertForMaskedLM"};
    case ModelKind::kGpt:
      return {"gpt2", "GPT2LMHeadModel"};
    case ModelKind::kLlama:
      if (flavour == "mistral") return {"mistral", "MistralForCausalLM"};
      if (flavour == "qwen2") return {"qwen2", "Qwen2ForCausalLM"};
      return {"llama", "LlamaForCausalLM"};
  }
  return {};
}

}  // namespace l2l::interop
