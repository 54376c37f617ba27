#include "l2l/sched/param_source.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>
#include <utility>

#include "l2l/kernels/adamw.h"

namespace l2l::sched {
namespace {

using Clock = std::chrono::steady_clock;
double SecondsSince(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Makes the compute stream wait for a transfer's event between two timed
// events: the time between them is how long the stream stalled on the
// transfer (0 when it was done before the stream got there; always 0 on the
// CPU backend). Take() needs the compute stream synchronised (the relay's
// TakeLoss), so that every event is complete.
class StallMeter {
 public:
  void ComputeWaits(Device* device, Event& e) {
    std::unique_ptr<Event> before = device->RecordTimedEvent(StreamKind::kCompute);
    device->StreamWaitEvent(StreamKind::kCompute, e);
    stalls_.emplace_back(std::move(before), device->RecordTimedEvent(StreamKind::kCompute));
  }
  double Take() {
    double s = 0;
    for (auto& [before, after] : stalls_) s += after->SecondsSince(*before);
    stalls_.clear();
    return s;
  }

 private:
  std::vector<std::pair<std::unique_ptr<Event>, std::unique_ptr<Event>>> stalls_;
};

// ---------------------------------------------------------------------------
// L2L: a ring of gathered layers in front of the EPS.
//
// Each slot holds one gathered layer. A released slot keeps its contents, so
// a layer visited again before its slot is reused (the last block: forward,
// head, then backward) is not gathered twice; the tags are dropped at every
// step start because the optimizer changes the shards between steps. Slot
// choice is deterministic, so every rank issues the same gathers in the same
// order. A held layer (L2LBufferPlan) has a slot and a gradient buffer of its
// own, outside the ring.
class L2LParamSource final : public ParamSource {
 public:
  L2LParamSource(Device* device, eps::EagerParameterServer* eps) : device_(device), eps_(eps) {}

  Status Init(const L2LBufferPlan& plan) {
    held_ = plan.held_layer;
    // slots_[0] is the held layer's when there is one; the ring follows.
    if (held_ >= 0) {
      slots_.emplace_back();
      ASSIGN_OR_RETURN(
          slots_.back().buffer,
          device_->Allocate(plan.held_slot_bytes,
                            "gathered layer buffer (held layer " + std::to_string(held_) + ")"));
      ASSIGN_OR_RETURN(held_grad_.buffer, device_->Allocate(plan.held_grad_bytes,
                                                            "layer gradient buffer (held layer " +
                                                                std::to_string(held_) + ")"));
    }
    for (int i = 0; i < plan.ring_slots; ++i) {
      slots_.emplace_back();
      ASSIGN_OR_RETURN(
          slots_.back().buffer,
          device_->Allocate(plan.slot_bytes, "gathered layer buffer " + std::to_string(i)));
    }
    grads_.resize(plan.grad_buffers);
    for (size_t i = 0; i < grads_.size(); ++i) {
      ASSIGN_OR_RETURN(
          grads_[i].buffer,
          device_->Allocate(plan.grad_bytes, "layer gradient buffer " + std::to_string(i)));
    }
    return OkStatus();
  }

  void BeginStep(float lr, int64_t step_one_based) override {
    eps_->BeginStep(lr, step_one_based);
    InvalidateGathered();
    // A step that failed half way leaves no gradient half accumulated.
    for (GradSlot& g : grads_) g.open = false;
    held_grad_.open = false;
  }

  void InvalidateGathered() override {
    for (auto& s : slots_) {
      L2L_CHECK(!s.in_use) << "layer " << s.layer << " still acquired at a pass start";
      s.layer = -1;
    }
  }

  StatusOr<bool> Prefetch(int layer, bool may_block) override {
    // A hit counts as a use: otherwise least-recently-used eviction would
    // drop a layer prefetched for soon in favour of one just released.
    if (const int hit = Find(layer); hit >= 0) {
      slots_[hit].last_use = ++clock_;
      return true;
    }
    if (!may_block && eps_->UpdatePending(layer)) return false;
    const int slot = FreeSlot(layer);
    if (slot < 0) return true;  // no room: Acquire will gather
    RETURN_IF_ERROR(Fill(slot, layer));
    return true;
  }

  StatusOr<const void*> Acquire(int layer) override {
    int slot = Find(layer);
    if (slot < 0) {
      slot = FreeSlot(layer);
      L2L_CHECK_GE(slot, 0) << "no free gather slot for layer " << layer;
      RETURN_IF_ERROR(Fill(slot, layer));
    }
    Slot& s = slots_[slot];
    s.in_use = true;
    s.last_use = ++clock_;
    if (s.ready) stalls_.ComputeWaits(device_, *s.ready);
    return s.buffer.data();
  }

  void Release(int layer) override {
    const int slot = Find(layer);
    L2L_CHECK_GE(slot, 0) << "release of layer " << layer << " that is not held";
    slots_[slot].in_use = false;
    slots_[slot].free = device_->RecordEvent(StreamKind::kCompute);
  }

  StatusOr<float*> GradBuffer(int layer) override {
    GradSlot& g = GradSlotOf(layer);
    if (!g.open) {
      if (g.free) stalls_.ComputeWaits(device_, *g.free);
      const size_t bytes = static_cast<size_t>(eps_->layer(layer).padded_elems) * sizeof(float);
      L2L_CHECK_LE(bytes, g.buffer.size_bytes()) << "layer " << layer << " gradient";
      device_->Memset(g.buffer.data(), 0, bytes, StreamKind::kCompute);
      g.open = true;
    }
    return g.buffer.as<float>();
  }

  Status SubmitGrad(int layer) override {
    GradSlot& g = GradSlotOf(layer);
    L2L_CHECK(g.open) << "SubmitGrad(" << layer << ") without GradBuffer";
    g.open = false;
    if (layer != held_) next_grad_ = (next_grad_ + 1) % static_cast<int>(grads_.size());
    const auto t0 = Clock::now();
    const double opt0 = eps_->PeekOptimizerWaitSeconds();
    std::unique_ptr<Event> ready = device_->RecordEvent(StreamKind::kCompute);
    StatusOr<std::shared_ptr<Event>> landed =
        eps_->ReduceScatter(layer, g.buffer.as<float>(), *ready);
    gather_wait_s_ += SecondsSince(t0) - (eps_->PeekOptimizerWaitSeconds() - opt0);
    RETURN_IF_ERROR(landed.status());
    g.free = std::move(landed).value();
    return OkStatus();
  }

  StatusOr<double> FinishStep() override { return eps_->FinishStep(); }
  Status ReadLayer(int layer, float* host_padded) override {
    return eps_->ReadLayer(layer, host_padded);
  }
  int64_t padded_elems(int layer) const override { return eps_->layer(layer).padded_elems; }

  // The EPS shards are host memory already: slices point straight at them.
  StatusOr<StateSlice> SaveSlice(int layer) override {
    eps_->WaitForUpdates();
    eps::LayerShardState& st = eps_->mutable_layer(layer);
    const eps::Shard valid = eps::ValidPart(st.shard, st.size_elems);
    return StateSlice{valid.offset_elems, valid.size_elems, st.master.as<float>(), st.m.as<float>(),
                      st.v.as<float>()};
  }
  StatusOr<StateSlice> LoadSlice(int layer) override { return SaveSlice(layer); }
  Status CommitLoaded(int layer) override {
    eps_->RefreshComputeCopy(layer);
    InvalidateGathered();
    return OkStatus();
  }
  void WaitForUpdates() override { eps_->WaitForUpdates(); }

  // Host time blocked in gathers and reduce-scatters, plus the time the
  // compute stream stalled on their events. The caller has synchronised the
  // compute stream (the relay's TakeLoss), so every stall event is complete.
  double TakeGatherWaitSeconds() override {
    return std::exchange(gather_wait_s_, 0.0) + stalls_.Take();
  }
  double TakeOptimizerWaitSeconds() override { return eps_->TakeOptimizerWaitSeconds(); }
  int64_t TakeGatherCount() override { return std::exchange(gathers_, 0); }
  int64_t host_state_bytes() const override { return eps_->host_bytes(); }

 private:
  struct Slot {
    DeviceBuffer buffer;
    int layer = -1;  // contents, or -1
    bool in_use = false;
    int64_t last_use = 0;
    std::unique_ptr<Event> ready;  // after the gather into the buffer
    std::unique_ptr<Event> free;   // after the compute stream's last use
  };
  struct GradSlot {
    DeviceBuffer buffer;
    std::shared_ptr<Event> free;  // after the reduce-scatter and D2H read it
    bool open = false;            // handed out by GradBuffer, not yet submitted
  };

  GradSlot& GradSlotOf(int layer) { return layer == held_ ? held_grad_ : grads_[next_grad_]; }

  int Find(int layer) const {
    for (size_t i = 0; i < slots_.size(); ++i)
      if (slots_[i].layer == layer) return static_cast<int>(i);
    return -1;
  }
  // A slot for `layer`: the held layer's own (if free), else a ring slot not
  // in use: empty ones first, then the least recently used.
  int FreeSlot(int layer) const {
    if (held_ >= 0 && layer == held_) return slots_[0].in_use ? -1 : 0;
    int best = -1;
    for (size_t i = held_ >= 0 ? 1 : 0; i < slots_.size(); ++i) {
      const Slot& s = slots_[i];
      if (s.in_use) continue;
      if (s.layer < 0) return static_cast<int>(i);
      if (best < 0 || s.last_use < slots_[best].last_use) best = static_cast<int>(i);
    }
    return best;
  }
  Status Fill(int slot, int layer) {
    const auto t0 = Clock::now();
    const double opt0 = eps_->PeekOptimizerWaitSeconds();
    Slot& s = slots_[slot];
    s.layer = -1;
    ASSIGN_OR_RETURN(s.ready, eps_->Gather(layer, s.buffer.data(), s.free.get()));
    ++gathers_;
    slots_[slot].layer = layer;
    slots_[slot].last_use = ++clock_;
    gather_wait_s_ += SecondsSince(t0) - (eps_->PeekOptimizerWaitSeconds() - opt0);
    return OkStatus();
  }

  Device* device_;
  eps::EagerParameterServer* eps_;
  std::vector<Slot> slots_;
  std::vector<GradSlot> grads_;
  int held_ = -1;       // the held layer, or -1
  GradSlot held_grad_;  // its gradient buffer
  StallMeter stalls_;
  int next_grad_ = 0;
  int64_t clock_ = 0;
  int64_t gathers_ = 0;
  double gather_wait_s_ = 0;
};

// ---------------------------------------------------------------------------
// Resident: everything on the device, data-parallel all-reduce, AdamW on the
// device (ResidentOptimizer). The gradient norm is summed over the same shard
// ranges, in the same order, as the EPS does, so that l2l and resident clip
// identically.
class ResidentParamSource final : public ParamSource {
 public:
  ResidentParamSource(Device* device, Comm* host_comm, Comm* device_comm,
                      const eps::OptimizerSettings& settings, DType dtype, int num_layers)
      : device_(device),
        host_comm_(host_comm),
        device_comm_(device_comm),
        settings_(settings),
        dtype_(dtype),
        layers_(num_layers) {}

  Status Init(const std::vector<int64_t>& sizes, const eps::LayerInitFn& init,
              std::unique_ptr<ResidentOptimizer> optimizer) {
    for (size_t l = 0; l < sizes.size(); ++l) {
      Layer& L = layers_[l];
      L.size_elems = sizes[l];
      L.padded_elems = eps::PaddedSizeElems(sizes[l], host_comm_->size(), eps::kShardAlignElems);
      const size_t bytes = static_cast<size_t>(L.padded_elems) * sizeof(float);
      const std::string what = "resident layer " + std::to_string(l);
      for (DeviceBuffer* b : {&L.params, &L.grad, &L.m, &L.v}) {
        ASSIGN_OR_RETURN(*b, device_->Allocate(bytes, what));
        device_->Memset(b->data(), 0, bytes, StreamKind::kCompute);
      }
      if (dtype_ == DType::kBF16) {
        ASSIGN_OR_RETURN(L.compute,
                         device_->Allocate(L.padded_elems * sizeof(uint16_t), what + " (bf16)"));
      }
      // Initialise on the host, then copy: the init function writes host memory.
      ASSIGN_OR_RETURN(HostBuffer host, device_->AllocatePinned(bytes, what + " init"));
      std::memset(host.data(), 0, bytes);
      init(static_cast<int>(l), 0, L.size_elems, host.as<float>());
      device_->CopyH2D(L.params.data(), host.data(), bytes, StreamKind::kCompute);
      device_->SynchronizeStream(StreamKind::kCompute);
    }
    L2L_CHECK(optimizer != nullptr);
    optimizer_ = std::move(optimizer);
    for (size_t l = 0; l < layers_.size(); ++l) RefreshCompute(layers_[l]);
    device_->SynchronizeStream(StreamKind::kCompute);
    return OkStatus();
  }

  void BeginStep(float lr, int64_t step_one_based) override {
    hp_ = eps::MakeAdamWParams(settings_, lr, step_one_based);
    for (Layer& L : layers_) L.grad_open = false;  // nothing left from a failed step
  }
  void InvalidateGathered() override {}
  StatusOr<bool> Prefetch(int, bool) override { return true; }
  StatusOr<const void*> Acquire(int layer) override {
    const Layer& L = layers_[layer];
    return dtype_ == DType::kBF16 ? L.compute.data() : L.params.data();
  }
  void Release(int) override {}
  StatusOr<float*> GradBuffer(int layer) override {
    Layer& L = layers_[layer];
    if (!L.grad_open) {
      device_->Memset(L.grad.data(), 0, L.grad.size_bytes(), StreamKind::kCompute);
      L.grad_open = true;
    }
    return L.grad.as<float>();
  }
  // The gradient is all-reduced on the communication stream; the norm of
  // layer l (on the compute stream, after the all-reduce) is enqueued only at
  // the next SubmitGrad or at FinishStep, so the all-reduce of layer l runs
  // while layer l-1 computes its backward. The host never waits here.
  Status SubmitGrad(int layer) override {
    Layer& L = layers_[layer];
    L2L_CHECK(L.grad_open) << "SubmitGrad(" << layer << ") without GradBuffer";
    L.grad_open = false;
    const auto t0 = Clock::now();
    FlushPendingNorm();
    if (device_comm_->size() > 1) {
      std::unique_ptr<Event> ready = device_->RecordEvent(StreamKind::kCompute);
      device_->StreamWaitEvent(StreamKind::kComm, *ready);
      RETURN_IF_ERROR(device_comm_->AllReduceEnqueue(L.grad.data(), L.grad.data(), L.padded_elems,
                                                     CommDType::kF32, ReduceOp::kSum));
      pending_reduced_ = device_->RecordEvent(StreamKind::kComm);
    }
    pending_layer_ = layer;
    comm_wait_s_ += SecondsSince(t0);
    return OkStatus();
  }
  StatusOr<double> FinishStep() override {
    FlushPendingNorm();
    const std::vector<double> sq = optimizer_->TakeSumSquares();
    ASSIGN_OR_RETURN(double norm, eps::GlobalGradNorm(sq, *host_comm_));
    kernels::AdamWParams hp = hp_;
    hp.grad_scale = eps::ClipScale(norm, settings_.grad_clip);
    for (size_t l = 0; l < layers_.size(); ++l) {
      Layer& L = layers_[l];
      optimizer_->Update(static_cast<int>(l), hp, eps::NoDecayOf(settings_, static_cast<int>(l)),
                         L.padded_elems, L.params.as<float>(), L.grad.as<float>(), L.m.as<float>(),
                         L.v.as<float>(), dtype_ == DType::kBF16 ? L.compute.data() : nullptr);
    }
    // The baseline is synchronous: the step ends when the update is done.
    optimizer_->WaitAll();
    return norm;
  }
  void WaitForUpdates() override { optimizer_->WaitAll(); }
  Status ReadLayer(int layer, float* host_padded) override {
    optimizer_->WaitAll();
    const Layer& L = layers_[layer];
    device_->CopyD2H(host_padded, L.params.data(), L.params.size_bytes(), StreamKind::kComm);
    device_->SynchronizeStream(StreamKind::kComm);
    return OkStatus();
  }
  int64_t padded_elems(int layer) const override { return layers_[layer].padded_elems; }

  // The state lives on the device: slices are staged through host buffers.
  StatusOr<StateSlice> SaveSlice(int layer) override {
    optimizer_->WaitAll();
    Layer& L = layers_[layer];
    const eps::Shard valid = eps::ValidPart(
        eps::ShardOf(L.padded_elems, host_comm_->size(), host_comm_->rank()), L.size_elems);
    RETURN_IF_ERROR(Stage(layer, valid.size_elems));
    const size_t off = valid.offset_elems * sizeof(float), bytes = valid.size_elems * sizeof(float);
    device_->CopyD2H(L.staged[0].data(), L.params.as<char>() + off, bytes, StreamKind::kComm);
    device_->CopyD2H(L.staged[1].data(), L.m.as<char>() + off, bytes, StreamKind::kComm);
    device_->CopyD2H(L.staged[2].data(), L.v.as<char>() + off, bytes, StreamKind::kComm);
    device_->SynchronizeStream(StreamKind::kComm);
    return StateSlice{valid.offset_elems, valid.size_elems, L.staged[0].as<float>(),
                      L.staged[1].as<float>(), L.staged[2].as<float>()};
  }
  StatusOr<StateSlice> LoadSlice(int layer) override {
    optimizer_->WaitAll();
    Layer& L = layers_[layer];
    RETURN_IF_ERROR(Stage(layer, L.size_elems));
    return StateSlice{0, L.size_elems, L.staged[0].as<float>(), L.staged[1].as<float>(),
                      L.staged[2].as<float>()};
  }
  Status CommitLoaded(int layer) override {
    Layer& L = layers_[layer];
    const size_t bytes = L.size_elems * sizeof(float);
    device_->CopyH2D(L.params.data(), L.staged[0].data(), bytes, StreamKind::kCompute);
    device_->CopyH2D(L.m.data(), L.staged[1].data(), bytes, StreamKind::kCompute);
    device_->CopyH2D(L.v.data(), L.staged[2].data(), bytes, StreamKind::kCompute);
    RefreshCompute(L);
    device_->SynchronizeStream(StreamKind::kCompute);
    for (HostBuffer& b : L.staged) b.Reset();
    return OkStatus();
  }

  double TakeGatherWaitSeconds() override {
    return std::exchange(comm_wait_s_, 0.0) + stalls_.Take();
  }
  double TakeOptimizerWaitSeconds() override { return optimizer_->TakeWaitSeconds(); }
  int64_t TakeGatherCount() override { return 0; }
  int64_t host_state_bytes() const override { return 0; }

 private:
  struct Layer {
    int64_t size_elems = 0, padded_elems = 0;
    DeviceBuffer params, grad, m, v;
    DeviceBuffer compute;    // bf16 copy of params (bf16 compute only)
    HostBuffer staged[3];    // checkpoint staging: master, m, v
    bool grad_open = false;  // GradBuffer handed out, not yet submitted
  };

  // Enqueues the norm of the last submitted layer, after its all-reduce.
  void FlushPendingNorm() {
    if (pending_layer_ < 0) return;
    Layer& L = layers_[pending_layer_];
    if (pending_reduced_) stalls_.ComputeWaits(device_, *pending_reduced_);
    const eps::Shard own = eps::ShardOf(L.padded_elems, host_comm_->size(), host_comm_->rank());
    optimizer_->SumSquares(pending_layer_, L.grad.as<float>() + own.offset_elems, own.size_elems);
    pending_layer_ = -1;
    pending_reduced_.reset();
  }

  void RefreshCompute(Layer& L) {
    if (dtype_ == DType::kBF16) {
      optimizer_->ToBF16(L.params.as<float>(), L.padded_elems, L.compute.data());
    }
  }
  Status Stage(int layer, int64_t elems) {
    for (HostBuffer& b : layers_[layer].staged) {
      if (static_cast<int64_t>(b.size_bytes()) < elems * static_cast<int64_t>(sizeof(float))) {
        ASSIGN_OR_RETURN(b, device_->AllocatePinned(std::max<int64_t>(elems, 1) * sizeof(float),
                                                    "checkpoint staging"));
      }
    }
    return OkStatus();
  }
  Device* device_;
  Comm* host_comm_;
  Comm* device_comm_;
  eps::OptimizerSettings settings_;
  DType dtype_;
  std::vector<Layer> layers_;
  std::unique_ptr<ResidentOptimizer> optimizer_;
  kernels::AdamWParams hp_{};
  double comm_wait_s_ = 0;
  StallMeter stalls_;
  int pending_layer_ = -1;                  // submitted, norm not yet enqueued
  std::unique_ptr<Event> pending_reduced_;  // its all-reduce (multi-rank)
};

}  // namespace

L2LBufferPlan PlanL2LBuffers(const std::vector<int64_t>& padded_elems, int prefetch_depth,
                             int held_layer, DType dtype, bool asynchronous_device) {
  L2L_CHECK(held_layer < static_cast<int>(padded_elems.size()));
  const int64_t elem = static_cast<int64_t>(DTypeSizeBytes(dtype));
  const int64_t f32 = static_cast<int64_t>(sizeof(float));
  int64_t ring_max = 0;
  for (size_t l = 0; l < padded_elems.size(); ++l) {
    if (static_cast<int>(l) != held_layer) ring_max = std::max(ring_max, padded_elems[l]);
  }
  L2LBufferPlan p;
  p.ring_slots = prefetch_depth + 1;
  p.slot_bytes = ring_max * elem;
  p.grad_buffers = L2LGradBuffers(asynchronous_device);
  p.grad_bytes = ring_max * f32;
  p.held_layer = held_layer;
  if (held_layer >= 0) {
    p.held_slot_bytes = padded_elems[held_layer] * elem;
    p.held_grad_bytes = padded_elems[held_layer] * f32;
  }
  return p;
}

int64_t ResidentParamSourceDeviceBytes(const std::vector<int64_t>& padded_elems, DType dtype,
                                       int64_t optimizer_device_bytes) {
  int64_t b = 0;
  for (int64_t p : padded_elems) {
    b += 4 * p * static_cast<int64_t>(sizeof(float));
    if (dtype == DType::kBF16) b += p * static_cast<int64_t>(sizeof(uint16_t));
  }
  return b + optimizer_device_bytes;
}

StatusOr<std::unique_ptr<ParamSource>> CreateL2LParamSource(Device* device,
                                                            eps::EagerParameterServer* eps,
                                                            int prefetch_depth, int held_layer) {
  std::vector<int64_t> padded;
  for (int l = 0; l < eps->num_layers(); ++l) padded.push_back(eps->layer(l).padded_elems);
  auto src = std::make_unique<L2LParamSource>(device, eps);
  RETURN_IF_ERROR(src->Init(PlanL2LBuffers(padded, prefetch_depth, held_layer, eps->compute_dtype(),
                                           device->asynchronous())));
  return std::unique_ptr<ParamSource>(std::move(src));
}

StatusOr<std::unique_ptr<ParamSource>> CreateResidentParamSource(
    Device* device, Comm* host_comm, Comm* device_comm,
    const std::vector<int64_t>& layer_size_elems, const eps::LayerInitFn& init,
    const eps::OptimizerSettings& settings, std::unique_ptr<ResidentOptimizer> optimizer,
    DType dtype) {
  auto src = std::make_unique<ResidentParamSource>(device, host_comm, device_comm, settings, dtype,
                                                   static_cast<int>(layer_size_elems.size()));
  RETURN_IF_ERROR(src->Init(layer_size_elems, init, std::move(optimizer)));
  return std::unique_ptr<ParamSource>(std::move(src));
}

}  // namespace l2l::sched
