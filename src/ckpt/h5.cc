// HDF5 plumbing shared by the checkpoint writer, loader and verifier.
#include "h5.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "l2l/comm/mpi_comm.h"

namespace l2l::ckpt::internal {
namespace {

// The 8-byte signature at the start of every HDF5 superblock. The superblock
// sits at offset 0 or, after a user block, at 512, 1024, 2048, ...
constexpr unsigned char kHdf5Signature[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};

herr_t InnermostError(unsigned n, const H5E_error2_t* err, void* client) {
  auto* out = static_cast<std::string*>(client);
  if (n == 0 && err != nullptr && err->desc != nullptr) *out = err->desc;
  return 0;
}

// Local: NotFound / InvalidArgument / DataLoss when `path` is not a readable
// HDF5 file, judged by the signature alone.
Status CheckHdf5Signature(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return NotFound(path + ": no such file");
    return IoError(path + ": cannot stat (" + std::strerror(errno) + ")");
  }
  if (S_ISDIR(st.st_mode)) return InvalidArgument(path + ": is a directory, not a checkpoint file");
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return IoError(path + ": cannot open (" + std::strerror(errno) + ")");
  bool found = false;
  for (off_t at = 0; !found && at + 8 <= st.st_size; at = (at == 0 ? 512 : at * 2)) {
    unsigned char buf[8];
    if (::pread(fd, buf, sizeof buf, at) != static_cast<ssize_t>(sizeof buf)) break;
    found = std::memcmp(buf, kHdf5Signature, sizeof buf) == 0;
  }
  ::close(fd);
  if (!found) return DataLoss(path + ": not an HDF5 file");
  return OkStatus();
}

StatusOr<H5Id> OpenAttrChecked(hid_t obj, const char* name, H5T_class_t want,
                               const std::string& path, const std::string& where) {
  const htri_t exists = H5Aexists(obj, name);
  if (exists <= 0) return DataLoss(path + ": " + where + " has no attribute '" + name + "'");
  H5Id attr = OwnAttr(H5Aopen(obj, name, H5P_DEFAULT));
  if (!attr.valid())
    return DataLoss(path + ": " + where + ": cannot open attribute '" + name + "'");
  H5Id type = OwnType(H5Aget_type(attr.get()));
  H5Id space = OwnSpace(H5Aget_space(attr.get()));
  if (!type.valid() || !space.valid() || H5Tget_class(type.get()) != want ||
      H5Sget_simple_extent_npoints(space.get()) != 1) {
    return DataLoss(path + ": " + where + ": attribute '" + name + "' has the wrong type");
  }
  return attr;
}

template <typename T>
StatusOr<T> ReadIntAttr(hid_t obj, const char* name, hid_t mem_type, const std::string& path,
                        const std::string& where) {
  ASSIGN_OR_RETURN(H5Id attr, OpenAttrChecked(obj, name, H5T_INTEGER, path, where));
  T v{};
  if (H5Aread(attr.get(), mem_type, &v) < 0) {
    return DataLoss(path + ": " + where + ": cannot read attribute '" + name + "'");
  }
  return v;
}

Status WriteScalarAttr(hid_t obj, const char* name, hid_t file_type, hid_t mem_type,
                       const void* value) {
  H5Id space = OwnSpace(H5Screate(H5S_SCALAR));
  H5Id attr = OwnAttr(H5Acreate2(obj, name, file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT));
  if (!attr.valid() || H5Awrite(attr.get(), mem_type, value) < 0) {
    return IoError(std::string("cannot write attribute '") + name + "' (" + Hdf5ErrorSummary() +
                   ")");
  }
  return OkStatus();
}

// In-memory record of the tensor index (also the file layout, packed).
struct IndexType {
  size_t name_bytes = 0;  // fixed-length, NUL-terminated
  int max_rank = 0;
  size_t offset_at = 0, rank_at = 0, shape_at = 0, record_bytes = 0;
  H5Id type;

