// l2l-data: make and inspect token files (docs/data-format.md).
//
//   l2l-data text --out FILE IN...        byte-level tokenise files (vocab 256)
//   l2l-data synthetic --out FILE --tokens N [--vocab 64] [--order 2] [--seed 1]
//                      [--concentration 0.1]
//   l2l-data info FILE
//   l2l-data tokenize --tokenizer T --out FILE IN...   the model's own tokenizer
//   l2l-data sft --tokenizer DIR --out FILE --seq-len S IN.jsonl...   chat examples
//                                        (python/l2l_tokenize.py in the project venv)
//
// Output is "key=value" lines on stdout. Any failure prints one line on stderr
// naming the file, flag or value at fault and exits 2; output files are
// written to FILE.tmp and renamed, so a failure leaves no partial file.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <new>
#include <set>
#include <string>
#include <vector>

#include "l2l/core/fs.h"
#include "l2l/core/status.h"
#include "l2l/data/markov.h"
#include "l2l/data/token_file.h"
#include "verb_args.h"

namespace l2l::data {
namespace {

constexpr const char* kUsage =
    "usage:\n"
    "  l2l-data text --out FILE IN...\n"
    "      byte-level tokenise the concatenated input files (token = byte, vocab 256)\n"
    "  l2l-data synthetic --out FILE --tokens N [--vocab 64] [--order 2] [--seed 1]\n"
    "                     [--concentration 0.1]\n"
    "      write an order-k Markov corpus; prints entropy_rate_nats (the loss floor)\n"
    "      and unigram_entropy_nats of the generated tokens\n"
    "  l2l-data info FILE\n"
    "      print version, token dtype, vocab size, token and document counts and\n"
    "      unigram entropy\n"
    "  l2l-data tokenize --tokenizer PATH_OR_HF_DIR --out FILE [--field text]\n"
    "                    [--workers N] [--vocab-size N] [--separator TOKEN|none]\n"
    "                    [--progress auto|always|never] [--force] IN...\n"
    "      tokenize .txt / .jsonl / .parquet inputs with Hugging Face tokenizers or\n"
    "      SentencePiece (installed into the project venv by launch/pyenv.sh) into a\n"
    "      token file with a document index; l2l-data tokenize --help for details\n"
    "  l2l-data sft --tokenizer HF_DIR --out FILE --seq-len S\n"
    "               [--too-long error|skip|truncate] [--workers N] [--force] IN.jsonl...\n"
    "      instruction examples ({prompt, response} or {messages}) rendered with the\n"
    "      tokenizer's chat template; the loss mask marks the assistant's tokens\n"
    "Failures print one line on stderr and exit 2.\n";

using Args = tools::VerbArgs;

StatusOr<Args> ParseArgs(const std::string& verb, const std::vector<std::string>& argv,
                         const std::set<std::string>& known) {
  return tools::ParseVerbArgs("l2l-data", verb, argv, known);
}

StatusOr<std::string> RequiredFlag(const Args& args, const std::string& name) {
  auto it = args.flags.find(name);
  if (it == args.flags.end() || it->second.empty()) {
    return InvalidArgument("missing required flag " + name + " <value>");
  }
  return it->second;
}

template <typename T>
StatusOr<T> IntFlag(const Args& args, const std::string& name, T default_value, T min_value,
                    T max_value) {
  auto it = args.flags.find(name);
  if (it == args.flags.end()) return default_value;
  const std::string& text = it->second;
  T v{};
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || ptr != text.data() + text.size() || v < min_value || v > max_value) {
    return InvalidArgument("flag " + name + " value '" + text + "', expected an integer in [" +
                           std::to_string(min_value) + ", " + std::to_string(max_value) + "]");
  }
  return v;
}

StatusOr<double> DoubleFlag(const Args& args, const std::string& name, double default_value) {
  auto it = args.flags.find(name);
  if (it == args.flags.end()) return default_value;
  const std::string& text = it->second;
  double v = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || ptr != text.data() + text.size() || !std::isfinite(v)) {
    return InvalidArgument("flag " + name + " value '" + text + "', expected a number");
  }
  return v;
}

