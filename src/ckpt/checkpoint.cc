// Collective HDF5 checkpoints: save with the temp-verify-rename-latest
// protocol, load with checksum verification, native resharding (each rank
// reads whatever slice it owns now). See include/l2l/ckpt/checkpoint.h and
// docs/checkpoint-format.md.
#include "l2l/ckpt/checkpoint.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <sstream>

#include "h5.h"
#include "l2l/ckpt/reader.h"
#include "l2l/comm/mpi_comm.h"
#include "l2l/core/fs.h"
#include "l2l/core/log.h"
#include "l2l/core/rng.h"

namespace l2l::ckpt {

using internal::H5Id;
using internal::ReadTarget;

namespace internal {

// "" when the index is consistent with a flat buffer of `size_elems`,
// otherwise what is wrong.
std::string IndexProblem(const LayerInfo& layer) {
  std::vector<std::pair<int64_t, int64_t>> ranges;
  for (size_t i = 0; i < layer.tensors.size(); ++i) {
    const TensorEntry& t = layer.tensors[i];
    if (t.name.empty()) return "tensor " + std::to_string(i) + " has an empty name";
    for (size_t j = 0; j < i; ++j) {
      if (layer.tensors[j].name == t.name) return "tensor '" + t.name + "' appears twice";
    }
    if (t.shape.size() > static_cast<size_t>(kMaxTensorRank)) {
      return "tensor '" + t.name + "' has rank " + std::to_string(t.shape.size()) + " (at most " +
             std::to_string(kMaxTensorRank) + ")";
    }
    // Checked arithmetic: the values come from a file and may be anything
    // (eight dimensions of 2^20, an offset of INT64_MAX).
    int64_t elems = 1;
    for (int64_t d : t.shape) {
      if (d < 0) return "tensor '" + t.name + "' has a negative dimension";
      if (__builtin_mul_overflow(elems, d, &elems) || elems > layer.size_elems) {
        return "tensor '" + t.name + "' has more elements than the layer's " +
               std::to_string(layer.size_elems);
      }
    }
    if (t.offset_elems < 0 || t.offset_elems > layer.size_elems - elems) {
      return "tensor '" + t.name + "' at offset " + std::to_string(t.offset_elems) + " with " +
             std::to_string(elems) + " elements lies outside the layer's " +
             std::to_string(layer.size_elems) + " elements";
    }
    if (elems > 0) ranges.emplace_back(t.offset_elems, t.offset_elems + elems);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].first < ranges[i - 1].second) return "two tensors overlap";
  }
  return "";
}

StatusOr<Meta> ReadMetaFromFile(hid_t file, const std::string& path) {
  if (H5Lexists(file, kMetaGroup, H5P_DEFAULT) <= 0) {
    return DataLoss(path + ": missing group /meta (not an l2l checkpoint)");
  }
  H5Id g = OwnGroup(H5Gopen2(file, kMetaGroup, H5P_DEFAULT));
  if (!g.valid()) return DataLoss(path + ": group /meta cannot be opened");
  const std::string where = "/meta";
  ASSIGN_OR_RETURN(const std::string format, ReadStringAttr(g.get(), "format", path, where));
  if (format != kFormatName) {
    return DataLoss(path + ": format '" + format + "', expected '" + kFormatName + "'");
  }
  ASSIGN_OR_RETURN(const int64_t version, ReadInt64Attr(g.get(), "version", path, where));
  if (version < 1) return DataLoss(path + ": invalid format version " + std::to_string(version));
  if (version > kFormatVersion) {
    return FailedPrecondition(path + ": format version " + std::to_string(version) +
                              ", this build reads version " + std::to_string(kFormatVersion));
  }
  Meta m;
  ASSIGN_OR_RETURN(m.step, ReadInt64Attr(g.get(), "step", path, where));
  ASSIGN_OR_RETURN(m.tokens_seen, ReadInt64Attr(g.get(), "tokens_seen", path, where));
  ASSIGN_OR_RETURN(const int64_t world, ReadInt64Attr(g.get(), "world_size", path, where));
  m.world_size = static_cast<int>(world);
  ASSIGN_OR_RETURN(m.seed, ReadUint64Attr(g.get(), "seed", path, where));
  ASSIGN_OR_RETURN(m.config_yaml, ReadStringAttr(g.get(), "config", path, where));
  ASSIGN_OR_RETURN(m.sampler_state, ReadStringAttr(g.get(), "sampler_state", path, where));
  return m;
}

