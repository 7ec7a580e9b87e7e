// CPU matmul on weights kept in their GGUF block formats (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K,
// Q5_K, Q6_K), following llama.cpp's scheme: each activation row is quantized to the weight
// type's vec_dot_type (Q8_0, Q8_1 or Q8_K), then integer dot products per block are scaled by
// the block scales and accumulated in f32. AVX-512 VNNI kernels when the compiler targets them,
// portable scalar loops otherwise. matmul.cpp sends this decode / small-batch path up to 64 rows
// of x and dequantizes weight panels for f32 GEMMs above (measured faster for prefill).
#include <algorithm>
#include <cstring>
#include <vector>

#include "backend/cpu/cpu_check.h"
#include "backend/cpu/cpu_kernels.h"
#include "core/dtype.h"
#include "core/quant_blocks.h"

#if defined(__AVX512VNNI__) && defined(__AVX512VL__) && defined(__AVX512BW__) && defined(__F16C__)
#include <immintrin.h>
#define GSA_QUANT_VNNI 1
#endif

namespace gsa::cpu {
namespace {

using backend::MatmulParams;

inline float ld_f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
#if GSA_QUANT_VNNI
  return _cvtsh_ss(h);
#else
  return f16_to_f32(h);
#endif
}
inline float ld_f32(const uint8_t* p) {
  float f;
  std::memcpy(&f, p, 4);
  return f;
}
inline uint32_t ld_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline int ld_i16(const uint8_t* p) {
  int16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

// A kernel computes out[r] = w_row . x_row(r) for r < R, where w_row holds nb weight blocks and
// x_row(r) = x + r * xs holds the matching activation blocks.
using DotFn = void (*)(int64_t nb, const uint8_t* w, const uint8_t* x, int64_t xs, float* out);
constexpr int kMaxRows = 4;  // activation rows per kernel call (weight blocks decoded once)

// ---- legacy 32-element blocks -------------------------------------------------------------

// Weight layouts: offsets of the quants, the 5th-bit word and the min (0: none) in the block.
struct LegacyFormat {
  int bytes, qs, qh, m;
  bool is_signed;  // quants centered (Q4_0: -8, Q5_0: -16, Q8_0) vs offset by a min
};
constexpr LegacyFormat kQ4_0{18, 2, -1, 0, true};
constexpr LegacyFormat kQ4_1{20, 4, -1, 2, false};
constexpr LegacyFormat kQ5_0{22, 6, 2, 0, true};
constexpr LegacyFormat kQ5_1{24, 8, 4, 2, false};
constexpr LegacyFormat kQ8_0{34, 2, -1, 0, true};

// Integer quants of one weight block in element order (what the decoder multiplies by d).
template <uint32_t T>
inline void legacy_quants(const uint8_t* b, int* q) {
  if constexpr (T == ggml_id::Q8_0) {
    for (int j = 0; j < 32; ++j) q[j] = int8_t(b[2 + j]);
  } else {
    constexpr LegacyFormat f = T == ggml_id::Q4_0   ? kQ4_0
                               : T == ggml_id::Q4_1 ? kQ4_1
                               : T == ggml_id::Q5_0 ? kQ5_0
                                                    : kQ5_1;
    uint32_t qh = 0;
    if constexpr (f.qh >= 0) std::memcpy(&qh, b + f.qh, 4);
    constexpr int offset = T == ggml_id::Q4_0 ? 8 : T == ggml_id::Q5_0 ? 16 : 0;
    for (int j = 0; j < 16; ++j) {
      const int h0 = f.qh >= 0 ? int((qh >> j) & 1) << 4 : 0;
      const int h1 = f.qh >= 0 ? int((qh >> (j + 16)) & 1) << 4 : 0;
      q[j] = ((b[f.qs + j] & 0x0f) | h0) - offset;
      q[j + 16] = ((b[f.qs + j] >> 4) | h1) - offset;
    }
  }
}

template <uint32_t T>
constexpr LegacyFormat legacy_format() {
  return T == ggml_id::Q4_0   ? kQ4_0
         : T == ggml_id::Q4_1 ? kQ4_1
         : T == ggml_id::Q5_0 ? kQ5_0
         : T == ggml_id::Q5_1 ? kQ5_1
                              : kQ8_0;
}

// Activation blocks: Q8_0 { f16 d; i8 qs[32] } for centered types, Q8_1 { f16 d; f16 s; i8
// qs[32] } for types with a min. Per block: d_w * d_x * sum(q_w * q_x) (+ m_w * s_x).
template <uint32_t T, int R>
void dot_legacy_scalar(int64_t nb, const uint8_t* w, const uint8_t* x, int64_t xs, float* out) {
  constexpr LegacyFormat f = legacy_format<T>();
  constexpr int64_t xb = f.is_signed ? kGgmlQ8_0Bytes : kGgmlQ8_1Bytes;
  constexpr int xq = f.is_signed ? 2 : 4;
  float acc[R] = {};
  int q[32];
  for (int64_t ib = 0; ib < nb; ++ib) {
    const uint8_t* b = w + ib * f.bytes;
    legacy_quants<T>(b, q);
    const float dw = ld_f16(b);
    for (int r = 0; r < R; ++r) {
      const uint8_t* y = x + r * xs + ib * xb;
      const int8_t* yq = reinterpret_cast<const int8_t*>(y + xq);
      int sumi = 0;
      for (int j = 0; j < 32; ++j) sumi += q[j] * yq[j];
      acc[r] += float(sumi) * (dw * ld_f16(y));
      if constexpr (!f.is_signed) acc[r] += ld_f16(b + f.m) * ld_f16(y + 2);
    }
  }
  for (int r = 0; r < R; ++r) out[r] = acc[r];
}

#if GSA_QUANT_VNNI
// The 32 quants of one weight block as bytes: signed for centered types, unsigned otherwise.
template <uint32_t T>
inline __m256i legacy_quants_v(const uint8_t* b) {
  constexpr LegacyFormat f = legacy_format<T>();
  if constexpr (T == ggml_id::Q8_0) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 2));
  } else {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + f.qs));
    const __m128i lo4 = _mm_set1_epi8(0x0f);
    __m256i q = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), lo4), _mm_and_si128(v, lo4));
    if constexpr (f.qh >= 0) {
      uint32_t qh;
      std::memcpy(&qh, b + f.qh, 4);
      // Bit j of qh is the 5th bit of element j.
      q = _mm256_mask_add_epi8(q, __mmask32(qh), q, _mm256_set1_epi8(16));
    }
    if constexpr (T == ggml_id::Q4_0) q = _mm256_sub_epi8(q, _mm256_set1_epi8(8));
    if constexpr (T == ggml_id::Q5_0) q = _mm256_sub_epi8(q, _mm256_set1_epi8(16));
    return q;
  }
}

inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

template <uint32_t T, int R>
void dot_legacy_vnni(int64_t nb, const uint8_t* w, const uint8_t* x, int64_t xs, float* out) {
  constexpr LegacyFormat f = legacy_format<T>();
  constexpr int64_t xb = f.is_signed ? kGgmlQ8_0Bytes : kGgmlQ8_1Bytes;
  constexpr int xq = f.is_signed ? 2 : 4;
  __m256 acc[R];
  __m128 macc[R];  // lane 1: sum of m_w * s_x (types with a min)
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps(), macc[r] = _mm_setzero_ps();
  for (int64_t ib = 0; ib < nb; ++ib) {
    const uint8_t* b = w + ib * f.bytes;
    const __m256i q = legacy_quants_v<T>(b);
    // dpbusd multiplies unsigned by signed bytes: signed weights go in as |q| with their sign
    // moved onto the activations (activations never hold -128).
    const __m256i qa = f.is_signed ? _mm256_abs_epi8(q) : q;
    if constexpr (f.is_signed) {
      const float dw = ld_f16(b);
      for (int r = 0; r < R; ++r) {
        const uint8_t* y = x + r * xs + ib * xb;
        const __m256i yv = _mm256_sign_epi8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(y + xq)), q);
        const __m256i s = _mm256_dpbusd_epi32(_mm256_setzero_si256(), qa, yv);
        acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(dw * ld_f16(y)), acc[r]);
      }
    } else {
      // {d, m} of the weights and {d, s} of the activations are adjacent f16 pairs: one
      // conversion and one multiply give d_w * d_x and m_w * s_x together.
      static_assert(f.m == 2, "d and m adjacent");
      const __m128 wdm = _mm_cvtph_ps(_mm_cvtsi32_si128(int(ld_u32(b))));
      for (int r = 0; r < R; ++r) {
        const uint8_t* y = x + r * xs + ib * xb;
        const __m128 p = _mm_mul_ps(wdm, _mm_cvtph_ps(_mm_cvtsi32_si128(int(ld_u32(y)))));
        const __m256i yv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y + xq));
        const __m256i s = _mm256_dpbusd_epi32(_mm256_setzero_si256(), qa, yv);
        acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_broadcastss_ps(p), acc[r]);
        macc[r] = _mm_add_ps(macc[r], p);
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    out[r] = hsum8(acc[r]);
    if constexpr (!f.is_signed) out[r] += _mm_cvtss_f32(_mm_shuffle_ps(macc[r], macc[r], 1));
  }
}
#endif

