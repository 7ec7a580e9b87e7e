// Device code of paged attention (ops.h AttentionParams): one kernel for prefill and decode,
// dense and sparse (a sparse list is just a shorter block list). K and V stream from global
// memory straight into tensor-core fragments (no shared-memory staging); split-K partials are
// merged by attention_combine_kernel. Launch shapes and parameter checks live in attention.cu.
#pragma once

#include "backend/cuda/common.cuh"

namespace gsa::cuda {

/// Plain kernel arguments (pointers are device memory). Rows of a tile are (token, query head)
/// pairs of one sequence and one kv head, flattened as item = token_local * group + head_in_group.
struct AttnArgs {
  const void* q;                      // [n_tokens, n_heads, head_dim]  QT
  const __nv_bfloat16* k_cache;       // [n_blocks, n_kv_heads, block_size, head_dim]
  const __nv_bfloat16* v_cache;       // [n_blocks, n_kv_heads, block_size, head_dim]
  void* out;                          // [n_tokens, n_heads, head_dim]  QT
  const int32_t* q_indptr;            // [n_seqs + 1]
  const int32_t* q_pos;               // [n_tokens]
  const int32_t* kv_indptr;           // [n_lists + 1]
  const int32_t* kv_indices;          // [kv_indptr[n_lists]]
  const int32_t* kv_last_len;         // [n_lists]
  float* ws_o;                        // [n_tokens, n_heads, n_splits, head_dim] when n_splits > 1
  float* ws_lse;                      // [n_tokens, n_heads, n_splits] (log2 domain)
  int64_t n_blocks;                   // > 0: block ids outside [0, n_blocks) are skipped
  int n_seqs, n_heads, n_kv_heads, group, block_size;
  int n_splits;                       // key-range splits (grid.y)
  int tiles_per_seq;                  // decode mode: ceil(group / rows per tile); grid.x = n_seqs * this
  bool per_kv_head;
  float scale_log2;                   // softmax scale * log2(e)
};

constexpr int kAttnWarps = 4;
constexpr int kAttnThreads = kAttnWarps * 32;
constexpr int kMinSplitChunks = 8;  // 16-key chunks per split, at least

// Finds which sequence owns flattened tile `tile` (prefill mode) with one warp: tiles of
// sequence i are ceil(rows_i * group / 16). Writes (seq, tile within seq) or seq = -1.
__device__ __forceinline__ void attn_find_tile(const AttnArgs& a, int tile, int* out_seq,
                                               int* out_tile) {
  const int lane = threadIdx.x & 31;
  int base = 0;
  for (int c = 0; c < a.n_seqs; c += 32) {
    const int i = c + lane;
    int nt = 0;
    if (i < a.n_seqs) nt = ((a.q_indptr[i + 1] - a.q_indptr[i]) * a.group + 15) / 16;
    int incl = nt;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int v = __shfl_up_sync(0xffffffffu, incl, o);
      if (lane >= o) incl += v;
    }
    const int excl = incl - nt;
    if (i < a.n_seqs && tile >= base + excl && tile < base + incl) {
      *out_seq = i;
      *out_tile = tile - base - excl;
    }
    base += __shfl_sync(0xffffffffu, incl, 31);
    if (base > tile) break;
  }
}

// Selects the 16-bit half `e & 1` of word e / 2 from x (low result half) and y (high half).
__device__ __forceinline__ uint32_t attn_pair(const uint4& x, const uint4& y, int e) {
  const uint32_t wx = e < 2 ? x.x : e < 4 ? x.y : e < 6 ? x.z : x.w;
  const uint32_t wy = e < 2 ? y.x : e < 4 ? y.y : e < 6 ? y.z : y.w;
  return __byte_perm(wx, wy, (e & 1) ? 0x7632 : 0x5410);
}

