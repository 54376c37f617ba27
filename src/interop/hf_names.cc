// The name tables of hf_names.h. "{i}" in a block name is the transformers
// layer index (l2l block layer - 1).
#include "l2l/interop/hf_names.h"

#include <string_view>
#include <utility>

#include "l2l/core/check.h"

namespace l2l::interop {
namespace {

using model::Arch;
using model::LayerKind;

struct Rule {
  std::string_view l2l, hf;
};

// Per architecture and layer kind; a rule whose l2l tensor the layout lacks
// (e.g. a bias that is off) is skipped.
std::vector<Rule> RulesFor(Arch arch, LayerKind kind) {
  switch (arch) {
    case Arch::kGpt2:
      switch (kind) {
        case LayerKind::kEmbedding:
          return {{"tok_emb", "transformer.wte.weight"}, {"pos_emb", "transformer.wpe.weight"}};
        case LayerKind::kBlock:
          return {{"ln1.gain", "transformer.h.{i}.ln_1.weight"},
                  {"ln1.bias", "transformer.h.{i}.ln_1.bias"},
                  {"attn.qkv.weight", "transformer.h.{i}.attn.c_attn.weight"},
                  {"attn.qkv.bias", "transformer.h.{i}.attn.c_attn.bias"},
                  {"attn.proj.weight", "transformer.h.{i}.attn.c_proj.weight"},
                  {"attn.proj.bias", "transformer.h.{i}.attn.c_proj.bias"},
                  {"ln2.gain", "transformer.h.{i}.ln_2.weight"},
                  {"ln2.bias", "transformer.h.{i}.ln_2.bias"},
                  {"mlp.fc1.weight", "transformer.h.{i}.mlp.c_fc.weight"},
                  {"mlp.fc1.bias", "transformer.h.{i}.mlp.c_fc.bias"},
                  {"mlp.fc2.weight", "transformer.h.{i}.mlp.c_proj.weight"},
                  {"mlp.fc2.bias", "transformer.h.{i}.mlp.c_proj.bias"}};
        case LayerKind::kHead:
          return {{"ln.gain", "transformer.ln_f.weight"},
                  {"ln.bias", "transformer.ln_f.bias"},
                  {"decoder.weight", "lm_head.weight"}};
      }
      break;
    case Arch::kBert:
      switch (kind) {
        case LayerKind::kEmbedding:
          return {{"tok_emb", "bert.embeddings.word_embeddings.weight"},
                  {"pos_emb", "bert.embeddings.position_embeddings.weight"},
                  {"type_emb", "bert.embeddings.token_type_embeddings.weight"},
                  {"ln.gain", "bert.embeddings.LayerNorm.weight"},
                  {"ln.bias", "bert.embeddings.LayerNorm.bias"}};
        case LayerKind::kBlock:
          return {{"attn.q.weight", "bert.encoder.layer.{i}.attention.self.query.weight"},
                  {"attn.k.weight", "bert.encoder.layer.{i}.attention.self.key.weight"},
                  {"attn.v.weight", "bert.encoder.layer.{i}.attention.self.value.weight"},
                  {"attn.q.bias", "bert.encoder.layer.{i}.attention.self.query.bias"},
                  {"attn.k.bias", "bert.encoder.layer.{i}.attention.self.key.bias"},
                  {"attn.v.bias", "bert.encoder.layer.{i}.attention.self.value.bias"},
                  {"attn.proj.weight", "bert.encoder.layer.{i}.attention.output.dense.weight"},
                  {"attn.proj.bias", "bert.encoder.layer.{i}.attention.output.dense.bias"},
                  {"ln1.gain", "bert.encoder.layer.{i}.attention.output.LayerNorm.weight"},
                  {"ln1.bias", "bert.encoder.layer.{i}.attention.output.LayerNorm.bias"},
                  {"mlp.fc1.weight", "bert.encoder.layer.{i}.intermediate.dense.weight"},
                  {"mlp.fc1.bias", "bert.encoder.layer.{i}.intermediate.dense.bias"},
                  {"mlp.fc2.weight", "bert.encoder.layer.{i}.output.dense.weight"},
                  {"mlp.fc2.bias", "bert.encoder.layer.{i}.output.dense.bias"},
                  {"ln2.gain", "bert.encoder.layer.{i}.output.LayerNorm.weight"},
                  {"ln2.bias", "bert.encoder.layer.{i}.output.LayerNorm.bias"}};
        case LayerKind::kHead:
          return {{"dense.weight", "cls.predictions.transform.dense.weight"},
                  {"dense.bias", "cls.predictions.transform.dense.bias"},
                  {"ln.gain", "cls.predictions.transform.LayerNorm.weight"},
                  {"ln.bias", "cls.predictions.transform.LayerNorm.bias"},
                  {"decoder.weight", "cls.predictions.decoder.weight"},
                  {"decoder.bias", "cls.predictions.bias"}};
      }
      break;
    case Arch::kLlama:
      switch (kind) {
        case LayerKind::kEmbedding:
          return {{"tok_emb", "model.embed_tokens.weight"}};
        case LayerKind::kBlock:
          return {{"ln1.gain", "model.layers.{i}.input_layernorm.weight"},
                  {"attn.q.weight", "model.layers.{i}.self_attn.q_proj.weight"},
                  {"attn.k.weight", "model.layers.{i}.self_attn.k_proj.weight"},
                  {"attn.v.weight", "model.layers.{i}.self_attn.v_proj.weight"},
                  {"attn.q.bias", "model.layers.{i}.self_attn.q_proj.bias"},
                  {"attn.k.bias", "model.layers.{i}.self_attn.k_proj.bias"},
                  {"attn.v.bias", "model.layers.{i}.self_attn.v_proj.bias"},
                  {"attn.proj.weight", "model.layers.{i}.self_attn.o_proj.weight"},
                  {"ln2.gain", "model.layers.{i}.post_attention_layernorm.weight"},
                  {"mlp.gate.weight", "model.layers.{i}.mlp.gate_proj.weight"},
                  {"mlp.up.weight", "model.layers.{i}.mlp.up_proj.weight"},
                  {"mlp.down.weight", "model.layers.{i}.mlp.down_proj.weight"}};
        case LayerKind::kHead:
          return {{"ln.gain", "model.norm.weight"}, {"decoder.weight", "lm_head.weight"}};
      }
      break;
  }
  return {};
}

std::string WithIndex(std::string_view pattern, int index) {
  std::string s(pattern);
  const size_t at = s.find("{i}");
  if (at != std::string::npos) s.replace(at, 3, std::to_string(index));
  return s;
}

}  // namespace

std::vector<HfTensor> HfTensorsOfLayer(const model::ModelDims& d, int layer) {
  const model::LayerKind kind = model::KindOf(d, layer);
  const model::ParamLayout layout = model::LayoutFor(d, kind);
  const std::vector<Rule> rules = RulesFor(d.arch, kind);
  std::vector<HfTensor> out;
  for (const model::TensorSpec& t : layout.tensors()) {
    const Rule* rule = nullptr;
    for (const Rule& r : rules) {
      if (r.l2l == t.name) rule = &r;
    }
    L2L_CHECK(rule != nullptr) << "no transformers name for " << model::ArchName(d.arch) << " "
                               << model::LayerKindName(kind) << " tensor " << t.name;
    out.push_back({layer, t.name, WithIndex(rule->hf, layer - 1)});
  }
  return out;
}

std::vector<HfTensor> HfTensorsOf(const model::ModelDims& d) {
  std::vector<HfTensor> out;
  for (int l = 0; l < model::NumLayers(d); ++l) {
    for (HfTensor& t : HfTensorsOfLayer(d, l)) out.push_back(std::move(t));
  }
  return out;
}

std::vector<HfTensor> HfTiedAliases(const model::ModelDims& d) {
  std::vector<HfTensor> out;
  const int head = d.num_blocks + 1;
  if (d.arch == Arch::kBert) {
    // BertLMPredictionHead ties decoder.bias to bias, tied embeddings or not.
    if (d.tie_embeddings) out.push_back({0, "tok_emb", "cls.predictions.decoder.weight"});
    out.push_back({head, "decoder.bias", "cls.predictions.decoder.bias"});
  } else if (d.tie_embeddings) {
    out.push_back({0, "tok_emb", "lm_head.weight"});
  }
  return out;
}

}  // namespace l2l::interop
