// TensorView: a non-owning, typed, contiguous row-major view of memory that
// lives on some Device (host or GPU; the view does not know or care).
#pragma once

#include <cstdint>

#include "l2l/core/check.h"
#include "l2l/core/shape.h"

namespace l2l {

template <typename T>
class TensorView {
 public:
  TensorView() = default;
  TensorView(T* data, Shape shape) : data_(data), shape_(shape) {}

  T* data() const { return data_; }
  const Shape& shape() const { return shape_; }
  int64_t size() const { return shape_.num_elements(); }
  int64_t dim(int i) const { return shape_.dim(i); }
  size_t size_bytes() const { return static_cast<size_t>(size()) * sizeof(T); }
  T& operator[](int64_t i) const { return data_[i]; }

  // Row `i` of the leading dimension, as a view of the remaining dims.
  TensorView<T> Row(int64_t i) const {
    L2L_CHECK(shape_.rank() >= 1 && i >= 0 && i < shape_.dim(0));
    const int64_t inner = shape_.dim(0) == 0 ? 0 : size() / shape_.dim(0);
    Shape s;
    switch (shape_.rank()) {
      case 1:
        s = Shape{};
        break;
      case 2:
        s = Shape{shape_.dim(1)};
        break;
      case 3:
        s = Shape{shape_.dim(1), shape_.dim(2)};
        break;
      case 4:
        s = Shape{shape_.dim(1), shape_.dim(2), shape_.dim(3)};
        break;
      default:
        L2L_CHECK(false) << "Row() of rank " << shape_.rank();
        break;
    }
    return TensorView<T>(data_ + i * inner, s);
  }

  operator TensorView<const T>() const { return TensorView<const T>(data_, shape_); }

 private:
  T* data_ = nullptr;
  Shape shape_;
};

}  // namespace l2l
