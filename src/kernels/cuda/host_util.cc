// Validation and error conversion for the CUDA launchers (see host_util.h).
#include "host_util.h"

#include <climits>
#include <sstream>

#include "l2l/core/check.h"

namespace l2l::kernels::cuda::internal {

void Validator::Fail(const std::string& message) {
  if (status_.ok()) status_ = InvalidArgument(std::string(op_) + ": " + message);
}

Validator& Validator::NonNegative(const char* name, int64_t v) {
  if (status_.ok() && v < 0)
    Fail(std::string(name) + " = " + std::to_string(v) + ", expected >= 0");
  return *this;
}

Validator& Validator::Positive(const char* name, int64_t v) {
  if (status_.ok() && v <= 0)
    Fail(std::string(name) + " = " + std::to_string(v) + ", expected > 0");
  return *this;
}

Validator& Validator::AtLeast(const char* name, int64_t v, int64_t min) {
  if (status_.ok() && v < min) {
    Fail(std::string(name) + " = " + std::to_string(v) + ", expected >= " + std::to_string(min));
  }
  return *this;
}

Validator& Validator::AtMost(const char* name, int64_t v, int64_t max) {
  if (status_.ok() && v > max) {
    Fail(std::string(name) + " = " + std::to_string(v) + ", expected <= " + std::to_string(max));
  }
  return *this;
}

Validator& Validator::FitsInt(const char* name, int64_t v) {
  if (status_.ok() && (v < 0 || v > INT_MAX)) {
    Fail(std::string(name) + " = " + std::to_string(v) + ", expected in [0, " +
         std::to_string(INT_MAX) + "] (cuBLAS takes int)");
  }
  return *this;
}

Validator& Validator::NotNull(const char* name, const void* p, int64_t elems) {
  if (status_.ok() && p == nullptr && elems > 0) {
    Fail(std::string(name) + " is null but " + std::to_string(elems) + " elements are needed");
  }
  return *this;
}

Validator& Validator::DropoutP(const char* name, float p) {
  if (status_.ok() && !(p >= 0.0f && p < 1.0f)) {
    std::ostringstream os;
    os << name << " = " << p << ", expected a drop probability in [0, 1)";
    Fail(os.str());
  }
  return *this;
}

Validator& Validator::That(bool cond, const char* what) {
  if (status_.ok() && !cond) Fail(std::string("expected ") + what);
  return *this;
}

namespace {
std::string Where(const char* call, const char* file, int line) {
  int device = -1;
  if (cudaGetDevice(&device) != cudaSuccess) {
    device = -1;
    (void)cudaGetLastError();
  }
  std::ostringstream os;
  os << call << " at " << file << ":" << line << " (rank " << LogRank() << ", device " << device
     << ")";
  return os.str();
}
}  // namespace

Status CublasError(cublasStatus_t err, const char* call, const char* file, int line) {
  return Internal(std::string(cublasGetStatusName(err)) + " (" + cublasGetStatusString(err) +
                  ") from " + Where(call, file, line));
}

Status ValidateGemm(const char* op, Trans trans_a, Trans trans_b, int64_t m, int64_t n, int64_t k,
                    int64_t lda, int64_t ldb, int64_t ldc) {
  const int64_t min_lda = trans_a == Trans::kNo ? k : m;
  const int64_t min_ldb = trans_b == Trans::kNo ? n : k;
  return Validator(op)
      .FitsInt("m", m)
      .FitsInt("n", n)
      .FitsInt("k", k)
      .FitsInt("lda", lda)
      .FitsInt("ldb", ldb)
      .FitsInt("ldc", ldc)
      .AtLeast("lda", lda, min_lda > 1 ? min_lda : 1)
      .AtLeast("ldb", ldb, min_ldb > 1 ? min_ldb : 1)
      .AtLeast("ldc", ldc, n > 1 ? n : 1)
      .status();
}

}  // namespace l2l::kernels::cuda::internal
