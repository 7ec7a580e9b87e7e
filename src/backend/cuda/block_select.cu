// Launchers and kernels of GSA block selection, two paths over the same device functions
// (block_select.cuh), so both give the same lists:
//  fused (default): one launch, grid (list, CTAs per list). Every CTA scores a share of its
//    list's blocks; with one CTA per list the scores stay in shared memory, otherwise they go
//    to the workspace and the last CTA of the list to arrive (an atomic ticket) runs the top-k,
//    from shared memory when the list has at most kSelectSmemBlocks blocks, else from L2.
//  two-kernel: block_score_kernel (a warp per block, CTAs per sequence) writes every score to
//    the workspace, then block_topk_kernel (a CTA per list) selects. Kept as the reference
//    path and for comparison (CudaBackend::set_select_fused(false)), and the path of calls with
//    Oracle or Mass sequences, whose scores are replaced by (true or estimated)
//    attention masses before the top-k: per-row block logits (oracle_logits_kernel from the
//    keys, bound_logits_kernel from the representations), a softmax per row
//    (mass_normalize_kernel), and the sum over each list's rows (mass_scores_kernel).
// Parameters were validated by CudaBackend, which owns the workspace and the tickets.
#include <algorithm>

#include "backend/cuda/block_select.cuh"
#include "backend/cuda/cuda_launch.h"

