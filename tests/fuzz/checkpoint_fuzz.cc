// Fuzz target: the checkpoint reader, on damaged copies of a real checkpoint.
//
// Random bytes are almost never an HDF5 file, and byte flips in one mostly
// test libhdf5's own parser. What l2l must survive is a well-formed HDF5
// file whose contents lie: a negative step, an index of 2^40 rows, an offset
// of INT64_MAX, a missing layer. So the input is an edit program applied with
// the HDF5 API to a copy of a checkpoint written at start-up by ckpt::Save (a
// 2-block BERT with the real layouts), and then everything a resume or a tool
// does with a checkpoint runs on it: ReadMeta, ReadLayerInfos, Load (world
// size 1), Inspect, Verify, ReadLayer and StreamMaster of every layer.
//
// Program: a sequence of ops, each an opcode byte then its operands (integers
// little-endian; a program that ends mid-op reads zeros). L = layer byte,
// D = dataset byte (0 master, 1 adam_m, 2 adam_v, 3 tensors):
//   0 A V8      /meta integer attribute A (version, step, tokens_seen,
//               world_size, seed) := V; A | 0x80 rewrites it as a string
//   1 A M P2 N B[N]  /meta string attribute A (format, config, sampler_state):
//               M=0 replace with B, 1 set byte P to B[0], 2 cut at P
//   2 L R F V8  index row R of layer L, field F (0 offset, 1 rank, 2..9
//               shape[F-2], 10 name := V's 8 bytes) := V
//   3 L N8      recreate layer L's index with N rows (chunked, only the old
//               rows written)
//   4 T L       unlink T: 0 /meta, 1 /layers, 2 /layers/L, 3..6 its dataset D=T-3
//   5 L D N8    recreate flat dataset D of layer L with N elements (chunked,
//               checksum attribute kept)
//   6 L D I4 F4 flat dataset D of layer L, element I := float F
//   7 L D V8    checksum attribute of flat dataset D of layer L := V
//   8 N2        create an empty group /layers/N
//   9 B4        truncate the file to B bytes (after every other edit)
// Properties: no crash, no sanitizer report, no CHECK, no hang (the driver's
// per-input timeout); the unmodified copy (empty program) verifies.
#include <hdf5.h>
#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "l2l/ckpt/checkpoint.h"
#include "l2l/ckpt/model_layers.h"
#include "l2l/ckpt/reader.h"
#include "l2l/config/config.h"
#include "l2l/core/fs.h"
#include "l2l/model/config_dims.h"

namespace {

using l2l::ckpt::LayerInfo;

constexpr const char* kYaml =
    "model: {kind: bert, layers: 2, hidden: 16, heads: 2, ffn: 32, vocab: 24, seq_len: 8}\n"
    "data: {path: fuzz.tok}\n"
    "train: {steps: 10, global_batch: 4, micro_batch: 2}\n";

struct Base {
  std::string dir;   // scratch directory, removed at exit
  std::string file;  // the pristine checkpoint
  std::string work;  // the copy each input edits
  std::vector<LayerInfo> layers;
};
Base* g_base = nullptr;

void Die(const std::string& what) {
  std::fprintf(stderr, "checkpoint_fuzz: %s\n", what.c_str());
  std::abort();
}

void Cleanup() {
  if (g_base != nullptr) {
    std::error_code ec;
    std::filesystem::remove_all(g_base->dir, ec);
  }
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

// Operands, read from the program; zeros once it ends.
struct Program {
  const uint8_t* p;
  size_t n;
  bool done() const { return n == 0; }
  uint64_t Int(int bytes) {
    uint64_t v = 0;
    for (int i = 0; i < bytes; ++i) {
      const uint64_t b = n > 0 ? *p : 0;
      if (n > 0) ++p, --n;
      v |= b << (8 * i);
    }
    return v;
  }
  std::string Text(size_t len) {
    std::string s;
    for (size_t i = 0; i < len && n > 0; ++i) s += static_cast<char>(Int(1));
    return s;
  }
};

const char* const kIntAttrs[] = {"version", "step", "tokens_seen", "world_size", "seed"};
const char* const kStrAttrs[] = {"format", "config", "sampler_state"};
const char* const kDatasets[] = {"master", "adam_m", "adam_v", "tensors"};

std::string LayerPath(int layer) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "/layers/%05d", layer);
  return buf;
}

