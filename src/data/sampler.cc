// Deterministic sharded sampling: global positions -> samples -> micro-batch rows.
#include "l2l/data/sampler.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <map>
#include <mutex>
#include <utility>

#include "l2l/core/batch_format.h"
#include "l2l/core/rng.h"

namespace l2l::data {
namespace {

// Sub-draws derived from one masking key (see FillRow).
constexpr uint64_t kActionDraw = 1;  // mask / random / keep
constexpr uint64_t kTokenDraw = 2;   // the random replacement token
// BERT's split of the selected positions.
constexpr double kMaskShare = 0.8;
constexpr double kRandomShare = 0.1;
// Eval samples are masked with this epoch; their sample indices never collide
// with train sample indices, so their keys are distinct anyway.
constexpr uint64_t kEvalEpoch = 0;
// Epoch permutations kept in memory (a micro-batch spans at most two epochs).
constexpr size_t kCachedEpochs = 2;

uint64_t UniformIndex(uint64_t bits, uint64_t n) {
  return static_cast<uint64_t>((static_cast<unsigned __int128>(bits) * n) >> 64);
}

std::string FormatDouble(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", x);
  return buf;
}

}  // namespace

const char* ObjectiveName(Objective o) { return o == Objective::kMlm ? "mlm" : "causal"; }

StatusOr<Objective> ParseObjective(std::string_view name) {
  if (name == "mlm") return Objective::kMlm;
  if (name == "causal") return Objective::kCausal;
  return InvalidArgument("objective '" + std::string(name) + "', expected mlm or causal");
}

std::vector<int64_t> EpochPermutation(uint64_t seed, uint64_t epoch, int64_t n) {
  std::vector<int64_t> perm(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) perm[i] = i;
  for (int64_t i = n - 1; i > 0; --i) {
    const uint64_t h = HashKeys(seed, RngPurpose::kDataOrder, epoch, i);
    const int64_t j = static_cast<int64_t>(UniformIndex(h, static_cast<uint64_t>(i) + 1));
    std::swap(perm[i], perm[j]);
  }
  return perm;
}

// ---- SamplerState ----

std::string SamplerState::ToString() const {
  return "seed=" + std::to_string(seed) + " num_tokens=" + std::to_string(num_tokens) +
         " vocab_size=" + std::to_string(vocab_size) + " objective=" + ObjectiveName(objective) +
         " seq_len=" + std::to_string(seq_len) + " global_batch=" + std::to_string(global_batch) +
         " mask_prob=" + FormatDouble(mask_prob) + " eval_fraction=" + FormatDouble(eval_fraction) +
         " num_train_samples=" + std::to_string(num_train_samples) +
         " num_eval_samples=" + std::to_string(num_eval_samples) +
         " mask_token=" + std::to_string(mask_token) +
         (unit == SampleUnit::kDocuments ? " sampling=documents"
          : unit == SampleUnit::kPacked  ? " sampling=packed"
                                         : "");
}

namespace {

template <typename T>
Status ParseNumber(std::string_view key, std::string_view text, T* out) {
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, *out);
  if (ec != std::errc() || ptr != end) {
    return InvalidArgument("sampler state key " + std::string(key) + " has value '" +
                           std::string(text) + "', expected a number");
  }
  return OkStatus();
}

}  // namespace

