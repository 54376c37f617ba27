// EagerParameterServer: this rank's partition of every layer's training state
// in host memory, and the two transfers that connect it to the device
// (DESIGN §1, §3):
//   Gather(l):        own fp32 shard -> device (H2D), then all-gather into the
//                     full flat layer buffer on the device.
//   ReduceScatter(l): the device's flat fp32 gradient (summed over this rank's
//                     micro-batches) is reduce-scattered; the owner copies its
//                     shard to host (D2H) and, when updates are eager, queues
//                     AdamW on it at once on the optimizer threads.
// With gradient clipping the update needs the global norm, so updates are
// deferred to FinishStep(), which queues them in forward order: the next
// step's Gather(0) waits only for layer 0's update.
//
// Threading: all public calls come from the relay thread. The optimizer
// threads touch only the shards of the layers they update; Gather(l) waits for
// layer l's pending update before reading its shard.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "l2l/comm/comm.h"
#include "l2l/device/device.h"
#include "l2l/eps/adamw.h"
#include "l2l/eps/optimizer_queue.h"
#include "l2l/eps/partition.h"

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
  double grad_sq_norm = 0;  // sum of squares of `grad`, set when it lands
};

struct OptimizerSettings {
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.01;
  double grad_clip = 0;  // global-norm clip; 0 = off (updates are eager)
};

// The AdamW hyper-parameters of one step: `lr` after the schedule,
// 1-based step for bias correction, no gradient scaling.
AdamWParams MakeAdamWParams(const OptimizerSettings& settings, float lr, int64_t step_one_based);

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
      Device* device, Comm* comm, const std::vector<int64_t>& layer_size_elems,
      const LayerInitFn& init, const OptimizerSettings& settings, int optimizer_threads);

  int num_layers() const { return static_cast<int>(layers_.size()); }
  const LayerShardState& layer(int l) const { return layers_[l]; }
  LayerShardState& mutable_layer(int l) { return layers_[l]; }
  int64_t max_padded_elems() const;

  // Hyper-parameters for the updates of the step now running (lr after the
  // schedule, 1-based step for bias correction).
  void BeginStep(float lr, int64_t step_one_based);

  // Fills `full_device` (padded_elems floats on the device) with layer l.
  // Blocks until layer l's pending update has finished.
  Status Gather(int layer, float* full_device);

  // `grad_device`: padded_elems floats on the device; clobbered (the reduced
  // shard lands at its start). Queues the update when updates are eager.
  Status ReduceScatter(int layer, float* grad_device);

  // After the backward relay: waits for the gradient norms, computes the
  // global norm, and with clipping queues every layer's update in forward
  // order. Returns the global gradient norm (before clipping).
  StatusOr<double> FinishStep();

  // Blocks until every queued update is done (checkpoints, end of training).
  void WaitForUpdates() { queue_.WaitAll(); }
  double TakeOptimizerWaitSeconds() { return queue_.TakeWaitSeconds(); }

  // All-gathers layer l's master weights (padded) into host memory on every
  // rank, after its pending update. Collective.
  Status ReadLayer(int layer, float* host_padded);

  // Host bytes held for this rank's shards (master, m, v, grad).
  int64_t host_bytes() const;

 private:
  EagerParameterServer(Device* device, Comm* comm, const OptimizerSettings& settings,
                       int optimizer_threads, int num_layers);
  void QueueUpdate(int layer, float grad_scale);

  Device* device_;
  Comm* comm_;
  OptimizerSettings settings_;
  std::vector<LayerShardState> layers_;
  AdamWParams step_params_{};
  OptimizerQueue queue_;
};

}  // namespace l2l::eps
