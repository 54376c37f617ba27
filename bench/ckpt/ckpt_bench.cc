// bench_ckpt: checkpoint save / load GB/s for a model state of at least 1 GB,
// beside the raw write speed of the same directory measured in the same run
// (sequential pwrite of the same number of bytes, then fsync: what `dd
// conv=fsync` measures). Save includes the read-back checksum verification,
// the fsyncs and the renames of the crash-safe protocol.
//
//   launch/mpiexec-local.sh NP build/bench/ckpt/bench_ckpt [--dir D] [--gb 1.0] [--layers 24]
//
// Loads read from the page cache when the file was just written; the table
// says so. Target: save >= 50% of the raw write speed.
#include <fcntl.h>
#include <mpi.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "l2l/ckpt/checkpoint.h"
#include "l2l/comm/mpi_comm.h"
#include "l2l/eps/partition.h"

namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Every rank writes its share of `bytes` to its own file, then fsyncs; the
// slowest rank's time counts (the save is collective too).
double RawWriteGBps(const std::string& dir, int64_t bytes, int rank, int world) {
  const std::string path = dir + "/raw-write-" + std::to_string(rank) + ".bin";
  const int64_t mine = bytes / world;
  std::vector<char> block(16 << 20, 'x');
  MPI_Barrier(MPI_COMM_WORLD);
  const double t0 = Now();
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) l2l::MpiRuntime::AbortJob("bench_ckpt: cannot write " + path, 2);
  for (int64_t off = 0; off < mine; off += static_cast<int64_t>(block.size())) {
    const size_t n = static_cast<size_t>(std::min<int64_t>(block.size(), mine - off));
    if (::pwrite(fd, block.data(), n, off) != static_cast<ssize_t>(n)) {
      l2l::MpiRuntime::AbortJob("bench_ckpt: write failed on " + path, 2);
    }
  }
  ::fsync(fd);
  ::close(fd);
  double t = Now() - t0;
  MPI_Allreduce(MPI_IN_PLACE, &t, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  std::filesystem::remove(path);
  return bytes / t / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  l2l::MpiRuntime mpi(&argc, &argv);
  std::string dir = "bench_ckpt_dir";
  double gb = 1.0;
  int layers = 24;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--dir"))
      dir = argv[i + 1];
    else if (!std::strcmp(argv[i], "--gb"))
      gb = std::atof(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--layers"))
      layers = std::atoi(argv[i + 1]);
  }
  const int rank = mpi.world_rank(), world = mpi.world_size();
  // State = master + m + v, 12 bytes per parameter.
  const int64_t params = static_cast<int64_t>(gb * 1e9 / 12.0);
  const int64_t per_layer = params / layers;
  std::vector<l2l::ckpt::LayerInfo> infos(layers);
  std::vector<l2l::ckpt::LayerSlice> slices(layers);
  std::vector<std::vector<float>> store(3 * layers);
  for (int l = 0; l < layers; ++l) {
    infos[l].size_elems = per_layer;
    infos[l].tensors.push_back({"weight", 0, {per_layer}});
    const int64_t padded = l2l::eps::PaddedSizeElems(per_layer, world, 64);
    const l2l::eps::Shard s =
        l2l::eps::ValidPart(l2l::eps::ShardOf(padded, world, rank), per_layer);
    for (int k = 0; k < 3; ++k) {
      store[3 * l + k].resize(s.size_elems);
      for (int64_t i = 0; i < s.size_elems; ++i) {
        store[3 * l + k][i] = static_cast<float>((s.offset_elems + i) % 1000) * 1e-3f + k;
      }
    }
    slices[l] = {s.offset_elems,          s.size_elems,
                 store[3 * l].data(),     store[3 * l + 1].data(),
                 store[3 * l + 2].data(), true};
  }
  if (rank == 0) std::filesystem::create_directories(dir);
  MPI_Barrier(MPI_COMM_WORLD);
  const int64_t bytes = 12 * per_layer * layers;
  const double raw = RawWriteGBps(dir, bytes, rank, world);

  l2l::ckpt::Meta meta;
  meta.step = 1;
  meta.world_size = world;
  meta.config_yaml = "bench: true\n";
  meta.sampler_state = "bench";
  l2l::ckpt::IoStats save, load;
  l2l::Status s = l2l::ckpt::Save(MPI_COMM_WORLD, dir, meta, infos, slices, 1, &save);
  if (!s.ok()) l2l::MpiRuntime::AbortJob(s.ToString(), 1);
  s = l2l::ckpt::Load(MPI_COMM_WORLD, l2l::ckpt::CheckpointPath(dir, 1), infos, slices, &load);
  if (!s.ok()) l2l::MpiRuntime::AbortJob(s.ToString(), 1);
  if (rank == 0) {
    std::printf("bench_ckpt: %d ranks, %d layers, %.2f GB of state (master + AdamW m, v), dir %s\n",
                world, layers, bytes / 1e9, dir.c_str());
    std::printf("| what | seconds | GB/s | vs raw write |\n|---|---|---|---|\n");
    std::printf("| raw write + fsync (same bytes, same dir) | %.2f | %.2f | 1.00 |\n",
                bytes / raw / 1e9, raw);
    std::printf("| checkpoint save (write, verify, fsync, rename) | %.2f | %.2f | %.2f |\n",
                save.seconds, save.gb_per_s(), save.gb_per_s() / raw);
    std::printf("| checkpoint load (page cache warm) | %.2f | %.2f | - |\n", load.seconds,
                load.gb_per_s());
    std::printf("target: save >= 0.50 x raw write: %s\n",
                save.gb_per_s() >= 0.5 * raw ? "PASS" : "FAIL");
  }
  MPI_Barrier(MPI_COMM_WORLD);
  if (rank == 0) std::filesystem::remove_all(dir);
  return 0;
}
