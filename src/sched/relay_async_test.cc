// Stream ordering of the relay, the parameter sources and the EPS, checked
// without a GPU: the same training steps on AsyncCpuDevice (H2D / D2H work
// deferred until an event or a synchronisation forces it, see
// async_cpu_device.h) and on the synchronous CpuDevice must give bitwise the
// same losses, gradient norms and weights. A missing event wait anywhere in
// the chain (gather -> compute, compute -> reduce-scatter -> optimizer,
// gradient buffer reuse) lets a consumer read memory a deferred copy has not
// written yet, and the results differ. One rank (MPI main for the host comm).
#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "async_cpu_device.h"
#include "l2l/comm/mpi_comm.h"
#include "l2l/device/cpu_device.h"
#include "l2l/eps/param_server.h"
#include "l2l/sched/param_source.h"
#include "l2l/sched/relay.h"

namespace l2l::sched {
namespace {

model::ModelDims Dims(model::Arch arch = model::Arch::kBert, bool tied = false) {
  model::ModelDims d;
  d.arch = arch;
  d.tie_embeddings = tied;
  if (arch == model::Arch::kLlama) d.kv_heads = 2;
  d.num_blocks = 3;
  d.hidden = 32;
  d.heads = 4;
  d.ffn = 64;
  d.vocab = 40;
  d.seq_len = 16;
  d.dropout = 0.1;
  return d;
}

// n_micro micro-batches of `rows` sequences, fixed per step.
struct Batches {
  std::vector<std::vector<int32_t>> tokens, types, targets;
  std::vector<std::vector<uint8_t>> mask;
  std::vector<std::vector<uint64_t>> keys;
  std::vector<MicroBatchInput> inputs;
  int64_t target_count = 0;
};

Batches MakeBatches(const model::ModelDims& d, int step, int n_micro, int rows) {
  Batches b;
  std::mt19937 rng(1000 + step);
  std::uniform_int_distribution<int32_t> tok(0, d.vocab - 1), coin(0, 3), typ(0, 1);
  const int cells = rows * d.seq_len;
  for (int m = 0; m < n_micro; ++m) {
    b.tokens.emplace_back(cells);
    b.types.emplace_back(cells);
    b.targets.emplace_back(cells);
    b.mask.emplace_back(cells, 1);
    b.keys.emplace_back(rows);
    for (int i = 0; i < cells; ++i) {
      b.tokens[m][i] = tok(rng);
      b.types[m][i] = typ(rng);
      b.targets[m][i] = coin(rng) == 0 ? tok(rng) : kNoTarget;
      b.target_count += b.targets[m][i] != kNoTarget;
    }
    b.mask[m][cells - 1] = 0;
    for (int r = 0; r < rows; ++r) b.keys[m][r] = static_cast<uint64_t>(step * 100 + m * rows + r);
  }
  for (int m = 0; m < n_micro; ++m) {
    b.inputs.push_back({rows, b.tokens[m].data(), b.types[m].data(), b.targets[m].data(),
                        b.mask[m].data(), b.keys[m].data()});
  }
  return b;
}

struct Result {
  std::vector<double> losses;  // per step, and the evaluation after step 1
  std::vector<double> norms;
  std::vector<std::vector<float>> weights;
  int64_t gathers = 0;
};

// Trains 3 steps on `device`; `device_comm` does the device collectives.
Result Train(const model::ModelDims& d, Device* device, Comm* host_comm, Comm* device_comm,
             bool resident, double clip, int prefetch_depth, int n_micro) {
  RelayOptions ro;
  ro.n_micro = n_micro;
  ro.micro_batch = 2;
  ro.stash = Stash::kHost;
  ro.prefetch_depth = prefetch_depth;
  std::vector<int64_t> sizes;
  for (int l = 0; l < model::NumLayers(d); ++l)
    sizes.push_back(model::LayoutForLayer(d, l).size_elems());
  eps::OptimizerSettings os;
  os.grad_clip = clip;
  const eps::LayerInitFn init = [d](int layer, int64_t b, int64_t e, float* out) {
    model::InitParamRange(d, layer, 5, b, e, out);
  };
  std::unique_ptr<eps::EagerParameterServer> server;
  std::unique_ptr<ParamSource> source;
  if (resident) {
    auto s = CreateResidentParamSource(
        device, host_comm, device_comm, sizes, init, os,
        CreateCpuResidentOptimizer(2, static_cast<int>(sizes.size())), DType::kF32);
    L2L_CHECK(s.ok()) << s.status().message();
    source = std::move(s).value();
  } else {
    auto e = eps::EagerParameterServer::Create(device, host_comm, device_comm, sizes, init, os, 2,
                                               DType::kF32);
    L2L_CHECK(e.ok()) << e.status().message();
    server = std::move(e).value();
    auto s = CreateL2LParamSource(device, server.get(), prefetch_depth, d.tie_embeddings ? 0 : -1);
    L2L_CHECK(s.ok()) << s.status().message();
    source = std::move(s).value();
  }
  auto exec = model::CreateCpuLayerExec(d, LayerExecOptionsFor(d, ro));
  L2L_CHECK(exec.ok()) << exec.status().message();
  auto relay = Relay::Create(device, d, ro, source.get(), std::move(exec).value());
  L2L_CHECK(relay.ok()) << relay.status().message();
  Result r;
  for (int step = 0; step < 3; ++step) {
    const Batches b = MakeBatches(d, step, ro.n_micro, ro.micro_batch);
    auto out = (*relay)->TrainStep(step, 9, 1e-3f, b.inputs, 1.0 / b.target_count);
    L2L_CHECK(out.ok()) << out.status().message();
    r.losses.push_back(out->loss_sum);
    r.norms.push_back(out->grad_norm);
    r.gathers += out->gathers;
    if (step == 1) {  // an evaluation between steps: forward and head only
      auto eval = (*relay)->Evaluate(b.inputs);
      L2L_CHECK(eval.ok()) << eval.status().message();
      r.losses.push_back(eval->loss_sum);
    }
  }
  for (int l = 0; l < model::NumLayers(d); ++l) {
    r.weights.emplace_back(source->padded_elems(l));
    L2L_CHECK(source->ReadLayer(l, r.weights.back().data()).ok());
  }
  source->WaitForUpdates();
  return r;
}

void ExpectSameAsSynchronous(bool resident, double clip, int depth, int n_micro = 4,
                             const model::ModelDims& d = Dims()) {
  MpiComm mpi;
  ASSERT_EQ(mpi.size(), 1) << "run on one rank";
  CpuDevice cpu(0);
  const Result want = Train(d, &cpu, &mpi, &mpi, resident, clip, depth, n_micro);
  testing::AsyncCpuDevice async;
  testing::StreamComm stream_comm(&async, &mpi);
  const Result got = Train(d, &async, &mpi, &stream_comm, resident, clip, depth, n_micro);
  ASSERT_EQ(got.losses.size(), want.losses.size());
  for (size_t i = 0; i < want.losses.size(); ++i) {
    EXPECT_EQ(got.losses[i], want.losses[i]) << "loss " << i << " (3 steps and an evaluation)";
  }
  for (size_t s = 0; s < want.norms.size(); ++s) {
    EXPECT_EQ(got.norms[s], want.norms[s]) << "step " << s;
  }
  for (size_t l = 0; l < want.weights.size(); ++l) {
    EXPECT_EQ(std::memcmp(got.weights[l].data(), want.weights[l].data(),
                          want.weights[l].size() * sizeof(float)),
              0)
        << "layer " << l << " differs";
  }
  EXPECT_EQ(got.gathers, want.gathers);
}

// Four micro-batches: more than the two buffers per role, so buffers are
// reused within a layer; three: odd, so a visit's last micro-batch and the
// next visit's first use different buffers; one: every boundary round-trips.
TEST(AsyncOrdering, L2LEagerUpdates) { ExpectSameAsSynchronous(false, 0.0, 1); }
TEST(AsyncOrdering, L2LOddMicroBatches) { ExpectSameAsSynchronous(false, 0.5, 1, 3); }
TEST(AsyncOrdering, L2LOneMicroBatch) { ExpectSameAsSynchronous(false, 0.0, 2, 1); }
TEST(AsyncOrdering, L2LClippedUpdates) { ExpectSameAsSynchronous(false, 0.5, 1); }
TEST(AsyncOrdering, L2LNoPrefetch) { ExpectSameAsSynchronous(false, 0.0, 0); }
TEST(AsyncOrdering, L2LDeepPrefetch) { ExpectSameAsSynchronous(false, 0.5, 3); }
TEST(AsyncOrdering, Resident) { ExpectSameAsSynchronous(true, 0.5, 1); }
// Tied embeddings: layer 0 is held (own gather and gradient buffers) from the
// embedding through the head to the embedding's backward.
TEST(AsyncOrdering, L2LTiedGpt2) {
  ExpectSameAsSynchronous(false, 0.0, 1, 4, Dims(model::Arch::kGpt2, true));
}
TEST(AsyncOrdering, L2LTiedLlamaClippedNoPrefetch) {
  ExpectSameAsSynchronous(false, 0.5, 0, 3, Dims(model::Arch::kLlama, true));
}
TEST(AsyncOrdering, L2LUntiedLlama) {
  ExpectSameAsSynchronous(false, 0.5, 2, 1, Dims(model::Arch::kLlama, false));
}
TEST(AsyncOrdering, ResidentTiedLlama) {
  ExpectSameAsSynchronous(true, 0.5, 1, 4, Dims(model::Arch::kLlama, true));
}

}  // namespace
}  // namespace l2l::sched