/// One CTA: one 16-row tile (or, in decode mode, each tile of its sequence in turn), one kv head,
/// one key split. The 4 warps take 16-key chunks round-robin and merge through shared memory.
/// Dims are permuted consistently between Q and K fragments (q.k sums over them), so each lane
/// loads 16 contiguous bytes per key row; V is loaded per key as 16-byte runs of 8 output dims.
/// kRows: query rows per tile, 16, or 8 in decode mode when a kv head has at most 8 query heads
/// (rows 8..15 of the MMA are then constant zeros and their accumulators one scratch pair,
/// which frees the registers for a third CTA per SM).
/// kMinCtas: CTAs per SM the register budget is cut for (3 spills a few registers at D = 128).
template <int D, typename QT, bool kDecode, int kRows, int kMinCtas>
__global__ void __launch_bounds__(kAttnThreads, kMinCtas) attention_kernel(const AttnArgs a) {
  static_assert(kRows == 16 || (kRows == 8 && kDecode), "8-row tiles are for decode only");
  constexpr bool kHi = kRows == 16;  // rows g + 8 in use
  constexpr int NJ = D / 32;   // 16-byte K/Q loads per row per lane
  constexpr int NKS = D / 16;  // k-steps of q.k
  constexpr int NM = D / 64;   // 16-byte V loads per key per lane
  constexpr int NNT = D / 8;   // n-tiles of the output

  __shared__ float sm_o[kAttnWarps][16][D + 4];
  __shared__ float sm_m[kAttnWarps][16];
  __shared__ float sm_l[kAttnWarps][16];
  __shared__ int sm_seq, sm_tile;

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t = lane & 3;
  const int h = blockIdx.z;
  const int split = blockIdx.y;

  int s, tile_first, tile_step;
  if constexpr (kDecode) {
    s = blockIdx.x / a.tiles_per_seq;
    tile_first = blockIdx.x % a.tiles_per_seq;
    tile_step = a.tiles_per_seq;
  } else {
    if (threadIdx.x == 0) sm_seq = -1;
    __syncthreads();
    if (warp == 0) attn_find_tile(a, blockIdx.x, &sm_seq, &sm_tile);
    __syncthreads();
    s = sm_seq;
    if (s < 0) return;
    tile_first = sm_tile;
    tile_step = 1 << 30;
  }
  const int q0 = a.q_indptr[s];
  const int n_rows = (a.q_indptr[s + 1] - q0) * a.group;
  const int n_tiles = kDecode ? (n_rows + kRows - 1) / kRows : tile_first + 1;

  const int li = a.per_kv_head ? s * a.n_kv_heads + h : s;
  const int kb0 = a.kv_indptr[li];
  const int nb = a.kv_indptr[li + 1] - kb0;
  const int bs = a.block_size;
  int total_keys = 0;
  if (nb > 0) total_keys = (nb - 1) * bs + min(max(a.kv_last_len[li], 0), bs);
  const int64_t head_stride = int64_t(bs) * D;

  for (int tile = tile_first; tile < n_tiles; tile += tile_step) {
    // Rows g and g + 8 of this tile.
    int row_tok[2], row_head[2], row_pos[2];
    bool row_ok[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int item = tile * kRows + g + 8 * i;
      row_ok[i] = (kHi || i == 0) && item < n_rows;
      row_tok[i] = q0 + (row_ok[i] ? item / a.group : 0);
      row_head[i] = h * a.group + (row_ok[i] ? item % a.group : 0);
      row_pos[i] = row_ok[i] ? a.q_pos[row_tok[i]] : -1;
    }
    int max_pos = max(row_pos[0], row_pos[1]);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) max_pos = max(max_pos, __shfl_xor_sync(0xffffffffu, max_pos, o));

    // Q fragments, unscaled bf16 (the scale is applied to the f32 scores).
    uint32_t qa[NKS][4];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const QT* qrow = static_cast<const QT*>(a.q) + (int64_t(row_tok[i]) * a.n_heads + row_head[i]) * D;
#pragma unroll
      for (int j = 0; j < NJ; ++j) {
        float v[8];
        if ((kHi || i == 0) && row_ok[i]) {
          load8(qrow + 32 * j + 8 * t, v);
        } else {
#pragma unroll
          for (int e = 0; e < 8; ++e) v[e] = 0.0f;
        }
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const int ks = 2 * j + half;
          qa[ks][i] = pack_bf16x2(v[4 * half], v[4 * half + 1]);
          qa[ks][2 + i] = pack_bf16x2(v[4 * half + 2], v[4 * half + 3]);
        }
      }
    }

    const int key_end = min(total_keys, max_pos + 1);
    const int n_chunks = key_end > 0 ? (key_end + 15) / 16 : 0;
    // Short ranges use fewer splits (at least kMinSplitChunks chunks each); the CTAs of unused
    // splits write empty partials, which the combine step skips.
    const int used_splits = min(a.n_splits, max(1, (n_chunks + kMinSplitChunks - 1) / kMinSplitChunks));
    const int per_split = (n_chunks + used_splits - 1) / used_splits;
    const int c_begin = split < used_splits ? split * per_split : n_chunks;
    const int c_end = min(n_chunks, c_begin + per_split);

    float o[NNT][2];                // rows g
    float o_hi[kHi ? NNT : 1][2];   // rows g + 8 (one scratch pair when unused)
#pragma unroll
    for (int nt = 0; nt < NNT; ++nt) o[nt][0] = o[nt][1] = 0.0f;