StatusOr<std::string> ReadFile(const std::string& path) {
  StatusOr<std::string> text = fs::ReadFile(path);
  if (text.ok()) return text;
  if (text.status().code() == StatusCode::kNotFound) {
    return NotFound("input file " + path + " does not exist");
  }
  return IoError("input file " + text.status().message());
}

std::string Fixed(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6f", x);
  return buf;
}

Status RunText(const std::vector<std::string>& argv) {
  ASSIGN_OR_RETURN(Args args, ParseArgs("text", argv, {"--out"}));
  ASSIGN_OR_RETURN(std::string out, RequiredFlag(args, "--out"));
  if (args.positional.empty()) return InvalidArgument("text: no input files given (IN...)");
  std::vector<uint32_t> tokens;
  for (const std::string& path : args.positional) {
    ASSIGN_OR_RETURN(std::string text, ReadFile(path));
    const std::vector<uint32_t> t = ByteTokenize(text);
    tokens.insert(tokens.end(), t.begin(), t.end());
  }
  RETURN_IF_ERROR(WriteTokenFile(out, kByteVocab, tokens));
  std::printf("file=%s\nvocab_size=%u\nnum_tokens=%zu\n", out.c_str(), kByteVocab, tokens.size());
  return OkStatus();
}

Status RunSynthetic(const std::vector<std::string>& argv) {
  ASSIGN_OR_RETURN(Args args, ParseArgs("synthetic", argv,
                                        {"--out", "--tokens", "--vocab", "--order", "--seed",
                                         "--concentration"}));
  if (!args.positional.empty()) {
    return InvalidArgument("synthetic: unexpected argument '" + args.positional[0] + "'");
  }
  ASSIGN_OR_RETURN(std::string out, RequiredFlag(args, "--out"));
  RETURN_IF_ERROR(RequiredFlag(args, "--tokens").status());
  ASSIGN_OR_RETURN(int64_t num_tokens, IntFlag<int64_t>(args, "--tokens", 0, 1, int64_t{1} << 40));
  MarkovSpec spec;
  ASSIGN_OR_RETURN(spec.vocab, IntFlag<int>(args, "--vocab", 64, 2, 65536));
  ASSIGN_OR_RETURN(spec.order, IntFlag<int>(args, "--order", 2, 0, 64));
  ASSIGN_OR_RETURN(spec.seed, IntFlag<uint64_t>(args, "--seed", 1, 0, ~uint64_t{0}));
  ASSIGN_OR_RETURN(spec.concentration, DoubleFlag(args, "--concentration", 0.1));
  RETURN_IF_ERROR(ValidateMarkovSpec(spec).WithContext("synthetic"));

  const MarkovSource source(spec);
  RETURN_IF_ERROR(
      WriteTokenFile(out, static_cast<uint32_t>(spec.vocab), source.Generate(num_tokens)));
  ASSIGN_OR_RETURN(TokenFile file, TokenFile::Open(out));
  ASSIGN_OR_RETURN(const double unigram, UnigramEntropyNats(file));
  std::printf(
      "file=%s\nvocab_size=%d\nnum_tokens=%lld\nentropy_rate_nats=%s\n"
      "unigram_entropy_nats=%s\n",
      out.c_str(), spec.vocab, static_cast<long long>(num_tokens),
      Fixed(source.EntropyRateNats()).c_str(), Fixed(unigram).c_str());
  return OkStatus();
}

