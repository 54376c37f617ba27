// Trainer: the step loop around the relay. Owns the data pipeline, the EPS
// (l2l) or the resident model, the relay, the LR schedule, evaluation and the
// metrics (JSONL on rank 0 plus a progress line).
//
// Collective: every rank constructs and runs its Trainer with the same config
// over the same Comm. Errors are agreed across ranks (Comm::Agree) before
// they are returned, so no rank is left waiting in a collective.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "l2l/ckpt/checkpoint.h"
#include "l2l/comm/mpi_comm.h"
#include "l2l/config/config.h"
#include "l2l/core/fs.h"
#include "l2l/data/data.h"
#include "l2l/device/device.h"
#include "l2l/eps/param_server.h"
#include "l2l/model/model.h"
#include "l2l/sched/param_source.h"
#include "l2l/sched/relay.h"

namespace l2l::train {

// One step's metrics; the JSONL line is exactly these fields.
struct StepRecord {
  int64_t step = 0;  // 1-based count of completed steps
  double loss = 0;   // global mean cross-entropy over the step's targets (nats)
  double lr = 0;
  double grad_norm = 0;
  int64_t tokens = 0;  // tokens processed in this step, all ranks
  double step_s = 0, tokens_per_s = 0;
  int64_t device_peak_bytes = 0;  // high-water mark of the device arena (this rank)
  int64_t host_eps_bytes = 0;     // host bytes of EPS shards + stash (this rank)
  double compute_s = 0, gather_wait_s = 0, optimizer_wait_s = 0;  // rank 0's split
  int64_t gathers = 0;  // layer all-gathers in the step (l2l; 0 for resident)
  std::optional<double> eval_loss;
  // On steps that saved a checkpoint, and on the first step after a resume.
  std::optional<ckpt::IoStats> ckpt_save, ckpt_load;
};

// The element ranges of a layer that get no weight decay under
// train.weight_decay_on: matrices (biases and norm gains), merged where
// adjacent.
std::vector<eps::Shard> NoDecayRanges(const model::ParamLayout& layout);

// A whole evaluation pass (Trainer::EvaluateAll).
struct EvalSummary {
  double loss = 0;      // mean cross-entropy over the targets (nats); perplexity = exp(loss)
  int64_t targets = 0;  // predicted positions, all ranks
  int64_t samples = 0;  // eval samples covered
  int64_t batches = 0;  // global eval batches run
};

class Trainer {
 public:
  // kEvaluate: the run only evaluates (l2l-train --eval-only). It takes no
  // lock on checkpoint.dir and opens no metrics file; Run and SaveCheckpoint
  // must not be called.
  enum class Purpose { kTrain, kEvaluate };

  // Validates the config against the world size, opens the data, builds the
  // model state and the relay. `local_ranks` = ranks on this node (for the
  // default optimizer thread count), `local_rank` = this rank's index on the
  // node (picks the GPU). Prints the device memory plan on rank 0.
  static StatusOr<std::unique_ptr<Trainer>> Create(const config::Config& cfg, MpiComm* comm,
                                                   int local_ranks, int local_rank = 0,
                                                   Purpose purpose = Purpose::kTrain);
  ~Trainer();

  // Restores the state of a checkpoint: `spec` is "auto" (the latest in
  // checkpoint.dir, or a fresh start when there is none), a file path, or a
  // directory (the checkpoint its `latest` names).
  // The checkpoint may come from any world size with the same global batch;
  // its model must define the same network (as for InitFrom).
  Status Resume(const std::string& spec);
  // Whether Resume loaded a checkpoint (false after a fresh start).
  bool resumed() const { return resumed_; }

  // Fine-tuning (train.init_from): loads the fp32 weights of the checkpoint
  // `spec` (a file, or a directory whose `latest` names one) from any world
  // size, keeps the fresh AdamW state and step 0. The checkpoint's model
  // section must define the same network (config::FirstNetworkDifference
  // names the first key that differs), and it must not lie in
  // checkpoint.dir (this run's saves would prune it). Collective.
  Status InitFrom(const std::string& spec);

  // Runs train.steps steps (from the current step), logging as configured,
  // saving a checkpoint every checkpoint.every_steps steps and at the end.
  // When any rank got a stop signal (signals.h), all ranks finish the step,
  // save and return OK with stopped_by_signal() true.
  Status Run();
  bool stopped_by_signal() const { return stopped_by_signal_; }
  // Saves a checkpoint of the current step now. Collective.
  Status SaveCheckpoint();
  // Path of the last checkpoint saved or loaded ("" if none).
  const std::string& last_checkpoint() const { return last_checkpoint_; }
  // One step; appends to history().
  StatusOr<StepRecord> Step();
  // Mean eval loss over train.eval_batches global eval batches (the eval set
  // wraps around when they cover more than it).
  StatusOr<double> Evaluate();
  // The whole eval set once: data.eval_path when set, else data.path's
  // held-out share. Every sample counts once whatever the world size, so the
  // loss is the same at every world size (to the rounding of the sum).
  // InvalidArgument when there is no eval set. Collective.
  StatusOr<EvalSummary> EvaluateAll();

