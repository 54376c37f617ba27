#include "l2l/core/log.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "l2l/core/check.h"

namespace l2l {
namespace {

LogLevel InitialLevel() {
  const char* env = std::getenv("L2L_LOG_LEVEL");
  if (env == nullptr) return LogLevel::kInfo;
  if (std::strcmp(env, "debug") == 0) return LogLevel::kDebug;
  if (std::strcmp(env, "warning") == 0) return LogLevel::kWarning;
  if (std::strcmp(env, "error") == 0) return LogLevel::kError;
  return LogLevel::kInfo;
}

LogLevel g_level = InitialLevel();

const char* LevelTag(LogLevel l) {
  switch (l) {
    case LogLevel::kDebug:
      return "D";
    case LogLevel::kInfo:
      return "I";
    case LogLevel::kWarning:
      return "W";
    case LogLevel::kError:
      return "E";
  }
  return "?";
}

}  // namespace

void SetLogLevel(LogLevel level) { g_level = level; }
LogLevel GetLogLevel() { return g_level; }

namespace internal {

LogMessage::LogMessage(LogLevel level, const char* file, int line) : level_(level) {
  (void)file;
  (void)line;
  os_ << "[l2l " << LevelTag(level_);
  if (LogRank() >= 0) os_ << " r" << LogRank();
  os_ << "] ";
}

LogMessage::~LogMessage() {
  os_ << "\n";
  std::fputs(os_.str().c_str(), stderr);
}

}  // namespace internal
}  // namespace l2l
