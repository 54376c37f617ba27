// Token files: the on-disk corpus format the trainer reads (docs/data-format.md).
//
// A token file is a 32-byte little-endian header followed by the tokens, each
// stored as uint16 or uint32; version 2 adds a document index after them (where
// each document starts). TokenFile validates it once at Open and then
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
// Version 1: header + tokens. Version 2: header + tokens + document index
// (uint64 num_documents, then uint64 start[num_documents]: start[0] = 0,
// strictly increasing, each < num_tokens), then, with kFlagLossMask, one
// uint8 per token: 1 = the token is a training target (an SFT response), 0 =
// context only.
inline constexpr uint32_t kTokenFileVersion = 1;
inline constexpr uint32_t kTokenFileVersionDocuments = 2;
inline constexpr size_t kTokenFileHeaderBytes = 32;
inline constexpr size_t kMagicOffset = 0;        // char[8]
inline constexpr size_t kVersionOffset = 8;      // uint32
inline constexpr size_t kTokenBytesOffset = 12;  // uint32: 2 (uint16 tokens) or 4 (uint32)
inline constexpr size_t kVocabSizeOffset = 16;   // uint32: every token is < vocab_size
inline constexpr size_t kFlagsOffset = 20;       // uint32: 0 in version 1; kFlag* in version 2
inline constexpr uint32_t kFlagLossMask = 1;     // a loss mask follows the document index
inline constexpr size_t kNumTokensOffset = 24;   // uint64
// WriteTokenFile stores uint16 tokens when every id fits, i.e. vocab_size <= this.
inline constexpr uint32_t kMaxUint16Vocab = 65536;

// An open, validated token file. Movable, not copyable; the descriptor lives as
// long as the object. All methods are const and thread-safe (pread only).
class TokenFile {
 public:
  // Opens `path` and validates it: magic, version, token_bytes, the file size
  // (exactly header + num_tokens * token_bytes, + the document index in
  // version 2), every token < vocab_size, and the document starts.
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
  uint32_t version() const { return version_; }
  // Version 2 files record where each document starts; version 1 files do not
  // (then num_documents() is 0 and document_starts() empty).
  bool has_documents() const { return version_ >= kTokenFileVersionDocuments; }
  int64_t num_documents() const { return static_cast<int64_t>(document_starts_.size()); }
  // Token index of each document's first token: [0] = 0, strictly increasing.
  const std::vector<int64_t>& document_starts() const { return document_starts_; }
  // Version 2 with kFlagLossMask: which tokens are targets (ReadLossMask).
  bool has_loss_mask() const { return (flags_ & kFlagLossMask) != 0; }
  size_t file_size_bytes() const { return size_bytes_; }
  const std::string& path() const { return path_; }

  // Tokens [first, first + count) into out[0, count); the range must lie in
  // [0, num_tokens()) (CHECKed). DataLoss naming the file when it is no
  // longer the file Open validated: its size or modification time changed, a
  // read came back short, or a token is >= vocab_size. IoError when a read
  // fails. One fstat and one pread per call.
  Status Read(int64_t first, int64_t count, uint32_t* out) const;
  // The loss mask of tokens [first, first + count) into out[0, count), each 0
  // or 1; has_loss_mask() must hold (CHECKed). Errors as Read.
  Status ReadLossMask(int64_t first, int64_t count, uint8_t* out) const;

 private:
  TokenFile() = default;
  void Close();
  // Reads tokens [first, first + count) with pread and checks each is <
  // vocab_size; "" when they are, else what is wrong (no path).
  std::string ReadChecked(int64_t first, int64_t count, uint32_t* out) const;
  // Likewise for the loss mask: each byte must be 0 or 1.
  std::string ReadMaskChecked(int64_t first, int64_t count, uint8_t* out) const;
  // DataLoss naming the file when its size or modification time changed
  // since Open; OK otherwise.
  Status CheckUnchanged() const;
  Status ChangedUnderTheRun(const std::string& what) const;  // the DataLoss for `what`
  uint64_t mask_offset() const;                              // byte offset of the loss mask
  std::string path_;
  int fd_ = -1;
  size_t size_bytes_ = 0;
  int64_t mtime_ns_ = 0;  // st_mtim at Open
  uint32_t version_ = 0;
  uint32_t flags_ = 0;
  uint32_t token_bytes_ = 0;
  uint32_t vocab_size_ = 0;
  int64_t num_tokens_ = 0;
  std::vector<int64_t> document_starts_;  // version 2 only, read at Open
};

// Writes `tokens` as a token file. Uses uint16 tokens when vocab_size <=
// 65536, else uint32. With `document_starts` (non-empty) the file is version 2
// and records them; without, version 1. Writes `path + ".tmp"` then renames it
// over `path`, so a failure never leaves a partial file at `path` (the .tmp is
// removed too). A non-empty `loss_mask` (one 0/1 per token; needs
// `document_starts`) sets kFlagLossMask and is stored after the index.
// Errors: InvalidArgument (vocab_size == 0, a token >= vocab_size with the
// first bad token's index and value named, document starts that are not 0,
// strictly increasing, < tokens.size(), a loss mask of another length or
// value), IoError (cannot write or rename).
Status WriteTokenFile(const std::string& path, uint32_t vocab_size,
                      const std::vector<uint32_t>& tokens,
                      const std::vector<int64_t>& document_starts = {},
                      const std::vector<uint8_t>& loss_mask = {});

// Entropy in nats of the empirical unigram distribution of the file's tokens
// (0 for an empty file). One pass over the file; TokenFile::Read's errors.
StatusOr<double> UnigramEntropyNats(const TokenFile& file);

}  // namespace l2l::data
