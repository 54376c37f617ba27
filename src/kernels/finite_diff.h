// Test-only: central finite differences in double precision, shared by the
// kernel and layer gradient checks (src/kernels/kernels_test.cc,
// src/model/model_test.cc).
#pragma once

#include <functional>
#include <vector>

namespace l2l::testing {

// Step of the central differences; with double inputs of magnitude ~1 the
// truncation and rounding errors are both ~1e-10.
inline constexpr double kFdStep = 1e-5;

// d loss / d p[i] for every element of *p by central differences; *p is
// restored.
inline std::vector<double> NumericGrad(std::vector<double>* p,
                                       const std::function<double()>& loss) {
  std::vector<double> g(p->size());
  for (size_t i = 0; i < p->size(); ++i) {
    const double orig = (*p)[i];
    (*p)[i] = orig + kFdStep;
    const double lp = loss();
    (*p)[i] = orig - kFdStep;
    const double lm = loss();
    (*p)[i] = orig;
    g[i] = (lp - lm) / (2 * kFdStep);
  }
  return g;
}

}  // namespace l2l::testing