#pragma unroll
    for (int nt = 0; nt < (kHi ? NNT : 1); ++nt) o_hi[nt][0] = o_hi[nt][1] = 0.0f;
    float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.0f, 0.0f};

    // Base pointer of the 16 keys of chunk c (null when its block id is out of range).
    auto chunk_base = [&](int c, const __nv_bfloat16* cache) -> const __nv_bfloat16* {
      const int key0 = c * 16;
      const int p = key0 / bs;
      const int phys = a.kv_indices[kb0 + p];
      if (phys < 0 || (a.n_blocks > 0 && phys >= a.n_blocks)) return nullptr;
      return cache + (int64_t(phys) * a.n_kv_heads + h) * head_stride + int64_t(key0 % bs) * D;
    };

    uint4 kr[2][NJ];
    int c = c_begin + warp;
    const __nv_bfloat16* kbase = c < c_end ? chunk_base(c, a.k_cache) : nullptr;
    auto load_k = [&](const __nv_bfloat16* base) {
#pragma unroll
      for (int nt = 0; nt < 2; ++nt)
#pragma unroll
        for (int j = 0; j < NJ; ++j)
          kr[nt][j] = base ? ldg_stream(base + (nt * 8 + g) * D + 32 * j + 8 * t) : make_uint4(0, 0, 0, 0);
    };
    if (c < c_end) load_k(kbase);

    for (; c < c_end; c += kAttnWarps) {
      const int key0 = c * 16;
      const __nv_bfloat16* vbase = kbase ? (a.v_cache + (kbase - a.k_cache)) : nullptr;
      // V loads for this chunk go out before the scores are computed.
      uint4 vr[4][NM];
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
        const int key = 2 * t + (kk & 1) + 8 * (kk >> 1);
#pragma unroll
        for (int m = 0; m < NM; ++m)
          vr[kk][m] = vbase ? ldg_stream(vbase + key * D + 64 * m + 8 * g) : make_uint4(0, 0, 0, 0);
      }
      const bool chunk_ok = kbase != nullptr;

      float sc[2][4];
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
        sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0.0f;
#pragma unroll
        for (int ks = 0; ks < NKS; ++ks) {
          const uint4& w = kr[nt][ks >> 1];
          const uint32_t b0 = (ks & 1) ? w.z : w.x;
          const uint32_t b1 = (ks & 1) ? w.w : w.y;
          mma_bf16_16816(sc[nt], qa[ks], b0, b1);
        }
      }
      // Next chunk's K loads overlap the softmax and P.V of this one.
      const int c_next = c + kAttnWarps;
      kbase = c_next < c_end ? chunk_base(c_next, a.k_cache) : nullptr;
      if (c_next < c_end) load_k(kbase);

      float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
      for (int nt = 0; nt < 2; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int key = key0 + nt * 8 + 2 * t + (e & 1);
          const int r = e >> 1;
          const bool ok = chunk_ok && key < key_end && key <= row_pos[r];
          sc[nt][e] = ok ? sc[nt][e] * a.scale_log2 : -INFINITY;
          mx[r] = fmaxf(mx[r], sc[nt][e]);
        }
      float alpha[2];
      alpha[1] = 1.0f;
#pragma unroll
      for (int r = 0; r < (kHi ? 2 : 1); ++r) {
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
        const float m_new = fmaxf(m_run[r], mx[r]);
        const float ref = m_new == -INFINITY ? 0.0f : m_new;
        alpha[r] = exp2f(m_run[r] - ref);
        m_run[r] = m_new;
        float sum = 0.0f;
#pragma unroll
        for (int nt = 0; nt < 2; ++nt)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            sc[nt][2 * r + e] = exp2f(sc[nt][2 * r + e] - ref);
            sum += sc[nt][2 * r + e];
          }
        l_run[r] = l_run[r] * alpha[r] + sum;
      }
#pragma unroll
      for (int nt = 0; nt < NNT; ++nt) {
        o[nt][0] *= alpha[0], o[nt][1] *= alpha[0];
        if constexpr (kHi) o_hi[nt][0] *= alpha[1], o_hi[nt][1] *= alpha[1];
      }
      const uint32_t pa[4] = {pack_bf16x2(sc[0][0], sc[0][1]), kHi ? pack_bf16x2(sc[0][2], sc[0][3]) : 0u,
                              pack_bf16x2(sc[1][0], sc[1][1]), kHi ? pack_bf16x2(sc[1][2], sc[1][3]) : 0u};
      // Keys past the list's end may hold anything (NaN): their V must be exact zeros.
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
        const int key = key0 + 2 * t + (kk & 1) + 8 * (kk >> 1);
        if (key >= key_end)
