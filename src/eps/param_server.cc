#include "l2l/eps/param_server.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>

#include "l2l/core/byte_size.h"

namespace l2l::eps {
namespace {

// Setup work on host shards is spread over OpenMP threads from this size:
// at 384 BERT-large layers the EPS zeroes and converts ~90 GB at start.
constexpr int64_t kParallelElems = int64_t{1} << 20;

void ParallelZero(float* p, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= kParallelElems)
  for (int64_t i = 0; i < n; ++i) p[i] = 0.0f;
}

}  // namespace

StatusOr<double> GlobalGradNorm(const std::vector<double>& layer_sq_norms, Comm& comm) {
  double local = 0;
  for (double s : layer_sq_norms) local += s;
  double global = 0;
  RETURN_IF_ERROR(comm.AllReduce(&local, &global, 1, CommDType::kF64, ReduceOp::kSum));
  return std::sqrt(global);
}

const std::vector<Shard>& NoDecayOf(const OptimizerSettings& s, int layer) {
  static const std::vector<Shard> kNone;
  return layer < static_cast<int>(s.no_decay.size()) ? s.no_decay[layer] : kNone;
}

float ClipScale(double norm, double clip) {
  if (clip <= 0 || !(norm > clip)) return 1.0f;
  return static_cast<float>(clip / (norm + 1e-6));
}

EagerParameterServer::EagerParameterServer(Device* device, Comm* host_comm, Comm* device_comm,
                                           const OptimizerSettings& settings, int optimizer_threads,
                                           int num_layers, DType compute_dtype)
    : device_(device),
      host_comm_(host_comm),
      device_comm_(device_comm),
      compute_dtype_(compute_dtype),
      settings_(settings),
      layers_(num_layers),
      // Slots 0..L-1: updates; L..2L-1: gradient norms (waited for separately).
      queue_(optimizer_threads, 2 * num_layers) {}

namespace {

// OutOfMemory, before anything is allocated, when one rank's shards alone
// (fp32 master, both AdamW moments and the gradient, plus the bf16 compute
// copy) exceed this machine's physical memory: the allocations would fail
// somewhere in the middle, or the per-layer bookkeeping of a model with
// millions of layers would throw. Saturating arithmetic: sizes come from
// the user's config.
Status CheckHostMemory(const std::vector<int64_t>& layer_size_elems, int world, DType dtype) {
  const int64_t per_elem = 4 * static_cast<int64_t>(sizeof(float)) +
                           (dtype == DType::kBF16 ? static_cast<int64_t>(sizeof(uint16_t)) : 0);
  const int64_t kMax = std::numeric_limits<int64_t>::max();
  int64_t need = 0;
  for (int64_t size : layer_size_elems) {
    const int64_t shard = PaddedSizeElems(size, world, kShardAlignElems) / world;
    int64_t bytes = 0;
    if (__builtin_mul_overflow(shard, per_elem, &bytes) ||
        __builtin_add_overflow(need, bytes, &need)) {
      need = kMax;
      break;
    }
  }
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page <= 0) return OkStatus();  // unknown: let the allocations decide
  const int64_t have = static_cast<int64_t>(pages) * page;
  if (need <= have) return OkStatus();
  return OutOfMemory("host memory: each of the " + std::to_string(world) + " ranks needs " +
                     (need == kMax ? std::string("more than 8 EiB") : FormatBytes(need)) +
                     " for its EPS shards (fp32 weights, two AdamW moments and the gradient of "
                     "1/world_size of the model), more than this machine's " +
                     FormatBytes(have) + " of memory; use more ranks or nodes, or a smaller model");
}

}  // namespace

