// Device code of GSA block selection (ops_sparse.h BlockSelectParams) shared by both launch
// paths of block_select.cu: the query staging, the score of one block for one list, and the
// top-k of one list (radix select by (score desc, index asc), forced blocks, sorted CSR output).
// The kernels themselves and the choice between the paths live in block_select.cu.
#pragma once

#include <climits>

#include <cub/block/block_scan.cuh>

#include "backend/cuda/common.cuh"
#include "backend/cuda/cuda_launch.h"

namespace gsa::cuda {

struct SelectArgs {
  const void* q;                       // [n_seqs, n_heads, head_dim]  QT
  const void* reps;                    // [n_blocks, n_kv_heads, rep_bytes]
  const int32_t* bt_indptr;            // [n_seqs + 1]
  const int32_t* block_table;          // [bt_indptr[n_seqs]]
  const int32_t* seq_len;              // [n_seqs]
  const int32_t* out_indptr;           // [n_lists + 1]
  int32_t* out_indices;                // [out_indptr[n_lists]]
  int32_t* out_last_len;               // [n_lists]
  const float* hash_w;                 // [head_dim, head_dim], Hash only
  float* scores;                       // [n_lists, max_blocks] workspace
  const uint8_t* rank;                 // [n_seqs] backend::Rank per sequence, or null: all Score
  const void* k_cache;                 // [n_blocks, n_kv_heads, block_size, head_dim]  bf16, oracle
  float* oracle_ws;                    // [2, n_seqs, n_heads, max_blocks] Mass / Oracle workspace
  uint32_t* tickets;                   // [n_lists] fused path: arrivals, zero between calls
  int64_t n_blocks;                    // > 0: ids outside [0, n_blocks) are never scored
  int n_seqs, n_heads, n_kv_heads, head_dim, block_size, group;
  int sink_blocks, local_blocks;
  int max_blocks;
  int kind;        // backend::RepKind
  int boxes;       // sub-block representations per block (Mean, MinMax)
  bool group_max;  // QueryMode::GroupMax
  bool per_kv_head;
  int rerank_factor;  // Rerank: candidates per free slot
  bool rerank_fast;   // Rerank's logits by rerank_logits_kernel (else oracle_logits_kernel's loop)
  bool quant_mma;     // Quant, GroupMax: scores on the tensor cores (select_quant_group_max_mma)
};

constexpr uint8_t kRankMass = 1, kRankOracle = 2, kRankRerank = 3;  // backend::Rank values

constexpr int kScoreThreads = 256;
constexpr int kTopkThreads = 512;      // also the fused kernel's CTA
constexpr int kMaxScoreQueries = 64;   // query vectors one CTA keeps in shared memory
constexpr int kMaxSelectHeadDim = 128;

__device__ __forceinline__ bool select_forced(const SelectArgs& a, int b, int n, int len) {
  return b < a.sink_blocks || b >= n - a.local_blocks || int64_t(b + 1) * a.block_size > len;
}

/// Physical id of logical block b of the sequence whose table starts at bt0; ok is false for
/// ids outside the rep table (the block then scores -inf).
__device__ __forceinline__ int select_phys(const SelectArgs& a, int bt0, int b, bool* ok) {
  const int phys = a.block_table[bt0 + b];
  *ok = phys >= 0 && (a.n_blocks <= 0 || phys < a.n_blocks);
  return phys;
}

struct SelectQueries {
  float q[kMaxScoreQueries][kMaxSelectHeadDim];             // scoring queries, f32
  uint32_t bits[kMaxScoreQueries][kMaxSelectHeadDim / 32];  // their sign bits of q.W (Hash)
};

/// Stages the scoring queries of kv heads [h0, h1) of sequence s: row (h - h0) * q_per_kv + j
/// holds query j of kv head h (q_per_kv = group for GroupMax, else 1: the group mean), and for
/// Hash its sign bits. Every thread of the CTA calls it; it ends with a barrier.
template <typename QT>
__device__ void select_load_queries(const SelectArgs& a, int s, int h0, int h1, SelectQueries& sm) {
  const int D = a.head_dim;
  const int q_per_kv = a.group_max ? a.group : 1;
  const int q0 = h0 * q_per_kv;
  const int n_q = (h1 - h0) * q_per_kv;
  const QT* qs = static_cast<const QT*>(a.q) + int64_t(s) * a.n_heads * D;
  for (int i = threadIdx.x; i < n_q * D; i += blockDim.x) {
    const int qi = i / D, d = i % D;
    const int g = q0 + qi;  // head (GroupMax) or kv head (GroupMean) of row qi
    if (a.group_max) {
      sm.q[qi][d] = load_f32(qs, int64_t(g) * D + d);
    } else {
      float sum = 0.0f;
      for (int j = 0; j < a.group; ++j) sum += load_f32(qs, int64_t(g * a.group + j) * D + d);
      sm.q[qi][d] = sum * (1.0f / float(a.group));
    }
  }
  __syncthreads();
  const int words = D / 32;
  if (a.kind == 2) {  // Hash: bit c of query qi = (q . W[:, c]) > 0
    for (int u = threadIdx.x; u < n_q * words; u += blockDim.x) {
      const int qi = u / words, wd = u % words;
      uint32_t bits = 0;
      for (int j = 0; j < 32; ++j) {
        const int c = wd * 32 + j;
        float proj = 0.0f;
        for (int i = 0; i < D; ++i) proj = __fadd_rn(proj, __fmul_rn(sm.q[qi][i], a.hash_w[int64_t(i) * D + c]));
        bits |= uint32_t(proj > 0.0f) << j;
      }
      sm.bits[qi][wd] = bits;
    }
    __syncthreads();
  }
}

__device__ __forceinline__ int64_t select_rep_elems(const SelectArgs& a) {
  return a.kind == 0 ? int64_t(a.boxes) * a.head_dim
         : a.kind == 1 ? int64_t(a.boxes) * 2 * a.head_dim
         : a.kind == 3 ? 2 * int64_t(a.head_dim) + int64_t(a.block_size) * (a.head_dim / 16)
                       : int64_t(a.block_size) * (a.head_dim / 32);
}

constexpr int kRepQuant = 3;  // backend::RepKind::Quant

/// Quant: q.k' of scoring-query row `row` for the tokens of one (block, kv head) representation
/// (rep: box then codes, ops_sparse.h) that are lane + 32 j + 32 kQuantTokens i of the block,
/// handed to f(token, score) by each lane. q.k' = base + s * sum_d a8_d c_d as on the CPU
/// (quant_query_scale): the integer sum is exact, so both backends get it bit for bit.
///
/// Lane L (< head_dim / 4) owns the dims 16 w + i + 4 b (w = L / 4, i = L % 4, b = 0..3): it
/// computes their a_d, and after the warp's max |a_d| their 8-bit factors as the bytes of one
/// word A_L. Every lane then holds all the A_L (one shuffle each). The codes of dims
/// 16 w + 4 b + i of a token sit in byte b of its code word w at bits 2 i, so
/// word & (0x03030303 << 2 i) holds them as 4^i c, and one dp4a with A_{4 w + i} adds
/// 4^i sum_b a8 c; the four accumulators of i are shifted back by 2 i at the end (exact: each
/// is a multiple of 4^i). One LOP3 and one dp4a per four codes.
constexpr int kQuantTokens = 4;
__device__ __forceinline__ int quant_dp4a(uint32_t codes, int factors, int acc) {
  int d;
  asm("dp4a.u32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(codes), "r"(factors), "r"(acc));
  return d;
}
template <typename F>
__device__ __forceinline__ void select_quant_scores(const SelectArgs& a, const SelectQueries& sm,
                                                    const float* rep, int row, int lane, F&& f) {
  const int D = a.head_dim;  // a multiple of 32, at most kMaxSelectHeadDim (checked by the host)
  const int quads = D / 4;   // <= 32
  const float* mn = rep;
  const float* mx = rep + D;
  float av[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  float part = 0.0f, max_abs = 0.0f;
  if (lane < quads) {
#pragma unroll
    for (int bb = 0; bb < 4; ++bb) {
      const int d = 16 * (lane >> 2) + (lane & 3) + 4 * bb;
      const float qd = sm.q[row][d];
      const float step = (mx[d] - mn[d]) * 0.25f;
      av[bb] = qd * step;
      max_abs = fmaxf(max_abs, fabsf(av[bb]));
      part += qd * (mn[d] + 0.5f * step);
    }
  }
  const float base = warp_sum(part);
  max_abs = warp_max(max_abs);
  const float inv = max_abs > 0.0f ? 127.0f / max_abs : 0.0f;
  const float scale = max_abs / 127.0f;
  uint32_t mine = 0u;
#pragma unroll
  for (int bb = 0; bb < 4; ++bb) {
    const int v = max(-127, min(127, __float2int_rn(av[bb] * inv)));
    mine |= (uint32_t(v) & 0xffu) << (8 * bb);
  }
  int fac[kMaxSelectHeadDim / 4];
#pragma unroll
  for (int k = 0; k < kMaxSelectHeadDim / 4; ++k) fac[k] = __shfl_sync(0xffffffffu, int(mine), k);
  // Two code words per token at a time: D / 16 words per token is even, and the codes start
  // 8 D bytes into the rep, so the uint2 loads are aligned.
  const uint2* codes = reinterpret_cast<const uint2*>(rep + 2 * D);
  const int pairs = D / 32;  // uint2 per token
  for (int t0 = 0; t0 < a.block_size; t0 += 32 * kQuantTokens) {
    int acc[kQuantTokens][4];
#pragma unroll
    for (int j = 0; j < kQuantTokens; ++j)
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[j][i] = 0;
#pragma unroll
    for (int w2 = 0; w2 < kMaxSelectHeadDim / 32; ++w2) {
      if (w2 >= pairs) break;  // uniform
      uint2 v[kQuantTokens];
#pragma unroll
      for (int j = 0; j < kQuantTokens; ++j) {
        const int t = t0 + 32 * j + lane;
        v[j] = t < a.block_size ? codes[int64_t(t) * pairs + w2] : make_uint2(0u, 0u);
      }
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const uint32_t m = 0x03030303u << (2 * i);
#pragma unroll
        for (int j = 0; j < kQuantTokens; ++j) {
          acc[j][i] = quant_dp4a(v[j].x & m, fac[4 * (2 * w2) + i], acc[j][i]);
          acc[j][i] = quant_dp4a(v[j].y & m, fac[4 * (2 * w2 + 1) + i], acc[j][i]);
        }
      }
    }
#pragma unroll
    for (int j = 0; j < kQuantTokens; ++j) {
      const int t = t0 + 32 * j + lane;
      const int sum = acc[j][0] + (acc[j][1] >> 2) + (acc[j][2] >> 4) + (acc[j][3] >> 6);
      if (t < a.block_size) f(t, __fadd_rn(base, __fmul_rn(scale, float(sum))));  // as on the CPU: no FMA
    }
  }
}

/// d += a . b for one warp on the integer tensor cores: a [16 x 32] s8 (row), b [32 x 8] s8
/// (col), d [16 x 8] s32. Fragment layout (g = lane / 4, t = lane % 4): a0 (row g, k 4t..4t+3),
/// a1 (g+8, 4t..), a2 (g, 16+4t..), a3 (g+8, 16+4t..); b0 (k 4t..4t+3, n g), b1 (k 16+4t.., n g);
/// d0,d1 (g, n 2t..2t+1), d2,d3 (g+8, n 2t..).
__device__ __forceinline__ void mma_s8_16832(int (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                             uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/// Quant, GroupMax: the best q.k' over the tokens of one (block, kv head) representation and the
/// scoring-query rows row0 .. row0 + nq of sm, on the tensor cores: tokens x dims codes (0..3)
/// times dims x queries 8-bit factors, 16 tokens and 8 queries per MMA. Bit for bit
/// select_quant_scores' best: the factors, base and scale of each query are computed from the
/// same products in the same order (lane (g, t) holds query g's factors for the dims
/// 16 m + t + 4 b, the words A_{4 m + t} of select_quant_scores' lanes, and sums their partial
/// bases in warp_sum's tree), the integer sums are exact, and base + scale * sum is monotone in
/// sum, so the best token's sum gives the best score. All 32 lanes call it and get the score.
__device__ __forceinline__ float select_quant_group_max_mma(const SelectArgs& a, const SelectQueries& sm,
                                                            const float* rep, int row0, int nq, int lane) {
  const int D = a.head_dim;  // a multiple of 32, at most kMaxSelectHeadDim
  const int words = D / 16;  // code words per token, even, <= 8
  const int g = lane >> 2, t = lane & 3;
  const float* mn = rep;
  const float* mx = rep + D;
  const uint32_t* codes = reinterpret_cast<const uint32_t*>(rep + 2 * D);
  float best = -INFINITY;
  for (int n0 = 0; n0 < nq; n0 += 8) {
    // Query n0 + g's factors for this lane's dims, as select_quant_scores computes them.
    const bool live = n0 + g < nq;
    const int row = live ? row0 + n0 + g : row0;
    float part[8], av[8][4];
    float max_abs = 0.0f;
#pragma unroll
    for (int m = 0; m < 8; ++m) {
      part[m] = 0.0f;
#pragma unroll
      for (int bb = 0; bb < 4; ++bb) {
        av[m][bb] = 0.0f;
        if (m < words) {
          const int d = 16 * m + t + 4 * bb;
          const float qd = sm.q[row][d];
          const float step = (mx[d] - mn[d]) * 0.25f;
          av[m][bb] = qd * step;
          max_abs = fmaxf(max_abs, fabsf(av[m][bb]));
          part[m] += qd * (mn[d] + 0.5f * step);
        }
      }
    }
    // warp_sum's tree over the lanes 4 m + t of select_quant_scores: xor 16, 8, 4 pair m with
    // m ^ 4, m ^ 2, m ^ 1 (here, in registers), xor 2 and 1 the four lanes of g.
    float base = ((part[0] + part[4]) + (part[2] + part[6])) + ((part[1] + part[5]) + (part[3] + part[7]));
    base += __shfl_xor_sync(0xffffffffu, base, 2);
    base += __shfl_xor_sync(0xffffffffu, base, 1);
    max_abs = fmaxf(max_abs, __shfl_xor_sync(0xffffffffu, max_abs, 2));
    max_abs = fmaxf(max_abs, __shfl_xor_sync(0xffffffffu, max_abs, 1));
    const float inv = max_abs > 0.0f ? 127.0f / max_abs : 0.0f;
    const float scale = max_abs / 127.0f;
    uint32_t bf[8];
#pragma unroll
    for (int m = 0; m < 8; ++m) {
      bf[m] = 0u;
#pragma unroll
      for (int bb = 0; bb < 4; ++bb) {
        const int v = max(-127, min(127, __float2int_rn(av[m][bb] * inv)));
        bf[m] |= (uint32_t(v) & 0xffu) << (8 * bb);
      }
      if (!live) bf[m] = 0u;
    }
    // Best integer sum of each of this lane's two output columns (queries n0 + 2 t, + 1).
    int top[2] = {INT_MIN, INT_MIN};
    for (int t0 = 0; t0 < a.block_size; t0 += 16) {
      uint32_t lo[8], hi[8];  // code words of tokens t0 + g and t0 + g + 8
      const int r_lo = t0 + g, r_hi = t0 + g + 8;
      const bool ok_lo = r_lo < a.block_size, ok_hi = r_hi < a.block_size;
#pragma unroll
      for (int w = 0; w < 8; ++w) lo[w] = hi[w] = 0u;
      if ((words & 3) == 0) {  // 16-byte loads: a token's words start 16-byte aligned (D % 64 == 0)
#pragma unroll
        for (int w = 0; w < 8; w += 4) {
          if (w >= words) break;
          if (ok_lo) {
            const uint4 v = *reinterpret_cast<const uint4*>(codes + int64_t(r_lo) * words + w);
            lo[w] = v.x, lo[w + 1] = v.y, lo[w + 2] = v.z, lo[w + 3] = v.w;
          }
          if (ok_hi) {
            const uint4 v = *reinterpret_cast<const uint4*>(codes + int64_t(r_hi) * words + w);
            hi[w] = v.x, hi[w + 1] = v.y, hi[w + 2] = v.z, hi[w + 3] = v.w;
          }
        }
      } else {
#pragma unroll
        for (int w = 0; w < 8; w += 2) {
          if (w >= words) break;
          if (ok_lo) {
            const uint2 v = *reinterpret_cast<const uint2*>(codes + int64_t(r_lo) * words + w);
            lo[w] = v.x, lo[w + 1] = v.y;
          }
          if (ok_hi) {
            const uint2 v = *reinterpret_cast<const uint2*>(codes + int64_t(r_hi) * words + w);
            hi[w] = v.x, hi[w + 1] = v.y;
          }
        }
      }
      int c[4] = {0, 0, 0, 0};
      const uint32_t mask = 0x03030303u;
#pragma unroll
      for (int ks = 0; ks < 4; ++ks) {
        if (2 * ks >= words) break;  // uniform
        mma_s8_16832(c, (lo[2 * ks] >> (2 * t)) & mask, (hi[2 * ks] >> (2 * t)) & mask,
                     (lo[2 * ks + 1] >> (2 * t)) & mask, (hi[2 * ks + 1] >> (2 * t)) & mask, bf[2 * ks],
                     bf[2 * ks + 1]);
      }
      if (ok_lo) top[0] = max(top[0], c[0]), top[1] = max(top[1], c[1]);
      if (ok_hi) top[0] = max(top[0], c[2]), top[1] = max(top[1], c[3]);
    }
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const int src = 4 * (2 * t + j);  // a lane of query n0 + 2 t + j
      const float b_j = __shfl_sync(0xffffffffu, base, src);
      const float s_j = __shfl_sync(0xffffffffu, scale, src);
      if (n0 + 2 * t + j < nq && top[j] != INT_MIN)
        best = fmaxf(best, __fadd_rn(b_j, __fmul_rn(s_j, float(top[j]))));  // as select_quant_scores
    }
  }
  return warp_max(best);
}

/// Score of block phys for kv head h, whose queries are rows row0.. of sm: the best over them
/// (one query for GroupMean); -inf when !ok. All 32 lanes call it and get the score.
__device__ __forceinline__ float select_head_score(const SelectArgs& a, const SelectQueries& sm,
                                                   int phys, bool ok, int h, int row0, int lane) {
  float score = -INFINITY;
  if (!ok) return score;
  const int D = a.head_dim;
  const int words = D / 32;
  const int q_per_kv = a.group_max ? a.group : 1;
  const int64_t rep_off = (int64_t(phys) * a.n_kv_heads + h) * select_rep_elems(a);
  if (a.kind == kRepQuant && q_per_kv > 1 && a.quant_mma)
    return select_quant_group_max_mma(a, sm, static_cast<const float*>(a.reps) + rep_off, row0, q_per_kv, lane);
  for (int qj = 0; qj < q_per_kv; ++qj) {
    const int qi = row0 + qj;
    float sc;
    if (a.kind == kRepQuant) {
      float best = -INFINITY;
      select_quant_scores(a, sm, static_cast<const float*>(a.reps) + rep_off, qi, lane,
                          [&](int, float v) { best = fmaxf(best, v); });
      sc = warp_max(best);
    } else if (a.kind == 2) {
      const uint32_t* bits = static_cast<const uint32_t*>(a.reps) + rep_off;
      int best = 0;
      for (int t = lane; t < a.block_size; t += 32) {
        int eq = 0;
        for (int wd = 0; wd < words; ++wd) eq += 32 - __popc(bits[t * words + wd] ^ sm.bits[qi][wd]);
        best = max(best, eq);
      }
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) best = max(best, __shfl_xor_sync(0xffffffffu, best, o));
      sc = float(best);
    } else {
      // The best of the block's sub-block representations (one when boxes == 1).
      const int box_floats = a.kind == 0 ? D : 2 * D;
      sc = -INFINITY;
      for (int i = 0; i < a.boxes; ++i) {
        const float* rep = static_cast<const float*>(a.reps) + rep_off + int64_t(i) * box_floats;
        float part = 0.0f;
        for (int d = lane; d < D; d += 32) {
          const float qd = sm.q[qi][d];
          part += a.kind == 0 ? qd * rep[d] : fmaxf(qd * rep[d], qd * rep[D + d]);
        }
        const float box = warp_sum(part);
        sc = i == 0 ? box : fmaxf(sc, box);
      }
    }
    score = fmaxf(score, sc);
  }
  return score;
}

/// Rank::Mass: log of the unnormalized mass of scoring-query row `row` (staged in sm) in kv head
/// h of block phys: log-sum-exp over the sub-blocks of scale * score (scale * score with one).
/// For Quant, log-sum-exp over the block's tokens of scale * q.k'. All 32 lanes call it and get
/// the value.
__device__ __forceinline__ float select_row_log_mass(const SelectArgs& a, const SelectQueries& sm,
                                                     int phys, int h, int row, float scale, int lane) {
  const int D = a.head_dim;
  const int box_floats = a.kind == 0 ? D : 2 * D;
  const float* rep0 = static_cast<const float*>(a.reps) + (int64_t(phys) * a.n_kv_heads + h) * select_rep_elems(a);
  if (a.kind == kRepQuant) {
    // log-sum-exp over the block's tokens of scale * q.k' in one pass: a running (max, sum of
    // exp(x - max)) per lane, then the lanes' pairs rescaled to the warp's max and summed.
    float m = -INFINITY, z = 0.0f;
    select_quant_scores(a, sm, rep0, row, lane, [&](int, float v) {
      const float x = v * scale;
      if (x > m) {
        z = z * __expf(m - x) + 1.0f;  // exp(-inf) = 0 for the first token
        m = x;
      } else if (x > -INFINITY) {
        z += __expf(x - m);
      }
    });
    const float wm = warp_max(m);
    if (!(wm > -INFINITY)) return wm;
    const float wz = warp_sum(m > -INFINITY ? z * __expf(m - wm) : 0.0f);
    return wm + __logf(wz);
  }
  float mx = -INFINITY, sum = 0.0f;  // running log-sum-exp: sum of exp(v - mx)
  for (int i = 0; i < a.boxes; ++i) {
    const float* rep = rep0 + int64_t(i) * box_floats;
    float part = 0.0f;
    for (int d = lane; d < D; d += 32) {
      const float qd = sm.q[row][d];
      part += a.kind == 0 ? qd * rep[d] : fmaxf(qd * rep[d], qd * rep[D + d]);
    }
    const float v = warp_sum(part) * scale;
    if (a.boxes == 1) return v;
    if (v > mx) {
      sum = sum * __expf(mx - v) + 1.0f;
      mx = v;
    } else if (v > -INFINITY) {
      sum += __expf(v - mx);
    }
  }
  return mx > -INFINITY ? mx + __logf(sum) : mx;
}

/// Score of block phys for one list: kv head h alone for per_kv_head lists (queries in rows
/// 0..), else the sum over all kv heads (queries of every kv head staged). All lanes call it.
__device__ __forceinline__ float select_list_score(const SelectArgs& a, const SelectQueries& sm,
                                                   int phys, bool ok, int h, int lane) {
  if (a.per_kv_head) return select_head_score(a, sm, phys, ok, h, 0, lane);
  if ((a.kind == 0 || a.kind == 1) && !a.group_max && a.boxes == 1) {
    // Mean / MinMax with group-mean queries summed over kv heads: the score is linear in the
    // per-lane partial sums, so all heads' loads go out together and one reduction remains.
    const int D = a.head_dim;
    const int64_t rep_elems = select_rep_elems(a);
    float part = 0.0f;
    if (ok) {
      const float* rep0 = static_cast<const float*>(a.reps) + int64_t(phys) * a.n_kv_heads * rep_elems;
      for (int hh = 0; hh < a.n_kv_heads; ++hh) {
        const float* rep = rep0 + hh * rep_elems;
#pragma unroll 4
        for (int d = lane; d < D; d += 32) {
          const float qd = sm.q[hh][d];
          part += a.kind == 0 ? qd * rep[d] : fmaxf(qd * rep[d], qd * rep[D + d]);
        }
      }
    }
    const float total = warp_sum(part);
    return ok ? total : -INFINITY;
  }
  const int q_per_kv = a.group_max ? a.group : 1;
  float total = 0.0f;
  for (int hh = 0; hh < a.n_kv_heads; ++hh) total += select_head_score(a, sm, phys, ok, hh, hh * q_per_kv, lane);
  return total;
}

/// Monotone map of a float score to uint32 (larger score -> larger key); candidate keys are >= 1
/// so 0 can mean "not a candidate"; NaN and -inf rank lowest, equal (as in the CPU reference).
__device__ __forceinline__ uint32_t select_key(float x) {
  if (x != x || x == -INFINITY) return 1u;
  const uint32_t u = __float_as_uint(x);
  const uint32_t k = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  return k == 0u ? 1u : k;
}

struct SelectTopkSmem {
  typename cub::BlockScan<int, kTopkThreads>::TempStorage scan;
  int hist[256];
  int count;
  uint32_t prefix;
  int remaining;
  int done;
};

/// Top-k of list li by (score desc, index asc) among its non-forced full blocks, plus the
/// forced ones, written in logical order with last_len. scores [n] are the list's: in shared
/// memory (kShared), else in global memory, read through L2 (other CTAs of the same grid may
/// have written them). Every thread of a kTopkThreads CTA calls it.
/// mark (Rerank's candidates): not null, k is rerank_factor times the free slots and, instead
/// of the list, mark[b] = 1 for every selected or forced block b and 0 for the others (b below
/// max_blocks); mark may be `scores` itself (each thread writes only the entries it has read).
template <bool kShared>
__device__ void select_topk(const SelectArgs& a, int li, const float* scores, SelectTopkSmem& sm,
                            float* mark = nullptr) {
  using Scan = cub::BlockScan<int, kTopkThreads>;
  const int s = a.per_kv_head ? li / a.n_kv_heads : li;
  const int bt0 = a.bt_indptr[s];
  const int n = a.bt_indptr[s + 1] - bt0;
  const int len = a.seq_len[s];
  const int out0 = a.out_indptr[li];
  const int size = a.out_indptr[li + 1] - out0;
  const int tid = threadIdx.x;

  auto key_of = [&](int b) -> uint32_t {
    if (b >= n || b >= a.max_blocks || select_forced(a, b, n, len)) return 0u;
    return select_key(kShared ? scores[b] : __ldcg(scores + b));
  };

  // Forced and candidate counts.
  if (tid == 0) sm.count = 0;
  __syncthreads();
  int forced = 0, cand = 0;
  for (int b = tid; b < n; b += blockDim.x) {
    forced += select_forced(a, b, n, len);
    cand += key_of(b) != 0u;
  }
  atomicAdd(&sm.count, forced);
  __syncthreads();
  const int n_forced = sm.count;
  __syncthreads();
  if (tid == 0) sm.count = 0;
  __syncthreads();
  atomicAdd(&sm.count, cand);
  __syncthreads();
  const int n_cand = sm.count;
  __syncthreads();
  const int k = max(0, min(mark ? a.rerank_factor * max(0, size - n_forced) : size - n_forced, n_cand));

  // Radix select of the k-th largest key, 8 bits at a time from the top. After each pass the
  // decided digits are `mask`; it stops early once every key of the chosen digit is taken
  // (then no tie inside it needs breaking). Selected: (key & mask) > thresh, and the first
  // need_eq keys (by index) with (key & mask) == thresh.
  uint32_t thresh = 1u;  // k == n_cand: every candidate (keys >= 1)
  uint32_t mask = 0xffffffffu;
  int need_eq = 0;
  if (k > 0 && k < n_cand) {
    if (tid == 0) sm.prefix = 0u, sm.remaining = k, sm.done = 0;
    mask = 0u;
    for (int shift = 24; shift >= 0; shift -= 8) {
      for (int i = tid; i < 256; i += blockDim.x) sm.hist[i] = 0;
      __syncthreads();
      const uint32_t prefix = sm.prefix;
      for (int b = tid; b < n; b += blockDim.x) {
        const uint32_t key = key_of(b);
        if (key != 0u && (key & mask) == prefix) atomicAdd(&sm.hist[(key >> shift) & 255u], 1);
      }
      __syncthreads();
      if (tid < 32) {
        // Lane l owns digits 255 - 8l .. 248 - 8l (descending). Every lane reads the count
        // still needed before any lane may overwrite it.
        const int rem = sm.remaining;
        __syncwarp();
        int c[8], lane_sum = 0;
#pragma unroll
        for (int j = 0; j < 8; ++j) lane_sum += (c[j] = sm.hist[255 - 8 * tid - j]);
        int incl = lane_sum;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
          const int v = __shfl_up_sync(0xffffffffu, incl, o);
          if (tid >= o) incl += v;
        }
        const int excl = incl - lane_sum;
        if (excl < rem && rem <= incl) {
          int before = excl;
#pragma unroll
          for (int j = 0; j < 8; ++j) {
            if (before < rem && rem <= before + c[j]) {
              sm.prefix = prefix | (uint32_t(255 - 8 * tid - j) << shift);
              sm.remaining = rem - before;
              sm.done = rem - before == c[j] ? 1 : 0;
            }
            before += c[j];
          }
        }
      }
      __syncthreads();
      mask |= 255u << shift;
      if (sm.done != 0) break;  // uniform: every thread reads it after the same barrier
    }
    thresh = sm.prefix;
    need_eq = sm.remaining;
  }
  // An int, recomputed here: a bool set before the radix loop and read after it came back true
  // on the device (nvcc 13.0, sm_90) although the loop had run under its negation.
  const int take_all = k >= n_cand ? 1 : 0;

  // Output positions: forced, keys above the threshold, and the first need_eq keys equal to it.
  if (tid == 0) sm.count = -1;
  __syncthreads();
  int carry_eq = 0, carry_sel = 0, my_last = -1;
  for (int base = 0; base < n; base += blockDim.x) {
    const int b = base + tid;
    const uint32_t key = b < n ? key_of(b) : 0u;
    const uint32_t mkey = key & mask;
    const bool eq = take_all == 0 && k > 0 && key != 0u && mkey == thresh;
    int eq_rank, eq_total;
    Scan(sm.scan).ExclusiveSum(int(eq), eq_rank, eq_total);
    __syncthreads();
    bool sel = false;
    if (b < n) {
      if (select_forced(a, b, n, len)) sel = true;
      else if (k > 0 && key != 0u) sel = take_all != 0 || mkey > thresh || (eq && carry_eq + eq_rank < need_eq);
    }
    if (mark) {  // uniform: no scan below for any thread
      if (b < n && b < a.max_blocks) mark[b] = sel ? 1.0f : 0.0f;
      carry_eq += eq_total;
      continue;
    }
    int pos, sel_total;
    Scan(sm.scan).ExclusiveSum(int(sel), pos, sel_total);
    __syncthreads();
    pos += carry_sel;
    if (sel && pos < size) {
      a.out_indices[out0 + pos] = a.block_table[bt0 + b];
      my_last = b;
    }
    carry_eq += eq_total;
    carry_sel += sel_total;
  }
  if (mark) return;
  // Slots the selection could not fill (sizes inconsistent with the sequence) get -1, which
  // attention skips.
  for (int pos = carry_sel + tid; pos < size; pos += blockDim.x) a.out_indices[out0 + pos] = -1;
  // The list's last entry is the largest block index written.
  atomicMax(&sm.count, my_last);
  __syncthreads();
  if (tid == 0) {
    const int last_b = sm.count;
    int last_len = 0;
    if (last_b >= 0) last_len = last_b == n - 1 ? len - (n - 1) * a.block_size : a.block_size;
    a.out_last_len[li] = max(0, min(last_len, a.block_size));
  }
}

}  // namespace gsa::cuda
