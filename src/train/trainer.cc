#include "l2l/train/trainer.h"

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

namespace l2l::train {
namespace {

double NowSeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

sched::MicroBatchInput AsInput(const data::MicroBatch& b) {
  sched::MicroBatchInput in;
  in.rows = b.rows;
  in.tokens = b.tokens.data();
  in.token_types = b.token_types.data();
  in.targets = b.targets.data();
  in.attn_mask = b.attn_mask.data();
  in.sample_keys = b.sample_keys.data();
  in.positions = b.positions.empty() ? nullptr : b.positions.data();
  return in;
}

std::vector<sched::MicroBatchInput> AsInputs(const std::vector<data::MicroBatch>& bs) {
  std::vector<sched::MicroBatchInput> v;
  v.reserve(bs.size());
  for (const auto& b : bs) v.push_back(AsInput(b));
  return v;
}

std::string Duration(double s) {
  char buf[32];
  const int64_t t = static_cast<int64_t>(s + 0.5);
  if (t >= 3600) {
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", static_cast<long long>(t / 3600),
                  static_cast<long long>(t / 60 % 60));
  } else {
    std::snprintf(buf, sizeof buf, "%lldm%02llds", static_cast<long long>(t / 60),
                  static_cast<long long>(t % 60));
  }
  return buf;
}

}  // namespace

std::vector<eps::Shard> NoDecayRanges(const model::ParamLayout& layout) {
  std::vector<eps::Shard> r;
  for (const model::TensorSpec& t : layout.tensors()) {
    if (t.matrix()) continue;
    const eps::Shard s{t.offset_elems, t.shape.num_elements()};
    if (!r.empty() && r.back().end_elems() == s.offset_elems) {
      r.back().size_elems += s.size_elems;  // packed biases: one run
    } else {
      r.push_back(s);
    }
  }
  return r;
}

Trainer::Trainer(const config::Config& cfg, MpiComm* comm, Purpose purpose)
    : cfg_(cfg), comm_(comm), purpose_(purpose), dims_(model::DimsFromConfig(cfg.model)) {}

Trainer::~Trainer() {
  if (source_) source_->WaitForUpdates();
  if (metrics_ != nullptr) std::fclose(metrics_);
}

StatusOr<std::unique_ptr<Trainer>> Trainer::Create(const config::Config& cfg, MpiComm* comm,
                                                   int local_ranks, int local_rank,
                                                   Purpose purpose) {
  std::unique_ptr<Trainer> t(new Trainer(cfg, comm, purpose));
  RETURN_IF_ERROR(t->Init(local_ranks, local_rank));
  return t;
}

