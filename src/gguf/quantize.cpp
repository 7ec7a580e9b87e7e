// Reference quantization of f32 data to the formats synthetic-weight models are written in:
// F32, F16, BF16, Q8_0, Q4_0, Q4_1. The rounding follows ggml's quantize_row_*_ref (and gguf-py,
// which is bit-exact with it), so files we write read back the same in llama.cpp. No K-quants.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "core/dtype.h"
#include "gguf/gguf.h"

namespace gsa::gguf {
namespace {

constexpr int kQK = 32;

inline void store_f16(uint8_t* p, float v) {
  const uint16_t h = f32_to_f16(v);
  std::memcpy(p, &h, 2);
}

// block_q8_0: d = max|x| / 127, q = round-half-away(x / d).
void quantize_q8_0(const float* x, uint8_t* b) {
  float amax = 0.0f;
  for (int j = 0; j < kQK; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  store_f16(b, d);
  for (int j = 0; j < kQK; ++j) b[2 + j] = uint8_t(int8_t(std::roundf(x[j] * id)));
}

// block_q4_0: d = (signed value of largest magnitude) / -8, q = min(15, trunc(x / d + 8.5)).
void quantize_q4_0(const float* x, uint8_t* b) {
  float amax = 0.0f, max = 0.0f;
  for (int j = 0; j < kQK; ++j) {
    if (std::fabs(x[j]) > amax) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  }
  const float d = max / -8.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  store_f16(b, d);
  for (int j = 0; j < kQK / 2; ++j) {
    const int q0 = std::min(15, int(int8_t(x[j] * id + 8.5f)));
    const int q1 = std::min(15, int(int8_t(x[j + kQK / 2] * id + 8.5f)));
    b[2 + j] = uint8_t(q0 | (q1 << 4));
  }
}

// block_q4_1: d = (max - min) / 15, m = min, q = min(15, trunc((x - min) / d + 0.5)).
void quantize_q4_1(const float* x, uint8_t* b) {
  float min = x[0], max = x[0];
  for (int j = 1; j < kQK; ++j) {
    min = std::min(min, x[j]);
    max = std::max(max, x[j]);
  }
  const float d = (max - min) / 15.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  store_f16(b, d);
  store_f16(b + 2, min);
  for (int j = 0; j < kQK / 2; ++j) {
    const int q0 = std::min(15, int(int8_t((x[j] - min) * id + 0.5f)));
    const int q1 = std::min(15, int(int8_t((x[j + kQK / 2] - min) * id + 0.5f)));
    b[4 + j] = uint8_t(q0 | (q1 << 4));
  }
}

}  // namespace

bool ggml_type_can_quantize(GgmlType t) {
  switch (t) {
    case GgmlType::F32:
    case GgmlType::F16:
    case GgmlType::BF16:
    case GgmlType::Q8_0:
    case GgmlType::Q4_0:
    case GgmlType::Q4_1: return true;
    default: return false;
  }
}

Result<std::vector<uint8_t>> quantize(GgmlType t, const float* src, int64_t n) {
  if (!ggml_type_can_quantize(t)) {
    return unsupported("quantization to {} is not supported", ggml_type_name(t));
  }
  GSA_ASSIGN_OR_RETURN(const uint64_t bytes, ggml_row_bytes(t, n));
  std::vector<uint8_t> out(static_cast<size_t>(bytes));
  if (n == 0) return out;
  if (!src) return invalid_argument("quantize: null source");
  if (t != GgmlType::F32 && t != GgmlType::F16 && t != GgmlType::BF16) {
    for (int64_t i = 0; i < n; ++i) {
      if (!std::isfinite(src[i])) {
        return invalid_argument("cannot quantize the non-finite value {} at index {} to {}", src[i],
                                i, ggml_type_name(t));
      }
    }
  }
  uint8_t* o = out.data();
  switch (t) {
    case GgmlType::F32: std::memcpy(o, src, size_t(bytes)); break;
    case GgmlType::F16:
      for (int64_t i = 0; i < n; ++i) store_f16(o + 2 * i, src[i]);
      break;
    case GgmlType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = f32_to_bf16(src[i]);
        std::memcpy(o + 2 * i, &h, 2);
      }
      break;
    case GgmlType::Q8_0:
      for (int64_t i = 0; i < n / kQK; ++i) quantize_q8_0(src + i * kQK, o + i * 34);
      break;
    case GgmlType::Q4_0:
      for (int64_t i = 0; i < n / kQK; ++i) quantize_q4_0(src + i * kQK, o + i * 18);
      break;
    case GgmlType::Q4_1:
      for (int64_t i = 0; i < n / kQK; ++i) quantize_q4_1(src + i * kQK, o + i * 20);
      break;
    default: return internal_error("no quantizer for {}", ggml_type_name(t));
  }
  return out;
}

Status GgufWriter::add_tensor_quantized(std::string name, std::vector<int64_t> shape,
                                        GgmlType type, const std::vector<float>& values) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0 || (d > 0 && n > INT64_MAX / d)) {
      return invalid_argument("tensor '{}': bad shape", name);
    }
    n *= d;
  }
  if (uint64_t(n) != values.size()) {
    return invalid_argument("tensor '{}': shape holds {} elements, {} values given", name, n,
                            values.size());
  }
  Result<std::vector<uint8_t>> bytes = quantize(type, values.data(), n);
  if (!bytes.is_ok()) return bytes.status().with_context(fmt::format("tensor '{}'", name));
  add_tensor(std::move(name), std::move(shape), type, std::move(bytes).value());
  return Status::ok();
}

}  // namespace gsa::gguf
