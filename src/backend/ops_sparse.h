// Parameter structs of the GSA ops: block representation update, the fused RoPE + KV append +
// representation update, and block selection (scoring + top-k + forced blocks -> CSR lists that
// AttentionParams consumes). The policy (budget, gating, select_every, lag) lives in src/sparse;
// these are the kernels' contracts, implemented by cpu/ (the reference) and cuda/.
#pragma once

#include <cstdint>

#include "backend/ops.h"
#include "core/dtype.h"

namespace gsa::backend {

/// Block representation kinds (DESIGN.md section 4).
///  Mean:   float[head_dim], mean of the block's post-RoPE keys.
///  MinMax: float[2 * head_dim], per-dimension min then max.
///  Hash:   uint32[block_size * head_dim / 32], per token sign bits of k.W (W: [head_dim,
///          head_dim] fixed, seeded, orthogonal); bit d of token t = (k_t . W[:, d]) > 0.
///  Quant:  the MinMax box (float mn[head_dim], mx[head_dim]) followed by every token's keys
///          quantized to 2 bits per dimension inside it: uint32 codes[block_size][head_dim / 16],
///          dimension d of token t in word d / 16 at bits 2 * (d % 16). Code c of a dimension
///          with range r = mx - mn is min(3, floor(4 * (k - mn) / r)) (0 when r = 0); it stands
///          for the key value mn + (c + 0.5) * r / 4 (the centre of its bin), at most r / 8
///          from the true one. A block is then scored token by token: about 8% of its K/V bytes in bf16.
///          q.k' = base + sum_d a_d c_d with base = sum_d q_d (mn_d + r_d / 8) and a_d = q_d r_d / 4;
///          every backend scores with a_d rounded to 8 bits per (query, block, kv head):
///          quant_query_scale and quant_query_code below, so q.k' = base + s * sum_d a8_d c_d
///          with an exact integer sum.
/// Mean and MinMax may be kept per sub-block (sub_block tokens, a divisor of block_size; 0: the
/// whole block): the block's representation is then [block_size / sub_block] of them, one per
/// run of sub_block tokens, and a block scores the best of its sub-blocks. The block stays the
/// unit of selection and of attention; only its description is finer.
enum class RepKind : uint8_t { Mean, MinMax, Hash, Quant };

/// Quant: code of key value k in [mn, mx] (the same float operations on every backend).
inline int quant_key_code(float k, float mn, float mx) {
  const float r = mx - mn;
  if (!(r > 0.0f)) return 0;
  const float t = ((k - mn) / r) * 4.0f;
  return t >= 3.0f ? 3 : t > 0.0f ? int(t) : 0;
}

/// Quant scoring: the scale s of a query's factors a_d over one (block, kv head), max |a_d| / 127
/// (0 when every a_d is 0), and a_d's 8-bit factor, round(a_d * 127 / max |a_d|) in [-127, 127]
/// (round half to even; 0 when s = 0). The same float operations on every backend.
inline float quant_query_scale(float max_abs) { return max_abs / 127.0f; }
inline float quant_query_inv(float max_abs) { return max_abs > 0.0f ? 127.0f / max_abs : 0.0f; }

/// Representations per block: block_size / sub_block for Mean and MinMax, else 1.
inline int rep_boxes(RepKind kind, int block_size, int sub_block) {
  return (kind == RepKind::Mean || kind == RepKind::MinMax) && sub_block > 0 && sub_block < block_size
             ? block_size / sub_block
             : 1;
}

/// Bytes of one (block, kv head) representation.
inline int64_t rep_bytes(RepKind kind, int head_dim, int block_size, int sub_block = 0) {
  const int64_t boxes = rep_boxes(kind, block_size, sub_block);
  switch (kind) {
    case RepKind::Mean: return boxes * head_dim * 4;
    case RepKind::MinMax: return boxes * head_dim * 8;
    case RepKind::Hash: return int64_t(block_size) * head_dim / 8;
    case RepKind::Quant: return int64_t(head_dim) * 8 + int64_t(block_size) * head_dim / 4;
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
  int sub_block = 0;                // tokens per Mean/MinMax sub-block (0: the whole block)
  const float* hash_w = nullptr;    // [head_dim, head_dim] row-major, Hash only
  DType kv_type = DType::F32;
};

/// The KV write of one layer in one op: exactly rope(q); rope(k); kv_append(k, v); and, when
/// reps is not null and n_full > 0, rep_update(full_blocks), in that order (see RopeParams,
/// KvAppendParams, RepUpdateParams; split_rope_append gives the four). q and k are rotated in
/// place and stay rotated. A backend may run it as one kernel; the result is the same.
/// one_token_per_seq: the caller states that no two tokens of this call write to the same KV
/// block (true for a decode batch, n_tokens == n_seqs, since a sequence's blocks are its own).
/// It only permits the fused kernel; false (or an unsupported shape) runs the four ops.
struct RopeAppendParams {
  void* q = nullptr;                      // [n_tokens, n_heads, head_dim]  act_type, in place
  void* k = nullptr;                      // [n_tokens, n_kv_heads, head_dim]  act_type, in place
  const void* v = nullptr;                // [n_tokens, n_kv_heads, head_dim]  act_type
  const int32_t* pos = nullptr;           // [n_tokens]
  const int32_t* slot_mapping = nullptr;  // [n_tokens]
  void* k_cache = nullptr;                // [n_blocks, n_kv_heads, block_size, head_dim]  kv_type
  void* v_cache = nullptr;                // [n_blocks, n_kv_heads, block_size, head_dim]  kv_type
  void* reps = nullptr;                   // [n_blocks, n_kv_heads, rep_bytes] or null: no update
  const int32_t* full_blocks = nullptr;   // [n_full] physical ids of blocks full after this call
  const float* hash_w = nullptr;          // [head_dim, head_dim] row-major, Hash only
  int64_t n_tokens = 0;
  int64_t n_blocks = 0;  // blocks in the caches and rep table; > 0 enables bounds checks
  int n_full = 0;
  int n_heads = 0, n_kv_heads = 0, head_dim = 0, rot_dim = 0, block_size = 0;
  float theta = 10000.0f;
  bool neox = false;
  bool one_token_per_seq = false;
  RepKind kind = RepKind::Mean;
  int sub_block = 0;                      // as RepUpdateParams::sub_block
  DType act_type = DType::F32;
  DType kv_type = DType::F32;
  // Strided inputs (rows of a fused q|k|v projection): elements from one token's q, k, v to the
  // next (0: contiguous), and q_out ([n_tokens, n_heads, head_dim], contiguous) for the rotated
  // queries, q then only read. Only where Backend::supports_strided_rope_append says so.
  void* q_out = nullptr;
  int64_t q_stride = 0, k_stride = 0, v_stride = 0;
  bool strided() const { return q_out || q_stride || k_stride || v_stride; }
};

/// The four ops RopeAppendParams stands for; `update` is false when no rep_update runs.
struct RopeAppendSteps {
  RopeParams rope_q, rope_k;
  KvAppendParams append;
  RepUpdateParams rep;
  bool update = false;
};

inline RopeAppendSteps split_rope_append(const RopeAppendParams& p) {
  RopeAppendSteps s;
  s.rope_q = {p.q, p.pos, p.n_tokens, p.n_heads, p.head_dim, p.rot_dim, p.theta, p.neox, p.act_type};
  s.rope_k = s.rope_q;
  s.rope_k.x = p.k;
  s.rope_k.n_heads = p.n_kv_heads;
  s.append = {p.k, p.v, p.k_cache, p.v_cache, p.slot_mapping, p.n_tokens, p.n_blocks,
              p.n_kv_heads, p.head_dim, p.block_size, p.act_type, p.kv_type};
  s.rep.k_cache = p.k_cache;
  s.rep.reps = p.reps;
  s.rep.blocks = p.full_blocks;
  s.rep.n_update = p.n_full;
  s.rep.n_blocks = p.n_blocks;
  s.rep.n_kv_heads = p.n_kv_heads;
  s.rep.head_dim = p.head_dim;
  s.rep.block_size = p.block_size;
  s.rep.kind = p.kind;
  s.rep.sub_block = p.sub_block;
  s.rep.hash_w = p.hash_w;
  s.rep.kv_type = p.kv_type;
  s.update = p.reps != nullptr && p.n_full != 0;
  return s;
}

/// How the query heads of one kv-head group become one score.
enum class QueryMode : uint8_t {
  GroupMean,  // average the group's query heads into one query, then score
  GroupMax,   // score each query head, take the max over the group
};

/// How block_select ranks a sequence's blocks (BlockSelectParams::rank).
enum class Rank : uint8_t { Score = 0, Mass = 1, Oracle = 2, Rerank = 3 };

/// Block selection for a batch of decode queries (one query token per sequence).
/// Sequence s has n_blocks_s = block_table_indptr[s+1] - block_table_indptr[s] blocks in logical
/// order and seq_len[s] tokens; its last block is full or partial. Forced blocks: the first
/// sink_blocks and the last local_blocks (the partial last block is always among them). The
/// remaining slots of each list are filled with the highest-scoring other FULL blocks (ties
/// broken towards the lower logical index). Scores: Mean -> q.mean; MinMax -> sum_d
/// max(q_d*min_d, q_d*max_d); Hash -> max over the block's tokens of the number of equal sign
/// bits between q.W and k.W; Quant -> max over the block's tokens of q.k' (k' the dequantized
/// key); with sub-blocks, the best sub-block's score (per kv head and query,
/// before the sums and maxima below). per_kv_head = false: a block's score is the sum over kv heads,
/// one list per sequence; true: one list per (sequence, kv head).
/// Each sequence is ranked one of three ways (rank[s], Rank):
///  Score:  by the scores above.
///  Mass:   each scoring query's block scores (all FULL blocks of the sequence, forced ones
///          included; sub-block scores combined by log-sum-exp) become a softmax over the
///          sequence's blocks at scale 1/sqrt(head_dim), an estimate of that query's attention
///          mass per block; a list ranks blocks by the sum of those masses over its scoring
///          queries (the group mean of each kv head, or each query head with GroupMax). Mean,
///          MinMax and Quant (whose block score here is the log-sum-exp over its tokens of
///          scale * q.k': the estimate of the exact softmax over dequantized keys).
///  Oracle: by the true softmax attention mass of this query (diagnostic upper bound of any
///          representation): for each query head of the list's kv heads, the mass of a block is
///          the head's softmax over every token of the sequence summed over the block's tokens;
///          a list scores a block by the sum of those masses over its query heads. Reads the K
///          cache, so it costs a dense pass.
///  Rerank: the rerank_factor * (list size - forced) best non-forced full blocks by Score (ties
///          to the lower logical index, as in the top-k) are candidates; the candidates' and
///          the forced blocks' keys (the K cache) give each query head a softmax over their
///          tokens, and a candidate scores the sum of its masses over the list's query heads, as
///          Oracle does over every block; blocks outside the candidates score 0. Reads the keys
///          of the candidates only.
/// Forced blocks, budget and output are the same for all four.
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
  int sub_block = 0;                          // as RepUpdateParams::sub_block
  QueryMode query_mode = QueryMode::GroupMean;
  bool per_kv_head = false;
  const float* hash_w = nullptr;              // [head_dim, head_dim], Hash only
  DType act_type = DType::F32;
  // Per-sequence ranking (see above); null: every sequence by Score. The any_* hints are
  // host-side (no read-back) and must be set when some sequence has that rank.
  const uint8_t* rank = nullptr;              // [n_seqs] Rank values (backend memory), or null
  bool any_mass = false;
  bool any_oracle = false;                    // some sequence is Oracle or Rerank: needs k_cache
  int rerank_factor = 4;                      // Rerank: candidates per free slot, >= 1
  const void* k_cache = nullptr;              // [n_blocks, n_kv_heads, block_size, head_dim]  kv_type
  DType kv_type = DType::F32;
};

}  // namespace gsa::backend
