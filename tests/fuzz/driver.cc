// fuzz_driver: a deterministic mutation driver for the fuzz targets in this
// folder, so they run in CI with GCC and no libFuzzer. Each target defines
// the libFuzzer entry points (LLVMFuzzerTestOneInput, and optionally
// LLVMFuzzerInitialize), so the same sources also link with clang's
// -fsanitize=fuzzer for open-ended fuzzing.
//
//   TARGET_fuzz [--seconds S] [--runs N] [--seed R] [--max-len B] [--crash-file F]
//               [--timeout T] SEED_DIR_OR_FILE...
//   TARGET_fuzz --replay FILE
//
// Every seed runs first, unmutated (the seeds are the reproduced cases, so
// they are regression tests on their own). Then, until S seconds or N runs
// (default 30 s), it runs mutants: a seed, or an earlier mutant, with 1 to 8
// edits (bit flips, interesting bytes and integers, inserted, deleted or
// duplicated ranges, splices of another seed). Mutations are a pure function
// of --seed and the run number, so a failure reproduces with the same flags.
//
// Before each run the input is written to the crash file (default
// TARGET-crash.bin in the working directory); a run that crashes, aborts or
// trips a sanitizer leaves it there for --replay, and a clean finish removes
// it. One input running past T seconds (default 60) is a hang: it aborts,
// leaving the crash file. Exit 0 when every run returned in time.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
extern "C" __attribute__((weak)) int LLVMFuzzerInitialize(int* argc, char*** argv);

namespace {

using Bytes = std::vector<uint8_t>;

// SplitMix64: small, fast, and the same on every machine.
struct Rng {
  uint64_t s;
  uint64_t Next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  size_t Below(size_t n) { return n == 0 ? 0 : static_cast<size_t>(Next() % n); }
};

Bytes ReadBytes(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return Bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

bool WriteBytes(const std::string& path, const Bytes& b) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return false;
  const bool ok = b.empty() || std::fwrite(b.data(), 1, b.size(), f) == b.size();
  return std::fclose(f) == 0 && ok;
}

// Values at the edges of the integer types, as text (configs, --set) and as
// little-endian bytes (token files, checkpoint edit programs).
const char* const kInterestingText[] = {"0",
                                        "-1",
                                        "1",
                                        "2147483647",
                                        "2147483648",
                                        "-2147483648",
                                        "4294967296",
                                        "1099511627776",
                                        "9223372036854775807",
                                        "-9223372036854775808",
                                        "1e308",
                                        "-1e308",
                                        "nan",
                                        ".inf",
                                        "0x7fffffff",
                                        "1e-320",
                                        "~",
                                        "[",
                                        "{",
                                        "\n",
                                        "\x1b",
                                        "---\n",
                                        ": ",
                                        "\"",
                                        "'",
                                        "&a",
                                        "*a",
                                        "!!binary"};
const uint64_t kInterestingInts[] = {0,
                                     1,
                                     2,
                                     0x7f,
                                     0x80,
                                     0xff,
                                     0xffff,
                                     0x10000,
                                     0x7fffffff,
                                     0x80000000,
                                     0xffffffff,
                                     uint64_t{1} << 20,
                                     uint64_t{1} << 32,
                                     uint64_t{1} << 40,
                                     0x7fffffffffffffffull,
                                     0x8000000000000000ull,
                                     ~uint64_t{0}};

void Mutate(Rng& rng, const std::vector<Bytes>& seeds, size_t max_len, Bytes* b) {
  const int edits = 1 + static_cast<int>(rng.Below(8));
  for (int e = 0; e < edits; ++e) {
    const size_t pos = rng.Below(b->size() + 1);
    switch (rng.Below(8)) {
      case 0:  // flip a bit
        if (!b->empty()) (*b)[rng.Below(b->size())] ^= static_cast<uint8_t>(1u << rng.Below(8));
        break;
      case 1:  // set a byte
        if (!b->empty()) (*b)[rng.Below(b->size())] = static_cast<uint8_t>(rng.Next());
        break;
      case 2: {  // overwrite with an interesting integer, 1/2/4/8 bytes
        const uint64_t v =
            kInterestingInts[rng.Below(sizeof kInterestingInts / sizeof kInterestingInts[0])];
        const size_t width = size_t{1} << rng.Below(4);
        for (size_t i = 0; i < width && pos + i < b->size(); ++i) {
          (*b)[pos + i] = static_cast<uint8_t>(v >> (8 * i));
        }
        break;
      }
      case 3: {  // insert interesting text
        const char* t = kInterestingText[rng.Below(sizeof kInterestingText / sizeof(char*))];
        b->insert(b->begin() + static_cast<std::ptrdiff_t>(pos), t, t + std::strlen(t));
        break;
      }
      case 4: {  // replace a run of digits (or anything) with interesting text
        size_t end = pos;
        while (end < b->size() && end - pos < 24 && (*b)[end] >= '0' && (*b)[end] <= '9') ++end;
        const char* t = kInterestingText[rng.Below(sizeof kInterestingText / sizeof(char*))];
        b->erase(b->begin() + static_cast<std::ptrdiff_t>(pos),
                 b->begin() + static_cast<std::ptrdiff_t>(end));
        b->insert(b->begin() + static_cast<std::ptrdiff_t>(pos), t, t + std::strlen(t));
        break;
      }
      case 5: {  // delete a range
        const size_t n = std::min(b->size() - std::min(pos, b->size()), 1 + rng.Below(16));
        b->erase(b->begin() + static_cast<std::ptrdiff_t>(pos),
                 b->begin() + static_cast<std::ptrdiff_t>(pos + n));
        break;
      }
      case 6: {  // duplicate a range
        if (b->empty()) break;
        const size_t from = rng.Below(b->size());
        const size_t n = std::min(b->size() - from, 1 + rng.Below(64));
        const Bytes chunk(b->begin() + static_cast<std::ptrdiff_t>(from),
                          b->begin() + static_cast<std::ptrdiff_t>(from + n));
        b->insert(b->begin() + static_cast<std::ptrdiff_t>(pos), chunk.begin(), chunk.end());
        break;
      }
      default: {  // splice: this input's head, another seed's tail
        const Bytes& other = seeds[rng.Below(seeds.size())];
        const size_t cut = rng.Below(other.size() + 1);
        b->resize(pos);
        b->insert(b->end(), other.begin() + static_cast<std::ptrdiff_t>(cut), other.end());
        break;
      }
    }
    if (b->size() > max_len) b->resize(max_len);
  }
}

// One input running longer than this is a hang: the alarm aborts the run,
// which leaves the input in the crash file.
unsigned g_input_timeout_s = 60;
extern "C" void OnInputTimeout(int) {
  const char msg[] = "fuzz driver: one input ran past the per-input timeout (a hang?)\n";
  ssize_t ignored = ::write(2, msg, sizeof msg - 1);
  (void)ignored;
  std::abort();
}

int Usage(const char* why) {
  std::fprintf(stderr,
               "fuzz driver: %s\nusage: FUZZ [--seconds S] [--runs N] [--seed R] [--max-len B] "
               "[--crash-file F] SEED...\n       FUZZ --replay FILE\n",
               why);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (LLVMFuzzerInitialize != nullptr) LLVMFuzzerInitialize(&argc, &argv);
  const std::string name = std::filesystem::path(argv[0]).filename().string();
  double seconds = 30;
  long long runs = -1;
  uint64_t seed = 1;
  size_t max_len = 1 << 16;
  std::string crash_file = name + "-crash.bin";
  std::vector<std::filesystem::path> inputs;
  std::string replay;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    const char* v = nullptr;
    if (a == "--seconds" && (v = value())) {
      seconds = std::atof(v);
    } else if (a == "--runs" && (v = value())) {
      runs = std::atoll(v);
    } else if (a == "--seed" && (v = value())) {
      seed = std::strtoull(v, nullptr, 10);
    } else if (a == "--max-len" && (v = value())) {
      max_len = std::strtoull(v, nullptr, 10);
    } else if (a == "--crash-file" && (v = value())) {
      crash_file = v;
    } else if (a == "--timeout" && (v = value())) {
      g_input_timeout_s = static_cast<unsigned>(std::atoi(v));
    } else if (a == "--replay" && (v = value())) {
      replay = v;
    } else if (!a.empty() && a[0] != '-') {
      inputs.emplace_back(a);
    } else {
      return Usage(("bad argument " + a).c_str());
    }
  }
  ::signal(SIGALRM, OnInputTimeout);
  if (!replay.empty()) {
    const Bytes b = ReadBytes(replay);
    LLVMFuzzerTestOneInput(b.data(), b.size());
    std::printf("%s: replayed %s (%zu bytes): no crash\n", name.c_str(), replay.c_str(), b.size());
    return 0;
  }