#pragma unroll
          for (int m = 0; m < NM; ++m) vr[kk][m] = make_uint4(0, 0, 0, 0);
      }
#pragma unroll
      for (int nt = 0; nt < NNT; ++nt) {
        const int m = nt >> 3, e = nt & 7;
        mma_bf16_16816(o[nt], o_hi[kHi ? nt : 0], pa, attn_pair(vr[0][m], vr[1][m], e), attn_pair(vr[2][m], vr[3][m], e));
      }
    }

    // Merge the 4 warps: lane-partial sums first, then through shared memory.
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 1);
      l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 2);
    }
    if (t == 0) {
      sm_m[warp][g] = m_run[0], sm_m[warp][g + 8] = m_run[1];
      sm_l[warp][g] = l_run[0], sm_l[warp][g + 8] = l_run[1];
    }
#pragma unroll
    for (int nt = 0; nt < NNT; ++nt) {
      const int d0 = 64 * (nt >> 3) + 16 * t + (nt & 7);
      sm_o[warp][g][d0] = o[nt][0];
      sm_o[warp][g][d0 + 8] = o[nt][1];
      if constexpr (kHi) {
        sm_o[warp][g + 8][d0] = o_hi[nt][0];
        sm_o[warp][g + 8][d0 + 8] = o_hi[nt][1];
      }
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < kRows * D; idx += kAttnThreads) {
      const int r = idx / D, d = idx % D;
      const int item = tile * kRows + r;
      if (item >= n_rows) continue;
      float M = -INFINITY;
#pragma unroll
      for (int w = 0; w < kAttnWarps; ++w) M = fmaxf(M, sm_m[w][r]);
      float L = 0.0f, acc = 0.0f;
      if (M != -INFINITY) {
#pragma unroll
        for (int w = 0; w < kAttnWarps; ++w) {
          const float wt = exp2f(sm_m[w][r] - M);
          L += sm_l[w][r] * wt;
          acc += sm_o[w][r][d] * wt;
        }
      }
      const int tok = q0 + item / a.group;
      const int head = h * a.group + item % a.group;
      const int64_t row = int64_t(tok) * a.n_heads + head;
      const float val = L > 0.0f ? acc / L : 0.0f;
      if (a.n_splits == 1) {
        store_f32(static_cast<QT*>(a.out), row * D + d, val);
      } else {
        a.ws_o[(row * a.n_splits + split) * D + d] = val;
        if (d == 0) a.ws_lse[row * a.n_splits + split] = L > 0.0f ? M + log2f(L) : -INFINITY;
      }
    }
    __syncthreads();
  }
}

/// Merges the n_splits partial results of each (token, head) row: out = sum_s w_s o_s / sum_s w_s
/// with w_s = 2^(lse_s - max lse). Rows whose splits are all empty get zeros.
template <typename QT>
__global__ void attention_combine_kernel(const float* __restrict__ ws_o,  // [rows, n_splits, D]
                                         const float* __restrict__ ws_lse,  // [rows, n_splits]
                                         QT* __restrict__ out,               // [rows, D]
                                         int n_splits, int D) {
  extern __shared__ float sm_w[];  // [n_splits]
  const int64_t row = blockIdx.x;
  const float* lse = ws_lse + row * n_splits;
  __shared__ float sm_max, sm_sum;
  if (threadIdx.x < 32) {
    float m = -INFINITY;
    for (int i = threadIdx.x; i < n_splits; i += 32) m = fmaxf(m, lse[i]);
    m = warp_max(m);
    float sum = 0.0f;
    for (int i = threadIdx.x; i < n_splits; i += 32) {
      const float w = m == -INFINITY ? 0.0f : exp2f(lse[i] - m);
      sm_w[i] = w;
      sum += w;
    }
    sum = warp_sum(sum);
    if (threadIdx.x == 0) sm_max = m, sm_sum = sum;
  }
  __syncthreads();
  const float inv = sm_sum > 0.0f ? 1.0f / sm_sum : 0.0f;
  // Every split wrote its partial (zeros when empty), so the loads need no branch and the
  // unrolled loop keeps 8 of them in flight (a latency-bound loop cost ~40 us at 132 splits).
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    const float* src = ws_o + row * n_splits * D + d;
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int i = 0;
    for (; i + 8 <= n_splits; i += 8)
#pragma unroll
      for (int j = 0; j < 8; ++j) acc[j] += sm_w[i + j] * src[int64_t(i + j) * D];
    for (; i < n_splits; ++i) acc[0] += sm_w[i] * src[int64_t(i) * D];
    const float sum = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    store_f32(out, row * D + d, sum * inv);
  }
}

}  // namespace gsa::cuda
