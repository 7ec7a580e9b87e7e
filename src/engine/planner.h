// The engine's side of GSA selection: make_planner picks one sparse::Planner (sparse/plan.h)
// for the config and the backend, and PlanHook hands its plans to the model's forward as a
// model::LayerPlanner. The implementations, one per file:
//  - make_cpu_planner (planner_cpu.cpp), the CPU backend with either selector: the
//    sparse::Selector on the host, inline (lag 0, the oracle too) or asynchronous (lag >= 1);
//  - make_device_planner (planner_device.cpp), CUDA with selector=device: one block_select
//    launch per layer, lists never leave the GPU;
//  - make_host_select_planner (host_select.cpp), CUDA with selector=cpu: the Selector on the
//    host, fed with representations and queries by the HostSelectPlanner pipeline.
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include "backend/backend.h"
#include "core/thread_pool.h"
#include "kv/kv_cache.h"
#include "model/model.h"
#include "sparse/plan.h"
#include "sparse/selector.h"
#include "sparse/sparse_config.h"

namespace gsa::engine {

class AttentionObserver;

/// The planner for cfg on backend `b`: creates the Selector (which validates cfg against the
/// model's dimensions) and the implementation that fits the backend. kv, pool (may be null:
/// the inline selection then runs on the calling thread) and b are borrowed and outlive the
/// planner; max_batch bounds the sequences of one step.
Result<std::unique_ptr<sparse::Planner>> make_planner(const sparse::SparseConfig& cfg,
                                                      backend::Backend* b, kv::KvCache* kv,
                                                      const model::HParams& h, ThreadPool* pool,
                                                      int max_batch);

/// Selection on the host for a backend whose memory is host memory (the CPU backend).
Result<std::unique_ptr<sparse::Planner>> make_cpu_planner(std::unique_ptr<sparse::Selector> sel,
                                                          kv::KvCache* kv);
/// Selection by the device (CUDA): lag 0 and select_every 1 only.
Result<std::unique_ptr<sparse::Planner>> make_device_planner(std::unique_ptr<sparse::Selector> sel,
                                                             backend::Backend* b, kv::KvCache* kv,
                                                             const model::HParams& h);
/// Selection by the CPU for the CUDA backend (selector=cpu): the pipelined HostSelectPlanner.
Result<std::unique_ptr<sparse::Planner>> make_host_select_planner(
    std::unique_ptr<sparse::Selector> sel, backend::Backend* b, kv::KvCache* kv,
    const model::HParams& h, int max_batch);

/// The model's per-layer hook over a Planner: each layer's plan becomes its attention lists,
/// and an AttentionObserver, if set, sees the plans whose lists are in host memory.
class PlanHook final : public model::LayerPlanner {
 public:
  PlanHook(sparse::Planner* planner, const kv::KvCache* kv) : planner_(planner), kv_(kv) {}
  /// The step's sequences, for the observer; borrowed until the step's forward returns.
  void begin_step(std::span<const sparse::SeqInput> seqs) { seqs_ = seqs; }
  void set_observer(AttentionObserver* obs) { observer_ = obs; }
  Status plan_layer(int layer, const void* q, model::AttentionLists* lists) override;

 private:
  sparse::Planner* planner_;
  const kv::KvCache* kv_;
  AttentionObserver* observer_ = nullptr;
  std::span<const sparse::SeqInput> seqs_;
};

}  // namespace gsa::engine
