// ckpt_make_fixture: test-only. Writes (or checks) a checkpoint of a small
// BERT with the real model layouts (model::LayoutForLayer), so the CLI tests
// see realistic tensor names, and the crash-safety test has a real writer to
// interrupt.
//
//   ckpt_make_fixture --dir DIR --step N [--keep-last K] [--seed S]
//       save at the job's world size with the EPS shard partition
//   ckpt_make_fixture --check FILE|DIR --step N [--seed S]
//       load at the job's world size and compare bitwise with what
//       `--step N --seed S` writes; prints "fixture ok: FILE"
//   ckpt_make_fixture --drop-dataset FILE --name /layers/00001/adam_m
//       damage FILE (any checkpoint) by unlinking one dataset, for the tests
//       that a missing dataset is refused (one rank)
//   ckpt_make_fixture --set-step FILE --step N
//       damage FILE by overwriting its /meta/step attribute with N (which
//       may be negative), for the tests of an impossible step (one rank)
//
// Every value is a pure function of (seed, step, layer, dataset, element), so
// any world size writes and expects the same checkpoint.
#include <hdf5.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "l2l/ckpt/checkpoint.h"
#include "l2l/ckpt/model_layers.h"
#include "l2l/ckpt/reader.h"
#include "l2l/comm/mpi_comm.h"
#include "l2l/config/config.h"
#include "l2l/core/rng.h"
#include "l2l/eps/partition.h"
#include "l2l/model/model.h"

namespace l2l::ckpt {
namespace {

constexpr const char* kFixtureYaml =
    "model: {kind: bert, layers: 2, hidden: 24, heads: 4, ffn: 40, vocab: 37, seq_len: 12}\n"
    "data: {path: data/fixture.tok}\n"
    "train: {steps: 100, seed: 7, global_batch: 8, micro_batch: 2}\n";

model::ModelDims Dims() {
  model::ModelDims d;
  d.arch = model::Arch::kBert;  // as kFixtureYaml: BERT's defaults (tied decoder)
  d.tie_embeddings = true;
  d.num_blocks = 2;
  d.hidden = 24;
  d.heads = 4;
  d.ffn = 40;
  d.vocab = 37;
  d.seq_len = 12;
  return d;
}

std::vector<LayerInfo> Layers() { return LayerInfosOf(Dims()); }

// Element i of dataset `which` (0 master, 1 adam_m, 2 adam_v) of layer l.
float Value(uint64_t seed, int64_t step, int layer, int which, int64_t i) {
  const float u =
      UniformFloat(HashKeys(seed, static_cast<uint64_t>(step), static_cast<uint64_t>(layer),
                            static_cast<uint64_t>(which), static_cast<uint64_t>(i)));
  return which == 2 ? u * 1e-3f : (u - 0.5f) * 0.2f;  // adam_v is non-negative
}

struct Shards {
  std::vector<std::vector<float>> data[3];
  std::vector<LayerSlice> slices;
};

Shards MakeShards(const std::vector<LayerInfo>& layers, int world, int rank, uint64_t seed,
                  int64_t step) {
  Shards s;
  for (int which = 0; which < 3; ++which) s.data[which].resize(layers.size());
  for (size_t l = 0; l < layers.size(); ++l) {
    const int64_t padded = eps::PaddedSizeElems(layers[l].size_elems, world, 64);
    const eps::Shard own = eps::ValidPart(eps::ShardOf(padded, world, rank), layers[l].size_elems);
    for (int which = 0; which < 3; ++which) {
      auto& v = s.data[which][l];
      v.resize(static_cast<size_t>(own.size_elems));
      for (int64_t i = 0; i < own.size_elems; ++i) {
        v[i] = Value(seed, step, static_cast<int>(l), which, own.offset_elems + i);
      }
    }
    s.slices.push_back({.offset_elems = own.offset_elems,
                        .size_elems = own.size_elems,
                        .master = s.data[0][l].data(),
                        .adam_m = s.data[1][l].data(),
                        .adam_v = s.data[2][l].data(),
                        .checksummed = true});
  }
  return s;
}

struct Flags {
  std::string dir, check, drop, name, set_step;
  int64_t step = -1;
  int keep_last = 2;
  uint64_t seed = 7;
};

StatusOr<Flags> Parse(int argc, char** argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) return InvalidArgument("flag " + a + " needs a value");
    const std::string v = argv[++i];
    if (a == "--dir")
      f.dir = v;
    else if (a == "--check")
      f.check = v;
    else if (a == "--step")
      f.step = std::stoll(v);
    else if (a == "--keep-last")
      f.keep_last = std::stoi(v);
    else if (a == "--seed")
      f.seed = std::stoull(v);
    else if (a == "--drop-dataset")
      f.drop = v;
    else if (a == "--name")
      f.name = v;
    else if (a == "--set-step")
      f.set_step = v;
    else
      return InvalidArgument("unknown flag " + a);
  }
  if (!f.drop.empty()) {
    if (f.name.empty()) return InvalidArgument("--drop-dataset needs --name");
    return f;
  }
  if (!f.set_step.empty()) return f;
  if (f.step < 0 || f.dir.empty() == f.check.empty()) {  // --set-step returned above
    return InvalidArgument(
        "usage: ckpt_make_fixture (--dir DIR | --check FILE|DIR) --step N "
        "[--keep-last K] [--seed S] | --drop-dataset FILE --name DATASET | "
        "--set-step FILE --step N");
  }
  return f;
}