  static StatusOr<IndexType> Make(size_t name_bytes, int max_rank) {
    IndexType t;
    t.name_bytes = name_bytes;
    t.max_rank = max_rank;
    t.offset_at = (name_bytes + 7) / 8 * 8;
    t.rank_at = t.offset_at + 8;
    t.shape_at = t.rank_at + 8;
    t.record_bytes = t.shape_at + 8 * static_cast<size_t>(max_rank);
    H5Id str = OwnType(H5Tcopy(H5T_C_S1));
    const hsize_t dims[1] = {static_cast<hsize_t>(max_rank)};
    H5Id arr = OwnType(H5Tarray_create2(H5T_NATIVE_INT64, 1, dims));
    t.type = OwnType(H5Tcreate(H5T_COMPOUND, t.record_bytes));
    if (!str.valid() || !arr.valid() || !t.type.valid() || H5Tset_size(str.get(), name_bytes) < 0 ||
        H5Tset_strpad(str.get(), H5T_STR_NULLTERM) < 0 ||
        H5Tinsert(t.type.get(), "name", 0, str.get()) < 0 ||
        H5Tinsert(t.type.get(), "offset", t.offset_at, H5T_NATIVE_INT64) < 0 ||
        H5Tinsert(t.type.get(), "rank", t.rank_at, H5T_NATIVE_INT32) < 0 ||
        H5Tinsert(t.type.get(), "shape", t.shape_at, arr.get()) < 0) {
      return Internal("cannot build the tensor index type (" + Hdf5ErrorSummary() + ")");
    }
    return t;
  }
};

}  // namespace

void SilenceHdf5Errors() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

std::string Hdf5ErrorSummary() {
  std::string out;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, InnermostError, &out);
  return out.empty() ? "no HDF5 error detail" : out;
}

std::string LayerGroupName(int layer) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "/layers/%05d", layer);
  return buf;
}

std::string DatasetName(int layer, const char* leaf) { return LayerGroupName(layer) + "/" + leaf; }

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

std::string Hex64(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%016" PRIx64, v);
  return buf;
}

StatusOr<H5Id> MpioFileAccess(MPI_Comm comm) {
  H5Id fapl = OwnPlist(H5Pcreate(H5P_FILE_ACCESS));
  if (!fapl.valid() || H5Pset_fapl_mpio(fapl.get(), comm, MPI_INFO_NULL) < 0 ||
      H5Pset_libver_bounds(fapl.get(), H5F_LIBVER_V18, H5F_LIBVER_LATEST) < 0) {
    return Internal("cannot set up MPI-IO file access (" + Hdf5ErrorSummary() + ")");
  }
  return fapl;
}

StatusOr<H5Id> DataTransfer() {
  H5Id dxpl = OwnPlist(H5Pcreate(H5P_DATASET_XFER));
  if (!dxpl.valid() || H5Pset_dxpl_mpio(dxpl.get(), H5FD_MPIO_INDEPENDENT) < 0) {
    return Internal("cannot set up MPI-IO data transfer (" + Hdf5ErrorSummary() + ")");
  }
  return dxpl;
}

StatusOr<H5Id> OpenForRead(MpiComm& comm, const std::string& path) {
  SilenceHdf5Errors();
  RETURN_IF_ERROR(comm.Agree(comm.rank() == 0 ? CheckHdf5Signature(path) : OkStatus()));
  ASSIGN_OR_RETURN(H5Id fapl, MpioFileAccess(comm.handle()));
  H5Id file = OwnFile(H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.get()));
  Status st = file.valid()
                  ? OkStatus()
                  : DataLoss(path + ": file is truncated or corrupt (HDF5 could not open it)");
  RETURN_IF_ERROR(comm.Agree(st));
  return file;
}

Status WriteStringAttr(hid_t obj, const char* name, const std::string& value) {
  H5Id type = OwnType(H5Tcopy(H5T_C_S1));
  if (!type.valid() || H5Tset_size(type.get(), value.size() + 1) < 0 ||
      H5Tset_strpad(type.get(), H5T_STR_NULLTERM) < 0) {
    return Internal("cannot build a string type (" + Hdf5ErrorSummary() + ")");
  }
  return WriteScalarAttr(obj, name, type.get(), type.get(), value.c_str());
}

Status WriteInt64Attr(hid_t obj, const char* name, int64_t value) {
  return WriteScalarAttr(obj, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &value);
}

