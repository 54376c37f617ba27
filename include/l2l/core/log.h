// Minimal logging to stderr, prefixed with the MPI rank when known.
#pragma once

#include <sstream>
#include <string>

namespace l2l {

enum class LogLevel { kDebug, kInfo, kWarning, kError };

// Messages below this level are dropped. Default kInfo; L2L_LOG_LEVEL=debug
// in the environment lowers it.
void SetLogLevel(LogLevel level);
LogLevel GetLogLevel();

namespace internal {
class LogMessage {
 public:
  LogMessage(LogLevel level, const char* file, int line);
  ~LogMessage();
  std::ostream& stream() { return os_; }

 private:
  LogLevel level_;
  std::ostringstream os_;
};
}  // namespace internal
}  // namespace l2l

#define L2L_LOG(level)                                    \
  if (::l2l::LogLevel::k##level < ::l2l::GetLogLevel()) { \
  } else                                                  \
    ::l2l::internal::LogMessage(::l2l::LogLevel::k##level, __FILE__, __LINE__).stream()
