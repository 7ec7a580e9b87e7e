// Device code of the decode attention kernel (one query token per sequence, dense or sparse
// block lists): each warp streams its 16-key chunks of K and V through a private ring of
// shared-memory stages filled by cp.async, so several chunks per warp are in flight without
// holding registers; fragments are read back with the same dim permutation as attention.cuh.
#pragma once

#include "backend/cuda/attention.cuh"

namespace gsa::cuda {

constexpr int kDecWarps = 8;
constexpr int kDecThreads = kDecWarps * 32;
constexpr int kDecStages = 3;

/// Dynamic shared memory of attention_decode_kernel<D>: the per-warp rings (reused by the merge).
constexpr size_t attention_decode_smem(int D) {
  return size_t(kDecWarps) * kDecStages * 2 * 16 * D * 2;
}

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
  const uint32_t dst = uint32_t(__cvta_generic_to_shared(smem));
  const int src_size = valid ? 16 : 0;  // 0: the 16 bytes are zero-filled
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(gmem), "r"(src_size));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N)); }

/// grid (n_seqs * tiles_per_seq, n_splits, n_kv_heads), kDecThreads threads. kRows as in
/// attention_kernel (8 when a kv head has at most 8 query heads).
template <int D, typename QT, int kRows>
__global__ void __launch_bounds__(kDecThreads, 1) attention_decode_kernel(const AttnArgs a) {
  constexpr int NJ = D / 32, NKS = D / 16, NM = D / 64, NNT = D / 8;
  constexpr int kCols = D / 8;                 // 16-byte columns per key row
  constexpr int kSlot = 2 * 16 * kCols;        // uint4 per stage (K then V)
  constexpr bool kHi = kRows == 16;
  extern __shared__ uint4 sm_ring[];           // [kDecWarps][kDecStages][2][16][kCols], swizzled

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t = lane & 3;
  const int h = blockIdx.z;
  const int split = blockIdx.y;
  const int s = blockIdx.x / a.tiles_per_seq;
  const int q0 = a.q_indptr[s];
  const int n_rows = (a.q_indptr[s + 1] - q0) * a.group;
  const int n_tiles = (n_rows + kRows - 1) / kRows;
  const int li = a.per_kv_head ? s * a.n_kv_heads + h : s;
  const int kb0 = a.kv_indptr[li];
  const int nb = a.kv_indptr[li + 1] - kb0;
  const int bs = a.block_size;
  const int total_keys = nb > 0 ? (nb - 1) * bs + min(max(a.kv_last_len[li], 0), bs) : 0;
  const int64_t head_stride = int64_t(bs) * D;
  uint4* ring = sm_ring + warp * kDecStages * kSlot;

  for (int tile = blockIdx.x % a.tiles_per_seq; tile < n_tiles; tile += a.tiles_per_seq) {
    // The split partition follows the list length alone, so the first copies go out before the
    // query rows are even read; causality is applied by the mask (decode rows see every key).
    const int n_chunks = (total_keys + 15) / 16;
    const int used_splits = min(a.n_splits, max(1, (n_chunks + kMinSplitChunks - 1) / kMinSplitChunks));
    const int per_split = (n_chunks + used_splits - 1) / used_splits;
    const int c_begin = split < used_splits ? split * per_split : n_chunks;
    const int c_end = min(n_chunks, c_begin + per_split);

    // Queues chunk c (or nothing, past c_end) into ring slot `slot`; always one commit group.
    auto issue = [&](int c, int slot) {
      if (c < c_end) {
        const int key0 = c * 16;
        const int phys = a.kv_indices[kb0 + key0 / bs];
        const bool ok = phys >= 0 && (a.n_blocks <= 0 || phys < a.n_blocks);
        const int64_t off = ok ? (int64_t(phys) * a.n_kv_heads + h) * head_stride + int64_t(key0 % bs) * D : 0;
        const __nv_bfloat16* kg = a.k_cache + off;
        const __nv_bfloat16* vg = a.v_cache + off;
        uint4* dst = ring + slot * kSlot;
#pragma unroll
        for (int i = 0; i < (16 * kCols) / 32; ++i) {
          const int idx = lane + 32 * i;
          const int row = idx / kCols, col = idx % kCols;
          const int sw = row * kCols + (col ^ (row & 7));
          cp_async16(dst + sw, kg + row * D + col * 8, ok);
          cp_async16(dst + 16 * kCols + sw, vg + row * D + col * 8, ok);
        }
      }
      cp_async_commit();
    };

    float o[NNT][2];
    float o_hi[kHi ? NNT : 1][2];
#pragma unroll
    for (int nt = 0; nt < NNT; ++nt) o[nt][0] = o[nt][1] = 0.0f;
#pragma unroll
    for (int nt = 0; nt < (kHi ? NNT : 1); ++nt) o_hi[nt][0] = o_hi[nt][1] = 0.0f;
    float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.0f, 0.0f};

    const int c0 = c_begin + warp;
#pragma unroll
    for (int i = 0; i < kDecStages - 1; ++i) issue(c0 + i * kDecWarps, i);
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
          qa[2 * j + half][i] = pack_bf16x2(v[4 * half], v[4 * half + 1]);
          qa[2 * j + half][2 + i] = pack_bf16x2(v[4 * half + 2], v[4 * half + 3]);
        }
      }
    }

    const int key_end = min(total_keys, max_pos + 1);
    int it = 0;
    for (int c = c0; c < c_end; c += kDecWarps, ++it) {
      issue(c + (kDecStages - 1) * kDecWarps, (it + kDecStages - 1) % kDecStages);
      cp_async_wait<kDecStages - 1>();
      __syncwarp();
      const uint4* ks_ = ring + (it % kDecStages) * kSlot;
      const uint4* vs_ = ks_ + 16 * kCols;
      const int key0 = c * 16;
      const int phys = a.kv_indices[kb0 + key0 / bs];
      const bool chunk_ok = phys >= 0 && (a.n_blocks <= 0 || phys < a.n_blocks);

      float sc[2][4];
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
        sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0.0f;
        const int row = nt * 8 + g;
#pragma unroll
        for (int j = 0; j < NJ; ++j) {
          const uint4 w = ks_[row * kCols + ((4 * j + t) ^ (row & 7))];
          mma_bf16_16816(sc[nt], qa[2 * j], w.x, w.y);
          mma_bf16_16816(sc[nt], qa[2 * j + 1], w.z, w.w);
        }
      }
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
      float alpha[2] = {1.0f, 1.0f};
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
#pragma unroll
      for (int m = 0; m < NM; ++m) {
        uint4 vr[4];
#pragma unroll
        for (int kk = 0; kk < 4; ++kk) {
          const int row = 2 * t + (kk & 1) + 8 * (kk >> 1);
          vr[kk] = vs_[row * kCols + ((8 * m + g) ^ (row & 7))];
          // Keys past the list's end may hold anything (NaN): their V must be exact zeros.
          if (key0 + row >= key_end) vr[kk] = make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          const int nt = 8 * m + e;
          mma_bf16_16816(o[nt], o_hi[kHi ? nt : 0], pa, attn_pair(vr[0], vr[1], e), attn_pair(vr[2], vr[3], e));
        }
      }
      __syncwarp();  // the slot is refilled by the next iteration's issue
    }
    cp_async_wait<0>();

