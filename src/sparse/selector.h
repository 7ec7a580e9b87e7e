// Selector: the per-decode-step GSA planner the engine drives. For each (sequence, layer) it
// decides dense or sparse, selects (inline, or through the asynchronous CPU selector when
// lag >= 1), reuses selections between recomputations (select_every), and writes the CSR block
// lists AttentionParams consumes into a preallocated workspace. It never touches the KV cache.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "core/status.h"
#include "core/thread_pool.h"
#include "sparse/sparse_config.h"

namespace gsa::sparse {

class AsyncSelector;

/// Model dimensions the selector needs, and the asynchronous selector's ring size.
struct SelectorDims {
  int n_layers = 0;
  int n_heads = 0, n_kv_heads = 0, head_dim = 0;
  int async_queue_slots = 0;  // pending (sequence, layer) jobs at most; 0: 64 * n_layers
};

/// One decoding sequence of a step (one query token). The block table is read during
/// begin_step and the select_layer calls of the same step only.
struct SeqInput {
  int64_t seq_id = 0;                    // stable for the sequence's lifetime
  int32_t seq_len = 0;                   // tokens in the cache, this step's token included
  const int32_t* block_table = nullptr;  // [n_blocks] physical block ids in logical order
  int32_t n_blocks = 0;                  // == ceil(seq_len / block_size)
  // Per-request overrides of the engine's SparseConfig (serving: a request may ask for its
  // own budget, or for exact full attention).
  int32_t budget_tokens = 0;             // > 0: this sequence's budget in tokens
  int32_t min_context = -1;              // >= 0: this sequence's min_context
  bool oracle = false;                   // rank by true attention mass (lag 0 only)
  int8_t rank_by = -1;                   // >= 0: a RankBy value replacing cfg.rank_by
};

/// How sequence `in` is ranked under cfg: Oracle when it (or cfg.selection) asks for the oracle,
/// else by its rank_by override or cfg.rank_by.
backend::Rank rank_of(const SparseConfig& cfg, const SeqInput& in);

/// CSR block lists of one layer, in the selector's host memory, laid out for AttentionParams:
/// list i = s (per_layer) or s * n_kv_heads + h (per_kv_head) for batch position s.
struct BlockLists {
  const int32_t* indptr = nullptr;    // [n_lists + 1]
  const int32_t* indices = nullptr;   // [indptr[n_lists]] physical block ids, logical order
  const int32_t* last_len = nullptr;  // [n_lists] tokens in each list's last block
  int n_lists = 0;
  bool per_kv_head = false;
};

/// How a (sequence, layer) list of the current step was produced.
/// The asynchronous jobs of one layer whose queries are not in host memory yet (the GPU path:
/// the query is still being copied off the device when the layer's lists are made). Filled by
/// select_layer(layer, nullptr, nullptr, &jobs) when lag >= 1; handed to submit_deferred once
/// the queries have landed.
struct DeferredJobs {
  int64_t step = 0;
  int layer = 0;
  std::vector<int32_t> rows;       // per job: its sequence's row in the step's query tensor
  std::vector<int64_t> seq_ids;
  std::vector<int32_t> seq_len, n_blocks, budget_tokens;
  std::vector<uint8_t> rank;       // backend::Rank per job
  std::vector<int32_t> table_off;  // per job: offset of its block table in `tables`
  std::vector<int32_t> tables;     // the jobs' block tables, copied (the step's tables die)
  bool empty() const { return rows.empty(); }
  void clear();
};

enum class ListSource : uint8_t {
  Dense,     // not eligible (or no selection available yet): every block
  Selected,  // computed from this step's query (lag = 0)
  Reused,    // an earlier selection extended with the blocks added since (select_every)
  Async,     // an asynchronous result from a query of step t - lag or later
  Stale,     // asynchronous, older than t - lag: forced blocks + last known selection
};

struct SelectorStats {
  int64_t steps = 0;
  int64_t lists_dense = 0, lists_selected = 0, lists_reused = 0;
  int64_t lists_async = 0, lists_stale = 0;
  int64_t blocks_attended = 0, blocks_total = 0;  // sums over (sequence, layer) lists
};

class Selector {
 public:
  /// Validates cfg and dims (Hash needs head_dim % 32 == 0; n_heads % n_kv_heads == 0).
  /// `pool` (borrowed, may be null) runs the inline block_select; the asynchronous selector,
  /// created when cfg.lag >= 1, has its own cfg.cpu_workers threads.
  static Result<std::unique_ptr<Selector>> create(const SparseConfig& cfg,
                                                  const SelectorDims& dims, ThreadPool* pool);
  ~Selector();
  Selector(const Selector&) = delete;
  Selector& operator=(const Selector&) = delete;

