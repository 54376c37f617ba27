// The trainer's checkpoint glue: the checkpoint directory (lock, shared
// filesystem, ownership), save, resume at any world size, init_from.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <thread>

#include "l2l/ckpt/model_layers.h"
#include "l2l/ckpt/reader.h"
#include "l2l/core/byte_size.h"
#include "l2l/core/fs.h"
#include "l2l/core/log.h"
#include "l2l/model/config_dims.h"
#include "l2l/model/layer_exec.h"
#include "l2l/train/backend.h"
#include "l2l/train/schedule.h"
#include "l2l/train/signals.h"
#include "l2l/train/trainer.h"
#include "trainer_internal.h"

namespace l2l::train {

using internal::NowSeconds;

// Lock checkpoint.dir for the run: two jobs saving into one directory would
// interleave `latest` and prune each other's files. Creating the lock file
// also finds out now, not at the first save after many steps, that the
// directory cannot be written (rank 0; the collective save later agrees on
// errors anyway).
Status Trainer::LockCheckpointDir() {
  if (comm_->rank() != 0) return OkStatus();
  const std::string& dir = cfg_.checkpoint.dir;
  if (dir.empty()) return InvalidArgument("checkpoint.dir: empty, expected a directory");
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return IoError("checkpoint.dir: cannot create " + dir + " (" + ec.message() + ")");
  StatusOr<fs::ExclusiveLock> lock = fs::ExclusiveLock::Acquire(dir + "/.lock");
  if (lock.status().code() == StatusCode::kFailedPrecondition) {
    return FailedPrecondition("checkpoint.dir " + dir + " is in use by another run (" +
                              lock.status().message() +
                              "); wait for it to end, or give this run another checkpoint.dir "
                              "(on NFS a dead node's lock lasts until its lease expires)");
  }
  RETURN_IF_ERROR(lock.status().WithContext("checkpoint.dir"));
  dir_lock_.emplace(std::move(*lock));
  return OkStatus();
}

// Parallel HDF5 opens a checkpoint collectively: a rank that sees another
// directory under the same name (a node-local disk) would block in
// H5Fcreate / MPI_File_open for ever. Rank 0 writes a probe file naming
// itself; every rank must read the same text there (a few tries: NFS may
// show a new file a moment late). Agreed.
Status Trainer::CheckCheckpointDirShared() {
  if (comm_->size() == 1) return OkStatus();
  const std::string probe = cfg_.checkpoint.dir + "/.shared-probe";
  std::string token;
  Status s;
  if (comm_->rank() == 0) {
    token = fs::HostName() + " pid " + std::to_string(::getpid()) + " t " +
            std::to_string(NowSeconds()) + "\n";
    s = fs::WriteFileDurably(probe, token).WithContext("checkpoint.dir");
  }
  RETURN_IF_ERROR(comm_->Agree(s));
  RETURN_IF_ERROR(comm_->BroadcastString(&token, 0));
  if (comm_->rank() != 0) {
    bool same = false;
    for (int attempt = 0; attempt < 20 && !same; ++attempt) {
      if (attempt > 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));
      StatusOr<std::string> seen = fs::ReadFile(probe);
      same = seen.ok() && *seen == token;
    }
    if (!same) {
      s = FailedPrecondition("checkpoint.dir " + cfg_.checkpoint.dir + " is not shared: rank " +
                             std::to_string(comm_->rank()) + " (on " + fs::HostName() +
                             ") does not see the file rank 0 wrote there; every rank must see "
                             "the same directory (a shared file system, not a node-local disk)");
    }
  }
  const Status verdict = comm_->Agree(s);
  if (comm_->rank() == 0) ::unlink(probe.c_str());
  return verdict;
}

