#include "l2l/core/fs.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace l2l::fs {

bool Exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

bool IsFile(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

bool IsDir(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::string WithoutTrailingSlashes(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  return path;
}

std::string ParentDir(const std::string& path) {
  const std::string p = WithoutTrailingSlashes(path);
  const size_t slash = p.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : p.substr(0, slash);
}

Status WriteFileDurably(const std::string& path, const std::string& text) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return IoError(path + ": cannot create (" + std::strerror(errno) + ")");
  size_t done = 0;
  std::string why;
  while (done < text.size() && why.empty()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n > 0) {
      done += static_cast<size_t>(n);
    } else if (n < 0 && errno != EINTR) {
      why = std::strerror(errno);
    } else if (n == 0) {
      why = "no progress after " + std::to_string(done) + " bytes";
    }
  }
  if (why.empty() && ::fsync(fd) != 0) why = std::string("fsync: ") + std::strerror(errno);
  if (::close(fd) != 0 && why.empty()) why = std::string("close: ") + std::strerror(errno);
  if (!why.empty()) return IoError(path + ": write failed (" + why + ")");
  return OkStatus();
}

namespace {

const char* FileKind(mode_t mode) {
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISCHR(mode) || S_ISBLK(mode)) return "a device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a file";
}

}  // namespace

StatusOr<int> OpenRegularFile(const std::string& path) {
  // O_NONBLOCK: open(2) of a FIFO returns at once instead of waiting for a
  // writer; it is cleared again once the file is known to be regular.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    const std::string what = path + ": cannot open (" + std::strerror(errno) + ")";
    return errno == ENOENT ? NotFound(what) : IoError(what);
  }
  struct stat st;
  Status s;
  if (::fstat(fd, &st) != 0) {
    s = IoError(path + ": cannot stat (" + std::strerror(errno) + ")");
  } else if (!S_ISREG(st.st_mode)) {
    s = InvalidArgument(path + ": not a regular file (" + FileKind(st.st_mode) + ")");
  } else if (::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK) != 0) {
    s = IoError(path + ": fcntl failed (" + std::strerror(errno) + ")");
  }
  if (!s.ok()) {
    ::close(fd);
    return s;
  }
  return fd;
}

StatusOr<std::string> ReadFile(const std::string& path) {
  ASSIGN_OR_RETURN(const int fd, OpenRegularFile(path));
  std::string text;
  std::string why;
  char buf[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n > 0) {
      text.append(buf, static_cast<size_t>(n));
    } else if (n == 0) {
      break;
    } else if (errno != EINTR) {
      why = std::strerror(errno);
      break;
    }
  }
  ::close(fd);
  if (!why.empty()) return IoError(path + ": read failed (" + why + ")");
  return text;
}

Status CopyFile(const std::string& from, const std::string& to) {
  ASSIGN_OR_RETURN(const std::string text, ReadFile(from));
  return WriteFileDurably(to, text);
}

Status SyncDir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return IoError(dir + ": cannot open to fsync (" + std::strerror(errno) + ")");
  const bool ok = ::fsync(fd) == 0;
  const int err = errno;
  ::close(fd);
  if (!ok) return IoError(dir + ": fsync failed (" + std::strerror(err) + ")");
  return OkStatus();
}

Status RenameNoReplace(const std::string& from, const std::string& to) {
  if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) == 0) {
    return OkStatus();
  }
  if (errno == EEXIST) {
    return FailedPrecondition(to + ": appeared while it was being written; left as it is");
  }
  // A file system without RENAME_NOREPLACE (some network ones): rename(2),
  // after checking once more (a directory that is not empty is never replaced).
  if (errno == EINVAL || errno == ENOSYS) {
    if (Exists(to)) {
      return FailedPrecondition(to + ": appeared while it was being written; left as it is");
    }
    if (::rename(from.c_str(), to.c_str()) == 0) return OkStatus();
  }
  return IoError(from + ": cannot rename to " + to + " (" + std::strerror(errno) + ")");
}

std::string Printable(const std::string& text, size_t max_bytes) {
  std::string out;
  for (size_t i = 0; i < text.size() && i < max_bytes; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    }
  }
  if (text.size() > max_bytes) out += "...";
  return out;
}

std::string HostName() {
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0 || host[0] == '\0') return "unknown-host";
  return host;
}

StatusOr<ExclusiveLock> ExclusiveLock::Acquire(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return IoError(path + ": cannot create lock file (" + std::strerror(errno) + ")");
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    if (err != EWOULDBLOCK) {
      ::close(fd);
      return IoError(path + ": cannot lock (" + std::strerror(err) + ")");
    }
    char buf[256];
    const ssize_t n = ::pread(fd, buf, sizeof buf, 0);
    ::close(fd);
    std::string holder = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
    while (!holder.empty() && holder.back() == '\n') holder.pop_back();
    return FailedPrecondition(path + ": held by " +
                              (holder.empty() ? "an unknown process" : Printable(holder)));
  }
  const std::string who = HostName() + " pid " + std::to_string(::getpid()) + "\n";
  // Best effort: the lock is what excludes, the text only names the holder.
  if (::ftruncate(fd, 0) == 0) {
    [[maybe_unused]] const ssize_t w = ::pwrite(fd, who.data(), who.size(), 0);
  }
  return ExclusiveLock(fd);
}

ExclusiveLock& ExclusiveLock::operator=(ExclusiveLock&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.fd_;
    other.fd_ = -1;
  }
  return *this;
}

ExclusiveLock::~ExclusiveLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the lock
}

}  // namespace l2l::fs