StatusOr<std::vector<LayerInfo>> ReadLayerInfosFromFile(hid_t file, const std::string& path) {
  if (H5Lexists(file, kLayersGroup, H5P_DEFAULT) <= 0) {
    return DataLoss(path + ": missing group /layers");
  }
  H5Id layers_group = OwnGroup(H5Gopen2(file, kLayersGroup, H5P_DEFAULT));
  H5G_info_t info;
  if (!layers_group.valid() || H5Gget_info(layers_group.get(), &info) < 0) {
    return DataLoss(path + ": group /layers cannot be read");
  }
  std::vector<LayerInfo> out(info.nlinks);
  for (int l = 0; l < static_cast<int>(info.nlinks); ++l) {
    int64_t sizes[kNumFlat];
    for (int d = 0; d < kNumFlat; ++d) {
      H5Id ds;
      ASSIGN_OR_RETURN(sizes[d], OpenFlatDataset(file, l, kFlatDatasets[d], path, &ds));
      if (sizes[d] != sizes[0]) {
        return DataLoss(path + ": dataset " + DatasetName(l, kFlatDatasets[d]) + " has " +
                        std::to_string(sizes[d]) + " elements, " +
                        DatasetName(l, kFlatDatasets[0]) + " has " + std::to_string(sizes[0]));
      }
    }
    out[l].size_elems = sizes[0];
    const std::string group_name = LayerGroupName(l);
    H5Id g = OwnGroup(H5Gopen2(file, group_name.c_str(), H5P_DEFAULT));
    if (!g.valid()) return DataLoss(path + ": group " + group_name + " cannot be opened");
    ASSIGN_OR_RETURN(out[l].tensors, ReadTensorIndex(g.get(), path, DatasetName(l, kIndexDataset)));
    const std::string problem = IndexProblem(out[l]);
    if (!problem.empty()) {
      return DataLoss(path + ": tensor index " + DatasetName(l, kIndexDataset) + ": " + problem);
    }
  }
  return out;
}

namespace {
struct ChecksumSink {
  uint64_t sum = 0;
  static void Add(void* ctx, int64_t offset_elems, const float* data, int64_t n) {
    static_cast<ChecksumSink*>(ctx)->sum += DatasetChecksum(data, offset_elems, n);
  }
};

}  // namespace

Status AllReduceSum(MpiComm& comm, uint64_t* v, int n) {
  return comm.AllReduce(v, v, static_cast<size_t>(n), CommDType::kU64, ReduceOp::kSum)
      .WithContext("summing the checkpoint checksums");
}

Status ReadLayerAndCheck(MpiComm& comm, hid_t file, hid_t dxpl, const std::string& path, int layer,
                         const LayerSlice& s, ReadTarget target, LayerParts parts,
                         int64_t* bytes_read) {
  const int num = parts == LayerParts::kMasterOnly ? 1 : kNumFlat;
  uint64_t stored[kNumFlat] = {}, computed[kNumFlat] = {};
  for (int d = 0; d < num; ++d) {
    const char* leaf = kFlatDatasets[d];
    H5Id ds;
    Status st = OpenFlatDataset(file, layer, leaf, path, &ds).status();
    if (st.ok()) {
      auto sum =
          ReadUint64Attr(ds.get(), kChecksumAttr, path, "dataset " + DatasetName(layer, leaf));
      st = sum.status();
      if (sum.ok()) stored[d] = *sum;
    }
    RETURN_IF_ERROR(comm.Agree(st));
    ChecksumSink sink;
    const bool checksummed = target == ReadTarget::kChecksumOnly || s.checksummed;
    float* out = target == ReadTarget::kSliceBuffers ? SlicePointer(s, d) : nullptr;
    st = ReadRange(comm.handle(), ds.get(), dxpl, s.offset_elems, s.size_elems, out, kPieceElems,
                   checksummed ? ChecksumSink::Add : nullptr, &sink);
    if (!st.ok())
      st = IoError(path + ": reading " + DatasetName(layer, leaf) + ": " + st.message());
    RETURN_IF_ERROR(comm.Agree(st));
    computed[d] = sink.sum;
    if (bytes_read != nullptr) *bytes_read += s.size_elems * static_cast<int64_t>(sizeof(float));
  }
  RETURN_IF_ERROR(AllReduceSum(comm, computed, num));
  for (int d = 0; d < num; ++d) {
    if (computed[d] != stored[d]) {
      return DataLoss(path + ": dataset " + DatasetName(layer, kFlatDatasets[d]) +
                      " checksum mismatch (stored " + Hex64(stored[d]) + ", computed " +
                      Hex64(computed[d]) + ")");
    }
  }
  return OkStatus();
}

}  // namespace internal

using namespace internal;  // NOLINT: this file implements the internal parts

namespace {

constexpr const char* kTempPrefix = ".tmp-";
constexpr const char* kLatestName = "latest";

// ---------------------------------------------------------------- paths, POSIX

std::string JoinPath(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  if (dir.back() == '/') return dir + name;
  return dir + "/" + name;
}

std::string StepFileName(int64_t step) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "step-%08lld.h5", static_cast<long long>(step));
  return buf;
}

std::string Errno() { return std::strerror(errno); }

// mkdir -p.
Status MakeDirs(const std::string& dir) {
  if (dir.empty()) return OkStatus();
  std::string prefix;
  std::stringstream parts(dir);
  std::string part;
  if (dir[0] == '/') prefix = "/";
  while (std::getline(parts, part, '/')) {
    if (part.empty()) continue;
    prefix += part;
    if (::mkdir(prefix.c_str(), 0777) != 0 && errno != EEXIST) {
      return IoError(dir + ": cannot create directory (" + Errno() + ")");
    }
    prefix += "/";
  }
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return IoError(dir + ": cannot create directory (a file of that name exists)");
  }
  if (::access(dir.c_str(), W_OK) != 0) {
    return IoError(dir + ": directory is not writable (" + Errno() + ")");
  }
  return OkStatus();
}