// A run saves into checkpoint.dir, moves `latest` and prunes to keep_last:
// in a directory holding checkpoints of another run (or of this one, when it
// was not resumed from them) that would supersede and delete what it did not
// write. Agreed; checked once (after that the directory's checkpoints are
// this run's own).
Status Trainer::CheckCheckpointDirIsOurs() {
  if (checked_dir_is_ours_) return OkStatus();
  Status s;
  if (comm_->rank() == 0) {
    bool continues = false;
    if (resumed_) {
      StatusOr<bool> inside = InCheckpointDir(last_checkpoint_);
      s = inside.status();
      continues = inside.ok() && *inside;
    }
    const std::vector<std::string> entries = ckpt::CheckpointEntries(cfg_.checkpoint.dir);
    if (s.ok() && !continues && !entries.empty()) {
      std::string names;
      for (size_t i = 0; i < entries.size() && i < 3; ++i) names += (i ? ", " : "") + entries[i];
      if (entries.size() > 3) names += ", ...";
      s = FailedPrecondition(
          "checkpoint.dir " + cfg_.checkpoint.dir + " already holds checkpoints (" + names +
          ") that this run did not resume from; its saves would supersede and prune them: "
          "continue them with --resume auto, or give this run another checkpoint.dir");
    }
  }
  RETURN_IF_ERROR(comm_->Agree(s));
  checked_dir_is_ours_ = true;
  return OkStatus();
}

std::vector<ckpt::LayerInfo> Trainer::CheckpointLayers() const { return ckpt::LayerInfosOf(dims_); }

Status Trainer::SaveCheckpoint() {
  RETURN_IF_ERROR(CheckCheckpointDirIsOurs());
  // A failure to stage a slice on one rank is agreed before the collective
  // save, so no rank is left inside it.
  std::vector<ckpt::LayerSlice> slices;
  Status staged;
  for (int l = 0; l < model::NumLayers(dims_) && staged.ok(); ++l) {
    auto s = source_->SaveSlice(l);
    if (!s.ok()) {
      staged = s.status();
    } else {
      slices.push_back({s->offset_elems, s->size_elems, s->master, s->adam_m, s->adam_v, true});
    }
  }
  RETURN_IF_ERROR(comm_->Agree(staged));
  ckpt::Meta meta;
  meta.step = step_;
  meta.tokens_seen = step_ * cfg_.train.global_batch * static_cast<int64_t>(dims_.seq_len);
  meta.world_size = comm_->size();
  meta.seed = cfg_.train.seed;
  meta.config_yaml = config::ToYaml(cfg_);
  meta.sampler_state = sampler_->state().ToString();
  ckpt::IoStats stats;
  RETURN_IF_ERROR(ckpt::Save(comm_->handle(), cfg_.checkpoint.dir, meta, CheckpointLayers(), slices,
                             cfg_.checkpoint.keep_last, &stats));
  last_checkpoint_ = ckpt::CheckpointPath(cfg_.checkpoint.dir, step_);
  if (!history_.empty()) history_.back().ckpt_save = stats;
  if (comm_->rank() == 0) {
    std::printf("l2l: saved %s (%s in %.2f s, %.2f GB/s)\n", last_checkpoint_.c_str(),
                FormatBytes(stats.bytes).c_str(), stats.seconds, stats.gb_per_s());
    std::fflush(stdout);
  }
  return OkStatus();
}

