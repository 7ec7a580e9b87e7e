// Launchers and kernels of GSA block selection, two paths over the same device functions
// (block_select.cuh), so both give the same lists:
//  fused (default): one launch, grid (list, CTAs per list). Every CTA scores a share of its
//    list's blocks; with one CTA per list the scores stay in shared memory, otherwise they go
//    to the workspace and the last CTA of the list to arrive (an atomic ticket) runs the top-k,
//    from shared memory when the list has at most kSelectSmemBlocks blocks, else from L2.
//  two-kernel: block_score_kernel (a warp per block, CTAs per sequence) writes every score to
//    the workspace, then block_topk_kernel (a CTA per list) selects. Kept as the reference
//    path and for comparison (CudaBackend::set_select_fused(false)).
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
  a.group_max = p.query_mode == backend::QueryMode::GroupMax;
  a.per_kv_head = p.per_kv_head;
  const int n_lists = p.per_kv_head ? p.n_seqs * p.n_kv_heads : p.n_seqs;
  const unsigned ctas = unsigned(plan.ctas < 1 ? 1 : plan.ctas > 65535 ? 65535 : plan.ctas);
  if (plan.fused) {
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
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  block_topk_kernel<<<unsigned(n_lists), kTopkThreads, 0, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace gsa::cuda
