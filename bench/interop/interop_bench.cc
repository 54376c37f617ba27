// bench_interop: Hugging Face export and import of a model of at least 1B
// parameters (default: the Llama-3.2-1B preset's shape), against the raw
// sequential read and write speed of the same directory measured in the same
// run, with the peak resident memory of each phase against the largest tensor.
//
//   launch/mpiexec-local.sh NP build/bench/interop/bench_interop [--dir D]
//       [--config configs/llama-3.2-1b.yaml] [--set key=value]... [--shard-size 1GB]
//
// Phases, in a new directory D/bench_interop-<pid> (removed at the end;
// nothing else in D is read or touched):
//   1. an l2l checkpoint of the model with random weights (collective, untimed);
//   2. raw: 4 GB written with pwrite + fsync, then read back after evicting
//      it from the page cache (posix_fadvise DONTNEED); once by rank 0 alone
//      (the peer of export, a single process) and, at NP > 1, once by all
//      ranks together, each its share (the peer of import);
//   3. export --format hf, bf16, shards of --shard-size (rank 0, as the tool);
//   4. import of that directory on all ranks (as `mpirun l2l-ckpt import`);
//   5. check (untimed): every imported master equals the bf16 rounding of the
//      original checkpoint's, element for element.
// Before 3 and 4 the inputs are evicted from the page cache, so each reads
// from disk. "x raw" = the time its peer raw speeds would need for the
// phase's bytes (its input read once, its output written once) / the phase's
// time: 1.0 means as fast as the disk, the target is >= 0.5. Both
// tools also verify what they wrote by reading it back (export: each piece
// of the shards as it is written; import: the whole checkpoint, with its
// checksums), mostly from the page cache; those bytes are not counted, so
// "x raw" understates the work done. Threads: OMP_NUM_THREADS as launched
// (launch/mpiexec-local.sh defaults it to 1 a rank), printed with the table. Peak memory is the
// process's VmHWM (reset per phase through /proc/self/clear_refs), max over ranks: libraries and
// MPI included.
#include <fcntl.h>
#include <mpi.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "l2l/ckpt/checkpoint.h"
#include "l2l/ckpt/model_layers.h"
#include "l2l/ckpt/reader.h"
#include "l2l/comm/mpi_comm.h"
#include "l2l/config/config.h"
#include "l2l/core/byte_size.h"
#include "l2l/core/dtype.h"
#include "l2l/interop/hf_export.h"
#include "l2l/interop/hf_import.h"
#include "l2l/interop/hf_names.h"
#include "l2l/model/config_dims.h"
#include "l2l/model/model.h"

namespace {

using l2l::MpiRuntime;

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

[[noreturn]] void Die(const std::string& what) {
  MpiRuntime::AbortJob("bench_interop: " + what, 2);
}

void Check(const l2l::Status& s, const std::string& what) {
  if (!s.ok()) Die(what + ": " + s.message());
}

// /proc/self/status field in bytes ("VmHWM", "VmRSS").
int64_t ProcStatusBytes(const char* field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  const std::string key = std::string(field) + ":";
  while (std::getline(in, line)) {
    if (line.rfind(key, 0) == 0) return std::atoll(line.c_str() + key.size()) * 1024;
  }
  return -1;
}

// Resets VmHWM to the current RSS (Linux >= 4.0); without it the peak of a
// phase would be the peak of the whole run.
void ResetPeakRss() {
  std::ofstream f("/proc/self/clear_refs");
  f << "5";
  f.flush();
  if (!f) Die("cannot reset the peak RSS through /proc/self/clear_refs");
}

int64_t MaxOverRanks(int64_t v) {
  MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD);
  return v;
}

