// Partitioned HDF5 checkpoints (DESIGN §6). One file per checkpoint, written
// collectively by every rank with parallel HDF5 (MPI-IO); each rank writes
// and reads only its own hyperslabs, so loading at another world size is just
// reading other hyperslabs (native resharding).
//
// Directory protocol (crash safety): a save writes
// `<dir>/.tmp-step-<step 8 digits>.h5`, closes it, re-opens it and verifies every dataset's
// checksum, fsyncs it, renames it to `<dir>/step-<step 8 digits>.h5`, then replaces `<dir>/latest`
// (a one-line text file naming the checkpoint file) by write-to-temp + rename.
// Only after that are older checkpoints pruned to `keep_last` and stale
// leftovers of interrupted saves (`.tmp-step-*.h5`, `.tmp-latest`; no other
// name) removed. A crash at any moment leaves the previous checkpoint
// intact, and `latest` always names a complete file. One writer per
// directory: the trainer holds `<dir>/.lock` (fs::ExclusiveLock) for its
// run, and refuses a directory holding checkpoints it did not resume from.
//
// File layout (format "l2l-checkpoint", version 1; see docs/checkpoint-format.md):
//   /meta                      group; attributes: format, version, step,
//                              tokens_seen, world_size, seed, config (YAML),
//                              sampler_state
//   /layers/<l:05d>/master     float32 [size_elems]  fp32 master weights
//   /layers/<l:05d>/adam_m     float32 [size_elems]  AdamW first moment
//   /layers/<l:05d>/adam_v     float32 [size_elems]  AdamW second moment
//       each with attribute `checksum` (uint64, see DatasetChecksum)
//   /layers/<l:05d>/tensors    the layer's tensor index: name, offset (elements
//                              into the flat datasets) and shape of each tensor
//                              (compound dataset: name fixed-length string,
//                              offset int64, rank int32, shape int64[kMaxTensorRank])
//
// All functions returning Status are collective over `comm` unless marked
// local; errors are agreed across ranks before they are returned (every rank
// returns the same Status). Call from the thread that initialised MPI (HDF5
// here is not thread-safe); HDF5's own error printing is switched off, errors
// come back as one-line Status messages naming the file.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "l2l/core/status.h"