// Flushes a file's or a directory's data and metadata to stable storage.
Status FsyncPath(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return IoError(path + ": cannot open for fsync (" + Errno() + ")");
  const int rc = ::fsync(fd);
  const std::string err = rc != 0 ? Errno() : "";
  ::close(fd);
  if (rc != 0) return IoError(path + ": fsync failed (" + err + ")");
  return OkStatus();
}

Status RenamePath(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) {
    return IoError(from + ": cannot rename to " + to + " (" + Errno() + ")");
  }
  return OkStatus();
}

// Step of a "step-<digits>.h5" name; -1 for any other name.
int64_t ParseStepFileName(const std::string& name) {
  constexpr size_t kPrefix = 5, kSuffix = 3;  // "step-", ".h5"
  if (name.size() <= kPrefix + kSuffix || name.compare(0, kPrefix, "step-") != 0 ||
      name.compare(name.size() - kSuffix, kSuffix, ".h5") != 0) {
    return -1;
  }
  const std::string digits = name.substr(kPrefix, name.size() - kPrefix - kSuffix);
  if (digits.size() > 18 || !std::all_of(digits.begin(), digits.end(), ::isdigit)) return -1;
  return std::stoll(digits);
}

std::vector<std::string> ListDir(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = ::opendir(dir.empty() ? "." : dir.c_str());
  if (d == nullptr) return names;
  while (const dirent* e = ::readdir(d)) names.emplace_back(e->d_name);
  ::closedir(d);
  return names;
}

// After a successful save: keeps `keep_name` and the keep_last - 1 other
// checkpoints of highest step, and removes leftovers of interrupted saves.
// Failures are warnings: the new checkpoint is already complete.
void PruneAndClean(const std::string& dir, int keep_last, const std::string& keep_name) {
  std::vector<std::pair<int64_t, std::string>> others;
  for (const std::string& name : ListDir(dir)) {
    // Only the names a save of this protocol writes: anything else starting
    // with ".tmp-" is someone else's (the directory lock excludes a second
    // run, not other programs).
    const bool ours = name == std::string(kTempPrefix) + kLatestName ||
                      (name.rfind(kTempPrefix, 0) == 0 &&
                       ParseStepFileName(name.substr(std::strlen(kTempPrefix))) >= 0);
    if (ours) {
      if (::unlink(JoinPath(dir, name).c_str()) != 0) {
        L2L_LOG(Warning) << JoinPath(dir, name) << ": cannot remove stale temp file (" << Errno()
                         << ")";
      }
      continue;
    }
    const int64_t step = ParseStepFileName(name);
    if (step >= 0 && name != keep_name) others.emplace_back(step, name);
  }
  std::sort(others.begin(), others.end(), std::greater<>());
  for (size_t i = static_cast<size_t>(keep_last - 1); i < others.size(); ++i) {
    const std::string path = JoinPath(dir, others[i].second);
    if (::unlink(path.c_str()) != 0) {
      L2L_LOG(Warning) << path << ": cannot remove old checkpoint (" << Errno() << ")";
    }
  }
}

// rank 0: the new file becomes durable, gets its final name, and `latest`
// names it; each step is fsynced before the next makes it visible.
Status Publish(const std::string& dir, const std::string& tmp, const std::string& final_path) {
  const std::string dir_or_dot = dir.empty() ? "." : dir;
  RETURN_IF_ERROR(FsyncPath(tmp));
  RETURN_IF_ERROR(RenamePath(tmp, final_path));
  RETURN_IF_ERROR(FsyncPath(dir_or_dot));
  const std::string latest_tmp = JoinPath(dir, std::string(kTempPrefix) + kLatestName);
  const std::string name = final_path.substr(final_path.find_last_of('/') + 1);
  RETURN_IF_ERROR(fs::WriteFileDurably(latest_tmp, name + "\n"));
  RETURN_IF_ERROR(RenamePath(latest_tmp, JoinPath(dir, kLatestName)));
  return FsyncPath(dir_or_dot);
}

// ---------------------------------------------------------------- validation

uint64_t HashBytes(uint64_t h, const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) h = Mix64(h ^ p[i]);
  return Mix64(h ^ n);
}
uint64_t HashString(uint64_t h, const std::string& s) { return HashBytes(h, s.data(), s.size()); }
uint64_t HashInt(uint64_t h, int64_t v) { return HashBytes(h, &v, sizeof v); }

uint64_t HashLayers(const std::vector<LayerInfo>& layers) {
  uint64_t h = HashInt(0, static_cast<int64_t>(layers.size()));
  for (const LayerInfo& l : layers) {
    h = HashInt(h, l.size_elems);
    h = HashInt(h, static_cast<int64_t>(l.tensors.size()));
    for (const TensorEntry& t : l.tensors) {
      h = HashString(h, t.name);
      h = HashInt(h, t.offset_elems);
      h = HashBytes(h, t.shape.data(), t.shape.size() * sizeof(int64_t));
    }
  }
  return h;
}