  int64_t step() const { return step_; }
  const std::vector<StepRecord>& history() const { return history_; }
  const sched::DeviceMemoryPlan& memory_plan() const { return plan_; }
  Device& device() { return *device_; }
  const model::ModelDims& dims() const { return dims_; }
  // The data order (read-only): what each step and evaluation consumes.
  const data::Sampler& sampler() const { return *sampler_; }
  int micro_batches_per_rank() const { return n_micro_; }

  // Full fp32 weights of `layer` (unpadded), on every rank. Collective.
  Status ReadLayer(int layer, std::vector<float>* out);

 private:
  // Which sampler and how a batch index is read (Batches).
  enum class Pass { kTrain, kEvalWrap, kEvalOnce };
  Trainer(const config::Config& cfg, MpiComm* comm, Purpose purpose);
  // The eval set: data.eval_path's sampler when set, else data.path's.
  const data::Sampler& eval_sampler() const { return eval_sampler_ ? *eval_sampler_ : *sampler_; }
  StatusOr<EvalSummary> EvaluatePass(int64_t batches, Pass pass);
  std::vector<ckpt::LayerInfo> CheckpointLayers() const;
  Status Init(int local_ranks, int local_rank);
  Status OpenMetrics();
  Status LockCheckpointDir();         // rank 0; sets dir_lock_
  Status CheckCheckpointDirIsOurs();  // agreed; once, before the first step
  Status CheckCheckpointDirShared();  // agreed: every rank sees rank 0's directory
  // Rank 0 only: whether checkpoint file `path` lies in checkpoint.dir.
  StatusOr<bool> InCheckpointDir(const std::string& path) const;
  void WriteRecord(const StepRecord& r);
  // This rank's micro-batches of training step `index` (eval passes: eval
  // batch `index`). Agreed: a token-file read error on any rank fails every rank.
  StatusOr<std::vector<data::MicroBatch>> Batches(int64_t index, Pass pass) const;
  // Rank 0's answer for a checkpoint path given as a file or directory.
  StatusOr<std::string> ResolveOnRankZero(const std::string& spec);
  // Rank 0 only: FailedPrecondition when the checkpoint file `path` lies in
  // checkpoint.dir (InitFrom).
  Status CheckOutsideCheckpointDir(const std::string& path) const;
  // Agreed: OK when the config saved in checkpoint `path` (`meta`) defines
  // this run's network (config::FirstNetworkDifference), else
  // FailedPrecondition "<what> <path>: the checkpoint's model differs ...".
  Status CheckSameNetwork(const std::string& what, const std::string& path, const ckpt::Meta& meta);
  // Each layer's EPS slice, as ckpt::Load fills it (resident replicas: rank
  // 0's copy counts for the checksum). Agreed.
  StatusOr<std::vector<ckpt::LayerSlice>> LoadSlices();

  config::Config cfg_;
  MpiComm* comm_;
  Purpose purpose_;
  model::ModelDims dims_;
  int n_micro_ = 1;
  std::unique_ptr<Device> device_;
  // Collectives on device buffers (NcclComm on the GPU); null on the CPU
  // backend, where comm_ serves. Declared after device_: destroyed before it.
  std::unique_ptr<Comm> device_comm_;
  std::unique_ptr<data::TokenFile> token_file_;
  std::unique_ptr<data::Sampler> sampler_;
  std::unique_ptr<data::TokenFile> eval_file_;  // data.eval_path; null when unset
  std::unique_ptr<data::Sampler> eval_sampler_;
  std::unique_ptr<eps::EagerParameterServer> eps_;
  std::unique_ptr<sched::ParamSource> source_;
  std::unique_ptr<sched::Relay> relay_;
  sched::DeviceMemoryPlan plan_;
  std::vector<int64_t> layer_sizes_;
  int64_t step_ = 0;
  std::vector<StepRecord> history_;
  std::FILE* metrics_ = nullptr;  // rank 0 only
  bool stopped_by_signal_ = false;
  bool resumed_ = false;
  std::string last_checkpoint_;
  std::optional<ckpt::IoStats> pending_load_stats_;  // reported with the next step
  std::optional<fs::ExclusiveLock> dir_lock_;        // rank 0: checkpoint.dir/.lock
  bool checked_dir_is_ours_ = false;
};

}  // namespace l2l::train
