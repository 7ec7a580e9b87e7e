// Launcher of GSA block selection: the scoring kernel over many CTAs per sequence, then the
// per-list top-k kernel (block_select.cuh). Parameters were validated by CudaBackend; the
// scores workspace [n_lists, max_blocks] floats is owned by the caller.
#include "backend/cuda/block_select.cuh"
#include "backend/cuda/cuda_launch.h"

namespace gsa::cuda {

cudaError_t block_select(const backend::BlockSelectParams& p, float* ws_scores, int max_blocks,
                         int score_ctas_per_seq, cudaStream_t stream) {
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
  a.scores = ws_scores;
  a.n_blocks = p.n_blocks;
  a.n_seqs = p.n_seqs;
  a.n_heads = p.n_heads;
  a.n_kv_heads = p.n_kv_heads;
  a.head_dim = p.head_dim;
  a.block_size = p.block_size;
  a.group = p.n_heads / p.n_kv_heads;
  a.sink_blocks = p.sink_blocks;
  a.local_blocks = p.local_blocks;
  a.max_blocks = max_blocks;
  a.kind = int(p.kind);
  a.group_max = p.query_mode == backend::QueryMode::GroupMax;
  a.per_kv_head = p.per_kv_head;
  const dim3 score_grid(unsigned(score_ctas_per_seq < 1 ? 1 : score_ctas_per_seq), unsigned(p.n_seqs));
  if (p.act_type == DType::BF16)
    block_score_kernel<__nv_bfloat16><<<score_grid, kScoreThreads, 0, stream>>>(a);
  else
    block_score_kernel<float><<<score_grid, kScoreThreads, 0, stream>>>(a);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  const int n_lists = p.per_kv_head ? p.n_seqs * p.n_kv_heads : p.n_seqs;
  block_topk_kernel<<<unsigned(n_lists), kTopkThreads, 0, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace gsa::cuda
