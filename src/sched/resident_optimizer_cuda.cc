// The CUDA ResidentOptimizer: AdamW, norms and conversions as kernels on the
// device's compute stream (so they follow the step's gradient work in order).
#include <chrono>

#include "l2l/device/cuda_device.h"
#include "l2l/kernels/cuda.h"
#include "l2l/sched/resident_optimizer.h"

namespace l2l::sched {
namespace {

namespace kc = kernels::cuda;

void Check(const Status& s) { L2L_CHECK(s.ok()) << s.message(); }

kc::AdamWParams ToCuda(const eps::AdamWParams& hp) {
  kc::AdamWParams c;
  c.lr = hp.lr;
  c.beta1 = hp.beta1;
  c.beta2 = hp.beta2;
  c.eps = hp.eps;
  c.weight_decay = hp.weight_decay;
  c.step = hp.step;
  c.grad_scale = hp.grad_scale;
  return c;
}

class CudaResidentOptimizer final : public ResidentOptimizer {
 public:
  CudaResidentOptimizer(CudaDevice* device, DeviceBuffer scratch, DeviceBuffer out,
                        HostBuffer host_out)
      : device_(device),
        scratch_(std::move(scratch)),
        out_(std::move(out)),
        host_out_(std::move(host_out)) {}

  double SumSquares(const float* x, int64_t n) override {
    const cudaStream_t s = stream();
    Check(kc::SumSquares(s, x, n, scratch_.as<double>(), out_.as<double>()));
    device_->CopyD2H(host_out_.data(), out_.data(), sizeof(double), StreamKind::kCompute);
    device_->SynchronizeStream(StreamKind::kCompute);
    return *host_out_.as<double>();
  }
  void Update(int, const eps::AdamWParams& hp, int64_t n, float* p, const float* g, float* m,
              float* v, void* compute_copy) override {
    if (compute_copy != nullptr) {
      Check(kc::AdamWUpdate(stream(), ToCuda(hp), n, p, g, m, v,
                            static_cast<kc::bf16*>(compute_copy)));
    } else {
      Check(kc::AdamWUpdateF32Copy(stream(), ToCuda(hp), n, p, g, m, v, nullptr));
    }
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

StatusOr<std::unique_ptr<ResidentOptimizer>> CreateCudaResidentOptimizer(Device* device,
                                                                         int64_t max_elems) {
  auto* cuda = dynamic_cast<CudaDevice*>(device);
  L2L_CHECK(cuda != nullptr) << "a kCuda device that is not a CudaDevice";
  const int64_t scratch = std::max<int64_t>(kc::SumSquaresScratchElems(max_elems), 1);
  ASSIGN_OR_RETURN(DeviceBuffer s, device->Allocate(scratch * sizeof(double), "norm scratch"));
  ASSIGN_OR_RETURN(DeviceBuffer o, device->Allocate(sizeof(double), "norm result"));
  ASSIGN_OR_RETURN(HostBuffer h, device->AllocatePinned(sizeof(double), "norm result (host)"));
  return std::unique_ptr<ResidentOptimizer>(
      std::make_unique<CudaResidentOptimizer>(cuda, std::move(s), std::move(o), std::move(h)));
}

}  // namespace l2l::sched