uint64_t HashMeta(const Meta& m) {
  uint64_t h = HashInt(1, m.step);
  h = HashInt(h, m.tokens_seen);
  h = HashInt(h, static_cast<int64_t>(m.seed));
  h = HashString(h, m.config_yaml);
  return HashString(h, m.sampler_state);
}

// InvalidArgument unless every rank passed the same `hash`.
Status CheckSameOnAllRanks(MpiComm& comm, uint64_t hash, const std::string& what) {
  uint64_t lo = 0, hi = 0;
  RETURN_IF_ERROR(comm.AllReduce(&hash, &lo, 1, CommDType::kU64, ReduceOp::kMin)
                      .WithContext("comparing " + what + " across ranks"));
  RETURN_IF_ERROR(comm.AllReduce(&hash, &hi, 1, CommDType::kU64, ReduceOp::kMax)
                      .WithContext("comparing " + what + " across ranks"));
  if (lo != hi) return InvalidArgument("the ranks passed different " + what);
  return OkStatus();
}

enum class SliceUse { kSave, kLoad };

// Local checks of this rank's slices against the layers; with
// buffers_needed false the slices only describe ranges (streamed saves,
// master-only loads).
// Which buffers of a slice the operation reads or writes.
enum class SliceBuffers {
  kNone,    // a streamed save: the data comes from a fill callback
  kMaster,  // weights only (LoadWeights)
  kAll,     // master, adam_m and adam_v
};

Status CheckLocalSlices(const std::vector<LayerInfo>& layers, const std::vector<LayerSlice>& slices,
                        SliceBuffers needed = SliceBuffers::kAll) {
  if (layers.size() != slices.size()) {
    return InvalidArgument("checkpoint: " + std::to_string(layers.size()) + " layers but " +
                           std::to_string(slices.size()) + " slices");
  }
  for (size_t l = 0; l < layers.size(); ++l) {
    const LayerSlice& s = slices[l];
    if (s.offset_elems < 0 || s.size_elems < 0 ||
        s.offset_elems + s.size_elems > layers[l].size_elems) {
      return InvalidArgument(
          "checkpoint: layer " + std::to_string(l) + " slice [" + std::to_string(s.offset_elems) +
          ", " + std::to_string(s.offset_elems + s.size_elems) + ") lies outside the layer's " +
          std::to_string(layers[l].size_elems) + " elements");
    }
    if (needed != SliceBuffers::kNone && s.size_elems > 0 &&
        (s.master == nullptr ||
         (needed == SliceBuffers::kAll && (s.adam_m == nullptr || s.adam_v == nullptr)))) {
      return InvalidArgument("checkpoint: layer " + std::to_string(l) +
                             " slice has a null master, adam_m or adam_v buffer");
    }
  }
  return OkStatus();
}

// Collective: the slices that count (all of them for a save, the checksummed
// ones for a load) tile every layer exactly. Requires agreed layer counts.
Status CheckTiling(MpiComm& comm, const std::vector<LayerInfo>& layers,
                   const std::vector<LayerSlice>& slices, SliceUse use) {
  const size_t n = layers.size();
  const int P = comm.size();
  std::vector<int64_t> mine(2 * n + 1), all((2 * n + 1) * P);
  for (size_t l = 0; l < n; ++l) {
    const bool counts = use == SliceUse::kSave || slices[l].checksummed;
    mine[2 * l] = slices[l].offset_elems;
    mine[2 * l + 1] = counts ? slices[l].size_elems : 0;
  }
  RETURN_IF_ERROR(comm.AllGather(mine.data(), all.data(), mine.size(), CommDType::kI64)
                      .WithContext("gathering the checkpoint slices"));
  const char* which = use == SliceUse::kSave ? "slices" : "checksummed slices";
  for (size_t l = 0; l < n; ++l) {
    std::vector<std::pair<int64_t, int64_t>> ranges;  // (offset, size)
    for (int r = 0; r < P; ++r) {
      const int64_t size = all[r * mine.size() + 2 * l + 1];
      if (size > 0) ranges.emplace_back(all[r * mine.size() + 2 * l], size);
    }
    std::sort(ranges.begin(), ranges.end());
    int64_t next = 0;
    for (const auto& [offset, size] : ranges) {
      if (offset != next) break;
      next = offset + size;
    }
    if (next != layers[l].size_elems ||
        (!ranges.empty() && ranges.back().first + ranges.back().second != next)) {
      return InvalidArgument("checkpoint: layer " + std::to_string(l) + ": the ranks' " + which +
                             " do not tile [0, " + std::to_string(layers[l].size_elems) +
                             ") exactly (gap or overlap at element " + std::to_string(next) + ")");
    }
  }
  return OkStatus();
}

