// Parameter checks shared by the CPU kernels: overflow-safe shape products, so that absurd
// shapes are refused with InvalidArgument before any offset arithmetic can overflow.
#pragma once

#include <cstdint>
#include <initializer_list>

#include "core/checked.h"

namespace gsa::cpu {

/// True when every dim is >= 0 and their product fits in int64_t.
inline bool product_fits(std::initializer_list<int64_t> dims) {
  uint64_t acc = 1;
  for (int64_t d : dims) {
    if (d < 0 || !checked_mul(acc, uint64_t(d), &acc) || acc > uint64_t(INT64_MAX)) return false;
  }
  return true;
}

}  // namespace gsa::cpu
