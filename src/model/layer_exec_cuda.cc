// The CUDA rows of the layer executor: CudaOps<float> and CudaOps<bf16> on
// the device's compute stream, with one cuBLAS handle and the loss slots.
#include "l2l/model/layer_exec_cuda.h"

#include <memory>
#include <utility>

#include "l2l/kernels/cuda_ops.h"
#include "typed_exec.h"

namespace l2l::model {
namespace {

// What the ops object points at; owned by the executor.
struct CudaExecResources {
  kernels::cuda::CublasHandles handles;
  DeviceBuffer device_slots;
  HostBuffer host_slots;
  kernels::CudaLossSlots slots;
};

template <typename T>
class CudaLayerExec final : public internal::TypedLayerExec<kernels::CudaOps<T>> {
  using Base = internal::TypedLayerExec<kernels::CudaOps<T>>;

 public:
  // The base is built first, from pointers into `res`, which is then kept.
  CudaLayerExec(const ModelDims& dims, DType dtype, std::unique_ptr<CudaExecResources> res,
                CudaDevice* device)
      : Base(dims, dtype, kernels::CudaOps<T>(&res->handles, device, &res->slots),
             static_cast<int64_t>(res->device_slots.size_bytes())),
        res_(std::move(res)) {}

 private:
  std::unique_ptr<CudaExecResources> res_;
};

}  // namespace

StatusOr<std::unique_ptr<LayerExec>> CreateCudaLayerExec(CudaDevice* device, const ModelDims& dims,
                                                         const LayerExecOptions& options) {
  RETURN_IF_ERROR(ValidateModelDims(dims));
  if (options.dtype != DType::kF32 && options.dtype != DType::kBF16) {
    return InvalidArgument(std::string("exec.precision: ") + DTypeName(options.dtype) +
                           " is not supported on the GPU (use fp32 or bf16)");
  }
  CudaDeviceGuard guard(device->ordinal());
  ASSIGN_OR_RETURN(kernels::cuda::CublasHandles handles, kernels::cuda::CublasHandles::Create());
  const int slots = std::max(1, options.max_head_calls_per_step);
  const size_t bytes = slots * sizeof(kernels::cuda::CrossEntropyStats);
  ASSIGN_OR_RETURN(DeviceBuffer dslots, device->Allocate(bytes, "loss statistics"));
  ASSIGN_OR_RETURN(HostBuffer hslots, device->AllocatePinned(bytes, "loss statistics (host)"));
  auto res = std::make_unique<CudaExecResources>(
      CudaExecResources{std::move(handles), std::move(dslots), std::move(hslots), {}});
  res->slots.device = res->device_slots.as<kernels::cuda::CrossEntropyStats>();
  res->slots.host = res->host_slots.as<kernels::cuda::CrossEntropyStats>();
  res->slots.capacity = slots;
  if (options.dtype == DType::kBF16) {
    return std::unique_ptr<LayerExec>(std::make_unique<CudaLayerExec<kernels::cuda::bf16>>(
        dims, DType::kBF16, std::move(res), device));
  }
  return std::unique_ptr<LayerExec>(
      std::make_unique<CudaLayerExec<float>>(dims, DType::kF32, std::move(res), device));
}

}  // namespace l2l::model