Status Trainer::Resume(const std::string& spec) {
  // Rank 0 resolves the path and every rank uses its answer: ranks that saw
  // different directory contents (node-local disks, NFS caching) would
  // otherwise take different paths through the collectives below.
  std::string path = spec;
  if (spec == "auto") {
    Status found;
    if (comm_->rank() == 0) {
      auto latest = ckpt::FindLatest(cfg_.checkpoint.dir);
      if (latest.ok()) {
        path = *latest;
      } else {
        found = latest.status();
        path.clear();
        // No `latest` but checkpoint files: a save that was interrupted
        // after its rename and before `latest` was written (the file is
        // complete), or a removed `latest`. Not a fresh start.
        const std::vector<std::string> entries = ckpt::CheckpointEntries(cfg_.checkpoint.dir);
        if (found.code() == StatusCode::kNotFound && !entries.empty()) {
          found = FailedPrecondition(
              cfg_.checkpoint.dir + " has no 'latest' but holds " + entries.back() +
              " (a save interrupted while it was published?): resume it with --resume " +
              cfg_.checkpoint.dir + "/" + entries.back());
        }
      }
    }
    RETURN_IF_ERROR(comm_->BroadcastString(&path, 0));
    if (path.empty()) {
      // Not found: a fresh start. Any other error (a `latest` naming a missing
      // file) is rank 0's to report, agreed by all.
      const bool error = comm_->rank() == 0 && found.code() != StatusCode::kNotFound;
      RETURN_IF_ERROR(comm_->Agree(error ? found : OkStatus()));
      if (comm_->rank() == 0 && purpose_ == Purpose::kTrain) {
        std::printf("l2l: no checkpoint in %s, starting fresh\n", cfg_.checkpoint.dir.c_str());
      }
      return OkStatus();
    }
  } else {
    ASSIGN_OR_RETURN(path, ResolveOnRankZero(spec));  // a directory means its latest
  }
  ASSIGN_OR_RETURN(ckpt::Meta meta, ckpt::ReadMeta(comm_->handle(), path));
  // An evaluation needs the weights only: any data, batch or step count.
  const bool train = purpose_ == Purpose::kTrain;
  if (train && meta.sampler_state.empty()) {
    return comm_->Agree(FailedPrecondition(
        path +
        ": an imported checkpoint holds weights only (no training state to resume); "
        "start from it with --init-from " +
        path));
  }
  RETURN_IF_ERROR(CheckSameNetwork("--resume", path, meta));
  if (train) {
    Status s;
    auto saved = data::SamplerState::Parse(meta.sampler_state);
    if (!saved.ok()) {
      s = DataLoss(path + ": unreadable sampler state: " + saved.status().message());
    } else {
      s = sampler_->CheckResume(*saved).WithContext(path + ": cannot resume this run");
    }
    if (s.ok() && meta.step < 0) {
      s = DataLoss(path + ": /meta/step is " + std::to_string(meta.step) +
                   ", expected a step count >= 0");
    }
    if (s.ok() && meta.step > cfg_.train.steps) {
      s = FailedPrecondition(path + ": checkpoint is at step " + std::to_string(meta.step) +
                             ", past train.steps=" + std::to_string(cfg_.train.steps));
    }
    RETURN_IF_ERROR(comm_->Agree(s));
  }
  ASSIGN_OR_RETURN(const std::vector<ckpt::LayerSlice> slices, LoadSlices());
  ckpt::IoStats stats;
  RETURN_IF_ERROR(ckpt::Load(comm_->handle(), path, CheckpointLayers(), slices, &stats));
  for (int l = 0; l < model::NumLayers(dims_); ++l) RETURN_IF_ERROR(source_->CommitLoaded(l));
  step_ = meta.step;
  last_checkpoint_ = path;
  pending_load_stats_ = stats;
  resumed_ = true;
  if (comm_->rank() == 0) {
    std::printf("l2l: resumed from %s at step %lld (saved on %d ranks; %s in %.2f s, %.2f GB/s)\n",
                path.c_str(), static_cast<long long>(step_), meta.world_size,
                FormatBytes(stats.bytes).c_str(), stats.seconds, stats.gb_per_s());
    std::fflush(stdout);
  }
  return OkStatus();
}

StatusOr<std::string> Trainer::ResolveOnRankZero(const std::string& spec) {
  std::string path;
  Status found;
  if (comm_->rank() == 0) {
    auto resolved = ckpt::ResolveCheckpoint(spec);
    if (resolved.ok()) {
      path = *resolved;
    } else {
      found = resolved.status();
    }
  }
  RETURN_IF_ERROR(comm_->Agree(found));
  RETURN_IF_ERROR(comm_->BroadcastString(&path, 0));
  // Every rank opens it collectively next: one that cannot see it would
  // hang there (a checkpoint on a node-local disk of rank 0).
  Status visible;
  if (!fs::IsFile(path)) {
    visible = FailedPrecondition(path + ": rank " + std::to_string(comm_->rank()) +
                                 " cannot see this checkpoint, which rank 0 found; every rank "
                                 "must see it (a shared file system, not a node-local disk)");
  }
  RETURN_IF_ERROR(comm_->Agree(visible));
  return path;
}

Status Trainer::CheckSameNetwork(const std::string& what, const std::string& path,
                                 const ckpt::Meta& meta) {
  Status s;
  auto saved = config::ParseConfig(meta.config_yaml, path + " (its config)", {});
  if (!saved.ok()) {
    s = DataLoss(path + ": unreadable config: " + saved.status().message());
  } else {
    const std::string diff = config::FirstNetworkDifference(saved->model, cfg_.model);
    if (!diff.empty()) {
      s = FailedPrecondition(what + " " + path +
                             ": the checkpoint's model differs from this config's: " + diff +
                             " (checkpoint vs config)");
    }
  }
  return comm_->Agree(s);
}