namespace gsa::cuda {
namespace {

/// grid (score CTAs per sequence, n_seqs): scores of every non-forced block to the workspace.
template <typename QT>
__global__ void __launch_bounds__(kScoreThreads) block_score_kernel(const SelectArgs a) {
  __shared__ SelectQueries sm_q;
  const int s = blockIdx.y;
  // Mass / Oracle: scored by their own kernels (uniform); Rerank's candidates by these scores.
  if (a.rank && (a.rank[s] == kRankMass || a.rank[s] == kRankOracle)) return;
  const int bt0 = a.bt_indptr[s];
  const int n_all = a.bt_indptr[s + 1] - bt0;
  const int li0 = a.per_kv_head ? s * a.n_kv_heads : s;
  if (a.out_indptr[li0 + 1] - a.out_indptr[li0] >= n_all) return;  // takes every block: no scores
  select_load_queries<QT>(a, s, 0, a.n_kv_heads, sm_q);
  const int n = min(n_all, a.max_blocks);
  const int len = a.seq_len[s];
  const int lane = threadIdx.x & 31;
  const int warps_total = gridDim.x * (blockDim.x / 32);
  const int q_per_kv = a.group_max ? a.group : 1;
  for (int b = blockIdx.x * (blockDim.x / 32) + (threadIdx.x >> 5); b < n; b += warps_total) {
    // Forced is decided on the full length, as in the top-k (blocks past max_blocks unscored).
    if (select_forced(a, b, n_all, len)) continue;
    bool ok;
    const int phys = select_phys(a, bt0, b, &ok);
    if (a.per_kv_head) {
      for (int h = 0; h < a.n_kv_heads; ++h) {
        const float sc = select_head_score(a, sm_q, phys, ok, h, h * q_per_kv, lane);
        if (lane == 0) a.scores[(int64_t(s) * a.n_kv_heads + h) * a.max_blocks + b] = sc;
      }
    } else {
      const float sc = select_list_score(a, sm_q, phys, ok, 0, lane);
      if (lane == 0) a.scores[int64_t(s) * a.max_blocks + b] = sc;
    }
  }
}

/// grid (n_lists): top-k of each list from the workspace.
__global__ void __launch_bounds__(kTopkThreads) block_topk_kernel(const SelectArgs a) {
  __shared__ SelectTopkSmem sm;
  select_topk<false>(a, blockIdx.x, a.scores + int64_t(blockIdx.x) * a.max_blocks, sm);
}

/// grid (n_lists, CTAs per list), kTopkThreads threads: scoring and top-k in one launch.
template <typename QT>
__global__ void __launch_bounds__(kTopkThreads) block_select_fused_kernel(const SelectArgs a) {
  __shared__ SelectQueries sm_q;
  __shared__ SelectTopkSmem sm_topk;
  __shared__ float sm_scores[kSelectSmemBlocks];  // [n] the list's scores
  __shared__ int sm_last;
  const int li = blockIdx.x;
  const int s = a.per_kv_head ? li / a.n_kv_heads : li;
  const int h = a.per_kv_head ? li % a.n_kv_heads : 0;
  const int bt0 = a.bt_indptr[s];
  const int n_all = a.bt_indptr[s + 1] - bt0;
  const int n = min(n_all, a.max_blocks);
  const int len = a.seq_len[s];
  const int warps = blockDim.x / 32;
  const int first = blockIdx.y * warps;
  // One CTA for the list and the scores fit: they never leave shared memory.
  const bool solo = gridDim.y == 1 && n <= kSelectSmemBlocks;
  float* const ws = a.scores + int64_t(li) * a.max_blocks;
  float* const dst = solo ? sm_scores : ws;
  // Uniform over the CTA; CTAs past the list's end, or of a list that takes every block (a dense
  // sequence), only take their ticket.
  if (first < n && a.out_indptr[li + 1] - a.out_indptr[li] < n_all) {
    if (a.per_kv_head)
      select_load_queries<QT>(a, s, h, h + 1, sm_q);
    else
      select_load_queries<QT>(a, s, 0, a.n_kv_heads, sm_q);
    const int lane = threadIdx.x & 31;
    for (int b = first + (threadIdx.x >> 5); b < n; b += gridDim.y * warps) {
      if (select_forced(a, b, n_all, len)) continue;
      bool ok;
      const int phys = select_phys(a, bt0, b, &ok);
      const float sc = select_list_score(a, sm_q, phys, ok, h, lane);
      if (lane == 0) dst[b] = sc;
    }
  }
  if (solo) {
    __syncthreads();
    select_topk<true>(a, li, sm_scores, sm_topk);
    return;
  }
  // Release this CTA's scores, then take a ticket; atomicInc wraps the counter back to 0 at
  // the last arrival, so the tickets are zero again for the next call (CUDA-graph safe).
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) sm_last = atomicInc(a.tickets + li, gridDim.y - 1) == gridDim.y - 1 ? 1 : 0;
  __syncthreads();
  if (sm_last == 0) return;
  __threadfence();  // acquire: every other CTA's scores are visible to the L2 loads below
  if (n <= kSelectSmemBlocks) {
    for (int b = threadIdx.x; b < n; b += blockDim.x) sm_scores[b] = __ldcg(ws + b);
    __syncthreads();
    select_topk<true>(a, li, sm_scores, sm_topk);
  } else {
    select_topk<false>(a, li, ws, sm_topk);
  }
}

/// grid (n_lists): the candidates of each list of a Rerank sequence, from its scores: the scores
/// become 1 (a candidate or a forced block) or 0.
__global__ void __launch_bounds__(kTopkThreads) rerank_mark_kernel(const SelectArgs a) {
  __shared__ SelectTopkSmem sm;
  const int li = blockIdx.x;
  const int s = a.per_kv_head ? li / a.n_kv_heads : li;
  if (!a.rank || a.rank[s] != kRankRerank) return;
  float* const ws = a.scores + int64_t(li) * a.max_blocks;
  select_topk<false>(a, li, ws, sm, ws);
}

/// Rows of the mass workspace a sequence uses: every query head for an oracle or rerank sequence, else
/// its scoring queries for a Mass sequence; 0 for a Score sequence.
__device__ __forceinline__ int mass_rows(const SelectArgs& a, int s) {
  const uint8_t r = a.rank ? a.rank[s] : 0;
  if (r == kRankOracle || r == kRankRerank) return a.n_heads;
  if (r != kRankMass) return 0;
  return a.group_max ? a.n_heads : a.n_kv_heads;
}

/// Oracle, grid (n_heads, n_seqs, CTAs per head): for query head blockIdx.x of an oracle
/// sequence, each logical block's max logit m_b and sum of exp(x - m_b) over its tokens, to the
/// two planes of the mass workspace (mass_normalize_kernel turns them into masses). Each warp
/// takes whole blocks (lanes over tokens). A Rerank sequence: only the blocks its list marked
/// (rerank_mark_kernel); the others get m_b = -inf, s_b = 0.
__global__ void __launch_bounds__(kScoreThreads) oracle_logits_kernel(const SelectArgs a) {
  const int s = blockIdx.y, hh = blockIdx.x;
  // Rerank sequences here only where rerank_logits_kernel cannot take them (rerank_fast).
  if (!a.rank || (a.rank[s] != kRankOracle && (a.rank[s] != kRankRerank || a.rerank_fast))) return;
  const bool rerank = a.rank[s] == kRankRerank;
  __shared__ float q[kMaxSelectHeadDim];
  const int D = a.head_dim;
  const int kh = hh / a.group;
  const float* const marks = a.scores + int64_t(a.per_kv_head ? s * a.n_kv_heads + kh : s) * a.max_blocks;
  for (int d = threadIdx.x; d < D; d += blockDim.x)
    q[d] = load_f32(static_cast<const __nv_bfloat16*>(a.q), (int64_t(s) * a.n_heads + hh) * D + d);
  __syncthreads();
  const int bt0 = a.bt_indptr[s];
  const int n = min(a.bt_indptr[s + 1] - bt0, a.max_blocks);
  const int len = a.seq_len[s];
  const float scale = rsqrtf(float(D));
  const int64_t plane = int64_t(a.n_seqs) * a.n_heads * a.max_blocks;
  float* const m_out = a.oracle_ws + (int64_t(s) * a.n_heads + hh) * a.max_blocks;
  float* const s_out = m_out + plane;
  const auto* K = static_cast<const __nv_bfloat16*>(a.k_cache);
  const int lane = threadIdx.x & 31, warps = blockDim.x >> 5;
  for (int b = blockIdx.z * warps + (threadIdx.x >> 5); b < n; b += gridDim.z * warps) {
    if (rerank && !(marks[b] > 0.5f)) {  // uniform over the warp
      if (lane == 0) {
        m_out[b] = -INFINITY;
        s_out[b] = 0.0f;
      }
      continue;
    }
    bool ok;
    const int phys = select_phys(a, bt0, b, &ok);
    const int tokens = ok ? min(a.block_size, len - b * a.block_size) : 0;
    const int64_t base = (int64_t(phys) * a.n_kv_heads + kh) * a.block_size;
    float mx = -INFINITY;
    for (int t = lane; t < tokens; t += 32) {
      float dot = 0.0f;
      for (int d = 0; d < D; ++d) dot += q[d] * load_f32(K, (base + t) * D + d);
      mx = fmaxf(mx, dot * scale);
    }
    mx = warp_max(mx);
    float sum = 0.0f;
    for (int t = lane; t < tokens; t += 32) {
      float dot = 0.0f;
      for (int d = 0; d < D; ++d) dot += q[d] * load_f32(K, (base + t) * D + d);
      sum += __expf(dot * scale - mx);
    }
    sum = warp_sum(sum);
    if (lane == 0) {
      m_out[b] = mx;
      s_out[b] = sum;
    }
  }
}

/// Rerank, grid (n_kv_heads, n_seqs, CTAs per kv head): oracle_logits_kernel's (m_b, s_b) for
/// every query head of kv head blockIdx.x, but only over the blocks the sequence's list marked
/// (the others get -inf, 0), each key read from memory once for all the group's heads (the
/// group's queries in shared memory, the key row through L1), and one online pass per head.
/// A warp per block, lanes over tokens; head_dim a multiple of 8, at most kMaxSelectHeadDim.
__global__ void __launch_bounds__(kScoreThreads) rerank_logits_kernel(const SelectArgs a) {
  const int s = blockIdx.y, kh = blockIdx.x;
  if (!a.rank || a.rank[s] != kRankRerank) return;
  __shared__ float q[kMaxScoreQueries][kMaxSelectHeadDim];
  const int D = a.head_dim, G = a.group;
  for (int i = threadIdx.x; i < G * D; i += blockDim.x)
    q[i / D][i % D] = load_f32(static_cast<const __nv_bfloat16*>(a.q), (int64_t(s) * a.n_heads + kh * G) * D + i);
  __syncthreads();
  const float* const marks = a.scores + int64_t(a.per_kv_head ? s * a.n_kv_heads + kh : s) * a.max_blocks;
  const int bt0 = a.bt_indptr[s];
  const int n = min(a.bt_indptr[s + 1] - bt0, a.max_blocks);
  const int len = a.seq_len[s];
  const float scale = rsqrtf(float(D));
  const int64_t plane = int64_t(a.n_seqs) * a.n_heads * a.max_blocks;
  float* const m_base = a.oracle_ws + (int64_t(s) * a.n_heads + kh * G) * a.max_blocks;
  const auto* K = static_cast<const __nv_bfloat16*>(a.k_cache);
  const int lane = threadIdx.x & 31, warps = blockDim.x >> 5;
  for (int b = blockIdx.z * warps + (threadIdx.x >> 5); b < n; b += gridDim.z * warps) {
    bool ok;
    const int phys = select_phys(a, bt0, b, &ok);
    const bool marked = marks[b] > 0.5f;  // uniform over the warp
    const int tokens = marked && ok ? min(a.block_size, len - b * a.block_size) : 0;
    const __nv_bfloat16* const kb = K + (int64_t(phys) * a.n_kv_heads + kh) * a.block_size * D;
    for (int g = 0; g < G; ++g) {
      float mx = -INFINITY, sum = 0.0f;
      for (int t = lane; t < tokens; t += 32) {
        const uint4* row = reinterpret_cast<const uint4*>(kb + int64_t(t) * D);
        float dot = 0.0f;
        for (int d8 = 0; d8 < D / 8; ++d8) {
          const uint4 v = __ldg(row + d8);
          const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&v);
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            const float2 f = __bfloat1622float2(h[j]);
            dot += q[g][d8 * 8 + 2 * j] * f.x + q[g][d8 * 8 + 2 * j + 1] * f.y;
          }
        }
        const float x = dot * scale;
        if (x > mx) {
          sum = sum * __expf(mx - x) + 1.0f;
          mx = x;
        } else {
          sum += __expf(x - mx);
        }
      }
      const float m_all = warp_max(mx);
      const float s_all = warp_sum(mx > -INFINITY ? sum * __expf(mx - m_all) : 0.0f);
      if (lane == 0) {
        m_base[int64_t(g) * a.max_blocks + b] = tokens > 0 ? m_all : -INFINITY;
        m_base[plane + int64_t(g) * a.max_blocks + b] = tokens > 0 ? s_all : 0.0f;
      }
    }
  }
}