Status Trainer::Init(int local_ranks, int local_rank) {
  const int world = comm_->size(), rank = comm_->rank();
  RETURN_IF_ERROR(comm_->Agree(config::ValidateForWorld(cfg_, world)));
  n_micro_ = config::MicroBatchesPerRank(cfg_, world);

  // Data: every rank opens the files and reads them with pread.
  {
    data::BatchSpec spec;
    spec.objective = model::IsCausal(dims_) ? data::Objective::kCausal : data::Objective::kMlm;
    spec.seq_len = dims_.seq_len;
    spec.micro_batch = cfg_.train.micro_batch;
    spec.global_batch = cfg_.train.global_batch;
    spec.mask_prob = cfg_.data.mask_prob;
    spec.eval_fraction = cfg_.data.eval_fraction;
    spec.seed = cfg_.train.seed;
    spec.model_vocab = dims_.vocab;
    spec.mask_token = cfg_.data.mask_token_id;
    switch (cfg_.data.sampling) {
      case config::Sampling::kWindows:
        spec.unit = data::SampleUnit::kWindows;
        break;
      case config::Sampling::kExamples:
        spec.unit = data::SampleUnit::kDocuments;
        break;
      case config::Sampling::kPacked:
        spec.unit = data::SampleUnit::kPacked;
        break;
    }
    spec.doc_attention = cfg_.data.doc_attention == config::DocAttention::kWithin
                             ? data::DocAttention::kWithin
                             : data::DocAttention::kCross;
    spec.doc_positions = cfg_.data.doc_positions == config::DocPositions::kRestart
                             ? data::DocPositions::kRestart
                             : data::DocPositions::kContinue;
    // One file and the sampler over it; `held_out` = every sample is eval.
    auto open = [&](const std::string& path, bool held_out, std::unique_ptr<data::TokenFile>* file,
                    std::unique_ptr<data::Sampler>* sampler) -> Status {
      ASSIGN_OR_RETURN(data::TokenFile f, data::TokenFile::Open(path));
      *file = std::make_unique<data::TokenFile>(std::move(f));
      if (held_out) {
        // Held-out text must be the training text's tokenizer's: the same ids,
        // and for MLM the same [MASK] and random-replacement range.
        if ((*file)->vocab_size() != token_file_->vocab_size()) {
          return InvalidArgument(path + " has vocab_size " + std::to_string((*file)->vocab_size()) +
                                 ", but data.path " + cfg_.data.path + " has " +
                                 std::to_string(token_file_->vocab_size()) +
                                 "; expected files made by the same tokenizer");
        }
        spec.mask_token = sampler_->spec().objective == data::Objective::kMlm
                              ? sampler_->mask_token()
                              : spec.mask_token;
      }
      ASSIGN_OR_RETURN(data::Sampler smp, held_out ? data::Sampler::CreateHeldOut(file->get(), spec)
                                                   : data::Sampler::Create(file->get(), spec));
      *sampler = std::make_unique<data::Sampler>(std::move(smp));
      return OkStatus();
    };
    RETURN_IF_ERROR(comm_->Agree(
        open(cfg_.data.path, false, &token_file_, &sampler_).WithContext("data.path")));
    if (!cfg_.data.eval_path.empty()) {
      RETURN_IF_ERROR(comm_->Agree(open(cfg_.data.eval_path, true, &eval_file_, &eval_sampler_)
                                       .WithContext("data.eval_path")));
    }
  }

  for (int l = 0; l < model::NumLayers(dims_); ++l) {
    layer_sizes_.push_back(model::LayoutFor(dims_, model::KindOf(dims_, l)).size_elems());
  }
  std::vector<int64_t> padded;
  for (int64_t s : layer_sizes_)
    padded.push_back(eps::PaddedSizeElems(s, world, eps::kShardAlignElems));
  sched::RelayOptions ro;
  ro.n_micro = n_micro_;
  ro.micro_batch = cfg_.train.micro_batch;
  ro.stash = cfg_.exec.stash == config::StashPlacement::kHost ? sched::Stash::kHost
                                                              : sched::Stash::kDevice;
  ro.prefetch_depth = cfg_.exec.prefetch_depth;
  ro.dtype = cfg_.exec.precision == config::Precision::kBf16 ? DType::kBF16 : DType::kF32;
  ro.position_ids = cfg_.data.doc_positions == config::DocPositions::kRestart;
  const bool l2l = cfg_.exec.mode == config::ExecMode::kL2L;
  const int64_t limit = cfg_.exec.device_memory_limit_bytes;

  // The backend's device, its communicator and the layer executor: small,
  // fixed allocations. Everything that scales with the model comes after the plan.
  DeviceOptions dopt;
  dopt.type = cfg_.exec.device == config::DeviceKind::kCpu ? DeviceType::kCpu : DeviceType::kCuda;
  dopt.memory_limit_bytes = limit;
  dopt.local_rank = local_rank;
  const StatusOr<const Backend*> found = FindBackend(dopt.type);
  RETURN_IF_ERROR(comm_->Agree(found.status()));
  const Backend& backend = **found;
  {
    auto dev = backend.create_device(dopt);
    RETURN_IF_ERROR(comm_->Agree(dev.status()));
    device_ = std::move(dev).value();
  }
  {
    auto dc = backend.create_device_comm(*comm_, *device_);
    RETURN_IF_ERROR(comm_->Agree(dc.status()));
    device_comm_ = std::move(dc).value();
  }
  std::unique_ptr<model::LayerExec> exec;
  {
    auto e = backend.create_layer_exec(device_.get(), dims_, sched::LayerExecOptionsFor(dims_, ro));
    RETURN_IF_ERROR(comm_->Agree(e.status()));
    exec = std::move(e).value();
  }
  const int64_t max_padded = *std::max_element(padded.begin(), padded.end());

  // The memory plan, checked against the cap before the model is allocated.
  // Tied embeddings: layer 0 is held by the l2l source for the whole step.
  const int held_layer = dims_.tie_embeddings ? 0 : -1;
  const int64_t params_bytes =
      l2l ? sched::PlanL2LBuffers(padded, ro.prefetch_depth, held_layer, ro.dtype,
                                  device_->asynchronous())
                .total_bytes()
          : sched::ResidentParamSourceDeviceBytes(padded, ro.dtype,
                                                  backend.resident_optimizer_device_bytes(
                                                      static_cast<int>(padded.size()), max_padded));
  plan_ = sched::PlanDeviceMemory(dims_, ro, params_bytes, *exec, device_->asynchronous());
  if (rank == 0) {
    std::printf(
        "l2l: mode %s on %s (%s), %d ranks x %d micro-batches of %d, device memory plan %s "
        "(parameters %s, workspace %s, boundaries %s, stash %s), limit %s\n",
        config::Name(cfg_.exec.mode), device_->name().c_str(), DTypeName(ro.dtype), world, n_micro_,
        cfg_.train.micro_batch, FormatBytes(plan_.total()).c_str(),
        FormatBytes(plan_.params_bytes).c_str(), FormatBytes(plan_.workspace_bytes).c_str(),
        FormatBytes(plan_.boundary_bytes).c_str(), FormatBytes(plan_.stash_bytes).c_str(),
        limit > 0 ? FormatBytes(limit).c_str() : "none");
    std::fflush(stdout);
  }
  if (limit > 0 && plan_.total() > limit) {
    return comm_->Agree(OutOfMemory(
        "exec.device_memory_limit=" + FormatBytes(limit) + " is too small: this " +
        std::string(config::Name(cfg_.exec.mode)) + " configuration needs " +
        FormatBytes(plan_.total()) + " of device memory (" +
        (l2l ? "the largest layer gathered " + std::to_string(ro.prefetch_depth + 1) +
                   "x plus its gradient buffers" +
                   (held_layer >= 0 ? " and the tied embedding layer with its gradient" : "") + ": "
             : "all parameters, gradients and AdamW moments: ") +
        FormatBytes(plan_.params_bytes) + ", one micro-batch's layer workspace " +
        FormatBytes(plan_.workspace_bytes) + ")"));
  }

  const int threads = cfg_.exec.optimizer_threads > 0 ? cfg_.exec.optimizer_threads
                                                      : eps::DefaultOptimizerThreads(local_ranks);
  eps::OptimizerSettings os;
  os.beta1 = cfg_.train.beta1;
  os.beta2 = cfg_.train.beta2;
  os.eps = cfg_.train.eps;
  os.weight_decay = cfg_.train.weight_decay;
  os.grad_clip = cfg_.train.grad_clip;
  if (cfg_.train.weight_decay_on == config::WeightDecayOn::kMatrices) {
    for (int l = 0; l < model::NumLayers(dims_); ++l) {
      os.no_decay.push_back(NoDecayRanges(model::LayoutForLayer(dims_, l)));
    }
  }
  const model::ModelDims dims = dims_;
  const uint64_t seed = cfg_.train.seed;
  const eps::LayerInitFn init = [dims, seed](int layer, int64_t b, int64_t e, float* out) {
    model::InitParamRange(dims, layer, seed, b, e, out);
  };
  Comm* device_comm = device_comm_ ? device_comm_.get() : comm_;
  {
    Status s;
    if (l2l) {
      auto e = eps::EagerParameterServer::Create(device_.get(), comm_, device_comm, layer_sizes_,
                                                 init, os, threads, ro.dtype);
      if (e.ok()) {
        eps_ = std::move(e).value();
        auto src =
            sched::CreateL2LParamSource(device_.get(), eps_.get(), ro.prefetch_depth, held_layer);
        if (src.ok())
          source_ = std::move(src).value();
        else
          s = src.status();
      } else {
        s = e.status();
      }
    } else {
      auto opt = backend.create_resident_optimizer(device_.get(), threads,
                                                   static_cast<int>(padded.size()), max_padded);
      if (opt.ok()) {
        auto src = sched::CreateResidentParamSource(device_.get(), comm_, device_comm, layer_sizes_,
                                                    init, os, std::move(opt).value(), ro.dtype);
        if (src.ok())
          source_ = std::move(src).value();
        else
          s = src.status();
      } else {
        s = opt.status();
      }
    }
    if (s.ok()) {
      auto relay = sched::Relay::Create(device_.get(), dims_, ro, source_.get(), std::move(exec));
      if (relay.ok())
        relay_ = std::move(relay).value();
      else
        s = relay.status();
    }
    RETURN_IF_ERROR(comm_->Agree(s));
  }
  if (rank == 0) {
    std::printf("l2l: host memory per rank: training state %s (%s), stash %s\n",
                FormatBytes(source_->host_state_bytes()).c_str(),
                l2l ? "1/world_size of fp32 weights, AdamW moments and gradients"
                    : "resident: state is on the device",
                FormatBytes(relay_->host_stash_bytes()).c_str());
    if (cfg_.data.sampling == config::Sampling::kPacked) {
      // How full the packed rows are: the share of row positions that hold
      // tokens (a row's last token is only a target, so that share is of seq_len + 1).
      const auto packed = [](const data::Sampler& smp, const data::TokenFile& f) {
        const int64_t rows = smp.num_train_samples() + smp.num_eval_samples();
        std::printf("l2l: %s: %lld examples packed into %lld rows, %.1f%% full\n", f.path().c_str(),
                    static_cast<long long>(smp.num_documents()), static_cast<long long>(rows),
                    100.0 * static_cast<double>(f.num_tokens()) /
                        static_cast<double>(rows * (smp.spec().seq_len + 1)));
      };
      packed(*sampler_, *token_file_);
      if (eval_sampler_ != nullptr && cfg_.data.eval_path != cfg_.data.path) {
        packed(*eval_sampler_, *eval_file_);
      }
    }
    if (cfg_.train.warmup_steps > cfg_.train.steps) {
      std::printf(
          "l2l: train.warmup_steps=%lld exceeds train.steps=%lld: the learning rate warms up "
          "through the whole run (to %.3g of train.lr) and does not decay\n",
          static_cast<long long>(cfg_.train.warmup_steps), static_cast<long long>(cfg_.train.steps),
          static_cast<double>(cfg_.train.steps) / static_cast<double>(cfg_.train.warmup_steps));
    }
    std::fflush(stdout);
  }
  // Evaluation only reads: it takes no lock, writes no metrics and saves nothing.
  if (purpose_ == Purpose::kEvaluate) return OkStatus();
  RETURN_IF_ERROR(comm_->Agree(LockCheckpointDir()));
  RETURN_IF_ERROR(CheckCheckpointDirShared());
  RETURN_IF_ERROR(comm_->Agree(OpenMetrics()));
  return OkStatus();
}

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

