// The GSA selection interface: what one decode step attends (LayerPlan, per layer) and the
// Planner that produces it. The engine makes one Planner (engine/planner.h picks the
// implementation from the config and the backend) and then drives every kind of selection,
// on the device or on the host, inline or asynchronous, through these calls only.
//
// Plain data and raw pointers, no model or KV cache types: sparse stays below the model and
// beside the KV cache in the library order; the engine turns a LayerPlan into the model's
// AttentionLists (model::LayerPlanner) and gives the planners the KV cache's tables.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/status.h"
#include "sparse/selector.h"

namespace gsa::sparse {

/// The block lists one layer attends in one decode step, in the AttentionParams layout: list
/// i = s (per_layer) or s * n_kv_heads + h (per_kv_head) for batch position s; each list
/// sorted by logical index, every block full but the last, last_len the tokens of its last
/// block. The pointers stay valid until the planner's next begin_step.
struct LayerPlan {
  int64_t step = 0;  // the decode step it is for: the planner's begin_step calls, from 0
  int layer = 0;
  const int32_t* indptr = nullptr;    // [n_lists + 1]
  const int32_t* indices = nullptr;   // [indptr[n_lists]] physical block ids
  const int32_t* last_len = nullptr;  // [n_lists]
  int n_lists = 0;
  bool per_kv_head = false;
  // The lists are in host memory (the host may read them; the CPU backend's memory is host
  // memory). When false only the backend reads them (device selection, uploaded lists).
  bool host = false;
  // [n_seqs] how each sequence's lists were made, in batch order (its kv-head lists share
  // it): Dense is every block (below min_context, a dense layer, no selection yet); Stale is
  // the forced blocks plus an out-of-date selection. Valid as the pointers are.
  std::span<const ListSource> source;
};

/// The pipelined host selection for a device backend (selector=cpu on CUDA); zero for the
/// planners without one.
struct HostSelectStats {
  double plan_seconds = 0;     // host time in plan_layer (lists, uploads, copies queued)
  double wait_seconds = 0;     // lag 0: host time waiting for queries to land
  double pump_seconds = 0;     // pump thread: conversion + submission (not waiting)
  int64_t layers_submitted = 0;
  int64_t layers_dropped = 0;  // no free query slot: that layer's queries were not submitted
  int64_t mirrored_rows = 0;   // (layer, block) representation rows copied to the host
};

/// What a planner has done since it was made. Counters only grow; a report over an interval
/// is the difference of two snapshots (stats_since).
struct PlannerStats {
  SelectorStats lists;        // steps, (sequence, layer) lists by source, blocks attended/total
  double select_seconds = 0;  // host time spent selecting (0 when the device selects)
  HostSelectStats host;
};

inline PlannerStats stats_since(const PlannerStats& now, const PlannerStats& base) {
  const SelectorStats& a = now.lists;
  const SelectorStats& b = base.lists;
  const HostSelectStats& h = now.host;
  const HostSelectStats& g = base.host;
  PlannerStats d;
  d.lists = {a.steps - b.steps,
             a.lists_dense - b.lists_dense,
             a.lists_selected - b.lists_selected,
             a.lists_reused - b.lists_reused,
             a.lists_async - b.lists_async,
             a.lists_stale - b.lists_stale,
             a.blocks_attended - b.blocks_attended,
             a.blocks_total - b.blocks_total};
  d.select_seconds = now.select_seconds - base.select_seconds;
  d.host = {h.plan_seconds - g.plan_seconds,         h.wait_seconds - g.wait_seconds,
            h.pump_seconds - g.pump_seconds,         h.layers_submitted - g.layers_submitted,
            h.layers_dropped - g.layers_dropped,     h.mirrored_rows - g.mirrored_rows};
  return d;
}

/// Per-decode-step GSA selection. One thread (the engine's) makes every call; implementations
/// may run work on their own threads in between (the asynchronous selector, the pump of the
/// host selection). The call order of a decode step is begin_step, then plan_layer for each
/// layer in order; release and reps_written come between steps.
class Planner {
 public:
  virtual ~Planner() = default;

  /// Whether this planner can honour a request's per-sequence overrides (SeqInput's
  /// budget_tokens, min_context, oracle, rank_by; its other fields are unused):
  /// InvalidArgument when not (the oracle runs inline only, and on CUDA on the device only).
  virtual Status check_request(const SeqInput& overrides) const = 0;

  /// The Hash projection matrix [head_dim, head_dim] that rep_update must write
  /// representations with, the one selection scores against; empty for other kinds.
  virtual const std::vector<float>& hash_matrix() const = 0;

  /// Starts a decode step. seqs: the step's sequences in batch order (row s of each layer's
  /// queries); their block tables are read until the step's last plan_layer. new_full_blocks:
  /// the physical blocks that become full in this step's forward (their representations are
  /// written layer by layer before that layer's plan_layer). Invalidates the last step's plans.
  virtual Status begin_step(std::span<const SeqInput> seqs,
                            std::span<const int32_t> new_full_blocks) = 0;

  /// The lists `layer` attends in this step. q: the layer's post-RoPE decode queries in
  /// backend memory, [n_seqs, n_heads, head_dim] in the activation type. Called once per layer,
  /// in order, after the layer's K/V and representations of this step are written.
  virtual Result<LayerPlan> plan_layer(int layer, const void* q) = 0;

  /// The representations of `blocks` were written outside a decode step (a prefill, synthetic
  /// context): a planner that keeps its own copy of the table refreshes those rows.
  virtual Status reps_written(std::span<const int32_t> blocks) = 0;

  /// Forgets a finished sequence. When this returns no selection work of it is pending or
  /// running, so its blocks may be freed.
  virtual void release(int64_t seq_id) = 0;
  /// Waits until every piece of background work submitted so far has finished.
  virtual void drain() = 0;

  virtual PlannerStats stats() const = 0;
};

}  // namespace gsa::sparse
