// The tensor-name map between l2l's layouts and transformers' state dicts,
// written once per architecture (DESIGN §9): every l2l tensor is exactly one
// transformers tensor, with the same shape and element order (l2l keeps each
// model's weights in its twin's orientation, model.h), so moving weights in
// and out is a renaming. Used by the fixture tests, import and export.
//
// transformers' classes: bert = BertForMaskedLM, gpt2 = GPT2LMHeadModel,
// llama = LlamaForCausalLM (the same names serve MistralForCausalLM and
// Qwen2ForCausalLM).
#pragma once

#include <string>
#include <vector>

#include "l2l/model/model.h"

namespace l2l::interop {

// One l2l tensor and its transformers name.
struct HfTensor {
  int layer = 0;    // l2l layer: 0 embedding, 1..L blocks, L+1 head
  std::string l2l;  // name in the layer's ParamLayout, e.g. "attn.q.weight"
  std::string hf;   // e.g. "model.layers.0.self_attn.q_proj.weight"
};

// Every tensor of layer `layer`, in layout order.
std::vector<HfTensor> HfTensorsOfLayer(const model::ModelDims& d, int layer);
// Every tensor of the model, layer by layer.
std::vector<HfTensor> HfTensorsOf(const model::ModelDims& d);

// Names transformers also has for a tied tensor: with tie_embeddings the
// decoder ("lm_head.weight", BERT's "cls.predictions.decoder.weight") is
// layer 0's tok_emb; BERT's "cls.predictions.decoder.bias" is always the
// head's decoder.bias. Checkpoints written by transformers may hold them or
// not.
std::vector<HfTensor> HfTiedAliases(const model::ModelDims& d);

}  // namespace l2l::interop
