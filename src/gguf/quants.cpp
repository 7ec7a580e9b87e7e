// ggml tensor types: names, block layouts, and dequantization of each supported block format to
// f32. Block layouts follow ggml-common.h byte for byte (little-endian); the per-block loops are
// written over fixed trip counts so the compiler can vectorize them. No quantization here.
#include <cstring>

#include "core/checked.h"
#include "core/dtype.h"
#include "gguf/gguf.h"

#if defined(__F16C__) && defined(__AVX__)
#include <immintrin.h>
#endif

namespace gsa::gguf {
namespace {

constexpr int kQK = 32;    // elements per block of the legacy formats (Q4_0 ... Q8_1, IQ4_NL)
constexpr int kQKK = 256;  // elements per super-block of the K and IQ formats

// Half-precision fields inside blocks are stored unaligned: read them through memcpy.
inline float load_f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}
inline float load_f32(const uint8_t* p) {
  float f;
  std::memcpy(&f, p, 4);
  return f;
}

struct TypeInfo {
  GgmlType type;
  const char* name;
  int64_t block_elems;
  int64_t block_bytes;
  bool dequant;
};

// Sizes as in ggml's type_traits (Q8_1 carries two f16 fields: 36 bytes).
constexpr TypeInfo kTypes[] = {
    {GgmlType::F32, "f32", 1, 4, true},
    {GgmlType::F16, "f16", 1, 2, true},
    {GgmlType::Q4_0, "q4_0", kQK, 2 + 16, true},
    {GgmlType::Q4_1, "q4_1", kQK, 2 + 2 + 16, true},
    {GgmlType::Q5_0, "q5_0", kQK, 2 + 4 + 16, true},
    {GgmlType::Q5_1, "q5_1", kQK, 2 + 2 + 4 + 16, true},
    {GgmlType::Q8_0, "q8_0", kQK, 2 + 32, true},
    {GgmlType::Q8_1, "q8_1", kQK, 2 + 2 + 32, true},
    {GgmlType::Q2_K, "q2_K", kQKK, 2 + 2 + kQKK / 16 + kQKK / 4, true},
    {GgmlType::Q3_K, "q3_K", kQKK, 2 + kQKK / 4 + kQKK / 8 + 12, true},
    {GgmlType::Q4_K, "q4_K", kQKK, 2 + 2 + kQKK / 2 + 12, true},
    {GgmlType::Q5_K, "q5_K", kQKK, 2 + 2 + kQKK / 2 + kQKK / 8 + 12, true},
    {GgmlType::Q6_K, "q6_K", kQKK, 2 + kQKK / 2 + kQKK / 4 + kQKK / 16, true},
    {GgmlType::Q8_K, "q8_K", kQKK, 4 + kQKK + kQKK / 8, true},
    {GgmlType::IQ2_XXS, "iq2_xxs", kQKK, 2 + kQKK / 4, false},
    {GgmlType::IQ2_XS, "iq2_xs", kQKK, 2 + kQKK / 4 + kQKK / 32, false},
    {GgmlType::IQ3_XXS, "iq3_xxs", kQKK, 2 + kQKK / 4 + kQKK / 8, false},
    {GgmlType::IQ1_S, "iq1_s", kQKK, 2 + kQKK / 8 + kQKK / 16, false},
    {GgmlType::IQ4_NL, "iq4_nl", kQK, 2 + 16, true},
    {GgmlType::IQ3_S, "iq3_s", kQKK, 2 + kQKK / 4 + kQKK / 8 + kQKK / 32 + 4, false},
    {GgmlType::IQ2_S, "iq2_s", kQKK, 2 + kQKK / 4 + kQKK / 16, false},
    {GgmlType::IQ4_XS, "iq4_xs", kQKK, 2 + 2 + kQKK / 2 + kQKK / 64, true},
    {GgmlType::I8, "i8", 1, 1, true},
    {GgmlType::I16, "i16", 1, 2, true},
    {GgmlType::I32, "i32", 1, 4, true},
    {GgmlType::I64, "i64", 1, 8, false},
    {GgmlType::F64, "f64", 1, 8, true},
    {GgmlType::IQ1_M, "iq1_m", kQKK, kQKK / 8 + kQKK / 16 + kQKK / 32, false},
    {GgmlType::BF16, "bf16", 1, 2, true},
    {GgmlType::TQ1_0, "tq1_0", kQKK, 2 + 4 * 13, false},
    {GgmlType::TQ2_0, "tq2_0", kQKK, 2 + 64, false},
    {GgmlType::MXFP4, "mxfp4", kQK, 1 + 16, false},
};

const TypeInfo* type_info(GgmlType t) {
  for (const TypeInfo& info : kTypes) {
    if (info.type == t) return &info;
  }
  return nullptr;
}

constexpr int8_t kValuesIq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                     1,    13,   25,  38,  53,  69,  89,  113};

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

