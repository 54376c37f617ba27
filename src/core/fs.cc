#include "l2l/core/fs.h"

#include <fcntl.h>
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

StatusOr<std::string> ReadFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const std::string what = path + ": cannot open (" + std::strerror(errno) + ")";
    return errno == ENOENT ? NotFound(what) : IoError(what);
  }
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

}  // namespace l2l::fs
