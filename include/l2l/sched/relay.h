// Relay: one training step of DESIGN §1 — the micro-batch loop inside the
// layer loop. Forward over layers 0..L (embedding, blocks), the head's
// forward+loss+backward, then the backward relay L..0 with each block
// recomputed from its stashed input. Parameters come from a ParamSource, so
// the same code runs `l2l` (EPS) and `resident`.
//
// Device memory (DESIGN §5), allocated once in Create: the ParamSource's
// buffers, one layer workspace for one micro-batch, four boundary buffers
// (x_in, x_out, dy, dx) and the step's micro-batch inputs; with stash=device
// also the stash of every layer boundary. With stash=host the stash is pinned
// host memory and nothing on the device scales with depth. Activations and
// the stash are in the layer executor's compute dtype (bf16 on the GPU in
// bf16 mode), parameter gradients in fp32.
//
// Ordering: layer work and input uploads run on the device's compute stream;
// parameter traffic is the ParamSource's (H2D and communication streams,
// ordered by events). With stash=host on an asynchronous device (the GPU) the
// boundary copies overlap compute too: the relay keeps two device buffers per
// role (layer input, incoming gradient, layer output), loads micro-batch m+1
// on the H2D stream while m computes and stores m's output on the comm stream,
// all ordered by events (DESIGN §5: the stash traffic is about as large as the
// compute at BERT-large shape, so it must not sit on the compute stream).
// Elsewhere one buffer per role and the copies are in stream order. The relay
// thread blocks only where the host needs a result: the loss at the end of a
// step (TakeLoss), a gather that must wait for a layer's update, and the
// gradient norm.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "l2l/comm/comm.h"
#include "l2l/core/dtype.h"
#include "l2l/device/device.h"
#include "l2l/model/layer_exec.h"
#include "l2l/model/model.h"
#include "l2l/sched/param_source.h"

namespace l2l::sched {

enum class Stash { kHost, kDevice };

struct RelayOptions {
  int n_micro = 1;      // micro-batches per rank per step
  int micro_batch = 1;  // sequences per micro-batch
  Stash stash = Stash::kHost;
  int prefetch_depth = 1;
  DType dtype = DType::kF32;  // compute dtype: activations, stash, gathered parameters
  // Micro-batches carry position ids (MicroBatchInput::positions), staged and
  // uploaded with the other inputs (data.doc_positions: restart).
  bool position_ids = false;
};

// One micro-batch's inputs in host memory (the data module's MicroBatch).
struct MicroBatchInput {
  int rows = 0;
  const int32_t* tokens = nullptr;        // (rows, S)
  const int32_t* token_types = nullptr;   // (rows, S)
  const int32_t* targets = nullptr;       // (rows, S), -1 = no loss
  const uint8_t* attn_mask = nullptr;     // (rows, S), 1 = real token
  const uint64_t* sample_keys = nullptr;  // (rows)
  // (rows, S) in [0, S): set iff RelayOptions::position_ids, else nullptr.
  const int32_t* positions = nullptr;
};

struct StepOutput {
  double loss_sum = 0;       // this rank's summed cross-entropy (nats)
  int64_t targets = 0;       // this rank's target count
  double grad_norm = 0;      // global, before clipping (0 for eval)
  double compute_s = 0;      // step wall time not blocked on transfers or the optimizer
  double gather_wait_s = 0;  // host time blocked on parameter / gradient transfers
  double optimizer_wait_s = 0;
  int64_t gathers = 0;  // layer all-gathers issued (l2l)
};

// Itemised device bytes of a configuration: what Create will allocate.
struct DeviceMemoryPlan {
  int64_t params_bytes = 0;     // gather ring + gradient (l2l) or full model state (resident)
  int64_t workspace_bytes = 0;  // one layer, one micro-batch
  int64_t boundary_bytes = 0;   // boundary buffers, the step's inputs, loss slots
  int64_t stash_bytes = 0;      // device stash (0 with stash=host)
  int64_t total() const { return params_bytes + workspace_bytes + boundary_bytes + stash_bytes; }
};

// `exec` decides the workspace size and the element size of activations;
// an asynchronous device with stash=host gets double boundary buffers.
DeviceMemoryPlan PlanDeviceMemory(const model::ModelDims& dims, const RelayOptions& options,
                                  int64_t params_bytes, const model::LayerExec& exec,
                                  bool asynchronous_device);

// Layer executor options (Backend::create_layer_exec) that fit a relay of these options.
model::LayerExecOptions LayerExecOptionsFor(const model::ModelDims& dims,
                                            const RelayOptions& options);

class Relay {
 public:
  // `source` outlives the relay; `exec` (its dtype must be options.dtype) is
  // kept. Allocates the plan's buffers or returns the device's OutOfMemory
  // status.
  static StatusOr<std::unique_ptr<Relay>> Create(Device* device, const model::ModelDims& dims,
                                                 const RelayOptions& options, ParamSource* source,
                                                 std::unique_ptr<model::LayerExec> exec);