// ---- legacy 32-element blocks ----------------------------------------------------------------

// block_q4_0 { f16 d; u8 qs[16]; }: x = (nibble - 8) * d, low nibbles first.
void block_q4_0(const uint8_t* __restrict b, float* __restrict y) {
  const float d = load_f16(b);
  const uint8_t* qs = b + 2;
  for (int j = 0; j < kQK / 2; ++j) {
    y[j] = float(int(qs[j] & 0x0f) - 8) * d;
    y[j + kQK / 2] = float(int(qs[j] >> 4) - 8) * d;
  }
}

// block_q4_1 { f16 d; f16 m; u8 qs[16]; }: x = nibble * d + m.
void block_q4_1(const uint8_t* __restrict b, float* __restrict y) {
  const float d = load_f16(b);
  const float m = load_f16(b + 2);
  const uint8_t* qs = b + 4;
  for (int j = 0; j < kQK / 2; ++j) {
    y[j] = float(qs[j] & 0x0f) * d + m;
    y[j + kQK / 2] = float(qs[j] >> 4) * d + m;
  }
}

// block_q5_0 { f16 d; u8 qh[4]; u8 qs[16]; }: 5th bit of element j in bit j of qh.
void block_q5_0(const uint8_t* __restrict b, float* __restrict y) {
  const float d = load_f16(b);
  uint32_t qh;
  std::memcpy(&qh, b + 2, 4);
  const uint8_t* qs = b + 6;
  for (int j = 0; j < kQK / 2; ++j) {
    const int h0 = int((qh >> j) << 4) & 0x10;
    const int h1 = int(qh >> (j + 12)) & 0x10;
    y[j] = float(((qs[j] & 0x0f) | h0) - 16) * d;
    y[j + kQK / 2] = float(((qs[j] >> 4) | h1) - 16) * d;
  }
}

// block_q5_1 { f16 d; f16 m; u8 qh[4]; u8 qs[16]; }
void block_q5_1(const uint8_t* __restrict b, float* __restrict y) {
  const float d = load_f16(b);
  const float m = load_f16(b + 2);
  uint32_t qh;
  std::memcpy(&qh, b + 4, 4);
  const uint8_t* qs = b + 8;
  for (int j = 0; j < kQK / 2; ++j) {
    const int h0 = int((qh >> j) << 4) & 0x10;
    const int h1 = int(qh >> (j + 12)) & 0x10;
    y[j] = float((qs[j] & 0x0f) | h0) * d + m;
    y[j + kQK / 2] = float((qs[j] >> 4) | h1) * d + m;
  }
}

// block_q8_0 { f16 d; i8 qs[32]; }
void block_q8_0(const uint8_t* __restrict b, float* __restrict y) {
  const float d = load_f16(b);
  const int8_t* qs = reinterpret_cast<const int8_t*>(b + 2);
  for (int j = 0; j < kQK; ++j) y[j] = float(qs[j]) * d;
}

// block_q8_1 { f16 d; f16 s; i8 qs[32]; } (s = d * sum(qs) is only used by dot products)
void block_q8_1(const uint8_t* __restrict b, float* __restrict y) {
  const float d = load_f16(b);
  const int8_t* qs = reinterpret_cast<const int8_t*>(b + 4);
  for (int j = 0; j < kQK; ++j) y[j] = float(qs[j]) * d;
}

// block_iq4_nl { f16 d; u8 qs[16]; }: non-linear 4-bit codebook.
void block_iq4_nl(const uint8_t* __restrict b, float* __restrict y) {
  const float d = load_f16(b);
  const uint8_t* qs = b + 2;
  for (int j = 0; j < kQK / 2; ++j) {
    y[j] = d * float(kValuesIq4nl[qs[j] & 0x0f]);
    y[j + kQK / 2] = d * float(kValuesIq4nl[qs[j] >> 4]);
  }
}

// ---- K-quant 256-element super-blocks --------------------------------------------------------

