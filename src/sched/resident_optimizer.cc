#include "l2l/sched/resident_optimizer.h"

#include "l2l/eps/optimizer_queue.h"

namespace l2l::sched {
namespace {

class CpuResidentOptimizer final : public ResidentOptimizer {
 public:
  CpuResidentOptimizer(int threads, int num_layers)
      : queue_(threads, num_layers), sums_(num_layers, 0.0) {}

  void SumSquares(int layer, const float* x, int64_t n) override {
    sums_[layer] = kernels::SumSquares(x, n);
  }
  std::vector<double> TakeSumSquares() override {
    std::vector<double> out(sums_.size(), 0.0);
    out.swap(sums_);
    return out;
  }
  void Update(int layer, const kernels::AdamWParams& hp, const std::vector<eps::Shard>& no_decay,
              int64_t n, float* p, const float* g, float* m, float* v,
              void* compute_copy) override {
    auto* copy = static_cast<uint16_t*>(compute_copy);
    queue_.Submit(layer, n, [=, &no_decay](int64_t b, int64_t e) {
      eps::ForEachDecayRun(no_decay, b, e, [&](int64_t rb, int64_t re, bool decay) {
        kernels::AdamWParams run = hp;
        if (!decay) run.weight_decay = 0.0f;
        if (copy != nullptr) {
          kernels::AdamWUpdate(run, re - rb, p + rb, g + rb, m + rb, v + rb, copy + rb);
        } else {
          kernels::AdamWUpdateF32Copy(run, re - rb, p + rb, g + rb, m + rb, v + rb, nullptr);
        }
      });
    });
  }
  void WaitAll() override { queue_.WaitAll(); }
  void ToBF16(const float* x, int64_t n, void* y) override {
    auto* out = static_cast<uint16_t*>(y);
    for (int64_t i = 0; i < n; ++i) out[i] = F32ToBF16(x[i]);
  }
  double TakeWaitSeconds() override { return queue_.TakeWaitSeconds(); }

 private:
  eps::OptimizerQueue queue_;
  std::vector<double> sums_;
};

}  // namespace

std::unique_ptr<ResidentOptimizer> CreateCpuResidentOptimizer(int optimizer_threads,
                                                              int num_layers) {
  return std::make_unique<CpuResidentOptimizer>(optimizer_threads, num_layers);
}

}  // namespace l2l::sched
