#include "l2l/core/rng.h"

#include <cmath>

namespace l2l {

double NormalFromKey(uint64_t key) {
  const double u1 = UniformDouble(Mix64(key ^ 0x5851f42d4c957f2dull));
  const double u2 = UniformDouble(Mix64(key ^ 0x14057b7ef767814full));
  const double r = std::sqrt(-2.0 * std::log(1.0 - u1));  // 1-u1 in (0, 1]
  return r * std::cos(6.283185307179586 * u2);
}

}  // namespace l2l
