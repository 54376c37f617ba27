// Softmax cross-entropy with ignored targets, loss and dlogits in one pass.
#include <algorithm>
#include <cmath>
#include <vector>

#include "l2l/core/check.h"
#include "l2l/kernels/cpu.h"

namespace l2l::kernels::cpu {
namespace {
// Rows per partial loss sum. Partial sums are added in block order, so the
// total does not depend on the thread count.
constexpr int64_t kLossBlockRows = 32;
}  // namespace

template <typename T>
CrossEntropyResult CrossEntropy(const T* logits, const int32_t* targets, int64_t n, int64_t vocab,
                                double grad_scale, T* dlogits) {
  for (int64_t r = 0; r < n; ++r) {
    L2L_CHECK(targets[r] == kNoTarget || (targets[r] >= 0 && targets[r] < vocab))
        << "target " << targets[r] << " at row " << r << " outside [0, " << vocab << ")";
  }
  const int64_t blocks = (n + kLossBlockRows - 1) / kLossBlockRows;
  std::vector<double> partial(blocks, 0.0);
  std::vector<int64_t> counts(blocks, 0);
  const T gscale = static_cast<T>(grad_scale);
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t r1 = std::min(n, (b + 1) * kLossBlockRows);
    for (int64_t r = b * kLossBlockRows; r < r1; ++r) {
      const T* lr = logits + r * vocab;
      const int32_t t = targets[r];
      if (t == kNoTarget) {
        if (dlogits != nullptr) std::fill(dlogits + r * vocab, dlogits + (r + 1) * vocab, T(0));
        continue;
      }
      const T maxv = *std::max_element(lr, lr + vocab);
      double sum = 0;
      for (int64_t j = 0; j < vocab; ++j) sum += std::exp(static_cast<double>(lr[j] - maxv));
      const double logsum = std::log(sum);
      partial[b] += logsum - static_cast<double>(lr[t] - maxv);
      counts[b] += 1;
      if (dlogits != nullptr) {
        T* dr = dlogits + r * vocab;  // may alias lr: each element read before written
        const T inv = static_cast<T>(1.0 / sum);
        for (int64_t j = 0; j < vocab; ++j) dr[j] = std::exp(lr[j] - maxv) * inv * gscale;
        dr[t] -= gscale;
      }
    }
  }
  CrossEntropyResult res;
  for (int64_t b = 0; b < blocks; ++b) {
    res.loss_sum += partial[b];
    res.count += counts[b];
  }
  return res;
}

template CrossEntropyResult CrossEntropy<float>(const float*, const int32_t*, int64_t, int64_t,
                                                double, float*);
template CrossEntropyResult CrossEntropy<double>(const double*, const int32_t*, int64_t, int64_t,
                                                 double, double*);

}  // namespace l2l::kernels::cpu
