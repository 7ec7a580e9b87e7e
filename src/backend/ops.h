// Parameter structs of the compute ops every backend implements. Plain fields only: raw pointers
// (in the backend's memory), shapes, strides and CSR block lists; no model or kv types. Each
// backend validates a struct in its launcher and refuses what it does not support with
// Unsupported. Element types: activations and KV are `act_type` / `kv_type`
// (CPU: F32; CUDA: BF16 or F32), norm weights and biases are always F32.
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace gsa::backend {

/// y[m, n] = x[m, k] . w[n, k]^T (+ bias[n]). Row-major, contiguous.
struct MatmulParams {
  const void* x = nullptr;     // [m, k]  act_type
  const void* w = nullptr;     // [n, k]  w_type
  const float* bias = nullptr; // [n] or null
  void* y = nullptr;           // [m, n]  act_type, or f32 with y_f32
  int64_t m = 0, n = 0, k = 0;
  DType act_type = DType::F32;
  DType w_type = DType::F32;
  uint32_t w_ggml = 0;  // ggml type id of w's rows when w_type == DType::Ggml (n rows of k)
  bool y_f32 = false;   // y in f32 whatever act_type (logits: no bf16 rounding before argmax)
};

/// y[r, :] = x[r, :] / rms(x[r, :]) * w[:]. In place allowed (x == y).
struct RmsNormParams {
  const void* x = nullptr;   // [n_rows, dim]
  const float* w = nullptr;  // [dim]
  void* y = nullptr;         // [n_rows, dim]
  int64_t n_rows = 0, dim = 0;
  float eps = 1e-5f;
  DType act_type = DType::F32;
};

/// Rotary embedding, in place, on the first rot_dim dims of each head.
/// neox = false: pairs (2i, 2i+1) (GGUF llama layout); neox = true: pairs (i, i + rot_dim/2)
/// (Qwen2/Qwen3). angle = pos * theta^(-2i/rot_dim).
struct RopeParams {
  void* x = nullptr;             // [n_tokens, n_heads, head_dim]
  const int32_t* pos = nullptr;  // [n_tokens]
  int64_t n_tokens = 0;
  int n_heads = 0, head_dim = 0, rot_dim = 0;
  float theta = 10000.0f;
  bool neox = false;
  DType act_type = DType::F32;
};

/// Writes k, v of n_tokens into the paged cache: token t goes to block slot_mapping[t] /
/// block_size, offset slot_mapping[t] % block_size.
struct KvAppendParams {
  const void* k = nullptr;                // [n_tokens, n_kv_heads, head_dim]  act_type
  const void* v = nullptr;                // [n_tokens, n_kv_heads, head_dim]  act_type
  void* k_cache = nullptr;                // [n_blocks, n_kv_heads, block_size, head_dim]  kv_type
  void* v_cache = nullptr;                // [n_blocks, n_kv_heads, block_size, head_dim]  kv_type
  const int32_t* slot_mapping = nullptr;  // [n_tokens]
  int64_t n_tokens = 0;
  int64_t n_blocks = 0;  // blocks in each cache; > 0 enables bounds checks of slot_mapping
  int n_kv_heads = 0, head_dim = 0, block_size = 0;
  DType act_type = DType::F32;
  DType kv_type = DType::F32;
};

/// Paged attention for a batch of sequences; dense and GSA-sparse are the same op (dense is
/// "every block listed"). Sequence s owns query rows [q_indptr[s], q_indptr[s+1]) and the block
/// list kv_indices[kv_indptr[i] .. kv_indptr[i+1]) where i = s (per_kv_head = false) or
/// i = s * n_kv_heads + h (per_kv_head = true, one list per kv head h). Lists are sorted by
/// logical block index; every listed block is full except the last one, which holds
/// kv_last_len[i] tokens (1..block_size). An empty list gives zero output. An entry of -1 is
/// skipped (no keys: a slot a selection could not fill); the list's positions, and so the
/// keys' positions, stay as listed.
/// Causal mask: key j of listed block b (list position p) has position p * block_size + j and is
/// attended by query row r iff that is <= q_pos[r]. For a dense list this is the true causal
/// mask; for a sparse list it is used only by decode rows (q_pos past every key), where it
/// masks nothing. Query head h attends kv head h / (n_heads / n_kv_heads).
struct AttentionParams {
  const void* q = nullptr;               // [n_tokens, n_heads, head_dim]  act_type
  const void* k_cache = nullptr;         // [n_blocks, n_kv_heads, block_size, head_dim]  kv_type
  const void* v_cache = nullptr;         // [n_blocks, n_kv_heads, block_size, head_dim]  kv_type
  void* out = nullptr;                   // [n_tokens, n_heads, head_dim]  act_type
  const int32_t* q_indptr = nullptr;     // [n_seqs + 1]
  const int32_t* q_pos = nullptr;        // [n_tokens]
  const int32_t* kv_indptr = nullptr;    // [n_lists + 1], n_lists = n_seqs (* n_kv_heads)
  const int32_t* kv_indices = nullptr;   // [kv_indptr[n_lists]] physical block ids
  const int32_t* kv_last_len = nullptr;  // [n_lists]
  int n_seqs = 0;
  int64_t n_tokens = 0;
  int64_t n_blocks = 0;  // blocks in each cache; > 0 enables bounds checks of kv_indices
  int n_heads = 0, n_kv_heads = 0, head_dim = 0, block_size = 0;
  bool per_kv_head = false;
  float scale = 0.0f;  // 0 means 1/sqrt(head_dim)
  DType act_type = DType::F32;
  DType kv_type = DType::F32;
};

/// out = silu(gate) * up, elementwise. gate_up holds gate in columns [0, dim) and up in
/// [dim, 2*dim) of each row (one fused matmul produces both).
struct SwigluParams {
  const void* gate_up = nullptr;  // [n_rows, 2 * dim]
  void* out = nullptr;            // [n_rows, dim]
  int64_t n_rows = 0, dim = 0;
  DType act_type = DType::F32;
};

/// y += x, elementwise (residual connections).
struct AddParams {
  const void* x = nullptr;  // [n]
  void* y = nullptr;        // [n]
  int64_t n = 0;
  DType act_type = DType::F32;
};

/// The residual add and the next RMSNorm in one op: y += x (y stored in act_type), then
/// out = y / rms(y) * w per row, from the stored y. Same results as add, then rmsnorm.
struct AddRmsNormParams {
  const void* x = nullptr;   // [n_rows, dim]
  void* y = nullptr;         // [n_rows, dim] residual stream, updated in place
  const float* w = nullptr;  // [dim]
  void* out = nullptr;       // [n_rows, dim]
  int64_t n_rows = 0, dim = 0;
  float eps = 1e-6f;
  DType act_type = DType::F32;
};

/// out[t, :] = table[ids[t], :] converted to act_type.
struct EmbedParams {
  const int32_t* ids = nullptr;  // [n_tokens]
  const void* table = nullptr;   // [vocab, dim]  table_type
  void* out = nullptr;           // [n_tokens, dim]
  int64_t n_tokens = 0, vocab = 0, dim = 0;
  DType table_type = DType::F32;
  DType act_type = DType::F32;
  uint32_t table_ggml = 0;  // ggml type id of the table's rows when table_type == DType::Ggml
};

/// Row-wise argmax: out[r] = the column of the largest x[r, :], ties to the lowest column, NaN
/// never chosen over a number (greedy decoding without bringing logits to the host).
struct ArgmaxParams {
  const void* x = nullptr;   // [n_rows, n_cols]  act_type
  int32_t* out = nullptr;    // [n_rows]  backend memory
  int64_t n_rows = 0, n_cols = 0;
  DType act_type = DType::F32;
};

/// dst[i] = uniform(-scale, scale) from a counter-based generator keyed by (seed, i), so every
/// backend produces the same values (used for synthetic-weight benchmarks; never zeros).
struct FillRandomParams {
  void* dst = nullptr;  // [n]  type
  int64_t n = 0;
  float scale = 1.0f;
  uint64_t seed = 0;
  DType type = DType::F32;
};

/// The generator FillRandomParams uses: splitmix64 of (seed * 0x9E3779B97F4A7C15 + i), top 24
/// bits mapped to [-1, 1). Shared so CUDA and CPU agree bit for bit.
inline float fill_random_value(uint64_t seed, uint64_t i) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ull + i + 1;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return float(int64_t(z >> 40) - (int64_t(1) << 23)) * (1.0f / float(1 << 23));
}

}  // namespace gsa::backend
