// ggml block formats: the type table, per-block decoders to f32 (layouts as in ggml-common.h,
// byte for byte, little-endian; fixed trip counts so the compiler vectorizes them), and the
// 8-bit activation quantizers (Q8_0, Q8_1, Q8_K) with llama.cpp's rounding. Shared by src/gguf
// (file dequantization) and the CPU backend (quantized matmul); no sizes are checked here.
#include "core/quant_blocks.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/dtype.h"

#if defined(__AVX__)
#include <immintrin.h>
#endif

namespace gsa {
namespace {

constexpr int kQK = kGgmlQK;
constexpr int kQKK = kGgmlQKK;

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
inline void store_f16(uint8_t* p, float v) {
  const uint16_t h = f32_to_f16(v);
  std::memcpy(p, &h, 2);
}

// Sizes as in ggml's type_traits (Q8_1 carries two f16 fields: 36 bytes).
constexpr GgmlTypeTraits kTypes[] = {
    {0, "f32", 1, 4, true},
    {1, "f16", 1, 2, true},
    {2, "q4_0", kQK, 2 + 16, true},
    {3, "q4_1", kQK, 2 + 2 + 16, true},
    {6, "q5_0", kQK, 2 + 4 + 16, true},
    {7, "q5_1", kQK, 2 + 2 + 4 + 16, true},
    {8, "q8_0", kQK, 2 + 32, true},
    {9, "q8_1", kQK, 2 + 2 + 32, true},
    {10, "q2_K", kQKK, 2 + 2 + kQKK / 16 + kQKK / 4, true},
    {11, "q3_K", kQKK, 2 + kQKK / 4 + kQKK / 8 + 12, true},
    {12, "q4_K", kQKK, 2 + 2 + kQKK / 2 + 12, true},
    {13, "q5_K", kQKK, 2 + 2 + kQKK / 2 + kQKK / 8 + 12, true},
    {14, "q6_K", kQKK, 2 + kQKK / 2 + kQKK / 4 + kQKK / 16, true},
    {15, "q8_K", kQKK, 4 + kQKK + kQKK / 8, true},
    {16, "iq2_xxs", kQKK, 2 + kQKK / 4, false},
    {17, "iq2_xs", kQKK, 2 + kQKK / 4 + kQKK / 32, false},
    {18, "iq3_xxs", kQKK, 2 + kQKK / 4 + kQKK / 8, false},
    {19, "iq1_s", kQKK, 2 + kQKK / 8 + kQKK / 16, false},
    {20, "iq4_nl", kQK, 2 + 16, true},
    {21, "iq3_s", kQKK, 2 + kQKK / 4 + kQKK / 8 + kQKK / 32 + 4, false},
    {22, "iq2_s", kQKK, 2 + kQKK / 4 + kQKK / 16, false},
    {23, "iq4_xs", kQKK, 2 + 2 + kQKK / 2 + kQKK / 64, true},
    {24, "i8", 1, 1, true},
    {25, "i16", 1, 2, true},
    {26, "i32", 1, 4, true},
    {27, "i64", 1, 8, false},
    {28, "f64", 1, 8, true},
    {29, "iq1_m", kQKK, kQKK / 8 + kQKK / 16 + kQKK / 32, false},
    {30, "bf16", 1, 2, true},
    {34, "tq1_0", kQKK, 2 + 4 * 13, false},
    {35, "tq2_0", kQKK, 2 + 64, false},
    {39, "mxfp4", kQK, 1 + 16, false},
};

constexpr int8_t kValuesIq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                     1,    13,   25,  38,  53,  69,  89,  113};

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

// block_q4_K { f16 d; f16 dmin; u8 scales[12]; u8 qs[128]; }: 8 groups of 32.
void block_q4_k(const uint8_t* __restrict b, float* __restrict y) {
  const float d = load_f16(b);
  const float dmin = load_f16(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* q = b + 16;
  for (int g = 0; g < 8; g += 2) {
    int sc, mn;
    ggml_scale_min_k4(g, scales, &sc, &mn);
    const float d1 = d * float(sc), m1 = dmin * float(mn);
    ggml_scale_min_k4(g + 1, scales, &sc, &mn);
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
    ggml_scale_min_k4(g, scales, &sc, &mn);
    const float d1 = d * float(sc), m1 = dmin * float(mn);
    ggml_scale_min_k4(g + 1, scales, &sc, &mn);
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

// llama.cpp's nearest_int: round half to even through the float mantissa (|v| < 2^22).
inline int nearest_int(float v) {
  float f = v + 12582912.0f;
  int32_t i;
  std::memcpy(&i, &f, 4);
  return (i & 0x007fffff) - 0x00400000;
}

// max |x[j]| over one 32-element block (max is exact: every order gives the same value).
inline float block_amax32(const float* x) {
#if defined(__AVX__)
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256 m0 = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x), abs_mask),
                                  _mm256_and_ps(_mm256_loadu_ps(x + 8), abs_mask));
  const __m256 m1 = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + 16), abs_mask),
                                  _mm256_and_ps(_mm256_loadu_ps(x + 24), abs_mask));
  const __m256 m = _mm256_max_ps(m0, m1);
  __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
  h = _mm_max_ps(h, _mm_movehl_ps(h, h));
  h = _mm_max_ss(h, _mm_movehdup_ps(h));
  return _mm_cvtss_f32(h);