Status Run(int argc, char** argv, MpiComm& comm) {
  auto flags = Parse(argc, argv);
  RETURN_IF_ERROR(comm.Agree(flags.status()));
  if (!flags->drop.empty()) {
    // Serial HDF5 on one rank: unlink the dataset (its bytes stay in the file).
    const hid_t f = H5Fopen(flags->drop.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    if (f < 0) return NotFound(flags->drop + ": cannot open for writing");
    const herr_t rc = H5Ldelete(f, flags->name.c_str(), H5P_DEFAULT);
    H5Fclose(f);
    if (rc < 0) return NotFound(flags->drop + ": no dataset " + flags->name);
    std::printf("dropped %s from %s\n", flags->name.c_str(), flags->drop.c_str());
    return OkStatus();
  }
  if (!flags->set_step.empty()) {
    const hid_t f = H5Fopen(flags->set_step.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    if (f < 0) return NotFound(flags->set_step + ": cannot open for writing");
    const hid_t g = H5Gopen2(f, "/meta", H5P_DEFAULT);
    const hid_t a = g < 0 ? -1 : H5Aopen(g, "step", H5P_DEFAULT);
    const int64_t step = flags->step;
    const herr_t rc = a < 0 ? -1 : H5Awrite(a, H5T_NATIVE_INT64, &step);
    if (a >= 0) H5Aclose(a);
    if (g >= 0) H5Gclose(g);
    H5Fclose(f);
    if (rc < 0) return NotFound(flags->set_step + ": cannot write /meta/step");
    std::printf("set /meta/step of %s to %lld\n", flags->set_step.c_str(),
                static_cast<long long>(step));
    return OkStatus();
  }
  const std::vector<LayerInfo> layers = Layers();
  Shards want = MakeShards(layers, comm.size(), comm.rank(), flags->seed, flags->step);
  if (!flags->check.empty()) {
    auto path = ResolveCheckpoint(flags->check);
    RETURN_IF_ERROR(comm.Agree(path.status()));
    ASSIGN_OR_RETURN(Meta meta, ReadMeta(comm.handle(), *path));
    if (meta.step != flags->step) {
      return FailedPrecondition(*path + ": step " + std::to_string(meta.step) + ", expected " +
                                std::to_string(flags->step));
    }
    Shards got = MakeShards(layers, comm.size(), comm.rank(), flags->seed, flags->step);
    for (int which = 0; which < 3; ++which) {
      for (auto& v : got.data[which]) std::fill(v.begin(), v.end(), -1.0f);
    }
    RETURN_IF_ERROR(Load(comm.handle(), *path, layers, got.slices, nullptr));
    bool same = true;
    for (int which = 0; which < 3; ++which) {
      for (size_t l = 0; l < layers.size(); ++l) {
        const auto& a = want.data[which][l];
        const auto& b = got.data[which][l];
        same = same && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
      }
    }
    RETURN_IF_ERROR(comm.Agree(same ? OkStatus()
                                    : DataLoss(*path + ": loaded values differ from the fixture")));
    if (comm.rank() == 0) std::printf("fixture ok: %s\n", path->c_str());
    return OkStatus();
  }
  ASSIGN_OR_RETURN(config::Config cfg, config::ParseConfig(kFixtureYaml, "fixture", {}));
  Meta meta;
  meta.step = flags->step;
  meta.tokens_seen = flags->step * cfg.train.global_batch * cfg.model.seq_len;
  meta.world_size = comm.size();
  meta.seed = flags->seed;
  meta.config_yaml = config::ToYaml(cfg);
  meta.sampler_state = "fixture sampler at step " + std::to_string(flags->step);
  IoStats stats;
  RETURN_IF_ERROR(
      Save(comm.handle(), flags->dir, meta, layers, want.slices, flags->keep_last, &stats));
  if (comm.rank() == 0) {
    std::printf("saved %s: %lld bytes in %.3f s\n", CheckpointPath(flags->dir, meta.step).c_str(),
                static_cast<long long>(stats.bytes), stats.seconds);
  }
  return OkStatus();
}

}  // namespace
}  // namespace l2l::ckpt

int main(int argc, char** argv) {
  l2l::MpiRuntime mpi(&argc, &argv);
  int code = 0;
  {
    l2l::MpiComm comm;
    const l2l::Status s = l2l::ckpt::Run(argc, argv, comm);
    if (!s.ok()) {
      if (comm.rank() == 0) std::fprintf(stderr, "ckpt_make_fixture: %s\n", s.message().c_str());
      code = l2l::ExitCodeFor(s);
    }
  }
  return code;
}