StatusOr<std::unique_ptr<EagerParameterServer>> EagerParameterServer::Create(
    Device* device, Comm* host_comm, Comm* device_comm,
    const std::vector<int64_t>& layer_size_elems, const LayerInitFn& init,
    const OptimizerSettings& settings, int optimizer_threads, DType compute_dtype) {
  if (compute_dtype != DType::kF32 && compute_dtype != DType::kBF16) {
    return InvalidArgument(std::string("EPS compute dtype ") + DTypeName(compute_dtype) +
                           " (expected f32 or bf16)");
  }
  L2L_CHECK(host_comm->size() == device_comm->size() && host_comm->rank() == device_comm->rank())
      << "host and device communicators must number the ranks alike";
  RETURN_IF_ERROR(CheckHostMemory(layer_size_elems, host_comm->size(), compute_dtype));
  std::unique_ptr<EagerParameterServer> eps(
      new EagerParameterServer(device, host_comm, device_comm, settings, optimizer_threads,
                               static_cast<int>(layer_size_elems.size()), compute_dtype));
  const int world = host_comm->size(), rank = host_comm->rank();
  for (size_t l = 0; l < layer_size_elems.size(); ++l) {
    LayerShardState& st = eps->layers_[l];
    st.size_elems = layer_size_elems[l];
    st.padded_elems = PaddedSizeElems(st.size_elems, world, kShardAlignElems);
    st.shard = ShardOf(st.padded_elems, world, rank);
    const size_t bytes = static_cast<size_t>(st.shard.size_elems) * sizeof(float);
    const std::string what = "EPS shard of layer " + std::to_string(l);
    for (HostBuffer* b : {&st.master, &st.m, &st.v, &st.grad}) {
      ASSIGN_OR_RETURN(*b, device->AllocatePinned(bytes, what));
      ParallelZero(b->as<float>(), st.shard.size_elems);
    }
    const Shard valid = ValidPart(st.shard, st.size_elems);
    if (valid.size_elems > 0) {
      init(static_cast<int>(l), valid.offset_elems, valid.end_elems(), st.master.as<float>());
    }
    if (compute_dtype == DType::kBF16) {
      ASSIGN_OR_RETURN(st.compute,
                       device->AllocatePinned(st.shard.size_elems * sizeof(uint16_t), what));
      eps->RefreshComputeCopy(static_cast<int>(l));
    }
  }
  return eps;
}

int64_t EagerParameterServer::max_padded_elems() const {
  int64_t m = 0;
  for (const auto& st : layers_) m = std::max(m, st.padded_elems);
  return m;
}

kernels::AdamWParams MakeAdamWParams(const OptimizerSettings& settings, float lr,
                                     int64_t step_one_based) {
  kernels::AdamWParams hp;
  hp.lr = lr;
  hp.beta1 = static_cast<float>(settings.beta1);
  hp.beta2 = static_cast<float>(settings.beta2);
  hp.eps = static_cast<float>(settings.eps);
  hp.weight_decay = static_cast<float>(settings.weight_decay);
  hp.step = step_one_based;
  hp.grad_scale = 1.0f;
  return hp;
}

void EagerParameterServer::BeginStep(float lr, int64_t step_one_based) {
  step_params_ = MakeAdamWParams(settings_, lr, step_one_based);
}

void EagerParameterServer::RefreshComputeCopy(int layer) {
  LayerShardState& st = layers_[layer];
  if (compute_dtype_ != DType::kBF16) return;
  queue_.WaitLayer(layer);
  const float* p = st.master.as<float>();
  uint16_t* c = st.compute.as<uint16_t>();
  const int64_t n = st.shard.size_elems;
#pragma omp parallel for schedule(static) if (n >= kParallelElems)
  for (int64_t i = 0; i < n; ++i) c[i] = F32ToBF16(p[i]);
}

StatusOr<std::unique_ptr<Event>> EagerParameterServer::Gather(int layer, void* full_device,
                                                              Event* buffer_free) {
  LayerShardState& st = layers_[layer];
  queue_.WaitLayer(layer);  // the shard (and its compute copy) is current
  const size_t elem = DTypeSizeBytes(compute_dtype_);
  char* own = static_cast<char*>(full_device) + st.shard.offset_elems * elem;
  const void* src = compute_dtype_ == DType::kBF16 ? st.compute.data() : st.master.data();
  if (buffer_free != nullptr) {
    device_->StreamWaitEvent(StreamKind::kH2D, *buffer_free);
    device_->StreamWaitEvent(StreamKind::kComm, *buffer_free);
  }
  device_->CopyH2D(own, src, st.shard.size_elems * elem, StreamKind::kH2D);
  std::unique_ptr<Event> copied = device_->RecordEvent(StreamKind::kH2D);
  device_->StreamWaitEvent(StreamKind::kComm, *copied);
  const CommDType dt = compute_dtype_ == DType::kBF16 ? CommDType::kBF16 : CommDType::kF32;
  RETURN_IF_ERROR(device_comm_->AllGatherEnqueue(own, full_device, st.shard.size_elems, dt)
                      .WithContext("gather of layer " + std::to_string(layer)));
  return device_->RecordEvent(StreamKind::kComm);
}