StatusOr<std::vector<ckpt::LayerSlice>> Trainer::LoadSlices() {
  std::vector<ckpt::LayerSlice> slices;
  Status staged;
  for (int l = 0; l < model::NumLayers(dims_) && staged.ok(); ++l) {
    auto s = source_->LoadSlice(l);
    if (!s.ok()) {
      staged = s.status();
      continue;
    }
    // Resident replicas read the whole layer on every rank; rank 0's copy is
    // the one that counts for the checksum.
    const bool tiles = cfg_.exec.mode == config::ExecMode::kL2L || comm_->rank() == 0;
    slices.push_back({s->offset_elems, s->size_elems, s->master, s->adam_m, s->adam_v, tiles});
  }
  RETURN_IF_ERROR(comm_->Agree(staged));
  return slices;
}

// Whether the checkpoint file `path` lies in checkpoint.dir, whichever way
// either is spelled: relative, with "..", through a symlink to the file or
// to a directory. The comparison is of the file's real parent with
// checkpoint.dir as the file system sees them (same inode).
StatusOr<bool> Trainer::InCheckpointDir(const std::string& path) const {
  namespace sfs = std::filesystem;
  std::error_code ec;
  const sfs::path real = sfs::canonical(path, ec);
  if (ec) return IoError(path + ": cannot resolve (" + ec.message() + ")");
  if (!sfs::exists(cfg_.checkpoint.dir, ec)) return false;
  const bool inside = sfs::equivalent(real.parent_path(), cfg_.checkpoint.dir, ec);
  if (ec) {
    return IoError("checkpoint.dir " + cfg_.checkpoint.dir + ": cannot compare with " +
                   real.string() + " (" + ec.message() + ")");
  }
  return inside;
}

Status Trainer::CheckOutsideCheckpointDir(const std::string& path) const {
  StatusOr<bool> inside = InCheckpointDir(path);
  RETURN_IF_ERROR(inside.status().WithContext("train.init_from"));
  if (!*inside) return OkStatus();
  return FailedPrecondition("train.init_from " + path + " lies in checkpoint.dir " +
                            cfg_.checkpoint.dir +
                            ", whose saves would prune it; save the fine-tune elsewhere "
                            "(checkpoint.dir)");
}

Status Trainer::InitFrom(const std::string& spec) {
  ASSIGN_OR_RETURN(const std::string path, ResolveOnRankZero(spec));
  {
    // Saves restart at step 0 in checkpoint.dir and prune it to keep_last:
    // a source inside it would be deleted by this run. An evaluation saves
    // nothing.
    Status s;
    if (comm_->rank() == 0 && purpose_ == Purpose::kTrain) s = CheckOutsideCheckpointDir(path);
    RETURN_IF_ERROR(comm_->Agree(s));
  }
  ASSIGN_OR_RETURN(ckpt::Meta meta, ckpt::ReadMeta(comm_->handle(), path));
  RETURN_IF_ERROR(CheckSameNetwork("train.init_from", path, meta));
  last_checkpoint_ = path;
  ASSIGN_OR_RETURN(const std::vector<ckpt::LayerSlice> slices, LoadSlices());
  ckpt::IoStats stats;
  RETURN_IF_ERROR(ckpt::LoadWeights(comm_->handle(), path, CheckpointLayers(), slices, &stats));
  for (size_t l = 0; l < slices.size(); ++l) {
    // A fine-tune starts with fresh optimizer state.
    const ckpt::LayerSlice& s = slices[l];
    std::fill(s.adam_m, s.adam_m + s.size_elems, 0.0f);
    std::fill(s.adam_v, s.adam_v + s.size_elems, 0.0f);
    RETURN_IF_ERROR(source_->CommitLoaded(static_cast<int>(l)));
  }
  step_ = 0;
  pending_load_stats_ = stats;
  if (comm_->rank() == 0) {
    std::printf(
        "l2l: initialised from %s (weights after its step %lld; fresh AdamW state, step 0; %s in "
        "%.2f s)\n",
        path.c_str(), static_cast<long long>(meta.step), FormatBytes(stats.bytes).c_str(),
        stats.seconds);
    std::fflush(stdout);
  }
  return OkStatus();
}

Status Trainer::ReadLayer(int layer, std::vector<float>* out) {
  std::vector<float> padded(source_->padded_elems(layer));
  RETURN_IF_ERROR(source_->ReadLayer(layer, padded.data()));
  out->assign(padded.begin(), padded.begin() + layer_sizes_[layer]);
  return OkStatus();
}

}  // namespace l2l::train
