// Helpers shared by the layer implementations (not part of the public API).
#pragma once

#include <cstdint>

#include "l2l/core/check.h"
#include "l2l/kernels/params.h"
#include "l2l/model/model.h"

namespace l2l::model::internal {

// CHECKs the invariants ValidateModelDims reports as a Status.
void CheckDims(const ModelDims& d);

inline bool DropoutOn(const ModelDims& d, const StepContext& ctx) {
  return ctx.training && d.dropout > 0;
}

inline kernels::DropoutKeys KeysFor(const ModelDims& d, const StepContext& ctx, int site) {
  L2L_CHECK(ctx.sample_keys != nullptr) << "dropout is on but StepContext.sample_keys is null";
  kernels::DropoutKeys k;
  k.p = static_cast<float>(d.dropout);
  k.seed = ctx.seed;
  k.step = ctx.step;
  k.layer = ctx.layer;
  k.site = site;
  k.sample_keys = ctx.sample_keys;
  return k;
}

// `name` in layout `l` of a buffer at `base`, or nullptr when the layout
// lacks the tensor (or base is null).
template <typename P>
P TensorOrNull(const ParamLayout& l, P base, const char* name) {
  const TensorSpec* t = l.Find(name);
  return t == nullptr || base == nullptr ? nullptr : base + t->offset_elems;
}

// Layernorm (bert, gpt2) or RMSNorm (llama) with the model's epsilon; `bias`
// and `mean` are unused for RMSNorm.
template <class Ops>
void NormForward(Ops& k, const ModelDims& d, const typename Ops::T* x, const typename Ops::T* gain,
                 const typename Ops::T* bias, int64_t n, int64_t c, typename Ops::T* y,
                 typename Ops::S* mean, typename Ops::S* rstd) {
  if (UsesRmsNorm(d)) {
    k.RmsNormForward(x, gain, n, c, d.norm_eps, y, rstd);
  } else {
    k.LayerNormForward(x, gain, bias, n, c, d.norm_eps, y, mean, rstd);
  }
}

template <class Ops>
void NormBackward(Ops& k, const ModelDims& d, const typename Ops::T* x, const typename Ops::T* gain,
                  const typename Ops::S* mean, const typename Ops::S* rstd,
                  const typename Ops::T* dy, int64_t n, int64_t c, typename Ops::T* dx,
                  typename Ops::G* dgain, typename Ops::G* dbias, typename Ops::G* scratch,
                  kernels::Accum dx_accum = kernels::Accum::kOverwrite) {
  if (UsesRmsNorm(d)) {
    k.RmsNormBackward(x, gain, rstd, dy, n, c, dx, dgain, scratch, dx_accum);
  } else {
    k.LayerNormBackward(x, gain, mean, rstd, dy, n, c, dx, dgain, dbias, scratch, dx_accum);
  }
}

template <class Ops>
int64_t NormBackwardScratchElems(const ModelDims& d, int64_t n, int64_t c) {
  return UsesRmsNorm(d) ? Ops::RmsNormBackwardScratchElems(n, c)
                        : Ops::LayerNormBackwardScratchElems(n, c);
}

// Carves typed regions out of a workspace, each starting kAlignBytes after
// the previous region's start rounded up (offsets from the base; the base
// itself is the caller's: arena buffers are at least 256-byte aligned). With
// a null base it only counts, so the size functions and the layer functions
// share one description of the layout.
class Carver {
 public:
  static constexpr int64_t kAlignBytes = 256;

  explicit Carver(void* base) : base_(static_cast<char*>(base)) {}

  template <typename U>
  U* Take(int64_t n) {
    U* p = base_ == nullptr ? nullptr : reinterpret_cast<U*>(base_ + used_);
    used_ += (n * int64_t{sizeof(U)} + kAlignBytes - 1) / kAlignBytes * kAlignBytes;
    return p;
  }
  int64_t used_bytes() const { return used_; }

 private:
  char* base_;
  int64_t used_ = 0;
};

// Workspace elements of T that hold `bytes` (the CPU API sizes workspaces in
// elements of T).
template <typename T>
int64_t ElemsFor(int64_t bytes) {
  return (bytes + int64_t{sizeof(T)} - 1) / int64_t{sizeof(T)};
}

}  // namespace l2l::model::internal
