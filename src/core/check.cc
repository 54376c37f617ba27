#include "l2l/core/check.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>

namespace l2l {
namespace {
std::atomic<int> g_log_rank{-1};
}

void SetLogRank(int rank) { g_log_rank.store(rank); }
int LogRank() { return g_log_rank.load(); }

namespace internal {

CheckFailure::CheckFailure(const char* file, int line, const char* condition) {
  os_ << "CHECK failed at " << file << ":" << line;
  if (LogRank() >= 0) os_ << " (rank " << LogRank() << ")";
  os_ << ": " << condition << " ";
}

CheckFailure::~CheckFailure() {
  std::fprintf(stderr, "l2l: %s\n", os_.str().c_str());
  std::fflush(stderr);
  std::abort();
}

}  // namespace internal
}  // namespace l2l
