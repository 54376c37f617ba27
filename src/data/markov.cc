// Markov synthetic corpus: a transition table drawn from the seed, sampling
// keyed per token, and the exact entropy rate by power iteration.
#include "l2l/data/markov.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "l2l/core/rng.h"

namespace l2l::data {
namespace {

// Sub-streams of RngPurpose::kData.
constexpr uint64_t kTableStream = 1;     // transition weights, keyed (context, next)
constexpr uint64_t kGenerateStream = 2;  // one draw per generated token

// Share of the uniform distribution mixed into every transition distribution.
constexpr double kUniformMix = 1e-6;
// Power iteration stops when the L1 change of the stationary distribution
// falls below this, or after kMaxPowerIterations.
constexpr double kStationaryTolerance = 1e-13;
constexpr int kMaxPowerIterations = 10000;

// Uniform in the open interval (0, 1), so its log is finite.
double OpenUniform(uint64_t bits) {
  return (static_cast<double>(bits >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

// floor(uniform * n) without modulo bias beyond 2^-64.
uint32_t UniformIndex(uint64_t bits, uint32_t n) {
  return static_cast<uint32_t>((static_cast<unsigned __int128>(bits) * n) >> 64);
}

// log of a Gamma(shape + 1) draw, shape > 0, by Marsaglia-Tsang (shape + 1 >= 1),
// with every attempt's draws keyed by (key, attempt) so the result is a pure
// function of the key. Acceptance is > 95% per attempt.
double LogGammaPlusOne(uint64_t key, double shape) {
  const double d = shape + 1.0 - 1.0 / 3.0;
  const double c = 1.0 / std::sqrt(9.0 * d);
  for (uint64_t attempt = 0;; ++attempt) {
    const double x = NormalFromKey(HashKeys(key, attempt, 1));
    const double v = (1.0 + c * x) * (1.0 + c * x) * (1.0 + c * x);
    if (v <= 0.0) continue;
    const double u = OpenUniform(HashKeys(key, attempt, 2));
    if (std::log(u) < 0.5 * x * x + d - d * v + d * std::log(v)) return std::log(d * v);
  }
}

}  // namespace

Status ValidateMarkovSpec(const MarkovSpec& spec) {
  if (spec.vocab < 2 || spec.vocab > 65536) {
    return InvalidArgument("markov vocab is " + std::to_string(spec.vocab) + ", expected 2..65536");
  }
  if (spec.order < 0) {
    return InvalidArgument("markov order is " + std::to_string(spec.order) + ", expected >= 0");
  }
  if (!(spec.concentration >= 0.01 && spec.concentration <= 1e6)) {
    return InvalidArgument("markov concentration is " + std::to_string(spec.concentration) +
                           ", expected 0.01..1e6");
  }
  int64_t entries = spec.vocab;
  for (int i = 0; i < spec.order; ++i) {
    entries *= spec.vocab;
    if (entries > kMaxMarkovTableEntries) break;
  }
  if (entries > kMaxMarkovTableEntries) {
    return InvalidArgument("markov vocab^(order+1) = " + std::to_string(spec.vocab) + "^" +
                           std::to_string(spec.order + 1) + " exceeds the table limit " +
                           std::to_string(kMaxMarkovTableEntries) + "; lower vocab or order");
  }
  return OkStatus();
}

MarkovSource::MarkovSource(const MarkovSpec& spec) : spec_(spec) {
  const Status valid = ValidateMarkovSpec(spec);
  L2L_CHECK(valid.ok()) << valid.message();
  const int v_count = spec.vocab;
  for (int i = 0; i < spec.order; ++i) num_contexts_ *= v_count;
  prob_.resize(static_cast<size_t>(num_contexts_) * v_count);
  cdf_.resize(prob_.size());

  // Dirichlet(concentration) draw per context: independent Gamma(a) weights,
  // each drawn as Gamma(a + 1) * U^(1/a) (exact for a > 0), normalised. Kept
  // in log space so tiny weights do not underflow before normalisation.
  std::vector<double> log_w(v_count);
  for (int64_t c = 0; c < num_contexts_; ++c) {
    double max_log_w = -INFINITY;
    for (int v = 0; v < v_count; ++v) {
      const uint64_t h = HashKeys(spec.seed, RngPurpose::kData, kTableStream, c, v);
      log_w[v] = LogGammaPlusOne(Mix64(h ^ 0x2545f4914f6cdd1dull), spec.concentration) +
                 std::log(OpenUniform(h)) / spec.concentration;
      max_log_w = std::max(max_log_w, log_w[v]);
    }
    double sum = 0.0;
    for (int v = 0; v < v_count; ++v) sum += std::exp(log_w[v] - max_log_w);
    double* p = &prob_[static_cast<size_t>(c) * v_count];
    double* cdf = &cdf_[static_cast<size_t>(c) * v_count];
    double acc = 0.0;
    for (int v = 0; v < v_count; ++v) {
      p[v] = (1.0 - kUniformMix) * std::exp(log_w[v] - max_log_w) / sum + kUniformMix / v_count;
      acc += p[v];
      cdf[v] = acc;
    }
  }
}

double MarkovSource::Probability(int64_t context, int v) const {
  L2L_CHECK(context >= 0 && context < num_contexts_ && v >= 0 && v < spec_.vocab);
  return prob_[static_cast<size_t>(context) * spec_.vocab + v];
}

std::vector<uint32_t> MarkovSource::Generate(int64_t num_tokens) const {
  L2L_CHECK_GE(num_tokens, 0);
  const uint32_t v_count = static_cast<uint32_t>(spec_.vocab);
  std::vector<uint32_t> out(static_cast<size_t>(num_tokens));
  int64_t context = 0;  // the last `order` tokens in base vocab
  for (int64_t t = 0; t < num_tokens; ++t) {
    const uint64_t h = HashKeys(spec_.seed, RngPurpose::kData, kGenerateStream, t);
    uint32_t tok;
    if (t < spec_.order) {
      tok = UniformIndex(h, v_count);
    } else {
      const double* cdf = &cdf_[static_cast<size_t>(context) * v_count];
      const double u = UniformDouble(h);
      tok = static_cast<uint32_t>(std::upper_bound(cdf, cdf + v_count, u) - cdf);
      tok = std::min(tok, v_count - 1);  // u above a last prefix sum rounded below 1
    }
    out[static_cast<size_t>(t)] = tok;
    context = (context * v_count + tok) % num_contexts_;
  }
  return out;
}

double MarkovSource::EntropyRateNats() const {
  const int v_count = spec_.vocab;
  // Stationary distribution over contexts: context c followed by v moves to
  // (c * vocab + v) mod num_contexts. Lazy steps (pi <- (pi + pi P) / 2) have
  // the same fixed point and cannot oscillate.
  std::vector<double> pi(static_cast<size_t>(num_contexts_), 1.0 / num_contexts_);
  std::vector<double> next(pi.size());
  for (int iter = 0; iter < kMaxPowerIterations && num_contexts_ > 1; ++iter) {
    std::fill(next.begin(), next.end(), 0.0);
    for (int64_t c = 0; c < num_contexts_; ++c) {
      const double* p = &prob_[static_cast<size_t>(c) * v_count];
      const int64_t base = (c * v_count) % num_contexts_;
      for (int v = 0; v < v_count; ++v) next[base + v] += pi[c] * p[v];
    }
    double diff = 0.0;
    for (size_t c = 0; c < pi.size(); ++c) {
      const double lazy = 0.5 * (pi[c] + next[c]);
      diff += std::fabs(lazy - pi[c]);
      pi[c] = lazy;
    }
    if (diff < kStationaryTolerance) break;
  }
  double rate = 0.0;
  for (int64_t c = 0; c < num_contexts_; ++c) {
    const double* p = &prob_[static_cast<size_t>(c) * v_count];
    double h = 0.0;
    for (int v = 0; v < v_count; ++v) h -= p[v] * std::log(p[v]);  // p[v] > 0 (uniform mix)
    rate += pi[c] * h;
  }
  return rate;
}

std::vector<uint32_t> ByteTokenize(std::string_view utf8_text) {
  std::vector<uint32_t> out;
  out.reserve(utf8_text.size());
  for (char c : utf8_text) out.push_back(static_cast<unsigned char>(c));
  return out;
}

}  // namespace l2l::data
