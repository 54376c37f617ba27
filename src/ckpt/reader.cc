// Single-process checkpoint access for tools: resolve, read a layer, inspect,
// verify. Everything runs on MPI_COMM_SELF through the same code paths as the
// collective loader, so a file the tools accept is one Load accepts.
#include "l2l/ckpt/reader.h"

#include <sys/stat.h>

#include "h5.h"
#include "l2l/comm/mpi_comm.h"

namespace l2l::ckpt {

using internal::H5Id;

StatusOr<std::string> ResolveCheckpoint(const std::string& file_or_dir) {
  struct stat st;
  if (::stat(file_or_dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    return FindLatest(file_or_dir);
  }
  if (::stat(file_or_dir.c_str(), &st) != 0) return NotFound(file_or_dir + ": no such file");
  return file_or_dir;
}

std::string ExportTensorName(int num_layers, int layer, const std::string& tensor) {
  if (layer == 0) return "embedding." + tensor;
  if (layer == num_layers - 1) return "head." + tensor;
  return "blocks." + std::to_string(layer - 1) + "." + tensor;
}

StatusOr<LayerData> ReadLayer(const std::string& path, int layer, LayerParts parts) {
  MpiComm comm(MPI_COMM_SELF);
  ASSIGN_OR_RETURN(H5Id file, internal::OpenForRead(comm, path));
  RETURN_IF_ERROR(internal::ReadMetaFromFile(file.get(), path).status());
  ASSIGN_OR_RETURN(std::vector<LayerInfo> layers,
                   internal::ReadLayerInfosFromFile(file.get(), path));
  if (layer < 0 || layer >= static_cast<int>(layers.size())) {
    return InvalidArgument(path + ": no layer " + std::to_string(layer) + " (the checkpoint has " +
                           std::to_string(layers.size()) + " layers)");
  }
  LayerData out;
  out.info = layers[layer];
  const size_t n = static_cast<size_t>(out.info.size_elems);
  out.master.resize(n);
  if (parts == LayerParts::kAll) {
    out.adam_m.resize(n);
    out.adam_v.resize(n);
  }
  LayerSlice slice{.offset_elems = 0,
                   .size_elems = out.info.size_elems,
                   .master = out.master.data(),
                   .adam_m = out.adam_m.data(),
                   .adam_v = out.adam_v.data(),
                   .checksummed = true};
  ASSIGN_OR_RETURN(H5Id dxpl, internal::DataTransfer());
  RETURN_IF_ERROR(internal::ReadLayerAndCheck(comm, file.get(), dxpl.get(), path, layer, slice,
                                              internal::ReadTarget::kSliceBuffers, parts, nullptr));
  return out;
}

StatusOr<Summary> Inspect(const std::string& path) {
  MpiComm comm(MPI_COMM_SELF);
  ASSIGN_OR_RETURN(H5Id file, internal::OpenForRead(comm, path));
  Summary s;
  s.path = path;
  ASSIGN_OR_RETURN(s.meta, internal::ReadMetaFromFile(file.get(), path));
  {
    H5Id g = internal::OwnGroup(H5Gopen2(file.get(), internal::kMetaGroup, H5P_DEFAULT));
    ASSIGN_OR_RETURN(const int64_t version,
                     internal::ReadInt64Attr(g.get(), "version", path, "/meta"));
    s.format_version = static_cast<int>(version);
  }
  ASSIGN_OR_RETURN(s.layers, internal::ReadLayerInfosFromFile(file.get(), path));
  for (const LayerInfo& l : s.layers) {
    s.flat_elems += l.size_elems;
    for (const TensorEntry& t : l.tensors) {
      int64_t n = 1;
      for (int64_t d : t.shape) n *= d;
      s.num_parameters += n;
    }
  }
  struct stat st;
  if (::stat(path.c_str(), &st) == 0) s.file_bytes = st.st_size;
  return s;
}

Status Verify(const std::string& path) {
  MpiComm comm(MPI_COMM_SELF);
  ASSIGN_OR_RETURN(H5Id file, internal::OpenForRead(comm, path));
  RETURN_IF_ERROR(internal::ReadMetaFromFile(file.get(), path).status());
  ASSIGN_OR_RETURN(std::vector<LayerInfo> layers,
                   internal::ReadLayerInfosFromFile(file.get(), path));
  ASSIGN_OR_RETURN(H5Id dxpl, internal::DataTransfer());
  for (int l = 0; l < static_cast<int>(layers.size()); ++l) {
    const LayerSlice whole{.offset_elems = 0, .size_elems = layers[l].size_elems};
    RETURN_IF_ERROR(internal::ReadLayerAndCheck(comm, file.get(), dxpl.get(), path, l, whole,
                                                internal::ReadTarget::kChecksumOnly,
                                                LayerParts::kAll, nullptr));
  }
  return OkStatus();
}

}  // namespace l2l::ckpt
