// HostSelectPlanner: GSA on the GPU with selection by the CPU (selector=cpu on cuda), the
// pipelined "top-k offloading engine". Per layer of a decode step it
//  - mirrors the representations of blocks that filled in this step from device to pinned host
//    memory (copy queue, after the compute queue's rep_update),
//  - takes the layer's lists from the Selector (host) and uploads them from pinned staging on
//    the copy queue (the compute queue waits for that copy at the layer's attention),
//  - lag >= 1: copies the layer's queries to a pinned slot on the copy queue (no stall of the
//    compute queue) and queues them; a pump thread waits for each copy, converts the queries
//    to f32 and submits them to the asynchronous CPU selector, whose results later steps use;
//  - lag 0: the same copy, but the host waits for it and selects inline (exact, stalls the
//    pipeline once per layer: the baseline the pipelined mode is measured against).
// It uses only the backend's Transfer (backend/transfer.h: queues, events, pinned memory; on
// CUDA the copy queue is the side stream), so it runs on any backend that has one, the CPU's
// synchronous one included; create() is Unsupported for a backend without. The engine uses it
// on CUDA only (on the CPU, make_cpu_planner selects in place) and drives it as a
// sparse::Planner (make_host_select_planner, engine/planner.h), which owns the Selector too.
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include "backend/backend.h"
#include "kv/kv_cache.h"
#include "model/model.h"
#include "sparse/plan.h"
#include "sparse/selector.h"

namespace gsa::engine {

// The pipeline's counters; the planner interface reports them (sparse::PlannerStats::host).
using HostSelectStats = sparse::HostSelectStats;

class HostSelectPlanner : public model::LayerPlanner {
 public:
  /// b: a backend with a Transfer (Backend::transfer(); the engine passes CUDA); sel the
  /// engine's Selector (selector=cpu); max_batch bounds the decode queries of one step.
  /// Borrowed pointers outlive the planner.
  static Result<std::unique_ptr<HostSelectPlanner>> create(backend::Backend* b, kv::KvCache* kv,
                                                           sparse::Selector* sel,
                                                           const model::HParams& h, int max_batch);
  ~HostSelectPlanner() override = default;

  /// Starts a decode step: the selector's plan, and the blocks that become full in it (their
  /// representations are mirrored layer by layer).
  virtual Status begin_step(std::span<const sparse::SeqInput> seqs,
                            std::span<const int32_t> new_full_blocks) = 0;
  /// Mirrors the representations of `blocks` in every layer (after a prefill, or after
  /// representations were computed outside a decode step); queued on the copy queue.
  virtual Status mirror_reps(std::span<const int32_t> blocks) = 0;
  /// Waits until every query copied so far has been submitted to the CPU selector (call before
  /// Selector::release, so no job of a released sequence is submitted afterwards).
  virtual void flush() = 0;
  virtual HostSelectStats stats() const = 0;
};

}  // namespace gsa::engine
