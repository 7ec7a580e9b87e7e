// CPU matmul y = x . w^T (+ bias), f32 activations. f32/bf16 weights: up to 64 rows of x run our
// 4x4-tiled kernel over the pool (each weight row read once); more call OpenBLAS sgemm (single-
// threaded, on per-thread slices of w) unless OpenBLAS fell back to pre-AVX-512 kernels, where the
// tiled kernel is faster. GGUF block-quantized weights (DType::Ggml) go to matmul_quant.cpp.
#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <climits>
#include <cstring>
#include <string>
#include <vector>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/cpu_simd.h"
#include "core/quant_blocks.h"

namespace gsa::cpu {
namespace {

using backend::MatmulParams;

// Rows of x up to which the tiled kernel is used even when OpenBLAS has AVX-512 kernels
// (bench_cpu_ops on a Sapphire Rapids VM, one thread: m=1 4x faster than sgemv, m=32 1.5x faster
// than sgemm; at m=512 sgemm(SkylakeX kernels) is ~1.2x faster).
constexpr int64_t kTiledMaxRows = 64;
// Weight rows per tiled-kernel task and per bf16 panel handed to sgemm.
constexpr int64_t kTiledRowsPerTask = 64;
constexpr int64_t kBf16PanelRows = 64;

// True when OpenBLAS runs AVX-512 kernels. Debian's DYNAMIC_ARCH build names unknown CPUs
// (e.g. VMs reporting a generic "Xeon Processor") "Prescott" and runs SSE3 kernels ~3x slower
// than ours; OPENBLAS_CORETYPE=SkylakeX fixes that. Decided once, so results stay deterministic.
bool blas_has_avx512_kernels() {
  static const bool fast = [] {
#if GSA_CPU_AVX512
    const char* name = openblas_get_corename();
    if (!name) return false;
    std::string lower(name);
    for (auto& c : lower) c = char(std::tolower(static_cast<unsigned char>(c)));
    for (const char* good : {"skylakex", "cooperlake", "sapphirerapids"})
      if (lower.find(good) != std::string::npos) return true;
    return false;
#else
    return true;
#endif
  }();
  return fast;
}

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
// Sixteen independent lane sums, which the compiler vectorizes without reassociating.
template <typename W>
float dot1(const float* x, const W* w, int64_t k) {
  float lanes[16] = {};
  int64_t d = 0;
  for (; d + 16 <= k; d += 16)
    for (int l = 0; l < 16; ++l) lanes[l] += x[d + l] * load_w(w, d + l);
  for (; d < k; ++d) lanes[d % 16] += x[d] * load_w(w, d);
  float acc = 0.0f;
  for (float v : lanes) acc += v;
  return acc;
}
template <typename W>
void dot4(const float* x, const W* w, int64_t k, float* out) {
  for (int r = 0; r < 4; ++r) out[r] = dot1(x, w + r * k, k);
}
#endif

#if GSA_CPU_AVX512
// Tile of 4 rows of x against 4 weight rows: 16 accumulators (8 loads per 16 FMAs), reduced
// together by one transpose. out[4 * i + r] = x[i, :] . w[r, :].
template <typename W>
void tile4x4(const float* x, const W* w, int64_t k, float* out) {
  __m512 a[4][4];
  for (auto& row : a)
    for (auto& v : row) v = _mm512_setzero_ps();
  int64_t d = 0;
  for (; d + 16 <= k; d += 16) {
    const __m512 w0 = load16(w + d), w1 = load16(w + k + d);
    const __m512 w2 = load16(w + 2 * k + d), w3 = load16(w + 3 * k + d);
    for (int i = 0; i < 4; ++i) {
      const __m512 xv = _mm512_loadu_ps(x + i * k + d);
      a[i][0] = _mm512_fmadd_ps(xv, w0, a[i][0]);
      a[i][1] = _mm512_fmadd_ps(xv, w1, a[i][1]);
      a[i][2] = _mm512_fmadd_ps(xv, w2, a[i][2]);
      a[i][3] = _mm512_fmadd_ps(xv, w3, a[i][3]);
    }
  }
  if (d < k) {
    const __mmask16 m = simd::tail_mask(k - d);
    const __m512 w0 = load16_tail(w + d, m), w1 = load16_tail(w + k + d, m);
    const __m512 w2 = load16_tail(w + 2 * k + d, m), w3 = load16_tail(w + 3 * k + d, m);
    for (int i = 0; i < 4; ++i) {
      const __m512 xv = _mm512_maskz_loadu_ps(m, x + i * k + d);
      a[i][0] = _mm512_fmadd_ps(xv, w0, a[i][0]);
      a[i][1] = _mm512_fmadd_ps(xv, w1, a[i][1]);
      a[i][2] = _mm512_fmadd_ps(xv, w2, a[i][2]);
      a[i][3] = _mm512_fmadd_ps(xv, w3, a[i][3]);
    }
  }
  __m512 u[4];
  for (int i = 0; i < 4; ++i) u[i] = simd::lane_sums4(a[i][0], a[i][1], a[i][2], a[i][3]);
  _mm512_storeu_ps(out, simd::finish_sums16(u[0], u[1], u[2], u[3]));
}
#else
template <typename W>
void tile4x4(const float* x, const W* w, int64_t k, float* out) {
  for (int i = 0; i < 4; ++i) dot4(x + i * k, w, k, out + 4 * i);
}
#endif

// Weight rows [j0, j1) against rows [i0, i1) of x; each 4-row weight group is loaded once and
// reused from L1 by every 4-row tile of x.
template <typename W>
void tiled_rows(const MatmulParams& p, const W* w, int64_t j0, int64_t j1, int64_t i0, int64_t i1) {
  const float* x = static_cast<const float*>(p.x);
  float* y = static_cast<float*>(p.y);
  const int64_t k = p.k, n = p.n;
  auto bias = [&](int64_t j) { return p.bias ? p.bias[j] : 0.0f; };
  {
    int64_t j = j0;
    for (; j + 4 <= j1; j += 4) {
      int64_t i = i0;
      for (; i + 4 <= i1; i += 4) {
        float r[16];
        tile4x4(x + i * k, w + j * k, k, r);
        for (int a = 0; a < 4; ++a)
          for (int t = 0; t < 4; ++t) y[(i + a) * n + j + t] = r[4 * a + t] + bias(j + t);
      }
      for (; i < i1; ++i) {
        float r[4];
        dot4(x + i * k, w + j * k, k, r);
        for (int t = 0; t < 4; ++t) y[i * n + j + t] = r[t] + bias(j + t);
      }
    }
    for (; j < j1; ++j)
      for (int64_t i = i0; i < i1; ++i) y[i * n + j] = dot1(x + i * k, w + j * k, k) + bias(j);
  }
}

// Tasks are (64 weight rows) x (a pass of x rows small enough, ~256 KiB, to stay in L2).
template <typename W>
void tiled(const MatmulParams& p, ThreadPool* pool) {
  const W* w = static_cast<const W*>(p.w);
  const int64_t rows_per_pass = std::max<int64_t>(4, (65536 / p.k) / 4 * 4);
  const int64_t n_passes = (p.m + rows_per_pass - 1) / rows_per_pass;
  const int64_t n_jtasks = (p.n + kTiledRowsPerTask - 1) / kTiledRowsPerTask;
  // Below ~64K multiply-adds per chunk the pool's wake-up costs more than it saves.
  const int64_t task_work = std::min(p.m, rows_per_pass) * p.k * kTiledRowsPerTask;
  const int64_t min_tasks = std::max<int64_t>(1, 65536 / task_work);
  pool->parallel_for(n_jtasks * n_passes, [&](int64_t b, int64_t e, int) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t jt = t / n_passes, pass = t % n_passes;
      tiled_rows(p, w, jt * kTiledRowsPerTask, std::min(p.n, (jt + 1) * kTiledRowsPerTask),
                 pass * rows_per_pass, std::min(p.m, (pass + 1) * rows_per_pass));
    }
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

// GGUF block-quantized weights at many rows of x (prefill): each thread dequantizes its slice of
// w to f32 in panels of ~1 MiB and multiplies them with sgemm. At m = 512 this is 2-3x faster
// than the integer block dots of matmul_quant.cpp (which stay the path for decode and small
// batches), and it is the plain f32 product with the dequantized weights (no 8-bit activations).
void gemm_ggml_panels(const MatmulParams& p, ThreadPool* pool) {
  const GgmlTypeTraits& t = *ggml_type_traits(p.w_ggml);
  const float* x = static_cast<const float*>(p.x);
  const uint8_t* w = static_cast<const uint8_t*>(p.w);
  float* y = static_cast<float*>(p.y);
  const int64_t nb = p.k / t.block_elems, row_bytes = nb * t.block_bytes;
  // Panels big enough that sgemm's packing of x is amortized over many weight rows.
  const int64_t panel_rows = std::max<int64_t>(64, (int64_t(1) << 18) / p.k / 16 * 16);
  const std::vector<int64_t> bounds = slice_bounds(p.n, pool->n_threads(), p.m * p.k);
  pool->parallel_for(int64_t(bounds.size()) - 1, [&](int64_t b, int64_t e, int) {
    thread_local std::vector<float> panel;
    panel.resize(size_t(panel_rows * p.k));
    for (int64_t s = b; s < e; ++s) {
      for (int64_t j0 = bounds[s]; j0 < bounds[s + 1]; j0 += panel_rows) {
        const int64_t j1 = std::min(bounds[s + 1], j0 + panel_rows);
        ggml_dequantize_blocks(p.w_ggml, w + j0 * row_bytes, panel.data(), (j1 - j0) * nb);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(p.m), int(j1 - j0), int(p.k),
                    1.0f, x, int(p.k), panel.data(), int(p.k), 0.0f, y + j0, int(p.n));
        add_bias(p, j0, j1);
      }
    }
  });
}

// As gemm_ggml_panels where OpenBLAS lacks AVX-512 kernels: 64-row panels dequantized to f32 and
// run through the tiled kernel, x swept in L2-sized passes (the same tiling as tiled<float>).
void tiled_ggml_panels(const MatmulParams& p, ThreadPool* pool) {
  const GgmlTypeTraits& t = *ggml_type_traits(p.w_ggml);
  const uint8_t* w = static_cast<const uint8_t*>(p.w);
  const int64_t nb = p.k / t.block_elems, row_bytes = nb * t.block_bytes;
  const int64_t rows_per_pass = std::max<int64_t>(4, (65536 / p.k) / 4 * 4);
  const int64_t n_jtasks = (p.n + kTiledRowsPerTask - 1) / kTiledRowsPerTask;
  pool->parallel_for(n_jtasks, [&](int64_t b, int64_t e, int) {
    thread_local std::vector<float> panel;
    panel.resize(size_t(kTiledRowsPerTask * p.k));
    for (int64_t jt = b; jt < e; ++jt) {
      const int64_t j0 = jt * kTiledRowsPerTask, j1 = std::min(p.n, j0 + kTiledRowsPerTask);
      ggml_dequantize_blocks(p.w_ggml, w + j0 * row_bytes, panel.data(), (j1 - j0) * nb);
      // The panel's rows are columns [j0, j1) of y: shift y and bias, keep y's row stride n.
      MatmulParams q = p;
      q.y = static_cast<float*>(p.y) + j0;
      q.bias = p.bias ? p.bias + j0 : nullptr;
      for (int64_t i0 = 0; i0 < p.m; i0 += rows_per_pass)
        tiled_rows(q, panel.data(), 0, j1 - j0, i0, std::min(p.m, i0 + rows_per_pass));
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
  if (p.w_type == DType::Ggml) {
    GSA_RETURN_IF_ERROR(matmul_ggml_validate(p));
    if (p.m <= kTiledMaxRows || p.n == 0 || p.k == 0) return matmul_ggml(p, pool);
    if (!blas_has_avx512_kernels() || p.m > INT_MAX || p.n > INT_MAX || p.k > INT_MAX) {
      tiled_ggml_panels(p, pool);
    } else {
      blas_single_threaded();
      gemm_ggml_panels(p, pool);
    }
    return Status::ok();
  }
  GSA_RETURN_IF_ERROR(validate(p));
  if (p.m == 0 || p.n == 0) return Status::ok();
  float* y = static_cast<float*>(p.y);
  if (p.k == 0) {
    for (int64_t i = 0; i < p.m; ++i)
      for (int64_t j = 0; j < p.n; ++j) y[i * p.n + j] = p.bias ? p.bias[j] : 0.0f;
    return Status::ok();
  }
  const bool bf16 = p.w_type == DType::BF16;
  if (p.m <= kTiledMaxRows || !blas_has_avx512_kernels()) {
    if (bf16) tiled<uint16_t>(p, pool);
    else tiled<float>(p, pool);
    return Status::ok();
  }
  blas_single_threaded();
  if (bf16) gemm_bf16(p, pool);
  else gemm_f32(p, pool);
  return Status::ok();
}

}  // namespace gsa::cpu