Status Trainer::OpenMetrics() {
  if (comm_->rank() != 0) return OkStatus();
  std::error_code ec;
  std::filesystem::create_directories(cfg_.log.dir, ec);
  const std::string path = cfg_.log.dir + "/metrics.jsonl";
  metrics_ = std::fopen(path.c_str(), "a");
  if (metrics_ == nullptr) {
    return IoError("log.dir: cannot write " + path + " (" +
                   (ec ? ec.message() : std::string(std::strerror(errno))) + ")");
  }
  return OkStatus();
}

StatusOr<std::vector<data::MicroBatch>> Trainer::Batches(int64_t index, Pass pass) const {
  std::vector<data::MicroBatch> v;
  Status read;
  const int rank = comm_->rank(), world = comm_->size();
  for (int m = 0; m < n_micro_ && read.ok(); ++m) {
    StatusOr<data::MicroBatch> mb =
        pass == Pass::kTrain
            ? sampler_->TrainMicroBatch(index, rank, world, m)
            : eval_sampler().EvalMicroBatch(
                  index, rank, world, m,
                  pass == Pass::kEvalOnce ? data::EvalCover::kOnce : data::EvalCover::kWrap);
    if (mb.ok()) {
      v.push_back(std::move(mb).value());
    } else {
      read = mb.status();
    }
  }
  // A token file that changed under the run fails on the ranks that read the
  // changed part; all of them stop here together.
  RETURN_IF_ERROR(comm_->Agree(read));
  return v;
}