Status ValidateLayers(const std::vector<LayerInfo>& layers) {
  for (size_t l = 0; l < layers.size(); ++l) {
    if (layers[l].size_elems < 0) {
      return InvalidArgument("checkpoint: layer " + std::to_string(l) + " has negative size");
    }
    const std::string problem = IndexProblem(layers[l]);
    if (!problem.empty()) {
      return InvalidArgument("checkpoint: layer " + std::to_string(l) + ": " + problem);
    }
  }
  return OkStatus();
}

// FailedPrecondition naming the first layer/tensor where the checkpoint and
// the model differ.
Status CompareLayers(const std::string& path, const std::vector<LayerInfo>& file,
                     const std::vector<LayerInfo>& model) {
  if (file.size() != model.size()) {
    return FailedPrecondition(path + ": the checkpoint has " + std::to_string(file.size()) +
                              " layers, the model has " + std::to_string(model.size()));
  }
  for (size_t l = 0; l < file.size(); ++l) {
    const auto& ft = file[l].tensors;
    const auto& mt = model[l].tensors;
    size_t i = 0;
    while (i < ft.size() && i < mt.size() && ft[i] == mt[i]) ++i;
    std::string detail;
    if (i < ft.size() && i < mt.size()) {
      if (ft[i].name != mt[i].name) {
        detail = "tensor " + std::to_string(i) + " is '" + ft[i].name + "' in the checkpoint, '" +
                 mt[i].name + "' in the model";
      } else if (ft[i].shape != mt[i].shape) {
        detail = "tensor '" + ft[i].name + "' shape " + internal::ShapeString(ft[i].shape) +
                 " vs " + internal::ShapeString(mt[i].shape);
      } else {
        detail = "tensor '" + ft[i].name + "' offset " + std::to_string(ft[i].offset_elems) +
                 " vs " + std::to_string(mt[i].offset_elems);
      }
    } else if (i < ft.size()) {
      detail = "the model has no tensor '" + ft[i].name + "'";
    } else if (i < mt.size()) {
      detail = "the checkpoint has no tensor '" + mt[i].name + "'";
    }
    const std::string layer = "layer " + std::to_string(l);
    if (file[l].size_elems != model[l].size_elems) {
      return FailedPrecondition(path + ": " + layer + " has " + std::to_string(file[l].size_elems) +
                                " elements in the checkpoint, the model has " +
                                std::to_string(model[l].size_elems) +
                                (detail.empty() ? "" : " (" + detail + ")"));
    }
    if (!detail.empty()) {
      return FailedPrecondition(path + ": " + layer + " differs from the model (" + detail + ")");
    }
  }
  return OkStatus();
}

// Every layer's slices; `bytes_read` sums all ranks' reads.
Status ReadAllAndCheck(MpiComm& comm, hid_t file, const std::string& path,
                       const std::vector<LayerInfo>& layers, const std::vector<LayerSlice>& slices,
                       ReadTarget target, int64_t* bytes_read,
                       LayerParts parts = LayerParts::kAll) {
  ASSIGN_OR_RETURN(H5Id dxpl, internal::DataTransfer());
  int64_t bytes = 0;
  for (int l = 0; l < static_cast<int>(layers.size()); ++l) {
    RETURN_IF_ERROR(internal::ReadLayerAndCheck(comm, file, dxpl.get(), path, l, slices[l], target,
                                                parts, &bytes));
  }
  RETURN_IF_ERROR(comm.AllReduce(&bytes, &bytes, 1, CommDType::kI64, ReduceOp::kSum)
                      .WithContext("summing the checkpoint byte counts"));
  if (bytes_read != nullptr) *bytes_read = bytes;
  return OkStatus();
}

// Layer index after which the crash-test hook aborts the job, or -1.
int CrashAfterLayer() {
  const char* v = std::getenv(kCrashHookEnv);
  if (v == nullptr || *v == '\0') return -1;
  char* end = nullptr;
  const long k = std::strtol(v, &end, 10);
  return (end != nullptr && *end == '\0' && k >= 0) ? static_cast<int>(k) : -1;
}

