#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>
#include <utility>

#include "l2l/kernels/adamw.h"
#include "l2l/sched/param_source.h"
#include "stall_meter.h"

namespace l2l::sched {
namespace {

using internal::Clock;
using internal::SecondsSince;
using internal::StallMeter;

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

}  // namespace l2l::sched
