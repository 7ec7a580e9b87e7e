// Small f32 vector helpers shared by the CPU kernels: dot, axpy, scale, max, exp-and-sum. An
// AVX-512 path when the compiler targets it (-march=native), a scalar path otherwise. Each
// helper has one fixed order of operations, so equal inputs give bit-equal outputs.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#if defined(__AVX512F__)
// GCC 12 reports its own intrinsics' _mm512_undefined_* placeholders as maybe-uninitialized
// once they are inlined; silence that for the header's lines only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#define GSA_CPU_AVX512 1
#endif

namespace gsa::cpu::simd {

#if GSA_CPU_AVX512

/// Mask of the first n (< 16) lanes.
inline __mmask16 tail_mask(int64_t n) { return __mmask16((1u << n) - 1u); }

/// e^x for 16 lanes, about 1 ulp over the range where e^x is a normal float; -inf gives 0.
/// Range reduction x = n ln2 + r, |r| <= ln2/2, degree-6 polynomial, then scalef by 2^n.
inline __m512 exp_ps(__m512 x) {
  const __m512 log2e = _mm512_set1_ps(1.44269504088896341f);
  const __m512 ln2_hi = _mm512_set1_ps(0.693359375f);
  const __m512 ln2_lo = _mm512_set1_ps(-2.12194440e-4f);
  x = _mm512_max_ps(x, _mm512_set1_ps(-104.0f));  // e^-104 underflows to 0 after scalef
  x = _mm512_min_ps(x, _mm512_set1_ps(88.7f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT);
  __m512 r = _mm512_fnmadd_ps(n, ln2_hi, x);
  r = _mm512_fnmadd_ps(n, ln2_lo, r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  const __m512 r2 = _mm512_mul_ps(r, r);
  p = _mm512_fmadd_ps(p, r2, r);
  p = _mm512_add_ps(p, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

inline float dot(const float* a, const float* b, int64_t n) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), acc1);
  }
  for (; i + 16 <= n; i += 16)
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
  if (i < n) {
    const __mmask16 m = tail_mask(n - i);
    acc1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), acc1);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

/// y[i] += a * x[i]
inline void axpy(float a, const float* x, float* y, int64_t n) {
  const __m512 va = _mm512_set1_ps(a);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(y + i, _mm512_fmadd_ps(va, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
  if (i < n) {
    const __mmask16 m = tail_mask(n - i);
    _mm512_mask_storeu_ps(y + i, m, _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(m, x + i),
                                                    _mm512_maskz_loadu_ps(m, y + i)));
  }
}

/// y[i] *= a
inline void scale(float* y, float a, int64_t n) {
  const __m512 va = _mm512_set1_ps(a);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, _mm512_mul_ps(va, _mm512_loadu_ps(y + i)));
  if (i < n) {
    const __mmask16 m = tail_mask(n - i);
    _mm512_mask_storeu_ps(y + i, m, _mm512_mul_ps(va, _mm512_maskz_loadu_ps(m, y + i)));
  }
}

inline float max(const float* x, int64_t n) {
  __m512 acc = _mm512_set1_ps(-INFINITY);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) acc = _mm512_max_ps(acc, _mm512_loadu_ps(x + i));
  if (i < n) acc = _mm512_mask_max_ps(acc, tail_mask(n - i), acc, _mm512_maskz_loadu_ps(tail_mask(n - i), x + i));
  return _mm512_reduce_max_ps(acc);
}

/// x[i] = e^(x[i] - m); returns the sum of the new x.
inline float exp_shift_sum(float* x, int64_t n, float m) {
  const __m512 vm = _mm512_set1_ps(m);
  __m512 acc = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 e = exp_ps(_mm512_sub_ps(_mm512_loadu_ps(x + i), vm));
    _mm512_storeu_ps(x + i, e);
    acc = _mm512_add_ps(acc, e);
  }
  if (i < n) {
    const __mmask16 k = tail_mask(n - i);
    const __m512 e = _mm512_maskz_mov_ps(k, exp_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), vm)));
    _mm512_mask_storeu_ps(x + i, k, e);
    acc = _mm512_add_ps(acc, e);
  }
  return _mm512_reduce_add_ps(acc);
}

