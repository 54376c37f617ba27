#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "l2l/core/dtype.h"
#include "l2l/core/rng.h"
#include "l2l/core/shape.h"
#include "l2l/core/status.h"
#include "l2l/core/tensor_view.h"

namespace l2l {
namespace {

StatusOr<int> Half(int x) {
  if (x % 2) return InvalidArgument("odd value " + std::to_string(x));
  return x / 2;
}

Status Quarter(int x, int* out) {
  ASSIGN_OR_RETURN(int h, Half(x));
  ASSIGN_OR_RETURN(*out, Half(h));
  return OkStatus();
}

TEST(Status, PropagatesFirstError) {
  int out = 0;
  EXPECT_TRUE(Quarter(8, &out).ok());
  EXPECT_EQ(out, 2);
  Status s = Quarter(6, &out);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "odd value 3");
  EXPECT_EQ(ExitCodeFor(s), 2);
  EXPECT_EQ(ExitCodeFor(Internal("x")), 1);
  EXPECT_EQ(s.WithContext("f.yaml").message(), "f.yaml: odd value 3");
}

TEST(CheckDeathTest, AbortsWithCondition) {
  EXPECT_DEATH(L2L_CHECK_EQ(1, 2) << "context", "CHECK failed.*1 vs 2.*context");
}

TEST(DType, BF16RoundsToNearestEven) {
  EXPECT_EQ(F32ToBF16(1.0f), 0x3f80);
  // 1 + 2^-8 is exactly halfway between bf16 1.0 and 1.0078125: ties to even (1.0).
  EXPECT_EQ(BF16ToF32(F32ToBF16(1.0f + std::ldexp(1.0f, -8))), 1.0f);
  // 1 + 3*2^-8 is halfway between 1.0078125 (odd) and 1.015625 (even): rounds up.
  EXPECT_EQ(BF16ToF32(F32ToBF16(1.0f + 3 * std::ldexp(1.0f, -8))), 1.015625f);
  EXPECT_EQ(BF16ToF32(F32ToBF16(-2.5f)), -2.5f);
  EXPECT_TRUE(std::isnan(BF16ToF32(F32ToBF16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_TRUE(std::isinf(BF16ToF32(F32ToBF16(std::numeric_limits<float>::infinity()))));
  // Relative error of bf16 is at most 2^-9.
  for (float x : {3.14159f, -1e-20f, 6.5e30f, 0.1f}) {
    EXPECT_LE(std::fabs(BF16ToF32(F32ToBF16(x)) - x), std::fabs(x) * std::ldexp(1.0f, -9));
  }
}

TEST(DType, F16RoundTripsAndRounds) {
  for (float x : {0.0f, 1.0f, -2.0f, 65504.0f, 0.000061035156f, 5.9604645e-08f, 0.333251953125f}) {
    EXPECT_EQ(F16ToF32(F32ToF16(x)), x) << x;
  }
  EXPECT_TRUE(std::isinf(F16ToF32(F32ToF16(1e6f))));
  EXPECT_EQ(F32ToF16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);  // tie to even
  EXPECT_EQ(F32ToF16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
  EXPECT_EQ(DTypeSizeBytes(DType::kBF16), 2u);
  EXPECT_FALSE(ParseDType("int8").ok());
}

TEST(Shape, CountsAndViews) {
  Shape s{2, 3, 4};
  EXPECT_EQ(s.num_elements(), 24);
  EXPECT_EQ(s.ToString(), "[2, 3, 4]");
  float buf[24];
  TensorView<float> v(buf, s);
  EXPECT_EQ(v.Row(1).data(), buf + 12);
  EXPECT_EQ(v.Row(1).shape(), (Shape{3, 4}));
}

TEST(Rng, IsAPureFunctionOfKeys) {
  EXPECT_EQ(HashKeys(1, 2, 3), HashKeys(1, 2, 3));
  EXPECT_NE(HashKeys(1, 2, 3), HashKeys(1, 3, 2));
  double mean = 0, sq = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    double z = NormalFromKey(HashKeys(7, i));
    mean += z;
    sq += z * z;
  }
  mean /= n;
  EXPECT_NEAR(mean, 0.0, 0.05);
  EXPECT_NEAR(sq / n, 1.0, 0.05);
}

}  // namespace
}  // namespace l2l
