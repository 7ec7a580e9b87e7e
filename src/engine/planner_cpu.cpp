// The planner for the CPU backend: the sparse::Selector selects on the host, inline on the
// engine's pool (lag 0, oracle ranking included) or through its asynchronous selector
// (lag >= 1); its lists are host memory, which is the CPU backend's memory.
#include <vector>

#include "core/timer.h"
#include "engine/planner.h"

namespace gsa::engine {
namespace {

class CpuPlanner final : public sparse::Planner {
 public:
  CpuPlanner(std::unique_ptr<sparse::Selector> sel, kv::KvCache* kv)
      : sel_(std::move(sel)), kv_(kv) {}

  Status check_request(const sparse::SeqInput& in) const override {
    const backend::Rank rank = sparse::rank_of(sel_->config(), in);
    if ((rank == backend::Rank::Oracle || rank == backend::Rank::Rerank) && sel_->config().lag != 0)
      return invalid_argument("{} reads the keys inline: it needs an engine with lag 0, not lag {}",
                              rank == backend::Rank::Oracle ? "oracle selection" : "rank_by rerank",
                              sel_->config().lag);
    return Status::ok();
  }

  const std::vector<float>& hash_matrix() const override { return sel_->hash_matrix(); }

  Status begin_step(std::span<const sparse::SeqInput> seqs, std::span<const int32_t>) override {
    // The step's new representations are written into the table the selector reads.
    step_ = next_step_++;
    source_.resize(seqs.size());
    return sel_->begin_step(seqs);
  }

  Result<sparse::LayerPlan> plan_layer(int layer, const void* q) override {
    Timer t;
    auto r = sel_->select_layer(layer, static_cast<const float*>(q), kv_->reps(layer), nullptr,
                                kv_->k(layer));
    select_seconds_ += t.seconds();
    if (!r) return r.status();
    for (size_t s = 0; s < source_.size(); ++s) source_[s] = sel_->source(int(s), layer);
    sparse::LayerPlan p;
    p.step = step_;
    p.layer = layer;
    p.indptr = r->indptr;
    p.indices = r->indices;
    p.last_len = r->last_len;
    p.n_lists = r->n_lists;
    p.per_kv_head = r->per_kv_head;
    p.host = true;
    p.source = source_;
    return p;
  }

  Status reps_written(std::span<const int32_t>) override { return Status::ok(); }
  void release(int64_t seq_id) override { sel_->release(seq_id); }
  void drain() override { sel_->drain(); }

  sparse::PlannerStats stats() const override {
    sparse::PlannerStats s;
    s.lists = sel_->stats();
    s.select_seconds = select_seconds_;
    return s;
  }

 private:
  std::unique_ptr<sparse::Selector> sel_;
  kv::KvCache* kv_;
  int64_t step_ = -1, next_step_ = 0;
  std::vector<sparse::ListSource> source_;  // [n_seqs] of the last plan_layer
  double select_seconds_ = 0;
};

}  // namespace

Result<std::unique_ptr<sparse::Planner>> make_cpu_planner(std::unique_ptr<sparse::Selector> sel,
                                                          kv::KvCache* kv) {
  return std::unique_ptr<sparse::Planner>(std::make_unique<CpuPlanner>(std::move(sel), kv));
}

}  // namespace gsa::engine