#else
  float amax = 0.0f;
  for (int j = 0; j < kQK; ++j) amax = std::max(amax, std::fabs(x[j]));
  return amax;
#endif
}

// One Q8_0 / Q8_1 block: d = amax / 127, q = roundf(x / d); returns sum(q), *d_out = d (f32).
inline int quantize_q8_block(const float* x, uint8_t* d_field, int8_t* qs, float* d_out) {
  const float d = block_amax32(x) / 127.0f;
  *d_out = d;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  store_f16(d_field, d);
  int sum = 0;
  for (int j = 0; j < kQK; ++j) {
    // roundf (half away from zero), written with trunc so it inlines instead of calling libm.
    const float v = x[j] * id, t = std::trunc(v);
    const int q = int(std::fabs(v - t) >= 0.5f ? t + std::copysign(1.0f, v) : t);
    qs[j] = int8_t(q);
    sum += q;
  }
  return sum;
}

}  // namespace

const GgmlTypeTraits* ggml_type_traits(uint32_t type) {
  for (const GgmlTypeTraits& t : kTypes) {
    if (t.id == type) return &t;
  }
  return nullptr;
}

GgmlBlockDequantFn ggml_block_dequant_fn(uint32_t type) {
  switch (type) {
    case ggml_id::Q4_0: return block_q4_0;
    case ggml_id::Q4_1: return block_q4_1;
    case ggml_id::Q5_0: return block_q5_0;
    case ggml_id::Q5_1: return block_q5_1;
    case ggml_id::Q8_0: return block_q8_0;
    case ggml_id::Q8_1: return block_q8_1;
    case ggml_id::Q2_K: return block_q2_k;
    case ggml_id::Q3_K: return block_q3_k;
    case ggml_id::Q4_K: return block_q4_k;
    case ggml_id::Q5_K: return block_q5_k;
    case ggml_id::Q6_K: return block_q6_k;
    case ggml_id::Q8_K: return block_q8_k;
    case ggml_id::IQ4_NL: return block_iq4_nl;
    case ggml_id::IQ4_XS: return block_iq4_xs;
    default: return nullptr;
  }
}

void ggml_dequantize_blocks(uint32_t type, const uint8_t* src, float* dst, int64_t n_blocks) {
  const GgmlTypeTraits* t = ggml_type_traits(type);
  const GgmlBlockDequantFn fn = ggml_block_dequant_fn(type);
  if (!t || !fn) return;
  for (int64_t i = 0; i < n_blocks; ++i) fn(src + i * t->block_bytes, dst + i * t->block_elems);
}

uint32_t ggml_vec_dot_type(uint32_t type) {
  switch (type) {
    case ggml_id::Q4_0:
    case ggml_id::Q5_0:
    case ggml_id::Q8_0: return ggml_id::Q8_0;
    case ggml_id::Q4_1:
    case ggml_id::Q5_1: return ggml_id::Q8_1;
    case ggml_id::Q4_K:
    case ggml_id::Q5_K:
    case ggml_id::Q6_K: return ggml_id::Q8_K;
    default: return ggml_id::F32;
  }
}

void ggml_quantize_row_q8_0(const float* x, uint8_t* y, int64_t k) {
  float d;
  for (int64_t i = 0; i < k / kQK; ++i, x += kQK, y += kGgmlQ8_0Bytes)
    quantize_q8_block(x, y, reinterpret_cast<int8_t*>(y + 2), &d);
}

void ggml_quantize_row_q8_1(const float* x, uint8_t* y, int64_t k) {
  for (int64_t i = 0; i < k / kQK; ++i, x += kQK, y += kGgmlQ8_1Bytes) {
    float d;
    const int sum = quantize_q8_block(x, y, reinterpret_cast<int8_t*>(y + 4), &d);
    store_f16(y + 2, float(sum) * d);  // the f32 d, as ggml does, not its f16 rounding
  }
}

void ggml_quantize_row_q8_k(const float* x, uint8_t* y, int64_t k) {
  for (int64_t i = 0; i < k / kQKK; ++i, x += kQKK, y += kGgmlQ8_KBytes) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < kQKK; ++j) {
      if (std::fabs(x[j]) > amax) {
        amax = std::fabs(x[j]);
        max = x[j];
      }
    }
    int8_t* qs = reinterpret_cast<int8_t*>(y + 4);
    int16_t bsums[kQKK / 16] = {};
    float d = 0.0f;
    if (amax != 0.0f) {
      const float iscale = -127.0f / max;
      for (int j = 0; j < kQKK; ++j) qs[j] = int8_t(std::min(127, nearest_int(iscale * x[j])));
      for (int g = 0; g < kQKK / 16; ++g) {
        int sum = 0;
        for (int l = 0; l < 16; ++l) sum += qs[16 * g + l];
        bsums[g] = int16_t(sum);
      }
      d = 1.0f / iscale;
    } else {
      std::memset(qs, 0, kQKK);
    }
    std::memcpy(y, &d, 4);
    std::memcpy(y + 4 + kQKK, bsums, sizeof(bsums));
  }
}

}  // namespace gsa
