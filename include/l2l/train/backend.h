// The compute backends: one description each, registered once (backend.cc).
//
// A backend is everything the engine builds per device type: the device, the
// communicator on its memory, the layer executor and the resident-mode
// optimizer. Each description (backend_cpu.cc, backend_cuda.cc) names where
// its pieces live, so a reader finds a backend as a whole there; adding one
// is its pieces, a DeviceType and exec.device value, one description and one
// line in the registry (docs/architecture.md). Nothing else in the project
// asks which backends were compiled in.
#pragma once

#include <cstdint>
#include <memory>

#include "l2l/comm/comm.h"
#include "l2l/comm/mpi_comm.h"
#include "l2l/core/status.h"
#include "l2l/device/device.h"
#include "l2l/model/layer_exec.h"
#include "l2l/sched/resident_optimizer.h"

namespace l2l::train {

struct Backend {
  DeviceType type;
  // The device. options.type is this backend's type.
  StatusOr<std::unique_ptr<Device>> (*create_device)(const DeviceOptions& options);
  // The communicator for collectives on the device's buffers, over the same
  // ranks as `mpi` (collective; every rank agrees on the outcome), or
  // nullptr: `mpi` itself serves (device memory is host memory). `device`
  // (of this backend) outlives the result.
  StatusOr<std::unique_ptr<Comm>> (*create_device_comm)(MpiComm& mpi, Device& device);
  // The model's layers on `device` (of this backend) in options.dtype;
  // InvalidArgument for a dtype the backend does not compute in.
  StatusOr<std::unique_ptr<model::LayerExec>> (*create_layer_exec)(
      Device* device, const model::ModelDims& dims, const model::LayerExecOptions& options);
  // The resident mode's optimizer on `device`; max_elems is the largest
  // layer it updates (sizes the norm scratch).
  StatusOr<std::unique_ptr<sched::ResidentOptimizer>> (*create_resident_optimizer)(
      Device* device, int optimizer_threads, int num_layers, int64_t max_elems);
  // Device bytes that optimizer allocates, for the memory plan.
  int64_t (*resident_optimizer_device_bytes)(int num_layers, int64_t max_elems);
};

// The backend of `type`, or Unimplemented naming exec.device when this build
// does not have it (the CUDA backend needs the CUDA toolkit, cuBLAS and NCCL
// at configure time).
StatusOr<const Backend*> FindBackend(DeviceType type);

// FindBackend(options.type), then its create_device: for tools and tests.
StatusOr<std::unique_ptr<Device>> CreateDevice(const DeviceOptions& options);
// FindBackend(device->type()), then its create_layer_exec.
StatusOr<std::unique_ptr<model::LayerExec>> CreateLayerExec(Device* device,
                                                            const model::ModelDims& dims,
                                                            const model::LayerExecOptions& options);

// The backends' descriptions (backend_cpu.cc, backend_cuda.cc); FindBackend
// is how the engine gets them.
const Backend& CpuBackend();
const Backend& CudaBackend();  // defined only in builds with the CUDA backend

}  // namespace l2l::train
