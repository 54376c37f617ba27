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
// The directory holding `path` ("." for a bare name).
std::string ParentDir(const std::string& path);

// Copies `from` to `to` (created or truncated) and fsyncs it.
Status CopyFile(const std::string& from, const std::string& to);
// Writes `text` to `path` (created or truncated) and fsyncs it.
Status WriteFileDurably(const std::string& path, const std::string& text);
// fsyncs the directory `dir`, so a rename inside it survives a crash.
Status SyncDir(const std::string& dir);

// Renames the directory `from` to `to`, which must not exist: unlike
// rename(2), never replaces an existing (empty) directory that appeared
// meanwhile. FailedPrecondition if `to` exists.
Status RenameNoReplace(const std::string& from, const std::string& to);

}  // namespace l2l::fs