/// Mass sequences, grid (score CTAs per sequence, n_seqs): for every full block and scoring
/// query row, m_b = log-sum-exp over sub-blocks of scale * score and s_b = 1
/// (m_b = -inf for the partial last block), in the oracle's workspace layout.
template <typename QT>
__global__ void __launch_bounds__(kScoreThreads) bound_logits_kernel(const SelectArgs a) {
  const int s = blockIdx.y;
  if (!a.rank || a.rank[s] != kRankMass) return;  // uniform over the CTA
  __shared__ SelectQueries sm_q;
  select_load_queries<QT>(a, s, 0, a.n_kv_heads, sm_q);
  const int bt0 = a.bt_indptr[s];
  const int n = min(a.bt_indptr[s + 1] - bt0, a.max_blocks);
  const int len = a.seq_len[s];
  const int lane = threadIdx.x & 31;
  const int q_per_kv = a.group_max ? a.group : 1;
  const int rows = a.n_kv_heads * q_per_kv;
  const float scale = rsqrtf(float(a.head_dim));
  const int64_t plane = int64_t(a.n_seqs) * a.n_heads * a.max_blocks;
  float* const m_out = a.oracle_ws + int64_t(s) * a.n_heads * a.max_blocks;
  const int warps_total = gridDim.x * (blockDim.x / 32);
  for (int b = blockIdx.x * (blockDim.x / 32) + (threadIdx.x >> 5); b < n; b += warps_total) {
    bool ok;
    const int phys = select_phys(a, bt0, b, &ok);
    ok = ok && int64_t(b + 1) * a.block_size <= len;
    for (int r = 0; r < rows; ++r) {
      const float v = ok ? select_row_log_mass(a, sm_q, phys, r / q_per_kv, r, scale, lane) : -INFINITY;
      if (lane == 0) {
        m_out[int64_t(r) * a.max_blocks + b] = v != v ? -INFINITY : v;
        m_out[plane + int64_t(r) * a.max_blocks + b] = 1.0f;
      }
    }
  }
}

