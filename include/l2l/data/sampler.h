// Turns a token file into training and eval micro-batches, deterministically.
//
// Everything is a pure function of (seed, global sample position) so that the
// same global batch is processed at step s whatever the world size, and a run
// resumed at another world size sees the same data (DESIGN §4). Rules, in
// brief (full text in docs/data-format.md):
// - Samples are non-overlapping windows: sample i is tokens
//   [i*seq_len, i*seq_len + seq_len + 1); num_samples = (num_tokens-1)/seq_len.
//   The last ceil(eval_fraction * num_samples) samples (at least 1 when
//   eval_fraction > 0) are the eval split, the rest the train split.
// - Training position p = step*global_batch + k (k in [0, global_batch)) is
//   train sample perm(seed, epoch)[p % n_train] with epoch = p / n_train.
// - Row j of micro-batch m on rank r is k = (m*world_size + r)*micro_batch + j.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "l2l/core/batch_format.h"
#include "l2l/core/status.h"
#include "l2l/data/token_file.h"

namespace l2l::data {

enum class Objective { kMlm, kCausal };
// What a sample is. kWindows: fixed windows of seq_len + 1 tokens over the
// stream (pretraining). kDocuments: one document of a version-2 file per row
// (SFT examples), at most seq_len + 1 tokens, padded: positions past its end
// are padding (attn_mask 0, no target); with a loss mask, only tokens marked 1
// are targets. kPacked: consecutive documents per row, as many as fit (their
// lengths sum to at most seq_len + 1; a document is never split), padded
// after the last; each document's targets stay inside it. Needs kWithin, so
// packed documents never see each other. Causal only. Rows (the samples) are
// formed greedily in file order: row r starts where row r - 1's documents end.
enum class SampleUnit { kWindows, kDocuments, kPacked };
// Whether attention crosses document boundaries inside a window. kWithin
// marks each document start in attn_mask (kMaskDocStart, core/batch_format.h),
// so a causal model attends only within the document; needs a version-2 file.
enum class DocAttention { kCross, kWithin };
// Position ids of a row's tokens. kContinue: token s is at position s.
// kRestart: a document start inside the row is position 0 and the count runs
// on from there (MicroBatch::positions); needs a version-2 file.
enum class DocPositions { kContinue, kRestart };
const char* ObjectiveName(Objective o);  // "mlm", "causal"
StatusOr<Objective> ParseObjective(std::string_view name);

struct BatchSpec {
  Objective objective = Objective::kCausal;
  int seq_len = 0;           // tokens per row (model input length)
  int micro_batch = 0;       // rows per micro-batch
  int64_t global_batch = 0;  // sequences per step, all ranks and micro-batches together
  double mask_prob = 0.15;   // MLM: probability a position is predicted; [0, 1]
  double eval_fraction = 0;  // share of samples held out for eval; [0, 1)
  uint64_t seed = 0;
  int model_vocab = 0;  // the model's embedding rows; must cover the data vocab (+1 for MLM)
  // MLM mask token id: -1 = the file's vocab_size (then model_vocab must
  // exceed it), else a token id < model_vocab (the tokenizer's [MASK]).
  int32_t mask_token = -1;
  SampleUnit unit = SampleUnit::kWindows;
  DocAttention doc_attention = DocAttention::kCross;
  DocPositions doc_positions = DocPositions::kContinue;
};

// One micro-batch, row-major [rows, seq_len] host arrays.
struct MicroBatch {
  int rows = 0, seq_len = 0;
  std::vector<int32_t> tokens;       // [rows, seq_len] model inputs
  std::vector<int32_t> token_types;  // [rows, seq_len] all 0 (single segment)
  std::vector<int32_t> targets;      // [rows, seq_len]; kNoTarget = no loss here
  // [rows, seq_len]; kMaskReal for real tokens (0 = padding, kDocuments), plus
  // kMaskDocStart where a document starts (DocAttention::kWithin).
  std::vector<uint8_t> attn_mask;
  // [rows, seq_len] position ids (DocPositions::kRestart), else empty.
  // Padding is at position 0.
  std::vector<int32_t> positions;
  // [rows]; the row's global position in the sample stream (step*global_batch
  // + k for training, batch*global_batch + k for eval). Unique per row within a
  // step; keys dropout masks (DESIGN §4).
  std::vector<uint64_t> sample_keys;
  int64_t num_targets = 0;  // count of targets != kNoTarget
};

// What a checkpoint records about the data so a resume can refuse a different
// corpus or sampling setup. Text form: "key=value" pairs separated by spaces.
struct SamplerState {
  uint64_t seed = 0;
  int64_t num_tokens = 0;
  uint32_t vocab_size = 0;
  Objective objective = Objective::kCausal;
  int seq_len = 0;
  int64_t global_batch = 0;
  double mask_prob = 0;
  double eval_fraction = 0;
  int64_t num_train_samples = 0;
  int64_t num_eval_samples = 0;
  // The id written at masked positions (MLM), -1 for causal: a resume with
  // another data.mask_token_id would train on other inputs. Checkpoints
  // older than this key recorded none; their mask token was the file's
  // vocab_size, which Parse then fills in.
  int32_t mask_token = -1;
  // Newer still: written only for kDocuments and kPacked ("sampling=documents"
  // or "sampling=packed"), so the state of a windows run reads as it always did.
  SampleUnit unit = SampleUnit::kWindows;

