// The trainer: the step loop, evaluation and Run. Building the engine is in
// trainer_engine.cc, checkpoints in trainer_checkpoint.cc, metrics in
// trainer_metrics.cc.
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
#include "trainer_internal.h"

namespace l2l::train {

using internal::NowSeconds;

namespace {

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

}  // namespace l2l::train
