// File-system helpers for the tools' outputs: never replace what is there,
// make what was written durable. Local; errors name the path.
#pragma once

#include <cstddef>
#include <string>

#include "l2l/core/status.h"

namespace l2l::fs {

bool Exists(const std::string& path);  // anything, a dangling link included
bool IsFile(const std::string& path);  // a regular file (links followed)
bool IsDir(const std::string& path);   // a directory (links followed)

// `path` without trailing slashes ("/" stays "/"): "out/" names the
// directory "out", whose temporary sibling is "out.tmp-<pid>".
std::string WithoutTrailingSlashes(std::string path);
// The directory holding `path` ("." for a bare name, "/" for "/x"); a
// trailing slash names the same entry ("a/b/" -> "a"). Textual: no ".."
// or link is resolved.
std::string ParentDir(const std::string& path);

// Opens the regular file at `path` (links followed) read-only; the caller
// owns the descriptor. NotFound "<path>: cannot open (<reason>)" when it
// does not exist, IoError for other open failures, InvalidArgument "<path>:
// not a regular file (a FIFO|directory|device|socket)" otherwise: opening
// never blocks (a FIFO without a writer would hang open(2) and read(2)).
StatusOr<int> OpenRegularFile(const std::string& path);
// The whole content of the regular file at `path`: OpenRegularFile's
// errors, or IoError "<path>: read failed (...)". (Unlike istreambuf_iterator
// over an ifstream, which throws out of the loop on an I/O error.)
StatusOr<std::string> ReadFile(const std::string& path);
// Copies `from` to `to` (created or truncated) and fsyncs it.
Status CopyFile(const std::string& from, const std::string& to);
// Writes `text` to `path` (created or truncated) and fsyncs it; IoError
// naming `path` and the reason when any step fails.
Status WriteFileDurably(const std::string& path, const std::string& text);
// fsyncs the directory `dir`, so a rename inside it survives a crash.
Status SyncDir(const std::string& dir);

// Renames the file or directory `from` to `to`, which must not exist:
// unlike rename(2), never replaces a file or an empty directory that appeared
// at `to` meanwhile (renameat2 RENAME_NOREPLACE, atomic).
// FailedPrecondition if `to` exists. On a file system without
// RENAME_NOREPLACE (some network ones) it checks that `to` is absent and then
// rename(2)s: something created at `to` in between (a file or an empty
// directory; never a non-empty one) would be replaced.
Status RenameNoReplace(const std::string& from, const std::string& to);

// `text` as one printable line for an error message: bytes outside
// printable ASCII become \xNN, and at most `max_bytes` of it are shown
// (then "...").
std::string Printable(const std::string& text, size_t max_bytes = 80);

// This machine's host name ("unknown-host" if it has none), for messages
// that name where a process runs.
std::string HostName();

// An exclusive advisory lock (flock(2)) on the file `path`, created if
// needed, held until destruction; the file records the holder's host and pid
// and is never removed (removing a lock file races with the next locker).
// flock is per open file: a second lock of the same file, even from this
// process, fails. Linux NFS clients map it onto POSIX byte-range locks, so
// it also excludes a holder on another node. Move-only.
class ExclusiveLock {
 public:
  // FailedPrecondition "<path>: held by <host> pid <pid>" (what the file
  // records) when another holder has it; IoError when it cannot be created
  // or locked.
  static StatusOr<ExclusiveLock> Acquire(const std::string& path);
  ExclusiveLock(ExclusiveLock&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  ExclusiveLock& operator=(ExclusiveLock&& other) noexcept;
  ExclusiveLock(const ExclusiveLock&) = delete;
  ExclusiveLock& operator=(const ExclusiveLock&) = delete;
  ~ExclusiveLock();

 private:
  explicit ExclusiveLock(int fd) : fd_(fd) {}
  int fd_ = -1;
};

}  // namespace l2l::fs
