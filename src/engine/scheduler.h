// Scheduler: owns the requests, their samples and their KV blocks, and decides what each engine
// step runs. A prefill step takes up to prefill_chunk prompt tokens across admitted requests; a
// decode step takes one token from each running sample, up to max_batch.
//
// Admission: a waiting request is admitted (first come, first served) when the KV cache can
// hold its prompt plus one block per sample for the first decoded token, counting the blocks
// already promised to other admitted requests; otherwise it waits. When a running sample needs
// a block the cache does not have, the most recently started sample is preempted: its blocks
// are given up and it goes back to the front of the queue, to be prefilled again from its
// tokens (mostly from the prefix cache) and resume decoding where it stopped, its sampler and
// text state untouched. So a request that does not fit now waits instead of failing; only a
// sequence longer than the whole cache fails.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/batch.h"
#include "engine/request.h"
#include "kv/kv_cache.h"
#include "sparse/plan.h"

namespace gsa::engine {

class StoreTier;

/// A request or sample that ends without running (cancelled, or no KV for it).
struct Ended {
  Seq* seq = nullptr;        // a sample; null: a request whose samples never started
  int64_t request_id = 0;    // with seq null
  int n_samples = 0;         // with seq null
  FinishReason reason = FinishReason::Error;
  std::string error;
};

/// What one step runs. At most one of prefill and decode is non-empty.
struct StepPlan {
  std::vector<PrefillChunk> prefill;
  std::vector<Seq*> decode;
  std::vector<int32_t> decode_slots;  // the KV slot of each decode sequence's token
  std::vector<Ended> ended;
  int64_t prefix_hit_tokens = 0;      // prompt tokens taken from the prefix cache at admission
  int64_t preempted = 0;              // samples preempted while planning this step
};

/// A request whose prompt finished prefilling: its samples, which sample their first token from
/// the prefill logits row of the same index.
struct Started {
  Request* req = nullptr;
  std::vector<Seq*> samples;
};

class Scheduler {
 public:
  /// planner: notified when a sample's blocks are given up (may be null: dense).
  Scheduler(kv::KvCache* kv, sparse::Planner* planner, int max_batch, int prefill_chunk);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  /// KV blocks a request must be able to get to be admitted.
  int64_t blocks_needed(const RequestInput& in) const;
  /// Queues a validated request; returns its id.
  int64_t add(RequestInput in);
  /// Marks a queued or running request cancelled; the next plan ends its samples.
  /// NotFound for an id that is unknown or already finished.
  Status cancel(int64_t id);
  bool has_work() const { return !waiting_.empty() || !running_.empty(); }

  /// Plans the next step, reserving the KV slots it writes.
  StepPlan schedule();
  /// After a prefill forward of `plan`: indexes the new full blocks, starts the samples of
  /// requests whose prompt is done (returned in the order of the plan's logits rows) and puts
  /// resumed samples back in the running set.
  std::vector<Started> prefill_done(const StepPlan& plan);
  /// Frees the blocks of finished samples and forgets finished requests.
  void reap();

  /// Benchmarks: a request whose samples the caller builds and hands to add_running.
  Request* add_started(RequestInput in);
  void add_running(std::unique_ptr<Seq> s);
  /// A file store that prefix matches continue in (borrowed; null: none).
  void set_store(StoreTier* store) { store_ = store; }
  /// Drops a request from add_started that got no samples.
  void forget(int64_t id) { requests_.erase(id); }
  int64_t next_seq_id() { return next_seq_++; }

 private:
  void end_job(PrefillJob* j, FinishReason reason, std::string error, StepPlan* plan);
  void end_cancelled(StepPlan* plan);
  bool admit(PrefillJob& j, bool alone, StepPlan* plan);
  void schedule_prefill(StepPlan* plan);
  void schedule_decode(StepPlan* plan);
  void preempt(Seq& s);
  void drop_job(PrefillJob* j);
  int blocks_for(int64_t tokens) const;

  kv::KvCache* kv_;
  sparse::Planner* planner_;
  StoreTier* store_ = nullptr;
  int max_batch_;
  int prefill_chunk_;
  int block_size_;
  int64_t committed_ = 0;  // blocks promised to admitted jobs and not yet reserved
  int64_t next_request_ = 0;
  int64_t next_seq_ = 0;
  std::unordered_map<int64_t, std::unique_ptr<Request>> requests_;
  std::deque<std::unique_ptr<PrefillJob>> waiting_;
  std::vector<std::unique_ptr<Seq>> running_;  // decoding, in the order they started
  std::vector<std::unique_ptr<Seq>> parked_;   // preempted, waiting in a resume job
};

}  // namespace gsa::engine