Status WriteUint64Attr(hid_t obj, const char* name, uint64_t value) {
  return WriteScalarAttr(obj, name, H5T_STD_U64LE, H5T_NATIVE_UINT64, &value);
}

StatusOr<std::string> ReadStringAttr(hid_t obj, const char* name, const std::string& path,
                                     const std::string& where) {
  ASSIGN_OR_RETURN(H5Id attr, OpenAttrChecked(obj, name, H5T_STRING, path, where));
  H5Id type = OwnType(H5Aget_type(attr.get()));
  const auto unreadable = [&] {
    return DataLoss(path + ": " + where + ": cannot read attribute '" + name + "'");
  };
  if (H5Tis_variable_str(type.get()) > 0) {
    // Written by another tool (h5py writes variable-length strings).
    H5Id mem = OwnType(H5Tcopy(H5T_C_S1));
    H5Tset_size(mem.get(), H5T_VARIABLE);
    char* text = nullptr;
    if (H5Aread(attr.get(), mem.get(), &text) < 0) return unreadable();
    std::string out = text ? text : "";
    H5free_memory(text);
    return out;
  }
  const size_t size = H5Tget_size(type.get());
  if (size == 0) return unreadable();
  std::string buf(size, '\0');
  if (H5Aread(attr.get(), type.get(), buf.data()) < 0) return unreadable();
  buf.resize(std::strlen(buf.c_str()));  // NUL-terminated or NUL-padded
  return buf;
}

StatusOr<int64_t> ReadInt64Attr(hid_t obj, const char* name, const std::string& path,
                                const std::string& where) {
  return ReadIntAttr<int64_t>(obj, name, H5T_NATIVE_INT64, path, where);
}

StatusOr<uint64_t> ReadUint64Attr(hid_t obj, const char* name, const std::string& path,
                                  const std::string& where) {
  return ReadIntAttr<uint64_t>(obj, name, H5T_NATIVE_UINT64, path, where);
}

Status WriteTensorIndex(hid_t group, const std::vector<TensorEntry>& tensors, int comm_rank,
                        hid_t dxpl) {
  size_t longest = 0;
  for (const TensorEntry& t : tensors) longest = std::max(longest, t.name.size());
  ASSIGN_OR_RETURN(IndexType it, IndexType::Make(longest + 1, kMaxTensorRank));
  std::vector<unsigned char> records(std::max<size_t>(1, tensors.size()) * it.record_bytes, 0);
  for (size_t i = 0; i < tensors.size(); ++i) {
    unsigned char* rec = records.data() + i * it.record_bytes;
    const TensorEntry& t = tensors[i];
    std::memcpy(rec, t.name.data(), t.name.size());
    std::memcpy(rec + it.offset_at, &t.offset_elems, 8);
    const int32_t rank = static_cast<int32_t>(t.shape.size());
    std::memcpy(rec + it.rank_at, &rank, 4);
    // A rank-0 (scalar) tensor has an empty shape whose data() may be null:
    // memcpy from null is undefined even for 0 bytes (UBSan).
    if (!t.shape.empty()) std::memcpy(rec + it.shape_at, t.shape.data(), 8 * t.shape.size());
  }
  // The file keeps the packed form of the record (no alignment holes).
  H5Id file_type = OwnType(H5Tcopy(it.type.get()));
  const hsize_t dims[1] = {tensors.size()};
  H5Id space = OwnSpace(H5Screate_simple(1, dims, nullptr));
  H5Id dcpl = OwnPlist(H5Pcreate(H5P_DATASET_CREATE));
  if (!file_type.valid() || H5Tpack(file_type.get()) < 0 || !space.valid() || !dcpl.valid() ||
      H5Pset_fill_time(dcpl.get(), H5D_FILL_TIME_NEVER) < 0) {
    return Internal("cannot build the tensor index dataspace (" + Hdf5ErrorSummary() + ")");
  }
  H5Id ds = OwnDataset(H5Dcreate2(group, kIndexDataset, file_type.get(), space.get(), H5P_DEFAULT,
                                  dcpl.get(), H5P_DEFAULT));
  if (!ds.valid()) return IoError("cannot create the tensor index (" + Hdf5ErrorSummary() + ")");
  if (tensors.empty()) return OkStatus();
  // Collective: rank 0 writes the records, the other ranks select nothing.
  H5Id mem = OwnSpace(H5Screate_simple(1, dims, nullptr));
  if (comm_rank != 0) {
    H5Sselect_none(mem.get());
    H5Sselect_none(space.get());
  }
  if (H5Dwrite(ds.get(), it.type.get(), mem.get(), space.get(), dxpl, records.data()) < 0) {
    return IoError("cannot write the tensor index (" + Hdf5ErrorSummary() + ")");
  }
  return OkStatus();
}

