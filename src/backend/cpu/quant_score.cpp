// CPU scoring of Quant representations (ops_sparse.h): every token's q.k' of one (block, kv
// head) from its 2-bit codes, with integer SIMD where the CPU has it; and the ordered maximum
// of those scores. Used by block_select.cpp.
#include "backend/cpu/quant_score.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif
#include <limits>

#include "backend/cpu/score_clones.h"
#include "backend/ops_sparse.h"

namespace gsa::cpu {
namespace {

// Quant scoring, integer part: sums[t] = sum_d a8_d c_d over the tokens of a block, exactly
// (the CUDA kernel's dp4a sums). SIMD: the codes are read as they lie, 8 (AVX2) or 16 (AVX-512)
// code words a vector; (x >> 2j) & 3 puts dimension 16w + 4b + j of word w in its byte b, and
// vpmaddubsw multiplies those bytes by a pattern of the matching a8 (built once per call), then
// vpmaddwd widens. Bounds: |a8 c| <= 381, so a vpmaddubsw pair is <= 762 (no saturation), the
// 16-bit sum of 4 variants over a word's 2 bytes <= 3048, over 8 chunks <= 24384 (< 2^15).
// The per-word 32-bit sums of a group of tokens are then added pairwise in lane order, which
// leaves one lane per token. Vector paths take head_dim / 16 a power of two <= 64.
#if defined(__x86_64__) && defined(__GNUC__) && (defined(__AVX2__) || defined(GSA_SCORE_DISPATCH))
#define GSA_QUANT_AVX2 1
#if defined(__AVX2__)
#define GSA_AVX2_FN inline
#else
#define GSA_AVX2_FN __attribute__((target("avx2")))
#endif
#if defined(__AVX512BW__)
#define GSA_QUANT_AVX512 1
#endif
#endif

// base + s * v with the product rounded on its own (no FMA contraction), as on CUDA.
inline float mul_then_add(float base, float s, float v) {
  float prod = s * v;
#if defined(__GNUC__) && defined(__x86_64__)
  __asm__("" : "+x"(prod));
#else
  volatile float opaque = prod;
  prod = opaque;
#endif
  return base + prod;
}

// Exact integer sums of tokens [t0, t1), scalar (a the rounded factors, integers in floats).
inline void quant_sums_scalar(const float* a, const uint32_t* codes, int t0, int t1, int words,
                              uint32_t* sums) {
  for (int t = t0; t < t1; ++t) {
    const uint32_t* kt = codes + int64_t(t) * words;
    int32_t acc = 0;
    for (int w = 0; w < words; ++w)
      for (int j = 0; j < 16; ++j) acc += int32_t(a[16 * w + j]) * int32_t((kt[w] >> (2 * j)) & 3u);
    sums[t] = uint32_t(acc);
  }
}

#if defined(GSA_QUANT_AVX2)
// The patterns: pat[j * words + w] (4 bytes) holds a8 of dimensions 16 w + 4 b + j, b = 0..3
// (a the rounded factors, integers in floats): per word, the 16 factors as bytes, transposed
// 4 x 4 by one pshufb.
GSA_AVX2_FN void quant_patterns(const float* a, int words, uint32_t* pat) {
  // packs leaves dims 0-3, 8-11, 4-7, 12-15; byte 4 j + b of the result is dim 4 b + j.
  const __m128i tr = _mm_setr_epi8(0, 8, 4, 12, 1, 9, 5, 13, 2, 10, 6, 14, 3, 11, 7, 15);
  for (int w = 0; w < words; ++w) {
    const __m256i i0 = _mm256_cvtps_epi32(_mm256_loadu_ps(a + 16 * w));
    const __m256i i1 = _mm256_cvtps_epi32(_mm256_loadu_ps(a + 16 * w + 8));
    const __m256i p16 = _mm256_packs_epi32(i0, i1);
    const __m128i p8 = _mm_shuffle_epi8(
        _mm_packs_epi16(_mm256_castsi256_si128(p16), _mm256_extracti128_si256(p16, 1)), tr);
    pat[w] = uint32_t(_mm_cvtsi128_si32(p8));
    pat[words + w] = uint32_t(_mm_extract_epi32(p8, 1));
    pat[2 * words + w] = uint32_t(_mm_extract_epi32(p8, 2));
    pat[3 * words + w] = uint32_t(_mm_extract_epi32(p8, 3));
  }
}

// Lane-ordered pairwise sums of the 16 lanes of (a, b): [a0+a1, a2+a3, ..., b6+b7].
GSA_AVX2_FN __m256i pair_sums8(__m256i a, __m256i b) {
  return _mm256_permute4x64_epi64(_mm256_hadd_epi32(a, b), 0xD8);
}

// Pattern j of the 8 words of a vector: its words w (words >= 8) or words 0.. repeated.
template <int NV>
GSA_AVX2_FN __m256i pattern8(const uint32_t* p) {
  if constexpr (NV == 1) return _mm256_set1_epi32(int(p[0]));
  if constexpr (NV == 2) {
    int64_t v;
    std::memcpy(&v, p, 8);
    return _mm256_set1_epi64x(v);
  }
  if constexpr (NV == 4) return _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  if constexpr (NV == 8) return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}

// NV = min(words, 8) vectors of per-word sums per group of 8 tokens, of M chunks each.
template <int NV>
GSA_AVX2_FN void quant_scores_avx2(const uint32_t* codes, int groups, int words, const uint32_t* pat,
                                   float s, float* out) {
  const __m256 vs = _mm256_set1_ps(s);
  const __m256i m3 = _mm256_set1_epi8(3), ones = _mm256_set1_epi16(1);
  const int M = words > 8 ? words / 8 : 1;
  for (int g = 0; g < groups; ++g) {
    const uint32_t* src = codes + int64_t(g) * 8 * words;
    __m256i v[NV];
    for (int k = 0; k < NV; ++k) {
      __m256i acc = _mm256_setzero_si256();
      for (int m = 0; m < M; ++m) {
        const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 8 * (k * M + m)));
        const uint32_t* p = pat + 8 * m;
        const __m256i s0 = _mm256_maddubs_epi16(_mm256_and_si256(x, m3), pattern8<NV>(p));
        const __m256i s1 = _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(x, 2), m3),
                                                pattern8<NV>(p + words));
        const __m256i s2 = _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(x, 4), m3),
                                                pattern8<NV>(p + 2 * words));
        const __m256i s3 = _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(x, 6), m3),
                                                pattern8<NV>(p + 3 * words));
        acc = _mm256_add_epi16(acc, _mm256_add_epi16(_mm256_add_epi16(s0, s1), _mm256_add_epi16(s2, s3)));
      }
      v[k] = _mm256_madd_epi16(acc, ones);
    }
    for (int n = NV; n > 1; n /= 2)
      for (int i = 0; i < n / 2; ++i) v[i] = pair_sums8(v[2 * i], v[2 * i + 1]);
    __m256 prod = _mm256_mul_ps(vs, _mm256_cvtepi32_ps(v[0]));
    __asm__("" : "+x"(prod));  // rounded here: never fused into the add of base
    _mm256_storeu_ps(out + 8 * g, prod);
  }
}

