// ParamSource: where the relay gets each layer's parameters and sends its
// gradients. Two implementations share one relay (DESIGN §1):
//   L2LParamSource      — the EPS: layers gathered into a ring of
//                         (prefetch_depth + 1) device buffers, gradients
//                         reduce-scattered to their owners' host shards.
//   ResidentParamSource — the classical baseline: every layer's parameters,
//                         gradients and AdamW state on the device,
//                         gradients all-reduced, AdamW on the device.
// All calls come from the relay thread, in the same order on every rank
// (they contain collectives).
//
// Stream ordering (DESIGN §1 overlap): the relay's layer work runs on the
// device's compute stream. Acquire() makes that stream wait for the layer's
// gather (the host does not wait); Release() marks the compute stream's work
// so far as the buffer's last use; GradBuffer() makes the compute stream wait
// until the buffer's previous reduce-scatter has read it; SubmitGrad() takes
// the compute stream's work so far as the gradient. Gathers run on the H2D
// and communication streams, reduce-scatters on the communication stream. On
// the CPU backend every operation completes at once and the same calls
// describe a synchronous relay.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "l2l/comm/comm.h"
#include "l2l/core/dtype.h"
#include "l2l/device/device.h"
#include "l2l/eps/param_server.h"
#include "l2l/sched/resident_optimizer.h"

namespace l2l::sched {

// This rank's part of a layer's training state in host memory, for
// checkpoints: elements [offset_elems, offset_elems + size_elems) of the
// unpadded flat buffer. Pointers are owned by the source and stay valid until
// the next SaveSlice / LoadSlice / CommitLoaded of the same layer.
struct StateSlice {
  int64_t offset_elems = 0;
  int64_t size_elems = 0;
  float* master = nullptr;
  float* adam_m = nullptr;
  float* adam_v = nullptr;
};

class ParamSource {
 public:
  virtual ~ParamSource() = default;

  // Learning rate (after the schedule) and 1-based step for this step's update.
  virtual void BeginStep(float lr, int64_t step_one_based) = 0;
  // Forgets layers gathered earlier (their shards may have been updated since).
  // BeginStep implies it.
  virtual void InvalidateGathered() = 0;
  // Starts making `layer` available ahead of use, if a buffer is free.
  // With may_block false it does nothing and returns false when starting the
  // gather would block the host (the layer's update is still running); the
  // caller then prefetches again, allowing it to block, once it has enqueued
  // its work. Otherwise true. Gathers are collectives: callers stop at the
  // first false so that every rank starts them in the same order.
  virtual StatusOr<bool> Prefetch(int layer, bool may_block) = 0;
  // Device pointer to the layer's full flat parameters in the compute dtype,
  // valid until Release(layer); work enqueued on the compute stream after
  // this call sees them.
  virtual StatusOr<const void*> Acquire(int layer) = 0;
  virtual void Release(int layer) = 0;
  // A device fp32 buffer (padded size) that accumulates the layer's gradient
  // over micro-batches, valid until SubmitGrad(layer): zeroed by the first
  // call after the previous SubmitGrad(layer); later calls return the same
  // buffer as it is (a tied embedding collects the head's gradient first,
  // then the embedding's own).
  virtual StatusOr<float*> GradBuffer(int layer) = 0;
  // Sums the gradient over ranks and hands it to the optimizer.
  virtual Status SubmitGrad(int layer) = 0;
  // After the backward relay; returns the global gradient norm.
  virtual StatusOr<double> FinishStep() = 0;
  // Blocks until all parameter updates are applied.
  virtual void WaitForUpdates() = 0;

  // Copies the layer's current fp32 weights (padded size) to host memory on
  // every rank, after pending updates. Collective.
  virtual Status ReadLayer(int layer, float* host_padded) = 0;
  virtual int64_t padded_elems(int layer) const = 0;

