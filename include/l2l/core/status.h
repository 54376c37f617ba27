// Status / StatusOr: recoverable errors travel up the stack as values.
//
// A Status carries a code and a one-line message that names the file, key,
// tensor or value at fault and what was expected. Library code never exits or
// aborts on user error; tools turn a non-OK Status into one line on stderr and
// exit code 2 (see ExitCodeFor).
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <variant>

#include "l2l/core/check.h"

namespace l2l {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,     // bad config value, bad command line, bad shape
  kNotFound,            // missing file, key, dataset
  kOutOfMemory,         // device arena cap or host allocation
  kDataLoss,            // corrupt / truncated file, checksum mismatch
  kFailedPrecondition,  // state does not allow the call (e.g. mismatched checkpoint)
  kUnimplemented,       // backend not built in
  kIoError,             // filesystem or HDF5 I/O failure
  kInternal,            // library / MPI failure that is not the user's fault
  kAborted,             // another rank failed; this rank stops in agreement
};

const char* StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "<code>: <message>" for logs; user-facing lines print message() alone.
  std::string ToString() const;

  // Prepends context ("while loading X: ") to a non-OK status; OK stays OK.
  Status WithContext(const std::string& context) const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status OkStatus() { return Status(); }
inline Status InvalidArgument(std::string m) {
  return {StatusCode::kInvalidArgument, std::move(m)};
}
inline Status NotFound(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
inline Status OutOfMemory(std::string m) { return {StatusCode::kOutOfMemory, std::move(m)}; }
inline Status DataLoss(std::string m) { return {StatusCode::kDataLoss, std::move(m)}; }
inline Status FailedPrecondition(std::string m) {
  return {StatusCode::kFailedPrecondition, std::move(m)};
}
inline Status Unimplemented(std::string m) { return {StatusCode::kUnimplemented, std::move(m)}; }
inline Status IoError(std::string m) { return {StatusCode::kIoError, std::move(m)}; }
inline Status Internal(std::string m) { return {StatusCode::kInternal, std::move(m)}; }
inline Status Aborted(std::string m) { return {StatusCode::kAborted, std::move(m)}; }

// Exit code for a tool that fails with this status: 2 for every user-facing
// failure (bad input, missing or corrupt files, caps), 1 for internal errors.
int ExitCodeFor(const Status& s);

template <typename T>
class [[nodiscard]] StatusOr {
 public:
  StatusOr(const Status& s) : v_(s) { L2L_CHECK(!s.ok()) << "StatusOr built from OK status"; }
  StatusOr(Status&& s) : v_(std::move(s)) {
    L2L_CHECK(!std::get<Status>(v_).ok()) << "StatusOr built from OK status";
  }
  StatusOr(const T& v) : v_(v) {}
  StatusOr(T&& v) : v_(std::move(v)) {}

  bool ok() const { return std::holds_alternative<T>(v_); }
  // A reference, so `r.status().message()` outlives the expression.
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(v_);
  }

  T& value() & {
    L2L_CHECK(ok()) << status().ToString();
    return std::get<T>(v_);
  }
  const T& value() const& {
    L2L_CHECK(ok()) << status().ToString();
    return std::get<T>(v_);
  }
  T&& value() && {
    L2L_CHECK(ok()) << status().ToString();
    return std::get<T>(std::move(v_));
  }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  std::variant<Status, T> v_;
};

}  // namespace l2l

#define L2L_STATUS_CONCAT_INNER(a, b) a##b
#define L2L_STATUS_CONCAT(a, b) L2L_STATUS_CONCAT_INNER(a, b)

// Returns the status from the enclosing function if `expr` is not OK.
#define RETURN_IF_ERROR(expr)                  \
  do {                                         \
    ::l2l::Status l2l_status_ = (expr);        \
    if (!l2l_status_.ok()) return l2l_status_; \
  } while (0)

// ASSIGN_OR_RETURN(auto x, MakeX()); declares x or returns the error.
#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL(L2L_STATUS_CONCAT(l2l_statusor_, __LINE__), lhs, expr)
#define ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                          \
  if (!tmp.ok()) return tmp.status();         \
  lhs = std::move(tmp).value()