// ---- K-quant 256-element super-blocks against Q8_K ----------------------------------------

constexpr int64_t kQ4KBytes = 144, kQ5KBytes = 176, kQ6KBytes = 210;

template <uint32_t T>
constexpr int64_t kquant_bytes() {
  return T == ggml_id::Q4_K ? kQ4KBytes : T == ggml_id::Q5_K ? kQ5KBytes : kQ6KBytes;
}

// Q4_K / Q5_K: sum_g d*sc[g]*dot(q[g], y[g]) - dmin*mn[g]*sum(y[g]) over 8 groups of 32, with
// sum(y[g]) from the activation block's bsums. Q6_K: d*sc[g]*dot(q[g]-32, y[g]), 16 groups.
template <uint32_t T>
inline void kquant_quants(const uint8_t* b, int* q) {
  if constexpr (T == ggml_id::Q6_K) {
    for (int h = 0; h < 2; ++h) {
      const uint8_t* ql = b + 64 * h;
      const uint8_t* qh = b + 128 + 32 * h;
      for (int l = 0; l < 32; ++l) {
        q[128 * h + l] = (ql[l] & 0x0f) | (((qh[l] >> 0) & 3) << 4);
        q[128 * h + l + 32] = (ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4);
        q[128 * h + l + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
        q[128 * h + l + 96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
      }
    }
  } else {
    const uint8_t* qs = b + (T == ggml_id::Q4_K ? 16 : 48);
    const uint8_t* qh = b + 16;
    for (int g = 0; g < 8; ++g) {
      for (int l = 0; l < 32; ++l) {
        const uint8_t byte = qs[32 * (g / 2) + l];
        int v = (g % 2 == 0) ? (byte & 0x0f) : (byte >> 4);
        if constexpr (T == ggml_id::Q5_K) v |= ((qh[l] >> g) & 1) << 4;
        q[32 * g + l] = v;
      }
    }
  }
}

template <uint32_t T, int R>
void dot_kquant_scalar(int64_t nb, const uint8_t* w, const uint8_t* x, int64_t xs, float* out) {
  constexpr int64_t wb = kquant_bytes<T>();
  float acc[R] = {};
  int q[256];
  for (int64_t ib = 0; ib < nb; ++ib) {
    const uint8_t* b = w + ib * wb;
    kquant_quants<T>(b, q);
    for (int r = 0; r < R; ++r) {
      const uint8_t* y = x + r * xs + ib * kGgmlQ8_KBytes;
      const int8_t* yq = reinterpret_cast<const int8_t*>(y + 4);
      const float dy = ld_f32(y);
      if constexpr (T == ggml_id::Q6_K) {
        const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
        int sumi = 0;
        for (int g = 0; g < 16; ++g) {
          int s = 0;
          for (int l = 0; l < 16; ++l) s += (q[16 * g + l] - 32) * yq[16 * g + l];
          sumi += sc[g] * s;
        }
        acc[r] += ld_f16(b + 208) * dy * float(sumi);
      } else {
        int sumi = 0, summ = 0;
        for (int g = 0; g < 8; ++g) {
          int sc, mn;
          ggml_scale_min_k4(g, b + 4, &sc, &mn);
          int s = 0;
          for (int l = 0; l < 32; ++l) s += q[32 * g + l] * yq[32 * g + l];
          sumi += sc * s;
          summ += mn * (ld_i16(y + 260 + 4 * g) + ld_i16(y + 262 + 4 * g));
        }
        acc[r] += ld_f16(b) * dy * float(sumi) - ld_f16(b + 2) * dy * float(summ);
      }
    }
  }
  for (int r = 0; r < R; ++r) out[r] = acc[r];
}

#if GSA_QUANT_VNNI
// One 32-element chunk: maddubs gives 16 pair sums (|q| <= 63, |y| <= 127: no saturation) and
// dpwssd scales them by the per-16 group scales and accumulates in int32.
inline __m256i kq_chunk(__m256i acc, __m256i q, const uint8_t* y, __m256i scales16) {
  const __m256i yv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y));
  return _mm256_dpwssd_epi32(acc, _mm256_maddubs_epi16(q, yv), scales16);
}

