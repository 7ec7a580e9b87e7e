// Launcher of the small-m GEMM (gemm_small.cuh): checks what the kernel requires, plans the grid
// (CTA shape and split-k) and picks the instantiation (m tiles x output type). The choice between
// this kernel and cuBLAS is CudaBackend::matmul's, not made here.
#include <algorithm>
#include <cstdint>

#include "backend/cuda/cuda_launch.h"
#include "backend/cuda/gemm_small.cuh"

namespace gsa::cuda {
namespace {

using bf16 = __nv_bfloat16;

constexpr int64_t kMaxDim = int64_t(1) << 30;
constexpr int64_t kMaxSplits = 1024;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

template <int MT>
void launch(const GemmSmallArgs& a, const GemmSmallPlan& p, cudaStream_t stream) {
  const dim3 grid(unsigned(p.row_ctas), unsigned(p.splits));
  const auto* x = static_cast<const bf16*>(a.x);
  const auto* w = static_cast<const bf16*>(a.w);
  const int m = int(a.m), n = int(a.n), k = int(a.k), cps = int(p.chunks_per_split);
  if (a.y_type == DType::BF16)
    gemm_small_kernel<MT, bf16><<<grid, kGemmSmallWarps * 32, 0, stream>>>(
        x, w, a.bias, static_cast<bf16*>(a.y), a.ws, a.counters, m, n, k, p.warps_r, cps);
  else
    gemm_small_kernel<MT, float><<<grid, kGemmSmallWarps * 32, 0, stream>>>(
        x, w, a.bias, static_cast<float*>(a.y), a.ws, a.counters, m, n, k, p.warps_r, cps);
}

}  // namespace

bool gemm_small_supported(const void* x, const void* w, int64_t m, int64_t n, int64_t k) {
  const auto aligned = [](const void* p) { return p && reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  return m >= 1 && m <= kGemmSmallMaxM && n >= 1 && n < kMaxDim && k >= 8 && k < kMaxDim &&
         k % 8 == 0 && aligned(x) && aligned(w);
}

// Two costs pull apart: enough warps streaming W (32-64 KB of loads in flight per SM) and
// little traffic besides W. Cutting k over the warps of a CTA (warps_k) or over CTAs
// (splits) adds parallelism when n is small; every CTA re-reads x for its k range from L2
// (row_ctas x m x k x 2 bytes in all) and every split beyond one writes and re-reads m x n
// floats. The plan reaches the wanted parallelism at the lowest of those two costs.
GemmSmallPlan gemm_small_plan(const GemmSmallArgs& a) {
  const int64_t warp_rows = ceil_div(a.n, 32);
  const int64_t chunks = ceil_div(a.k, kGemmSmallChunk);
  // 8 warps per SM with 8 KB of W in flight each; 12 with 4 KB (MT > 2: three CTAs fit an SM).
  const int unroll = gemm_small_unroll(int((a.m + 7) / 8));
  const int64_t target_warps = int64_t(std::max(a.sm_count, 1)) * (unroll == 4 ? 8 : 12);
  // Each warp keeps at least 8 chunks (two unrolled groups) of k.
  const int64_t want_k = std::clamp<int64_t>(ceil_div(target_warps, warp_rows), 1,
                                             std::max<int64_t>(1, chunks / 8));
  const int force_wk =
      a.force_warps_k == 1 || a.force_warps_k == 2 || a.force_warps_k == 4 ? a.force_warps_k : 0;
  GemmSmallPlan best;
  int64_t best_cost = -1;
  for (int wk : {1, 2, 4}) {
    if (force_wk != 0 && wk != force_wk) continue;
    const int wr = kGemmSmallWarps / wk;
    if (force_wk == 0 && wr > 1 && wr > warp_rows) continue;  // keep every warp on real rows
    GemmSmallPlan p;
    p.warps_r = wr;
    p.warps_k = wk;
    p.row_ctas = ceil_div(warp_rows, wr);
    int64_t s = a.force_splits > 0 ? a.force_splits : ceil_div(want_k, wk);
    s = std::clamp<int64_t>(s, 1, std::min(chunks, kMaxSplits));
    if (s > 1 && (!a.counters || p.row_ctas > a.n_counters)) s = 1;
    if (s > 1 && (!a.ws || s * a.m * a.n > a.ws_floats)) s = std::max<int64_t>(1, a.ws ? a.ws_floats / (a.m * a.n) : 1);
    p.chunks_per_split = ceil_div(chunks, s);
    p.splits = int(ceil_div(chunks, p.chunks_per_split));  // no empty split
    const int64_t cost = p.row_ctas * a.k * 2 + (p.splits > 1 ? int64_t(p.splits) * a.n * 8 : 0);
    if (best_cost < 0 || cost < best_cost) best = p, best_cost = cost;
  }
  return best;
}

cudaError_t gemm_small(const GemmSmallArgs& a, cudaStream_t stream) {
  if (!gemm_small_supported(a.x, a.w, a.m, a.n, a.k) || !a.y ||
      (a.y_type != DType::BF16 && a.y_type != DType::F32))
    return cudaErrorInvalidValue;
  const GemmSmallPlan p = gemm_small_plan(a);
  if (p.row_ctas < 1 || p.row_ctas > INT32_MAX) return cudaErrorInvalidValue;
  switch ((a.m + 7) / 8) {
    case 1: launch<1>(a, p, stream); break;
    case 2: launch<2>(a, p, stream); break;
    case 3: launch<3>(a, p, stream); break;
    default: launch<4>(a, p, stream); break;
  }
  return cudaGetLastError();
}

}  // namespace gsa::cuda