  // Checkpoint support. SaveSlice: this rank's share of the layer's state
  // (the valid part of its shard: the ranks' slices tile the layer), after
  // pending updates. LoadSlice: the host memory this rank reads the layer's
  // state into (its shard for l2l, the whole layer for resident); then
  // CommitLoaded(layer) moves it into place.
  virtual StatusOr<StateSlice> SaveSlice(int layer) = 0;
  virtual StatusOr<StateSlice> LoadSlice(int layer) = 0;
  virtual Status CommitLoaded(int layer) = 0;

  // Seconds blocked on parameter transfers / optimizer since the last call.
  virtual double TakeGatherWaitSeconds() = 0;
  virtual double TakeOptimizerWaitSeconds() = 0;
  // Layer gathers issued since the last call (0 for resident).
  virtual int64_t TakeGatherCount() = 0;
  // Host bytes this rank holds for training state (EPS shards).
  virtual int64_t host_state_bytes() const = 0;
};

// Gradient buffers of the l2l source. On an asynchronous device (the GPU)
// two: the reduce-scatter of layer l reads one while the backward of layer
// l-1 fills the other. On the CPU one (DESIGN §5): nothing overlaps there, a
// second buffer would only cost memory.
inline int L2LGradBuffers(bool asynchronous_device) { return asynchronous_device ? 2 : 1; }

// The l2l source's device buffers: a ring of (prefetch_depth + 1) gathered
// layers in the compute dtype and L2LGradBuffers fp32 gradients, each sized
// for the largest layer in the ring; and for a held layer (tied embeddings:
// layer 0, used by the embedding, the head and the embedding's backward) a
// gathered buffer and a gradient buffer of its own that stay with it for the
// whole step, so it is gathered once per step and its two gradients sum in
// one buffer. The plan and the allocation are this one description.
struct L2LBufferPlan {
  int ring_slots = 0;
  int64_t slot_bytes = 0;  // gathered layer, compute dtype
  int grad_buffers = 0;
  int64_t grad_bytes = 0;  // fp32
  int held_layer = -1;     // -1: none
  int64_t held_slot_bytes = 0, held_grad_bytes = 0;
  int64_t total_bytes() const {
    return ring_slots * slot_bytes + grad_buffers * grad_bytes + held_slot_bytes + held_grad_bytes;
  }
};
// padded_elems: every layer's padded flat size; held_layer -1 for none.
L2LBufferPlan PlanL2LBuffers(const std::vector<int64_t>& padded_elems, int prefetch_depth,
                             int held_layer, DType dtype, bool asynchronous_device);

// Device bytes the resident source allocates up front: fp32 weights,
// gradient and both moments of every layer, plus a bf16 copy of the weights
// when computing in bf16, plus its optimizer's `optimizer_device_bytes`.
int64_t ResidentParamSourceDeviceBytes(const std::vector<int64_t>& padded_elems, DType dtype,
                                       int64_t optimizer_device_bytes);

// `eps` is owned by the caller and outlives the source; the compute dtype is
// the EPS's. held_layer: see L2LBufferPlan (-1 for none).
StatusOr<std::unique_ptr<ParamSource>> CreateL2LParamSource(Device* device,
                                                            eps::EagerParameterServer* eps,
                                                            int prefetch_depth, int held_layer);

// Initialises every layer on the device with `init` (the same function the
// EPS uses, so both modes start from the same model). `device_comm`
// all-reduces the device gradients; `host_comm` sums the norms. `optimizer`
// (the backend's, for layers of up to the largest padded size) is kept.
StatusOr<std::unique_ptr<ParamSource>> CreateResidentParamSource(
    Device* device, Comm* host_comm, Comm* device_comm,
    const std::vector<int64_t>& layer_size_elems, const eps::LayerInitFn& init,
    const eps::OptimizerSettings& settings, std::unique_ptr<ResidentOptimizer> optimizer,
    DType dtype);

}  // namespace l2l::sched
