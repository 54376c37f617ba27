// l2l checkpoint -> Hugging Face model directory (`l2l-ckpt export --format
// hf`): what transformers' from_pretrained loads with no missing or
// unexpected keys.
//
// OUT gets config.json (hf_config.h's HfConfigJson: model_type,
// architectures, every key the class reads, torch_dtype; the keys of the
// config.json the model was imported from are kept), the weights as
// model.safetensors or, above `max_shard_bytes`, as model-0000k-of-0000n
// shards with model.safetensors.index.json, under transformers' tensor names
// in their own layouts (tied weights stored once, as save_pretrained does),
// and the tokenizer and generation files of the imported model when the
// checkpoint has them (its directory's hf/, or that of the checkpoint its
// run was initialised from, train.init_from). Everything is written to
// OUT.tmp-<pid>, re-read and compared with the checkpoint (bitwise for fp32,
// == F32ToBF16 for bf16), then renamed to OUT; an existing OUT is refused.
//
// Local (one process; MPI initialised). Memory: pieces of 16 MiB, whatever
// the model's size (the checkpoint is streamed, ckpt::StreamMaster).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "l2l/core/status.h"
#include "l2l/interop/safetensors.h"

namespace l2l::interop {

struct HfExportOptions {
  SafetensorsDType dtype = SafetensorsDType::kF32;  // kF32 or kBF16
  int64_t max_shard_bytes = 5'000'000'000;          // transformers' "5GB"
  std::string model_type;  // "" = the imported model's, else the kind's (llama: llama or qwen2)
};

struct HfExportReport {
  std::string checkpoint;          // the file exported
  std::string model_type;          // e.g. "llama"
  std::vector<std::string> files;  // written into OUT, in order
  int shards = 0;                  // weight files
  int64_t tensors = 0;
  int64_t data_bytes = 0;
  // The hf/ directory of the import the checkpoint descends from (its
  // config.json is the base of the exported one), "" when none was found.
  std::string side_dir;
  std::vector<std::string> side_files;  // tokenizer / generation files copied from it
};

StatusOr<HfExportReport> ExportHf(const std::string& checkpoint, const std::string& out_dir,
                                  const HfExportOptions& options);

}  // namespace l2l::interop