StatusOr<std::shared_ptr<Event>> EagerParameterServer::ReduceScatter(int layer, float* grad_device,
                                                                     Event& grad_ready) {
  LayerShardState& st = layers_[layer];
  // The previous step's update and norm of this layer read st.grad, which the
  // D2H below overwrites. The relay's Gather(layer) earlier in this step and
  // FinishStep already waited for them; waiting here too keeps the contract
  // independent of that ordering.
  queue_.WaitLayer(layer);
  queue_.WaitLayer(NormSlot(layer));
  device_->StreamWaitEvent(StreamKind::kComm, grad_ready);
  RETURN_IF_ERROR(device_comm_
                      ->ReduceScatterEnqueue(grad_device, grad_device, st.shard.size_elems,
                                             CommDType::kF32, ReduceOp::kSum)
                      .WithContext("reduce-scatter of layer " + std::to_string(layer)));
  device_->CopyD2H(st.grad.data(), grad_device, st.shard.size_elems * sizeof(float),
                   StreamKind::kComm);
  st.landed = device_->RecordEvent(StreamKind::kComm);
  // The norm on an optimizer thread, as soon as the shard lands: FinishStep
  // needs it, the relay thread does not wait for it here.
  // Chunked like the update, so several threads share a big shard without
  // nested OpenMP teams. The queue's chunks are SumSquares's chunks, and
  // FinishStep adds the parts in index order, which is exactly
  // SumSquares(grad, n): bitwise what the resident baseline computes.
  constexpr int64_t kChunk = kernels::kSumSquaresChunkElems;
  static_assert(OptimizerQueue::kChunkElems == kChunk);
  st.norm_parts.assign((st.shard.size_elems + kChunk - 1) / kChunk, 0.0);
  queue_.Submit(NormSlot(layer), st.shard.size_elems,
                [&st, landed = st.landed](int64_t b, int64_t e) {
                  landed->HostWait();
                  if (e > b) {
                    st.norm_parts[b / kChunk] = kernels::SumSquares(st.grad.as<float>() + b, e - b);
                  }
                });
  if (settings_.grad_clip <= 0) QueueUpdate(layer, 1.0f);
  return st.landed;
}

void EagerParameterServer::QueueUpdate(int layer, float grad_scale) {
  LayerShardState& st = layers_[layer];
  kernels::AdamWParams hp = step_params_;
  hp.grad_scale = grad_scale;
  std::shared_ptr<Event> landed = st.landed;
  const bool bf16 = compute_dtype_ == DType::kBF16;
  const std::vector<Shard>* no_decay = &NoDecayOf(settings_, layer);
  queue_.Submit(
      layer, st.shard.size_elems, [&st, hp, landed, bf16, no_decay](int64_t b, int64_t e) {
        if (landed) landed->HostWait();
        // The runs are in layer coordinates; the shard starts at st.shard.offset_elems.
        const int64_t off = st.shard.offset_elems;
        ForEachDecayRun(*no_decay, off + b, off + e, [&](int64_t rb, int64_t re, bool decay) {
          kernels::AdamWParams run = hp;
          if (!decay) run.weight_decay = 0.0f;
          const int64_t i = rb - off;
          if (bf16) {
            kernels::AdamWUpdate(run, re - rb, st.master.as<float>() + i, st.grad.as<float>() + i,
                                 st.m.as<float>() + i, st.v.as<float>() + i,
                                 st.compute.as<uint16_t>() + i);
          } else {
            kernels::AdamWUpdateF32Copy(run, re - rb, st.master.as<float>() + i,
                                        st.grad.as<float>() + i, st.m.as<float>() + i,
                                        st.v.as<float>() + i, nullptr);
          }
        });
      });
}

StatusOr<double> EagerParameterServer::FinishStep() {
  std::vector<double> sq(layers_.size());
  for (int l = 0; l < num_layers(); ++l) {
    queue_.WaitLayer(NormSlot(l));
    double sum = 0.0;
    for (double part : layers_[l].norm_parts) sum += part;
    sq[l] = sum;
  }
  ASSIGN_OR_RETURN(double norm, GlobalGradNorm(sq, *host_comm_));
  if (settings_.grad_clip > 0) {
    const float scale = ClipScale(norm, settings_.grad_clip);
    for (int l = 0; l < num_layers(); ++l) QueueUpdate(l, scale);
  }
  return norm;
}

Status EagerParameterServer::ReadLayer(int layer, float* host_padded) {
  LayerShardState& st = layers_[layer];
  queue_.WaitLayer(layer);
  return host_comm_->AllGather(st.master.data(), host_padded, st.shard.size_elems, CommDType::kF32);
}

int64_t EagerParameterServer::host_bytes() const {
  int64_t b = 0;
  for (const auto& st : layers_) {
    b += static_cast<int64_t>(st.master.size_bytes() + st.m.size_bytes() + st.v.size_bytes() +
                              st.grad.size_bytes() + st.compute.size_bytes());
  }
  return b;
}

}  // namespace l2l::eps
