#include "l2l/eps/param_server.h"

#include <cmath>
#include <cstring>

namespace l2l::eps {

StatusOr<double> GlobalGradNorm(const std::vector<double>& layer_sq_norms, Comm& comm) {
  double local = 0;
  for (double s : layer_sq_norms) local += s;
  double global = 0;
  RETURN_IF_ERROR(comm.AllReduce(&local, &global, 1, CommDType::kF64, ReduceOp::kSum));
  return std::sqrt(global);
}

float ClipScale(double norm, double clip) {
  if (clip <= 0 || !(norm > clip)) return 1.0f;
  return static_cast<float>(clip / (norm + 1e-6));
}

EagerParameterServer::EagerParameterServer(Device* device, Comm* comm,
                                           const OptimizerSettings& settings, int optimizer_threads,
                                           int num_layers)
    : device_(device),
      comm_(comm),
      settings_(settings),
      layers_(num_layers),
      queue_(optimizer_threads, num_layers) {}

StatusOr<std::unique_ptr<EagerParameterServer>> EagerParameterServer::Create(
    Device* device, Comm* comm, const std::vector<int64_t>& layer_size_elems,
    const LayerInitFn& init, const OptimizerSettings& settings, int optimizer_threads) {
  std::unique_ptr<EagerParameterServer> eps(new EagerParameterServer(
      device, comm, settings, optimizer_threads, static_cast<int>(layer_size_elems.size())));
  const int world = comm->size(), rank = comm->rank();
  for (size_t l = 0; l < layer_size_elems.size(); ++l) {
    LayerShardState& st = eps->layers_[l];
    st.size_elems = layer_size_elems[l];
    st.padded_elems = PaddedSizeElems(st.size_elems, world, kShardAlignElems);
    st.shard = ShardOf(st.padded_elems, world, rank);
    const size_t bytes = static_cast<size_t>(st.shard.size_elems) * sizeof(float);
    const std::string what = "EPS shard of layer " + std::to_string(l);
    for (HostBuffer* b : {&st.master, &st.m, &st.v, &st.grad}) {
      ASSIGN_OR_RETURN(*b, device->AllocatePinned(bytes, what));
      std::memset(b->data(), 0, bytes);
    }
    const Shard valid = ValidPart(st.shard, st.size_elems);
    if (valid.size_elems > 0) {
      init(static_cast<int>(l), valid.offset_elems, valid.end_elems(), st.master.as<float>());
    }
  }
  return eps;
}

int64_t EagerParameterServer::max_padded_elems() const {
  int64_t m = 0;
  for (const auto& st : layers_) m = std::max(m, st.padded_elems);
  return m;
}

AdamWParams MakeAdamWParams(const OptimizerSettings& settings, float lr, int64_t step_one_based) {
  AdamWParams hp;
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

Status EagerParameterServer::Gather(int layer, float* full_device) {
  LayerShardState& st = layers_[layer];
  queue_.WaitLayer(layer);
  float* own = full_device + st.shard.offset_elems;
  device_->CopyH2D(own, st.master.data(), st.shard.size_elems * sizeof(float), StreamKind::kH2D);
  device_->SynchronizeStream(StreamKind::kH2D);
  return comm_->AllGather(own, full_device, st.shard.size_elems, CommDType::kF32)
      .WithContext("gather of layer " + std::to_string(layer));
}

Status EagerParameterServer::ReduceScatter(int layer, float* grad_device) {
  LayerShardState& st = layers_[layer];
  // The previous step's update of this layer reads st.grad. The relay's
  // Gather(layer) earlier in this step already waited for it; waiting here
  // too keeps the contract independent of that ordering.
  queue_.WaitLayer(layer);
  RETURN_IF_ERROR(comm_
                      ->ReduceScatter(grad_device, grad_device, st.shard.size_elems,
                                      CommDType::kF32, ReduceOp::kSum)
                      .WithContext("reduce-scatter of layer " + std::to_string(layer)));
  device_->CopyD2H(st.grad.data(), grad_device, st.shard.size_elems * sizeof(float),
                   StreamKind::kD2H);
  device_->SynchronizeStream(StreamKind::kD2H);
  // One read of the shard, on the relay thread: the norm is ready for the
  // collective in FinishStep without waiting for any update.
  st.grad_sq_norm = SumSquares(st.grad.as<float>(), st.shard.size_elems);
  if (settings_.grad_clip <= 0) QueueUpdate(layer, 1.0f);
  return OkStatus();
}

void EagerParameterServer::QueueUpdate(int layer, float grad_scale) {
  LayerShardState& st = layers_[layer];
  AdamWParams hp = step_params_;
  hp.grad_scale = grad_scale;
  queue_.Submit(layer, st.shard.size_elems, [&st, hp](int64_t b, int64_t e) {
    AdamWUpdateF32Copy(hp, e - b, st.master.as<float>() + b, st.grad.as<float>() + b,
                       st.m.as<float>() + b, st.v.as<float>() + b, nullptr);
  });
}

StatusOr<double> EagerParameterServer::FinishStep() {
  std::vector<double> sq(layers_.size());
  for (int l = 0; l < num_layers(); ++l) sq[l] = layers_[l].grad_sq_norm;
  ASSIGN_OR_RETURN(double norm, GlobalGradNorm(sq, *comm_));
  if (settings_.grad_clip > 0) {
    const float scale = ClipScale(norm, settings_.grad_clip);
    for (int l = 0; l < num_layers(); ++l) QueueUpdate(l, scale);
  }
  return norm;
}

Status EagerParameterServer::ReadLayer(int layer, float* host_padded) {
  LayerShardState& st = layers_[layer];
  queue_.WaitLayer(layer);
  return comm_->AllGather(st.master.data(), host_padded, st.shard.size_elems, CommDType::kF32);
}

int64_t EagerParameterServer::host_bytes() const {
  int64_t b = 0;
  for (const auto& st : layers_) {
    b += static_cast<int64_t>(st.master.size_bytes() + st.m.size_bytes() + st.v.size_bytes() +
                              st.grad.size_bytes());
  }
  return b;
}

}  // namespace l2l::eps
