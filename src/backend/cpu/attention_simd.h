// SIMD pieces of the paged attention kernel: scores of a query against a block of keys (16 keys
// per transposed reduction), the online-softmax value accumulation, their two-query variants
// that share K/V loads (bit-equal to the single ones), and next-block prefetch. Built on
// cpu_simd.h; AVX-512 when the compiler targets it, scalar otherwise.
#pragma once

#include <algorithm>
#include <cstdint>

#include "backend/cpu/cpu_simd.h"

namespace gsa::cpu::simd {

#if GSA_CPU_AVX512

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
