// The communicator for collectives on a Device's buffers, chosen once per
// process from the device type (the one place besides CMake that knows which
// backends were built).
#pragma once

#include <memory>

#include "l2l/comm/comm.h"
#include "l2l/comm/mpi_comm.h"
#include "l2l/device/device.h"

namespace l2l {

// CUDA device: an NcclComm over the same ranks as `mpi` (collective; every
// rank agrees on the outcome). CPU device: nullptr, meaning `mpi` itself
// serves (device memory is host memory). `device` outlives the result.
StatusOr<std::unique_ptr<Comm>> CreateDeviceComm(MpiComm& mpi, Device& device);

}  // namespace l2l
