// CHECK macros for invariants. They stay on in release builds: a broken
// invariant is a bug in l2l, never a user error (those return Status).
// On failure they print file:line, the condition, the MPI rank if known, and
// any streamed context, then abort.
#pragma once

#include <sstream>
#include <string>

namespace l2l {

// The rank printed in CHECK failures and log lines; set once by the Comm
// factory. -1 before MPI is up.
void SetLogRank(int rank);
int LogRank();

namespace internal {

class CheckFailure {
 public:
  CheckFailure(const char* file, int line, const char* condition);
  [[noreturn]] ~CheckFailure();
  std::ostream& stream() { return os_; }

 private:
  std::ostringstream os_;
};

// Lets `cond ? (void)0 : Voidify() & stream` type-check.
struct Voidify {
  void operator&(std::ostream&) {}
};

}  // namespace internal
}  // namespace l2l

#define L2L_CHECK(cond)                 \
  (cond) ? (void)0                      \
         : ::l2l::internal::Voidify() & \
               ::l2l::internal::CheckFailure(__FILE__, __LINE__, #cond).stream()

#define L2L_CHECK_OP(a, op, b) L2L_CHECK((a)op(b)) << "(" << (a) << " vs " << (b) << ") "
#define L2L_CHECK_EQ(a, b) L2L_CHECK_OP(a, ==, b)
#define L2L_CHECK_NE(a, b) L2L_CHECK_OP(a, !=, b)
#define L2L_CHECK_LT(a, b) L2L_CHECK_OP(a, <, b)
#define L2L_CHECK_LE(a, b) L2L_CHECK_OP(a, <=, b)
#define L2L_CHECK_GT(a, b) L2L_CHECK_OP(a, >, b)
#define L2L_CHECK_GE(a, b) L2L_CHECK_OP(a, >=, b)
