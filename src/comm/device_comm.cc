#include "l2l/comm/device_comm.h"

#ifdef L2L_HAVE_CUDA
#include "l2l/comm/nccl_comm.h"
#include "l2l/device/cuda_device.h"
#endif

namespace l2l {

StatusOr<std::unique_ptr<Comm>> CreateDeviceComm(MpiComm& mpi, Device& device) {
  switch (device.type()) {
    case DeviceType::kCpu:
      return std::unique_ptr<Comm>();
    case DeviceType::kCuda: {
#ifdef L2L_HAVE_CUDA
      auto* cuda = dynamic_cast<CudaDevice*>(&device);
      L2L_CHECK(cuda != nullptr) << "a kCuda device that is not a CudaDevice";
      ASSIGN_OR_RETURN(std::unique_ptr<NcclComm> nccl, NcclComm::Create(mpi, *cuda));
      return std::unique_ptr<Comm>(std::move(nccl));
#else
      (void)mpi;
      return Unimplemented("exec.device: cuda is not available in this build of l2l");
#endif
    }
  }
  return InvalidArgument("unknown device type");
}

}  // namespace l2l