#pragma unroll
    for (int r = 0; r < 2; ++r) {
      l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 1);
      l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 2);
    }
    // Merge the warps through the (now idle) rings: [kDecWarps][kRows][D + 4] floats + m, l.
    __syncthreads();
    float* sm_o = reinterpret_cast<float*>(sm_ring);
    float* sm_m = sm_o + kDecWarps * kRows * (D + 4);
    float* sm_l = sm_m + kDecWarps * kRows;
    if (t == 0) {
      sm_m[warp * kRows + g] = m_run[0];
      sm_l[warp * kRows + g] = l_run[0];
      if constexpr (kHi) {
        sm_m[warp * kRows + g + 8] = m_run[1];
        sm_l[warp * kRows + g + 8] = l_run[1];
      }
    }
#pragma unroll
    for (int nt = 0; nt < NNT; ++nt) {
      const int d0 = 64 * (nt >> 3) + 16 * t + (nt & 7);
      float* row0 = sm_o + (warp * kRows + g) * (D + 4);
      row0[d0] = o[nt][0];
      row0[d0 + 8] = o[nt][1];
      if constexpr (kHi) {
        float* row1 = row0 + 8 * (D + 4);
        row1[d0] = o_hi[nt][0];
        row1[d0 + 8] = o_hi[nt][1];
      }
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < kRows * D; idx += kDecThreads) {
      const int r = idx / D, d = idx % D;
      const int item = tile * kRows + r;
      if (item >= n_rows) continue;
      float M = -INFINITY;
#pragma unroll
      for (int w = 0; w < kDecWarps; ++w) M = fmaxf(M, sm_m[w * kRows + r]);
      float L = 0.0f, acc = 0.0f;
      if (M != -INFINITY) {
#pragma unroll
        for (int w = 0; w < kDecWarps; ++w) {
          const float wt = exp2f(sm_m[w * kRows + r] - M);
          L += sm_l[w * kRows + r] * wt;
          acc += sm_o[(w * kRows + r) * (D + 4) + d] * wt;
        }
      }
      const int64_t row = int64_t(q0 + item / a.group) * a.n_heads + h * a.group + item % a.group;
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

}  // namespace gsa::cuda