// Drops the (clean, fsynced) pages of every file under `path` from the page
// cache, so the next read comes from the disk.
void Evict(const std::string& path) {
  std::vector<std::string> files;
  if (std::filesystem::is_directory(path)) {
    for (const auto& e : std::filesystem::recursive_directory_iterator(path)) {
      if (e.is_regular_file()) files.push_back(e.path().string());
    }
  } else {
    files.push_back(path);
  }
  for (const std::string& f : files) {
    const int fd = ::open(f.c_str(), O_RDONLY);
    if (fd < 0) continue;
    ::fdatasync(fd);
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
}

struct Raw {
  double write_gbps = 0, read_gbps = 0;
};

// Every rank of `comm` writes its share of `bytes` to its own file (pwrite,
// fsync), evicts it, reads it back; the slowest rank's time counts.
Raw RawSpeeds(MPI_Comm comm, const std::string& dir, int64_t bytes) {
  int rank = 0, world = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &world);
  const std::string path = dir + "/raw-" + std::to_string(rank) + ".bin";
  const int64_t mine = bytes / world;
  std::vector<char> block(16 << 20);
  for (size_t i = 0; i < block.size(); ++i) block[i] = static_cast<char>(i * 2654435761u >> 13);
  Raw r;
  MPI_Barrier(comm);
  double t0 = Now();
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) Die("cannot write " + path);
  for (int64_t off = 0; off < mine; off += static_cast<int64_t>(block.size())) {
    const size_t n = static_cast<size_t>(std::min<int64_t>(block.size(), mine - off));
    if (::pwrite(fd, block.data(), n, off) != static_cast<ssize_t>(n)) Die("write failed: " + path);
  }
  ::fsync(fd);
  ::close(fd);
  double t = Now() - t0;
  MPI_Allreduce(MPI_IN_PLACE, &t, 1, MPI_DOUBLE, MPI_MAX, comm);
  r.write_gbps = bytes / t / 1e9;
  Evict(path);
  MPI_Barrier(comm);
  t0 = Now();
  fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) Die("cannot read " + path);
  for (int64_t off = 0; off < mine; off += static_cast<int64_t>(block.size())) {
    const size_t n = static_cast<size_t>(std::min<int64_t>(block.size(), mine - off));
    if (::pread(fd, block.data(), n, off) != static_cast<ssize_t>(n)) Die("read failed: " + path);
  }
  ::close(fd);
  t = Now() - t0;
  MPI_Allreduce(MPI_IN_PLACE, &t, 1, MPI_DOUBLE, MPI_MAX, comm);
  r.read_gbps = bytes / t / 1e9;
  std::filesystem::remove(path);
  return r;
}

// A deterministic weight in about [-0.05, 0.05] for (layer, element).
float Weight(int layer, int64_t i) {
  uint64_t z = (static_cast<uint64_t>(layer) << 40) ^ static_cast<uint64_t>(i);
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return (static_cast<float>(z >> 40) / static_cast<float>(1 << 24) - 0.5f) * 0.1f;
}