StatusOr<StepRecord> Trainer::Step() {
  const double t0 = NowSeconds();
  ASSIGN_OR_RETURN(const std::vector<data::MicroBatch> batches, Batches(step_, Pass::kTrain));
  int64_t targets = 0;
  for (const auto& b : batches) targets += b.num_targets;
  RETURN_IF_ERROR(comm_->AllReduce(&targets, &targets, 1, CommDType::kI64, ReduceOp::kSum));
  const double lr = LearningRate(cfg_.train, step_);
  const double grad_scale = targets > 0 ? 1.0 / static_cast<double>(targets) : 0.0;
  ASSIGN_OR_RETURN(sched::StepOutput out,
                   relay_->TrainStep(step_, cfg_.train.seed, static_cast<float>(lr),
                                     AsInputs(batches), grad_scale));
  double loss_sum = out.loss_sum;
  RETURN_IF_ERROR(comm_->AllReduce(&loss_sum, &loss_sum, 1, CommDType::kF64, ReduceOp::kSum));
  // The norm is global, so every rank takes this branch together. With eager
  // updates some layers already took the bad step: stop without saving; the
  // last checkpoint is the one to resume from.
  if (!std::isfinite(out.grad_norm)) {
    return FailedPrecondition(
        "step " + std::to_string(step_ + 1) + ": the gradient norm is not finite (loss " +
        std::to_string(targets > 0 ? loss_sum / static_cast<double>(targets) : 0.0) +
        "); stopping without saving a checkpoint. Resume from the last one with a lower "
        "train.lr or train.grad_clip");
  }

  StepRecord r;
  r.step = ++step_;
  r.loss = targets > 0 ? loss_sum / static_cast<double>(targets) : 0.0;
  r.lr = lr;
  r.grad_norm = out.grad_norm;
  r.tokens = static_cast<int64_t>(cfg_.train.global_batch) * dims_.seq_len;
  r.step_s = NowSeconds() - t0;
  r.tokens_per_s = r.step_s > 0 ? r.tokens / r.step_s : 0;
  r.device_peak_bytes = device_->memory_stats().peak_bytes;
  r.host_eps_bytes = source_->host_state_bytes() + relay_->host_stash_bytes();
  r.compute_s = out.compute_s;
  r.gather_wait_s = out.gather_wait_s;
  r.optimizer_wait_s = out.optimizer_wait_s;
  r.gathers = out.gathers;
  r.ckpt_load = std::exchange(pending_load_stats_, std::nullopt);
  history_.push_back(r);
  return r;
}