template <uint32_t T, int R>
void dot_kquant_vnni(int64_t nb, const uint8_t* w, const uint8_t* x, int64_t xs, float* out) {
  constexpr int64_t wb = kquant_bytes<T>();
  const __m256i lo4 = _mm256_set1_epi8(0x0f);
  __m256 acc[R];
  float macc[R] = {};
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  for (int64_t ib = 0; ib < nb; ++ib) {
    const uint8_t* b = w + ib * wb;
    __m256i isum[R];
    for (int r = 0; r < R; ++r) isum[r] = _mm256_setzero_si256();
    const uint8_t* y0 = x + ib * kGgmlQ8_KBytes;
    if constexpr (T == ggml_id::Q6_K) {
      const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
      for (int h = 0; h < 2; ++h) {
        const __m256i ql0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 64 * h));
        const __m256i ql1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 64 * h + 32));
        const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 128 + 32 * h));
        const __m256i m30 = _mm256_set1_epi8(0x30);
        __m256i q[4];
        q[0] = _mm256_or_si256(_mm256_and_si256(ql0, lo4), _mm256_and_si256(_mm256_slli_epi16(qh, 4), m30));
        q[1] = _mm256_or_si256(_mm256_and_si256(ql1, lo4), _mm256_and_si256(_mm256_slli_epi16(qh, 2), m30));
        q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), lo4), _mm256_and_si256(qh, m30));
        q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), lo4),
                               _mm256_and_si256(_mm256_srli_epi16(qh, 2), m30));
        for (int c = 0; c < 4; ++c) {
          const int g = 8 * h + 2 * c;
          const __m256i s16 = _mm256_set_m128i(_mm_set1_epi16(sc[g + 1]), _mm_set1_epi16(sc[g]));
          for (int r = 0; r < R; ++r)
            isum[r] = kq_chunk(isum[r], q[c], y0 + r * xs + 4 + 128 * h + 32 * c, s16);
        }
      }
      const float d = ld_f16(b + 208);
      for (int r = 0; r < R; ++r) {
        // The -32 offset of every quant, through the activation sums of each 16 elements.
        const uint8_t* y = y0 + r * xs;
        int off = 0;
        for (int g = 0; g < 16; ++g) off += sc[g] * ld_i16(y + 260 + 2 * g);
        // Subtracted in int32 (lane 0), exact, rather than as a separate float term.
        const __m256i sum = _mm256_sub_epi32(isum[r], _mm256_zextsi128_si256(_mm_cvtsi32_si128(32 * off)));
        acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), _mm256_set1_ps(d * ld_f32(y)), acc[r]);
      }
    } else {
      int sc[8], mn[8];
      for (int g = 0; g < 8; ++g) ggml_scale_min_k4(g, b + 4, &sc[g], &mn[g]);
      const uint8_t* qs = b + (T == ggml_id::Q4_K ? 16 : 48);
      __m256i qh;
      if constexpr (T == ggml_id::Q5_K) qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 16));
      for (int j = 0; j < 4; ++j) {
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs + 32 * j));
        __m256i q0 = _mm256_and_si256(v, lo4);
        __m256i q1 = _mm256_and_si256(_mm256_srli_epi16(v, 4), lo4);
        if constexpr (T == ggml_id::Q5_K) {
          const __m256i sixteen = _mm256_set1_epi8(16);
          const __mmask32 h0 = _mm256_test_epi8_mask(qh, _mm256_set1_epi8(char(1 << (2 * j))));
          const __mmask32 h1 = _mm256_test_epi8_mask(qh, _mm256_set1_epi8(char(2 << (2 * j))));
          q0 = _mm256_mask_add_epi8(q0, h0, q0, sixteen);
          q1 = _mm256_mask_add_epi8(q1, h1, q1, sixteen);
        }
        const __m256i s0 = _mm256_set1_epi16(int16_t(sc[2 * j]));
        const __m256i s1 = _mm256_set1_epi16(int16_t(sc[2 * j + 1]));
        for (int r = 0; r < R; ++r) {
          const uint8_t* y = y0 + r * xs + 4 + 64 * j;
          isum[r] = kq_chunk(isum[r], q0, y, s0);
          isum[r] = kq_chunk(isum[r], q1, y + 32, s1);
        }
      }
      const float d = ld_f16(b), dmin = ld_f16(b + 2);
      for (int r = 0; r < R; ++r) {
        const uint8_t* y = y0 + r * xs;
        int summ = 0;
        for (int g = 0; g < 8; ++g) summ += mn[g] * (ld_i16(y + 260 + 4 * g) + ld_i16(y + 262 + 4 * g));
        const float dy = ld_f32(y);
        acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[r]), _mm256_set1_ps(d * dy), acc[r]);
        macc[r] -= dmin * dy * float(summ);
      }
    }
  }
  for (int r = 0; r < R; ++r) out[r] = hsum8(acc[r]) + macc[r];
}
#endif

