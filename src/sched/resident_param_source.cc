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

int64_t ResidentParamSourceDeviceBytes(const std::vector<int64_t>& padded_elems, DType dtype,
                                       int64_t optimizer_device_bytes) {
  int64_t b = 0;
  for (int64_t p : padded_elems) {
    b += 4 * p * static_cast<int64_t>(sizeof(float));
    if (dtype == DType::kBF16) b += p * static_cast<int64_t>(sizeof(uint16_t));
  }
  return b + optimizer_device_bytes;
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
