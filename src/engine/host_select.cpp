// HostSelectPlanner over a backend's Transfer (backend/transfer.h): representation mirror,
// pinned list staging, query slots and the pump thread that feeds the asynchronous CPU selector;
// and the sparse::Planner the engine drives it through. Backend-neutral: Queue::Copy is the
// side stream on CUDA, and on the CPU every copy is done when it returns.
#include "engine/host_select.h"

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "backend/transfer.h"
#include "core/dtype.h"
#include "core/timer.h"
#include "engine/planner.h"

namespace gsa::engine {

namespace {

using backend::Event;
using backend::Queue;

class PipelinedHostSelectPlanner final : public HostSelectPlanner {
 public:
  PipelinedHostSelectPlanner(backend::Backend* b, backend::Transfer* t, kv::KvCache* kv,
                             sparse::Selector* sel, const model::HParams& h, int max_batch)
      : b_(b), t_(t), kv_(kv), sel_(sel), h_(h), max_batch_(max_batch),
        lag_(sel->config().lag), per_(sel->config().scope == sparse::Scope::PerKvHead ? h.n_kv_heads : 1) {}

  ~PipelinedHostSelectPlanner() override {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
    }
    cv_work_.notify_all();
    if (pump_.joinable()) pump_.join();
    // Copies may still be in flight into pinned memory: wait for both queues first.
    (void)b_->synchronize();
    (void)t_->synchronize(Queue::Copy);
    for (Slot& s : slots_) {
      if (s.event) {
        (void)t_->synchronize(s.event);
        t_->destroy_event(s.event);
      }
    }
    for (Event e : list_events_) t_->destroy_event(e);
    t_->free_pinned(slot_mem_);
    t_->free_pinned(reps_host_);
    t_->free_pinned(lists_host_);
    if (lists_dev_) b_->free(lists_dev_);
  }

  Status init() {
    const kv::KvConfig& kc = kv_->config();
    row_bytes_ = size_t(kc.n_kv_heads) * size_t(kc.rep_bytes);
    layer_bytes_ = row_bytes_ * size_t(kc.n_blocks);
    if (row_bytes_ == 0) return invalid_argument("host selection needs a representation table");
    // The queries are read as bf16: the activation type, which the engine also gives the KV
    // cache (CUDA runs bf16). The CPU backend's f32 activations select in place instead
    // (make_cpu_planner).
    if (kc.kv_type != DType::BF16)
      return unsupported("host selection reads bf16 queries (the CUDA activation and KV type); "
                         "this KV cache is {}", kc.kv_type == DType::F32 ? "f32" : "not bf16");
    GSA_ASSIGN_OR_RETURN(reps_host_, t_->alloc_pinned(layer_bytes_ * size_t(kc.n_layers)));
    q_stride_ = size_t(h_.n_heads) * size_t(h_.head_dim);
    slot_bytes_ = size_t(max_batch_) * q_stride_ * 2;
    // Two steps of queries in flight at most, plus headroom; the pump frees a slot when its
    // queries are submitted.
    const int n_slots = lag_ >= 1 ? 4 * h_.n_layers : 1;
    GSA_ASSIGN_OR_RETURN(slot_mem_, t_->alloc_pinned(slot_bytes_ * size_t(n_slots)));
    slots_.resize(size_t(n_slots));
    for (int i = 0; i < n_slots; ++i) {
      slots_[size_t(i)].host = static_cast<uint16_t*>(slot_mem_) + size_t(i) * slot_bytes_ / 2;
      // The pump sleeps on these events rather than spinning on the driver.
      GSA_ASSIGN_OR_RETURN(slots_[size_t(i)].event, t_->create_event(/*blocking_sync=*/lag_ >= 1));
      free_slots_.push_back(i);
    }
    list_events_.resize(size_t(h_.n_layers));
    for (Event& e : list_events_) {
      GSA_ASSIGN_OR_RETURN(e, t_->create_event());
    }
    if (lag_ >= 1) pump_ = std::thread([this] { pump_loop(); });
    return Status::ok();
  }