// ---- dispatch -----------------------------------------------------------------------------

struct QuantKernel {
  uint32_t x_type = 0;        // vec_dot_type of the activations
  int64_t x_block_bytes = 0;  // bytes per activation block (same element count as a w block)
  DotFn dot[kMaxRows] = {};   // dot[R - 1] handles R activation rows
  void (*quantize_x)(const float*, uint8_t*, int64_t) = nullptr;
};

template <uint32_t T, template <uint32_t, int> class K>
QuantKernel make_kernel() {
  QuantKernel q;
  q.x_type = ggml_vec_dot_type(T);
  q.x_block_bytes = q.x_type == ggml_id::Q8_0   ? kGgmlQ8_0Bytes
                    : q.x_type == ggml_id::Q8_1 ? kGgmlQ8_1Bytes
                                                : kGgmlQ8_KBytes;
  q.quantize_x = q.x_type == ggml_id::Q8_0   ? ggml_quantize_row_q8_0
                 : q.x_type == ggml_id::Q8_1 ? ggml_quantize_row_q8_1
                                             : ggml_quantize_row_q8_k;
  q.dot[0] = K<T, 1>::fn;
  q.dot[1] = K<T, 2>::fn;
  q.dot[2] = K<T, 3>::fn;
  q.dot[3] = K<T, 4>::fn;
  return q;
}

