// Trainer::Init: the engine built from the config (data, backend, memory
// plan, parameter source, relay), every rank agreeing on each failure.
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

namespace l2l::train {

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

}  // namespace l2l::train
