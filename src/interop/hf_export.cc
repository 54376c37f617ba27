// l2l-ckpt export --format hf: see hf_export.h. The tensors are planned in
// HfTensorsOf order (layer by layer) into shards; then each checkpoint layer
// streams by once per pass (write, then verify) and each piece is written
// to / compared with its place in the shards, so memory is one piece.
#include "l2l/interop/hf_export.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <memory>

#include "l2l/ckpt/model_layers.h"
#include "l2l/ckpt/reader.h"
#include "l2l/config/config.h"
#include "l2l/core/dtype.h"
#include "l2l/core/fs.h"
#include "l2l/interop/hf_config.h"
#include "l2l/interop/hf_import.h"
#include "l2l/interop/hf_names.h"
#include "l2l/interop/json.h"
#include "l2l/model/config_dims.h"

namespace l2l::interop {
namespace {

using fs::CopyFile;
using fs::Exists;
using fs::IsFile;

// The hf/ directory of the import this checkpoint descends from: its own
// directory's, else (a fine-tune) that of the checkpoint its config's
// train.init_from names, and so on (at most 8 links). "" if none.
std::string FindSideDir(const std::string& checkpoint, const config::Config& cfg) {
  std::string path = checkpoint;
  config::Config c = cfg;
  for (int hop = 0; hop < 8; ++hop) {
    const std::string side = fs::ParentDir(path) + "/hf";
    if (IsFile(side + "/config.json")) return side;
    if (c.train.init_from.empty()) return "";
    StatusOr<std::string> next = ckpt::ResolveCheckpoint(c.train.init_from);
    if (!next.ok()) return "";
    StatusOr<ckpt::Summary> s = ckpt::Inspect(*next);
    if (!s.ok()) return "";
    StatusOr<config::Config> nc = config::ParseConfig(s->meta.config_yaml, *next, {});
    if (!nc.ok()) return "";
    path = *next;
    c = *nc;
  }
  return "";
}

// One output tensor: where it comes from and where it goes.
struct Planned {
  int layer = 0;
  int64_t offset = 0, elems = 0;  // in the layer's flat buffer
  int shard = 0;
  SafetensorsTensor entry;  // name, dtype, shape; offsets set by EncodeSafetensorsHeader
};

// Converts n fp32 values to the output dtype's bytes in `out` (resized).
void Encode(const float* x, int64_t n, SafetensorsDType dtype, std::string* out) {
  if (dtype == SafetensorsDType::kF32) {
    out->assign(reinterpret_cast<const char*>(x), static_cast<size_t>(n) * 4);
    return;
  }
  out->resize(static_cast<size_t>(n) * 2);
  auto* h = reinterpret_cast<uint16_t*>(out->data());
  for (int64_t i = 0; i < n; ++i) h[i] = F32ToBF16(x[i]);
}

// Streams every layer of the checkpoint once (ckpt::StreamMaster: one piece
// in memory, checksums verified) and hands each piece's overlap with each
// planned tensor to `f(tensor, first element within the tensor, n, values)`.
Status ForEachTensorPiece(
    const std::string& path, const std::vector<std::vector<const Planned*>>& by_layer,
    const std::function<Status(const Planned&, int64_t, int64_t, const float*)>& f) {
  for (size_t l = 0; l < by_layer.size(); ++l) {
    RETURN_IF_ERROR(ckpt::StreamMaster(
        path, static_cast<int>(l), [&](int64_t offset, int64_t n, const float* x) -> Status {
          for (const Planned* p : by_layer[l]) {
            const int64_t lo = std::max(offset, p->offset);
            const int64_t hi = std::min(offset + n, p->offset + p->elems);
            if (lo < hi) RETURN_IF_ERROR(f(*p, lo - p->offset, hi - lo, x + (lo - offset)));
          }
          return OkStatus();
        }));
  }
  return OkStatus();
}

void RemoveExport(const std::string& dir, const std::vector<std::string>& files) {
  for (const std::string& f : files) ::unlink((dir + "/" + f).c_str());
  ::rmdir(dir.c_str());
}

}  // namespace

StatusOr<HfExportReport> ExportHf(const std::string& spec, const std::string& out_given,
                                  const HfExportOptions& options) {
  const std::string out_dir = fs::WithoutTrailingSlashes(out_given);
  HfExportReport report;
  if (options.dtype != SafetensorsDType::kF32 && options.dtype != SafetensorsDType::kBF16) {
    return InvalidArgument("export: --dtype must be fp32 or bf16");
  }
  if (options.max_shard_bytes < 1) return InvalidArgument("export: the shard size must be > 0");
  ASSIGN_OR_RETURN(const std::string path, ckpt::ResolveCheckpoint(spec));
  report.checkpoint = path;
  if (out_dir.empty()) return InvalidArgument("export: --out is empty");
  if (Exists(out_dir)) {
    return FailedPrecondition(out_dir +
                              ": already exists; export writes a new directory and "
                              "never replaces one");
  }
  ASSIGN_OR_RETURN(const ckpt::Summary summary, ckpt::Inspect(path));
  StatusOr<config::Config> cfg =
      config::ParseConfig(summary.meta.config_yaml, path + " (its config)", {});
  if (!cfg.ok()) return DataLoss(path + ": unreadable config: " + cfg.status().message());
  const model::ModelDims dims = model::DimsFromConfig(cfg->model);
  RETURN_IF_ERROR(model::ValidateModelDims(dims).WithContext(path));
  RETURN_IF_ERROR(ckpt::CheckLayersMatch(path, summary.layers, dims));

  // config.json, from the model section and the imported model's config.json.
  const std::string side = FindSideDir(path, *cfg);
  report.side_dir = side;
  std::unique_ptr<Json> original;
  if (!side.empty()) {
    ASSIGN_OR_RETURN(Json j, ReadJsonFile(side + "/config.json"));
    original = std::make_unique<Json>(std::move(j));
  }
  const std::string dtype_name = options.dtype == SafetensorsDType::kF32 ? "float32" : "bfloat16";
  ASSIGN_OR_RETURN(const std::string config_json,
                   HfConfigJson(cfg->model, original.get(), options.model_type, dtype_name));
  {
    StatusOr<Json> j = ParseJson(config_json);
    L2L_CHECK(j.ok()) << "generated config.json is not JSON: " << j.status().message();
    report.model_type = j->Find("model_type")->text;
  }

  // The tensors, split into shards of at most max_shard_bytes (a larger
  // tensor is a shard of its own).
  std::vector<std::vector<Planned>> shards(1);
  int64_t shard_bytes = 0;
  const int elem = SafetensorsDTypeSizeBytes(options.dtype);
  for (const HfTensor& t : HfTensorsOf(dims)) {
    const model::ParamLayout layout = model::LayoutForLayer(dims, t.layer);
    const model::TensorSpec& spec = *layout.Find(t.l2l);
    Planned p;
    p.layer = t.layer;
    p.offset = spec.offset_elems;
    p.elems = spec.shape.num_elements();
    p.entry.name = t.hf;
    p.entry.dtype = options.dtype;
    for (int i = 0; i < spec.shape.rank(); ++i) p.entry.shape.push_back(spec.shape.dim(i));
    const int64_t bytes = p.elems * elem;
    if (!shards.back().empty() && shard_bytes + bytes > options.max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    p.shard = static_cast<int>(shards.size()) - 1;
    shards.back().push_back(std::move(p));
    shard_bytes += bytes;
    report.data_bytes += bytes;
    ++report.tensors;
  }
  const int n = static_cast<int>(shards.size());
  const auto shard_name = [&](int k) {
    if (n == 1) return std::string("model.safetensors");
    char buf[64];
    std::snprintf(buf, sizeof buf, "model-%05d-of-%05d.safetensors", k + 1, n);
    return std::string(buf);
  };

  const std::string tmp = out_dir + ".tmp-" + std::to_string(::getpid());
  {
    std::error_code ec;
    const std::filesystem::path parent = std::filesystem::path(out_dir).parent_path();
    if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  }
  if (::mkdir(tmp.c_str(), 0777) != 0) {
    return IoError(tmp + ": cannot create (" + std::strerror(errno) + ")");
  }
  std::vector<std::string> written;
  const auto fail = [&](const Status& s) {
    RemoveExport(tmp, written);
    return s;
  };
  // The shard files: headers first, then every tensor's bytes at their
  // place, written as the checkpoint's layers stream by.
  std::vector<int> fds(n, -1);
  std::vector<int64_t> data_start(n);
  const auto close_all = [&] {
    bool ok = true;
    for (int& fd : fds) {
      if (fd >= 0) ok = ::close(fd) == 0 && ok;
      fd = -1;
    }
    return ok;
  };
  const auto fail_open = [&](const Status& s) {
    close_all();
    return fail(s);
  };
  for (int k = 0; k < n; ++k) {
    std::vector<SafetensorsTensor> entries;
    for (const Planned& p : shards[k]) entries.push_back(p.entry);
    const std::string header = EncodeSafetensorsHeader(
        &entries, {{"format", "pt"}, {"l2l_step", std::to_string(summary.meta.step)}});
    for (size_t i = 0; i < entries.size(); ++i) shards[k][i].entry = entries[i];
    data_start[k] = static_cast<int64_t>(header.size());
    const std::string file = tmp + "/" + shard_name(k);
    written.push_back(shard_name(k));
    fds[k] = ::open(file.c_str(), O_RDWR | O_CREAT | O_EXCL, 0644);
    if (fds[k] < 0) {
      return fail_open(IoError(file + ": cannot create (" + std::strerror(errno) + ")"));
    }
    if (::pwrite(fds[k], header.data(), header.size(), 0) != static_cast<ssize_t>(header.size())) {
      return fail_open(IoError(file + ": write failed (" + std::strerror(errno) + ")"));
    }
  }
  std::vector<std::vector<const Planned*>> by_layer(model::NumLayers(dims));
  for (const auto& shard : shards) {
    for (const Planned& p : shard) by_layer[p.layer].push_back(&p);
  }
  // One pass over the checkpoint (its checksums verified): each piece is
  // encoded, written at its place, and read back at once and compared, so a
  // write that landed short or elsewhere fails the export. Writeback starts
  // per piece, so the disk writes while the next pieces are read and the
  // final fsync has little left to do.
  const int elem_bytes = SafetensorsDTypeSizeBytes(options.dtype);
  std::string bytes, got;
  Status st = ForEachTensorPiece(
      path, by_layer, [&](const Planned& p, int64_t first, int64_t count, const float* x) {
        Encode(x, count, options.dtype, &bytes);
        const int64_t at = data_start[p.shard] + p.entry.begin_bytes + first * elem_bytes;
        const int fd = fds[p.shard];
        const std::string file = tmp + "/" + shard_name(p.shard);
        if (::pwrite(fd, bytes.data(), bytes.size(), at) != static_cast<ssize_t>(bytes.size())) {
          return IoError(file + ": write failed (" + std::strerror(errno) + ")");
        }
#ifdef __linux__
        (void)::sync_file_range(fd, at, static_cast<off_t>(bytes.size()), SYNC_FILE_RANGE_WRITE);
#endif
        got.resize(bytes.size());
        if (::pread(fd, got.data(), got.size(), at) != static_cast<ssize_t>(got.size()) ||
            got != bytes) {
          return Internal(file + ": tensor '" + p.entry.name +
                          "' reads back differently from what was written");
        }
        return OkStatus();
      });
  for (int k = 0; k < n && st.ok(); ++k) {
    if (::fsync(fds[k]) != 0) {
      st = IoError(tmp + "/" + shard_name(k) + ": fsync failed (" + std::strerror(errno) + ")");
    }
  }
  if (!close_all() && st.ok()) st = IoError(tmp + ": closing the weight files failed");
  if (!st.ok()) return fail(st);

  // Every header parses back to the plan (SafetensorsFile::Open also checks
  // the file's size against it).
  for (int k = 0; k < n; ++k) {
    const std::string file = tmp + "/" + shard_name(k);
    StatusOr<SafetensorsFile> f = SafetensorsFile::Open(file);
    if (!f.ok()) return fail(f.status());
    bool same = f->header().tensors.size() == shards[k].size();
    for (const Planned& p : shards[k]) {
      const SafetensorsTensor* t = f->Find(p.entry.name);
      same = same && t != nullptr && *t == p.entry;
    }
    if (!same) return fail(Internal(file + ": the written header differs from the plan"));
  }
  if (n > 1) {
    JsonObjectWriter map;
    for (int k = 0; k < n; ++k) {
      for (const Planned& p : shards[k]) map.SetString(p.entry.name, shard_name(k));
    }
    JsonObjectWriter meta;
    meta.SetInt("total_size", report.data_bytes);
    JsonObjectWriter index;
    std::string m = meta.Text(), w = map.Text();
    m.pop_back();
    w.pop_back();
    index.Set("metadata", m);
    index.Set("weight_map", w);
    written.push_back("model.safetensors.index.json");
    Status s = fs::WriteFileDurably(tmp + "/model.safetensors.index.json", index.Text());
    if (!s.ok()) return fail(s);
  }
  written.push_back("config.json");
  Status s = fs::WriteFileDurably(tmp + "/config.json", config_json);
  if (!s.ok()) return fail(s);
  if (!side.empty()) {
    for (const std::string& name : HfSideFiles()) {
      if (!IsFile(side + "/" + name)) continue;
      written.push_back(name);
      s = CopyFile(side + "/" + name, tmp + "/" + name);
      if (!s.ok()) return fail(s);
      report.side_files.push_back(name);
    }
  }
  if (Status r = fs::SyncDir(tmp); !r.ok()) return fail(r);
  if (Status r = fs::RenameNoReplace(tmp, out_dir); !r.ok()) return fail(r);
  (void)fs::SyncDir(fs::ParentDir(out_dir));  // best effort, as in import
  report.files = written;
  report.shards = n;
  return report;
}

}  // namespace l2l::interop