  Status begin_step(std::span<const sparse::SeqInput> seqs,
                    std::span<const int32_t> new_full_blocks) override {
    Timer t;
    GSA_RETURN_IF_ERROR(sel_->begin_step(seqs));
    new_full_.assign(new_full_blocks.begin(), new_full_blocks.end());
    std::sort(new_full_.begin(), new_full_.end());  // once per step; every layer mirrors them
    any_sparse_ = false;
    for (int i = 0; i < int(seqs.size()) && !any_sparse_; ++i) any_sparse_ = sel_->is_sparse(i);
    n_seqs_ = int(seqs.size());
    if (n_seqs_ > max_batch_)
      return invalid_argument("host selection: {} sequences in a step, at most {}", n_seqs_, max_batch_);
    // Staging for every layer's lists: [indptr n_lists+1][indices][last_len n_lists].
    const int64_t n_lists = int64_t(n_seqs_) * per_;
    int64_t blocks = 0;
    for (const auto& in : seqs) blocks += in.n_blocks;
    const int64_t per_layer = 2 * n_lists + 1 + blocks * per_ + 16;
    const int64_t words = per_layer * h_.n_layers;
    if (words > lists_cap_) {
      // The previous step's uploads finished with its forward (logits are read back), but
      // make sure before the buffers go.
      GSA_RETURN_IF_ERROR(b_->synchronize());
      t_->free_pinned(lists_host_);
      if (lists_dev_) b_->free(lists_dev_);
      lists_host_ = nullptr;
      lists_dev_ = nullptr;
      lists_cap_ = 0;
      GSA_ASSIGN_OR_RETURN(void* hp, t_->alloc_pinned(size_t(words) * 2 * 4));
      lists_host_ = static_cast<int32_t*>(hp);
      GSA_ASSIGN_OR_RETURN(void* dp, b_->alloc(size_t(words) * 2 * 4));
      lists_dev_ = static_cast<int32_t*>(dp);
      lists_cap_ = words * 2;
    }
    lists_used_ = 0;
    plan_seconds_ += t.seconds();
    return Status::ok();
  }

  Status plan_layer(int layer, const void* q, model::AttentionLists* lists) override {
    Timer t;
    // lag 0 selects from this layer's representations at once: mirror them first. With lag >= 1
    // the lists go up first, so their copy does not queue behind the mirror's wait for the
    // compute queue (the copy queue is in order).
    if (lag_ == 0) GSA_RETURN_IF_ERROR(mirror_layer(layer, new_full_));
    const void* reps_h = reps_host(layer);
    const size_t q_bytes = size_t(n_seqs_) * q_stride_ * 2;
    auto inline_select = [&]() -> Result<sparse::BlockLists> {
      // Inline: wait for this layer's queries (the compute stream runs ahead to this point).
      Slot& s = slots_[0];
      GSA_RETURN_IF_ERROR(copy_after_compute(s.host, q, q_bytes, s.event));
      Timer w;
      GSA_RETURN_IF_ERROR(t_->synchronize(s.event));
      wait_seconds_ += w.seconds();
      qf_.resize(size_t(n_seqs_) * q_stride_);
      for (size_t i = 0; i < qf_.size(); ++i) qf_[i] = bf16_to_f32(s.host[i]);
      return sel_->select_layer(layer, qf_.data(), reps_h);
    };
    Result<sparse::BlockLists> r = lag_ == 0 ? (any_sparse_ ? inline_select()
                                                           : sel_->select_layer(layer, nullptr, nullptr))
                                             : sel_->select_layer(layer, nullptr, nullptr, &deferred_);
    if (!r) return r.status();
    GSA_RETURN_IF_ERROR(upload_lists(layer, *r, lists));
    if (lag_ >= 1) GSA_RETURN_IF_ERROR(mirror_layer(layer, new_full_));
    if (lag_ >= 1 && !deferred_.empty()) {
      int slot = -1;
      {
        std::lock_guard<std::mutex> lk(mu_);
        if (!free_slots_.empty()) {
          slot = free_slots_.back();
          free_slots_.pop_back();
        } else {
          ++layers_dropped_;
        }
      }
      if (slot >= 0) {
        Slot& s = slots_[size_t(slot)];
        Status st = copy_after_compute(s.host, q, q_bytes, s.event);
        std::lock_guard<std::mutex> lk(mu_);
        if (!st.is_ok()) {
          free_slots_.push_back(slot);
          return st;
        }
        Job j;
        j.slot = slot;
        j.jobs = std::move(deferred_);
        deferred_ = {};
        queue_.push_back(std::move(j));
        cv_work_.notify_one();
      }
    }
    plan_seconds_ += t.seconds();
    return Status::ok();
  }

