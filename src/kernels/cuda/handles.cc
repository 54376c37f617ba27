// CublasHandles: the RAII owner of the cuBLAS handle and its workspace.
#include <utility>

#include "host_util.h"
#include "l2l/kernels/cuda.h"

namespace l2l::kernels::cuda {

StatusOr<CublasHandles> CublasHandles::Create(size_t workspace_bytes) {
  CublasHandles h;
  L2L_CUDA_RETURN_IF_ERROR(cudaGetDevice(&h.device_));
  L2L_CUBLAS_RETURN_IF_ERROR(cublasCreate(&h.blas_));
  // True fp32 for fp32 GEMMs (no TF32), fp32 reductions for bf16 GEMMs.
  L2L_CUBLAS_RETURN_IF_ERROR(cublasSetMathMode(
      h.blas_, static_cast<cublasMath_t>(CUBLAS_DEFAULT_MATH |
                                         CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)));
  // Pointer mode host: alpha and beta are passed by value from the launchers.
  L2L_CUBLAS_RETURN_IF_ERROR(cublasSetPointerMode(h.blas_, CUBLAS_POINTER_MODE_HOST));
  if (workspace_bytes > 0) {
    L2L_CUDA_RETURN_IF_ERROR(cudaMalloc(&h.workspace_, workspace_bytes));
    h.workspace_bytes_ = workspace_bytes;
  }
  return StatusOr<CublasHandles>(std::move(h));
}

CublasHandles::CublasHandles(CublasHandles&& other) noexcept
    : blas_(std::exchange(other.blas_, nullptr)),
      workspace_(std::exchange(other.workspace_, nullptr)),
      workspace_bytes_(std::exchange(other.workspace_bytes_, 0)),
      device_(std::exchange(other.device_, -1)) {}

CublasHandles& CublasHandles::operator=(CublasHandles&& other) noexcept {
  if (this != &other) {
    Reset();
    blas_ = std::exchange(other.blas_, nullptr);
    workspace_ = std::exchange(other.workspace_, nullptr);
    workspace_bytes_ = std::exchange(other.workspace_bytes_, 0);
    device_ = std::exchange(other.device_, -1);
  }
  return *this;
}

CublasHandles::~CublasHandles() { Reset(); }

void CublasHandles::Reset() {
  // Errors here (e.g. a context already torn down at exit) have nowhere to
  // go; the resources are released as far as the runtime still allows.
  if (blas_ != nullptr) (void)cublasDestroy(blas_);
  if (workspace_ != nullptr) (void)cudaFree(workspace_);
  blas_ = nullptr;
  workspace_ = nullptr;
  workspace_bytes_ = 0;
  device_ = -1;
}

Status CublasHandles::Bind(cudaStream_t stream) const {
  if (blas_ == nullptr) return FailedPrecondition("CublasHandles: used after move");
  L2L_CUBLAS_RETURN_IF_ERROR(cublasSetStream(blas_, stream));
  // cublasSetStream resets the workspace to cuBLAS's own pool; point it back.
  L2L_CUBLAS_RETURN_IF_ERROR(cublasSetWorkspace(blas_, workspace_, workspace_bytes_));
  return OkStatus();
}

}  // namespace l2l::kernels::cuda