// Lane sums of 4 vectors, kept per 128-bit lane: lane L of the result holds
// [sum_L(a), sum_L(b), sum_L(c), sum_L(d)], sum_L being the sum of a vector's 4 floats in lane L.
inline __m512 lane_sums4(__m512 a, __m512 b, __m512 c, __m512 d) {
  const __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
  const __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
  return _mm512_add_ps(_mm512_shuffle_ps(ab, cd, _MM_SHUFFLE(1, 0, 1, 0)),
                       _mm512_shuffle_ps(ab, cd, _MM_SHUFFLE(3, 2, 3, 2)));
}

// Full sums of 16 vectors from their lane_sums4 (u0: vectors 0-3, ..., u3: 12-15): lane i of the
// result is the sum of vector i.
inline __m512 finish_sums16(__m512 u0, __m512 u1, __m512 u2, __m512 u3) {
  const __m512 s01 = _mm512_add_ps(_mm512_shuffle_f32x4(u0, u1, _MM_SHUFFLE(1, 0, 1, 0)),
                                   _mm512_shuffle_f32x4(u0, u1, _MM_SHUFFLE(3, 2, 3, 2)));
  const __m512 s23 = _mm512_add_ps(_mm512_shuffle_f32x4(u2, u3, _MM_SHUFFLE(1, 0, 1, 0)),
                                   _mm512_shuffle_f32x4(u2, u3, _MM_SHUFFLE(3, 2, 3, 2)));
  return _mm512_add_ps(_mm512_shuffle_f32x4(s01, s23, _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_f32x4(s01, s23, _MM_SHUFFLE(3, 1, 3, 1)));
}

// lane_sums4 of q . k[j] for the 4 keys at k (k is [4, hd], hd a multiple of 16).
inline __m512 dot_quad(const float* q, const float* k, int64_t hd) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (int64_t d = 0; d < hd; d += 16) {
    const __m512 qv = _mm512_loadu_ps(q + d);
    a0 = _mm512_fmadd_ps(qv, _mm512_loadu_ps(k + d), a0);
    a1 = _mm512_fmadd_ps(qv, _mm512_loadu_ps(k + hd + d), a1);
    a2 = _mm512_fmadd_ps(qv, _mm512_loadu_ps(k + 2 * hd + d), a2);
    a3 = _mm512_fmadd_ps(qv, _mm512_loadu_ps(k + 3 * hd + d), a3);
  }
  return lane_sums4(a0, a1, a2, a3);
}

/// Prefetches floats [0, n) of p into L2, one request per cache line.
inline void prefetch_l2(const float* p, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) _mm_prefetch(reinterpret_cast<const char*>(p + i), _MM_HINT_T1);
}

/// s[j] = scale * (q . k[j]) for keys j < n; k is [n, hd] row-major. Sixteen keys at a time,
/// reduced together by a transpose (3 shuffles and adds per key instead of a full reduction).
/// pf, when set, is the same span of the next block: prefetched as this one is read, because
/// the hardware prefetcher does not follow jumps between blocks (or 4 KiB pages).
inline void scores(const float* q, const float* k, int64_t n, int64_t hd, float scale, float* s,
                   const float* pf = nullptr) {
  int64_t j = 0;
  if (pf) prefetch_l2(pf + (n / 16) * 16 * hd, (n % 16) * hd);
  if (hd % 16 == 0) {
    const __m512 vs = _mm512_set1_ps(scale);
    for (; j + 16 <= n; j += 16) {
      // Prefetches interleaved with the dot products: a burst would fill the line-fill buffers
      // and stall the loads this block needs.
      const float* kj = k + j * hd;
      if (pf) prefetch_l2(pf + j * hd, 4 * hd);
      const __m512 u0 = dot_quad(q, kj, hd);
      if (pf) prefetch_l2(pf + (j + 4) * hd, 4 * hd);
      const __m512 u1 = dot_quad(q, kj + 4 * hd, hd);
      if (pf) prefetch_l2(pf + (j + 8) * hd, 4 * hd);
      const __m512 u2 = dot_quad(q, kj + 8 * hd, hd);
      if (pf) prefetch_l2(pf + (j + 12) * hd, 4 * hd);
      const __m512 u3 = dot_quad(q, kj + 12 * hd, hd);
      _mm512_storeu_ps(s + j, _mm512_mul_ps(finish_sums16(u0, u1, u2, u3), vs));
    }
  }
  for (; j < n; ++j) s[j] = dot(q, k + j * hd, hd) * scale;
}