Status RunInfo(const std::vector<std::string>& argv) {
  ASSIGN_OR_RETURN(Args args, ParseArgs("info", argv, {}));
  if (args.positional.size() != 1) {
    return InvalidArgument("info: expected exactly one FILE, got " +
                           std::to_string(args.positional.size()));
  }
  ASSIGN_OR_RETURN(TokenFile file, TokenFile::Open(args.positional[0]));
  ASSIGN_OR_RETURN(const double unigram, UnigramEntropyNats(file));
  std::printf("file=%s\nversion=%u\ntoken_dtype=%s\nvocab_size=%u\nnum_tokens=%lld\n",
              file.path().c_str(), file.version(), file.token_bytes() == 2 ? "uint16" : "uint32",
              file.vocab_size(), static_cast<long long>(file.num_tokens()));
  if (file.has_documents()) {
    std::printf("num_documents=%lld\n", static_cast<long long>(file.num_documents()));
  }
  if (file.has_loss_mask()) {
    // The targets of data.sampling: examples (an example's first token never is one).
    int64_t loss_tokens = 0;
    constexpr int64_t kChunk = int64_t{1} << 20;
    std::vector<uint8_t> mask(static_cast<size_t>(std::min(kChunk, file.num_tokens())));
    for (int64_t first = 0; first < file.num_tokens(); first += kChunk) {
      const int64_t n = std::min(kChunk, file.num_tokens() - first);
      RETURN_IF_ERROR(file.ReadLossMask(first, n, mask.data()));
      for (int64_t i = 0; i < n; ++i) loss_tokens += mask[static_cast<size_t>(i)];
    }
    std::printf("loss_tokens=%lld\n", static_cast<long long>(loss_tokens));
  }
  std::printf("unigram_entropy_nats=%s\n", Fixed(unigram).c_str());
  return OkStatus();
}

// Tokenization is the reference libraries' job (Hugging Face tokenizers,
// SentencePiece, transformers' chat templates), so `tokenize` and `sft` exec
// python/l2l_tokenize.py in the project's venv (launch/pyenv.sh creates it on
// first use). Returns only on failure.
Status RunPython(const std::string& verb, const std::vector<std::string>& argv) {
  const std::string root = L2L_SOURCE_DIR;
  std::vector<std::string> cmd = {"/bin/bash", root + "/launch/pyenv.sh", "exec",
                                  root + "/python/l2l_tokenize.py", verb};
  cmd.insert(cmd.end(), argv.begin(), argv.end());
  std::vector<char*> c;
  for (std::string& s : cmd) c.push_back(s.data());
  c.push_back(nullptr);
  std::fflush(stdout);
  ::execv(c[0], c.data());
  return IoError(verb + ": cannot run " + cmd[1] + ": " + std::strerror(errno));
}

// `l2l-data help`, or --help / -h anywhere.
bool WantsHelp(const std::vector<std::string>& args) {
  if (!args.empty() && args[0] == "help") return true;
  // The Python verbs answer --help themselves.
  if (!args.empty() && (args[0] == "tokenize" || args[0] == "sft")) return false;
  for (const std::string& a : args) {
    if (a == "--help" || a == "-h") return true;
  }
  return false;
}

Status Run(const std::vector<std::string>& all) {
  if (all.empty()) {
    return InvalidArgument(
        "missing verb, expected text, synthetic, info, tokenize or sft; run l2l-data --help");
  }
  const std::string& verb = all[0];
  const std::vector<std::string> rest(all.begin() + 1, all.end());
  try {
    if (verb == "text") return RunText(rest);
    if (verb == "synthetic") return RunSynthetic(rest);
    if (verb == "info") return RunInfo(rest);
    if (verb == "tokenize" || verb == "sft") return RunPython(verb, rest);
  } catch (const std::bad_alloc&) {
    return OutOfMemory(verb + ": out of host memory");
  }
  return InvalidArgument("unknown verb '" + verb +
                         "', expected text, synthetic, info, tokenize or sft; run l2l-data --help");
}

}  // namespace
}  // namespace l2l::data

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  if (l2l::data::WantsHelp(args)) {
    std::fputs(l2l::data::kUsage, stdout);
    return 0;
  }
  const l2l::Status s = l2l::data::Run(args);
  if (!s.ok()) {
    std::fprintf(stderr, "l2l-data: %s\n", s.message().c_str());
    return l2l::ExitCodeFor(s);
  }
  return 0;
}
