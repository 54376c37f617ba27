// Fuzz target: the token-file reader (data::TokenFile) and the sampler on top
// of it. The input is the file's bytes, written to a scratch file and opened
// as the trainer opens data.path.
//
// Properties: no crash, no sanitizer report, no CHECK; a file Open accepts
// reads back whole, every token < vocab_size, and yields micro-batches (of
// windows, examples and packed examples, with position ids in [0, seq_len)).
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "l2l/data/data.h"

namespace {
const std::string& ScratchPath() {
  static const std::string path = "token_file_fuzz_" + std::to_string(::getpid()) + ".tok";
  return path;
}
void RemoveScratch() { std::remove(ScratchPath().c_str()); }
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  std::atexit(RemoveScratch);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace l2l::data;
  const std::string& path = ScratchPath();
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr || (size > 0 && std::fwrite(data, 1, size, f) != size) || std::fclose(f) != 0) {
    std::perror(path.c_str());
    std::abort();
  }
  l2l::StatusOr<TokenFile> file = TokenFile::Open(path);
  if (!file.ok()) return 0;

  std::vector<uint32_t> tokens(static_cast<size_t>(file->num_tokens()));
  const l2l::Status read = file->Read(0, file->num_tokens(), tokens.data());
  if (!read.ok()) {
    std::fprintf(stderr, "token_file_fuzz: an opened file does not read: %s\n",
                 read.ToString().c_str());
    std::abort();
  }
  for (uint32_t t : tokens) {
    if (t >= file->vocab_size()) std::abort();
  }
  (void)UnigramEntropyNats(*file);
  // An accepted document index is what docs/data-format.md promises.
  const std::vector<int64_t>& starts = file->document_starts();
  if (file->has_documents() != (file->version() == kTokenFileVersionDocuments)) std::abort();
  for (size_t d = 0; d < starts.size(); ++d) {
    if (d == 0 ? starts[0] != 0 : starts[d] <= starts[d - 1]) std::abort();
    if (starts[d] >= file->num_tokens()) std::abort();
  }

  for (Objective objective : {Objective::kCausal, Objective::kMlm}) {
    BatchSpec spec;
    spec.objective = objective;
    spec.seq_len = 4;
    spec.micro_batch = 2;
    spec.global_batch = 4;
    spec.eval_fraction = 0.25;
    spec.model_vocab = static_cast<int>(std::min<uint32_t>(file->vocab_size(), 1 << 20)) + 1;
    l2l::StatusOr<Sampler> s = Sampler::Create(&*file, spec);
    if (!s.ok()) continue;
    for (int64_t step : {int64_t{0}, int64_t{1}, int64_t{1} << 40}) {
      for (int micro = 0; micro < s->MicroBatchesPerStep(2); ++micro) {
        if (!s->TrainMicroBatch(step, 1, 2, micro).ok()) std::abort();
      }
    }
    if (s->num_eval_samples() > 0 && !s->EvalMicroBatch(0, 0, 1, 0).ok()) std::abort();
  }
  // Documents as samples (examples, packed) and position ids, all held out:
  // every eval batch of a file they accept reads.
  if (!file->has_documents()) return 0;
  for (SampleUnit unit : {SampleUnit::kWindows, SampleUnit::kDocuments, SampleUnit::kPacked}) {
    BatchSpec spec;
    spec.seq_len = 4;
    spec.micro_batch = 2;
    spec.global_batch = 4;
    spec.unit = unit;
    spec.doc_attention = DocAttention::kWithin;
    spec.doc_positions = DocPositions::kRestart;
    spec.model_vocab = static_cast<int>(std::min<uint32_t>(file->vocab_size(), 1 << 20));
    l2l::StatusOr<Sampler> s = Sampler::CreateHeldOut(&*file, spec);
    if (!s.ok()) continue;
    for (int64_t b = 0; b < std::min<int64_t>(s->num_eval_batches(), 64); ++b) {
      l2l::StatusOr<MicroBatch> mb = s->EvalMicroBatch(b, 0, 1, 0, EvalCover::kOnce);
      if (!mb.ok()) std::abort();
      for (int32_t p : mb->positions) {
        if (p < 0 || p >= spec.seq_len) std::abort();
      }
    }
  }
  return 0;
}
