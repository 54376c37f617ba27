// Single-process access to a checkpoint, for tools (l2l-ckpt) and tests.
//
// Every function here is local: it opens the file on MPI_COMM_SELF (MPI must
// be initialised, e.g. by l2l::MpiRuntime) and may be called on any one rank.
// Errors are one line naming the file and what is wrong, with the codes of
// checkpoint.h: NotFound (missing file), DataLoss (not HDF5, truncated,
// missing group/dataset/attribute, checksum mismatch, inconsistent index),
// FailedPrecondition (a newer format version), InvalidArgument (bad request).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "l2l/ckpt/checkpoint.h"
#include "l2l/core/status.h"

namespace l2l::ckpt {

// A path given to a tool: a directory means the checkpoint its `latest`
// names (FindLatest), anything else is taken as the checkpoint file itself.
StatusOr<std::string> ResolveCheckpoint(const std::string& file_or_dir);

// Which of a layer's flat datasets to read.
enum class LayerParts {
  kMasterOnly,  // fp32 master weights
  kAll,         // master, adam_m, adam_v
};

// One whole layer in host memory.
struct LayerData {
  LayerInfo info;
  std::vector<float> master;  // [info.size_elems]
  std::vector<float> adam_m;  // [info.size_elems], empty with kMasterOnly
  std::vector<float> adam_v;  // [info.size_elems], empty with kMasterOnly
};

// Reads layer `layer` (InvalidArgument if out of range) and verifies the
// checksum of every dataset it reads.
StatusOr<LayerData> ReadLayer(const std::string& path, int layer, LayerParts parts);

// Streams layer `layer`'s fp32 master weights front to back in pieces of at
// most 16 MiB: visit(offset_elems, n, values), `values` valid during the call
// only. Then checks the dataset's checksum: DataLoss if it differs, reported
// after every piece was visited (a caller that wrote them out must discard
// its output). A visitor error ends the visits (the rest of the layer is
// still read) and is returned. Memory: one piece, whatever the layer's size.
using PieceVisitor = std::function<Status(int64_t offset_elems, int64_t n, const float* values)>;
Status StreamMaster(const std::string& path, int layer, const PieceVisitor& visit);

// What `l2l-ckpt inspect` prints. Reads /meta and the layer structure only
// (no flat data, no checksums: see Verify).
struct Summary {
  std::string path;
  int format_version = 0;
  Meta meta;
  std::vector<LayerInfo> layers;
  int64_t num_parameters = 0;  // sum of the tensors' elements (alignment padding excluded)
  int64_t flat_elems = 0;      // sum of the layers' flat sizes (padding included)
  int64_t file_bytes = 0;      // size of the file on disk
};
StatusOr<Summary> Inspect(const std::string& path);

// Checks everything: /meta (format, version, every attribute), every layer's
// group, its three datasets (1-D float32, equal sizes) and tensor index
// (consistent with the size), and every dataset's checksum against its data.
// Returns the first problem found, or OK.
Status Verify(const std::string& path);

// The export name of tensor `tensor` of layer `layer` in a model of
// `num_layers` layers: layer 0 -> "embedding.<tensor>", the last layer ->
// "head.<tensor>", layers 1..num_layers-2 -> "blocks.<layer-1>.<tensor>".
std::string ExportTensorName(int num_layers, int layer, const std::string& tensor);

}  // namespace l2l::ckpt