  // One training step over this rank's micro-batches (size n_micro).
  // grad_scale = 1 / (global target count of the step): the loss is the
  // global mean. lr is the scheduled rate; step is 0-based.
  StatusOr<StepOutput> TrainStep(int64_t step, uint64_t seed, float lr,
                                 const std::vector<MicroBatchInput>& batches, double grad_scale);

  // Forward + loss only (no dropout, no gradients) over the micro-batches.
  StatusOr<StepOutput> Evaluate(const std::vector<MicroBatchInput>& batches);

  int64_t host_stash_bytes() const { return static_cast<int64_t>(host_stash_.size_bytes()); }

 private:
  // Where micro-batch m's inputs sit inside a staging buffer (host or device).
  struct InputView {
    uint64_t* keys;
    int32_t* tokens;
    int32_t* types;
    int32_t* rows;  // token rows with a target (compacted)
    int32_t* row_targets;
    uint8_t* mask;
    int32_t* positions;  // nullptr unless options.position_ids
  };

  Relay(Device* device, const model::ModelDims& dims, const RelayOptions& options,
        ParamSource* source, std::unique_ptr<model::LayerExec> exec);
  Status Allocate();
  // Stages every micro-batch's inputs (and its compacted targets) in pinned
  // memory and uploads them in one copy. InvalidArgument for a bad target.
  Status UploadInputs(const std::vector<MicroBatchInput>& batches);
  InputView ViewAt(void* base, int micro) const;
  model::TargetRows TargetsOf(int micro) const;
  // Runs the forward relay (layers 0..L) into the stash.
  Status Forward(int64_t step, uint64_t seed, bool training, int n_batches);

  // One visit of the schedule: what differs between the forward relay, the
  // head (training or evaluation) and the backward relay. RunVisit does the
  // rest the same way for all of them.
  struct Visit {
    int index = 0;  // position in schedule_: Prefetch starts the visits after it
    int layer = 0;
    // The StepContext of every micro-batch (with the InputView's keys and
    // positions, see ContextAt).
    uint64_t seed = 0;
    int64_t step = 0;
    bool training = true;
    // Prefetch the visits after this one, around its work. Off for
    // evaluation's head: no visit of the evaluation follows it.
    bool prefetch = true;
    // Take the layer's gradient buffer before the work; submit it after the
    // release.
    bool gradient = false;
    // A tied head also holds layer 0 (its decoder): acquired after the head,
    // its gradient buffer (with `gradient`) taken after the head's, released
    // after the head. Layer 0's own backward visit submits that gradient.
    bool hold_embedding = false;
  };
  // What the layer work of one micro-batch is given.
  struct VisitParams {
    const void* params = nullptr;     // the layer's (ParamSource::Acquire)
    float* grad = nullptr;            // its gradient buffer, or nullptr
    const void* embedding = nullptr;  // layer 0's, held by a tied head, or nullptr
    float* embedding_grad = nullptr;  // layer 0's gradient buffer, or nullptr
  };
  // Loads micro-batch m's inputs from the stash into their boundary buffers.
  using LoadInputsFn = std::function<void(int m)>;
  // Enqueues micro-batch m's layer work (its output, if any, into
  // At(out_, m)) and ends with Done on each boundary buffer it read.
  using MicroBatchFn = std::function<void(int m, const model::StepContext& ctx, const InputView& in,
                                          const VisitParams& p)>;
  // The stash slot micro-batch m's output goes to.
  using OutputSlotFn = std::function<char*(int m)>;
  // Runs `visit` over micro-batches 0..n_batches-1: Acquire (then layer 0's
  // for hold_embedding), Prefetch(may_block=false), GradBuffer, load_inputs(0);
  // per micro-batch m: run(m), load_inputs(m+1) (so it overlaps m's work),
  // then Store of At(out_, m) into output_slot(m); then Prefetch(may_block=
  // true), Release, visit_base_ += n_batches, SubmitGrad. An empty
  // load_inputs loads nothing, an empty output_slot stores nothing.
  Status RunVisit(const Visit& visit, int n_batches, const LoadInputsFn& load_inputs,
                  const MicroBatchFn& run, const OutputSlotFn& output_slot);
  static model::StepContext ContextAt(const Visit& visit, const InputView& in);
  char* StashSlot(int layer_input, int micro);  // input of layer 1..L+1
  char* DStashSlot(int micro);