  const SparseConfig& config() const { return cfg_; }
  /// The Hash projection matrix [head_dim, head_dim] (for rep_update), empty for other kinds.
  const std::vector<float>& hash_matrix() const { return hash_w_; }

  /// Plans one decode step: per sequence, dense or sparse and, when sparse, whether the
  /// selection is recomputed this step. Sizes the workspace (amortized: no allocation once
  /// warm). Invalidates the lists of the previous step.
  Status begin_step(std::span<const SeqInput> seqs);

  /// Produces the lists of `layer` for this step. q and reps are host memory (the CPU backend's
  /// buffers) and are read only when some sequence of the step is sparse:
  ///   q:    [n_seqs, n_heads, head_dim] f32, this step's post-RoPE decode queries
  ///   reps: [n_phys_blocks, n_kv_heads, rep_bytes] this layer's representation table; with
  ///         lag >= 1 the blocks of a submitted job must stay valid and unchanged until the
  ///         job finishes (release()/drain() wait for that).
  /// The returned lists stay valid until the next begin_step. Call once per layer per step.
  ///
  /// Sparse lists, step t (begin_step calls counted from 0), lag = cfg.lag:
  ///  - lag = 0: on a selection step (every select_every-th sparse step of the sequence) the
  ///    kernel runs inline on this step's query (Selected); in between, the last selection is
  ///    reused, extended with every block added since (Reused). A list may thus exceed the
  ///    budget by the blocks added since the last selection.
  ///  - lag >= 1: selection steps submit this layer's queries to the AsyncSelector, after the
  ///    lookup, so a step never uses its own query and never waits. The list is the newest
  ///    finished result for (sequence, layer), extended with the blocks added since: Async when
  ///    its query is from step t - lag or later, Stale (forced blocks + last known selection)
  ///    when older. Until a first result exists the sequence decodes densely (Dense): exact,
  ///    never a guess.
  ///
  /// With `deferred` (lag >= 1 only), q and reps may be null: the lists are made as above and
  /// this layer's jobs are described in *deferred instead of being submitted.
  ///
  /// Layers below cfg.dense_layers are dense for every sequence. Oracle sequences
  /// (SeqInput::oracle or cfg.selection = oracle, lag 0) rank blocks by true attention mass and
  /// need k_cache: this layer's K cache [n_phys_blocks, n_kv_heads, block_size, head_dim] f32.
  Result<BlockLists> select_layer(int layer, const float* q, const void* reps,
                                  DeferredJobs* deferred = nullptr,
                                  const void* k_cache = nullptr);

  /// Submits jobs made by select_layer(..., deferred): q is the step's query tensor
  /// [rows, n_heads, head_dim] f32 in host memory (rows as in jobs.rows), reps the layer's host
  /// representation table. May be called from another thread than the one driving the steps,
  /// concurrently with them; a released sequence's jobs must not be submitted after release().
  Status submit_deferred(const DeferredJobs& jobs, const float* q, const void* reps);

  /// Source of list (batch position s, layer) of the current step, after select_layer(layer).
  ListSource source(int s, int layer) const;
  /// True when sequence s of the current step is sparse-eligible.
  bool is_sparse(int s) const;

  /// Forgets a finished (or preempted) sequence: cancels its pending asynchronous jobs and
  /// waits for running ones, so its blocks may be freed when this returns.
  void release(int64_t seq_id);
  /// Waits until every asynchronous job submitted so far has finished (no-op when lag = 0).
  void drain();

  SelectorStats stats() const;

 private:
  struct Impl;
  Selector(const SparseConfig& cfg, const SelectorDims& dims, ThreadPool* pool);

  SparseConfig cfg_;
  SelectorDims dims_;
  ThreadPool* pool_ = nullptr;
  std::vector<float> hash_w_;
  std::unique_ptr<Impl> impl_;
  std::unique_ptr<AsyncSelector> async_;
};

}  // namespace gsa::sparse
