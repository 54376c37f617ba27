#include "l2l/sched/relay.h"

#include <chrono>

namespace l2l::sched {
namespace {

using Clock = std::chrono::steady_clock;
double SecondsSince(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

int64_t BoundaryElems(const model::ModelDims& d, int micro_batch) {
  return static_cast<int64_t>(micro_batch) * d.seq_len * d.hidden;
}

// Bytes of one micro-batch's uploaded inputs: keys, tokens, types, targets, mask.
int64_t InputBytes(const model::ModelDims& d, int micro_batch) {
  const int64_t cells = static_cast<int64_t>(micro_batch) * d.seq_len;
  return micro_batch * 8 + cells * (3 * 4 + 1);
}

int64_t StashElems(const model::ModelDims& d, const RelayOptions& o) {
  // Inputs of layers 1..L+1 for every micro-batch, plus one gradient
  // boundary per micro-batch.
  return static_cast<int64_t>(d.num_blocks + 2) * o.n_micro * BoundaryElems(d, o.micro_batch);
}

}  // namespace

DeviceMemoryPlan PlanDeviceMemory(const model::ModelDims& dims, const RelayOptions& options,
                                  int64_t params_bytes) {
  DeviceMemoryPlan p;
  p.params_bytes = params_bytes;
  const int64_t ws = std::max({model::EmbeddingWorkspaceElems(dims, options.micro_batch),
                               model::BlockWorkspaceElems(dims, options.micro_batch),
                               model::HeadWorkspaceElems(dims, options.micro_batch)});
  p.workspace_bytes = ws * static_cast<int64_t>(sizeof(float));
  p.boundary_bytes = 4 * BoundaryElems(dims, options.micro_batch) * sizeof(float) +
                     InputBytes(dims, options.micro_batch);
  p.stash_bytes = options.stash == Stash::kDevice ? StashElems(dims, options) * sizeof(float) : 0;
  return p;
}

Relay::Relay(Device* device, const model::ModelDims& dims, const RelayOptions& options,
             ParamSource* source)
    : device_(device), dims_(dims), options_(options), source_(source) {
  const int last = model::NumLayers(dims) - 1;  // the head
  for (int l = 0; l <= last; ++l) schedule_.push_back(l);
  for (int l = last - 1; l >= 0; --l) schedule_.push_back(l);
  boundary_elems_ = BoundaryElems(dims, options.micro_batch);
}

StatusOr<std::unique_ptr<Relay>> Relay::Create(Device* device, const model::ModelDims& dims,
                                               const RelayOptions& options, ParamSource* source) {
  std::unique_ptr<Relay> r(new Relay(device, dims, options, source));
  RETURN_IF_ERROR(r->Allocate());
  return r;
}

Status Relay::Allocate() {
  const DeviceMemoryPlan plan = PlanDeviceMemory(dims_, options_, 0);
  ASSIGN_OR_RETURN(workspace_, device_->Allocate(plan.workspace_bytes, "layer workspace"));
  const size_t boundary_bytes = boundary_elems_ * sizeof(float);
  ASSIGN_OR_RETURN(x_in_, device_->Allocate(boundary_bytes, "boundary buffer x_in"));
  ASSIGN_OR_RETURN(x_out_, device_->Allocate(boundary_bytes, "boundary buffer x_out"));
  ASSIGN_OR_RETURN(dy_, device_->Allocate(boundary_bytes, "boundary buffer dy"));
  ASSIGN_OR_RETURN(dx_, device_->Allocate(boundary_bytes, "boundary buffer dx"));
  ASSIGN_OR_RETURN(
      inputs_, device_->Allocate(InputBytes(dims_, options_.micro_batch), "micro-batch inputs"));
  const int64_t cells = static_cast<int64_t>(options_.micro_batch) * dims_.seq_len;
  char* p = inputs_.as<char>();
  d_keys_ = reinterpret_cast<uint64_t*>(p);
  p += options_.micro_batch * 8;
  d_tokens_ = reinterpret_cast<int32_t*>(p);
  d_types_ = d_tokens_ + cells;
  d_targets_ = d_types_ + cells;
  d_mask_ = reinterpret_cast<uint8_t*>(d_targets_ + cells);

  const size_t stash_bytes = StashElems(dims_, options_) * sizeof(float);
  if (options_.stash == Stash::kDevice) {
    ASSIGN_OR_RETURN(device_stash_, device_->Allocate(stash_bytes, "activation stash"));
    stash_base_ = device_stash_.as<float>();
  } else {
    ASSIGN_OR_RETURN(host_stash_, device_->AllocatePinned(stash_bytes, "host activation stash"));
    stash_base_ = host_stash_.as<float>();
  }
  return OkStatus();
}

float* Relay::StashSlot(int layer_input, int micro) {
  L2L_CHECK(layer_input >= 1 && layer_input <= dims_.num_blocks + 1);
  return stash_base_ + ((layer_input - 1) * options_.n_micro + micro) * boundary_elems_;
}

float* Relay::DStashSlot(int micro) {
  return stash_base_ + ((dims_.num_blocks + 1) * options_.n_micro + micro) * boundary_elems_;
}

void Relay::LoadBoundary(float* device_dst, const float* stash_src) {
  const size_t bytes = boundary_elems_ * sizeof(float);
  if (options_.stash == Stash::kDevice) {
    device_->CopyD2D(device_dst, stash_src, bytes, StreamKind::kCompute);
  } else {
    device_->CopyH2D(device_dst, stash_src, bytes, StreamKind::kCompute);
  }
}

void Relay::StoreBoundary(float* stash_dst, const float* device_src) {
  const size_t bytes = boundary_elems_ * sizeof(float);
  if (options_.stash == Stash::kDevice) {
    device_->CopyD2D(stash_dst, device_src, bytes, StreamKind::kCompute);
  } else {
    device_->CopyD2H(stash_dst, device_src, bytes, StreamKind::kCompute);
  }
}

void Relay::UploadInputs(const MicroBatchInput& b) {
  L2L_CHECK_EQ(b.rows, options_.micro_batch);
  const size_t cells = static_cast<size_t>(b.rows) * dims_.seq_len;
  device_->CopyH2D(d_keys_, b.sample_keys, b.rows * sizeof(uint64_t), StreamKind::kCompute);
  device_->CopyH2D(d_tokens_, b.tokens, cells * sizeof(int32_t), StreamKind::kCompute);
  device_->CopyH2D(d_types_, b.token_types, cells * sizeof(int32_t), StreamKind::kCompute);
  device_->CopyH2D(d_targets_, b.targets, cells * sizeof(int32_t), StreamKind::kCompute);
  device_->CopyH2D(d_mask_, b.attn_mask, cells, StreamKind::kCompute);
}

StatusOr<const float*> Relay::AcquireAt(size_t visit) {
  ASSIGN_OR_RETURN(const float* params, source_->Acquire(schedule_[visit]));
  for (size_t i = visit + 1; i <= visit + options_.prefetch_depth && i < schedule_.size(); ++i) {
    RETURN_IF_ERROR(source_->Prefetch(schedule_[i]));
  }
  return params;
}

Status Relay::Forward(int64_t step, uint64_t seed, bool training,
                      const std::vector<MicroBatchInput>& batches, double* compute_s) {
  L2L_CHECK_EQ(static_cast<int>(batches.size()), options_.n_micro);
  float* ws = workspace_.as<float>();
  for (int l = 0; l <= dims_.num_blocks; ++l) {
    ASSIGN_OR_RETURN(const float* params, AcquireAt(l));
    for (int m = 0; m < options_.n_micro; ++m) {
      const MicroBatchInput& b = batches[m];
      UploadInputs(b);
      const model::StepContext ctx{seed, step, l, training, d_keys_};
      const auto t0 = Clock::now();
      if (l == 0) {
        model::EmbeddingForward<float>(dims_, ctx, params, d_tokens_, d_types_, b.rows,
                                       x_out_.as<float>(), ws);
      } else {
        LoadBoundary(x_in_.as<float>(), StashSlot(l, m));
        model::BlockForward<float>(dims_, ctx, params, x_in_.as<float>(), d_mask_, b.rows,
                                   x_out_.as<float>(), ws);
      }
      *compute_s += SecondsSince(t0);
      StoreBoundary(StashSlot(l + 1, m), x_out_.as<float>());
    }
    source_->Release(l);
  }
  return OkStatus();
}

StatusOr<StepOutput> Relay::TrainStep(int64_t step, uint64_t seed, float lr,
                                      const std::vector<MicroBatchInput>& batches,
                                      double grad_scale) {
  StepOutput out;
  source_->BeginStep(lr, step + 1);
  RETURN_IF_ERROR(Forward(step, seed, /*training=*/true, batches, &out.compute_s));
  float* ws = workspace_.as<float>();
  const int head = dims_.num_blocks + 1;

  // Head: forward, loss and backward back to back, one gather.
  {
    ASSIGN_OR_RETURN(const float* params, AcquireAt(head));
    ASSIGN_OR_RETURN(float* grad, source_->GradBuffer(head));
    for (int m = 0; m < options_.n_micro; ++m) {
      const MicroBatchInput& b = batches[m];
      UploadInputs(b);
      LoadBoundary(x_in_.as<float>(), StashSlot(head, m));
      const model::StepContext ctx{seed, step, head, true, d_keys_};
      const auto t0 = Clock::now();
      const model::HeadResult r =
          model::HeadForwardBackward<float>(dims_, ctx, params, x_in_.as<float>(), d_targets_,
                                            b.rows, grad_scale, dx_.as<float>(), grad, ws);
      out.compute_s += SecondsSince(t0);
      out.loss_sum += r.loss_sum;
      out.targets += r.count;
      StoreBoundary(DStashSlot(m), dx_.as<float>());
    }
    source_->Release(head);
    RETURN_IF_ERROR(source_->SubmitGrad(head));
  }

  // Backward relay: blocks L..1, recomputed from their stashed inputs, then
  // the embedding. The gradient boundary of micro-batch m is updated in place.
  for (int l = dims_.num_blocks; l >= 0; --l) {
    const size_t visit = static_cast<size_t>(2 * head - l);
    ASSIGN_OR_RETURN(const float* params, AcquireAt(visit));
    ASSIGN_OR_RETURN(float* grad, source_->GradBuffer(l));
    for (int m = 0; m < options_.n_micro; ++m) {
      const MicroBatchInput& b = batches[m];
      UploadInputs(b);
      LoadBoundary(dy_.as<float>(), DStashSlot(m));
      const model::StepContext ctx{seed, step, l, true, d_keys_};
      const auto t0 = Clock::now();
      if (l == 0) {
        model::EmbeddingBackward<float>(dims_, ctx, params, d_tokens_, d_types_, b.rows,
                                        dy_.as<float>(), grad, ws);
        out.compute_s += SecondsSince(t0);
      } else {
        LoadBoundary(x_in_.as<float>(), StashSlot(l, m));
        model::BlockBackward<float>(dims_, ctx, params, x_in_.as<float>(), d_mask_, b.rows,
                                    dy_.as<float>(), dx_.as<float>(), grad, ws);
        out.compute_s += SecondsSince(t0);
        StoreBoundary(DStashSlot(m), dx_.as<float>());
      }
    }
    source_->Release(l);
    RETURN_IF_ERROR(source_->SubmitGrad(l));
  }

  ASSIGN_OR_RETURN(out.grad_norm, source_->FinishStep());
  out.gather_wait_s = source_->TakeGatherWaitSeconds();
  out.optimizer_wait_s = source_->TakeOptimizerWaitSeconds();
  out.gathers = source_->TakeGatherCount();
  return out;
}

StatusOr<StepOutput> Relay::Evaluate(const std::vector<MicroBatchInput>& batches) {
  StepOutput out;
  source_->InvalidateGathered();  // the optimizer may have changed every layer
  RETURN_IF_ERROR(Forward(0, 0, /*training=*/false, batches, &out.compute_s));
  const int head = dims_.num_blocks + 1;
  ASSIGN_OR_RETURN(const float* params, source_->Acquire(head));
  for (int m = 0; m < options_.n_micro; ++m) {
    const MicroBatchInput& b = batches[m];
    UploadInputs(b);
    LoadBoundary(x_in_.as<float>(), StashSlot(head, m));
    const model::StepContext ctx{0, 0, head, false, d_keys_};
    const auto t0 = Clock::now();
    const model::HeadResult r =
        model::HeadForwardBackward<float>(dims_, ctx, params, x_in_.as<float>(), d_targets_, b.rows,
                                          0.0, nullptr, nullptr, workspace_.as<float>());
    out.compute_s += SecondsSince(t0);
    out.loss_sum += r.loss_sum;
    out.targets += r.count;
  }
  source_->Release(head);
  out.gather_wait_s = source_->TakeGatherWaitSeconds();
  out.optimizer_wait_s = source_->TakeOptimizerWaitSeconds();
  out.gathers = source_->TakeGatherCount();
  return out;
}

}  // namespace l2l::sched