StatusOr<EvalSummary> Trainer::EvaluatePass(int64_t batches, Pass pass) {
  double loss_sum = 0;
  int64_t targets = 0;
  for (int64_t b = 0; b < batches; ++b) {
    ASSIGN_OR_RETURN(const std::vector<data::MicroBatch> mbs, Batches(b, pass));
    ASSIGN_OR_RETURN(sched::StepOutput out, relay_->Evaluate(AsInputs(mbs)));
    loss_sum += out.loss_sum;
    targets += out.targets;
  }
  RETURN_IF_ERROR(comm_->AllReduce(&loss_sum, &loss_sum, 1, CommDType::kF64, ReduceOp::kSum));
  RETURN_IF_ERROR(comm_->AllReduce(&targets, &targets, 1, CommDType::kI64, ReduceOp::kSum));
  EvalSummary r;
  r.loss = targets > 0 ? loss_sum / static_cast<double>(targets) : 0.0;
  r.targets = targets;
  r.batches = batches;
  r.samples = pass == Pass::kEvalOnce ? eval_sampler().num_eval_samples()
                                      : batches * static_cast<int64_t>(cfg_.train.global_batch);
  return r;
}

StatusOr<double> Trainer::Evaluate() {
  ASSIGN_OR_RETURN(const EvalSummary r, EvaluatePass(cfg_.train.eval_batches, Pass::kEvalWrap));
  return r.loss;
}

StatusOr<EvalSummary> Trainer::EvaluateAll() {
  if (eval_sampler().num_eval_samples() == 0) {
    return InvalidArgument(
        "nothing to evaluate: data.eval_fraction is 0 and data.eval_path is not set (set "
        "data.eval_path to a held-out token file)");
  }
  return EvaluatePass(eval_sampler().num_eval_batches(), Pass::kEvalOnce);
}

