// Scalar element types and the fp16/bf16 <-> f32 conversions every module shares.
// Conversions are bit-exact with IEEE rounding (round to nearest even); no NaN payload games.
#pragma once

#include <cstdint>
#include <cstring>

namespace gsa {

/// Ggml: a ggml block-quantized format (GGUF's Q4_0, Q8_0, Q4_K, ...); the exact ggml type id
/// travels next to the DType (e.g. MatmulParams::w_ggml) and sizes come from the block layout.
enum class DType : uint8_t { F32, F16, BF16, I32, Ggml };

inline size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F16: return 2;
    case DType::BF16: return 2;
    case DType::I32: return 4;
    case DType::Ggml: return 0;
  }
  return 0;
}

inline uint32_t f32_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float f32_from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline float bf16_to_f32(uint16_t h) { return f32_from_bits(uint32_t(h) << 16); }

inline uint16_t f32_to_bf16(float f) {
  uint32_t u = f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    if (mant == 0) return f32_from_bits(sign);
    // Subnormal: value = mant * 2^-24.
    float v = float(mant) * (1.0f / 16777216.0f);
    return (h & 0x8000u) ? -v : v;
  }
  if (exp == 31) return f32_from_bits(sign | 0x7f800000u | (mant << 13));
  return f32_from_bits(sign | ((exp + 112) << 23) | (mant << 13));
}

inline uint16_t f32_to_f16(float f) {
  uint32_t u = f32_bits(f);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  u &= 0x7fffffffu;
  if (u > 0x7f800000u) return sign | 0x7e00u;                 // NaN
  if (u >= 0x477ff000u) return sign | 0x7c00u;                // overflow -> inf
  if (u < 0x38800000u) {                                      // subnormal or zero
    float a = f32_from_bits(u);
    // Round a / 2^-24 to nearest even.
    float scaled = a * 16777216.0f;
    uint32_t m = uint32_t(scaled);
    float rem = scaled - float(m);
    if (rem > 0.5f || (rem == 0.5f && (m & 1u))) ++m;
    return uint16_t(sign | m);
  }
  uint32_t r = u + 0xfffu + ((u >> 13) & 1u);
  return uint16_t(sign | ((r - (112u << 23)) >> 13));
}

}  // namespace gsa