// Replaces attribute `name` of `obj` with a scalar of `type` holding `value`.
void PutAttr(hid_t obj, const char* name, hid_t type, const void* value) {
  if (H5Aexists(obj, name) > 0) H5Adelete(obj, name);
  const hid_t space = H5Screate(H5S_SCALAR);
  const hid_t a = H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
  if (a >= 0) {
    H5Awrite(a, type, value);
    H5Aclose(a);
  }
  H5Sclose(space);
}

void PutString(hid_t obj, const char* name, const std::string& value) {
  const hid_t t = H5Tcopy(H5T_C_S1);
  H5Tset_size(t, value.size() + 1);
  PutAttr(obj, name, t, value.c_str());
  H5Tclose(t);
}

std::string GetString(hid_t obj, const char* name) {
  const hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
  if (a < 0) return "";
  const hid_t t = H5Aget_type(a);
  std::string s(H5Tget_size(t), '\0');
  if (H5Tget_class(t) == H5T_STRING && H5Tis_variable_str(t) <= 0) H5Aread(a, t, s.data());
  H5Tclose(t);
  H5Aclose(a);
  return s.substr(0, s.find('\0'));
}

// Writes member `member` (of `mtype`, `bytes` long) of row `row` of a compound
// dataset, leaving the other members as they are.
void PutMember(hid_t ds, hsize_t row, const char* member, hid_t mtype, const void* value) {
  const hid_t file_space = H5Dget_space(ds);
  hsize_t rows = 0;
  if (H5Sget_simple_extent_ndims(file_space) == 1)
    H5Sget_simple_extent_dims(file_space, &rows, nullptr);
  if (rows > 0) {
    row %= rows;
    const hsize_t one = 1;
    H5Sselect_hyperslab(file_space, H5S_SELECT_SET, &row, nullptr, &one, nullptr);
    const hid_t mem_space = H5Screate_simple(1, &one, nullptr);
    const hid_t rec = H5Tcreate(H5T_COMPOUND, H5Tget_size(mtype));
    H5Tinsert(rec, member, 0, mtype);
    H5Dwrite(ds, rec, mem_space, file_space, H5P_DEFAULT, value);
    H5Tclose(rec);
    H5Sclose(mem_space);
  }
  H5Sclose(file_space);
}

void EditIndexField(hid_t f, Program& prog) {
  const int layer = static_cast<int>(prog.Int(1));
  const hsize_t row = prog.Int(1);
  const int field = static_cast<int>(prog.Int(1) % 11);
  const uint64_t v = prog.Int(8);
  const hid_t ds = H5Dopen2(f, (LayerPath(layer % 5) + "/tensors").c_str(), H5P_DEFAULT);
  if (ds < 0) return;
  if (field == 0) {
    const int64_t off = static_cast<int64_t>(v);
    PutMember(ds, row, "offset", H5T_NATIVE_INT64, &off);
  } else if (field == 1) {
    const int32_t rank = static_cast<int32_t>(v);
    PutMember(ds, row, "rank", H5T_NATIVE_INT32, &rank);
  } else if (field <= 9) {
    // The whole shape array is one member: read it, change one entry.
    const hsize_t eight = 8;
    const hid_t arr = H5Tarray_create2(H5T_NATIVE_INT64, 1, &eight);
    int64_t shape[8] = {};
    const hid_t file_space = H5Dget_space(ds);
    hsize_t rows = 0;
    if (H5Sget_simple_extent_ndims(file_space) == 1)
      H5Sget_simple_extent_dims(file_space, &rows, nullptr);
    if (rows > 0) {
      const hsize_t r = row % rows, one = 1;
      H5Sselect_hyperslab(file_space, H5S_SELECT_SET, &r, nullptr, &one, nullptr);
      const hid_t mem_space = H5Screate_simple(1, &one, nullptr);
      const hid_t rec = H5Tcreate(H5T_COMPOUND, sizeof shape);
      H5Tinsert(rec, "shape", 0, arr);
      H5Dread(ds, rec, mem_space, file_space, H5P_DEFAULT, shape);
      shape[field - 2] = static_cast<int64_t>(v);
      H5Dwrite(ds, rec, mem_space, file_space, H5P_DEFAULT, shape);
      H5Tclose(rec);
      H5Sclose(mem_space);
    }
    H5Sclose(file_space);
    H5Tclose(arr);
  } else {
    char name[9] = {};
    std::memcpy(name, &v, 8);
    const hid_t str = H5Tcopy(H5T_C_S1);
    H5Tset_size(str, sizeof name);
    PutMember(ds, row, "name", str, name);
    H5Tclose(str);
  }
  H5Dclose(ds);
}

