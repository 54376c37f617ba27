// Parameter layouts, deterministic initialisation and dimension checks.
#include <algorithm>
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
  if (!d.causal) RETURN_IF_ERROR(positive("type_vocab", d.type_vocab));
  if (d.hidden % d.heads != 0) {
    return InvalidArgument("model.hidden (" + std::to_string(d.hidden) +
                           ") must be a multiple of model.heads (" + std::to_string(d.heads) + ")");
  }
  if (!(d.dropout >= 0.0 && d.dropout < 1.0)) {
    std::ostringstream os;
    os << "model.dropout must be in [0, 1), got " << d.dropout;
    return InvalidArgument(os.str());
  }
  return OkStatus();
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

void ParamLayout::Add(std::string name, Shape shape, Init init) {
  L2L_CHECK(Find(name) == nullptr) << "duplicate tensor " << name;
  const int64_t offset = size_elems_;
  const int64_t end = offset + shape.num_elements();
  tensors_.push_back(TensorSpec{std::move(name), shape, offset, init});
  size_elems_ = (end + kParamAlignElems - 1) / kParamAlignElems * kParamAlignElems;
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

ParamLayout LayoutFor(const ModelDims& d, LayerKind kind) {
  internal::CheckDims(d);
  const int64_t H = d.hidden, F = d.ffn, V = d.vocab;
  ParamLayout l;
  switch (kind) {
    case LayerKind::kEmbedding:
      l.Add("tok_emb", {V, H}, Init::kNormal);
      l.Add("pos_emb", {d.seq_len, H}, Init::kNormal);
      if (!d.causal) l.Add("type_emb", {d.type_vocab, H}, Init::kNormal);
      l.Add("ln.gain", {H}, Init::kOnes);
      l.Add("ln.bias", {H}, Init::kZeros);
      break;
    case LayerKind::kBlock:
      l.Add("ln1.gain", {H}, Init::kOnes);
      l.Add("ln1.bias", {H}, Init::kZeros);
      l.Add("attn.qkv.weight", {H, 3 * H}, Init::kNormal);
      l.Add("attn.qkv.bias", {3 * H}, Init::kZeros);
      l.Add("attn.proj.weight", {H, H}, Init::kNormal);
      l.Add("attn.proj.bias", {H}, Init::kZeros);
      l.Add("ln2.gain", {H}, Init::kOnes);
      l.Add("ln2.bias", {H}, Init::kZeros);
      l.Add("mlp.fc1.weight", {H, F}, Init::kNormal);
      l.Add("mlp.fc1.bias", {F}, Init::kZeros);
      l.Add("mlp.fc2.weight", {F, H}, Init::kNormal);
      l.Add("mlp.fc2.bias", {H}, Init::kZeros);
      break;
    case LayerKind::kHead:
      if (!d.causal) {
        l.Add("dense.weight", {H, H}, Init::kNormal);
        l.Add("dense.bias", {H}, Init::kZeros);
      }
      l.Add("ln.gain", {H}, Init::kOnes);
      l.Add("ln.bias", {H}, Init::kZeros);
      l.Add("decoder.weight", {H, V}, Init::kNormal);
      l.Add("decoder.bias", {V}, Init::kZeros);
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
      case Init::kNormal:
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < hi - lo; ++i) {
          const uint64_t key = HashKeys(seed, RngPurpose::kInit, static_cast<uint64_t>(layer),
                                        static_cast<uint64_t>(t), static_cast<uint64_t>(first + i));
          dst[i] = static_cast<float>(kInitStddev * NormalFromKey(key));
        }
        break;
    }
  }
}

}  // namespace l2l::model