StatusOr<SamplerState> SamplerState::Parse(std::string_view text) {
  std::map<std::string, std::string, std::less<>> kv;
  size_t pos = 0;
  while (pos < text.size()) {
    while (pos < text.size() && text[pos] == ' ') ++pos;
    if (pos == text.size()) break;
    size_t end = text.find(' ', pos);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view item = text.substr(pos, end - pos);
    const size_t eq = item.find('=');
    if (eq == std::string_view::npos) {
      return InvalidArgument("sampler state item '" + std::string(item) + "', expected key=value");
    }
    kv[std::string(item.substr(0, eq))] = std::string(item.substr(eq + 1));
    pos = end;
  }
  SamplerState s;
  auto get = [&](std::string_view key) -> StatusOr<std::string_view> {
    auto it = kv.find(key);
    if (it == kv.end()) return InvalidArgument("sampler state lacks key " + std::string(key));
    return std::string_view(it->second);
  };
#define L2L_STATE_FIELD(name)                         \
  do {                                                \
    ASSIGN_OR_RETURN(std::string_view v, get(#name)); \
    RETURN_IF_ERROR(ParseNumber(#name, v, &s.name));  \
  } while (0)
  L2L_STATE_FIELD(seed);
  L2L_STATE_FIELD(num_tokens);
  L2L_STATE_FIELD(vocab_size);
  L2L_STATE_FIELD(seq_len);
  L2L_STATE_FIELD(global_batch);
  L2L_STATE_FIELD(mask_prob);
  L2L_STATE_FIELD(eval_fraction);
  L2L_STATE_FIELD(num_train_samples);
  L2L_STATE_FIELD(num_eval_samples);
  ASSIGN_OR_RETURN(std::string_view objective, get("objective"));
  ASSIGN_OR_RETURN(s.objective, ParseObjective(objective));
  // mask_token is newer than the other keys (see the field).
  const bool has_mask = kv.count("mask_token") != 0;
  if (has_mask) {
    L2L_STATE_FIELD(mask_token);
  } else {
    s.mask_token = s.objective == Objective::kMlm ? static_cast<int32_t>(s.vocab_size) : -1;
  }
#undef L2L_STATE_FIELD
  size_t keys = has_mask ? 11 : 10;
  if (auto it = kv.find("sampling"); it != kv.end()) {
    if (it->second == "documents") {
      s.unit = SampleUnit::kDocuments;
    } else if (it->second == "packed") {
      s.unit = SampleUnit::kPacked;
    } else {
      return InvalidArgument("sampler state key sampling has value '" + it->second +
                             "', expected documents or packed");
    }
    ++keys;
  }
  if (kv.size() != keys) {
    return InvalidArgument("sampler state '" + std::string(text) + "' has " +
                           std::to_string(kv.size()) + " keys, expected " + std::to_string(keys));
  }
  return s;
}

// ---- Sampler ----

struct Sampler::PermutationCache {
  std::mutex mu;
  // Recently used epochs, oldest first; shared so a caller keeps its
  // permutation alive after the lock is released.
  std::vector<std::pair<uint64_t, std::shared_ptr<const std::vector<int64_t>>>> epochs;
};

StatusOr<Sampler::Samples> Sampler::CheckSpec(const TokenFile* file, const BatchSpec& spec) {
  L2L_CHECK(file != nullptr);
  const std::string& path = file->path();
  if (spec.seq_len < 1) {
    return InvalidArgument("data seq_len is " + std::to_string(spec.seq_len) + ", expected >= 1");
  }
  if (spec.micro_batch < 1) {
    return InvalidArgument("data micro_batch is " + std::to_string(spec.micro_batch) +
                           ", expected >= 1");
  }
  if (spec.global_batch < 1 || spec.global_batch % spec.micro_batch != 0) {
    return InvalidArgument("data global_batch is " + std::to_string(spec.global_batch) +
                           ", expected a positive multiple of micro_batch " +
                           std::to_string(spec.micro_batch));
  }
  if (!(spec.mask_prob >= 0.0 && spec.mask_prob <= 1.0)) {
    return InvalidArgument("data mask_prob is " + FormatDouble(spec.mask_prob) +
                           ", expected in [0, 1]");
  }
  if (!(spec.eval_fraction >= 0.0 && spec.eval_fraction < 1.0)) {
    return InvalidArgument("data eval_fraction is " + FormatDouble(spec.eval_fraction) +
                           ", expected in [0, 1)");
  }
  const bool extra_mask = spec.objective == Objective::kMlm && spec.mask_token < 0;
  const int64_t needed_vocab = static_cast<int64_t>(file->vocab_size()) + (extra_mask ? 1 : 0);
  if (spec.model_vocab < needed_vocab) {
    return InvalidArgument(
        "data file " + path + " has vocab_size " + std::to_string(file->vocab_size()) +
        " but model.vocab is " + std::to_string(spec.model_vocab) +
        "; expected model.vocab >= " + std::to_string(needed_vocab) +
        (extra_mask ? " (data vocab + 1 for the MLM mask token; or set data.mask_token_id)" : ""));
  }
  if (spec.mask_token >= spec.model_vocab) {
    return InvalidArgument("data mask token " + std::to_string(spec.mask_token) +
                           " is not below model.vocab " + std::to_string(spec.model_vocab));
  }
  if (spec.doc_attention == DocAttention::kWithin &&
      (!file->has_documents() || spec.objective != Objective::kCausal)) {
    return InvalidArgument(
        "data.doc_attention: within needs a causal model (gpt or llama) and a "
        "token file with a document index (version 2: l2l-data tokenize); " +
        path + " is version " + std::to_string(file->version()));
  }
  if (spec.doc_positions == DocPositions::kRestart && !file->has_documents()) {
    return InvalidArgument(
        "data.doc_positions: restart needs a token file with a document index (version 2: "
        "l2l-data tokenize); " +
        path + " is version " + std::to_string(file->version()));
  }
  if (file->has_loss_mask() && spec.objective != Objective::kCausal) {
    return InvalidArgument("data file " + path +
                           " has a loss mask (l2l-data sft), which needs a causal model");
  }
  if (spec.unit == SampleUnit::kWindows) {
    return Samples{file->num_tokens() < 1 ? 0 : (file->num_tokens() - 1) / spec.seq_len, {}};
  }
  if (!file->has_documents()) {
    return InvalidArgument("data file " + path + " has no document index (version " +
                           std::to_string(file->version()) +
                           "); sampling by examples needs one: make it with l2l-data sft or "
                           "l2l-data tokenize");
  }
  if (spec.objective != Objective::kCausal) {
    return InvalidArgument("sampling by examples needs a causal model (gpt or llama)");
  }
  if (spec.unit == SampleUnit::kPacked && spec.doc_attention != DocAttention::kWithin) {
    return InvalidArgument(
        "packed sampling needs doc_attention within, so packed examples never see each other");
  }
  const std::vector<int64_t>& starts = file->document_starts();
  int64_t too_long = 0, longest = 0;
  for (size_t d = 0; d < starts.size(); ++d) {
    const int64_t end = d + 1 < starts.size() ? starts[d + 1] : file->num_tokens();
    longest = std::max(longest, end - starts[d]);
    if (end - starts[d] > int64_t{spec.seq_len} + 1) ++too_long;
  }
  if (too_long > 0) {
    return InvalidArgument(
        "data file " + path + ": " + std::to_string(too_long) + " of " +
        std::to_string(starts.size()) + " examples are longer than seq_len + 1 = " +
        std::to_string(spec.seq_len + 1) + " tokens (the longest has " + std::to_string(longest) +
        "); make the file with l2l-data sft --seq-len " + std::to_string(spec.seq_len) +
        " --too-long skip|truncate");
  }
  const int64_t n_docs = static_cast<int64_t>(starts.size());
  // No documents, no rows (a hand-made file: our writers refuse to write one).
  if (spec.unit == SampleUnit::kDocuments || n_docs == 0) return Samples{n_docs, {}};
  // kPacked: greedy in file order; a row takes documents while their lengths
  // sum to at most seq_len + 1 (the last token of a row is only a target).
  Samples packed;
  packed.packed_first.push_back(0);
  int64_t used = 0;
  for (int64_t d = 0; d < n_docs; ++d) {
    const int64_t end = d + 1 < n_docs ? starts[d + 1] : file->num_tokens();
    const int64_t len = end - starts[d];
    if (d > 0 && used + len > int64_t{spec.seq_len} + 1) {
      packed.packed_first.push_back(d);
      used = 0;
    }
    used += len;
  }
  packed.packed_first.push_back(n_docs);
  packed.count = static_cast<int64_t>(packed.packed_first.size()) - 1;
  return packed;
}

StatusOr<Sampler> Sampler::CreateHeldOut(const TokenFile* file, const BatchSpec& spec) {
  ASSIGN_OR_RETURN(Samples samples, CheckSpec(file, spec));
  const int64_t num_samples = samples.count;
  if (num_samples < 1) {
    return InvalidArgument("data file " + file->path() + " has " +
                           std::to_string(file->num_tokens()) + " tokens, fewer than one sample " +
                           "of seq_len " + std::to_string(spec.seq_len) +
                           " (+1 for the shifted target)");
  }
  return Sampler(file, spec, std::move(samples), 0, num_samples);
}

StatusOr<Sampler> Sampler::Create(const TokenFile* file, const BatchSpec& spec) {
  ASSIGN_OR_RETURN(Samples samples, CheckSpec(file, spec));
  const int64_t num_samples = samples.count;
  const std::string& path = file->path();
  int64_t n_eval = 0;
  if (spec.eval_fraction > 0.0) {
    // The small slack keeps e.g. 0.1 * 30 (= 3.0000000000000004) from rounding up to 4.
    n_eval = static_cast<int64_t>(std::ceil(spec.eval_fraction * num_samples - 1e-9));
    n_eval = std::max<int64_t>(n_eval, 1);
  }
  const int64_t n_train = num_samples - n_eval;
  if (n_train < 1) {
    return InvalidArgument("data file " + path + " has " + std::to_string(file->num_tokens()) +
                           " tokens: " + std::to_string(num_samples) + " samples of seq_len " +
                           std::to_string(spec.seq_len) + " (+1 for the shifted target), " +
                           std::to_string(n_eval) + " of them for eval, leaving no train samples");
  }
  return Sampler(file, spec, std::move(samples), n_train, n_eval);
}

Sampler::Sampler(const TokenFile* file, const BatchSpec& spec, Samples samples, int64_t n_train,
                 int64_t n_eval)
    : file_(file),
      spec_(spec),
      n_train_(n_train),
      n_eval_(n_eval),
      packed_first_(std::move(samples.packed_first)),
      cache_(std::make_unique<PermutationCache>()) {}

Sampler::Sampler(Sampler&&) noexcept = default;
Sampler& Sampler::operator=(Sampler&&) noexcept = default;
Sampler::~Sampler() = default;

int64_t Sampler::num_documents() const {
  return spec_.unit == SampleUnit::kWindows ? 0 : file_->num_documents();
}

int64_t Sampler::num_eval_batches() const {
  return (n_eval_ + spec_.global_batch - 1) / spec_.global_batch;
}

Status Sampler::CheckWorldSize(int world_size) const {
  if (world_size < 1 || spec_.global_batch % (int64_t{world_size} * spec_.micro_batch) != 0) {
    return InvalidArgument("data global_batch " + std::to_string(spec_.global_batch) +
                           " is not a multiple of world_size " + std::to_string(world_size) +
                           " x micro_batch " + std::to_string(spec_.micro_batch));
  }
  return OkStatus();
}

int Sampler::MicroBatchesPerStep(int world_size) const {
  const Status s = CheckWorldSize(world_size);
  L2L_CHECK(s.ok()) << s.message();
  return static_cast<int>(spec_.global_batch / (int64_t{world_size} * spec_.micro_batch));
}

int64_t Sampler::TrainSampleIndex(int64_t position) const {
  L2L_CHECK_GE(position, 0);
  L2L_CHECK_GT(n_train_, 0) << "a held-out sampler has no train split (" << file_->path() << ")";
  const uint64_t epoch = static_cast<uint64_t>(position / n_train_);
  std::shared_ptr<const std::vector<int64_t>> perm;
  {
    std::lock_guard<std::mutex> lock(cache_->mu);
    for (const auto& [e, p] : cache_->epochs) {
      if (e == epoch) perm = p;
    }
    if (perm == nullptr) {
      perm = std::make_shared<const std::vector<int64_t>>(
          EpochPermutation(spec_.seed, epoch, n_train_));
      if (cache_->epochs.size() == kCachedEpochs) cache_->epochs.erase(cache_->epochs.begin());
      cache_->epochs.emplace_back(epoch, perm);
    }
  }
  return (*perm)[static_cast<size_t>(position % n_train_)];
}

int64_t Sampler::EvalSampleIndex(int64_t position) const {
  L2L_CHECK_GE(position, 0);
  L2L_CHECK_GT(n_eval_, 0) << "no eval split (eval_fraction 0) in " << file_->path();
  return n_train_ + position % n_eval_;
}

MicroBatch Sampler::NewMicroBatch() const {
  MicroBatch mb;
  mb.rows = spec_.micro_batch;
  mb.seq_len = spec_.seq_len;
  const size_t n = static_cast<size_t>(mb.rows) * mb.seq_len;
  mb.tokens.resize(n);
  mb.token_types.assign(n, 0);
  mb.targets.resize(n);
  mb.attn_mask.assign(n, kMaskReal);
  if (spec_.doc_positions == DocPositions::kRestart) mb.positions.resize(n);
  mb.sample_keys.resize(mb.rows);
  return mb;
}

int64_t Sampler::FirstRowPosition(int64_t batch, int rank, int world_size, int micro) const {
  L2L_CHECK_GE(batch, 0);
  L2L_CHECK(rank >= 0 && rank < world_size) << "rank " << rank << " of " << world_size;
  const int n_micro = MicroBatchesPerStep(world_size);
  L2L_CHECK(micro >= 0 && micro < n_micro) << "micro " << micro << " of " << n_micro;
  const int64_t k = (int64_t{micro} * world_size + rank) * spec_.micro_batch;
  return batch * spec_.global_batch + k;
}

StatusOr<MicroBatch> Sampler::TrainMicroBatch(int64_t step, int rank, int world_size,
                                              int micro) const {
  MicroBatch mb = NewMicroBatch();
  const int64_t first = FirstRowPosition(step, rank, world_size, micro);
  for (int j = 0; j < mb.rows; ++j) {
    const int64_t p = first + j;
    mb.sample_keys[j] = static_cast<uint64_t>(p);
    RETURN_IF_ERROR(FillRow(TrainSampleIndex(p), static_cast<uint64_t>(p / n_train_), j, &mb));
  }
  return mb;
}

StatusOr<MicroBatch> Sampler::EvalMicroBatch(int64_t batch, int rank, int world_size, int micro,
                                             EvalCover cover) const {
  MicroBatch mb = NewMicroBatch();
  const int64_t first = FirstRowPosition(batch, rank, world_size, micro);
  for (int j = 0; j < mb.rows; ++j) {
    const int64_t p = first + j;
    mb.sample_keys[j] = static_cast<uint64_t>(p);
    const int64_t counted = mb.num_targets;
    RETURN_IF_ERROR(FillRow(EvalSampleIndex(p), kEvalEpoch, j, &mb));
    if (cover == EvalCover::kOnce && p >= n_eval_) {
      // Past the split's end: a real sample's tokens (valid input), no loss.
      std::fill_n(mb.targets.begin() + static_cast<ptrdiff_t>(j) * mb.seq_len, mb.seq_len,
                  kNoTarget);
      mb.num_targets = counted;
    }
  }
  return mb;
}

Status Sampler::FillDocumentsRow(int64_t first, int64_t end, int row, MicroBatch* mb) const {
  const int s_len = spec_.seq_len;
  const std::vector<int64_t>& starts = file_->document_starts();
  const int64_t begin = starts[static_cast<size_t>(first)];
  const int64_t stop = end < static_cast<int64_t>(starts.size()) ? starts[static_cast<size_t>(end)]
                                                                 : file_->num_tokens();
  const int len = static_cast<int>(stop - begin);  // <= s_len + 1 (CheckSpec)
  std::vector<uint32_t> ids(static_cast<size_t>(len));
  RETURN_IF_ERROR(file_->Read(begin, len, ids.data()));
  std::vector<uint8_t> loss(static_cast<size_t>(len), 1);
  if (file_->has_loss_mask()) RETURN_IF_ERROR(file_->ReadLossMask(begin, len, loss.data()));
  const size_t at = static_cast<size_t>(row) * s_len;
  int32_t* tokens = &mb->tokens[at];
  int32_t* targets = &mb->targets[at];
  uint8_t* mask = &mb->attn_mask[at];
  int32_t* positions = mb->positions.empty() ? nullptr : &mb->positions[at];
  const bool within = spec_.doc_attention == DocAttention::kWithin;
  int64_t doc = first;
  int doc_begin = 0, doc_end = 0;  // the current document's tokens in the row: [doc_begin, doc_end)
  for (int t = 0; t < s_len; ++t) {
    const bool real = t < len;
    if (real && t == doc_end) {  // document `doc` starts at t
      doc_begin = t;
      const int64_t next = doc + 1 < static_cast<int64_t>(starts.size())
                               ? starts[static_cast<size_t>(doc) + 1]
                               : file_->num_tokens();
      doc_end = static_cast<int>(next - begin);
      ++doc;
    }
    tokens[t] = real ? static_cast<int32_t>(ids[t]) : 0;  // padding: id 0, never attended
    mask[t] = real ? kMaskReal : 0;
    if (real && within && t == doc_begin) mask[t] |= kMaskDocStart;
    if (positions != nullptr) positions[t] = real ? t - doc_begin : 0;
    // Position t predicts token t + 1, when that is in t's document and a target.
    const bool target = real && t + 1 < doc_end && loss[t + 1] != 0;
    targets[t] = target ? static_cast<int32_t>(ids[t + 1]) : kNoTarget;
    mb->num_targets += target ? 1 : 0;
  }
  return OkStatus();
}

Status Sampler::FillRow(int64_t sample_index, uint64_t epoch, int row, MicroBatch* mb) const {
  if (spec_.unit == SampleUnit::kDocuments) {
    return FillDocumentsRow(sample_index, sample_index + 1, row, mb);
  }
  if (spec_.unit == SampleUnit::kPacked) {
    const size_t r = static_cast<size_t>(sample_index);
    return FillDocumentsRow(packed_first_[r], packed_first_[r + 1], row, mb);
  }
  const int s_len = spec_.seq_len;
  const int64_t start = sample_index * s_len;  // window [start, start + s_len + 1)
  int32_t* tokens = &mb->tokens[static_cast<size_t>(row) * s_len];
  int32_t* targets = &mb->targets[static_cast<size_t>(row) * s_len];
  const bool causal = spec_.objective == Objective::kCausal;
  std::vector<uint32_t> window(static_cast<size_t>(s_len) + (causal ? 1 : 0));
  RETURN_IF_ERROR(file_->Read(start, static_cast<int64_t>(window.size()), window.data()));
  for (int t = 0; t < s_len; ++t) tokens[t] = static_cast<int32_t>(window[t]);
  if (!mb->positions.empty()) {
    // Position ids restart at each document start inside the window; before
    // the first one they count from the window's start.
    const std::vector<int64_t>& starts = file_->document_starts();
    int32_t* positions = &mb->positions[static_cast<size_t>(row) * s_len];
    auto it = std::lower_bound(starts.begin(), starts.end(), start);
    int64_t origin = start;
    for (int t = 0; t < s_len; ++t) {
      if (it != starts.end() && *it == start + t) {
        origin = *it;
        ++it;
      }
      positions[t] = static_cast<int32_t>(start + t - origin);
    }
  }

  if (causal) {
    for (int t = 0; t < s_len; ++t) targets[t] = static_cast<int32_t>(window[t + 1]);
    mb->num_targets += s_len;
    if (file_->has_loss_mask()) {
      // An SFT file read as windows: still no loss on the prompts.
      std::vector<uint8_t> loss(static_cast<size_t>(s_len));
      RETURN_IF_ERROR(file_->ReadLossMask(start + 1, s_len, loss.data()));
      for (int t = 0; t < s_len; ++t) {
        if (loss[t] == 0) {
          targets[t] = kNoTarget;
          --mb->num_targets;
        }
      }
    }
    if (spec_.doc_attention == DocAttention::kWithin) {
      // The documents starting inside this window's inputs [start, start + S).
      const std::vector<int64_t>& starts = file_->document_starts();
      uint8_t* mask = &mb->attn_mask[static_cast<size_t>(row) * s_len];
      for (auto it = std::lower_bound(starts.begin(), starts.end(), start);
           it != starts.end() && *it < start + s_len; ++it) {
        mask[*it - start] |= kMaskDocStart;
      }
    }
    return OkStatus();
  }

  // MLM. Position t is selected when u(key_t) < mask_prob, key_t =
  // HashKeys(seed, kMasking, sample_index, epoch, t). A row with no selected
  // position gets the one with the smallest key, so every row has a target.
  const uint32_t data_vocab = file_->vocab_size();
  auto apply = [&](int t, uint64_t key) {
    targets[t] = tokens[t];
    const double action = UniformDouble(HashKeys(key, kActionDraw));
    if (action < kMaskShare) {
      tokens[t] = mask_token();
    } else if (action < kMaskShare + kRandomShare) {
      tokens[t] = static_cast<int32_t>(UniformIndex(HashKeys(key, kTokenDraw), data_vocab));
    }  // else: unchanged
    ++mb->num_targets;
  };
  int selected = 0;
  int min_t = 0;
  uint64_t min_key = ~uint64_t{0};
  for (int t = 0; t < s_len; ++t) {
    const uint64_t key =
        HashKeys(spec_.seed, RngPurpose::kMasking, static_cast<uint64_t>(sample_index), epoch, t);
    if (key < min_key) {
      min_key = key;
      min_t = t;
    }
    if (UniformDouble(key) < spec_.mask_prob) {
      apply(t, key);
      ++selected;
    } else {
      targets[t] = kNoTarget;
    }
  }
  if (selected == 0) apply(min_t, min_key);
  return OkStatus();
}

SamplerState Sampler::state() const {
  SamplerState s;
  s.seed = spec_.seed;
  s.num_tokens = file_->num_tokens();
  s.vocab_size = file_->vocab_size();
  s.objective = spec_.objective;
  s.seq_len = spec_.seq_len;
  s.global_batch = spec_.global_batch;
  s.mask_prob = spec_.mask_prob;
  s.eval_fraction = spec_.eval_fraction;
  s.num_train_samples = n_train_;
  s.num_eval_samples = n_eval_;
  s.mask_token = spec_.objective == Objective::kMlm ? mask_token() : -1;
  s.unit = spec_.unit;
  return s;
}

Status Sampler::CheckResume(const SamplerState& saved) const {
  const SamplerState now = state();
  if (saved == now) return OkStatus();
  // Name the first differing field: compare the "key=value" items in order.
  const std::string a = saved.ToString(), b = now.ToString();
  size_t pa = 0, pb = 0;
  while (pa < a.size() && pb < b.size()) {
    size_t ea = a.find(' ', pa), eb = b.find(' ', pb);
    if (ea == std::string::npos) ea = a.size();
    if (eb == std::string::npos) eb = b.size();
    const std::string ia = a.substr(pa, ea - pa), ib = b.substr(pb, eb - pb);
    if (ia != ib) {
      return FailedPrecondition(
          "data sampler state differs from the checkpoint's: checkpoint has " + ia +
          ", this run has " + ib + " (data file " + file_->path() + ")");
    }
    pa = ea + 1;
    pb = eb + 1;
  }
  return FailedPrecondition("data sampler state differs from the checkpoint's: checkpoint has '" +
                            a + "', this run has '" + b + "'");
}

}  // namespace l2l::data
