// Hugging Face model directory -> l2l checkpoint (`l2l-ckpt import`).
//
// Input: HF_DIR with config.json and the weights as model.safetensors, or as
// shards listed by model.safetensors.index.json (F32, BF16 or F16; names of
// the transformers class, hf_names.h). Output: a new directory OUT with
//   step-00000000.h5, latest   an l2l checkpoint: the weights as fp32 masters,
//                              AdamW moments 0, step 0, no training state
//                              (start from it with train.init_from)
//   config.yaml                a complete run config whose model section is
//                              config.json's (hf_config.h), ready to edit
//   hf/                        config.json, generation_config.json and the
//                              tokenizer files of HF_DIR, for export
// Everything is first written to OUT.tmp-<pid> and renamed at the end: on
// any error nothing is left behind, and an existing OUT is never touched.
//
// Memory: each rank reads and writes pieces of at most 16 MiB, whatever the
// model's size. Collective over `comm` (one rank, or mpirun): the ranks
// split every layer and write their hyperslabs in parallel; the weights do
// not depend on the number of ranks (bitwise; /meta records world_size). Errors are agreed across
// ranks: one line naming the file, key or tensor.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <string>
#include <vector>

#include "l2l/core/status.h"

namespace l2l::interop {

struct HfImportOptions {
  int seq_len = 0;  // the config's model.seq_len; 0: min(max_position_embeddings, 2048)
};

struct HfImportReport {
  std::string checkpoint;  // OUT/step-00000000.h5
  std::string config;      // OUT/config.yaml
  int64_t parameters = 0;
  int64_t bytes_read = 0;     // safetensors data read, all ranks
  int64_t bytes_written = 0;  // checkpoint datasets written, all ranks
  double seconds = 0;
  std::vector<std::string> copied;   // files copied into OUT/hf
  std::vector<std::string> ignored;  // tensors of the file that are not parameters
};

StatusOr<HfImportReport> ImportHf(MPI_Comm comm, const std::string& hf_dir,
                                  const std::string& out_dir, const HfImportOptions& options);

// The files of an HF directory that travel with a model (tokenizer and
// generation settings), by name.
const std::vector<std::string>& HfSideFiles();

// The id of the tokenizer's mask token in HF_DIR (BERT's [MASK]), or -1 when
// the tokenizer files do not say: the token named by tokenizer_config.json
// or else special_tokens_map.json ("mask_token", a string or
// {"content": ...}; "[MASK]" if neither names one), looked up in
// tokenizer.json (added_tokens, then model.vocab), else in vocab.txt (its
// 0-based line number). Reads files only; never fails.
int64_t TokenizerMaskTokenId(const std::string& hf_dir);

}  // namespace l2l::interop