Status Trainer::Run() {
  // Refused before any step when the run is set to save; a run that is not
  // gets the same check from SaveCheckpoint if a stop signal makes it save.
  if (cfg_.checkpoint.at_end || cfg_.checkpoint.every_steps > 0) {
    RETURN_IF_ERROR(CheckCheckpointDirIsOurs());
  }
  const auto& t = cfg_.train;
  const double start = NowSeconds();
  const int64_t first = step_;
  while (step_ < t.steps) {
    ASSIGN_OR_RETURN(StepRecord r, Step());
    const bool last = step_ == t.steps;
    if (t.eval_every_steps > 0 && (step_ % t.eval_every_steps == 0 || last)) {
      ASSIGN_OR_RETURN(double eval, Evaluate());
      r.eval_loss = eval;
    }
    // Ranks agree on a stop request once per step: all finish this step.
    int32_t stop = LocalStopRequested() ? 1 : 0;
    RETURN_IF_ERROR(comm_->AllReduce(&stop, &stop, 1, CommDType::kI32, ReduceOp::kMax));
    const int64_t every = cfg_.checkpoint.every_steps;
    if ((last && cfg_.checkpoint.at_end) || stop || (every > 0 && step_ % every == 0)) {
      RETURN_IF_ERROR(SaveCheckpoint());
      r.ckpt_save = history_.back().ckpt_save;
    }
    history_.back() = r;
    WriteRecord(r);
    if (step_ % cfg_.log.every_steps == 0 || last || step_ == first + 1 || stop) {
      const double elapsed = NowSeconds() - start;
      const double eta = elapsed / static_cast<double>(step_ - first) * (t.steps - step_);
      if (comm_->rank() == 0) {
        char eval[32] = "";
        if (r.eval_loss) std::snprintf(eval, sizeof eval, " | eval %.4f", *r.eval_loss);
        std::printf("step %lld/%lld | loss %.4f%s | %.0f tok/s | device peak %s | ETA %s\n",
                    static_cast<long long>(step_), static_cast<long long>(t.steps), r.loss, eval,
                    r.tokens_per_s, FormatBytes(r.device_peak_bytes).c_str(),
                    Duration(eta).c_str());
        std::fflush(stdout);
      }
    }
    if (stop) {
      stopped_by_signal_ = true;
      break;
    }
  }
  source_->WaitForUpdates();
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

void Trainer::WriteRecord(const StepRecord& r) {
  if (metrics_ == nullptr) return;
  std::fprintf(metrics_,
               "{\"step\": %lld, \"loss\": %.17g, \"lr\": %.9g, \"grad_norm\": %.9g, "
               "\"tokens\": %lld, \"step_s\": %.6f, \"tokens_per_s\": %.3f, "
               "\"device_peak_bytes\": %lld, \"host_eps_bytes\": %lld, \"compute_s\": %.6f, "
               "\"gather_wait_s\": %.6f, \"optimizer_wait_s\": %.6f, \"gathers\": %lld",
               static_cast<long long>(r.step), r.loss, r.lr, r.grad_norm,
               static_cast<long long>(r.tokens), r.step_s, r.tokens_per_s,
               static_cast<long long>(r.device_peak_bytes),
               static_cast<long long>(r.host_eps_bytes), r.compute_s, r.gather_wait_s,
               r.optimizer_wait_s, static_cast<long long>(r.gathers));
  if (r.eval_loss) std::fprintf(metrics_, ", \"eval_loss\": %.9g", *r.eval_loss);
  if (r.ckpt_save) {
    std::fprintf(metrics_, ", \"ckpt_save_s\": %.6f, \"ckpt_save_gb_per_s\": %.4f",
                 r.ckpt_save->seconds, r.ckpt_save->gb_per_s());
  }
  if (r.ckpt_load) {
    std::fprintf(metrics_, ", \"ckpt_load_s\": %.6f, \"ckpt_load_gb_per_s\": %.4f",
                 r.ckpt_load->seconds, r.ckpt_load->gb_per_s());
  }
  std::fprintf(metrics_, "}\n");
  std::fflush(metrics_);
}

Status Trainer::ReadLayer(int layer, std::vector<float>* out) {
  std::vector<float> padded(source_->padded_elems(layer));
  RETURN_IF_ERROR(source_->ReadLayer(layer, padded.data()));
  out->assign(padded.begin(), padded.begin() + layer_sizes_[layer]);
  return OkStatus();
}

}  // namespace l2l::train