/// acc = acc * corr + sum_j p[j] * v[j] for j < n; v is [n, hd] row-major, acc is [hd].
/// Holds 64 dims of acc in registers while streaming the values.
inline void rescale_accumulate(const float* p, const float* v, int64_t n, int64_t hd, float corr,
                               float* acc, const float* pf = nullptr) {
  if (hd % 16 != 0) {
    if (pf) prefetch_l2(pf, n * hd);
    scale(acc, corr, hd);
    for (int64_t j = 0; j < n; ++j) axpy(p[j], v + j * hd, acc, hd);
    return;
  }
  const __m512 vc = _mm512_set1_ps(corr);
  int64_t d0 = 0;
  for (; d0 + 64 <= hd; d0 += 64) {
    __m512 a0 = _mm512_mul_ps(vc, _mm512_loadu_ps(acc + d0));
    __m512 a1 = _mm512_mul_ps(vc, _mm512_loadu_ps(acc + d0 + 16));
    __m512 a2 = _mm512_mul_ps(vc, _mm512_loadu_ps(acc + d0 + 32));
    __m512 a3 = _mm512_mul_ps(vc, _mm512_loadu_ps(acc + d0 + 48));
    // Odd keys go to a second set of accumulators: one chain per register would wait on the
    // FMA latency every key and run at half the FMA throughput.
    __m512 b0 = _mm512_setzero_ps(), b1 = b0, b2 = b0, b3 = b0;
    const float* vj = v + d0;       // even key
    const float* vk = v + hd + d0;  // odd key
    int64_t j = 0;
    // The first 64-dim pass prefetches the next block's two rows as it reads these two.
    const float* pfj = d0 == 0 ? pf : nullptr;
    for (; j + 2 <= n; j += 2, vj += 2 * hd, vk += 2 * hd) {
      if (pfj) prefetch_l2(pfj + j * hd, 2 * hd);
      const __m512 pj = _mm512_set1_ps(p[j]), pk = _mm512_set1_ps(p[j + 1]);
      a0 = _mm512_fmadd_ps(pj, _mm512_loadu_ps(vj), a0);
      a1 = _mm512_fmadd_ps(pj, _mm512_loadu_ps(vj + 16), a1);
      a2 = _mm512_fmadd_ps(pj, _mm512_loadu_ps(vj + 32), a2);
      a3 = _mm512_fmadd_ps(pj, _mm512_loadu_ps(vj + 48), a3);
      b0 = _mm512_fmadd_ps(pk, _mm512_loadu_ps(vk), b0);
      b1 = _mm512_fmadd_ps(pk, _mm512_loadu_ps(vk + 16), b1);
      b2 = _mm512_fmadd_ps(pk, _mm512_loadu_ps(vk + 32), b2);
      b3 = _mm512_fmadd_ps(pk, _mm512_loadu_ps(vk + 48), b3);
    }
    if (j < n) {
      if (pfj) prefetch_l2(pfj + j * hd, hd);
      const __m512 pj = _mm512_set1_ps(p[j]);
      a0 = _mm512_fmadd_ps(pj, _mm512_loadu_ps(vj), a0);
      a1 = _mm512_fmadd_ps(pj, _mm512_loadu_ps(vj + 16), a1);
      a2 = _mm512_fmadd_ps(pj, _mm512_loadu_ps(vj + 32), a2);
      a3 = _mm512_fmadd_ps(pj, _mm512_loadu_ps(vj + 48), a3);
    }
    _mm512_storeu_ps(acc + d0, _mm512_add_ps(a0, b0));
    _mm512_storeu_ps(acc + d0 + 16, _mm512_add_ps(a1, b1));
    _mm512_storeu_ps(acc + d0 + 32, _mm512_add_ps(a2, b2));
    _mm512_storeu_ps(acc + d0 + 48, _mm512_add_ps(a3, b3));
  }
  for (; d0 < hd; d0 += 16) {
    __m512 a0 = _mm512_mul_ps(vc, _mm512_loadu_ps(acc + d0));
    for (int64_t j = 0; j < n; ++j)
      a0 = _mm512_fmadd_ps(_mm512_set1_ps(p[j]), _mm512_loadu_ps(v + j * hd + d0), a0);
    _mm512_storeu_ps(acc + d0, a0);
  }
}

