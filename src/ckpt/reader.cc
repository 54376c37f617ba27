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

namespace {

// An open checkpoint (its /meta checked) and the layer `layer` of it.
struct OpenLayer {
  H5Id file;
  LayerInfo info;
};
StatusOr<OpenLayer> OpenCheckpointLayer(MpiComm& comm, const std::string& path, int layer) {
  ASSIGN_OR_RETURN(H5Id file, internal::OpenForRead(comm, path));
  RETURN_IF_ERROR(internal::ReadMetaFromFile(file.get(), path).status());
  ASSIGN_OR_RETURN(std::vector<LayerInfo> layers,
                   internal::ReadLayerInfosFromFile(file.get(), path));
  if (layer < 0 || layer >= static_cast<int>(layers.size())) {
    return InvalidArgument(path + ": no layer " + std::to_string(layer) + " (the checkpoint has " +
                           std::to_string(layers.size()) + " layers)");
  }
  return OpenLayer{std::move(file), layers[layer]};
}

}  // namespace

StatusOr<LayerData> ReadLayer(const std::string& path, int layer, LayerParts parts) {
  MpiComm comm(MPI_COMM_SELF);
  ASSIGN_OR_RETURN(OpenLayer open, OpenCheckpointLayer(comm, path, layer));
  LayerData out;
  out.info = open.info;
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
  RETURN_IF_ERROR(internal::ReadLayerAndCheck(comm, open.file.get(), dxpl.get(), path, layer, slice,
                                              internal::ReadTarget::kSliceBuffers, parts, nullptr));
  return out;
}

Status StreamMaster(const std::string& path, int layer, const PieceVisitor& visit) {
  MpiComm comm(MPI_COMM_SELF);
  ASSIGN_OR_RETURN(OpenLayer open, OpenCheckpointLayer(comm, path, layer));
  const std::string name = internal::DatasetName(layer, internal::kFlatDatasets[0]);
  H5Id ds;
  RETURN_IF_ERROR(
      internal::OpenFlatDataset(open.file.get(), layer, internal::kFlatDatasets[0], path, &ds)
          .status());
  ASSIGN_OR_RETURN(
      const uint64_t stored,
      internal::ReadUint64Attr(ds.get(), internal::kChecksumAttr, path, "dataset " + name));
  struct Stream {
    const PieceVisitor* visit;
    uint64_t sum = 0;
    Status status;
    static void Piece(void* ctx, int64_t offset, const float* data, int64_t n) {
      auto* s = static_cast<Stream*>(ctx);
      s->sum += DatasetChecksum(data, offset, n);
      if (s->status.ok()) s->status = (*s->visit)(offset, n, data);
    }
  } stream{&visit, 0, OkStatus()};
  ASSIGN_OR_RETURN(H5Id dxpl, internal::DataTransfer());
  Status read = internal::ReadRange(comm.handle(), ds.get(), dxpl.get(), 0, open.info.size_elems,
                                    nullptr, internal::kPieceElems, Stream::Piece, &stream);
  if (!read.ok()) return IoError(path + ": reading " + name + ": " + read.message());
  RETURN_IF_ERROR(stream.status);
  if (stream.sum != stored) {
    return DataLoss(path + ": dataset " + name + " checksum mismatch (stored " +
                    internal::Hex64(stored) + ", computed " + internal::Hex64(stream.sum) + ")");
  }
  return OkStatus();
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