  Status mirror_reps(std::span<const int32_t> blocks) override {
    if (blocks.empty()) return Status::ok();
    std::vector<int32_t> v(blocks.begin(), blocks.end());
    std::sort(v.begin(), v.end());
    for (int l = 0; l < h_.n_layers; ++l) GSA_RETURN_IF_ERROR(mirror_layer(l, v));
    return Status::ok();
  }

  void flush() override {
    std::unique_lock<std::mutex> lk(mu_);
    cv_idle_.wait(lk, [&] { return (queue_.empty() && !busy_) || stop_; });
  }

  HostSelectStats stats() const override {
    std::lock_guard<std::mutex> lk(mu_);
    HostSelectStats s;
    s.plan_seconds = plan_seconds_;
    s.wait_seconds = wait_seconds_;
    s.pump_seconds = pump_seconds_;
    s.layers_submitted = layers_submitted_;
    s.layers_dropped = layers_dropped_;
    s.mirrored_rows = mirrored_rows_;
    return s;
  }

 private:
  struct Slot {
    uint16_t* host = nullptr;  // [max_batch, n_heads, head_dim] bf16, pinned
    Event event = nullptr;
  };
  struct Job {
    int slot = 0;
    sparse::DeferredJobs jobs;
  };

  void* reps_host(int layer) const {
    return static_cast<char*>(reps_host_) + size_t(layer) * layer_bytes_;
  }

  // Backend memory to pinned host memory on the copy queue, after the work queued on the
  // compute queue so far (the query or representations it wrote); `done` may be null, a later
  // copy's event then also covering this one (the copy queue is in order). The compute queue
  // does not wait.
  Status copy_after_compute(void* dst_host, const void* src, size_t bytes, Event done) {
    GSA_RETURN_IF_ERROR(t_->wait_queue(Queue::Copy, Queue::Compute));
    return t_->copy_to_host_async(dst_host, src, bytes, Queue::Copy, done);
  }

  // Copies the rows of `blocks` (sorted ids) of one layer to the same rows of the host mirror:
  // one gather, which merges runs of consecutive ids into one copy each.
  Status mirror_layer(int layer, const std::vector<int32_t>& blocks) {
    if (blocks.empty()) return Status::ok();
    backend::BlockCopy c;
    c.dir = backend::CopyDir::DeviceToHost;
    c.dst = reps_host(layer);
    c.src = kv_->reps(layer);
    c.block_bytes = row_bytes_;
    c.dst_blocks = c.src_blocks = kv_->config().n_blocks;
    c.src_index = blocks;
    c.dst_index = blocks;
    GSA_RETURN_IF_ERROR(t_->wait_queue(Queue::Copy, Queue::Compute));
    GSA_RETURN_IF_ERROR(t_->gather_async(c, Queue::Copy, nullptr));
    std::lock_guard<std::mutex> lk(mu_);
    mirrored_rows_ += int64_t(blocks.size());
    return Status::ok();
  }