/// scores() for two query vectors over the same keys, sharing the key loads. Each output is
/// bit-equal to what scores() gives for that vector alone (same FMA and reduction order).
inline void scores2(const float* q0, const float* q1, const float* k, int64_t n, int64_t hd,
                    float scale, float* s0, float* s1, const float* pf = nullptr) {
  if (hd % 16 != 0) {
    scores(q0, k, n, hd, scale, s0, pf);
    scores(q1, k, n, hd, scale, s1);
    return;
  }
  if (pf) prefetch_l2(pf + (n / 16) * 16 * hd, (n % 16) * hd);
  const __m512 vs = _mm512_set1_ps(scale);
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    __m512 u0[4], u1[4];
    for (int quad = 0; quad < 4; ++quad) {
      const float* kq = k + (j + 4 * quad) * hd;
      if (pf) prefetch_l2(pf + (j + 4 * quad) * hd, 4 * hd);
      __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
      __m512 b0 = a0, b1 = a0, b2 = a0, b3 = a0;
      for (int64_t d = 0; d < hd; d += 16) {
        const __m512 x0 = _mm512_loadu_ps(q0 + d), x1 = _mm512_loadu_ps(q1 + d);
        const __m512 k0 = _mm512_loadu_ps(kq + d), k1 = _mm512_loadu_ps(kq + hd + d);
        const __m512 k2 = _mm512_loadu_ps(kq + 2 * hd + d), k3 = _mm512_loadu_ps(kq + 3 * hd + d);
        a0 = _mm512_fmadd_ps(x0, k0, a0);
        a1 = _mm512_fmadd_ps(x0, k1, a1);
        a2 = _mm512_fmadd_ps(x0, k2, a2);
        a3 = _mm512_fmadd_ps(x0, k3, a3);
        b0 = _mm512_fmadd_ps(x1, k0, b0);
        b1 = _mm512_fmadd_ps(x1, k1, b1);
        b2 = _mm512_fmadd_ps(x1, k2, b2);
        b3 = _mm512_fmadd_ps(x1, k3, b3);
      }
      u0[quad] = lane_sums4(a0, a1, a2, a3);
      u1[quad] = lane_sums4(b0, b1, b2, b3);
    }
    _mm512_storeu_ps(s0 + j, _mm512_mul_ps(finish_sums16(u0[0], u0[1], u0[2], u0[3]), vs));
    _mm512_storeu_ps(s1 + j, _mm512_mul_ps(finish_sums16(u1[0], u1[1], u1[2], u1[3]), vs));
  }
  for (; j < n; ++j) {
    s0[j] = dot(q0, k + j * hd, hd) * scale;
    s1[j] = dot(q1, k + j * hd, hd) * scale;
  }
}