StatusOr<std::vector<TensorEntry>> ReadTensorIndex(hid_t group, const std::string& path,
                                                   const std::string& dataset_name) {
  const auto bad = [&](const std::string& what) {
    return DataLoss(path + ": tensor index " + dataset_name + " " + what);
  };
  if (H5Lexists(group, kIndexDataset, H5P_DEFAULT) <= 0) {
    return DataLoss(path + ": missing dataset " + dataset_name);
  }
  H5Id ds = OwnDataset(H5Dopen2(group, kIndexDataset, H5P_DEFAULT));
  if (!ds.valid()) return bad("cannot be opened");
  H5Id type = OwnType(H5Dget_type(ds.get()));
  H5Id space = OwnSpace(H5Dget_space(ds.get()));
  if (!type.valid() || !space.valid() || H5Tget_class(type.get()) != H5T_COMPOUND ||
      H5Sget_simple_extent_ndims(space.get()) != 1) {
    return bad("is not a 1-D compound dataset");
  }
  const int name_i = H5Tget_member_index(type.get(), "name");
  const int shape_i = H5Tget_member_index(type.get(), "shape");
  if (name_i < 0 || shape_i < 0 || H5Tget_member_index(type.get(), "offset") < 0 ||
      H5Tget_member_index(type.get(), "rank") < 0) {
    return bad("lacks one of the fields name, offset, rank, shape");
  }
  H5Id name_type = OwnType(H5Tget_member_type(type.get(), name_i));
  H5Id shape_type = OwnType(H5Tget_member_type(type.get(), shape_i));
  hsize_t max_rank = 0;
  if (H5Tget_class(name_type.get()) != H5T_STRING || H5Tis_variable_str(name_type.get()) != 0 ||
      H5Tget_class(shape_type.get()) != H5T_ARRAY || H5Tget_array_ndims(shape_type.get()) != 1 ||
      H5Tget_array_dims2(shape_type.get(), &max_rank) < 0 || max_rank > 64) {
    return bad("has fields of the wrong type");
  }
  ASSIGN_OR_RETURN(IndexType it,
                   IndexType::Make(H5Tget_size(name_type.get()), static_cast<int>(max_rank)));
  hsize_t n = 0;
  H5Sget_simple_extent_dims(space.get(), &n, nullptr);
  // The row count comes from the file: before allocating for it, it must fit
  // in what the dataset stores (a header edited to 2^40 rows would be a
  // bad_alloc).
  const hsize_t stored = H5Dget_storage_size(ds.get());
  // The file's row size (its packed type), not the in-memory record's, which
  // has alignment holes.
  if (n > (hsize_t{1} << 24) || n * H5Tget_size(type.get()) > stored) {
    return bad("claims " + std::to_string(n) + " entries, more than its " + std::to_string(stored) +
               " stored bytes hold");
  }
  std::vector<unsigned char> records(std::max<hsize_t>(1, n) * it.record_bytes, 0);
  if (n > 0 &&
      H5Dread(ds.get(), it.type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, records.data()) < 0) {
    return bad("cannot be read");
  }
  std::vector<TensorEntry> out(n);
  for (hsize_t i = 0; i < n; ++i) {
    const unsigned char* rec = records.data() + i * it.record_bytes;
    TensorEntry& t = out[i];
    t.name.assign(reinterpret_cast<const char*>(rec),
                  strnlen(reinterpret_cast<const char*>(rec), it.name_bytes));
    std::memcpy(&t.offset_elems, rec + it.offset_at, 8);
    int32_t rank = 0;
    std::memcpy(&rank, rec + it.rank_at, 4);
    if (rank < 0 || rank > it.max_rank) {
      return bad("entry " + std::to_string(i) + " has rank " + std::to_string(rank));
    }
    t.shape.resize(rank);
    if (rank > 0) std::memcpy(t.shape.data(), rec + it.shape_at, 8 * static_cast<size_t>(rank));
  }
  return out;
}

