// Parameter layouts, deterministic initialisation and dimension checks.
#include <algorithm>
#include <cmath>
#include <sstream>

#include "internal.h"
#include "l2l/core/rng.h"
#include "l2l/model/model.h"

namespace l2l::model {

Status ValidateModelDims(const ModelDims& d) {
  auto positive = [](const char* name, int v) -> Status {
    if (v > 0) return OkStatus();
    return InvalidArgument(std::string("model.") + name + " must be > 0, got " + std::to_string(v));
  };
  if (d.num_blocks < 0) {
    return InvalidArgument("model.num_blocks must be >= 0, got " + std::to_string(d.num_blocks));
  }
  RETURN_IF_ERROR(positive("hidden", d.hidden));
  RETURN_IF_ERROR(positive("heads", d.heads));
  RETURN_IF_ERROR(positive("ffn", d.ffn));
  RETURN_IF_ERROR(positive("vocab", d.vocab));
  RETURN_IF_ERROR(positive("seq_len", d.seq_len));
  if (HasTokenTypes(d)) RETURN_IF_ERROR(positive("type_vocab", d.type_vocab));
  if (d.kv_heads < 0) return InvalidArgument("model.kv_heads must be >= 0");
  if (d.pad_token_id < -1 || d.pad_token_id >= d.vocab ||
      (d.pad_token_id >= 0 && d.arch == Arch::kGpt2)) {
    return InvalidArgument(
        "model.pad_token_id must be -1 (none) or a token id of a bert or "
        "llama model, got " +
        std::to_string(d.pad_token_id));
  }
  if (d.hidden % d.heads != 0) {
    return InvalidArgument("model.hidden (" + std::to_string(d.hidden) +
                           ") must be a multiple of model.heads (" + std::to_string(d.heads) + ")");
  }
  if (d.heads % KvHeads(d) != 0) {
    return InvalidArgument("model.kv_heads (" + std::to_string(KvHeads(d)) +
                           ") must divide model.heads (" + std::to_string(d.heads) + ")");
  }
  if (d.arch != Arch::kLlama && KvHeads(d) != d.heads) {
    return InvalidArgument("model.kv_heads: grouped-query attention is for llama only");
  }
  if (d.arch == Arch::kLlama && HeadDim(d) % 2 != 0) {
    return InvalidArgument("llama head dimension " + std::to_string(HeadDim(d)) +
                           " must be even (rotary embeddings)");
  }
  if (MaxPositions(d) < d.seq_len) {
    return InvalidArgument("model.max_positions (" + std::to_string(MaxPositions(d)) +
                           ") is less than model.seq_len (" + std::to_string(d.seq_len) + ")");
  }
  if (!(d.dropout >= 0.0 && d.dropout < 1.0)) {
    std::ostringstream os;
    os << "model.dropout must be in [0, 1), got " << d.dropout;
    return InvalidArgument(os.str());
  }
  if (!(d.norm_eps > 0) || !(d.init_std > 0)) {
    return InvalidArgument("model.norm_eps and model.init_std must be > 0");
  }
  return OkStatus();
}

const char* ArchName(Arch arch) {
  switch (arch) {
    case Arch::kBert:
      return "bert";
    case Arch::kGpt2:
      return "gpt2";
    case Arch::kLlama:
      return "llama";
  }
  return "?";
}

namespace internal {
void CheckDims(const ModelDims& d) {
  const Status s = ValidateModelDims(d);
  L2L_CHECK(s.ok()) << s.message();
}
}  // namespace internal

LayerKind KindOf(const ModelDims& d, int layer) {
  L2L_CHECK(layer >= 0 && layer < NumLayers(d))
      << "layer " << layer << " of " << NumLayers(d) << " layers";
  if (layer == 0) return LayerKind::kEmbedding;
  if (layer == d.num_blocks + 1) return LayerKind::kHead;
  return LayerKind::kBlock;
}

const char* LayerKindName(LayerKind kind) {
  switch (kind) {
    case LayerKind::kEmbedding:
      return "embedding";
    case LayerKind::kBlock:
      return "block";
    case LayerKind::kHead:
      return "head";
  }
  return "?";
}

void ParamLayout::Add(std::string name, Shape shape, Init init, double init_std,
                      Placement placement) {
  L2L_CHECK(Find(name) == nullptr) << "duplicate tensor " << name;
  L2L_CHECK(init != Init::kNormal || init_std > 0) << name << ": normal init needs a stddev";
  const int64_t offset = placement == Placement::kPacked ? end_elems_ : size_elems_;
  end_elems_ = offset + shape.num_elements();
  tensors_.push_back(TensorSpec{std::move(name), shape, offset, init, init_std});
  size_elems_ = (end_elems_ + kParamAlignElems - 1) / kParamAlignElems * kParamAlignElems;
}

const TensorSpec* ParamLayout::Find(std::string_view name) const {
  for (const TensorSpec& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

int64_t ParamLayout::OffsetOf(std::string_view name) const {
  const TensorSpec* t = Find(name);
  L2L_CHECK(t != nullptr) << "no tensor " << name << " in layout";
  return t->offset_elems;
}

// The layouts mirror the transformers modules tensor for tensor (the names
// they correspond to are in interop/hf_names.cc and docs/model.md).
ParamLayout LayoutFor(const ModelDims& d, LayerKind kind) {
  internal::CheckDims(d);
  const int64_t H = d.hidden, F = d.ffn, V = d.vocab, KV = int64_t{KvHeads(d)} * HeadDim(d);
  const double std = d.init_std;
  const double residual_std =
      d.scale_residual_init ? std / std::sqrt(2.0 * std::max(1, d.num_blocks)) : std;
  constexpr Placement kPacked = Placement::kPacked;
  const bool in_out = LinearLayoutOf(d) == kernels::WeightLayout::kInOut;
  // A linear weight from `in` to `out` features, in the model's orientation.
  const auto weight = [&](int64_t in, int64_t out) {
    return in_out ? Shape{in, out} : Shape{out, in};
  };
  ParamLayout l;
  switch (kind) {
    case LayerKind::kEmbedding:
      l.Add("tok_emb", {V, H}, Init::kNormal, std);
      if (HasPositionTable(d)) l.Add("pos_emb", {MaxPositions(d), H}, Init::kNormal, std);
      if (HasTokenTypes(d)) l.Add("type_emb", {d.type_vocab, H}, Init::kNormal, std);
      if (d.arch == Arch::kBert) {
        l.Add("ln.gain", {H}, Init::kOnes);
        l.Add("ln.bias", {H}, Init::kZeros);
      }
      break;
    case LayerKind::kBlock:
      switch (d.arch) {
        case Arch::kGpt2:  // GPT2Block: fused c_attn (in, out) with columns [q | k | v]
          l.Add("ln1.gain", {H}, Init::kOnes);
          l.Add("ln1.bias", {H}, Init::kZeros);
          l.Add("attn.qkv.weight", {H, 3 * H}, Init::kNormal, std);
          l.Add("attn.qkv.bias", {3 * H}, Init::kZeros);
          l.Add("attn.proj.weight", {H, H}, Init::kNormal, residual_std);
          l.Add("attn.proj.bias", {H}, Init::kZeros);
          l.Add("ln2.gain", {H}, Init::kOnes);
          l.Add("ln2.bias", {H}, Init::kZeros);
          l.Add("mlp.fc1.weight", {H, F}, Init::kNormal, std);
          l.Add("mlp.fc1.bias", {F}, Init::kZeros);
          l.Add("mlp.fc2.weight", {F, H}, Init::kNormal, residual_std);
          l.Add("mlp.fc2.bias", {H}, Init::kZeros);
          break;
        case Arch::kBert:  // BertLayer, post-norm: attention, LN1, MLP, LN2
          l.Add("attn.q.weight", {H, H}, Init::kNormal, std);
          l.Add("attn.k.weight", {H, H}, Init::kNormal, std, kPacked);
          l.Add("attn.v.weight", {H, H}, Init::kNormal, std, kPacked);
          l.Add("attn.q.bias", {H}, Init::kZeros);
          l.Add("attn.k.bias", {H}, Init::kZeros, 0, kPacked);
          l.Add("attn.v.bias", {H}, Init::kZeros, 0, kPacked);
          l.Add("attn.proj.weight", weight(H, H), Init::kNormal, residual_std);
          l.Add("attn.proj.bias", {H}, Init::kZeros);
          l.Add("ln1.gain", {H}, Init::kOnes);
          l.Add("ln1.bias", {H}, Init::kZeros);
          l.Add("mlp.fc1.weight", weight(H, F), Init::kNormal, std);
          l.Add("mlp.fc1.bias", {F}, Init::kZeros);
          l.Add("mlp.fc2.weight", weight(F, H), Init::kNormal, residual_std);
          l.Add("mlp.fc2.bias", {H}, Init::kZeros);
          l.Add("ln2.gain", {H}, Init::kOnes);
          l.Add("ln2.bias", {H}, Init::kZeros);
          break;
        case Arch::kLlama:  // LlamaDecoderLayer
          l.Add("ln1.gain", {H}, Init::kOnes);
          l.Add("attn.q.weight", {H, H}, Init::kNormal, std);
          l.Add("attn.k.weight", {KV, H}, Init::kNormal, std, kPacked);
          l.Add("attn.v.weight", {KV, H}, Init::kNormal, std, kPacked);
          if (d.attention_bias) {
            l.Add("attn.q.bias", {H}, Init::kZeros);
            l.Add("attn.k.bias", {KV}, Init::kZeros, 0, kPacked);
            l.Add("attn.v.bias", {KV}, Init::kZeros, 0, kPacked);
          }
          l.Add("attn.proj.weight", {H, H}, Init::kNormal, residual_std);
          l.Add("ln2.gain", {H}, Init::kOnes);
          l.Add("mlp.gate.weight", {F, H}, Init::kNormal, std);
          l.Add("mlp.up.weight", {F, H}, Init::kNormal, std, kPacked);
          l.Add("mlp.down.weight", {H, F}, Init::kNormal, residual_std);
          break;
      }
      break;
    case LayerKind::kHead:
      if (d.arch == Arch::kBert) {  // BertLMPredictionHead's transform
        l.Add("dense.weight", {H, H}, Init::kNormal, std);
        l.Add("dense.bias", {H}, Init::kZeros);
      }
      l.Add("ln.gain", {H}, Init::kOnes);
      if (!UsesRmsNorm(d)) l.Add("ln.bias", {H}, Init::kZeros);
      if (!d.tie_embeddings) l.Add("decoder.weight", {V, H}, Init::kNormal, std);
      if (d.arch == Arch::kBert) l.Add("decoder.bias", {V}, Init::kZeros);
      break;
  }
  return l;
}

void InitParamRange(const ModelDims& d, int layer, uint64_t seed, int64_t begin_elem,
                    int64_t end_elem, float* out) {
  const ParamLayout l = LayoutForLayer(d, layer);
  L2L_CHECK(0 <= begin_elem && begin_elem <= end_elem && end_elem <= l.size_elems())
      << "init range [" << begin_elem << ", " << end_elem << ") of a " << l.size_elems()
      << "-element layer";
  std::fill(out, out + (end_elem - begin_elem), 0.0f);  // padding stays 0
  const auto& ts = l.tensors();
  for (size_t t = 0; t < ts.size(); ++t) {
    const int64_t lo = std::max(begin_elem, ts[t].offset_elems);
    const int64_t hi = std::min(end_elem, ts[t].offset_elems + ts[t].shape.num_elements());
    if (lo >= hi) continue;
    float* dst = out + (lo - begin_elem);
    const int64_t first = lo - ts[t].offset_elems;  // element index within the tensor
    switch (ts[t].init) {
      case Init::kZeros:
        break;
      case Init::kOnes:
        std::fill(dst, dst + (hi - lo), 1.0f);
        break;
      case Init::kNormal: {
        // The padding row of the token embeddings starts at 0 (transformers' init).
        const bool pad_rows = ts[t].name == "tok_emb" && d.pad_token_id >= 0;
        const int64_t pad_begin = int64_t{d.pad_token_id} * d.hidden,
                      pad_end = pad_begin + d.hidden;
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < hi - lo; ++i) {
          const int64_t e = first + i;
          if (pad_rows && e >= pad_begin && e < pad_end) {
            dst[i] = 0.0f;
            continue;
          }
          const uint64_t key = HashKeys(seed, RngPurpose::kInit, static_cast<uint64_t>(layer),
                                        static_cast<uint64_t>(t), static_cast<uint64_t>(e));
          dst[i] = static_cast<float>(ts[t].init_std * NormalFromKey(key));
        }
        break;
      }
    }
  }
}

}  // namespace l2l::model