// Writes the whole file collectively, from the slices' buffers or, when
// `fill` is given, from it piece by piece. Agreed errors.
Status WriteFile(MpiComm& comm, const std::string& path, const Meta& meta,
                 const std::vector<LayerInfo>& layers, const std::vector<LayerSlice>& slices,
                 const SaveFill* fill) {
  ASSIGN_OR_RETURN(H5Id fapl, internal::MpioFileAccess(comm.handle()));
  H5Id file = internal::OwnFile(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get()));
  RETURN_IF_ERROR(comm.Agree(file.valid() ? OkStatus()
                                          : IoError(path + ": cannot create the checkpoint file (" +
                                                    internal::Hdf5ErrorSummary() + ")")));
  const auto in_file = [&](const Status& s) {
    return s.ok() ? s : Status(s.code(), path + ": " + s.message());
  };
  {
    // The config YAML may exceed 64 KiB: the file format >= 1.8 (set in
    // MpioFileAccess) moves such attributes to dense storage by itself.
    H5Id g = internal::OwnGroup(
        H5Gcreate2(file.get(), internal::kMetaGroup, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    Status st = g.valid() ? OkStatus() : IoError("cannot create /meta");
    const hid_t gid = g.get();
    if (st.ok()) st = internal::WriteStringAttr(gid, "format", kFormatName);
    if (st.ok()) st = internal::WriteInt64Attr(gid, "version", kFormatVersion);
    if (st.ok()) st = internal::WriteInt64Attr(gid, "step", meta.step);
    if (st.ok()) st = internal::WriteInt64Attr(gid, "tokens_seen", meta.tokens_seen);
    if (st.ok()) st = internal::WriteInt64Attr(gid, "world_size", comm.size());
    if (st.ok()) st = internal::WriteUint64Attr(gid, "seed", meta.seed);
    if (st.ok()) st = internal::WriteStringAttr(gid, "config", meta.config_yaml);
    if (st.ok()) st = internal::WriteStringAttr(gid, "sampler_state", meta.sampler_state);
    H5Id lg = internal::OwnGroup(
        H5Gcreate2(file.get(), internal::kLayersGroup, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    if (st.ok() && !lg.valid()) st = IoError("cannot create /layers");
    RETURN_IF_ERROR(comm.Agree(in_file(st)));
  }
  ASSIGN_OR_RETURN(H5Id dxpl, internal::DataTransfer());
  H5Id dcpl = internal::OwnPlist(H5Pcreate(H5P_DATASET_CREATE));
  if (!dcpl.valid() || H5Pset_fill_time(dcpl.get(), H5D_FILL_TIME_NEVER) < 0 ||
      H5Pset_alloc_time(dcpl.get(), H5D_ALLOC_TIME_EARLY) < 0) {
    return comm.Agree(Internal("cannot set up the dataset creation properties"));
  }
  const int crash_after = CrashAfterLayer();
  for (int l = 0; l < static_cast<int>(layers.size()); ++l) {
    const LayerSlice& s = slices[l];
    const std::string group_name = internal::LayerGroupName(l);
    H5Id g = internal::OwnGroup(
        H5Gcreate2(file.get(), group_name.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    Status st = g.valid() ? OkStatus() : IoError("cannot create group " + group_name);
    if (st.ok())
      st = internal::WriteTensorIndex(g.get(), layers[l].tensors, comm.rank(), dxpl.get());
    RETURN_IF_ERROR(comm.Agree(in_file(st)));

    const hsize_t dims[1] = {static_cast<hsize_t>(layers[l].size_elems)};
    H5Id space = internal::OwnSpace(H5Screate_simple(1, dims, nullptr));
    H5Id ds[kNumFlat];
    uint64_t sums[kNumFlat] = {};
    for (int d = 0; d < kNumFlat; ++d) {
      const std::string name = internal::DatasetName(l, internal::kFlatDatasets[d]);
      ds[d] = internal::OwnDataset(H5Dcreate2(g.get(), internal::kFlatDatasets[d], H5T_IEEE_F32LE,
                                              space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT));
      st = ds[d].valid() ? OkStatus()
                         : IoError("cannot create dataset " + name + " (" +
                                   internal::Hdf5ErrorSummary() + ")");
      RETURN_IF_ERROR(comm.Agree(in_file(st)));
      if (fill == nullptr) {
        const float* src = SlicePointer(s, d);
        st = internal::WriteRange(comm.handle(), ds[d].get(), dxpl.get(), s.offset_elems,
                                  s.size_elems, src);
        sums[d] = s.size_elems > 0 ? DatasetChecksum(src, s.offset_elems, s.size_elems) : 0;
      } else {
        uint64_t& sum = sums[d];
        st = internal::WriteRangeFrom(comm.handle(), ds[d].get(), dxpl.get(), s.offset_elems,
                                      s.size_elems, kPieceElems,
                                      [&](int64_t offset, int64_t n, float* out) {
                                        RETURN_IF_ERROR((*fill)(l, d, offset, n, out));
                                        sum += DatasetChecksum(out, offset, n);
                                        return OkStatus();
                                      });
      }
      if (!st.ok()) st = IoError("writing dataset " + name + ": " + st.message());
      RETURN_IF_ERROR(comm.Agree(in_file(st)));
    }
    RETURN_IF_ERROR(AllReduceSum(comm, sums, kNumFlat));
    st = OkStatus();
    for (int d = 0; d < kNumFlat && st.ok(); ++d) {
      st = internal::WriteUint64Attr(ds[d].get(), internal::kChecksumAttr, sums[d]);
    }
    RETURN_IF_ERROR(comm.Agree(in_file(st)));
    if (l == crash_after) {
      MpiRuntime::AbortJob(std::string(kCrashHookEnv) + "=" + std::to_string(l) +
                               ": test hook aborts the save after layer " + std::to_string(l),
                           3);
    }
  }
  const bool closed = file.Close();
  return comm.Agree(closed ? OkStatus()
                           : IoError(path + ": closing the checkpoint file failed (" +
                                     internal::Hdf5ErrorSummary() + ")"));
}

}  // namespace

namespace {

// One thread's share. Cloned per ISA: with AVX-512 or AVX2 the 64-bit
// multiplies of Mix64 vectorise (8.6 GB/s a core with AVX-512 against
// 1.9 GB/s scalar on one VM; 2.4 GB/s a core on another, where it was 30% of
// bench_interop's CPU time: the rate is the machine's, not a constant); the
// sum is the same for every clone since wrapping addition is associative.
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"))) uint64_t
ChecksumRange(const float* x, int64_t offset_elems, int64_t n) {
  uint64_t sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t k = 0; k < n; ++k) {
    uint32_t bits;
    std::memcpy(&bits, x + k, sizeof bits);
    sum += Mix64(static_cast<uint64_t>(bits) ^ Mix64(static_cast<uint64_t>(offset_elems + k)));
  }
  return sum;
}

}  // namespace

uint64_t DatasetChecksum(const float* x, int64_t offset_elems, int64_t n) {
  // Wrapping addition is associative and commutative: any split (threads,
  // ranks, chunks) gives the same sum.
  constexpr int64_t kChunk = int64_t{1} << 20;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  uint64_t sum = 0;
#pragma omp parallel for reduction(+ : sum) schedule(static) if (chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t b = c * kChunk;
    sum += ChecksumRange(x + b, offset_elems + b, std::min(kChunk, n - b));
  }
  return sum;
}

std::string CheckpointPath(const std::string& dir, int64_t step) {
  return JoinPath(dir, StepFileName(step));
}

namespace {

Status SaveImpl(MPI_Comm comm_in, const std::string& dir, const Meta& meta,
                const std::vector<LayerInfo>& layers, const std::vector<LayerSlice>& slices,
                const SaveFill* fill, int keep_last, IoStats* stats) {
  internal::SilenceHdf5Errors();
  const double t0 = MPI_Wtime();
  MpiComm comm(comm_in);
  Status local =
      keep_last >= 1
          ? ValidateLayers(layers)
          : InvalidArgument("checkpoint: keep_last must be >= 1, got " + std::to_string(keep_last));
  if (local.ok())
    local = CheckLocalSlices(layers, slices,
                             fill == nullptr ? SliceBuffers::kAll : SliceBuffers::kNone);
  RETURN_IF_ERROR(comm.Agree(local));
  RETURN_IF_ERROR(CheckSameOnAllRanks(comm, HashLayers(layers), "checkpoint layer layouts"));
  RETURN_IF_ERROR(CheckSameOnAllRanks(comm, HashString(HashInt(HashMeta(meta), keep_last), dir),
                                      "checkpoint metadata or dir"));
  RETURN_IF_ERROR(CheckTiling(comm, layers, slices, SliceUse::kSave));
  RETURN_IF_ERROR(comm.Agree(comm.rank() == 0 ? MakeDirs(dir) : OkStatus()));

  const std::string tmp = JoinPath(dir, kTempPrefix + StepFileName(meta.step));
  const std::string final_path = CheckpointPath(dir, meta.step);
  Status st = WriteFile(comm, tmp, meta, layers, slices, fill);
  if (st.ok()) {
    // Re-open and check every dataset's checksum from what is on disk.
    auto file = internal::OpenForRead(comm, tmp);
    st = file.status();
    if (st.ok()) {
      st = ReadAllAndCheck(comm, file->get(), tmp, layers, slices, ReadTarget::kChecksumOnly,
                           nullptr);
      if (!st.ok() && st.code() == StatusCode::kDataLoss) {
        st = IoError(st.message() + " after writing");
      }
      const bool closed = file->Close();
      if (st.ok() && !closed) st = IoError(tmp + ": closing the re-opened file failed");
      st = comm.Agree(st);
    }
  }
  if (!st.ok()) {
    if (comm.rank() == 0) ::unlink(tmp.c_str());  // best effort; the next save also cleans up
    return st;
  }
  Status published = comm.rank() == 0 ? Publish(dir, tmp, final_path) : OkStatus();
  if (comm.rank() == 0 && published.ok()) PruneAndClean(dir, keep_last, StepFileName(meta.step));
  RETURN_IF_ERROR(comm.Agree(published));
  if (stats != nullptr) {
    int64_t elems = 0;
    for (const LayerInfo& l : layers) elems += l.size_elems;
    stats->bytes = elems * kNumFlat * static_cast<int64_t>(sizeof(float));
    stats->seconds = MPI_Wtime() - t0;
  }
  return OkStatus();
}

}  // namespace

Status Save(MPI_Comm comm, const std::string& dir, const Meta& meta,
            const std::vector<LayerInfo>& layers, const std::vector<LayerSlice>& slices,
            int keep_last, IoStats* stats) {
  return SaveImpl(comm, dir, meta, layers, slices, nullptr, keep_last, stats);
}

Status SaveStreamed(MPI_Comm comm, const std::string& dir, const Meta& meta,
                    const std::vector<LayerInfo>& layers, const std::vector<LayerSlice>& tiles,
                    const SaveFill& fill, int keep_last, IoStats* stats) {
  return SaveImpl(comm, dir, meta, layers, tiles, &fill, keep_last, stats);
}

std::vector<std::string> CheckpointEntries(const std::string& dir) {
  std::vector<std::pair<int64_t, std::string>> steps;
  for (const std::string& name : ListDir(dir)) {
    const int64_t step = ParseStepFileName(name);
    if (step >= 0) steps.emplace_back(step, name);
  }
  std::sort(steps.begin(), steps.end());
  std::vector<std::string> names;
  if (fs::Exists(JoinPath(dir, kLatestName))) names.push_back(kLatestName);
  for (auto& [step, name] : steps) names.push_back(std::move(name));
  return names;
}

StatusOr<std::string> FindLatest(const std::string& dir) {
  const std::string latest = JoinPath(dir, kLatestName);
  if (!fs::Exists(latest)) {  // lstat: a dangling link is not "none"
    if (!fs::IsDir(dir.empty() ? "." : dir)) {
      return NotFound(dir + ": no such checkpoint directory");
    }
    return NotFound(dir + ": no checkpoint (no 'latest' file)");
  }
  StatusOr<std::string> text = fs::ReadFile(latest);
  if (text.status().code() == StatusCode::kNotFound) {
    return DataLoss(latest +
                    ": a link to a file that does not exist, expected a file naming the "
                    "latest checkpoint");
  }
  RETURN_IF_ERROR(text.status());
  std::string name = *text;
  while (!name.empty() && std::isspace(static_cast<unsigned char>(name.back()))) name.pop_back();
  const bool printable = std::all_of(name.begin(), name.end(), [](char c) {
    return static_cast<unsigned char>(c) >= 0x20 && static_cast<unsigned char>(c) < 0x7f;
  });
  if (name.empty() || !printable || name.size() > 4096) {
    return DataLoss(latest + ": expected one line naming a checkpoint file, found '" +
                    fs::Printable(*text) + "'");
  }
  const std::string path = name[0] == '/' ? name : JoinPath(dir, name);
  if (!fs::IsFile(path)) {
    return DataLoss(latest + " names " + name + ", which does not exist or is not a file");
  }
  return path;
}

StatusOr<Meta> ReadMeta(MPI_Comm comm_in, const std::string& path) {
  MpiComm comm(comm_in);
  ASSIGN_OR_RETURN(H5Id file, internal::OpenForRead(comm, path));
  auto meta = ReadMetaFromFile(file.get(), path);
  RETURN_IF_ERROR(comm.Agree(meta.status()));
  return meta;
}

StatusOr<std::vector<LayerInfo>> ReadLayerInfos(MPI_Comm comm_in, const std::string& path) {
  MpiComm comm(comm_in);
  ASSIGN_OR_RETURN(H5Id file, internal::OpenForRead(comm, path));
  auto meta = ReadMetaFromFile(file.get(), path);
  RETURN_IF_ERROR(comm.Agree(meta.status()));
  auto layers = ReadLayerInfosFromFile(file.get(), path);
  RETURN_IF_ERROR(comm.Agree(layers.status()));
  return layers;
}

namespace {

Status LoadImpl(MPI_Comm comm_in, const std::string& path, const std::vector<LayerInfo>& layers,
                const std::vector<LayerSlice>& slices, LayerParts parts, IoStats* stats) {
  const double t0 = MPI_Wtime();
  MpiComm comm(comm_in);
  RETURN_IF_ERROR(comm.Agree(CheckLocalSlices(
      layers, slices, parts == LayerParts::kAll ? SliceBuffers::kAll : SliceBuffers::kMaster)));
  RETURN_IF_ERROR(CheckSameOnAllRanks(comm, HashLayers(layers), "checkpoint layer layouts"));
  RETURN_IF_ERROR(CheckTiling(comm, layers, slices, SliceUse::kLoad));
  ASSIGN_OR_RETURN(H5Id file, internal::OpenForRead(comm, path));
  RETURN_IF_ERROR(comm.Agree(ReadMetaFromFile(file.get(), path).status()));
  auto stored = ReadLayerInfosFromFile(file.get(), path);
  RETURN_IF_ERROR(comm.Agree(stored.status()));
  RETURN_IF_ERROR(comm.Agree(CompareLayers(path, *stored, layers)));
  int64_t bytes = 0;
  RETURN_IF_ERROR(ReadAllAndCheck(comm, file.get(), path, layers, slices, ReadTarget::kSliceBuffers,
                                  &bytes, parts));
  if (stats != nullptr) {
    stats->bytes = bytes;
    stats->seconds = MPI_Wtime() - t0;
  }
  return OkStatus();
}

}  // namespace

Status Load(MPI_Comm comm, const std::string& path, const std::vector<LayerInfo>& layers,
            const std::vector<LayerSlice>& slices, IoStats* stats) {
  return LoadImpl(comm, path, layers, slices, LayerParts::kAll, stats);
}

Status LoadWeights(MPI_Comm comm, const std::string& path, const std::vector<LayerInfo>& layers,
                   const std::vector<LayerSlice>& slices, IoStats* stats) {
  return LoadImpl(comm, path, layers, slices, LayerParts::kMasterOnly, stats);
}

}  // namespace l2l::ckpt
