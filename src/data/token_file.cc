// Token file reading (pread, one validation pass at open) and atomic writing.
#include "l2l/data/token_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <unordered_map>
#include <utility>

#include "l2l/core/fs.h"

namespace l2l::data {
namespace {

// Tokens are read with memcpy in host order; the format is little-endian.
static_assert(std::endian::native == std::endian::little, "l2l token files assume little-endian");

uint32_t LoadU32(const unsigned char* p) {
  uint32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
uint64_t LoadU64(const unsigned char* p) {
  uint64_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
void StoreU32(unsigned char* p, uint32_t v) { std::memcpy(p, &v, sizeof v); }
void StoreU64(unsigned char* p, uint64_t v) { std::memcpy(p, &v, sizeof v); }

// Magic bytes as a C-escaped string for messages: "L2LTOK\0\0".
std::string EscapeBytes(const unsigned char* p, size_t n) {
  std::string out;
  for (size_t i = 0; i < n; ++i) {
    const unsigned char c = p[i];
    if (c >= 0x20 && c < 0x7f && c != '\\' && c != '"') {
      out += static_cast<char>(c);
    } else if (c == 0) {
      out += "\\0";
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  return out;
}

std::string ErrnoText() { return std::strerror(errno); }

int64_t MtimeNs(const struct stat& st) {
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
}

// pread until `n` bytes or end of file; the bytes read, or -1 (errno set).
ssize_t ReadFully(int fd, void* buf, size_t n, off_t offset) {
  size_t done = 0;
  while (done < n) {
    const ssize_t r =
        ::pread(fd, static_cast<char*>(buf) + done, n - done, offset + static_cast<off_t>(done));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -1;
    if (r == 0) break;
    done += static_cast<size_t>(r);
  }
  return static_cast<ssize_t>(done);
}

// Exactly `n` bytes at `offset` into `buf`: "" when they were read, else what
// went wrong (a failed read, or a file shorter than when it was opened).
std::string ReadExactly(int fd, void* buf, size_t n, uint64_t offset) {
  const ssize_t got = ReadFully(fd, buf, n, static_cast<off_t>(offset));
  if (got < 0) {
    const std::string why = ErrnoText();
    return "cannot read bytes at offset " + std::to_string(offset) + ": " + why;
  }
  if (static_cast<size_t>(got) != n) {
    return "a read of " + std::to_string(n) + " bytes at offset " + std::to_string(offset) +
           " returned " + std::to_string(got) + " (the file is shorter than when it was opened)";
  }
  return "";
}

constexpr uint32_t kDenseCountLimit = uint32_t{1} << 24;

// "" when `starts` is a valid document index for `num_tokens` tokens (none for
// no tokens; else [0] = 0, strictly increasing, each < num_tokens), else what
// is wrong. One owner for the reader's and the writer's rule.
std::string DocumentStartsProblem(const std::vector<int64_t>& starts, int64_t num_tokens) {
  if (num_tokens == 0) {
    return starts.empty() ? "" : std::to_string(starts.size()) + " documents for 0 tokens";
  }
  if (starts.empty()) return "0 documents for " + std::to_string(num_tokens) + " tokens";
  if (starts[0] != 0) {
    return "document 0 starts at token " + std::to_string(starts[0]) + ", expected 0";
  }
  for (size_t d = 1; d < starts.size(); ++d) {
    if (starts[d] <= starts[d - 1] || starts[d] >= num_tokens) {
      return "document " + std::to_string(d) + " starts at token " + std::to_string(starts[d]) +
             ", expected > " + std::to_string(starts[d - 1]) + " (document " +
             std::to_string(d - 1) + ") and < num_tokens " + std::to_string(num_tokens);
    }
  }
  return "";
}

}  // namespace

StatusOr<TokenFile> TokenFile::Open(const std::string& path) {
  // A regular file only: a FIFO would block open(2).
  StatusOr<int> opened = fs::OpenRegularFile(path);
  if (opened.status().code() == StatusCode::kNotFound) {
    return NotFound("token file " + path + " does not exist");
  }
  RETURN_IF_ERROR(opened.status().WithContext("token file"));
  TokenFile f;  // owns the descriptor from here on
  f.path_ = path;
  f.fd_ = *opened;
  struct stat st;
  if (::fstat(f.fd_, &st) != 0)
    return IoError("cannot stat token file " + path + ": " + ErrnoText());
  const size_t size = static_cast<size_t>(st.st_size);
  f.size_bytes_ = size;
  f.mtime_ns_ = MtimeNs(st);
  if (size < kTokenFileHeaderBytes) {
    return DataLoss(path + ": file is " + std::to_string(size) + " bytes, expected at least " +
                    std::to_string(kTokenFileHeaderBytes) + " (the header); truncated or not a " +
                    "token file");
  }
  unsigned char h[kTokenFileHeaderBytes];
  const ssize_t got = ReadFully(f.fd_, h, sizeof h, 0);
  if (got < 0) return IoError("cannot read token file " + path + ": " + ErrnoText());
  if (static_cast<size_t>(got) != sizeof h) {
    return DataLoss(path + ": changed while it was being read (header read returned " +
                    std::to_string(got) + " bytes)");
  }

  if (std::memcmp(h + kMagicOffset, kTokenFileMagic, sizeof kTokenFileMagic) != 0) {
    return DataLoss(path + ": magic is \"" + EscapeBytes(h + kMagicOffset, 8) +
                    "\", expected \"L2LTOK\\0\\0\"; not an l2l token file");
  }
  f.version_ = LoadU32(h + kVersionOffset);
  if (f.version_ != kTokenFileVersion && f.version_ != kTokenFileVersionDocuments) {
    return DataLoss(path + ": format version is " + std::to_string(f.version_) + ", expected " +
                    std::to_string(kTokenFileVersion) + " or " +
                    std::to_string(kTokenFileVersionDocuments));
  }
  f.flags_ = LoadU32(h + kFlagsOffset);
  const uint32_t known_flags = f.has_documents() ? kFlagLossMask : 0;
  if ((f.flags_ & ~known_flags) != 0) {
    return DataLoss(path + ": header flags are " + std::to_string(f.flags_) + ", expected " +
                    (f.has_documents() ? "0 or 1 (a loss mask)" : "0 in version 1"));
  }
  f.token_bytes_ = LoadU32(h + kTokenBytesOffset);
  if (f.token_bytes_ != 2 && f.token_bytes_ != 4) {
    return DataLoss(path + ": token_bytes is " + std::to_string(f.token_bytes_) +
                    ", expected 2 (uint16) or 4 (uint32)");
  }
  f.vocab_size_ = LoadU32(h + kVocabSizeOffset);
  if (f.vocab_size_ == 0) return DataLoss(path + ": vocab_size is 0, expected >= 1");
  const uint64_t num_tokens = LoadU64(h + kNumTokensOffset);
  // Version 2: the document index follows the tokens: uint64 count, then the
  // starts. Its count is read where the header's token count puts it.
  const bool documents = f.has_documents();
  const uint64_t payload = size - kTokenFileHeaderBytes;
  const uint64_t max_tokens = payload / f.token_bytes_;
  uint64_t num_documents = 0;
  bool size_ok = num_tokens <= max_tokens;
  if (size_ok && documents) {
    const uint64_t after = payload - num_tokens * f.token_bytes_;  // index bytes
    size_ok = after >= 8;
    if (size_ok) {
      unsigned char c[8];
      const off_t at = static_cast<off_t>(kTokenFileHeaderBytes + num_tokens * f.token_bytes_);
      if (ReadFully(f.fd_, c, sizeof c, at) != 8) {
        return IoError("cannot read the document count of token file " + path);
      }
      num_documents = LoadU64(c);
      // The loss mask, when flagged, is one byte per token after the index.
      const uint64_t mask_bytes = f.has_loss_mask() ? num_tokens : 0;
      size_ok = mask_bytes <= after - 8 && num_documents <= (after - 8 - mask_bytes) / 8 &&
                after == 8 + 8 * num_documents + mask_bytes;
    }
  } else if (size_ok) {
    size_ok = payload == num_tokens * f.token_bytes_;
  }
  if (!size_ok) {
    // Expected size, saturated so a corrupt count cannot overflow the message.
    const uint64_t limit =
        (std::numeric_limits<uint64_t>::max() - kTokenFileHeaderBytes - 8) / f.token_bytes_;
    std::string expected =
        num_tokens > limit ? std::string("more than 2^64")
                           : std::to_string(kTokenFileHeaderBytes + num_tokens * f.token_bytes_);
    std::string parts = std::to_string(kTokenFileHeaderBytes) + "-byte header + " +
                        std::to_string(num_tokens) + " tokens x " + std::to_string(f.token_bytes_) +
                        " bytes";
    if (documents) {
      expected = "at least " + expected + " + 8";
      parts += " + the document index";
      const bool mask = f.has_loss_mask();
      if (num_documents > 0 && num_tokens <= limit / 2 && num_documents <= (uint64_t{1} << 58)) {
        expected = std::to_string(kTokenFileHeaderBytes + num_tokens * f.token_bytes_ + 8 +
                                  8 * num_documents + (mask ? num_tokens : 0));
        parts += " of " + std::to_string(num_documents) + " documents";
      }
      if (mask) parts += " + a loss mask of " + std::to_string(num_tokens) + " bytes";
    }
    return DataLoss(path + ": file is " + std::to_string(size) + " bytes, expected " + expected +
                    " (" + parts + "); truncated or corrupt");
  }
  f.num_tokens_ = static_cast<int64_t>(num_tokens);

  // Every token must be a valid id (ReadChecked checks each), read in chunks.
  constexpr int64_t kChunkTokens = int64_t{1} << 18;
  std::vector<uint32_t> chunk(static_cast<size_t>(std::min(kChunkTokens, f.num_tokens_)));
  for (int64_t first = 0; first < f.num_tokens_; first += kChunkTokens) {
    const int64_t n = std::min(kChunkTokens, f.num_tokens_ - first);
    const std::string problem = f.ReadChecked(first, n, chunk.data());
    if (!problem.empty()) return DataLoss(path + ": " + problem);
  }
  if (documents) {
    f.document_starts_.resize(num_documents);
    const size_t bytes = 8 * num_documents;
    const off_t at = static_cast<off_t>(kTokenFileHeaderBytes + num_tokens * f.token_bytes_ + 8);
    if (ReadFully(f.fd_, f.document_starts_.data(), bytes, at) != static_cast<ssize_t>(bytes)) {
      return IoError("cannot read the document index of token file " + path);
    }
    const std::string problem = DocumentStartsProblem(f.document_starts_, f.num_tokens_);
    if (!problem.empty()) return DataLoss(path + ": document index: " + problem);
  }
  if (f.has_loss_mask()) {
    std::vector<uint8_t> mask(static_cast<size_t>(std::min(kChunkTokens, f.num_tokens_)));
    for (int64_t first = 0; first < f.num_tokens_; first += kChunkTokens) {
      const int64_t n = std::min(kChunkTokens, f.num_tokens_ - first);
      const std::string problem = f.ReadMaskChecked(first, n, mask.data());
      if (!problem.empty()) return DataLoss(path + ": loss mask: " + problem);
    }
  }
  return f;
}

TokenFile::TokenFile(TokenFile&& other) noexcept { *this = std::move(other); }

TokenFile& TokenFile::operator=(TokenFile&& other) noexcept {
  if (this != &other) {
    Close();
    path_ = std::move(other.path_);
    fd_ = std::exchange(other.fd_, -1);
    size_bytes_ = std::exchange(other.size_bytes_, 0);
    mtime_ns_ = other.mtime_ns_;
    version_ = other.version_;
    flags_ = other.flags_;
    token_bytes_ = other.token_bytes_;
    vocab_size_ = other.vocab_size_;
    num_tokens_ = std::exchange(other.num_tokens_, 0);
    document_starts_ = std::move(other.document_starts_);
  }
  return *this;
}

TokenFile::~TokenFile() { Close(); }

void TokenFile::Close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

std::string TokenFile::ReadChecked(int64_t first, int64_t count, uint32_t* out) const {
  const size_t bytes = static_cast<size_t>(count) * token_bytes_;
  const uint64_t offset = kTokenFileHeaderBytes + static_cast<uint64_t>(first) * token_bytes_;
  // uint32 tokens land in place; uint16 ones are read into the front half of
  // `out` and widened from the back, so no element is overwritten unread.
  if (std::string problem = ReadExactly(fd_, out, bytes, offset); !problem.empty()) return problem;
  if (token_bytes_ == 2) {
    const unsigned char* raw = reinterpret_cast<const unsigned char*>(out);
    for (int64_t i = count - 1; i >= 0; --i) {
      uint16_t v;
      std::memcpy(&v, raw + 2 * i, sizeof v);
      out[i] = v;
    }
  }
  // uint16 tokens are always < a vocab > 65535.
  if (token_bytes_ == 2 && vocab_size_ >= kMaxUint16Vocab) return "";
  for (int64_t i = 0; i < count; ++i) {
    if (out[i] >= vocab_size_) {
      return "token " + std::to_string(first + i) + " at byte offset " +
             std::to_string(offset + static_cast<uint64_t>(i) * token_bytes_) + " is " +
             std::to_string(out[i]) + ", expected < vocab_size " + std::to_string(vocab_size_);
    }
  }
  return "";
}

Status TokenFile::CheckUnchanged() const {
  struct stat st;
  if (::fstat(fd_, &st) != 0)
    return IoError("cannot stat token file " + path_ + ": " + ErrnoText());
  if (static_cast<size_t>(st.st_size) != size_bytes_ || MtimeNs(st) != mtime_ns_) {
    return ChangedUnderTheRun("it was " + std::to_string(size_bytes_) + " bytes when opened, now " +
                              std::to_string(st.st_size) +
                              (MtimeNs(st) != mtime_ns_ ? " and modified since" : ""));
  }
  return OkStatus();
}

Status TokenFile::ChangedUnderTheRun(const std::string& what) const {
  return DataLoss(path_ + ": changed while this run was reading it (" + what +
                  "); a file must not change under a run: write a new one and resume with it");
}

Status TokenFile::Read(int64_t first, int64_t count, uint32_t* out) const {
  L2L_CHECK(first >= 0 && count >= 0 && count <= num_tokens_ - first)
      << "tokens [" << first << ", " << first + count << ") of " << num_tokens_ << " in " << path_;
  RETURN_IF_ERROR(CheckUnchanged());
  const std::string problem = ReadChecked(first, count, out);
  return problem.empty() ? OkStatus() : ChangedUnderTheRun(problem);
}

uint64_t TokenFile::mask_offset() const {
  return kTokenFileHeaderBytes + static_cast<uint64_t>(num_tokens_) * token_bytes_ + 8 +
         8 * document_starts_.size();
}

std::string TokenFile::ReadMaskChecked(int64_t first, int64_t count, uint8_t* out) const {
  const uint64_t offset = mask_offset() + static_cast<uint64_t>(first);
  if (std::string problem = ReadExactly(fd_, out, static_cast<size_t>(count), offset);
      !problem.empty()) {
    return problem;
  }
  for (int64_t i = 0; i < count; ++i) {
    if (out[i] > 1) {
      return "token " + std::to_string(first + i) + "'s byte at offset " +
             std::to_string(offset + static_cast<uint64_t>(i)) + " is " + std::to_string(out[i]) +
             ", expected 0 or 1";
    }
  }
  return "";
}

Status TokenFile::ReadLossMask(int64_t first, int64_t count, uint8_t* out) const {
  L2L_CHECK(has_loss_mask()) << path_ << " has no loss mask";
  L2L_CHECK(first >= 0 && count >= 0 && count <= num_tokens_ - first)
      << "mask [" << first << ", " << first + count << ") of " << num_tokens_ << " in " << path_;
  RETURN_IF_ERROR(CheckUnchanged());
  const std::string problem = ReadMaskChecked(first, count, out);
  return problem.empty() ? OkStatus() : ChangedUnderTheRun(problem);
}

Status WriteTokenFile(const std::string& path, uint32_t vocab_size,
                      const std::vector<uint32_t>& tokens,
                      const std::vector<int64_t>& document_starts,
                      const std::vector<uint8_t>& loss_mask) {
  if (vocab_size == 0) return InvalidArgument("vocab_size 0 for token file " + path);
  const bool documents = !document_starts.empty();
  if (documents) {
    const std::string problem =
        DocumentStartsProblem(document_starts, static_cast<int64_t>(tokens.size()));
    if (!problem.empty()) return InvalidArgument("writing " + path + ": " + problem);
  }
  const bool mask = !loss_mask.empty();
  if (mask && (!documents || loss_mask.size() != tokens.size() ||
               std::any_of(loss_mask.begin(), loss_mask.end(), [](uint8_t m) { return m > 1; }))) {
    return InvalidArgument("writing " + path + ": a loss mask needs document starts and one 0 or " +
                           "1 per token (" + std::to_string(loss_mask.size()) + " for " +
                           std::to_string(tokens.size()) + " tokens)");
  }
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] >= vocab_size) {
      return InvalidArgument("token " + std::to_string(i) + " is " + std::to_string(tokens[i]) +
                             ", expected < vocab_size " + std::to_string(vocab_size) +
                             " (writing " + path + ")");
    }
  }
  const uint32_t token_bytes = vocab_size <= kMaxUint16Vocab ? 2 : 4;

  unsigned char header[kTokenFileHeaderBytes] = {};
  std::memcpy(header + kMagicOffset, kTokenFileMagic, sizeof kTokenFileMagic);
  StoreU32(header + kVersionOffset, documents ? kTokenFileVersionDocuments : kTokenFileVersion);
  StoreU32(header + kTokenBytesOffset, token_bytes);
  StoreU32(header + kVocabSizeOffset, vocab_size);
  StoreU32(header + kFlagsOffset, mask ? kFlagLossMask : 0);
  StoreU64(header + kNumTokensOffset, tokens.size());

  const std::string tmp = path + ".tmp";
  std::FILE* out = std::fopen(tmp.c_str(), "wb");
  if (out == nullptr) return IoError("cannot create " + tmp + ": " + ErrnoText());
  bool ok = std::fwrite(header, 1, sizeof header, out) == sizeof header;

  // Convert in chunks so a uint16 file never needs a second full copy.
  constexpr size_t kChunkTokens = size_t{1} << 16;
  std::vector<unsigned char> buf(kChunkTokens * token_bytes);
  for (size_t begin = 0; ok && begin < tokens.size(); begin += kChunkTokens) {
    const size_t n = std::min(kChunkTokens, tokens.size() - begin);
    for (size_t i = 0; i < n; ++i) {
      if (token_bytes == 2) {
        const uint16_t v = static_cast<uint16_t>(tokens[begin + i]);
        std::memcpy(buf.data() + i * 2, &v, 2);
      } else {
        StoreU32(buf.data() + i * 4, tokens[begin + i]);
      }
    }
    ok = std::fwrite(buf.data(), 1, n * token_bytes, out) == n * token_bytes;
  }
  if (ok && documents) {
    unsigned char count[8];
    StoreU64(count, document_starts.size());
    ok = std::fwrite(count, 1, 8, out) == 8 &&
         std::fwrite(document_starts.data(), 8, document_starts.size(), out) ==
             document_starts.size();
  }
  if (ok && mask) ok = std::fwrite(loss_mask.data(), 1, loss_mask.size(), out) == loss_mask.size();
  int write_errno = errno;
  if (std::fclose(out) != 0 && ok) {
    ok = false;
    write_errno = errno;
  }
  if (!ok) {
    std::remove(tmp.c_str());
    return IoError("cannot write " + tmp + ": " + std::strerror(write_errno));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = ErrnoText();
    std::remove(tmp.c_str());
    return IoError("cannot rename " + tmp + " to " + path + ": " + why);
  }
  return OkStatus();
}

StatusOr<double> UnigramEntropyNats(const TokenFile& file) {
  const int64_t n = file.num_tokens();
  if (n == 0) return 0.0;
  // Dense counts up to 2^24 ids; a hash map beyond, where most ids are unused.
  std::vector<int64_t> counts;
  std::unordered_map<uint32_t, int64_t> sparse;
  const bool dense = file.vocab_size() <= kDenseCountLimit;
  if (dense) counts.assign(file.vocab_size(), 0);
  constexpr int64_t kChunkTokens = int64_t{1} << 18;
  std::vector<uint32_t> chunk(static_cast<size_t>(std::min(kChunkTokens, n)));
  for (int64_t first = 0; first < n; first += kChunkTokens) {
    const int64_t len = std::min(kChunkTokens, n - first);
    RETURN_IF_ERROR(file.Read(first, len, chunk.data()));
    for (int64_t i = 0; i < len; ++i) {
      if (dense) {
        ++counts[chunk[i]];
      } else {
        ++sparse[chunk[i]];
      }
    }
  }
  for (const auto& [id, c] : sparse) counts.push_back(c);
  double h = 0.0;
  for (int64_t c : counts) {
    if (c == 0) continue;
    const double p = static_cast<double>(c) / static_cast<double>(n);
    h -= p * std::log(p);
  }
  return h;
}

}  // namespace l2l::data