/// grid (n_heads, n_seqs): row blockIdx.x of a sequence with mass rows: M = max m_b and
/// Z = sum s_b exp(m_b - M) over the sequence's blocks, then s_b exp(m_b - M) / Z over the
/// first plane (0 for m_b = -inf).
__global__ void __launch_bounds__(kScoreThreads) mass_normalize_kernel(const SelectArgs a) {
  const int s = blockIdx.y, r = blockIdx.x;
  if (r >= mass_rows(a, s)) return;
  __shared__ float red[kScoreThreads / 32];
  __shared__ float total_max, total_z;
  const int n = min(a.bt_indptr[s + 1] - a.bt_indptr[s], a.max_blocks);
  const int64_t plane = int64_t(a.n_seqs) * a.n_heads * a.max_blocks;
  float* const m_out = a.oracle_ws + (int64_t(s) * a.n_heads + r) * a.max_blocks;
  const float* const s_out = m_out + plane;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  float mx = -INFINITY;
  for (int b = threadIdx.x; b < n; b += blockDim.x) mx = fmaxf(mx, m_out[b]);
  mx = warp_max(mx);
  if (lane == 0) red[warp] = mx;
  __syncthreads();
  if (threadIdx.x == 0) {
    float m = -INFINITY;
    for (int w = 0; w < warps; ++w) m = fmaxf(m, red[w]);
    total_max = m;
  }
  __syncthreads();
  float z = 0.0f;
  if (total_max > -INFINITY)
    for (int b = threadIdx.x; b < n; b += blockDim.x)
      if (m_out[b] > -INFINITY) z += s_out[b] * __expf(m_out[b] - total_max);
  z = warp_sum(z);
  __syncthreads();
  if (lane == 0) red[warp] = z;
  __syncthreads();
  if (threadIdx.x == 0) {
    float t = 0.0f;
    for (int w = 0; w < warps; ++w) t += red[w];
    total_z = t;
  }
  __syncthreads();
  for (int b = threadIdx.x; b < n; b += blockDim.x)
    m_out[b] = m_out[b] > -INFINITY && total_z > 0.0f ? s_out[b] * __expf(m_out[b] - total_max) / total_z : 0.0f;
}