template <uint32_t T, int R>
struct LegacyK {
#if GSA_QUANT_VNNI
  static constexpr DotFn fn = dot_legacy_vnni<T, R>;
#else
  static constexpr DotFn fn = dot_legacy_scalar<T, R>;
#endif
};
template <uint32_t T, int R>
struct KquantK {
#if GSA_QUANT_VNNI
  static constexpr DotFn fn = dot_kquant_vnni<T, R>;
#else
  static constexpr DotFn fn = dot_kquant_scalar<T, R>;
#endif
};
template <uint32_t T, int R>
struct LegacyScalarK {
  static constexpr DotFn fn = dot_legacy_scalar<T, R>;
};
template <uint32_t T, int R>
struct KquantScalarK {
  static constexpr DotFn fn = dot_kquant_scalar<T, R>;
};

const QuantKernel* find_kernel(uint32_t type, bool scalar) {
  static const QuantKernel kFast[] = {
      make_kernel<ggml_id::Q4_0, LegacyK>(),  make_kernel<ggml_id::Q4_1, LegacyK>(),
      make_kernel<ggml_id::Q5_0, LegacyK>(),  make_kernel<ggml_id::Q5_1, LegacyK>(),
      make_kernel<ggml_id::Q8_0, LegacyK>(),  make_kernel<ggml_id::Q4_K, KquantK>(),
      make_kernel<ggml_id::Q5_K, KquantK>(),  make_kernel<ggml_id::Q6_K, KquantK>(),
  };
  static const QuantKernel kScalar[] = {
      make_kernel<ggml_id::Q4_0, LegacyScalarK>(), make_kernel<ggml_id::Q4_1, LegacyScalarK>(),
      make_kernel<ggml_id::Q5_0, LegacyScalarK>(), make_kernel<ggml_id::Q5_1, LegacyScalarK>(),
      make_kernel<ggml_id::Q8_0, LegacyScalarK>(), make_kernel<ggml_id::Q4_K, KquantScalarK>(),
      make_kernel<ggml_id::Q5_K, KquantScalarK>(), make_kernel<ggml_id::Q6_K, KquantScalarK>(),
  };
  static constexpr uint32_t kIds[] = {ggml_id::Q4_0, ggml_id::Q4_1, ggml_id::Q5_0, ggml_id::Q5_1,
                                      ggml_id::Q8_0, ggml_id::Q4_K, ggml_id::Q5_K, ggml_id::Q6_K};
  for (size_t i = 0; i < std::size(kIds); ++i)
    if (kIds[i] == type) return scalar ? &kScalar[i] : &kFast[i];
  return nullptr;
}

// Weight rows per task; a multiple of the rows one cache line of y holds.
constexpr int64_t kRowsPerTask = 16;
// Quantized activation bytes per pass over x: small enough to stay in L2 while a task's weight
// rows are swept against it.
constexpr int64_t kPassBytes = 256 * 1024;

}  // namespace

bool matmul_ggml_supported(uint32_t ggml_type) { return find_kernel(ggml_type, false) != nullptr; }

Status matmul_ggml_validate(const MatmulParams& p) {
  if (p.act_type != DType::F32) return unsupported("cpu matmul: activations must be f32");
  if (p.w_type != DType::Ggml) return invalid_argument("matmul_ggml: w_type is not Ggml");
  const GgmlTypeTraits* traits = ggml_type_traits(p.w_ggml);
  const QuantKernel* kern = find_kernel(p.w_ggml, false);
  if (!traits || !kern) {
    return unsupported("cpu matmul: no quantized kernel for ggml type {} ({})", p.w_ggml,
                       traits ? traits->name : "unknown");
  }
  if (p.m < 0 || p.n < 0 || p.k < 0)
    return invalid_argument("matmul: negative shape m={} n={} k={}", p.m, p.n, p.k);
  if (p.k % traits->block_elems != 0) {
    return invalid_argument("matmul: k={} is not a multiple of the {} block size {}", p.k,
                            traits->name, traits->block_elems);
  }
  const int64_t nb = p.k / traits->block_elems;
  if (!product_fits({p.m, p.n}) || !product_fits({p.m, p.k}) ||
      !product_fits({p.n, nb, traits->block_bytes}) || !product_fits({p.m, nb, kern->x_block_bytes}))
    return invalid_argument("matmul: shape m={} n={} k={} too large", p.m, p.n, p.k);
  if (p.m > 0 && p.n > 0 && !p.y) return invalid_argument("matmul: null y");
  if (p.m > 0 && p.n > 0 && p.k > 0 && (!p.x || !p.w)) return invalid_argument("matmul: null x or w");
  return Status::ok();
}

