// Shape: up to kMaxRank dimensions, row-major, sizes in elements.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "l2l/core/check.h"

namespace l2l {

class Shape {
 public:
  static constexpr int kMaxRank = 6;

  Shape() = default;
  Shape(std::initializer_list<int64_t> dims) {
    L2L_CHECK_LE(static_cast<int>(dims.size()), kMaxRank);
    for (int64_t d : dims) {
      L2L_CHECK_GE(d, 0);
      dims_[rank_++] = d;
    }
  }

  int rank() const { return rank_; }
  int64_t dim(int i) const {
    L2L_CHECK(i >= 0 && i < rank_) << "dim " << i << " of rank-" << rank_ << " shape";
    return dims_[i];
  }
  int64_t operator[](int i) const { return dim(i); }
  int64_t num_elements() const {
    int64_t n = 1;
    for (int i = 0; i < rank_; ++i) n *= dims_[i];
    return n;
  }
  bool operator==(const Shape& o) const {
    if (rank_ != o.rank_) return false;
    for (int i = 0; i < rank_; ++i)
      if (dims_[i] != o.dims_[i]) return false;
    return true;
  }
  bool operator!=(const Shape& o) const { return !(*this == o); }
  std::string ToString() const;  // "[3, 4]"

 private:
  std::array<int64_t, kMaxRank> dims_{};
  int rank_ = 0;
};

}  // namespace l2l