/// grid (n_lists): a list's score of block b = the sum of its rows' masses, in row order
/// (deterministic): the query heads of its kv head (or all) for an oracle sequence, its scoring
/// queries for a Mass sequence.
__global__ void __launch_bounds__(kScoreThreads) mass_scores_kernel(const SelectArgs a) {
  const int li = blockIdx.x;
  const int s = a.per_kv_head ? li / a.n_kv_heads : li;
  const int rows = mass_rows(a, s);
  if (rows == 0) return;
  const int per_kv = rows / a.n_kv_heads;
  const int r0 = a.per_kv_head ? (li % a.n_kv_heads) * per_kv : 0;
  const int r1 = a.per_kv_head ? r0 + per_kv : rows;
  const int n = min(a.bt_indptr[s + 1] - a.bt_indptr[s], a.max_blocks);
  const float* mass = a.oracle_ws + int64_t(s) * a.n_heads * a.max_blocks;
  for (int b = threadIdx.x; b < n; b += blockDim.x) {
    float sum = 0.0f;
    for (int r = r0; r < r1; ++r) sum += mass[int64_t(r) * a.max_blocks + b];
    a.scores[int64_t(li) * a.max_blocks + b] = sum;
  }
}

}  // namespace

int select_fused_resident_per_sm() {
  int n = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, block_select_fused_kernel<__nv_bfloat16>, kTopkThreads, 0) !=
      cudaSuccess)
    return 1;
  return n < 1 ? 1 : n;
}

