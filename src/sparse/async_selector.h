// AsyncSelector: the asynchronous CPU "top-k offloading engine". The forward hands it each
// layer's decode queries without waiting (copied into a bounded ring of host slots); its own
// worker threads run cpu::block_select; finished selections are published per (sequence,
// layer), double-buffered, for later steps to pick up. It never blocks the submitting step.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <span>
#include <thread>
#include <unordered_map>
#include <vector>

#include "core/status.h"
#include "sparse/sparse_config.h"

namespace gsa::sparse {

struct AsyncSelectorOptions {
  int n_layers = 0;
  int n_heads = 0, n_kv_heads = 0, head_dim = 0;
  int n_workers = 2;            // worker threads (1..64)
  int queue_slots = 256;        // query slots in the ring: pending jobs at most
  int max_blocks_per_seq = 1 << 20;  // longest block table a job may carry
};

/// One sequence of a submission.
struct AsyncJobInput {
  int64_t seq_id = 0;
  int32_t seq_len = 0;
  const int32_t* block_table = nullptr;  // [n_blocks] physical ids, copied at submit
  int32_t n_blocks = 0;
  const float* q = nullptr;              // [n_heads, head_dim] copied at submit
  int32_t budget_tokens = 0;             // > 0: per-request budget (see SeqInput)
  uint8_t rank = 0;                      // backend::Rank: Score or Mass (rank_of)
};

/// A published selection of one (sequence, layer).
struct AsyncResult {
  int64_t step = -1;             // step whose query produced it
  int32_t n_blocks = 0;          // blocks of the sequence at that step
  int32_t list_size = 0;         // blocks per list
  std::vector<int32_t> logical;  // [n_lists_per_seq, list_size] logical block indices, sorted
};

struct AsyncStats {
  int64_t submitted = 0, completed = 0;
  int64_t coalesced = 0;  // a pending job of the same (sequence, layer) replaced by a newer one
  int64_t dropped = 0;    // ring full: the oldest pending job dropped
  int64_t cancelled = 0, failed = 0;
};

class AsyncSelector {
 public:
  /// Validates cfg and the options, preallocates the ring and starts the workers.
  static Result<std::unique_ptr<AsyncSelector>> create(const SparseConfig& cfg,
                                                       const AsyncSelectorOptions& opt,
                                                       std::vector<float> hash_w);
  /// Stops the workers (pending jobs are discarded, running ones finish) and joins them.
  ~AsyncSelector();
  AsyncSelector(const AsyncSelector&) = delete;
  AsyncSelector& operator=(const AsyncSelector&) = delete;

  /// Queues one job per sequence for `layer` at `step` and returns without waiting. reps is the
  /// layer's table [n_phys_blocks, n_kv_heads, rep_bytes]: the caller keeps every listed full
  /// block's representation valid and unchanged until the job finishes (cancel()/drain()).
  /// A pending job of the same (sequence, layer) is replaced; when the ring is full the oldest
  /// pending job is dropped. InvalidArgument on bad input (nothing is queued then).
  Status submit(int64_t step, int layer, std::span<const AsyncJobInput> seqs, const void* reps);

  /// Copies the newest published selection of (seq_id, layer) into *out; false when none.
  bool latest(int64_t seq_id, int layer, AsyncResult* out) const;

  /// Drops seq_id's pending jobs and results and waits until none of its jobs is running.
  void cancel(int64_t seq_id);
  /// Waits until every job submitted so far has finished.
  void drain();

  AsyncStats stats() const;
  int n_lists_per_seq() const { return lists_per_seq_; }

 private:
  struct Slot {  // one ring entry: a job's query and block-table snapshot
    int64_t seq_id = 0, step = 0;
    int layer = 0;
    int32_t seq_len = 0, n_blocks = 0;
    int32_t budget_tokens = 0;
    uint8_t rank = 0;
    const void* reps = nullptr;
    std::vector<float> q;          // [n_heads, head_dim]
    std::vector<int32_t> table;    // [n_blocks], capacity kept across jobs
  };
  struct Key {
    int64_t seq_id;
    int layer;
    bool operator==(const Key&) const = default;
  };
  struct KeyHash {
    size_t operator()(const Key& k) const {
      return std::hash<int64_t>()(k.seq_id * 1000003 + k.layer);
    }
  };

  AsyncSelector(const SparseConfig& cfg, const AsyncSelectorOptions& opt,
                std::vector<float> hash_w);
  void worker_loop(int index);
  /// Runs cpu::block_select for one slot into *out (worker-local scratch).
  Status run_job(const Slot& job, AsyncResult* out, std::vector<int32_t>* scratch) const;

  const SparseConfig cfg_;
  const AsyncSelectorOptions opt_;
  const std::vector<float> hash_w_;
  int lists_per_seq_ = 1;

  mutable std::mutex mu_;
  std::condition_variable cv_work_;  // workers: a job is pending or stop
  std::condition_variable cv_idle_;  // drain/cancel: a job finished
  std::vector<Slot> slots_;          // the ring, preallocated
  std::vector<int> free_slots_;
  std::deque<int> pending_;                       // slot ids, oldest first
  std::unordered_map<Key, int, KeyHash> pending_by_key_;
  std::vector<char> running_;                     // per worker: a job is running
  std::vector<int64_t> running_seq_;              // per worker: its sequence
  std::unordered_map<Key, AsyncResult, KeyHash> results_;
  AsyncStats stats_;
  bool stop_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace gsa::sparse