  std::string ToString() const;  // exact: doubles are printed with 17 digits
  // InvalidArgument naming the key when `text` is not what ToString writes.
  static StatusOr<SamplerState> Parse(std::string_view text);
  bool operator==(const SamplerState&) const = default;
};

// How an eval pass treats the positions past the eval split's end in its last
// batch: kWrap reads the first eval samples again (periodic evaluation, a fixed
// number of batches); kOnce reads them too but gives them no targets, so
// num_eval_batches() batches count every eval sample exactly once at any world
// size (--eval-only).
enum class EvalCover { kWrap, kOnce };

// Movable, not copyable. All methods are const and thread-safe (the cached
// epoch permutations are guarded by a mutex).
class Sampler {
 public:
  // `file` is not owned and must outlive the sampler. InvalidArgument when the
  // spec is out of range; for kDocuments and kPacked when the file has no
  // document index, the objective is not causal, or a document is longer than
  // seq_len + 1 (the count and the longest are named); for kPacked without
  // kWithin; for kWithin or kRestart without a document index or (kWithin) a
  // causal objective; when model_vocab is smaller than the file's vocab
  // (+1 for MLM without a mask_token, whose mask token id is then the file's
  // vocab_size), or when the file has no train samples. Messages name the
  // file and the values.
  static StatusOr<Sampler> Create(const TokenFile* file, const BatchSpec& spec);
  // A sampler whose every sample is eval (a separate held-out file,
  // data.eval_path): no train split, spec.eval_fraction ignored, eval sample i
  // is window i. The same checks as Create, and InvalidArgument when the file
  // holds no whole sample. TrainMicroBatch must not be called on it.
  static StatusOr<Sampler> CreateHeldOut(const TokenFile* file, const BatchSpec& spec);

  Sampler(Sampler&&) noexcept;
  Sampler& operator=(Sampler&&) noexcept;
  ~Sampler();

  int64_t num_train_samples() const { return n_train_; }
  // Documents behind the samples (kDocuments, kPacked; else 0).
  int64_t num_documents() const;
  int64_t num_eval_samples() const { return n_eval_; }
  // Eval batches that cover the eval split once: ceil(n_eval / global_batch).
  int64_t num_eval_batches() const;
  // MLM mask token id: spec.mask_token, else the file's vocab_size.
  int32_t mask_token() const {
    return spec_.mask_token >= 0 ? spec_.mask_token : static_cast<int32_t>(file_->vocab_size());
  }
  const BatchSpec& spec() const { return spec_; }

  // InvalidArgument unless world_size >= 1 and global_batch is a multiple of
  // world_size * micro_batch.
  Status CheckWorldSize(int world_size) const;
  // global_batch / (world_size * micro_batch); CheckWorldSize must pass.
  int MicroBatchesPerStep(int world_size) const;

  // Micro-batch `micro` of `rank` for training step `step` (step >= 0,
  // 0 <= rank < world_size, 0 <= micro < MicroBatchesPerStep). CHECKs the
  // arguments; CheckWorldSize must pass. The union over ranks and micros of a
  // step is the same global batch for every world size. Errors: the token
  // file's Read errors (a file changed under the run), on this rank only.
  StatusOr<MicroBatch> TrainMicroBatch(int64_t step, int rank, int world_size, int micro) const;

  // Eval batch `batch` (>= 0), same layout. Position p = batch*global_batch + k
  // reads eval sample p % num_eval_samples(), so batches past
  // num_eval_batches() wrap around. Independent of the training step.
  // Requires num_eval_samples() > 0 (CHECKed). Errors as TrainMicroBatch.
  // `cover` decides the rows past the split's end (EvalCover).
  StatusOr<MicroBatch> EvalMicroBatch(int64_t batch, int rank, int world_size, int micro,
                                      EvalCover cover = EvalCover::kWrap) const;

  // The sample index (into the file's windows) behind a global position.
  int64_t TrainSampleIndex(int64_t position) const;  // in [0, n_train)
  int64_t EvalSampleIndex(int64_t position) const;   // in [n_train, n_train + n_eval)

  SamplerState state() const;
  // FailedPrecondition naming the first field that differs between a
  // checkpoint's state and this sampler's (e.g. a different corpus or seed).
  Status CheckResume(const SamplerState& saved) const;

 private:
  struct PermutationCache;
  // The samples of a file: their count, and for kPacked the first document
  // of each row (count + 1 entries, the last = the number of documents).
  struct Samples {
    int64_t count = 0;
    std::vector<int64_t> packed_first;
  };
  // Create's checks of `spec` against `file`, and the file's samples.
  static StatusOr<Samples> CheckSpec(const TokenFile* file, const BatchSpec& spec);
  Sampler(const TokenFile* file, const BatchSpec& spec, Samples samples, int64_t n_train,
          int64_t n_eval);

  // Fills row `row` of `mb` from sample `sample_index`; `epoch` keys MLM masking.
  Status FillRow(int64_t sample_index, uint64_t epoch, int row, MicroBatch* mb) const;
  // kDocuments, kPacked: row `row` is documents [first, end), padded.
  Status FillDocumentsRow(int64_t first, int64_t end, int row, MicroBatch* mb) const;
  MicroBatch NewMicroBatch() const;
  int64_t FirstRowPosition(int64_t batch, int rank, int world_size, int micro) const;

  const TokenFile* file_ = nullptr;
  BatchSpec spec_;
  int64_t n_train_ = 0;
  int64_t n_eval_ = 0;
  std::vector<int64_t> packed_first_;  // Samples::packed_first
  std::unique_ptr<PermutationCache> cache_;
};

// Fisher-Yates permutation of [0, n) for one epoch: for i = n-1 .. 1, swap
// element i with element j = floor(u * (i+1)), u from
// HashKeys(seed, kDataOrder, epoch, i). Exposed for tests and tools.
std::vector<int64_t> EpochPermutation(uint64_t seed, uint64_t epoch, int64_t n);

}  // namespace l2l::data