// block_q2_K { u8 scales[16]; u8 qs[64]; f16 d; f16 dmin; }: 16 groups of 16, each with a 4-bit
// scale (low nibble) and a 4-bit min (high nibble); 2-bit quants, four planes per 32 bytes.
void block_q2_k(const uint8_t* __restrict b, float* __restrict y) {
  const uint8_t* scales = b;
  const uint8_t* q = b + 16;
  const float d = load_f16(b + 80);
  const float dmin = load_f16(b + 82);
  int is = 0;
  for (int n = 0; n < kQKK; n += 128) {
    for (int shift = 0; shift < 8; shift += 2) {
      for (int half = 0; half < 2; ++half) {
        const uint8_t sc = scales[is++];
        const float dl = d * float(sc & 0x0f);
        const float ml = dmin * float(sc >> 4);
        const uint8_t* qq = q + 16 * half;
        for (int l = 0; l < 16; ++l) y[l] = dl * float((qq[l] >> shift) & 3) - ml;
        y += 16;
      }
    }
    q += 32;
  }
}

// block_q3_K { u8 hmask[32]; u8 qs[64]; u8 scales[12]; f16 d; }: 2 low bits in qs, the third
// (inverted: set means +0, clear means -4) in hmask; 16 six-bit scales packed into 12 bytes.
void block_q3_k(const uint8_t* __restrict b, float* __restrict y) {
  const uint8_t* hm = b;
  const uint8_t* q = b + 32;
  const uint8_t* packed = b + 96;
  const float d_all = load_f16(b + 108);
  int8_t scales[16];
  for (int j = 0; j < 16; ++j) {
    const int low = (j < 8) ? (packed[j] & 0x0f) : (packed[j - 8] >> 4);
    const int high = (packed[8 + (j % 4)] >> (2 * (j / 4))) & 3;
    scales[j] = int8_t((low | (high << 4)) - 32);
  }
  int is = 0;
  uint8_t m = 1;
  for (int n = 0; n < kQKK; n += 128) {
    for (int shift = 0; shift < 8; shift += 2) {
      for (int half = 0; half < 2; ++half) {
        const float dl = d_all * float(scales[is++]);
        const uint8_t* qq = q + 16 * half;
        const uint8_t* hh = hm + 16 * half;
        for (int l = 0; l < 16; ++l) {
          const int v = int((qq[l] >> shift) & 3) - ((hh[l] & m) ? 0 : 4);
          y[l] = dl * float(v);
        }
        y += 16;
      }
      m = uint8_t(m << 1);
    }
    q += 32;
  }
}

