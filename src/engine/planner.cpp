// make_planner: which sparse::Planner runs for a config and a backend; PlanHook: plans to the
// model's attention lists.
#include "engine/planner.h"

#include "engine/engine.h"

namespace gsa::engine {

Result<std::unique_ptr<sparse::Planner>> make_planner(const sparse::SparseConfig& cfg,
                                                      backend::Backend* b, kv::KvCache* kv,
                                                      const model::HParams& h, ThreadPool* pool,
                                                      int max_batch) {
  // The Selector first, on every backend: it validates cfg against the model (head_dim for
  // hash and quant, the head groups) and owns the hash matrix rep_update writes with.
  sparse::SelectorDims d{h.n_layers, h.n_heads, h.n_kv_heads, h.head_dim};
  GSA_ASSIGN_OR_RETURN(auto sel, sparse::Selector::create(cfg, d, pool));
  // The CPU backend's memory is host memory: the host selects, whichever selector is named
  // (selector=cpu there only permits lag >= 1).
  if (b->kind() == backend::DeviceKind::Cpu) return make_cpu_planner(std::move(sel), kv);
  if (cfg.selector == sparse::SelectorKind::Cpu)
    return make_host_select_planner(std::move(sel), b, kv, h, max_batch);
  return make_device_planner(std::move(sel), b, kv, h);
}

Status PlanHook::plan_layer(int layer, const void* q, model::AttentionLists* lists) {
  GSA_ASSIGN_OR_RETURN(sparse::LayerPlan p, planner_->plan_layer(layer, q));
  // The observer reads the lists on the host; lists only the backend can read (device
  // selection, uploaded lists) are not shown to it.
  if (observer_ && p.host) {
    const sparse::BlockLists bl{p.indptr, p.indices, p.last_len, p.n_lists, p.per_kv_head};
    observer_->observe(layer, q, seqs_, bl, *kv_);
  }
  lists->indptr = p.indptr;
  lists->indices = p.indices;
  lists->last_len = p.last_len;
  lists->per_kv_head = p.per_kv_head;
  return Status::ok();
}

}  // namespace gsa::engine