StatusOr<int64_t> OpenFlatDataset(hid_t file, int layer, const char* leaf, const std::string& path,
                                  H5Id* dataset) {
  const std::string group = LayerGroupName(layer);
  const std::string name = DatasetName(layer, leaf);
  if (H5Lexists(file, kLayersGroup, H5P_DEFAULT) <= 0) {
    return DataLoss(path + ": missing group " + std::string(kLayersGroup));
  }
  if (H5Lexists(file, group.c_str(), H5P_DEFAULT) <= 0) {
    return DataLoss(path + ": missing group " + group);
  }
  if (H5Lexists(file, name.c_str(), H5P_DEFAULT) <= 0) {
    return DataLoss(path + ": missing dataset " + name);
  }
  H5Id ds = OwnDataset(H5Dopen2(file, name.c_str(), H5P_DEFAULT));
  if (!ds.valid()) return DataLoss(path + ": dataset " + name + " cannot be opened");
  H5Id type = OwnType(H5Dget_type(ds.get()));
  H5Id space = OwnSpace(H5Dget_space(ds.get()));
  if (!type.valid() || !space.valid() || H5Tget_class(type.get()) != H5T_FLOAT ||
      H5Tget_size(type.get()) != 4 || H5Sget_simple_extent_ndims(space.get()) != 1) {
    return DataLoss(path + ": dataset " + name + " is not a 1-D float32 dataset");
  }
  hsize_t n = 0;
  H5Sget_simple_extent_dims(space.get(), &n, nullptr);
  *dataset = std::move(ds);
  return static_cast<int64_t>(n);
}

namespace {

// Selects [offset, offset + n) of `file_space` and returns a matching memory
// space; n == 0 selects nothing in both.
StatusOr<H5Id> SelectRange(hid_t file_space, int64_t offset_elems, int64_t n_elems) {
  if (n_elems == 0) {
    const hsize_t one[1] = {1};
    H5Id mem = OwnSpace(H5Screate_simple(1, one, nullptr));
    if (!mem.valid() || H5Sselect_none(mem.get()) < 0 || H5Sselect_none(file_space) < 0) {
      return Internal("cannot select nothing (" + Hdf5ErrorSummary() + ")");
    }
    return mem;
  }
  const hsize_t start[1] = {static_cast<hsize_t>(offset_elems)};
  const hsize_t count[1] = {static_cast<hsize_t>(n_elems)};
  H5Id mem = OwnSpace(H5Screate_simple(1, count, nullptr));
  if (!mem.valid() ||
      H5Sselect_hyperslab(file_space, H5S_SELECT_SET, start, nullptr, count, nullptr) < 0) {
    return Internal("cannot select elements [" + std::to_string(offset_elems) + ", " +
                    std::to_string(offset_elems + n_elems) + ") (" + Hdf5ErrorSummary() + ")");
  }
  return mem;
}

int64_t g_max_io_chunk_elems = kMaxIoChunkElems;

StatusOr<int64_t> AgreedRounds(MPI_Comm comm, int64_t n_elems, int64_t chunk_elems) {
  int64_t mine = (n_elems + chunk_elems - 1) / chunk_elems, rounds = 0;
  if (MPI_Allreduce(&mine, &rounds, 1, MPI_INT64_T, MPI_MAX, comm) != MPI_SUCCESS) {
    return Internal("MPI_Allreduce of the I/O round count failed");
  }
  return rounds;
}

}  // namespace

void SetMaxIoChunkElemsForTesting(int64_t n) {
  g_max_io_chunk_elems = n > 0 ? std::min(n, kMaxIoChunkElems) : kMaxIoChunkElems;
}