/// rescale_accumulate() for two query vectors (probabilities p0, p1; accumulators acc0, acc1)
/// over the same values, sharing the value loads; bit-equal to two single calls.
inline void rescale_accumulate2(const float* p0, const float* p1, const float* v, int64_t n,
                                int64_t hd, float corr0, float corr1, float* acc0, float* acc1,
                                const float* pf = nullptr) {
  if (hd % 64 != 0) {
    rescale_accumulate(p0, v, n, hd, corr0, acc0, pf);
    rescale_accumulate(p1, v, n, hd, corr1, acc1);
    return;
  }
  const __m512 c0 = _mm512_set1_ps(corr0), c1 = _mm512_set1_ps(corr1);
  for (int64_t d0 = 0; d0 < hd; d0 += 64) {
    // Per vector: even keys in a*, odd keys in b*, as in rescale_accumulate.
    __m512 a0[4], b0[4], a1[4], b1[4];
    for (int t = 0; t < 4; ++t) {
      a0[t] = _mm512_mul_ps(c0, _mm512_loadu_ps(acc0 + d0 + 16 * t));
      a1[t] = _mm512_mul_ps(c1, _mm512_loadu_ps(acc1 + d0 + 16 * t));
      b0[t] = _mm512_setzero_ps();
      b1[t] = _mm512_setzero_ps();
    }
    const float* vj = v + d0;
    const float* pfj = d0 == 0 ? pf : nullptr;
    int64_t j = 0;
    for (; j + 2 <= n; j += 2, vj += 2 * hd) {
      if (pfj) prefetch_l2(pfj + j * hd, 2 * hd);
      const __m512 e0 = _mm512_set1_ps(p0[j]), e1 = _mm512_set1_ps(p1[j]);
      const __m512 o0 = _mm512_set1_ps(p0[j + 1]), o1 = _mm512_set1_ps(p1[j + 1]);
      for (int t = 0; t < 4; ++t) {
        const __m512 ve = _mm512_loadu_ps(vj + 16 * t), vo = _mm512_loadu_ps(vj + hd + 16 * t);
        a0[t] = _mm512_fmadd_ps(e0, ve, a0[t]);
        a1[t] = _mm512_fmadd_ps(e1, ve, a1[t]);
        b0[t] = _mm512_fmadd_ps(o0, vo, b0[t]);
        b1[t] = _mm512_fmadd_ps(o1, vo, b1[t]);
      }
    }
    if (j < n) {
      if (pfj) prefetch_l2(pfj + j * hd, hd);
      const __m512 e0 = _mm512_set1_ps(p0[j]), e1 = _mm512_set1_ps(p1[j]);
      for (int t = 0; t < 4; ++t) {
        const __m512 ve = _mm512_loadu_ps(vj + 16 * t);
        a0[t] = _mm512_fmadd_ps(e0, ve, a0[t]);
        a1[t] = _mm512_fmadd_ps(e1, ve, a1[t]);
      }
    }
    for (int t = 0; t < 4; ++t) {
      _mm512_storeu_ps(acc0 + d0 + 16 * t, _mm512_add_ps(a0[t], b0[t]));
      _mm512_storeu_ps(acc1 + d0 + 16 * t, _mm512_add_ps(a1[t], b1[t]));
    }
  }
}

#else  // scalar fallback

// Sixteen independent lane sums: the compiler vectorizes this (AVX2, SSE) without reassociating.
inline float dot(const float* a, const float* b, int64_t n) {
  float lanes[16] = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int l = 0; l < 16; ++l) lanes[l] += a[i + l] * b[i + l];
  for (; i < n; ++i) lanes[i % 16] += a[i] * b[i];
  float acc = 0.0f;
  for (float v : lanes) acc += v;
  return acc;
}
inline void axpy(float a, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}
inline void scale(float* y, float a, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] *= a;
}
inline float max(const float* x, int64_t n) {
  float m = -INFINITY;
  for (int64_t i = 0; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}
inline float exp_shift_sum(float* x, int64_t n, float m) {
  float acc = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - m);
    acc += x[i];
  }
  return acc;
}

inline void scores(const float* q, const float* k, int64_t n, int64_t hd, float scale, float* s,
                   const float* = nullptr) {
  for (int64_t j = 0; j < n; ++j) s[j] = dot(q, k + j * hd, hd) * scale;
}
inline void rescale_accumulate(const float* p, const float* v, int64_t n, int64_t hd, float corr,
                               float* acc, const float* = nullptr) {
  scale(acc, corr, hd);
  for (int64_t j = 0; j < n; ++j) axpy(p[j], v + j * hd, acc, hd);
}

inline void scores2(const float* q0, const float* q1, const float* k, int64_t n, int64_t hd,
                    float scale, float* s0, float* s1, const float* = nullptr) {
  scores(q0, k, n, hd, scale, s0);
  scores(q1, k, n, hd, scale, s1);
}
inline void rescale_accumulate2(const float* p0, const float* p1, const float* v, int64_t n,
                                int64_t hd, float corr0, float corr1, float* acc0, float* acc1,
                                const float* = nullptr) {
  rescale_accumulate(p0, v, n, hd, corr0, acc0);
  rescale_accumulate(p1, v, n, hd, corr1, acc1);
}

#endif

}  // namespace gsa::cpu::simd
