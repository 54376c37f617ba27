// The weights of a Hugging Face directory: model.safetensors, or the shards
// that model.safetensors.index.json lists, opened and cross-checked, with
// the spellings older checkpoints use resolved (interop internal).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "l2l/core/status.h"
#include "l2l/interop/hf_names.h"
#include "l2l/interop/safetensors.h"
#include "l2l/model/model.h"

namespace l2l::interop::internal {

// One tensor of the files.
struct HfWeight {
  const SafetensorsFile* file = nullptr;
  const SafetensorsTensor* tensor = nullptr;
};

class HfWeights {
 public:
  // Opens the files and checks that the index and the shards agree: every
  // shard the index names exists and holds exactly the tensors the index
  // assigns to it. Errors name the file.
  static StatusOr<HfWeights> Open(const std::string& hf_dir);

  // Binds every tensor of the model: present under its transformers name (or
  // an older spelling: GPT-2 without the "transformer." prefix, BERT's
  // LayerNorm gamma / beta), a float dtype, and the l2l tensor's shape.
  // Tensors of the files that the model does not use are refused, except
  // known non-parameters (GPT-2's attention masks, BERT's pooler and
  // next-sentence head, Llama's stored inv_freq) and the names of tied
  // aliases; those are listed in `ignored`. InvalidArgument names the tensor.
  Status Bind(const model::ModelDims& d, std::vector<std::string>* ignored);

  // The bound tensor of l2l tensor `index` in HfTensorsOf(d) order.
  const std::vector<HfTensor>& tensors() const { return names_; }
  const HfWeight& weight(size_t index) const { return bound_[index]; }
  int64_t data_bytes() const;  // of the bound tensors

 private:
  HfWeights() = default;
  std::optional<HfWeight> Lookup(const std::string& name) const;

  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::vector<HfTensor> names_;
  std::vector<HfWeight> bound_;
};

}  // namespace l2l::interop::internal