std::string Gb(int64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GB", bytes / 1e9);
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  MpiRuntime mpi(&argc, &argv);
  std::string parent = ".", config_path = "configs/llama-3.2-1b.yaml";
  std::vector<std::string> overrides;
  int64_t shard_bytes = 1'000'000'000;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--dir") {
      parent = argv[i + 1];
    } else if (a == "--config") {
      config_path = argv[i + 1];
    } else if (a == "--set") {
      overrides.push_back(argv[i + 1]);
    } else if (a == "--shard-size") {
      auto b = l2l::ParseByteSize(argv[i + 1]);
      if (!b.ok() || *b < 1) Die("--shard-size: expected a byte size");
      shard_bytes = *b;
    } else {
      Die("unknown argument " + a);
    }
  }
  const int rank = mpi.world_rank(), world = mpi.world_size();
  auto cfg = l2l::config::LoadConfig(config_path, overrides);
  Check(cfg.status(), config_path);
  const l2l::model::ModelDims dims = l2l::model::DimsFromConfig(cfg->model);
  const std::vector<l2l::ckpt::LayerInfo> layers = l2l::ckpt::LayerInfosOf(dims);
  int64_t params = 0, largest = 0;
  for (const l2l::interop::HfTensor& t : l2l::interop::HfTensorsOf(dims)) {
    const l2l::model::ParamLayout layout = l2l::model::LayoutForLayer(dims, t.layer);
    const int64_t n = layout.Find(t.l2l)->shape.num_elements();
    params += n;
    largest = std::max(largest, n);
  }
  // The bench's own directory, new: it removes only what it made.
  std::string dir = parent + "/bench_interop-" + std::to_string(::getpid());
  {
    int n = static_cast<int>(dir.size());
    MPI_Bcast(&n, 1, MPI_INT, 0, MPI_COMM_WORLD);
    dir.resize(n);
    MPI_Bcast(dir.data(), n, MPI_CHAR, 0, MPI_COMM_WORLD);
  }
  const std::string src = dir + "/original", hf = dir + "/hf", imported = dir + "/imported";
  if (rank == 0) {
    std::error_code ec;
    std::filesystem::create_directories(parent, ec);
    if (::mkdir(dir.c_str(), 0777) != 0)
      Die(dir + ": cannot create (" + std::strerror(errno) + ")");
    std::printf("model: %s, %lld parameters, %zu layers; largest tensor %lld elements (%s fp32)\n",
                config_path.c_str(), static_cast<long long>(params), layers.size(),
                static_cast<long long>(largest), Gb(largest * 4).c_str());
  }
  MPI_Barrier(MPI_COMM_WORLD);

  // 1. The original checkpoint: random masters, zero moments.
  std::vector<l2l::ckpt::LayerSlice> tiles;
  for (const l2l::ckpt::LayerInfo& l : layers) {
    const int64_t per = (l.size_elems + world - 1) / world;
    const int64_t begin = std::min(l.size_elems, per * rank);
    tiles.push_back(
        {begin, std::min(l.size_elems, begin + per) - begin, nullptr, nullptr, nullptr, true});
  }
  l2l::ckpt::Meta meta;
  meta.seed = cfg->train.seed;
  meta.config_yaml = l2l::config::ToYaml(*cfg);
  l2l::ckpt::IoStats made;
  Check(l2l::ckpt::SaveStreamed(
            MPI_COMM_WORLD, src, meta, layers, tiles,
            [](int layer, int dataset, int64_t offset, int64_t n, float* out) {
              for (int64_t i = 0; i < n; ++i) out[i] = dataset == 0 ? Weight(layer, offset + i) : 0;
              return l2l::OkStatus();
            },
            1, &made),
        "writing the original checkpoint");
  if (rank == 0) {
    std::printf("original checkpoint: %s in %.1f s\n", Gb(made.bytes).c_str(), made.seconds);
  }

  // 2. Raw disk speeds: one process (export's peer), all ranks (import's).
  constexpr int64_t kRawBytes = 4'000'000'000;
  Raw raw_one;
  if (rank == 0) raw_one = RawSpeeds(MPI_COMM_SELF, dir, kRawBytes);
  MPI_Bcast(&raw_one, 2, MPI_DOUBLE, 0, MPI_COMM_WORLD);
  const Raw raw_all = world == 1 ? raw_one : RawSpeeds(MPI_COMM_WORLD, dir, kRawBytes);

  // 3. Export (rank 0; the tool is single-process).
  const std::string src_file = l2l::ckpt::CheckpointPath(src, 0);
  double export_s = 0;
  int64_t export_hwm = 0, export_base = 0, export_read = 0, export_written = 0;
  if (rank == 0) {
    Evict(src);
    l2l::interop::HfExportOptions o;
    o.dtype = l2l::interop::SafetensorsDType::kBF16;
    o.max_shard_bytes = shard_bytes;
    export_base = ProcStatusBytes("VmRSS");
    ResetPeakRss();
    const double t0 = Now();
    auto r = l2l::interop::ExportHf(src_file, hf, o);
    export_s = Now() - t0;
    export_hwm = ProcStatusBytes("VmHWM");
    Check(r.status(), "export");
    for (const l2l::ckpt::LayerInfo& l : layers) export_read += l.size_elems * 4;  // masters
    export_written = r->data_bytes;
    std::printf("export: %d shard(s), %s written\n", r->shards, Gb(r->data_bytes).c_str());
    Evict(hf);
  }
  MPI_Barrier(MPI_COMM_WORLD);

  // 4. Import on every rank.
  const int64_t import_base = MaxOverRanks(ProcStatusBytes("VmRSS"));
  ResetPeakRss();
  MPI_Barrier(MPI_COMM_WORLD);
  const double t0 = Now();
  auto imp = l2l::interop::ImportHf(MPI_COMM_WORLD, hf, imported, {});
  const double import_s = Now() - t0;
  const int64_t import_hwm = MaxOverRanks(ProcStatusBytes("VmHWM"));
  Check(imp.status(), "import");

  // 5. Every imported master == bf16(original master), inside the tensors.
  if (rank == 0) {
    int64_t checked = 0;
    for (int l = 0; l < static_cast<int>(layers.size()); ++l) {
      auto a = l2l::ckpt::ReadLayer(src_file, l, l2l::ckpt::LayerParts::kMasterOnly);
      auto b = l2l::ckpt::ReadLayer(imp->checkpoint, l, l2l::ckpt::LayerParts::kMasterOnly);
      Check(a.status(), "reading the original");
      Check(b.status(), "reading the import");
      const l2l::model::ParamLayout layout = l2l::model::LayoutForLayer(dims, l);
      for (const l2l::model::TensorSpec& t : layout.tensors()) {
        for (int64_t i = t.offset_elems; i < t.offset_elems + t.shape.num_elements(); ++i) {
          const float want = l2l::BF16ToF32(l2l::F32ToBF16(a->master[i]));
          if (std::memcmp(&want, &b->master[i], 4) != 0) {
            Die("layer " + std::to_string(l) + " element " + std::to_string(i) +
                " differs after export and import");
          }
          ++checked;
        }
      }
    }
    std::printf("check: %lld imported parameters == bf16(original), bitwise\n",
                static_cast<long long>(checked));
    const double export_raw =
        export_read / (raw_one.read_gbps * 1e9) + export_written / (raw_one.write_gbps * 1e9);
    const double import_raw = imp->bytes_read / (raw_all.read_gbps * 1e9) +
                              imp->bytes_written / (raw_all.write_gbps * 1e9);
    const char* threads_env = std::getenv("OMP_NUM_THREADS");
    const char* threads = threads_env != nullptr ? threads_env : "unset (all cores)";
    std::printf(
        "\n| ranks | raw W/R GB/s, 1 process | raw W/R GB/s, all ranks | export s | export x "
        "raw | export peak RSS | import s | import x raw | import peak RSS / rank | largest "
        "tensor |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n");
    std::printf(
        "| %d | %.2f / %.2f | %.2f / %.2f | %.1f | %.2f | %s | %.1f | %.2f | %s | %s fp32 |\n",
        world, raw_one.write_gbps, raw_one.read_gbps, raw_all.write_gbps, raw_all.read_gbps,
        export_s, export_raw / export_s, Gb(export_hwm).c_str(), import_s, import_raw / import_s,
        Gb(import_hwm).c_str(), Gb(largest * 4).c_str());
    std::printf(
        "\nexport (1 process): read %s of masters, wrote %s (bf16); import (%d rank(s)): read "
        "%s, wrote %s (master + AdamW moments); both then read back what they wrote (not "
        "counted); OMP_NUM_THREADS=%s\npeak RSS: the process's VmHWM during the phase (reset "
        "before it; RSS before it: export %s, import %s per rank)\n",
        Gb(export_read).c_str(), Gb(export_written).c_str(), world, Gb(imp->bytes_read).c_str(),
        Gb(imp->bytes_written).c_str(), threads, Gb(export_base).c_str(), Gb(import_base).c_str());
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  return 0;
}