// best = std::max(best, v[t]) over t, as vmaxps(v, best) (which keeps best when v is NaN), in
// 8 lanes, then across them: the ordered loop's value (max_in_order handles zeros).
GSA_AVX2_FN float lane_max_avx2(const float* v, int n, int* done) {
  __m256 acc = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  int t = 0;
  for (; t + 8 <= n; t += 8) acc = _mm256_max_ps(_mm256_loadu_ps(v + t), acc);
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
  *done = t;
  return _mm_cvtss_f32(m);
}
#endif

#if defined(GSA_QUANT_AVX512)
inline __m512i pair_sums16(__m512i a, __m512i b) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  return _mm512_add_epi32(_mm512_permutex2var_epi32(a, even, b), _mm512_permutex2var_epi32(a, odd, b));
}

template <int NV>
inline __m512i pattern16(const uint32_t* p) {
  if constexpr (NV == 1) return _mm512_set1_epi32(int(p[0]));
  if constexpr (NV == 2) {
    int64_t v;
    std::memcpy(&v, p, 8);
    return _mm512_set1_epi64(v);
  }
  if constexpr (NV == 4) return _mm512_maskz_broadcast_i32x4(0xFFFF, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  if constexpr (NV == 8) return _mm512_maskz_broadcast_i64x4(0xFF, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  if constexpr (NV == 16) return _mm512_loadu_si512(p);
}

// As quant_scores_avx2 with 16 tokens a group; NV = min(words, 16).
template <int NV>
inline void quant_scores_avx512(const uint32_t* codes, int groups, int words, const uint32_t* pat,
                                float s, float* out) {
  const __m512 vs = _mm512_set1_ps(s);
  const __m512i m3 = _mm512_set1_epi8(3), ones = _mm512_set1_epi16(1);
  const int M = words > 16 ? words / 16 : 1;
  for (int g = 0; g < groups; ++g) {
    const uint32_t* src = codes + int64_t(g) * 16 * words;
    __m512i v[NV];
    for (int k = 0; k < NV; ++k) {
      __m512i acc = _mm512_setzero_si512();
      for (int m = 0; m < M; ++m) {
        const __m512i x = _mm512_loadu_si512(src + 16 * (k * M + m));
        const uint32_t* p = pat + 16 * m;
        const __m512i s0 = _mm512_maddubs_epi16(_mm512_and_si512(x, m3), pattern16<NV>(p));
        const __m512i s1 = _mm512_maddubs_epi16(_mm512_and_si512(_mm512_srli_epi16(x, 2), m3),
                                                pattern16<NV>(p + words));
        const __m512i s2 = _mm512_maddubs_epi16(_mm512_and_si512(_mm512_srli_epi16(x, 4), m3),
                                                pattern16<NV>(p + 2 * words));
        const __m512i s3 = _mm512_maddubs_epi16(_mm512_and_si512(_mm512_srli_epi16(x, 6), m3),
                                                pattern16<NV>(p + 3 * words));
        acc = _mm512_add_epi16(acc, _mm512_add_epi16(_mm512_add_epi16(s0, s1), _mm512_add_epi16(s2, s3)));
      }
      v[k] = _mm512_madd_epi16(acc, ones);
    }
    for (int n = NV; n > 1; n /= 2)
      for (int i = 0; i < n / 2; ++i) v[i] = pair_sums16(v[2 * i], v[2 * i + 1]);
    __m512 prod = _mm512_mul_ps(vs, _mm512_maskz_cvtepi32_ps(0xFFFF, v[0]));
    __asm__("" : "+v"(prod));  // rounded here: never fused into the add of base
    _mm512_storeu_ps(out + 16 * g, prod);
  }
}
#endif

#if defined(GSA_QUANT_AVX2) && defined(GSA_SCORE_DISPATCH)
inline bool have_avx2() {
  static const bool avx2 = (__builtin_cpu_init(), __builtin_cpu_supports("avx2"));
  return avx2;
}
#elif defined(GSA_QUANT_AVX2)
inline bool have_avx2() { return true; }
#endif

// out[t] = s * sum_d a8_d c_d (the product rounded) for the first groups * lanes tokens, by
// vector; returns the tokens done (0: none).
inline int quant_scores_simd(const float* a, const uint32_t* codes, int block_size, int words,
                             float s, float* out) {
#if defined(GSA_QUANT_AVX2)
  if (!have_avx2()) return 0;
  if (!std::has_single_bit(unsigned(words)) || words > 64) return 0;
#if defined(GSA_QUANT_AVX512)
  const int lanes = 16;
#else
  const int lanes = 8;
#endif
  const int groups = block_size / lanes;
  if (groups == 0) return 0;
  alignas(64) uint32_t pat[4 * 64];
  quant_patterns(a, words, pat);
#if defined(GSA_QUANT_AVX512)
  switch (std::min(words, 16)) {
    case 1: quant_scores_avx512<1>(codes, groups, words, pat, s, out); break;
    case 2: quant_scores_avx512<2>(codes, groups, words, pat, s, out); break;
    case 4: quant_scores_avx512<4>(codes, groups, words, pat, s, out); break;
    case 8: quant_scores_avx512<8>(codes, groups, words, pat, s, out); break;
    default: quant_scores_avx512<16>(codes, groups, words, pat, s, out); break;
  }
#else
  switch (std::min(words, 8)) {
    case 1: quant_scores_avx2<1>(codes, groups, words, pat, s, out); break;
    case 2: quant_scores_avx2<2>(codes, groups, words, pat, s, out); break;
    case 4: quant_scores_avx2<4>(codes, groups, words, pat, s, out); break;
    default: quant_scores_avx2<8>(codes, groups, words, pat, s, out); break;
  }
#endif
  return groups * lanes;
#else
  return 0;
#endif
}

// Quant: q.k' for every token of a block (k' the dequantized key, ops_sparse.h), into out
// [block_size]. q.k' = base + s * sum_d a8_d c_d with a_d = q_d r_d / 4 rounded to 8 bits
// (quant_query_inv): the products and their sums are integers below 2^24, so the sums are
// exact and equal the CUDA kernel's integer ones (and a float accumulation of them).
// x86 with AVX2: integer SIMD sums above (quant_scores_simd), the tail tokens scalar. Elsewhere,
// and when a factor is NaN (non-finite inputs), a float loop over tokens: one 32-bit word of
// codes (16 dims) of every token is gathered into x, then each of its dims adds a8_d c_d to all
// tokens at once, so the inner loops vectorize. a [head_dim] and x [block_size] are scratch.
GSA_SCORE_CLONES void quant_token_scores_impl(const float* __restrict q, const uint8_t* rep, int block_size,
                                              int head_dim, float* __restrict a, uint32_t* __restrict x,
                                              float* __restrict out) {
  const float* mn = reinterpret_cast<const float*>(rep);
  const float* mx = mn + head_dim;
  const uint32_t* codes = reinterpret_cast<const uint32_t*>(mx + head_dim);
  // base = sum_d q_d (mn_d + step_d / 2) in order of d: the one serial chain, kept apart from
  // the loop that vectorizes, with the same two multiply-adds as ever (which the compiler
  // contracts, or not, as it did before: e.g. fused under -march=native, unfused in the
  // portable clones). max_abs over 16 lanes is the ordered loop's value (all >= +0; std::max
  // skips NaN either way).
  float mid[kMaxScoreHeadDim];
  float lanes[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  for (int d0 = 0; d0 < head_dim; d0 += 16)  // head_dim % 16 == 0
    for (int j = 0; j < 16; ++j) {
      const int d = d0 + j;
      const float step = (mx[d] - mn[d]) * 0.25f;
      a[d] = q[d] * step;
      lanes[j] = std::max(lanes[j], std::fabs(a[d]));
      mid[d] = mn[d] + 0.5f * step;
    }
  for (int w = 8; w >= 1; w /= 2)
    for (int j = 0; j < w; ++j) lanes[j] = std::max(lanes[j], lanes[j + w]);
  const float max_abs = lanes[0];
  float base = 0.0f;
  for (int d = 0; d < head_dim; ++d) {
    base += q[d] * mid[d];
#if defined(__GNUC__)
    __asm__ volatile("");  // a scalar loop: no vector multiply split from the ordered adds
#endif
  }
  const float inv = backend::quant_query_inv(max_abs);
  // std::clamp's result (NaN stays NaN) as min(max()), which vectorizes.
  for (int d = 0; d < head_dim; ++d) a[d] = std::min(std::max(std::nearbyint(a[d] * inv), -127.0f), 127.0f);
  int nan = 0;
  for (int d = 0; d < head_dim; ++d) nan |= a[d] != a[d];
  const float s = backend::quant_query_scale(max_abs);
  const int words = head_dim / 16;
  if (!nan) {
    const int done = quant_scores_simd(a, codes, block_size, words, s, out);
    if (done > 0) {
      for (int t = 0; t < done; ++t) out[t] = base + out[t];
      if (done < block_size) {
        quant_sums_scalar(a, codes, done, block_size, words, x);
        for (int t = done; t < block_size; ++t) out[t] = mul_then_add(base, s, float(int32_t(x[t])));
      }
      return;
    }
  }
  for (int t = 0; t < block_size; ++t) out[t] = 0.0f;
  for (int w = 0; w < words; ++w) {
    for (int t = 0; t < block_size; ++t) x[t] = codes[int64_t(t) * words + w];
    for (int j = 0; j < 16; ++j) {
      const float aj = a[w * 16 + j];
      const int shift = 2 * j;
      for (int t = 0; t < block_size; ++t) out[t] += aj * float((x[t] >> shift) & 3u);
    }
  }
  for (int t = 0; t < block_size; ++t) out[t] = mul_then_add(base, s, out[t]);
}

// The result of best = std::max(best, v[t]) over t in order from -inf, bit for bit: lane
// maxima (std::max keeps the accumulator when v[t] is NaN, as vmaxps does) give the value, and
// a zero maximum redoes the ordered loop, where the first zero decides the sign.
inline float max_in_order_impl(const float* __restrict v, int n) {
  float best = -std::numeric_limits<float>::infinity();
  int t = 0;
#if defined(GSA_QUANT_AVX2)
  if (have_avx2()) best = lane_max_avx2(v, n, &t);
#endif
  for (; t < n; ++t) best = std::max(best, v[t]);
  if (best == 0.0f) {
    best = -std::numeric_limits<float>::infinity();
    for (t = 0; t < n; ++t) best = std::max(best, v[t]);
  }
  return best;
}

}  // namespace

void quant_token_scores(const float* q, const uint8_t* rep, int block_size, int head_dim, float* a,
                        uint32_t* x, float* out) {
  quant_token_scores_impl(q, rep, block_size, head_dim, a, x, out);
}

float max_in_order(const float* v, int n) { return max_in_order_impl(v, n); }

}  // namespace gsa::cpu
