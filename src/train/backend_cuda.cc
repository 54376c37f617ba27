// The CUDA backend (built with -DL2L_CUDA=ON):
//   device        CudaDevice (include/l2l/device/cuda_device.h): arena, streams, events
//   collectives   NcclComm (include/l2l/comm/nccl_comm.h) on the device's comm stream
//   kernels       include/l2l/kernels/cuda.h, src/kernels/cuda/*.cu (cuBLAS GEMMs)
//   layers        model::CreateCudaLayerExec (src/model/layer_exec_cuda.cc): fp32, bf16
//   optimizer     sched::CreateCudaResidentOptimizer (src/sched/resident_optimizer_cuda.cc)
// The pieces take a CudaDevice; a Device of this backend is one (AsCuda).
#include "l2l/comm/nccl_comm.h"
#include "l2l/device/cuda_device.h"
#include "l2l/model/layer_exec_cuda.h"
#include "l2l/sched/resident_optimizer_cuda.h"
#include "l2l/train/backend.h"

namespace l2l::train {
namespace {

CudaDevice& AsCuda(Device& device) {
  L2L_CHECK(device.type() == DeviceType::kCuda)
      << "a " << DeviceTypeName(device.type()) << " device given to the CUDA backend";
  return static_cast<CudaDevice&>(device);
}

StatusOr<std::unique_ptr<Device>> CreateCudaDevice(const DeviceOptions& options) {
  // GPU local_rank % visible GPUs; FailedPrecondition when none is visible.
  ASSIGN_OR_RETURN(std::unique_ptr<CudaDevice> dev, CudaDevice::Create(options));
  return std::unique_ptr<Device>(std::move(dev));
}

StatusOr<std::unique_ptr<Comm>> CreateNccl(MpiComm& mpi, Device& device) {
  ASSIGN_OR_RETURN(std::unique_ptr<NcclComm> nccl, NcclComm::Create(mpi, AsCuda(device)));
  return std::unique_ptr<Comm>(std::move(nccl));
}

StatusOr<std::unique_ptr<model::LayerExec>> CreateLayers(Device* device,
                                                         const model::ModelDims& dims,
                                                         const model::LayerExecOptions& options) {
  return model::CreateCudaLayerExec(&AsCuda(*device), dims, options);
}

StatusOr<std::unique_ptr<sched::ResidentOptimizer>> CreateOptimizer(Device* device, int,
                                                                    int num_layers,
                                                                    int64_t max_elems) {
  return sched::CreateCudaResidentOptimizer(&AsCuda(*device), num_layers, max_elems);
}

}  // namespace

const Backend& CudaBackend() {
  static const Backend kCuda{DeviceType::kCuda, CreateCudaDevice,
                             CreateNccl,        CreateLayers,
                             CreateOptimizer,   sched::CudaResidentOptimizerDeviceBytes};
  return kCuda;
}

}  // namespace l2l::train
