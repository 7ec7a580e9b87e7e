// Device code of the small-m GEMM (decode): y[m, n] = x[m, k] . w[n, k]^T (+ bias[n]), bf16 x
// and w, f32 accumulation, for m <= 32. A pure weight-read problem, so each warp streams 32 rows
// of W with 16-byte loads and does the arithmetic on tensor cores with the operands swapped
// (W is the MMA's A operand, x^T its B operand, so m only fills the MMA's n = 8 side).
// Not here: the plan (grid, split-k) and the launch, in gemm_small.cu.
#pragma once

#include <type_traits>

#include "backend/cuda/common.cuh"

namespace gsa::cuda {

constexpr int kGemmSmallWarps = 4;     // warps per CTA (warps_r along n x warps_k along k)
constexpr int kGemmSmallRowTiles = 2;  // 16-row MMA tiles per warp: a warp owns 32 rows of W
/// 32-wide k chunks a warp loads before using them: 4 (8 KB of W in flight per warp), 2 for
/// MT > 2, where the x fragments take the registers (with 4, ptxas interleaves the W loads with
/// the MMAs and fewer bytes are in flight).
constexpr int gemm_small_unroll(int mt) { return mt <= 2 ? 4 : 2; }
constexpr int kGemmSmallChunk = 32;    // k elements per chunk: 4 lanes x 8 bf16 (16 bytes)

/// One warp computes y for 32 rows of W (two 16-row tiles) and all m rows of x (MT tiles of 8)
/// over its share of k. In a chunk of 32 k, lane (g = lane / 4, t = lane % 4) loads 16 bytes at
/// k offset 8t of W rows g and g + 8 of each tile and of x row g of each m tile. Since a dot
/// product may visit k in any order, the MMA's logical k (2t, 2t+1, 2t+8, 2t+9) of the first
/// m16n8k16 is bound to the physical k (8t .. 8t+3) and that of the second to (8t+4 .. 8t+7),
/// identically in A (W) and B (x): one 16-byte load feeds two MMAs with no shuffles.
///
/// CTA: warps_r x warps_k warps; warp w has wr = w % warps_r, wk = w / warps_r. Grid:
/// (ceil(n / (32 warps_r)), splits). CTA (bx, s) covers rows [32 warps_r bx, +32 warps_r) and the
/// chunks [s cps, (s + 1) cps) (cps = chunks_per_split); its warps_k warps take turns on groups
/// of gemm_small_unroll(MT) chunks and are summed through shared memory in wk order. With splits > 1
/// each CTA writes its partial to ws[s] and the last CTA of a row block to arrive sums
/// ws[0 .. splits) in order: deterministic, one launch.
/// Preconditions (checked by the launcher): 1 <= m <= 8 MT, k % 8 == 0, x and w 16-byte aligned,
/// counters[0 .. gridDim.x) zero when splits > 1 (every launch leaves them zero).
/// __launch_bounds__ min blocks 1: with the default, ptxas saves registers by sinking the W
/// loads of a group between its MMAs, leaving one chunk in flight per warp instead of U.
template <int MT, typename Y>
__global__ void __launch_bounds__(kGemmSmallWarps * 32, 1)
    gemm_small_kernel(const __nv_bfloat16* __restrict__ x,  // [m, k]
                      const __nv_bfloat16* __restrict__ w,  // [n, k]
                      const float* __restrict__ bias,       // [n] or null
                      Y* __restrict__ y,                    // [m, n]
                      float* __restrict__ ws,               // [splits, m, n] when splits > 1
                      int* __restrict__ counters,           // [gridDim.x] when splits > 1
                      int m, int n, int k, int warps_r, int chunks_per_split) {
  constexpr int RT = kGemmSmallRowTiles, U = gemm_small_unroll(MT), CH = kGemmSmallChunk;
  __shared__ float red[kGemmSmallWarps][RT * MT * 4][32];  // partials of warps with wk > 0
  __shared__ int is_last;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int warps_k = kGemmSmallWarps / warps_r;
  const int wr = warp % warps_r, wk = warp / warps_r;
  const int splits = int(gridDim.y), s = int(blockIdx.y);
  const int n0 = (int(blockIdx.x) * warps_r + wr) * 32;  // first W row of this warp
  const int n_chunks = (k + CH - 1) / CH;
  const int c_begin = s * chunks_per_split;
  const int c_end = min(c_begin + chunks_per_split, n_chunks);

  float acc[RT][MT][4];
#pragma unroll
  for (int rt = 0; rt < RT; ++rt)
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[rt][mt][i] = 0.0f;

  if (n0 < n) {  // warp-uniform: a warp past the last row only joins the barriers
    // Rows past n read row n - 1 (valid memory; their results are never stored).
    const __nv_bfloat16* wp[RT][2];
#pragma unroll
    for (int rt = 0; rt < RT; ++rt)
#pragma unroll
      for (int h = 0; h < 2; ++h)
        wp[rt][h] = w + int64_t(min(n0 + rt * 16 + h * 8 + g, n - 1)) * k + t * 8;
    const __nv_bfloat16* xp[MT];
    bool x_ok[MT];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      x_ok[mt] = mt * 8 + g < m;
      xp[mt] = x + int64_t(x_ok[mt] ? mt * 8 + g : 0) * k + t * 8;
    }
    // One group of U chunks starting at c0. Guard: chunks past c_end or lanes past k load zeros
    // (only the last group of a split can need it; the others run without predicates so the
    // compiler issues all U x RT x 2 loads before the first MMA).
    auto group = [&](int c0, auto guard) {
      constexpr bool kGuard = decltype(guard)::value;
      const uint4 zero = make_uint4(0u, 0u, 0u, 0u);
      uint4 wv[U][RT][2];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int c = c0 + u;
        const bool ok = !kGuard || (c < c_end && c * CH + t * 8 < k);
#pragma unroll
        for (int rt = 0; rt < RT; ++rt)
#pragma unroll
          for (int h = 0; h < 2; ++h) wv[u][rt][h] = ok ? ldg_stream(wp[rt][h] + int64_t(c) * CH) : zero;
      }
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int c = c0 + u;
        const bool ok = !kGuard || (c < c_end && c * CH + t * 8 < k);
        // x is small and shared by every warp on the same k: read through L1/L2.
        uint4 xv[MT];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
          xv[mt] = ok && x_ok[mt] ? __ldg(reinterpret_cast<const uint4*>(xp[mt] + int64_t(c) * CH)) : zero;
#pragma unroll
        for (int rt = 0; rt < RT; ++rt) {
          // A rows g (h = 0) and g + 8 (h = 1); .x/.y: physical k 8t..8t+3, .z/.w: 8t+4..8t+7.
          const uint32_t a_lo[4] = {wv[u][rt][0].x, wv[u][rt][1].x, wv[u][rt][0].y, wv[u][rt][1].y};
          const uint32_t a_hi[4] = {wv[u][rt][0].z, wv[u][rt][1].z, wv[u][rt][0].w, wv[u][rt][1].w};
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            mma_bf16_16816(acc[rt][mt], a_lo, xv[mt].x, xv[mt].y);
            mma_bf16_16816(acc[rt][mt], a_hi, xv[mt].z, xv[mt].w);
          }
        }
      }
    };
    // Groups whose U chunks all lie inside both the split and k run unguarded.
    const int c_full = min(c_end, k / CH);
    int c0 = c_begin + wk * U;
    for (; c0 + U <= c_full; c0 += warps_k * U) group(c0, std::false_type{});
    for (; c0 < c_end; c0 += warps_k * U) group(c0, std::true_type{});
  }

  // Warps that split k within the CTA: wk > 0 hand their partials to wk == 0, summed in wk order.
  if (warps_k > 1) {
    if (wk > 0) {
#pragma unroll
      for (int rt = 0; rt < RT; ++rt)
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
          for (int i = 0; i < 4; ++i) red[warp][(rt * MT + mt) * 4 + i][lane] = acc[rt][mt][i];
    }
    __syncthreads();
    if (wk == 0) {
      for (int j = 1; j < warps_k; ++j) {
#pragma unroll
        for (int rt = 0; rt < RT; ++rt)
#pragma unroll
          for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int i = 0; i < 4; ++i) acc[rt][mt][i] += red[j * warps_r + wr][(rt * MT + mt) * 4 + i][lane];
      }
    }
  }

  // Accumulator i of tile (rt, mt) is row n0 + 16 rt + g + 8 (i / 2), x row 8 mt + 2t + (i % 2).
  if (wk == 0 && n0 < n) {
#pragma unroll
    for (int rt = 0; rt < RT; ++rt)
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int row = n0 + rt * 16 + g + (i >> 1) * 8;
          const int mi = mt * 8 + 2 * t + (i & 1);
          if (row >= n || mi >= m) continue;
          const float v = acc[rt][mt][i];
          if (splits == 1)
            store_f32(y, int64_t(mi) * n + row, bias ? v + bias[row] : v);
          else
            ws[(int64_t(s) * m + mi) * n + row] = v;
        }
  }
  if (splits == 1) return;

  // Split k across CTAs: the last CTA of this row block to finish sums the partials in s order.
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) is_last = atomicAdd(&counters[blockIdx.x], 1) == splits - 1;
  __syncthreads();
  if (!is_last) return;
  __threadfence();
  const int rows_cta = warps_r * 32;
  const int r0 = int(blockIdx.x) * rows_cta;
  for (int e = threadIdx.x; e < m * rows_cta; e += blockDim.x) {
    const int mi = e / rows_cta, row = r0 + e % rows_cta;
    if (row >= n) continue;
    float v = 0.0f;
    for (int j = 0; j < splits; ++j) v += __ldcg(ws + (int64_t(j) * m + mi) * n + row);
    store_f32(y, int64_t(mi) * n + row, bias ? v + bias[row] : v);
  }
  if (threadIdx.x == 0) counters[blockIdx.x] = 0;
}

}  // namespace gsa::cuda
