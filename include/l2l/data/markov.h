// Synthetic corpora with a known entropy floor, and byte-level tokenisation.
//
// A MarkovSource is an order-k Markov chain over a small vocabulary whose
// next-token distributions are drawn from a symmetric Dirichlet. Its exact
// entropy rate is the lowest cross-entropy any model can reach on the corpus,
// so a training run on it has a known target loss.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "l2l/core/status.h"

namespace l2l::data {

struct MarkovSpec {
  int vocab = 64;  // tokens are in [0, vocab); 2 <= vocab <= 65536
  int order = 2;   // tokens of context; 0 = i.i.d. draws from one distribution
  uint64_t seed = 1;
  // Each next-token distribution is a Dirichlet(concentration, ..., concentration)
  // draw. Smaller = sparser = fewer likely successors = lower entropy; large
  // values approach uniform. 0.01 <= concentration <= 1e6.
  double concentration = 0.1;
};

// vocab^(order+1) probabilities are stored; this caps it (128 MiB of doubles).
inline constexpr int64_t kMaxMarkovTableEntries = int64_t{1} << 24;

// InvalidArgument naming the field when `spec` is out of range (see the field
// comments and kMaxMarkovTableEntries).
Status ValidateMarkovSpec(const MarkovSpec& spec);

// Immutable after construction; all methods are const and thread-safe.
class MarkovSource {
 public:
  // `spec` must pass ValidateMarkovSpec (CHECKed). Builds the transition
  // table: O(vocab^(order+1)) time and memory. Every transition probability is
  // mixed with 1e-6 of the uniform distribution so the chain is irreducible and
  // aperiodic (its stationary distribution is unique).
  explicit MarkovSource(const MarkovSpec& spec);

  // The first `order` tokens are uniform; each later token is drawn from the
  // distribution of its context. Token t is keyed by (seed, kData, t), so the
  // output is a pure function of the spec and num_tokens.
  std::vector<uint32_t> Generate(int64_t num_tokens) const;

  // Exact entropy rate in nats/token: sum over contexts c of pi(c) * H(next | c),
  // with the stationary distribution pi of contexts found by power iteration.
  double EntropyRateNats() const;

  const MarkovSpec& spec() const { return spec_; }
  // P(next = v | context c); c encodes the last `order` tokens in base vocab,
  // oldest token most significant. 0 <= c < vocab^order.
  double Probability(int64_t context, int v) const;
  int64_t num_contexts() const { return num_contexts_; }

 private:
  MarkovSpec spec_;
  int64_t num_contexts_ = 1;  // vocab^order
  std::vector<double> prob_;  // [num_contexts, vocab]
  std::vector<double> cdf_;   // [num_contexts, vocab], inclusive prefix sums
};

// Byte-level tokenisation: token = byte value (vocab 256). Any byte sequence,
// valid UTF-8 or not, round-trips.
inline constexpr uint32_t kByteVocab = 256;
std::vector<uint32_t> ByteTokenize(std::string_view utf8_text);

}  // namespace l2l::data
