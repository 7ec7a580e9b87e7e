// CPU matmul y = x . w^T (+ bias): f32 activations, f32 or bf16 weights. Few rows (decode) run a
// hand-written GEMV over the pool that reads each weight row once for all rows of x; more rows
// call OpenBLAS sgemm on per-thread slices of w (bf16 panels are widened to f32 first).
// OpenBLAS runs single-threaded inside our pool, so the process never has two busy pools.
#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstring>
#include <vector>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/cpu_simd.h"

namespace gsa::cpu {
namespace {

using backend::MatmulParams;

// Rows of x up to which the GEMV path beats sgemm (bench_cpu_ops: gemv wins at m = 1 and stays
// ahead up to a handful of rows because the weight stream dominates).
constexpr int64_t kGemvMaxRows = 4;
// Weight rows per GEMV task and per bf16 panel handed to sgemm.
constexpr int64_t kGemvRowsPerTask = 64;
constexpr int64_t kBf16PanelRows = 64;

// OpenBLAS uses its own threads unless told otherwise; we split work over our pool instead and
// keep OpenBLAS at one thread (set once per process).
void blas_single_threaded() {
  static std::atomic<bool> done{false};
  if (!done.exchange(true)) openblas_set_num_threads(1);
}

inline float load_w(const float* w, int64_t i) { return w[i]; }
inline float load_w(const uint16_t* w, int64_t i) { return bf16_to_f32(w[i]); }

#if GSA_CPU_AVX512
inline __m512 load16(const float* w) { return _mm512_loadu_ps(w); }
inline __m512 load16(const uint16_t* w) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
inline __m512 load16_tail(const float* w, __mmask16 m) { return _mm512_maskz_loadu_ps(m, w); }
inline __m512 load16_tail(const uint16_t* w, __mmask16 m) {
  const __m256i h = _mm256_maskz_loadu_epi16(m, w);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// y[i, j0 + r] = x[i, :] . w[j0 + r, :] for 4 consecutive weight rows r = 0..3.
template <typename W>
void dot4(const float* x, const W* w, int64_t k, float* out) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  int64_t d = 0;
  for (; d + 16 <= k; d += 16) {
    const __m512 xv = _mm512_loadu_ps(x + d);
    a0 = _mm512_fmadd_ps(load16(w + d), xv, a0);
    a1 = _mm512_fmadd_ps(load16(w + k + d), xv, a1);
    a2 = _mm512_fmadd_ps(load16(w + 2 * k + d), xv, a2);
    a3 = _mm512_fmadd_ps(load16(w + 3 * k + d), xv, a3);
  }
  if (d < k) {
    const __mmask16 m = simd::tail_mask(k - d);
    const __m512 xv = _mm512_maskz_loadu_ps(m, x + d);
    a0 = _mm512_fmadd_ps(load16_tail(w + d, m), xv, a0);
    a1 = _mm512_fmadd_ps(load16_tail(w + k + d, m), xv, a1);
    a2 = _mm512_fmadd_ps(load16_tail(w + 2 * k + d, m), xv, a2);
    a3 = _mm512_fmadd_ps(load16_tail(w + 3 * k + d, m), xv, a3);
  }
  out[0] = _mm512_reduce_add_ps(a0);
  out[1] = _mm512_reduce_add_ps(a1);
  out[2] = _mm512_reduce_add_ps(a2);
  out[3] = _mm512_reduce_add_ps(a3);
}

template <typename W>
float dot1(const float* x, const W* w, int64_t k) {
  __m512 a = _mm512_setzero_ps();
  int64_t d = 0;
  for (; d + 16 <= k; d += 16) a = _mm512_fmadd_ps(load16(w + d), _mm512_loadu_ps(x + d), a);
  if (d < k) {
    const __mmask16 m = simd::tail_mask(k - d);
    a = _mm512_fmadd_ps(load16_tail(w + d, m), _mm512_maskz_loadu_ps(m, x + d), a);
  }
  return _mm512_reduce_add_ps(a);
}
#else
template <typename W>
float dot1(const float* x, const W* w, int64_t k) {
  float acc = 0.0f;
  for (int64_t d = 0; d < k; ++d) acc += x[d] * load_w(w, d);
  return acc;
}
template <typename W>
void dot4(const float* x, const W* w, int64_t k, float* out) {
  for (int r = 0; r < 4; ++r) out[r] = dot1(x, w + r * k, k);
}
#endif

// Weight rows [j0, j1) against every row of x; each weight row is read from memory once.
template <typename W>
void gemv_rows(const MatmulParams& p, const W* w, int64_t j0, int64_t j1) {
  const float* x = static_cast<const float*>(p.x);
  float* y = static_cast<float*>(p.y);
  const int64_t k = p.k, n = p.n;
  int64_t j = j0;
  for (; j + 4 <= j1; j += 4) {
    for (int64_t i = 0; i < p.m; ++i) {
      float r[4];
      dot4(x + i * k, w + j * k, k, r);
      for (int t = 0; t < 4; ++t) y[i * n + j + t] = r[t] + (p.bias ? p.bias[j + t] : 0.0f);
    }
  }
  for (; j < j1; ++j)
    for (int64_t i = 0; i < p.m; ++i)
      y[i * n + j] = dot1(x + i * k, w + j * k, k) + (p.bias ? p.bias[j] : 0.0f);
}

template <typename W>
void gemv(const MatmulParams& p, ThreadPool* pool) {
  const W* w = static_cast<const W*>(p.w);
  const int64_t n_tasks = (p.n + kGemvRowsPerTask - 1) / kGemvRowsPerTask;
  // Below ~64K multiply-adds the pool's wake-up costs more than it saves.
  const int64_t min_tasks = std::max<int64_t>(1, 65536 / std::max<int64_t>(1, p.k * p.m * kGemvRowsPerTask));
  pool->parallel_for(n_tasks, [&](int64_t b, int64_t e, int) {
    gemv_rows(p, w, b * kGemvRowsPerTask, std::min(p.n, e * kGemvRowsPerTask));
  }, min_tasks);
}

void add_bias(const MatmulParams& p, int64_t j0, int64_t j1) {
  if (!p.bias) return;
  float* y = static_cast<float*>(p.y);
  for (int64_t i = 0; i < p.m; ++i)
    for (int64_t j = j0; j < j1; ++j) y[i * p.n + j] += p.bias[j];
}

// Contiguous slices of the n weight rows, one per thread, multiples of 16 rows.
std::vector<int64_t> slice_bounds(int64_t n, int n_threads, int64_t work_per_row) {
  int64_t slices = std::max(1, n_threads);
  // Tiny products are not worth waking the pool for.
  if (n * work_per_row < (int64_t(1) << 18)) slices = 1;
  const int64_t per = ((n + slices - 1) / slices + 15) / 16 * 16;
  std::vector<int64_t> bounds{0};
  while (bounds.back() < n) bounds.push_back(std::min(n, bounds.back() + per));
  return bounds;
}

void gemm_f32(const MatmulParams& p, ThreadPool* pool) {
  const float* x = static_cast<const float*>(p.x);
  const float* w = static_cast<const float*>(p.w);
  float* y = static_cast<float*>(p.y);
  const std::vector<int64_t> bounds = slice_bounds(p.n, pool->n_threads(), p.m * p.k);
  pool->parallel_for(int64_t(bounds.size()) - 1, [&](int64_t b, int64_t e, int) {
    for (int64_t s = b; s < e; ++s) {
      const int64_t j0 = bounds[s], j1 = bounds[s + 1];
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(p.m), int(j1 - j0), int(p.k), 1.0f,
                  x, int(p.k), w + j0 * p.k, int(p.k), 0.0f, y + j0, int(p.n));
      add_bias(p, j0, j1);
    }
  });
}

void gemm_bf16(const MatmulParams& p, ThreadPool* pool) {
  const float* x = static_cast<const float*>(p.x);
  const uint16_t* w = static_cast<const uint16_t*>(p.w);
  float* y = static_cast<float*>(p.y);
  const int64_t n_panels = (p.n + kBf16PanelRows - 1) / kBf16PanelRows;
  pool->parallel_for(n_panels, [&](int64_t b, int64_t e, int) {
    thread_local std::vector<float> panel;
    panel.resize(size_t(kBf16PanelRows * p.k));
    for (int64_t s = b; s < e; ++s) {
      const int64_t j0 = s * kBf16PanelRows, j1 = std::min(p.n, j0 + kBf16PanelRows);
      const uint16_t* src = w + j0 * p.k;
      for (int64_t i = 0; i < (j1 - j0) * p.k; ++i) panel[size_t(i)] = bf16_to_f32(src[i]);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(p.m), int(j1 - j0), int(p.k), 1.0f,
                  x, int(p.k), panel.data(), int(p.k), 0.0f, y + j0, int(p.n));
      add_bias(p, j0, j1);
    }
  });
}

