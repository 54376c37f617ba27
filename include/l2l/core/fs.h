// File-system helpers for the tools' outputs: never replace what is there,
// make what was written durable. Local; errors name the path.
#pragma once

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

// The whole content of the file at `path`. NotFound "<path>: cannot open
// (<reason>)" when it does not exist, IoError "<path>: cannot open (...)"
// or "<path>: read failed (...)" otherwise. (Unlike istreambuf_iterator over
// an ifstream, which throws out of the loop on an I/O error.)
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

}  // namespace l2l::fs
