// Parameter structs of the GSA ops: block representation update and block selection
// (scoring + top-k + forced blocks -> CSR lists that AttentionParams consumes). The policy
// (budget, gating, select_every, lag) lives in src/sparse; these are the kernels' contracts,
// implemented by cpu/ (the reference) and cuda/.
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace gsa::backend {

/// Block representation kinds (DESIGN.md section 4).
///  Mean:   float[head_dim], mean of the block's post-RoPE keys.
///  MinMax: float[2 * head_dim], per-dimension min then max.
///  Hash:   uint32[block_size * head_dim / 32], per token sign bits of k.W (W: [head_dim,
///          head_dim] fixed, seeded, orthogonal); bit d of token t = (k_t . W[:, d]) > 0.
enum class RepKind : uint8_t { Mean, MinMax, Hash };

/// Bytes of one (block, kv head) representation.
inline int64_t rep_bytes(RepKind kind, int head_dim, int block_size) {
  switch (kind) {
    case RepKind::Mean: return int64_t(head_dim) * 4;
    case RepKind::MinMax: return int64_t(head_dim) * 8;
    case RepKind::Hash: return int64_t(block_size) * head_dim / 8;
  }
  return 0;
}

/// Computes the representation of each listed block (all of whose block_size slots are
/// written) from the K cache, for every kv head. A pure function of the block's keys.
struct RepUpdateParams {
  const void* k_cache = nullptr;    // [n_blocks, n_kv_heads, block_size, head_dim]  kv_type
  void* reps = nullptr;             // [n_blocks, n_kv_heads, rep_bytes]
  const int32_t* blocks = nullptr;  // [n_update] physical block ids
  int n_update = 0;
  int64_t n_blocks = 0;  // blocks in the cache and rep table; > 0 enables bounds checks of ids
  int n_kv_heads = 0, head_dim = 0, block_size = 0;
  RepKind kind = RepKind::Mean;
  const float* hash_w = nullptr;    // [head_dim, head_dim] row-major, Hash only
  DType kv_type = DType::F32;
};

/// How the query heads of one kv-head group become one score.
enum class QueryMode : uint8_t {
  GroupMean,  // average the group's query heads into one query, then score
  GroupMax,   // score each query head, take the max over the group
};

/// Block selection for a batch of decode queries (one query token per sequence).
/// Sequence s has n_blocks_s = block_table_indptr[s+1] - block_table_indptr[s] blocks in logical
/// order and seq_len[s] tokens; its last block is full or partial. Forced blocks: the first
/// sink_blocks and the last local_blocks (the partial last block is always among them). The
/// remaining slots of each list are filled with the highest-scoring other FULL blocks (ties
/// broken towards the lower logical index). Scores: Mean -> q.mean; MinMax -> sum_d
/// max(q_d*min_d, q_d*max_d); Hash -> max over the block's tokens of the number of equal sign
/// bits between q.W and k.W. per_kv_head = false: a block's score is the sum over kv heads,
/// one list per sequence; true: one list per (sequence, kv head).
/// The host presets out_indptr (list i has size min(budget_i, n_blocks_s), at least the forced
/// count) so the op needs no host synchronization; it writes out_indices sorted by logical
/// index (as physical ids) and out_last_len (tokens in the list's last block).
struct BlockSelectParams {
  const void* q = nullptr;                    // [n_seqs, n_heads, head_dim]  act_type
  const void* reps = nullptr;                 // [n_blocks, n_kv_heads, rep_bytes]
  const int32_t* block_table_indptr = nullptr;// [n_seqs + 1]
  const int32_t* block_table = nullptr;       // [block_table_indptr[n_seqs]] physical ids
  const int32_t* seq_len = nullptr;           // [n_seqs]
  const int32_t* out_indptr = nullptr;        // [n_lists + 1], n_lists = n_seqs (* n_kv_heads)
  int32_t* out_indices = nullptr;             // [out_indptr[n_lists]]
  int32_t* out_last_len = nullptr;            // [n_lists]
  int n_seqs = 0;
  int64_t n_blocks = 0;  // blocks in the rep table; > 0 enables bounds checks of block ids
  int n_heads = 0, n_kv_heads = 0, head_dim = 0, block_size = 0;
  int sink_blocks = 1, local_blocks = 2;
  RepKind kind = RepKind::Mean;
  QueryMode query_mode = QueryMode::GroupMean;
  bool per_kv_head = false;
  const float* hash_w = nullptr;              // [head_dim, head_dim], Hash only
  DType act_type = DType::F32;
};

}  // namespace gsa::backend