  // The lists go up on the copy queue, and the compute queue waits for that copy only where
  // the layer's attention reads them: no copy of its own in the compute queue.
  Status upload_lists(int layer, const sparse::BlockLists& bl, model::AttentionLists* out) {
    const int64_t n = bl.n_lists;
    const int64_t n_idx = bl.indptr[n];
    const int64_t words = (n + 1) + n_idx + n;
    if (lists_used_ + words > lists_cap_)
      return internal_error("host selection: list staging overflow ({} + {} > {})", lists_used_,
                            words, lists_cap_);
    int32_t* h = lists_host_ + lists_used_;
    std::copy(bl.indptr, bl.indptr + n + 1, h);
    std::copy(bl.indices, bl.indices + n_idx, h + n + 1);
    std::copy(bl.last_len, bl.last_len + n, h + n + 1 + n_idx);
    int32_t* d = lists_dev_ + lists_used_;
    Event ev = list_events_[size_t(layer)];
    GSA_RETURN_IF_ERROR(t_->copy_to_device_async(d, h, size_t(words) * 4, Queue::Copy, ev));
    GSA_RETURN_IF_ERROR(t_->wait(Queue::Compute, ev));
    lists_used_ += (words + 15) / 16 * 16;
    out->indptr = d;
    out->indices = d + n + 1;
    out->last_len = d + n + 1 + n_idx;
    out->per_kv_head = bl.per_kv_head;
    return Status::ok();
  }

  void pump_loop() {
    std::vector<float> qf;
    for (;;) {
      Job* job = nullptr;
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_work_.wait(lk, [&] { return stop_ || !queue_.empty(); });
        if (stop_) break;
        job = &queue_.front();
        busy_ = true;
      }
      // Only this thread pops the queue, so `job` stays valid while the lock is released.
      const Slot& s = slots_[size_t(job->slot)];
      Status st = t_->synchronize(s.event);
      Timer t;
      if (st.is_ok()) {
        const sparse::DeferredJobs& d = job->jobs;
        int32_t rows = 0;
        for (int32_t r : d.rows) rows = std::max(rows, r + 1);
        qf.resize(size_t(rows) * q_stride_);
        for (size_t i = 0; i < qf.size(); ++i) qf[i] = bf16_to_f32(s.host[i]);
        st = sel_->submit_deferred(d, qf.data(), reps_host(d.layer));
      }
      const double secs = t.seconds();
      std::lock_guard<std::mutex> lk(mu_);
      pump_seconds_ += secs;
      if (st.is_ok()) ++layers_submitted_;
      else ++layers_dropped_;
      free_slots_.push_back(job->slot);
      queue_.pop_front();
      busy_ = false;
      cv_idle_.notify_all();
    }
    std::lock_guard<std::mutex> lk(mu_);
    busy_ = false;
    cv_idle_.notify_all();
  }

  backend::Backend* b_;
  backend::Transfer* t_;  // b_'s
  kv::KvCache* kv_;
  sparse::Selector* sel_;
  model::HParams h_;
  int max_batch_;
  int lag_;
  int per_;
  size_t row_bytes_ = 0, layer_bytes_ = 0, q_stride_ = 0, slot_bytes_ = 0;
  void* reps_host_ = nullptr;
  void* slot_mem_ = nullptr;
  std::vector<Slot> slots_;
  std::vector<Event> list_events_;  // [n_layers] a layer's list upload landed
  int32_t* lists_host_ = nullptr;
  int32_t* lists_dev_ = nullptr;
  int64_t lists_cap_ = 0, lists_used_ = 0;
  std::vector<int32_t> new_full_;  // this step's newly full blocks, sorted
  bool any_sparse_ = false;        // some sequence of this step decodes sparsely
  int n_seqs_ = 0;
  sparse::DeferredJobs deferred_;
  std::vector<float> qf_;
  double plan_seconds_ = 0, wait_seconds_ = 0;

  mutable std::mutex mu_;
  std::condition_variable cv_work_, cv_idle_;
  std::deque<Job> queue_;
  std::vector<int> free_slots_;
  bool busy_ = false;
  bool stop_ = false;
  double pump_seconds_ = 0;
  int64_t layers_submitted_ = 0, layers_dropped_ = 0, mirrored_rows_ = 0;
  std::thread pump_;
};

}  // namespace

