#include "hf_weights.h"

#include <fstream>
#include <iterator>
#include <map>
#include <set>

#include "l2l/core/fs.h"
#include "l2l/interop/json.h"

namespace l2l::interop::internal {
namespace {

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
bool StartsWith(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

// Tensors some checkpoints carry that are not parameters of the class.
bool IsKnownNonParameter(model::Arch arch, const std::string& name) {
  switch (arch) {
    case model::Arch::kGpt2:  // causal-mask buffers of older transformers versions
      return EndsWith(name, ".attn.bias") || EndsWith(name, ".attn.masked_bias");
    case model::Arch::kBert:  // BertForPreTraining's pooler and next-sentence head
      return StartsWith(name, "bert.pooler.") || StartsWith(name, "cls.seq_relationship.");
    case model::Arch::kLlama:  // older Llama checkpoints store the rotary inv_freq buffer
      return EndsWith(name, ".rotary_emb.inv_freq");
  }
  return false;
}

}  // namespace

StatusOr<HfWeights> HfWeights::Open(const std::string& hf_dir) {
  HfWeights w;
  w.dir_ = hf_dir;
  const std::string single = hf_dir + "/model.safetensors";
  const std::string index = hf_dir + "/model.safetensors.index.json";
  if (fs::IsFile(index)) {
    ASSIGN_OR_RETURN(Json root, ReadJsonFile(index));
    const Json* map = root.Find("weight_map");
    if (map == nullptr || !map->is_object()) {
      return InvalidArgument(index + ": expected an object \"weight_map\": {tensor: shard file}");
    }
    std::map<std::string, std::set<std::string>> by_shard;  // file -> tensors
    for (const auto& [name, file] : map->members) {
      if (!file.is_string() || file.text.empty() || file.text.find('/') != std::string::npos) {
        return InvalidArgument(index + ": weight_map[\"" + name +
                               "\"]: expected a shard file name in " + hf_dir);
      }
      by_shard[file.text].insert(name);
    }
    for (const auto& [file, names] : by_shard) {
      const std::string path = hf_dir + "/" + file;
      if (!fs::IsFile(path)) {
        return NotFound(path + ": missing shard (listed in " + index + " for " +
                        std::to_string(names.size()) + " tensors)");
      }
      ASSIGN_OR_RETURN(SafetensorsFile f, SafetensorsFile::Open(path));
      std::set<std::string> held;
      for (const SafetensorsTensor& t : f.header().tensors) held.insert(t.name);
      for (const std::string& n : names) {
        if (!held.count(n)) {
          return InvalidArgument(path + ": disagrees with " + index + ": tensor '" + n +
                                 "' is listed for this shard but not in it");
        }
      }
      for (const std::string& n : held) {
        if (!names.count(n)) {
          return InvalidArgument(path + ": disagrees with " + index + ": holds tensor '" + n +
                                 "', which the index does not list for it");
        }
      }
      w.files_.push_back(std::make_unique<SafetensorsFile>(std::move(f)));
    }
  } else if (fs::IsFile(single)) {
    ASSIGN_OR_RETURN(SafetensorsFile f, SafetensorsFile::Open(single));
    w.files_.push_back(std::make_unique<SafetensorsFile>(std::move(f)));
  } else {
    return NotFound(hf_dir +
                    ": no model.safetensors or model.safetensors.index.json (l2l reads "
                    "safetensors weights; convert a pytorch_model.bin with transformers' "
                    "save_pretrained(safe_serialization=True))");
  }
  return w;
}

std::optional<HfWeight> HfWeights::Lookup(const std::string& name) const {
  for (const auto& f : files_) {
    if (const SafetensorsTensor* t = f->Find(name)) return HfWeight{f.get(), t};
  }
  return std::nullopt;
}

Status HfWeights::Bind(const model::ModelDims& d, std::vector<std::string>* ignored) {
  names_ = HfTensorsOf(d);
  bound_.clear();
  std::set<std::string> used;
  for (const HfTensor& t : names_) {
    std::vector<std::string> spellings = {t.hf};
    if (d.arch == model::Arch::kGpt2 && StartsWith(t.hf, "transformer.")) {
      spellings.push_back(t.hf.substr(std::string("transformer.").size()));
    }
    if (d.arch == model::Arch::kBert && EndsWith(t.hf, "LayerNorm.weight")) {
      spellings.push_back(t.hf.substr(0, t.hf.size() - 6) + "gamma");
    }
    if (d.arch == model::Arch::kBert && EndsWith(t.hf, "LayerNorm.bias")) {
      spellings.push_back(t.hf.substr(0, t.hf.size() - 4) + "beta");
    }
    std::optional<HfWeight> found;
    for (const std::string& s : spellings) {
      if ((found = Lookup(s))) break;
    }
    if (!found) {
      return InvalidArgument(dir_ + ": the weights lack tensor '" + t.hf + "' (l2l " +
                             model::LayerKindName(model::KindOf(d, t.layer)) + " tensor " + t.l2l +
                             ")");
    }
    const model::ParamLayout layout = model::LayoutForLayer(d, t.layer);
    const model::TensorSpec& spec = *layout.Find(t.l2l);
    std::vector<int64_t> want;
    for (int i = 0; i < spec.shape.rank(); ++i) want.push_back(spec.shape.dim(i));
    const SafetensorsTensor& st = *found->tensor;
    if (st.shape != want) {
      std::string got = "[", exp = "[";
      for (size_t i = 0; i < st.shape.size(); ++i)
        got += (i ? ", " : "") + std::to_string(st.shape[i]);
      for (size_t i = 0; i < want.size(); ++i) exp += (i ? ", " : "") + std::to_string(want[i]);
      return InvalidArgument(found->file->path() + ": tensor '" + st.name + "' has shape " + got +
                             "], config.json implies " + exp + "]");
    }
    if (st.dtype != SafetensorsDType::kF32 && st.dtype != SafetensorsDType::kBF16 &&
        st.dtype != SafetensorsDType::kF16) {
      return InvalidArgument(found->file->path() + ": tensor '" + st.name + "' is " +
                             SafetensorsDTypeName(st.dtype) + ", expected F32, BF16 or F16");
    }
    used.insert(st.name);
    bound_.push_back(*found);
  }
  std::set<std::string> aliases;
  for (const HfTensor& a : HfTiedAliases(d)) aliases.insert(a.hf);
  if (d.tie_embeddings) aliases.insert("lm_head.weight");  // some exports keep the copy
  for (const auto& f : files_) {
    for (const SafetensorsTensor& t : f->header().tensors) {
      if (used.count(t.name)) continue;
      if (aliases.count(t.name) || IsKnownNonParameter(d.arch, t.name)) {
        ignored->push_back(t.name);
        continue;
      }
      return InvalidArgument(f->path() + ": tensor '" + t.name + "' is not a parameter of " +
                             (d.arch == model::Arch::kBert   ? "BertForMaskedLM"
                              : d.arch == model::Arch::kGpt2 ? "GPT2LMHeadModel"
                                                             : "the Llama family") +
                             " with this config.json (l2l would drop it)");
    }
  }
  return OkStatus();
}

int64_t HfWeights::data_bytes() const {
  int64_t b = 0;
  for (const HfWeight& w : bound_) b += w.tensor->end_bytes - w.tensor->begin_bytes;
  return b;
}

}  // namespace l2l::interop::internal