cudaError_t block_select(const backend::BlockSelectParams& p, const SelectPlan& plan, cudaStream_t stream) {
  if (p.n_seqs == 0) return cudaSuccess;
  SelectArgs a{};
  a.q = p.q;
  a.reps = p.reps;
  a.bt_indptr = p.block_table_indptr;
  a.block_table = p.block_table;
  a.seq_len = p.seq_len;
  a.out_indptr = p.out_indptr;
  a.out_indices = p.out_indices;
  a.out_last_len = p.out_last_len;
  a.hash_w = p.hash_w;
  a.scores = plan.scores;
  a.tickets = plan.tickets;
  a.n_blocks = p.n_blocks;
  a.n_seqs = p.n_seqs;
  a.n_heads = p.n_heads;
  a.n_kv_heads = p.n_kv_heads;
  a.head_dim = p.head_dim;
  a.block_size = p.block_size;
  a.group = p.n_heads / p.n_kv_heads;
  a.sink_blocks = p.sink_blocks;
  a.local_blocks = p.local_blocks;
  a.max_blocks = plan.max_blocks;
  a.kind = int(p.kind);
  a.boxes = backend::rep_boxes(p.kind, p.block_size, p.sub_block);
  a.group_max = p.query_mode == backend::QueryMode::GroupMax;
  a.per_kv_head = p.per_kv_head;
  a.rerank_factor = p.rerank_factor;
  a.rerank_fast = p.head_dim % 8 == 0 && p.head_dim <= kMaxSelectHeadDim && p.n_heads / p.n_kv_heads <= kMaxScoreQueries;
  a.quant_mma = plan.quant_mma;
  a.rank = p.any_oracle || p.any_mass ? p.rank : nullptr;
  a.k_cache = p.k_cache;
  a.oracle_ws = plan.oracle_ws;
  const int n_lists = p.per_kv_head ? p.n_seqs * p.n_kv_heads : p.n_seqs;
  const unsigned ctas = unsigned(plan.ctas < 1 ? 1 : plan.ctas > 65535 ? 65535 : plan.ctas);
  if (plan.fused && !p.any_oracle && !p.any_mass) {
    const dim3 grid(unsigned(n_lists), ctas);
    if (p.act_type == DType::BF16)
      block_select_fused_kernel<__nv_bfloat16><<<grid, kTopkThreads, 0, stream>>>(a);
    else
      block_select_fused_kernel<float><<<grid, kTopkThreads, 0, stream>>>(a);
    return cudaGetLastError();
  }
  const dim3 score_grid(ctas, unsigned(p.n_seqs));
  const bool bf16 = p.act_type == DType::BF16;
  // Score sequences; Mass and Oracle sequences get their scores from the kernels below.
  if (bf16)
    block_score_kernel<__nv_bfloat16><<<score_grid, kScoreThreads, 0, stream>>>(a);
  else
    block_score_kernel<float><<<score_grid, kScoreThreads, 0, stream>>>(a);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  if (p.any_mass) {
    if (bf16)
      bound_logits_kernel<__nv_bfloat16><<<score_grid, kScoreThreads, 0, stream>>>(a);
    else
      bound_logits_kernel<float><<<score_grid, kScoreThreads, 0, stream>>>(a);
    if ((err = cudaGetLastError()) != cudaSuccess) return err;
  }
  if (p.any_oracle) {
    // Rerank sequences: their candidates from the scores above.
    rerank_mark_kernel<<<unsigned(n_lists), kTopkThreads, 0, stream>>>(a);
    if ((err = cudaGetLastError()) != cudaSuccess) return err;
    // Oracle and Rerank sequences: per-head block logits over the keys, spread over about 2 CTAs per SM.
    const unsigned per_head = unsigned(std::max<int64_t>(1, std::min<int64_t>(
        plan.ctas * int64_t(p.n_seqs) / std::max(1, p.n_heads * p.n_seqs) + 1, 65535)));
    oracle_logits_kernel<<<dim3(unsigned(p.n_heads), unsigned(p.n_seqs), per_head), kScoreThreads, 0, stream>>>(a);
    if ((err = cudaGetLastError()) != cudaSuccess) return err;
    if (a.rerank_fast) {
      const unsigned per_kv = unsigned(std::max<int64_t>(1, std::min<int64_t>(
          plan.ctas * int64_t(p.n_seqs) / std::max(1, p.n_kv_heads * p.n_seqs) + 1, 65535)));
      rerank_logits_kernel<<<dim3(unsigned(p.n_kv_heads), unsigned(p.n_seqs), per_kv), kScoreThreads, 0, stream>>>(a);
      if ((err = cudaGetLastError()) != cudaSuccess) return err;
    }
  }
  if (p.any_oracle || p.any_mass) {
    // Oracle and Mass sequences: masses replace the scores before the top-k.
    mass_normalize_kernel<<<dim3(unsigned(p.n_heads), unsigned(p.n_seqs)), kScoreThreads, 0, stream>>>(a);
    if ((err = cudaGetLastError()) != cudaSuccess) return err;
    mass_scores_kernel<<<unsigned(n_lists), kScoreThreads, 0, stream>>>(a);
    if ((err = cudaGetLastError()) != cudaSuccess) return err;
  }
  block_topk_kernel<<<unsigned(n_lists), kTopkThreads, 0, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace gsa::cuda
