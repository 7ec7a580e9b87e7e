// Overflow-safe size arithmetic for shapes and byte counts that come from untrusted input.
#pragma once

#include <cstdint>

namespace gsa {

/// Sets *out = a * b; returns false on overflow.
inline bool checked_mul(uint64_t a, uint64_t b, uint64_t* out) {
  return !__builtin_mul_overflow(a, b, out);
}
/// Sets *out = a + b; returns false on overflow.
inline bool checked_add(uint64_t a, uint64_t b, uint64_t* out) {
  return !__builtin_add_overflow(a, b, out);
}

}  // namespace gsa
