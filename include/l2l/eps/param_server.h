// EagerParameterServer: this rank's partition of every layer's training state
// in host memory, and the two transfers that connect it to the device
// (DESIGN §1, §3). Both are stream-ordered: they enqueue work and return
// events, so the relay thread and the device go on while they run.
//   Gather(l):        the compute-dtype copy of the own shard -> device (H2D,
//                     on the kH2D stream), then an all-gather into the full
//                     flat layer buffer (on the kComm stream, the
//                     communication stream). Returns the event after which
//                     the buffer holds the layer.
//   ReduceScatter(l): after the caller's "gradient ready" event, the device's
//                     flat fp32 gradient is reduce-scattered and the owner's
//                     shard copied to host (both on kComm). The shard's
//                     squared norm, and (when updates are eager) its AdamW
//                     update, are queued on the optimizer threads at once;
//                     each waits on the host for the D2H before reading.
// With gradient clipping the update needs the global norm, so updates are
// deferred to FinishStep(), which queues them in forward order: the next
// step's Gather(0) waits only for layer 0's update.
//
// Compute dtype: with bf16 each shard also has a bf16 copy in pinned memory,
// written by the AdamW update (and at creation / after a checkpoint load);
// gathers move it, halving parameter traffic. With fp32 the master shard is
// gathered itself.
//
// Communicators: `host_comm` works on host buffers (norms, ReadLayer; an
// MpiComm); `device_comm` on device buffers (gathers, reduce-scatters; an
// NcclComm on the GPU, the same MpiComm on the CPU backend, where device
// memory is host memory and every "enqueue" completes before it returns).
//
// Threading: all public calls come from the relay thread. The optimizer
// threads touch only the shards of the layers they work on; Gather(l) waits
// for layer l's pending update before reading its shard.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "l2l/comm/comm.h"
#include "l2l/core/dtype.h"
#include "l2l/device/device.h"
#include "l2l/eps/optimizer_queue.h"
#include "l2l/eps/partition.h"
#include "l2l/kernels/adamw.h"

namespace l2l::eps {

// Alignment of every shard, in elements (256 bytes of fp32).
inline constexpr int64_t kShardAlignElems = 64;

// One layer's state owned by this rank: fp32 master weights, AdamW moments
// and the reduced gradient, each `shard.size_elems` long (padding included,
// kept at zero).
struct LayerShardState {
  int64_t size_elems = 0;    // the layer's unpadded flat size
  int64_t padded_elems = 0;  // multiple of world_size * kShardAlignElems
  Shard shard;               // this rank's range of the padded buffer
  HostBuffer master, m, v, grad;
  HostBuffer compute;  // bf16 copy of master (compute dtype bf16 only)
  // Sums of squares of `grad` per kernels::kSumSquaresChunkElems chunk, set on the
  // optimizer threads once it lands.
  std::vector<double> norm_parts;
  // Recorded on the communication stream after the gradient shard's D2H.
  std::shared_ptr<Event> landed;
};

struct OptimizerSettings {
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.01;
  double grad_clip = 0;  // global-norm clip; 0 = off (updates are eager)
  // Per layer: element ranges of its flat buffer that get no weight decay
  // (ascending, disjoint; empty: every element decays). Layers beyond the
  // vector's size decay everywhere.
  std::vector<std::vector<Shard>> no_decay;
};

// The no-decay ranges of `layer` in `s` (empty when none are given).
const std::vector<Shard>& NoDecayOf(const OptimizerSettings& s, int layer);

// The AdamW hyper-parameters of one step: `lr` after the schedule,
// 1-based step for bias correction, no gradient scaling.
kernels::AdamWParams MakeAdamWParams(const OptimizerSettings& settings, float lr,
                                     int64_t step_one_based);

// Writes elements [begin, end) of layer `layer`'s initial flat buffer.
using LayerInitFn = std::function<void(int layer, int64_t begin, int64_t end, float* out)>;

// Global gradient norm from per-layer local sums of squares: summed in layer
// order (deterministic), then all-reduced. Shared with the resident baseline
// so both modes clip with bitwise the same factor.
StatusOr<double> GlobalGradNorm(const std::vector<double>& layer_sq_norms, Comm& comm);
// Factor that scales gradients to norm `clip` when `norm` exceeds it.
float ClipScale(double norm, double clip);

class EagerParameterServer {
 public:
  // Allocates host shards for layers of the given unpadded sizes and fills
  // this rank's master shards with `init` (a pure function of the element:
  // the same model appears at any world size).
  static StatusOr<std::unique_ptr<EagerParameterServer>> Create(
      Device* device, Comm* host_comm, Comm* device_comm,
      const std::vector<int64_t>& layer_size_elems, const LayerInitFn& init,
      const OptimizerSettings& settings, int optimizer_threads, DType compute_dtype);

