// The CPU backend: host memory as device memory, the host MPI communicator
// for collectives, fp32 layers on the CPU kernels, AdamW on optimizer threads.
//   device     include/l2l/device/cpu_device.h
//   layers     model::CreateCpuLayerExec (src/model/layer_exec.cc, kernels/cpu_ops.h)
//   optimizer  sched::CreateCpuResidentOptimizer (src/sched/resident_optimizer.cc)
#include "l2l/device/cpu_device.h"
#include "l2l/train/backend.h"

namespace l2l::train {
namespace {

StatusOr<std::unique_ptr<Device>> CreateCpuDevice(const DeviceOptions& options) {
  return std::unique_ptr<Device>(std::make_unique<CpuDevice>(options.memory_limit_bytes));
}

StatusOr<std::unique_ptr<Comm>> NoDeviceComm(MpiComm&, Device&) {
  return std::unique_ptr<Comm>();  // the host communicator serves host memory
}

StatusOr<std::unique_ptr<model::LayerExec>> CreateLayers(Device*, const model::ModelDims& dims,
                                                         const model::LayerExecOptions& options) {
  return model::CreateCpuLayerExec(dims, options);
}

StatusOr<std::unique_ptr<sched::ResidentOptimizer>> CreateOptimizer(Device*, int threads,
                                                                    int num_layers, int64_t) {
  return sched::CreateCpuResidentOptimizer(threads, num_layers);
}

int64_t OptimizerDeviceBytes(int, int64_t) { return 0; }

}  // namespace

const Backend& CpuBackend() {
  static const Backend kCpu{DeviceType::kCpu, CreateCpuDevice, NoDeviceComm,
                            CreateLayers,     CreateOptimizer, OptimizerDeviceBytes};
  return kCpu;
}

}  // namespace l2l::train
