#include "l2l/sched/relay.h"

#include <chrono>
#include <cstring>

#include "stall_meter.h"

namespace l2l::sched {
namespace {

using internal::Clock;
using internal::SecondsSince;

// The step's timing fields, from the source's counters since the last take
// and the wall time since t_step.
void TakeTimings(ParamSource& source, Clock::time_point t_step, StepOutput* out) {
  out->gather_wait_s = source.TakeGatherWaitSeconds();
  out->optimizer_wait_s = source.TakeOptimizerWaitSeconds();
  out->gathers = source.TakeGatherCount();
  out->compute_s = std::max(0.0, SecondsSince(t_step) - out->gather_wait_s - out->optimizer_wait_s);
}

constexpr int64_t kInputAlignBytes = 256;

int64_t AlignUp(int64_t n, int64_t a) { return (n + a - 1) / a * a; }

int64_t BoundaryElems(const model::ModelDims& d, int micro_batch) {
  return static_cast<int64_t>(micro_batch) * d.seq_len * d.hidden;
}

// Int32 arrays per token of one micro-batch's staged inputs: tokens, types,
// target rows, row targets, and the position ids when carried.
int Int32sPerToken(const RelayOptions& o) { return o.position_ids ? 5 : 4; }

// Bytes of one micro-batch's staged inputs: keys, the int32 arrays above,
// then the attention mask.
int64_t InputBytes(const model::ModelDims& d, const RelayOptions& o) {
  const int64_t cells = static_cast<int64_t>(o.micro_batch) * d.seq_len;
  return AlignUp(o.micro_batch * 8 + cells * (4 * Int32sPerToken(o) + 1), kInputAlignBytes);
}

int64_t StashElems(const model::ModelDims& d, const RelayOptions& o) {
  // Inputs of layers 1..L+1 for every micro-batch, plus one gradient
  // boundary per micro-batch.
  return static_cast<int64_t>(d.num_blocks + 2) * o.n_micro * BoundaryElems(d, o.micro_batch);
}

}  // namespace

model::LayerExecOptions LayerExecOptionsFor(const model::ModelDims& dims,
                                            const RelayOptions& options) {
  model::LayerExecOptions o;
  o.dtype = options.dtype;
  o.micro_batch = options.micro_batch;
  const int64_t tokens = static_cast<int64_t>(options.micro_batch) * dims.seq_len;
  const int64_t chunks = (tokens + model::kHeadLogitRows - 1) / model::kHeadLogitRows;
  o.max_head_calls_per_step = static_cast<int>(options.n_micro * chunks);
  return o;
}

// Device buffers per boundary role: two where host-stash copies overlap
// compute (the next micro-batch loads while this one computes).
int BuffersPerRole(const RelayOptions& options, bool asynchronous_device) {
  return asynchronous_device && options.stash == Stash::kHost ? 2 : 1;
}

DeviceMemoryPlan PlanDeviceMemory(const model::ModelDims& dims, const RelayOptions& options,
                                  int64_t params_bytes, const model::LayerExec& exec,
                                  bool asynchronous_device) {
  DeviceMemoryPlan p;
  const int64_t elem = static_cast<int64_t>(exec.elem_bytes());
  p.params_bytes = params_bytes;
  p.workspace_bytes = exec.WorkspaceBytes(options.micro_batch);
  p.boundary_bytes = 3 * BuffersPerRole(options, asynchronous_device) *
                         BoundaryElems(dims, options.micro_batch) * elem +
                     options.n_micro * InputBytes(dims, options) + exec.device_bytes();
  p.stash_bytes = options.stash == Stash::kDevice ? StashElems(dims, options) * elem : 0;
  return p;
}

Relay::Relay(Device* device, const model::ModelDims& dims, const RelayOptions& options,
             ParamSource* source, std::unique_ptr<model::LayerExec> exec)
    : device_(device), dims_(dims), options_(options), source_(source), exec_(std::move(exec)) {
  const int last = model::NumLayers(dims) - 1;  // the head
  for (int l = 0; l <= last; ++l) schedule_.push_back(l);
  for (int l = last - 1; l >= 0; --l) schedule_.push_back(l);
  boundary_bytes_ = BoundaryElems(dims, options.micro_batch) * exec_->elem_bytes();
  input_bytes_ = InputBytes(dims, options);
}

StatusOr<std::unique_ptr<Relay>> Relay::Create(Device* device, const model::ModelDims& dims,
                                               const RelayOptions& options, ParamSource* source,
                                               std::unique_ptr<model::LayerExec> exec) {
  L2L_CHECK(exec != nullptr && exec->dtype() == options.dtype)
      << "the layer executor's dtype must be the relay's";
  std::unique_ptr<Relay> r(new Relay(device, dims, options, source, std::move(exec)));
  RETURN_IF_ERROR(r->Allocate());
  return r;
}

Status Relay::Allocate() {
  ASSIGN_OR_RETURN(workspace_, device_->Allocate(exec_->WorkspaceBytes(options_.micro_batch),
                                                 "layer workspace"));
  overlap_copies_ = device_->asynchronous() && options_.stash == Stash::kHost;
  const int per_role = BuffersPerRole(options_, device_->asynchronous());
  for (auto [role, name] : {std::pair{&in_, "input"}, {&dy_, "gradient"}, {&out_, "output"}}) {
    role->resize(per_role);
    for (int i = 0; i < per_role; ++i) {
      ASSIGN_OR_RETURN((*role)[i].buf,
                       device_->Allocate(boundary_bytes_, std::string("boundary buffer ") + name +
                                                              " " + std::to_string(i)));
    }
  }
  stored_.resize(options_.n_micro);
  const size_t inputs = static_cast<size_t>(options_.n_micro) * input_bytes_;
  ASSIGN_OR_RETURN(inputs_, device_->Allocate(inputs, "micro-batch inputs"));
  ASSIGN_OR_RETURN(staged_inputs_, device_->AllocatePinned(inputs, "micro-batch inputs (host)"));

  const size_t stash_bytes = StashElems(dims_, options_) * exec_->elem_bytes();
  if (options_.stash == Stash::kDevice) {
    ASSIGN_OR_RETURN(device_stash_, device_->Allocate(stash_bytes, "activation stash"));
    stash_base_ = device_stash_.as<char>();
  } else {
    ASSIGN_OR_RETURN(host_stash_, device_->AllocatePinned(stash_bytes, "host activation stash"));
    stash_base_ = host_stash_.as<char>();
  }
  return OkStatus();
}

char* Relay::StashSlot(int layer_input, int micro) {
  L2L_CHECK(layer_input >= 1 && layer_input <= dims_.num_blocks + 1);
  return stash_base_ + ((layer_input - 1) * options_.n_micro + micro) * boundary_bytes_;
}

char* Relay::DStashSlot(int micro) {
  return stash_base_ + ((dims_.num_blocks + 1) * options_.n_micro + micro) * boundary_bytes_;
}

void Relay::Load(Boundary& b, const char* src, int m) {
  if (!overlap_copies_) {
    if (options_.stash == Stash::kDevice) {
      device_->CopyD2D(b.buf.data(), src, boundary_bytes_, StreamKind::kCompute);
    } else {
      device_->CopyH2D(b.buf.data(), src, boundary_bytes_, StreamKind::kCompute);
    }
    return;
  }
  if (b.idle) device_->StreamWaitEvent(StreamKind::kH2D, *b.idle);
  if (stored_[m]) device_->StreamWaitEvent(StreamKind::kH2D, *stored_[m]);
  device_->CopyH2D(b.buf.data(), src, boundary_bytes_, StreamKind::kH2D);
  b.loaded = device_->RecordEvent(StreamKind::kH2D);
}

void* Relay::In(Boundary& b) {
  if (b.loaded) device_->StreamWaitEvent(StreamKind::kCompute, *b.loaded);
  b.loaded.reset();
  return b.buf.data();
}

void* Relay::Out(Boundary& b) {
  if (b.idle) device_->StreamWaitEvent(StreamKind::kCompute, *b.idle);
  b.idle.reset();
  return b.buf.data();
}

void Relay::Done(Boundary& b) {
  if (overlap_copies_) b.idle = device_->RecordEvent(StreamKind::kCompute);
}

void Relay::Store(Boundary& b, char* dst, int m) {
  if (!overlap_copies_) {
    if (options_.stash == Stash::kDevice) {
      device_->CopyD2D(dst, b.buf.data(), boundary_bytes_, StreamKind::kCompute);
    } else {
      device_->CopyD2H(dst, b.buf.data(), boundary_bytes_, StreamKind::kCompute);
    }
    return;
  }
  std::unique_ptr<Event> written = device_->RecordEvent(StreamKind::kCompute);
  device_->StreamWaitEvent(StreamKind::kComm, *written);
  device_->CopyD2H(dst, b.buf.data(), boundary_bytes_, StreamKind::kComm);
  b.idle = device_->RecordEvent(StreamKind::kComm);
  stored_[m] = device_->RecordEvent(StreamKind::kComm);
}

Relay::InputView Relay::ViewAt(void* base, int micro) const {
  const int64_t cells = static_cast<int64_t>(options_.micro_batch) * dims_.seq_len;
  char* p = static_cast<char*>(base) + micro * input_bytes_;
  InputView v;
  v.keys = reinterpret_cast<uint64_t*>(p);
  v.tokens = reinterpret_cast<int32_t*>(p + options_.micro_batch * 8);
  v.types = v.tokens + cells;
  v.rows = v.types + cells;
  v.row_targets = v.rows + cells;
  v.positions = options_.position_ids ? v.row_targets + cells : nullptr;
  v.mask = reinterpret_cast<uint8_t*>(v.tokens + Int32sPerToken(options_) * cells);
  return v;
}

model::TargetRows Relay::TargetsOf(int micro) const {
  const InputView v = ViewAt(inputs_.data(), micro);
  return model::TargetRows{v.rows, v.row_targets, target_counts_[micro]};
}

Status Relay::UploadInputs(const std::vector<MicroBatchInput>& batches) {
  L2L_CHECK_EQ(static_cast<int>(batches.size()), options_.n_micro);
  // The previous step's upload from this staging buffer finished: every step
  // ends by synchronising the compute stream (TakeLoss).
  const int64_t cells = static_cast<int64_t>(options_.micro_batch) * dims_.seq_len;
  target_counts_.assign(batches.size(), 0);
  for (size_t m = 0; m < batches.size(); ++m) {
    const MicroBatchInput& b = batches[m];
    L2L_CHECK_EQ(b.rows, options_.micro_batch);
    const InputView v = ViewAt(staged_inputs_.data(), static_cast<int>(m));
    std::memcpy(v.keys, b.sample_keys, b.rows * sizeof(uint64_t));
    std::memcpy(v.tokens, b.tokens, cells * sizeof(int32_t));
    std::memcpy(v.types, b.token_types, cells * sizeof(int32_t));
    std::memcpy(v.mask, b.attn_mask, cells);
    L2L_CHECK_EQ(b.positions != nullptr, options_.position_ids);
    if (b.positions != nullptr) {
      // Checked here, on the host: a bad id would index past the position
      // table (the GPU kernels do not check).
      for (int64_t i = 0; i < cells; ++i) {
        if (b.positions[i] < 0 || b.positions[i] >= model::MaxPositions(dims_)) {
          return InvalidArgument("position id " + std::to_string(b.positions[i]) + " at token " +
                                 std::to_string(i) + " of micro-batch " + std::to_string(m) +
                                 " is outside [0, " + std::to_string(model::MaxPositions(dims_)) +
                                 ")");
        }
      }
      std::memcpy(v.positions, b.positions, cells * sizeof(int32_t));
    }
    ASSIGN_OR_RETURN(target_counts_[m],
                     model::CompactTargets(b.targets, cells, dims_.vocab, v.rows, v.row_targets));
  }
  device_->CopyH2D(inputs_.data(), staged_inputs_.data(), batches.size() * input_bytes_,
                   StreamKind::kCompute);
  return OkStatus();
}

Status Relay::Prefetch(size_t visit, bool may_block) {
  for (size_t i = visit + 1; i <= visit + options_.prefetch_depth && i < schedule_.size(); ++i) {
    ASSIGN_OR_RETURN(const bool started, source_->Prefetch(schedule_[i], may_block));
    if (!started) break;  // the rest after this one, in order, once the work is enqueued
  }
  return OkStatus();
}

model::StepContext Relay::ContextAt(const Visit& visit, const InputView& in) {
  return model::StepContext{.seed = visit.seed,
                            .step = visit.step,
                            .layer = visit.layer,
                            .training = visit.training,
                            .sample_keys = in.keys,
                            .positions = in.positions};
}

Status Relay::RunVisit(const Visit& visit, int n_batches, const LoadInputsFn& load_inputs,
                       const MicroBatchFn& run, const OutputSlotFn& output_slot) {
  VisitParams p;
  ASSIGN_OR_RETURN(p.params, source_->Acquire(visit.layer));
  if (visit.hold_embedding) {
    ASSIGN_OR_RETURN(p.embedding, source_->Acquire(0));
  }
  if (visit.prefetch)
    RETURN_IF_ERROR(Prefetch(static_cast<size_t>(visit.index), /*may_block=*/false));
  if (visit.gradient) {
    ASSIGN_OR_RETURN(p.grad, source_->GradBuffer(visit.layer));
    if (visit.hold_embedding) {
      ASSIGN_OR_RETURN(p.embedding_grad, source_->GradBuffer(0));
    }
  }
  if (load_inputs) load_inputs(0);
  for (int m = 0; m < n_batches; ++m) {
    const InputView in = ViewAt(inputs_.data(), m);
    run(m, ContextAt(visit, in), in, p);
    // The next micro-batch's inputs load while this one computes.
    if (load_inputs && m + 1 < n_batches) load_inputs(m + 1);
    if (output_slot) Store(At(out_, m), output_slot(m), m);
  }
  if (visit.prefetch)
    RETURN_IF_ERROR(Prefetch(static_cast<size_t>(visit.index), /*may_block=*/true));
  source_->Release(visit.layer);
  if (visit.hold_embedding) source_->Release(0);
  visit_base_ += n_batches;
  if (visit.gradient) RETURN_IF_ERROR(source_->SubmitGrad(visit.layer));
  return OkStatus();
}

Status Relay::Forward(int64_t step, uint64_t seed, bool training, int n_batches) {
  void* ws = workspace_.data();
  for (int l = 0; l <= dims_.num_blocks; ++l) {
    const Visit visit{.index = l, .layer = l, .seed = seed, .step = step, .training = training};
    // The embedding reads only the step's inputs; a block its stashed input.
    LoadInputsFn load;
    if (l > 0) load = [&, l](int m) { Load(At(in_, m), StashSlot(l, m), m); };
    auto run = [&, l](int m, const model::StepContext& ctx, const InputView& in,
                      const VisitParams& p) {
      Boundary& y = At(out_, m);
      if (l == 0) {
        exec_->EmbeddingForward(ctx, p.params, in.tokens, in.types, options_.micro_batch, Out(y),
                                ws);
      } else {
        Boundary& x = At(in_, m);
        exec_->BlockForward(ctx, p.params, In(x), in.mask, options_.micro_batch, Out(y), ws);
        Done(x);
      }
    };
    RETURN_IF_ERROR(
        RunVisit(visit, n_batches, load, run, [&, l](int m) { return StashSlot(l + 1, m); }));
  }
  return OkStatus();
}

StatusOr<StepOutput> Relay::TrainStep(int64_t step, uint64_t seed, float lr,
                                      const std::vector<MicroBatchInput>& batches,
                                      double grad_scale) {
  const auto t_step = Clock::now();
  StepOutput out;
  source_->BeginStep(lr, step + 1);
  RETURN_IF_ERROR(UploadInputs(batches));
  const int n = options_.n_micro;
  RETURN_IF_ERROR(Forward(step, seed, /*training=*/true, n));
  void* ws = workspace_.data();
  const int head = dims_.num_blocks + 1;

  // Head: forward, loss and backward back to back, one gather. A tied
  // decoder reads layer 0 (held by the source for the step) and adds its
  // gradient to layer 0's buffer, which the embedding's backward completes.
  {
    const Visit visit{.index = head,
                      .layer = head,
                      .seed = seed,
                      .step = step,
                      .training = true,
                      .gradient = true,
                      .hold_embedding = dims_.tie_embeddings};
    auto load = [&](int m) { Load(At(in_, m), StashSlot(head, m), m); };
    auto run = [&](int m, const model::StepContext& ctx, const InputView&, const VisitParams& p) {
      Boundary& x = At(in_, m);
      Boundary& dx = At(out_, m);
      exec_->HeadForwardBackward(ctx, p.params, p.embedding, In(x), TargetsOf(m),
                                 options_.micro_batch, grad_scale, Out(dx), p.grad,
                                 p.embedding_grad, ws);
      Done(x);
    };
    RETURN_IF_ERROR(RunVisit(visit, n, load, run, [&](int m) { return DStashSlot(m); }));
  }

  // Backward relay: blocks L..1, recomputed from their stashed inputs, then
  // the embedding. The gradient boundary of micro-batch m is updated in place.
  for (int l = dims_.num_blocks; l >= 0; --l) {
    const Visit visit{.index = 2 * head - l,
                      .layer = l,
                      .seed = seed,
                      .step = step,
                      .training = true,
                      .gradient = true};
    // Inputs of micro-batch m: its gradient boundary and (blocks) its stashed
    // layer input.
    auto load = [&, l](int m) {
      Load(At(dy_, m), DStashSlot(m), m);
      if (l > 0) Load(At(in_, m), StashSlot(l, m), m);
    };
    auto run = [&, l](int m, const model::StepContext& ctx, const InputView& in,
                      const VisitParams& p) {
      Boundary& dy = At(dy_, m);
      if (l == 0) {
        exec_->EmbeddingBackward(ctx, p.params, in.tokens, in.types, options_.micro_batch, In(dy),
                                 p.grad, ws);
        Done(dy);
      } else {
        Boundary& x = At(in_, m);
        Boundary& dx = At(out_, m);
        exec_->BlockBackward(ctx, p.params, In(x), in.mask, options_.micro_batch, In(dy), Out(dx),
                             p.grad, ws);
        Done(x);
        Done(dy);
      }
    };
    // Blocks store the gradient boundary of m in place; the embedding ends
    // the relay.
    OutputSlotFn output_slot;
    if (l > 0) output_slot = [&](int m) { return DStashSlot(m); };
    RETURN_IF_ERROR(RunVisit(visit, n, load, run, output_slot));
  }

  const model::HeadResult loss = exec_->TakeLoss();  // synchronises the compute stream
  out.loss_sum = loss.loss_sum;
  out.targets = loss.count;
  ASSIGN_OR_RETURN(out.grad_norm, source_->FinishStep());
  TakeTimings(*source_, t_step, &out);
  return out;
}

StatusOr<StepOutput> Relay::Evaluate(const std::vector<MicroBatchInput>& batches) {
  const auto t_step = Clock::now();
  StepOutput out;
  source_->InvalidateGathered();  // the optimizer may have changed every layer
  RETURN_IF_ERROR(UploadInputs(batches));
  const int n = options_.n_micro;
  RETURN_IF_ERROR(Forward(0, 0, /*training=*/false, n));
  const int head = dims_.num_blocks + 1;
  const Visit visit{.index = head,
                    .layer = head,
                    .training = false,
                    .prefetch = false,
                    .hold_embedding = dims_.tie_embeddings};
  auto load = [&](int m) { Load(At(in_, m), StashSlot(head, m), m); };
  auto run = [&](int m, const model::StepContext& ctx, const InputView&, const VisitParams& p) {
    Boundary& x = At(in_, m);
    exec_->HeadForwardBackward(ctx, p.params, p.embedding, In(x), TargetsOf(m),
                               options_.micro_batch, 0.0, nullptr, nullptr, nullptr,
                               workspace_.data());
    Done(x);
  };
  RETURN_IF_ERROR(RunVisit(visit, n, load, run, /*output_slot=*/nullptr));
  const model::HeadResult loss = exec_->TakeLoss();
  out.loss_sum = loss.loss_sum;
  out.targets = loss.count;
  TakeTimings(*source_, t_step, &out);
  return out;
}

}  // namespace l2l::sched
