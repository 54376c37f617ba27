#include "l2l/model/config_dims.h"

namespace l2l::model {

ModelDims DimsFromConfig(const config::ModelConfig& m) {
  ModelDims d;
  switch (m.kind) {
    case config::ModelKind::kBert:
      d.arch = Arch::kBert;
      break;
    case config::ModelKind::kGpt:
      d.arch = Arch::kGpt2;
      break;
    case config::ModelKind::kLlama:
      d.arch = Arch::kLlama;
      break;
  }
  d.num_blocks = m.layers;
  d.hidden = m.hidden;
  d.heads = m.heads;
  d.kv_heads = d.arch == Arch::kLlama ? m.kv_heads : 0;
  d.ffn = m.ffn;
  d.vocab = m.vocab;
  d.seq_len = m.seq_len;
  d.max_positions = m.max_positions;
  d.type_vocab = m.type_vocab;
  d.pad_token_id = m.kind == config::ModelKind::kGpt ? -1 : m.pad_token_id;
  d.dropout = m.dropout;
  d.norm_eps = m.norm_eps;
  d.gelu = m.activation == config::Activation::kGelu ? kernels::Gelu::kErf : kernels::Gelu::kTanh;
  d.tie_embeddings = m.tie_embeddings;
  d.attention_bias = d.arch == Arch::kLlama && m.attention_bias;
  d.rope.theta = m.rope_theta;
  if (m.rope_scaling.type == config::RopeScalingType::kLlama3) {
    d.rope.scaling = kernels::RopeScaling::kLlama3;
    d.rope.factor = m.rope_scaling.factor;
    d.rope.low_freq_factor = m.rope_scaling.low_freq_factor;
    d.rope.high_freq_factor = m.rope_scaling.high_freq_factor;
    d.rope.original_max_positions = m.rope_scaling.original_max_positions;
  }
  d.init_std = m.init_std;
  d.scale_residual_init = m.init == config::InitScheme::kGpt2;
  return d;
}

}  // namespace l2l::model
