// The CUDA ResidentOptimizer: AdamW, norms and conversions as kernels on the
// device's compute stream (so they follow the step's gradient work in order).
#include "l2l/sched/resident_optimizer_cuda.h"

#include <chrono>
#include <utility>
#include <vector>

#include "l2l/kernels/cuda.h"

namespace l2l::sched {
namespace {

namespace kc = kernels::cuda;

void Check(const Status& s) { L2L_CHECK(s.ok()) << s.message(); }

class CudaResidentOptimizer final : public ResidentOptimizer {
 public:
  CudaResidentOptimizer(CudaDevice* device, DeviceBuffer scratch, DeviceBuffer out,
                        HostBuffer host_out)
      : device_(device),
        scratch_(std::move(scratch)),
        out_(std::move(out)),
        host_out_(std::move(host_out)) {}

  // The sums land in a device array, one double per layer, read at once by
  // TakeSumSquares: no host synchronisation per layer.
  void SumSquares(int layer, const float* x, int64_t n) override {
    Check(kc::SumSquares(stream(), x, n, scratch_.as<double>(), out_.as<double>() + layer));
  }
  std::vector<double> TakeSumSquares() override {
    const size_t bytes = out_.size_bytes();
    device_->CopyD2H(host_out_.data(), out_.data(), bytes, StreamKind::kCompute);
    device_->Memset(out_.data(), 0, bytes, StreamKind::kCompute);
    device_->SynchronizeStream(StreamKind::kCompute);
    const double* h = host_out_.as<double>();
    return std::vector<double>(h, h + bytes / sizeof(double));
  }
  // One launch per run of eps::ForEachDecayRun (a handful per layer).
  void Update(int, const kernels::AdamWParams& hp, const std::vector<eps::Shard>& no_decay,
              int64_t n, float* p, const float* g, float* m, float* v,
              void* compute_copy) override {
    auto* copy = static_cast<kc::bf16*>(compute_copy);
    eps::ForEachDecayRun(no_decay, 0, n, [&](int64_t b, int64_t e, bool decay) {
      kernels::AdamWParams run = hp;
      if (!decay) run.weight_decay = 0.0f;
      if (copy != nullptr) {
        Check(kc::AdamWUpdate(stream(), run, e - b, p + b, g + b, m + b, v + b, copy + b));
      } else {
        Check(kc::AdamWUpdateF32Copy(stream(), run, e - b, p + b, g + b, m + b, v + b, nullptr));
      }
    });
  }
  void WaitAll() override {
    const auto t0 = std::chrono::steady_clock::now();
    device_->SynchronizeStream(StreamKind::kCompute);
    wait_s_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  void ToBF16(const float* x, int64_t n, void* y) override {
    Check(kc::ConvertF32ToBF16(stream(), x, n, static_cast<kc::bf16*>(y)));
  }
  double TakeWaitSeconds() override { return std::exchange(wait_s_, 0.0); }

 private:
  cudaStream_t stream() const { return device_->stream(StreamKind::kCompute); }

  CudaDevice* device_;
  DeviceBuffer scratch_, out_;
  HostBuffer host_out_;
  double wait_s_ = 0;
};

}  // namespace

int64_t NormScratchElems(int64_t max_elems) {
  return std::max<int64_t>(kc::SumSquaresScratchElems(max_elems), 1);
}

int64_t CudaResidentOptimizerDeviceBytes(int num_layers, int64_t max_elems) {
  return (NormScratchElems(max_elems) + num_layers) * static_cast<int64_t>(sizeof(double));
}

StatusOr<std::unique_ptr<ResidentOptimizer>> CreateCudaResidentOptimizer(CudaDevice* device,
                                                                         int num_layers,
                                                                         int64_t max_elems) {
  const int64_t scratch = NormScratchElems(max_elems);
  ASSIGN_OR_RETURN(DeviceBuffer s, device->Allocate(scratch * sizeof(double), "norm scratch"));
  const size_t out_bytes = static_cast<size_t>(num_layers) * sizeof(double);
  ASSIGN_OR_RETURN(DeviceBuffer o, device->Allocate(out_bytes, "gradient norms"));
  ASSIGN_OR_RETURN(HostBuffer h, device->AllocatePinned(out_bytes, "gradient norms (host)"));
  device->Memset(o.data(), 0, out_bytes, StreamKind::kCompute);
  return std::unique_ptr<ResidentOptimizer>(
      std::make_unique<CudaResidentOptimizer>(device, std::move(s), std::move(o), std::move(h)));
}

}  // namespace l2l::sched