Result<std::unique_ptr<HostSelectPlanner>> HostSelectPlanner::create(
    backend::Backend* b, kv::KvCache* kv, sparse::Selector* sel, const model::HParams& h,
    int max_batch) {
  backend::Transfer* t = b->transfer();
  if (!t)
    return unsupported("host selection needs a backend with asynchronous transfers; {} has none",
                       b->name());
  auto p = std::make_unique<PipelinedHostSelectPlanner>(b, t, kv, sel, h, max_batch);
  GSA_RETURN_IF_ERROR(p->init());
  return std::unique_ptr<HostSelectPlanner>(std::move(p));
}

namespace {

// The engine's view of host selection: the Selector and the pipeline that feeds it, owned
// together (the pipeline is destroyed first, so its pump thread stops before the Selector it
// submits to goes).
class HostSelectPlan final : public sparse::Planner {
 public:
  HostSelectPlan(std::unique_ptr<sparse::Selector> sel, std::unique_ptr<HostSelectPlanner> host,
                 int n_kv_heads)
      : sel_(std::move(sel)), host_(std::move(host)), n_kv_heads_(n_kv_heads) {}

  Status check_request(const sparse::SeqInput& in) const override {
    if (in.oracle) return invalid_argument("oracle selection on cuda needs selector=device");
    if (sparse::rank_of(sel_->config(), in) == backend::Rank::Rerank)
      return invalid_argument("rank_by rerank on cuda needs selector=device");
    return Status::ok();
  }

  const std::vector<float>& hash_matrix() const override { return sel_->hash_matrix(); }

  Status begin_step(std::span<const sparse::SeqInput> seqs,
                    std::span<const int32_t> new_full_blocks) override {
    step_ = next_step_++;
    source_.resize(seqs.size());
    return host_->begin_step(seqs, new_full_blocks);
  }

  Result<sparse::LayerPlan> plan_layer(int layer, const void* q) override {
    model::AttentionLists lists;
    GSA_RETURN_IF_ERROR(host_->plan_layer(layer, q, &lists));
    for (size_t s = 0; s < source_.size(); ++s) source_[s] = sel_->source(int(s), layer);
    sparse::LayerPlan p;
    p.step = step_;
    p.layer = layer;
    p.indptr = lists.indptr;
    p.indices = lists.indices;
    p.last_len = lists.last_len;
    p.n_lists = int(source_.size()) * (lists.per_kv_head ? n_kv_heads_ : 1);
    p.per_kv_head = lists.per_kv_head;
    p.host = false;  // uploaded from pinned staging: device memory
    p.source = source_;
    return p;
  }

  Status reps_written(std::span<const int32_t> blocks) override {
    return host_->mirror_reps(blocks);
  }

  // No query of the sequence may reach the CPU selector after its release: the pump first
  // submits everything copied so far.
  void release(int64_t seq_id) override {
    host_->flush();
    sel_->release(seq_id);
  }

  void drain() override {
    host_->flush();
    sel_->drain();
  }

  sparse::PlannerStats stats() const override {
    sparse::PlannerStats s;
    s.lists = sel_->stats();
    s.host = host_->stats();
    s.select_seconds = s.host.plan_seconds;
    return s;
  }

 private:
  std::unique_ptr<sparse::Selector> sel_;
  std::unique_ptr<HostSelectPlanner> host_;
  int n_kv_heads_;
  int64_t step_ = -1, next_step_ = 0;
  std::vector<sparse::ListSource> source_;  // [n_seqs] of the last plan_layer
};

}  // namespace

Result<std::unique_ptr<sparse::Planner>> make_host_select_planner(
    std::unique_ptr<sparse::Selector> sel, backend::Backend* b, kv::KvCache* kv,
    const model::HParams& h, int max_batch) {
  if (sel->config().selection == sparse::Selection::Oracle)
    return unsupported("on cuda, oracle selection runs with selector=device");
  if (sel->config().rank_by == sparse::RankBy::Rerank)
    return unsupported("on cuda, rank_by rerank runs with selector=device");
  GSA_ASSIGN_OR_RETURN(auto host, HostSelectPlanner::create(b, kv, sel.get(), h, max_batch));
  return std::unique_ptr<sparse::Planner>(
      std::make_unique<HostSelectPlan>(std::move(sel), std::move(host), h.n_kv_heads));
}

}  // namespace gsa::engine