  // One device boundary buffer and the events that order it.
  struct Boundary {
    DeviceBuffer buf;
    std::unique_ptr<Event> loaded;  // the copy into buf is done (compute waits)
    std::unique_ptr<Event> idle;    // its last user is done (a new load or output waits)
  };
  // Buffer of `role` for micro-batch m of the current visit (role: in_, dy_
  // or out_). The index keeps counting across visits, so with two buffers the
  // next visit's first micro-batch does not reuse the buffer the last one of
  // this visit still needs (odd micro-batch counts).
  Boundary& At(std::vector<Boundary>& role, int m) {
    return role[static_cast<size_t>(visit_base_ + m) % role.size()];
  }
  // Copies stash slot `src` of micro-batch m into b (H2D stream for a host
  // stash, after b's last use and after the last store into m's slots).
  void Load(Boundary& b, const char* src, int m);
  // b as a compute input / output: the compute stream waits for its load /
  // for its previous store. After the compute: Done(b) for inputs.
  void* In(Boundary& b);
  void* Out(Boundary& b);
  void Done(Boundary& b);
  // Copies output b of micro-batch m to stash slot `dst` (comm stream for a
  // host stash, after the compute that wrote it).
  void Store(Boundary& b, char* dst, int m);
  // Starts the gathers of the prefetch_depth layers after `visit` in the
  // schedule, in order. Called twice per visit: before its work with
  // may_block false (so the gathers queue ahead of this visit's stash copies
  // on the copy streams), stopping at the first layer whose update is still
  // running; then after the work is enqueued with may_block true, so a host
  // wait for an update never keeps the device from the current layer.
  Status Prefetch(size_t visit, bool may_block);

  Device* device_;
  model::ModelDims dims_;
  RelayOptions options_;
  ParamSource* source_;
  std::unique_ptr<model::LayerExec> exec_;
  std::vector<int> schedule_;   // layer visit order: 0..L+1, then L..0
  int64_t boundary_bytes_ = 0;  // micro_batch * seq_len * hidden elements of the dtype
  int64_t input_bytes_ = 0;     // one micro-batch's staged inputs (aligned)

  DeviceBuffer workspace_, inputs_;
  std::vector<Boundary> in_, dy_, out_;  // layer input, incoming gradient, output
  bool overlap_copies_ = false;          // host stash on an asynchronous device
  int64_t visit_base_ = 0;               // micro-batches of earlier visits (At)
  // Per micro-batch: the last store into its stash slots (loads wait for it).
  std::vector<std::unique_ptr<Event>> stored_;
  HostBuffer staged_inputs_;
  std::vector<int64_t> target_counts_;  // per micro-batch of the step
  DeviceBuffer device_stash_;           // stash=device: stash and dstash
  HostBuffer host_stash_;               // stash=host: stash and dstash
  char* stash_base_ = nullptr;
};

}  // namespace l2l::sched