Status validate(const MatmulParams& p) {
  if (p.act_type != DType::F32) return unsupported("cpu matmul: activations must be f32");
  if (p.w_type != DType::F32 && p.w_type != DType::BF16)
    return unsupported("cpu matmul: weights must be f32 or bf16");
  if (p.m < 0 || p.n < 0 || p.k < 0)
    return invalid_argument("matmul: negative shape m={} n={} k={}", p.m, p.n, p.k);
  if (p.m > INT_MAX || p.n > INT_MAX || p.k > INT_MAX)
    return invalid_argument("matmul: shape m={} n={} k={} exceeds the BLAS int range", p.m, p.n, p.k);
  if (p.m > 0 && p.n > 0 && !p.y) return invalid_argument("matmul: null y");
  if (p.m > 0 && p.n > 0 && p.k > 0 && (!p.x || !p.w)) return invalid_argument("matmul: null x or w");
  return Status::ok();
}

}  // namespace

Status matmul(const MatmulParams& p, ThreadPool* pool) {
  GSA_RETURN_IF_ERROR(validate(p));
  if (p.m == 0 || p.n == 0) return Status::ok();
  float* y = static_cast<float*>(p.y);
  if (p.k == 0) {
    for (int64_t i = 0; i < p.m; ++i)
      for (int64_t j = 0; j < p.n; ++j) y[i * p.n + j] = p.bias ? p.bias[j] : 0.0f;
    return Status::ok();
  }
  const bool bf16 = p.w_type == DType::BF16;
  if (p.m <= kGemvMaxRows) {
    if (bf16) gemv<uint16_t>(p, pool);
    else gemv<float>(p, pool);
    return Status::ok();
  }
  blas_single_threaded();
  if (bf16) gemm_bf16(p, pool);
  else gemm_f32(p, pool);
  return Status::ok();
}

}  // namespace gsa::cpu