namespace l2l::ckpt {

inline constexpr const char* kFormatName = "l2l-checkpoint";
inline constexpr int kFormatVersion = 1;
// Longest tensor shape the index stores (Save rejects longer ones).
inline constexpr int kMaxTensorRank = 8;

struct Meta {
  int64_t step = 0;  // completed optimizer steps
  int64_t tokens_seen = 0;
  // Ranks that wrote the file. ReadMeta fills it in; Save ignores it and
  // records the size of its communicator.
  int world_size = 0;
  uint64_t seed = 0;
  std::string config_yaml;    // the effective config (config::ToYaml)
  std::string sampler_state;  // data::SamplerState::ToString()
};

struct TensorEntry {
  std::string name;
  int64_t offset_elems = 0;
  std::vector<int64_t> shape;
  bool operator==(const TensorEntry&) const = default;
};

// A layer's flat buffer: its unpadded size and tensor index.
struct LayerInfo {
  int64_t size_elems = 0;
  std::vector<TensorEntry> tensors;
};

// This rank's part of one layer: elements [offset_elems, offset_elems +
// size_elems) of the unpadded flat buffer, in host memory (not owned). For a
// save the ranks' slices must tile [0, size_elems) exactly (no overlap); for a
// load they may overlap (a resident replica reads the whole layer), and
// `checksummed` marks the slices that tile the layer for the checksum
// verification.
struct LayerSlice {
  int64_t offset_elems = 0;
  int64_t size_elems = 0;
  float* master = nullptr;
  float* adam_m = nullptr;
  float* adam_v = nullptr;
  bool checksummed = true;
};

struct IoStats {
  double seconds = 0;  // wall time of the whole save or load (incl. verification)
  int64_t bytes = 0;   // dataset bytes written or read, all ranks
  double gb_per_s() const { return seconds > 0 ? bytes / seconds / 1e9 : 0; }
};

// Checksum of elements [offset, offset + n) of a dataset: the wrapping sum of
// Mix64(bits(x_i) ^ Mix64(i)) over global indices i. Sums of slices that tile
// a dataset add up to the dataset's checksum at any world size. Local.
uint64_t DatasetChecksum(const float* x, int64_t offset_elems, int64_t n);

// Path of the checkpoint file for `step` in `dir`. Local.
std::string CheckpointPath(const std::string& dir, int64_t step);

// Saves one checkpoint with the directory protocol above. `layers` and the
// per-layer `slices` are indexed by layer. Creates `dir` if needed.
// `layers` and `meta` must be identical on every rank and the slices must tile
// each layer exactly (InvalidArgument otherwise, checked before anything is
// written); keep_last >= 1 (InvalidArgument). Pruning keeps the new file plus
// the keep_last - 1 other `step-*.h5` files of highest step; a failure to
// remove an old file is logged as a warning, not returned (the new checkpoint
// is complete by then). IoError when the directory or file cannot be written
// or the re-read after writing disagrees; on any failure the temporary file
// is removed and `latest` and the older checkpoints are untouched. `stats`
// may be null.
Status Save(MPI_Comm comm, const std::string& dir, const Meta& meta,
            const std::vector<LayerInfo>& layers, const std::vector<LayerSlice>& slices,
            int keep_last, IoStats* stats);

// Save with the data made piece by piece instead of held in buffers (import
// of a model much larger than memory: each rank holds one piece of at most
// 16 MiB). `tiles` give each rank's ranges like Save's slices (their buffer
// pointers are not used); `fill(layer, dataset, offset, n, out)` writes the n
// elements of dataset (0 master, 1 adam_m, 2 adam_v) from `offset` into out.
// A fill error aborts the save as a write error does (agreed, nothing
// published).
using SaveFill =
    std::function<Status(int layer, int dataset, int64_t offset_elems, int64_t n, float* out)>;
Status SaveStreamed(MPI_Comm comm, const std::string& dir, const Meta& meta,
                    const std::vector<LayerInfo>& layers, const std::vector<LayerSlice>& tiles,
                    const SaveFill& fill, int keep_last, IoStats* stats);

// The checkpoint `<dir>/latest` names, or NotFound if there is none (no
// `latest` entry at all). A `latest` that exists but names no file (a
// dangling link, a name of a missing file, text that is not one printable
// line) is DataLoss; one that is not a regular file (a FIFO) is
// InvalidArgument: never "none", which would start a run from scratch.
// Local (call on every rank).
StatusOr<std::string> FindLatest(const std::string& dir);

// What in `dir` belongs to the checkpoint protocol: "latest" (if any entry
// of that name exists, a dangling link included), then the `step-*.h5`
// names in step order. Empty for a missing directory. Local.
std::vector<std::string> CheckpointEntries(const std::string& dir);
// Reads /meta; checks the format name and version. DataLoss / NotFound name
// the file and what is wrong (not HDF5, truncated, missing group or
// attribute); FailedPrecondition for a format version this build cannot read.
StatusOr<Meta> ReadMeta(MPI_Comm comm, const std::string& path);

// Reads every rank's slices after checking that the file's layers match
// `layers` (count, sizes, tensor index: FailedPrecondition naming the first
// mismatching layer/tensor and both shapes) and, for every dataset, that the
// checksummed slices' checksums add up to the stored one (DataLoss naming
// the dataset). The checksummed slices must tile each layer exactly and every
// slice must lie inside its layer (InvalidArgument). `stats` may be null.
Status Load(MPI_Comm comm, const std::string& path, const std::vector<LayerInfo>& layers,
            const std::vector<LayerSlice>& slices, IoStats* stats);

// Load of the fp32 master weights only (train.init_from, export): the
// slices' adam_m / adam_v may be null and are not touched; the master
// datasets' checksums are verified as in Load.
Status LoadWeights(MPI_Comm comm, const std::string& path, const std::vector<LayerInfo>& layers,
                   const std::vector<LayerSlice>& slices, IoStats* stats);

// The layers stored in a checkpoint (sizes and tensor indexes), without
// reading the flat datasets. Collective; same errors as Load's structure
// checks (DataLoss for missing groups, datasets or indexes).
StatusOr<std::vector<LayerInfo>> ReadLayerInfos(MPI_Comm comm, const std::string& path);

// Test hook: when the environment variable L2L_CKPT_TEST_CRASH_AFTER_LAYER=k
// is set, Save aborts the whole job (MPI_Abort) after writing layer k of the
// temporary file. Documented so the crash-safety test can use it.
inline constexpr const char* kCrashHookEnv = "L2L_CKPT_TEST_CRASH_AFTER_LAYER";

}  // namespace l2l::ckpt