Status WriteRange(MPI_Comm comm, hid_t dataset, hid_t dxpl, int64_t offset_elems, int64_t n_elems,
                  const float* data) {
  const int64_t chunk_elems = g_max_io_chunk_elems;
  ASSIGN_OR_RETURN(const int64_t rounds, AgreedRounds(comm, n_elems, chunk_elems));
  H5Id fspace = OwnSpace(H5Dget_space(dataset));
  Status first_error;
  float dummy = 0;
  for (int64_t r = 0; r < rounds; ++r) {
    // After a local failure this rank keeps joining the collective calls with
    // an empty selection so that no other rank is left waiting.
    const int64_t begin = r * chunk_elems;
    const int64_t count =
        first_error.ok() ? std::clamp<int64_t>(n_elems - begin, 0, chunk_elems) : 0;
    auto mem = SelectRange(fspace.get(), offset_elems + begin, count);
    if (!mem.ok()) return mem.status();
    const void* src = count > 0 ? static_cast<const void*>(data + begin) : &dummy;
    if (H5Dwrite(dataset, H5T_NATIVE_FLOAT, mem->get(), fspace.get(), dxpl, src) < 0 &&
        first_error.ok()) {
      first_error = IoError("write failed (" + Hdf5ErrorSummary() + ")");
    }
  }
  return first_error;
}

Status WriteRangeFrom(MPI_Comm comm, hid_t dataset, hid_t dxpl, int64_t offset_elems,
                      int64_t n_elems, int64_t chunk_elems, const RangeFill& fill) {
  chunk_elems = std::min(chunk_elems, g_max_io_chunk_elems);
  ASSIGN_OR_RETURN(const int64_t rounds, AgreedRounds(comm, n_elems, chunk_elems));
  H5Id fspace = OwnSpace(H5Dget_space(dataset));
  std::vector<float> buf(static_cast<size_t>(std::max<int64_t>(1, std::min(n_elems, chunk_elems))));
  Status first_error;
  for (int64_t r = 0; r < rounds; ++r) {
    const int64_t begin = r * chunk_elems;
    int64_t count = first_error.ok() ? std::clamp<int64_t>(n_elems - begin, 0, chunk_elems) : 0;
    if (count > 0) {
      first_error = fill(offset_elems + begin, count, buf.data());
      if (!first_error.ok()) count = 0;
    }
    auto mem = SelectRange(fspace.get(), offset_elems + begin, count);
    if (!mem.ok()) return mem.status();
    if (H5Dwrite(dataset, H5T_NATIVE_FLOAT, mem->get(), fspace.get(), dxpl, buf.data()) < 0 &&
        first_error.ok()) {
      first_error = IoError("write failed (" + Hdf5ErrorSummary() + ")");
    }
  }
  return first_error;
}

Status ReadRange(MPI_Comm comm, hid_t dataset, hid_t dxpl, int64_t offset_elems, int64_t n_elems,
                 float* out, int64_t chunk_elems, RangeSink sink, void* ctx) {
  chunk_elems = std::min(chunk_elems, g_max_io_chunk_elems);
  ASSIGN_OR_RETURN(const int64_t rounds, AgreedRounds(comm, n_elems, chunk_elems));
  H5Id fspace = OwnSpace(H5Dget_space(dataset));
  std::vector<float> scratch;
  if (out == nullptr) scratch.resize(static_cast<size_t>(std::min(n_elems, chunk_elems)) + 1);
  Status first_error;
  for (int64_t r = 0; r < rounds; ++r) {
    const int64_t begin = r * chunk_elems;
    const int64_t count =
        first_error.ok() ? std::clamp<int64_t>(n_elems - begin, 0, chunk_elems) : 0;
    auto mem = SelectRange(fspace.get(), offset_elems + begin, count);
    if (!mem.ok()) return mem.status();
    float* dst = out != nullptr && count > 0 ? out + begin : scratch.data();
    float dummy = 0;
    if (dst == nullptr) dst = &dummy;
    if (H5Dread(dataset, H5T_NATIVE_FLOAT, mem->get(), fspace.get(), dxpl, dst) < 0) {
      if (first_error.ok()) first_error = IoError("read failed (" + Hdf5ErrorSummary() + ")");
      continue;
    }
    if (count > 0 && sink != nullptr) sink(ctx, offset_elems + begin, dst, count);
  }
  return first_error;
}

}  // namespace l2l::ckpt::internal
