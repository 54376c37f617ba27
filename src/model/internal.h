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

// Carves typed regions out of a T workspace, each starting at a multiple of
// kAlignElems elements of T. With a null base it only counts, so the size
// functions and the layer functions share one description of the layout.
// Byte and int32 regions are rounded up to whole T elements; counting with
// T = float therefore bounds the double layout too.
template <typename T>
class Carver {
 public:
  static constexpr int64_t kAlignElems = 16;

  explicit Carver(T* base) : base_(base) {}

  T* Take(int64_t n) {
    T* p = base_ == nullptr ? nullptr : base_ + used_;
    used_ += (n + kAlignElems - 1) / kAlignElems * kAlignElems;
    return p;
  }
  uint8_t* TakeBytes(int64_t n) {
    return reinterpret_cast<uint8_t*>(Take((n + int64_t{sizeof(T)} - 1) / int64_t{sizeof(T)}));
  }
  int32_t* TakeInts(int64_t n) {
    static_assert(sizeof(T) % sizeof(int32_t) == 0);
    return reinterpret_cast<int32_t*>(Take((n * 4 + int64_t{sizeof(T)} - 1) / int64_t{sizeof(T)}));
  }
  int64_t used_elems() const { return used_; }

 private:
  T* base_;
  int64_t used_ = 0;
};

}  // namespace l2l::model::internal
