// Token files: the on-disk corpus format the trainer reads (docs/data-format.md).
//
// A token file is a 32-byte little-endian header followed by the tokens, each
// stored as uint16 or uint32. TokenFile validates it once at Open and then
// reads it with pread(2), never through a memory map: a file truncated or
// rewritten while a run reads it is a DataLoss naming the file, not a SIGBUS.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "l2l/core/status.h"

namespace l2l::data {

// Header layout, byte offsets from the start of the file. All integers are
// little-endian.
inline constexpr char kTokenFileMagic[8] = {'L', '2', 'L', 'T', 'O', 'K', '\0', '\0'};
inline constexpr uint32_t kTokenFileVersion = 1;
inline constexpr size_t kTokenFileHeaderBytes = 32;
inline constexpr size_t kMagicOffset = 0;        // char[8]
inline constexpr size_t kVersionOffset = 8;      // uint32
inline constexpr size_t kTokenBytesOffset = 12;  // uint32: 2 (uint16 tokens) or 4 (uint32)
inline constexpr size_t kVocabSizeOffset = 16;   // uint32: every token is < vocab_size
inline constexpr size_t kReservedOffset = 20;    // uint32: 0
inline constexpr size_t kNumTokensOffset = 24;   // uint64
// WriteTokenFile stores uint16 tokens when every id fits, i.e. vocab_size <= this.
inline constexpr uint32_t kMaxUint16Vocab = 65536;

// An open, validated token file. Movable, not copyable; the descriptor lives as
// long as the object. All methods are const and thread-safe (pread only).
class TokenFile {
 public:
  // Opens `path` and validates it: magic, version, token_bytes, the file size
  // (exactly header + num_tokens * token_bytes), and every token < vocab_size.
  // Errors: NotFound (no such file), IoError (cannot open/read), DataLoss (bad
  // header, wrong size, token out of range). Messages name the file and, for a
  // bad token, its byte offset and value. Reads the whole file once (O(size)).
  static StatusOr<TokenFile> Open(const std::string& path);

  TokenFile(TokenFile&& other) noexcept;
  TokenFile& operator=(TokenFile&& other) noexcept;
  TokenFile(const TokenFile&) = delete;
  TokenFile& operator=(const TokenFile&) = delete;
  ~TokenFile();

  uint32_t vocab_size() const { return vocab_size_; }
  int64_t num_tokens() const { return num_tokens_; }
  uint32_t token_bytes() const { return token_bytes_; }  // 2 or 4
  uint32_t version() const { return kTokenFileVersion; }
  size_t file_size_bytes() const { return size_bytes_; }
  const std::string& path() const { return path_; }

  // Tokens [first, first + count) into out[0, count); the range must lie in
  // [0, num_tokens()) (CHECKed). DataLoss naming the file when it is no
  // longer the file Open validated: its size or modification time changed, a
  // read came back short, or a token is >= vocab_size. IoError when a read
  // fails. One fstat and one pread per call.
  Status Read(int64_t first, int64_t count, uint32_t* out) const;

 private:
  TokenFile() = default;
  void Close();
  // Reads tokens [first, first + count) with pread and checks each is <
  // vocab_size; "" when they are, else what is wrong (no path).
  std::string ReadChecked(int64_t first, int64_t count, uint32_t* out) const;

  std::string path_;
  int fd_ = -1;
  size_t size_bytes_ = 0;
  int64_t mtime_ns_ = 0;  // st_mtim at Open
  uint32_t token_bytes_ = 0;
  uint32_t vocab_size_ = 0;
  int64_t num_tokens_ = 0;
};

// Writes `tokens` as a token file. Uses uint16 tokens when vocab_size <=
// 65536, else uint32. Writes `path + ".tmp"` then renames it over `path`, so a
// failure never leaves a partial file at `path` (the .tmp is removed too).
// Errors: InvalidArgument (vocab_size == 0, a token >= vocab_size; the first
// bad token's index and value are named), IoError (cannot write or rename).
Status WriteTokenFile(const std::string& path, uint32_t vocab_size,
                      const std::vector<uint32_t>& tokens);

// Entropy in nats of the empirical unigram distribution of the file's tokens
// (0 for an empty file). One pass over the file; TokenFile::Read's errors.
StatusOr<double> UnigramEntropyNats(const TokenFile& file);

}  // namespace l2l::data
