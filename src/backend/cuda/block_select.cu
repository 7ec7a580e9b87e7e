// Launchers and kernels of GSA block selection, two paths over the same device functions
// (block_select.cuh), so both give the same lists:
//  fused (default): one launch, grid (list, CTAs per list). Every CTA scores a share of its
//    list's blocks; with one CTA per list the scores stay in shared memory, otherwise they go
//    to the workspace and the last CTA of the list to arrive (an atomic ticket) runs the top-k,
//    from shared memory when the list has at most kSelectSmemBlocks blocks, else from L2.
//  two-kernel: block_score_kernel (a warp per block, CTAs per sequence) writes every score to
//    the workspace, then block_topk_kernel (a CTA per list) selects. Kept as the reference
//    path and for comparison (CudaBackend::set_select_fused(false)), and the path of calls with
//    oracle sequences, whose scores two more kernels replace by attention mass before the top-k.
// Parameters were validated by CudaBackend, which owns the workspace and the tickets.
#include "backend/cuda/block_select.cuh"
#include "backend/cuda/cuda_launch.h"

namespace gsa::cuda {
namespace {

/// grid (score CTAs per sequence, n_seqs): scores of every non-forced block to the workspace.
template <typename QT>
__global__ void __launch_bounds__(kScoreThreads) block_score_kernel(const SelectArgs a) {
  __shared__ SelectQueries sm_q;
  const int s = blockIdx.y;
  select_load_queries<QT>(a, s, 0, a.n_kv_heads, sm_q);
  const int bt0 = a.bt_indptr[s];
  const int n_all = a.bt_indptr[s + 1] - bt0;
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
  if (first < n) {  // uniform over the CTA; CTAs past the list's end only take their ticket
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

/// Oracle, grid (n_heads, n_seqs): for query head blockIdx.x of an oracle sequence, the softmax
/// mass of every logical block over the whole sequence, to oracle_ws[0][s][h][b]. Each warp
/// takes whole blocks (lanes over tokens): the block's max logit m_b and sum of exp(x - m_b)
/// go to the two halves of the workspace; then the CTA reduces M = max m_b and
/// Z = sum s_b exp(m_b - M) and writes s_b exp(m_b - M) / Z over the first half.
__global__ void __launch_bounds__(kScoreThreads) oracle_mass_kernel(const SelectArgs a) {
  const int s = blockIdx.y, hh = blockIdx.x;
  if (!a.oracle[s]) return;
  __shared__ float q[kMaxSelectHeadDim];
  __shared__ float red[kScoreThreads / 32];
  __shared__ float total_max, total_z;
  const int D = a.head_dim;
  const int kh = hh / a.group;
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
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  for (int b = warp; b < n; b += warps) {
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
  __syncthreads();  // the block's global writes are visible to the whole CTA
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
    m_out[b] = m_out[b] > -INFINITY ? s_out[b] * __expf(m_out[b] - total_max) / total_z : 0.0f;
}

/// Oracle, grid (n_lists): a list's score of block b = the sum of its query heads' masses, in
/// head order (deterministic), over the scores block_score_kernel wrote.
__global__ void __launch_bounds__(kScoreThreads) oracle_scores_kernel(const SelectArgs a) {
  const int li = blockIdx.x;
  const int s = a.per_kv_head ? li / a.n_kv_heads : li;
  if (!a.oracle[s]) return;
  const int h0 = a.per_kv_head ? (li % a.n_kv_heads) * a.group : 0;
  const int h1 = a.per_kv_head ? h0 + a.group : a.n_heads;
  const int n = min(a.bt_indptr[s + 1] - a.bt_indptr[s], a.max_blocks);
  const float* mass = a.oracle_ws + int64_t(s) * a.n_heads * a.max_blocks;
  for (int b = threadIdx.x; b < n; b += blockDim.x) {
    float sum = 0.0f;
    for (int h = h0; h < h1; ++h) sum += mass[int64_t(h) * a.max_blocks + b];
    a.scores[int64_t(li) * a.max_blocks + b] = sum;
  }
}

}  // namespace

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
  a.oracle = p.any_oracle ? p.oracle : nullptr;
  a.k_cache = p.k_cache;
  a.oracle_ws = plan.oracle_ws;
  const int n_lists = p.per_kv_head ? p.n_seqs * p.n_kv_heads : p.n_seqs;
  const unsigned ctas = unsigned(plan.ctas < 1 ? 1 : plan.ctas > 65535 ? 65535 : plan.ctas);
  if (plan.fused && !p.any_oracle) {
    const dim3 grid(unsigned(n_lists), ctas);
    if (p.act_type == DType::BF16)
      block_select_fused_kernel<__nv_bfloat16><<<grid, kTopkThreads, 0, stream>>>(a);
    else
      block_select_fused_kernel<float><<<grid, kTopkThreads, 0, stream>>>(a);
    return cudaGetLastError();
  }
  const dim3 score_grid(ctas, unsigned(p.n_seqs));
  if (p.act_type == DType::BF16)
    block_score_kernel<__nv_bfloat16><<<score_grid, kScoreThreads, 0, stream>>>(a);
  else
    block_score_kernel<float><<<score_grid, kScoreThreads, 0, stream>>>(a);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  if (p.any_oracle) {
    // Oracle sequences: their scores are overwritten by the attention mass before the top-k.
    oracle_mass_kernel<<<dim3(unsigned(p.n_heads), unsigned(p.n_seqs)), kScoreThreads, 0, stream>>>(a);
    if ((err = cudaGetLastError()) != cudaSuccess) return err;
    oracle_scores_kernel<<<unsigned(n_lists), kScoreThreads, 0, stream>>>(a);
    if ((err = cudaGetLastError()) != cudaSuccess) return err;
  }
  block_topk_kernel<<<unsigned(n_lists), kTopkThreads, 0, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace gsa::cuda