  int num_layers() const { return static_cast<int>(layers_.size()); }
  const LayerShardState& layer(int l) const { return layers_[l]; }
  LayerShardState& mutable_layer(int l) { return layers_[l]; }
  int64_t max_padded_elems() const;
  DType compute_dtype() const { return compute_dtype_; }

  // Hyper-parameters for the updates of the step now running (lr after the
  // schedule, 1-based step for bias correction).
  void BeginStep(float lr, int64_t step_one_based);

  // Enqueues the gather of layer l into `full_device` (padded_elems elements
  // of the compute dtype on the device) and returns the event after which it
  // is complete. Blocks the host only until layer l's pending update has
  // finished. The H2D and communication streams first wait for `buffer_free`
  // (if given): the event after which the previous user of the buffer is done.
  StatusOr<std::unique_ptr<Event>> Gather(int layer, void* full_device, Event* buffer_free);

  // Enqueues the reduce-scatter of `grad_device` (padded_elems fp32 on the
  // device, summed over this rank's micro-batches; clobbered) after
  // `grad_ready`, and the D2H of the own shard. Queues the shard's norm and,
  // when updates are eager, its update. Returns the event after which
  // `grad_device` may be reused.
  StatusOr<std::shared_ptr<Event>> ReduceScatter(int layer, float* grad_device, Event& grad_ready);

  // Whether Gather(layer) would now block on a pending update.
  bool UpdatePending(int layer) { return queue_.Pending(layer); }

  // Rewrites layer l's compute-dtype copy from its master shard (after a
  // checkpoint load wrote the master directly). No-op for fp32.
  void RefreshComputeCopy(int layer);

  // After the backward relay: waits for the gradient norms, computes the
  // global norm, and with clipping queues every layer's update in forward
  // order. Returns the global gradient norm (before clipping).
  StatusOr<double> FinishStep();

  // Blocks until every queued update is done (checkpoints, end of training).
  void WaitForUpdates() { queue_.WaitAll(); }
  double TakeOptimizerWaitSeconds() { return queue_.TakeWaitSeconds(); }
  // Gather and ReduceScatter block for pending updates; callers timing them
  // subtract this (taken before and after) so that time counts once, as
  // optimizer wait.
  double PeekOptimizerWaitSeconds() { return queue_.PeekWaitSeconds(); }

  // All-gathers layer l's master weights (padded) into host memory on every
  // rank, after its pending update. Collective.
  Status ReadLayer(int layer, float* host_padded);

  // Host bytes held for this rank's shards (master, m, v, grad).
  int64_t host_bytes() const;

 private:
  EagerParameterServer(Device* device, Comm* host_comm, Comm* device_comm,
                       const OptimizerSettings& settings, int optimizer_threads, int num_layers,
                       DType compute_dtype);
  void QueueUpdate(int layer, float grad_scale);
  // The queue's index for layer l's norm task (updates use l itself).
  int NormSlot(int layer) const { return num_layers() + layer; }

  Device* device_;
  Comm* host_comm_;
  Comm* device_comm_;
  DType compute_dtype_;
  OptimizerSettings settings_;
  std::vector<LayerShardState> layers_;
  kernels::AdamWParams step_params_{};
  OptimizerQueue queue_;
};

}  // namespace l2l::eps