Status matmul_ggml(const MatmulParams& p, ThreadPool* pool, bool force_scalar) {
  GSA_RETURN_IF_ERROR(matmul_ggml_validate(p));
  const GgmlTypeTraits* traits = ggml_type_traits(p.w_ggml);
  const QuantKernel* kern = find_kernel(p.w_ggml, force_scalar);
  const int64_t nb = p.k / traits->block_elems;
  if (p.m == 0 || p.n == 0) return Status::ok();
  float* y = static_cast<float*>(p.y);
  if (p.k == 0) {
    for (int64_t i = 0; i < p.m; ++i)
      for (int64_t j = 0; j < p.n; ++j) y[i * p.n + j] = p.bias ? p.bias[j] : 0.0f;
    return Status::ok();
  }

  // 1. Activations to the vec_dot_type, one row at a time.
  const int64_t x_row_bytes = nb * kern->x_block_bytes;
  const int64_t w_row_bytes = nb * traits->block_bytes;
  // Reused across calls (the workers read it through xqd, not through their own thread_local).
  thread_local std::vector<uint8_t> xq;
  xq.resize(size_t(p.m * x_row_bytes));
  uint8_t* xqd = xq.data();
  const float* x = static_cast<const float*>(p.x);
  pool->parallel_for(p.m, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) kern->quantize_x(x + i * p.k, xqd + i * x_row_bytes, p.k);
  }, std::max<int64_t>(1, 16384 / p.k));

  // 2. Tasks of (kRowsPerTask weight rows) x (one pass of activation rows); inside, each group
  // of up to 4 activation rows is swept over the task's weight rows, so a decoded weight block
  // serves 4 rows and the group stays in L1.
  const uint8_t* w = static_cast<const uint8_t*>(p.w);
  const int64_t rows_per_pass = std::max<int64_t>(kMaxRows, kPassBytes / x_row_bytes / kMaxRows * kMaxRows);
  const int64_t n_passes = (p.m + rows_per_pass - 1) / rows_per_pass;
  const int64_t n_jtasks = (p.n + kRowsPerTask - 1) / kRowsPerTask;
  // Below ~32 KiB of weights per chunk the pool's wake-up costs more than it saves.
  const int64_t min_tasks = std::max<int64_t>(1, 32768 / (kRowsPerTask * w_row_bytes));
  pool->parallel_for(n_jtasks * n_passes, [&](int64_t tb, int64_t te, int) {
    for (int64_t t = tb; t < te; ++t) {
      const int64_t j0 = (t / n_passes) * kRowsPerTask, j1 = std::min(p.n, j0 + kRowsPerTask);
      const int64_t pass = t % n_passes;
      const int64_t i_end = std::min(p.m, (pass + 1) * rows_per_pass);
      for (int64_t i = pass * rows_per_pass; i < i_end; i += kMaxRows) {
        const int rows = int(std::min<int64_t>(kMaxRows, i_end - i));
        const uint8_t* xr = xqd + i * x_row_bytes;
        for (int64_t j = j0; j < j1; ++j) {
          float r[kMaxRows];
          kern->dot[rows - 1](nb, w + j * w_row_bytes, xr, x_row_bytes, r);
          const float bj = p.bias ? p.bias[j] : 0.0f;
          for (int a = 0; a < rows; ++a) y[(i + a) * p.n + j] = r[a] + bj;
        }
      }
    }
  }, min_tasks);
  return Status::ok();
}

}  // namespace gsa::cpu