// Recreates `path` (a 1-D dataset) with `n` elements, chunked so that only
// what is written takes space; copies the first min(n, old, 2^20) elements
// and the checksum attribute.
void Resize(hid_t f, const std::string& path, hsize_t n) {
  const hid_t old = H5Dopen2(f, path.c_str(), H5P_DEFAULT);
  if (old < 0) return;
  const hid_t type = H5Dget_type(old);
  const hid_t old_space = H5Dget_space(old);
  hsize_t old_n = 0;
  if (H5Sget_simple_extent_ndims(old_space) == 1)
    H5Sget_simple_extent_dims(old_space, &old_n, nullptr);
  // An earlier edit may have made `old` huge (and sparse): copy at most 2^20.
  const hsize_t keep = std::min({n, old_n, hsize_t{1} << 20});
  std::vector<char> data(static_cast<size_t>(keep) * H5Tget_size(type));
  if (keep > 0) {
    const hsize_t zero = 0;
    H5Sselect_hyperslab(old_space, H5S_SELECT_SET, &zero, nullptr, &keep, nullptr);
    const hid_t mem = H5Screate_simple(1, &keep, nullptr);
    H5Dread(old, type, mem, old_space, H5P_DEFAULT, data.data());
    H5Sclose(mem);
  }
  uint64_t checksum = 0;
  const bool has_checksum = H5Aexists(old, "checksum") > 0;
  if (has_checksum) {
    const hid_t a = H5Aopen(old, "checksum", H5P_DEFAULT);
    H5Aread(a, H5T_NATIVE_UINT64, &checksum);
    H5Aclose(a);
  }
  H5Sclose(old_space);
  H5Dclose(old);
  H5Ldelete(f, path.c_str(), H5P_DEFAULT);

  const hid_t space = H5Screate_simple(1, &n, nullptr);
  const hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
  const hsize_t chunk = std::max<hsize_t>(1, std::min<hsize_t>(n, 1024));
  H5Pset_chunk(dcpl, 1, &chunk);
  const hid_t ds = H5Dcreate2(f, path.c_str(), type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
  if (ds >= 0) {
    if (keep > 0) {
      const hsize_t zero = 0;
      H5Sselect_hyperslab(space, H5S_SELECT_SET, &zero, nullptr, &keep, nullptr);
      const hid_t mem = H5Screate_simple(1, &keep, nullptr);
      H5Dwrite(ds, type, mem, space, H5P_DEFAULT, data.data());
      H5Sclose(mem);
    }
    if (has_checksum) PutAttr(ds, "checksum", H5T_NATIVE_UINT64, &checksum);
    H5Dclose(ds);
  }
  H5Pclose(dcpl);
  H5Sclose(space);
  H5Tclose(type);
}

// Applies the program to the open file; returns the truncation length (0: none).
uint64_t Apply(hid_t f, Program prog) {
  uint64_t truncate_to = 0;
  for (int ops = 0; !prog.done() && ops < 64; ++ops) {
    const int op = static_cast<int>(prog.Int(1) % 10);
    const hid_t meta = H5Gopen2(f, "/meta", H5P_DEFAULT);
    switch (op) {
      case 0: {
        const uint64_t a = prog.Int(1);
        const int64_t v = static_cast<int64_t>(prog.Int(8));
        if (meta < 0) break;
        const char* name = kIntAttrs[(a & 0x7f) % 5];
        if (a & 0x80) {
          PutString(meta, name, std::to_string(v));
        } else {
          PutAttr(meta, name, H5T_NATIVE_INT64, &v);
        }
        break;
      }
      case 1: {
        const char* name = kStrAttrs[prog.Int(1) % 3];
        const int mode = static_cast<int>(prog.Int(1) % 3);
        const size_t pos = prog.Int(2);
        const std::string bytes = prog.Text(prog.Int(1));
        if (meta < 0) break;
        std::string s = GetString(meta, name);
        if (mode == 0) {
          s = bytes;
        } else if (mode == 1 && !s.empty()) {
          s[pos % s.size()] = bytes.empty() ? '\0' : bytes[0];
        } else if (mode == 2) {
          s.resize(std::min(pos, s.size()));
        }
        PutString(meta, name, s.substr(0, s.find('\0')));
        break;
      }
      case 2:
        EditIndexField(f, prog);
        break;
      case 3: {
        const int layer = static_cast<int>(prog.Int(1) % 5);
        Resize(f, LayerPath(layer) + "/tensors", prog.Int(8) % (hsize_t{1} << 50));
        break;
      }
      case 4: {
        const int target = static_cast<int>(prog.Int(1) % 7);
        const int layer = static_cast<int>(prog.Int(1) % 5);
        const std::string path = target == 0   ? "/meta"
                                 : target == 1 ? "/layers"
                                 : target == 2 ? LayerPath(layer)
                                               : LayerPath(layer) + "/" + kDatasets[target - 3];
        H5Ldelete(f, path.c_str(), H5P_DEFAULT);
        break;
      }
      case 5: {
        const int layer = static_cast<int>(prog.Int(1) % 5);
        const int which = static_cast<int>(prog.Int(1) % 3);
        Resize(f, LayerPath(layer) + "/" + kDatasets[which], prog.Int(8) % (hsize_t{1} << 40));
        break;
      }
      case 6: {
        const int layer = static_cast<int>(prog.Int(1) % 5);
        const int which = static_cast<int>(prog.Int(1) % 3);
        const hsize_t at = prog.Int(4);
        const uint32_t bits = static_cast<uint32_t>(prog.Int(4));
        const hid_t ds =
            H5Dopen2(f, (LayerPath(layer) + "/" + kDatasets[which]).c_str(), H5P_DEFAULT);
        if (ds < 0) break;
        const hid_t space = H5Dget_space(ds);
        hsize_t n = 0;
        if (H5Sget_simple_extent_ndims(space) == 1) H5Sget_simple_extent_dims(space, &n, nullptr);
        if (n > 0) {
          const hsize_t i = at % n, one = 1;
          H5Sselect_hyperslab(space, H5S_SELECT_SET, &i, nullptr, &one, nullptr);
          const hid_t mem = H5Screate_simple(1, &one, nullptr);
          float v;
          std::memcpy(&v, &bits, sizeof v);
          H5Dwrite(ds, H5T_NATIVE_FLOAT, mem, space, H5P_DEFAULT, &v);
          H5Sclose(mem);
        }
        H5Sclose(space);
        H5Dclose(ds);
        break;
      }
      case 7: {
        const int layer = static_cast<int>(prog.Int(1) % 5);
        const int which = static_cast<int>(prog.Int(1) % 3);
        const uint64_t v = prog.Int(8);
        const hid_t ds =
            H5Dopen2(f, (LayerPath(layer) + "/" + kDatasets[which]).c_str(), H5P_DEFAULT);
        if (ds < 0) break;
        PutAttr(ds, "checksum", H5T_NATIVE_UINT64, &v);
        H5Dclose(ds);
        break;
      }
      case 8: {
        const hid_t g = H5Gcreate2(f, LayerPath(static_cast<int>(prog.Int(2))).c_str(), H5P_DEFAULT,
                                   H5P_DEFAULT, H5P_DEFAULT);
        if (g >= 0) H5Gclose(g);
        break;
      }
      default:
        truncate_to = std::max<uint64_t>(1, prog.Int(4));
        break;
    }
    if (meta >= 0) H5Gclose(meta);
  }
  return truncate_to;
}

// Host buffers for every layer's master, adam_m and adam_v (zeros), and the
// world-size-1 slices over them.
struct WholeLayers {
  std::vector<std::vector<float>> buf[3];
  static WholeLayers Of(const std::vector<LayerInfo>& layers) {
    WholeLayers w;
    for (const LayerInfo& info : layers) {
      for (auto& b : w.buf) b.emplace_back(static_cast<size_t>(info.size_elems));
    }
    return w;
  }
  std::vector<l2l::ckpt::LayerSlice> Slices(const std::vector<LayerInfo>& layers) {
    std::vector<l2l::ckpt::LayerSlice> slices;
    for (size_t l = 0; l < layers.size(); ++l) {
      slices.push_back({.offset_elems = 0,
                        .size_elems = layers[l].size_elems,
                        .master = buf[0][l].data(),
                        .adam_m = buf[1][l].data(),
                        .adam_v = buf[2][l].data(),
                        .checksummed = true});
    }
    return slices;
  }
};

// Everything a resume or a tool does with a checkpoint; errors are fine.
void ReadEverything(const std::string& path) {
  (void)l2l::ckpt::ReadMeta(MPI_COMM_SELF, path);
  (void)l2l::ckpt::ReadLayerInfos(MPI_COMM_SELF, path);
  {
    WholeLayers buf = WholeLayers::Of(g_base->layers);
    (void)l2l::ckpt::Load(MPI_COMM_SELF, path, g_base->layers, buf.Slices(g_base->layers), nullptr);
  }
  l2l::StatusOr<l2l::ckpt::Summary> s = l2l::ckpt::Inspect(path);
  (void)l2l::ckpt::Verify(path);
  const int layers = s.ok() ? static_cast<int>(s->layers.size()) : 5;
  for (int l = 0; l < layers; ++l) {
    (void)l2l::ckpt::ReadLayer(path, l, l2l::ckpt::LayerParts::kAll);
    (void)l2l::ckpt::StreamMaster(path, l,
                                  [](int64_t, int64_t, const float*) { return l2l::OkStatus(); });
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  MPI_Init(argc, argv);
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  g_base = new Base;
  g_base->dir = "checkpoint_fuzz_" + std::to_string(::getpid());
  std::atexit(Cleanup);
  l2l::StatusOr<l2l::config::Config> cfg = l2l::config::ParseConfig(kYaml, "checkpoint_fuzz", {});
  if (!cfg.ok()) Die(cfg.status().ToString());
  g_base->layers = l2l::ckpt::LayerInfosOf(l2l::model::DimsFromConfig(cfg->model));
  WholeLayers data = WholeLayers::Of(g_base->layers);
  for (int which = 0; which < 3; ++which) {
    for (std::vector<float>& v : data.buf[which]) {
      for (size_t i = 0; i < v.size(); ++i) {
        v[i] = 0.01f * static_cast<float>((i * 37 + which) % 101);
      }
    }
  }
  const std::vector<l2l::ckpt::LayerSlice> slices = data.Slices(g_base->layers);
  l2l::ckpt::Meta meta;
  meta.step = 3;
  meta.tokens_seen = 96;
  meta.seed = 7;
  meta.config_yaml = l2l::config::ToYaml(*cfg);
  meta.sampler_state = "seed=7 num_tokens=1000 vocab_size=20";
  const l2l::Status saved =
      l2l::ckpt::Save(MPI_COMM_SELF, g_base->dir, meta, g_base->layers, slices, 1, nullptr);
  if (!saved.ok()) Die(saved.ToString());
  g_base->file = l2l::ckpt::CheckpointPath(g_base->dir, 3);
  g_base->work = g_base->dir + "/work.h5";
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (!l2l::fs::CopyFile(g_base->file, g_base->work).ok()) Die("cannot copy " + g_base->file);
  const hid_t f = H5Fopen(g_base->work.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  if (f < 0) Die("cannot open " + g_base->work);
  const uint64_t truncate_to = Apply(f, Program{data, size});
  H5Fclose(f);
  if (truncate_to > 0 && ::truncate(g_base->work.c_str(), static_cast<off_t>(truncate_to)) != 0) {
    Die("cannot truncate " + g_base->work);
  }
  ReadEverything(g_base->work);
  // The unmodified copy must read back: a reader that refuses everything
  // would pass every other property.
  if (size == 0) {
    const l2l::Status v = l2l::ckpt::Verify(g_base->work);
    if (!v.ok()) Die("the unmodified checkpoint does not verify: " + v.ToString());
  }
  return 0;
}