  std::vector<Bytes> seeds;
  for (const auto& in : inputs) {
    std::vector<std::filesystem::path> files;
    if (std::filesystem::is_directory(in)) {
      for (const auto& e : std::filesystem::directory_iterator(in)) {
        if (e.is_regular_file()) files.push_back(e.path());
      }
      std::sort(files.begin(), files.end());  // a fixed order: runs reproduce
    } else if (std::filesystem::is_regular_file(in)) {
      files.push_back(in);
    } else {
      return Usage(("no such seed file or directory " + in.string()).c_str());
    }
    for (const auto& f : files) seeds.push_back(ReadBytes(f));
  }
  if (seeds.empty()) return Usage("no seeds");

  auto run = [&](const Bytes& b) {
    if (!WriteBytes(crash_file, b)) {
      std::fprintf(stderr, "fuzz driver: cannot write %s\n", crash_file.c_str());
      std::exit(2);
    }
    ::alarm(g_input_timeout_s);
    LLVMFuzzerTestOneInput(b.data(), b.size());
    ::alarm(0);
  };
  for (const Bytes& s : seeds) run(s);

  Rng rng{seed};
  std::vector<Bytes> pool = seeds;  // mutants join the pool (bounded)
  const auto start = std::chrono::steady_clock::now();
  long long n = 0;
  for (; runs < 0 || n < runs; ++n) {
    if (runs < 0 && (n & 15) == 0) {
      const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
      if (took.count() >= seconds) break;
    }
    Bytes b = pool[rng.Below(pool.size())];
    Mutate(rng, seeds, max_len, &b);
    run(b);
    if (pool.size() < 4096 && rng.Below(4) == 0) pool.push_back(std::move(b));
  }
  std::remove(crash_file.c_str());
  const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
  std::printf("%s: %zu seeds and %lld mutants in %.1f s, no crash\n", name.c_str(), seeds.size(), n,
              took.count());
  return 0;
}
