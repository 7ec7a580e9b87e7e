// ggml tensor types for the GGUF reader: names, layouts and dequantization to f32. The block
// formats themselves (layouts, per-block decoders) live in core/quant_blocks, shared with the CPU
// backend; this file adds the plain element conversions and the checked entry points.
#include <cstring>

#include "core/checked.h"
#include "core/dtype.h"
#include "core/quant_blocks.h"
#include "gguf/gguf.h"

#if defined(__F16C__) && defined(__AVX__)
#include <immintrin.h>
#endif

namespace gsa::gguf {
namespace {

inline float load_f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

// ---- plain element types ---------------------------------------------------------------------

void convert_f16(const uint8_t* src, float* dst, int64_t n) {
  int64_t i = 0;
#if defined(__F16C__) && defined(__AVX__)
  // Hardware conversion: 8 halves per instruction, bit-exact with f16_to_f32.
  for (; i + 8 <= n; i += 8) {
    __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * i));
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
  }
#endif
  for (; i < n; ++i) dst[i] = load_f16(src + 2 * i);
}

void convert_bf16(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, src + 2 * i, 2);
    dst[i] = f32_from_bits(uint32_t(h) << 16);
  }
}

template <typename T>
void convert_int(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    T v;
    std::memcpy(&v, src + sizeof(T) * i, sizeof(T));
    dst[i] = float(v);
  }
}

void convert_f64(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    double v;
    std::memcpy(&v, src + 8 * i, 8);
    dst[i] = float(v);
  }
}

}  // namespace

const char* ggml_type_name(GgmlType t) {
  const GgmlTypeTraits* info = ggml_type_traits(uint32_t(t));
  return info ? info->name : "unknown";
}

bool ggml_type_layout(GgmlType t, int64_t* block_elems, int64_t* block_bytes) {
  const GgmlTypeTraits* info = ggml_type_traits(uint32_t(t));
  if (!info) return false;
  if (block_elems) *block_elems = info->block_elems;
  if (block_bytes) *block_bytes = info->block_bytes;
  return true;
}

bool ggml_type_can_dequantize(GgmlType t) {
  const GgmlTypeTraits* info = ggml_type_traits(uint32_t(t));
  return info && info->dequant;
}

Result<uint64_t> ggml_row_bytes(GgmlType t, int64_t n) {
  const GgmlTypeTraits* info = ggml_type_traits(uint32_t(t));
  if (!info) return invalid_argument("unknown ggml type {}", uint32_t(t));
  if (n < 0) return invalid_argument("negative element count {} for type {}", n, info->name);
  if (n % info->block_elems != 0) {
    return invalid_argument("{} elements is not a multiple of the {} block size {}", n, info->name,
                            info->block_elems);
  }
  uint64_t bytes = 0;
  if (!checked_mul(uint64_t(n / info->block_elems), uint64_t(info->block_bytes), &bytes)) {
    return invalid_argument("byte size of {} {} elements overflows", n, info->name);
  }
  return bytes;
}

Status dequantize(GgmlType t, const void* src, uint64_t src_bytes, float* dst, int64_t n) {
  const GgmlTypeTraits* info = ggml_type_traits(uint32_t(t));
  if (!info) return invalid_argument("cannot dequantize unknown ggml type {}", uint32_t(t));
  if (!info->dequant) return unsupported("dequantization of {} is not supported", info->name);
  GSA_ASSIGN_OR_RETURN(const uint64_t need, ggml_row_bytes(t, n));
  if (src_bytes < need) {
    return invalid_argument("{} {} elements need {} bytes, only {} available", n, info->name,
                            need, src_bytes);
  }
  if (n == 0) return Status::ok();
  if (!src || !dst) return invalid_argument("dequantize: null pointer");
  const uint8_t* s = static_cast<const uint8_t*>(src);
  switch (t) {
    case GgmlType::F32: std::memcpy(dst, s, size_t(n) * 4); return Status::ok();
    case GgmlType::F16: convert_f16(s, dst, n); return Status::ok();
    case GgmlType::BF16: convert_bf16(s, dst, n); return Status::ok();
    case GgmlType::F64: convert_f64(s, dst, n); return Status::ok();
    case GgmlType::I8: convert_int<int8_t>(s, dst, n); return Status::ok();
    case GgmlType::I16: convert_int<int16_t>(s, dst, n); return Status::ok();
    case GgmlType::I32: convert_int<int32_t>(s, dst, n); return Status::ok();
    default: break;
  }
  if (!ggml_block_dequant_fn(uint32_t(t))) return internal_error("no block decoder for {}", info->name);
  ggml_dequantize_blocks(uint32_t(t), s, dst, n / info->block_elems);
  return Status::ok();
}

}  // namespace gsa::gguf