// The 6-bit scale and min of group j (0..7) of Q4_K/Q5_K, packed into 12 bytes.
inline void scale_min_k4(int j, const uint8_t* q, int* sc, int* mn) {
  if (j < 4) {
    *sc = q[j] & 63;
    *mn = q[j + 4] & 63;
  } else {
    *sc = (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4);
    *mn = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

// block_q4_K { f16 d; f16 dmin; u8 scales[12]; u8 qs[128]; }: 8 groups of 32.
void block_q4_k(const uint8_t* __restrict b, float* __restrict y) {
  const float d = load_f16(b);
  const float dmin = load_f16(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* q = b + 16;
  for (int g = 0; g < 8; g += 2) {
    int sc, mn;
    scale_min_k4(g, scales, &sc, &mn);
    const float d1 = d * float(sc), m1 = dmin * float(mn);
    scale_min_k4(g + 1, scales, &sc, &mn);
    const float d2 = d * float(sc), m2 = dmin * float(mn);
    for (int l = 0; l < 32; ++l) y[l] = d1 * float(q[l] & 0x0f) - m1;
    for (int l = 0; l < 32; ++l) y[l + 32] = d2 * float(q[l] >> 4) - m2;
    y += 64;
    q += 32;
  }
}

// block_q5_K { f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]; }
void block_q5_k(const uint8_t* __restrict b, float* __restrict y) {
  const float d = load_f16(b);
  const float dmin = load_f16(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qh = b + 16;
  const uint8_t* ql = b + 48;
  uint8_t u1 = 1, u2 = 2;
  for (int g = 0; g < 8; g += 2) {
    int sc, mn;
    scale_min_k4(g, scales, &sc, &mn);
    const float d1 = d * float(sc), m1 = dmin * float(mn);
    scale_min_k4(g + 1, scales, &sc, &mn);
    const float d2 = d * float(sc), m2 = dmin * float(mn);
    for (int l = 0; l < 32; ++l) y[l] = d1 * float((ql[l] & 0x0f) + ((qh[l] & u1) ? 16 : 0)) - m1;
    for (int l = 0; l < 32; ++l) y[l + 32] = d2 * float((ql[l] >> 4) + ((qh[l] & u2) ? 16 : 0)) - m2;
    y += 64;
    ql += 32;
    u1 = uint8_t(u1 << 2);
    u2 = uint8_t(u2 << 2);
  }
}

// block_q6_K { u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d; }: 4 low bits in ql, 2 high in qh.
void block_q6_k(const uint8_t* __restrict b, float* __restrict y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
  const float d = load_f16(b + 208);
  for (int n = 0; n < kQKK; n += 128) {
    // Four output rows of 32 per 128 elements; scales change every 16 elements, so the inner
    // loops run over 16 lanes with loop-invariant scales (vectorizes; ggml's form does not).
    for (int half = 0; half < 2; ++half) {
      const float s1 = d * float(sc[half]), s2 = d * float(sc[half + 2]);
      const float s3 = d * float(sc[half + 4]), s4 = d * float(sc[half + 6]);
      for (int l = 16 * half; l < 16 * half + 16; ++l) {
        const int q1 = int((ql[l] & 0x0f) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = int((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = int((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = int((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[l] = s1 * float(q1);
        y[l + 32] = s2 * float(q2);
        y[l + 64] = s3 * float(q3);
        y[l + 96] = s4 * float(q4);
      }
    }
    y += 128;
    ql += 64;
    qh += 32;
    sc += 8;
  }
}

// block_q8_K { f32 d; i8 qs[256]; i16 bsums[16]; } (bsums only serve dot products)
void block_q8_k(const uint8_t* __restrict b, float* __restrict y) {
  const float d = load_f32(b);
  const int8_t* qs = reinterpret_cast<const int8_t*>(b + 4);
  for (int j = 0; j < kQKK; ++j) y[j] = d * float(qs[j]);
}

// block_iq4_xs { f16 d; u16 scales_h; u8 scales_l[4]; u8 qs[128]; }: 8 groups of 32 with
// 6-bit signed scales, values from the IQ4_NL codebook.
void block_iq4_xs(const uint8_t* __restrict b, float* __restrict y) {
  const float d = load_f16(b);
  uint16_t scales_h;
  std::memcpy(&scales_h, b + 2, 2);
  const uint8_t* scales_l = b + 4;
  const uint8_t* qs = b + 8;
  for (int ib = 0; ib < kQKK / 32; ++ib) {
    const int ls = ((scales_l[ib / 2] >> (4 * (ib % 2))) & 0x0f) | (((scales_h >> (2 * ib)) & 3) << 4);
    const float dl = d * float(ls - 32);
    for (int j = 0; j < 16; ++j) {
      y[j] = dl * float(kValuesIq4nl[qs[j] & 0x0f]);
      y[j + 16] = dl * float(kValuesIq4nl[qs[j] >> 4]);
    }
    y += 32;
    qs += 16;
  }
}

using BlockFn = void (*)(const uint8_t*, float*);

BlockFn block_fn(GgmlType t) {
  switch (t) {
    case GgmlType::Q4_0: return block_q4_0;
    case GgmlType::Q4_1: return block_q4_1;
    case GgmlType::Q5_0: return block_q5_0;
    case GgmlType::Q5_1: return block_q5_1;
    case GgmlType::Q8_0: return block_q8_0;
    case GgmlType::Q8_1: return block_q8_1;
    case GgmlType::Q2_K: return block_q2_k;
    case GgmlType::Q3_K: return block_q3_k;
    case GgmlType::Q4_K: return block_q4_k;
    case GgmlType::Q5_K: return block_q5_k;
    case GgmlType::Q6_K: return block_q6_k;
    case GgmlType::Q8_K: return block_q8_k;
    case GgmlType::IQ4_NL: return block_iq4_nl;
    case GgmlType::IQ4_XS: return block_iq4_xs;
    default: return nullptr;
  }
}

}  // namespace

const char* ggml_type_name(GgmlType t) {
  const TypeInfo* info = type_info(t);
  return info ? info->name : "unknown";
}

bool ggml_type_layout(GgmlType t, int64_t* block_elems, int64_t* block_bytes) {
  const TypeInfo* info = type_info(t);
  if (!info) return false;
  if (block_elems) *block_elems = info->block_elems;
  if (block_bytes) *block_bytes = info->block_bytes;
  return true;
}

bool ggml_type_can_dequantize(GgmlType t) {
  const TypeInfo* info = type_info(t);
  return info && info->dequant;
}

Result<uint64_t> ggml_row_bytes(GgmlType t, int64_t n) {
  const TypeInfo* info = type_info(t);
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
  const TypeInfo* info = type_info(t);
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
  const BlockFn fn = block_fn(t);
  if (!fn) return internal_error("no block decoder for {}", info->name);
  const int64_t n_blocks = n / info->block_elems;
  const int64_t bb = info->block_bytes;
  const int64_t be = info->block_elems;
  for (int64_t i = 0; i < n_blocks; ++i) fn(s + i * bb, dst + i * be);
  return Status::ok();
}

}  // namespace gsa::gguf
