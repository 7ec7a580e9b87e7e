// AsyncSelector: a ring of preallocated query slots, a FIFO of pending jobs (coalesced per
// (sequence, layer)), worker threads running cpu::block_select, and per-key published results
// swapped in under the lock (double-buffered: a worker fills its own scratch, then swaps).
#include "sparse/async_selector.h"

#include <algorithm>
#include <cstring>
#include <new>

#include "backend/cpu/cpu_kernels.h"
#include "core/log.h"

namespace gsa::sparse {

namespace {
constexpr int kMaxWorkers = 64;
constexpr int kMaxSlots = 1 << 16;
constexpr int kMaxHeadDim = 1024;
}  // namespace

AsyncSelector::AsyncSelector(const SparseConfig& cfg, const AsyncSelectorOptions& opt,
                             std::vector<float> hash_w)
    : cfg_(cfg), opt_(opt), hash_w_(std::move(hash_w)),
      lists_per_seq_(cfg.scope == Scope::PerKvHead ? opt.n_kv_heads : 1) {}

Result<std::unique_ptr<AsyncSelector>> AsyncSelector::create(const SparseConfig& cfg,
                                                             const AsyncSelectorOptions& opt,
                                                             std::vector<float> hash_w) {
  GSA_RETURN_IF_ERROR(validate(cfg));
  if (opt.n_layers <= 0 || opt.n_heads <= 0 || opt.n_kv_heads <= 0 || opt.head_dim <= 0 ||
      opt.head_dim > kMaxHeadDim || opt.n_heads % opt.n_kv_heads != 0)
    return invalid_argument("async selector: bad dims n_layers {}, n_heads {}, n_kv_heads {}, "
                            "head_dim {}", opt.n_layers, opt.n_heads, opt.n_kv_heads,
                            opt.head_dim);
  if (opt.n_workers < 1 || opt.n_workers > kMaxWorkers)
    return invalid_argument("async selector: n_workers {} outside [1, {}]", opt.n_workers,
                            kMaxWorkers);
  if (opt.queue_slots < 1 || opt.queue_slots > kMaxSlots)
    return invalid_argument("async selector: queue_slots {} outside [1, {}]", opt.queue_slots,
                            kMaxSlots);
  if (opt.max_blocks_per_seq < 1)
    return invalid_argument("async selector: max_blocks_per_seq {} < 1", opt.max_blocks_per_seq);
  if (cfg.representation == backend::RepKind::Hash &&
      (opt.head_dim % 32 != 0 || hash_w.size() != size_t(opt.head_dim) * opt.head_dim))
    return invalid_argument("async selector: hash needs head_dim % 32 == 0 and a [{}, {}] matrix",
                            opt.head_dim, opt.head_dim);
  std::unique_ptr<AsyncSelector> self;
  try {
    self.reset(new AsyncSelector(cfg, opt, std::move(hash_w)));
    self->slots_.resize(size_t(opt.queue_slots));
    for (auto& slot : self->slots_) slot.q.resize(size_t(opt.n_heads) * opt.head_dim);
    self->free_slots_.reserve(size_t(opt.queue_slots));
    for (int i = opt.queue_slots - 1; i >= 0; --i) self->free_slots_.push_back(i);
    self->pending_by_key_.reserve(size_t(opt.queue_slots));
    self->running_.assign(size_t(opt.n_workers), 0);
    self->running_seq_.assign(size_t(opt.n_workers), 0);
  } catch (const std::bad_alloc&) {
    return out_of_memory("async selector: cannot allocate {} query slots", opt.queue_slots);
  }
  for (int w = 0; w < opt.n_workers; ++w)
    self->workers_.emplace_back([s = self.get(), w] { s->worker_loop(w); });
  return self;
}

AsyncSelector::~AsyncSelector() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_work_.notify_all();
  for (auto& t : workers_) t.join();
}

Status AsyncSelector::submit(int64_t step, int layer, std::span<const AsyncJobInput> seqs,
                             const void* reps) {
  if (layer < 0 || layer >= opt_.n_layers)
    return invalid_argument("async selector: layer {} outside [0, {})", layer, opt_.n_layers);
  if (seqs.empty()) return Status::ok();
  if (!reps) return invalid_argument("async selector: null reps");
  for (size_t i = 0; i < seqs.size(); ++i) {
    const AsyncJobInput& in = seqs[i];
    const int64_t n = in.n_blocks;
    if (n < 1 || n > opt_.max_blocks_per_seq || !in.block_table || !in.q)
      return invalid_argument("async selector: sequence {} has {} blocks (1..{}), block_table "
                              "{}, q {}", in.seq_id, n, opt_.max_blocks_per_seq,
                              in.block_table ? "set" : "null", in.q ? "set" : "null");
    if (in.seq_len <= (n - 1) * cfg_.block_size || in.seq_len > n * cfg_.block_size)
      return invalid_argument("async selector: sequence {} has {} tokens but {} blocks of {}",
                              in.seq_id, in.seq_len, n, cfg_.block_size);
    for (int64_t j = 0; j < n; ++j)
      if (in.block_table[j] < 0)
        return invalid_argument("async selector: sequence {} block {} has physical id {}",
                                in.seq_id, j, in.block_table[j]);
  }
  const size_t q_elems = size_t(opt_.n_heads) * opt_.head_dim;
  {
    std::lock_guard<std::mutex> lk(mu_);
    for (const AsyncJobInput& in : seqs) {
      const Key key{in.seq_id, layer};
      int slot_id;
      auto it = pending_by_key_.find(key);
      if (it != pending_by_key_.end()) {  // a newer query replaces a job not started yet
        slot_id = it->second;
        ++stats_.coalesced;
      } else {
        if (free_slots_.empty()) {  // ring full: the oldest pending job is worth the least
          slot_id = pending_.front();
          pending_.pop_front();
          pending_by_key_.erase(Key{slots_[size_t(slot_id)].seq_id, slots_[size_t(slot_id)].layer});
          ++stats_.dropped;
        } else {
          slot_id = free_slots_.back();
          free_slots_.pop_back();
        }
        pending_.push_back(slot_id);
        pending_by_key_[key] = slot_id;
      }
      Slot& slot = slots_[size_t(slot_id)];
      slot.seq_id = in.seq_id;
      slot.step = step;
      slot.layer = layer;
      slot.seq_len = in.seq_len;
      slot.n_blocks = in.n_blocks;
      slot.budget_tokens = in.budget_tokens;
      slot.rank = in.rank;
      slot.reps = reps;
      std::memcpy(slot.q.data(), in.q, q_elems * sizeof(float));
      slot.table.assign(in.block_table, in.block_table + in.n_blocks);
      ++stats_.submitted;
    }
  }
  cv_work_.notify_all();
  return Status::ok();
}

Status AsyncSelector::run_job(const Slot& job, AsyncResult* out,
                              std::vector<int32_t>* scratch) const {
  const int n = job.n_blocks;
  const int size = budget_blocks(cfg_, n, job.budget_tokens);
  const int n_lists = lists_per_seq_;
  scratch->resize(size_t(n_lists) * size + size_t(n_lists) + size_t(n_lists) + 1 + 2);
  int32_t* indices = scratch->data();
  int32_t* last_len = indices + size_t(n_lists) * size;
  int32_t* out_indptr = last_len + n_lists;
  int32_t* bt_indptr = out_indptr + n_lists + 1;
  for (int i = 0; i <= n_lists; ++i) out_indptr[i] = i * size;
  bt_indptr[0] = 0;
  bt_indptr[1] = n;

  backend::BlockSelectParams p = select_params(cfg_, opt_.n_heads, opt_.n_kv_heads, opt_.head_dim);
  p.q = job.q.data();
  p.reps = job.reps;
  p.block_table_indptr = bt_indptr;
  p.block_table = job.table.data();
  p.seq_len = &job.seq_len;
  p.out_indptr = out_indptr;
  p.out_indices = indices;
  p.out_last_len = last_len;
  p.n_seqs = 1;
  p.hash_w = hash_w_.empty() ? nullptr : hash_w_.data();
  if (job.rank == uint8_t(backend::Rank::Oracle) || job.rank == uint8_t(backend::Rank::Rerank))
    return invalid_argument("async selector: the oracle and rerank read the keys: they run inline only");
  p.rank = &job.rank;
  p.any_mass = job.rank == uint8_t(backend::Rank::Mass);
  GSA_RETURN_IF_ERROR(cpu::block_select(p, nullptr));

  // Physical ids -> logical indices: the list is sorted by logical index, so one forward walk
  // over the block table per list finds each id.
  out->step = job.step;
  out->n_blocks = n;
  out->list_size = size;
  out->logical.resize(size_t(n_lists) * size);
  for (int l = 0; l < n_lists; ++l) {
    int j = 0;
    for (int k = 0; k < size; ++k) {
      const int32_t id = indices[size_t(l) * size + k];
      while (j < n && job.table[size_t(j)] != id) ++j;
      if (j == n) return internal_error("async selector: selected block {} not in the table", id);
      out->logical[size_t(l) * size + k] = j++;
    }
  }
  return Status::ok();
}

void AsyncSelector::worker_loop(int index) {
  AsyncResult result;
  std::vector<int32_t> scratch;
  std::unique_lock<std::mutex> lk(mu_);
  for (;;) {
    cv_work_.wait(lk, [this] { return stop_ || !pending_.empty(); });
    if (stop_) return;
    const int slot_id = pending_.front();
    pending_.pop_front();
    const Slot& slot = slots_[size_t(slot_id)];
    const Key key{slot.seq_id, slot.layer};
    pending_by_key_.erase(key);
    running_[size_t(index)] = 1;
    running_seq_[size_t(index)] = slot.seq_id;
    lk.unlock();
    // The slot is neither pending nor free while it runs, so nothing else touches it.
    const Status st = run_job(slot, &result, &scratch);
    lk.lock();
    running_[size_t(index)] = 0;
    if (st.is_ok()) {
      AsyncResult& published = results_[key];
      if (result.step >= published.step) std::swap(published, result);
      ++stats_.completed;
    } else {
      ++stats_.failed;
      log_warn("async selector: job for sequence {} layer {} failed: {}", key.seq_id,
                   key.layer, st.to_string());
    }
    free_slots_.push_back(slot_id);
    cv_idle_.notify_all();
  }
}

bool AsyncSelector::latest(int64_t seq_id, int layer, AsyncResult* out) const {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = results_.find(Key{seq_id, layer});
  if (it == results_.end()) return false;
  out->step = it->second.step;
  out->n_blocks = it->second.n_blocks;
  out->list_size = it->second.list_size;
  out->logical.assign(it->second.logical.begin(), it->second.logical.end());
  return true;
}

void AsyncSelector::cancel(int64_t seq_id) {
  std::unique_lock<std::mutex> lk(mu_);
  for (auto it = pending_.begin(); it != pending_.end();) {
    const Slot& slot = slots_[size_t(*it)];
    if (slot.seq_id == seq_id) {
      pending_by_key_.erase(Key{slot.seq_id, slot.layer});
      free_slots_.push_back(*it);
      it = pending_.erase(it);
      ++stats_.cancelled;
    } else {
      ++it;
    }
  }
  cv_idle_.wait(lk, [&] {
    for (size_t w = 0; w < running_.size(); ++w)
      if (running_[w] && running_seq_[w] == seq_id) return false;
    return true;
  });
  for (auto it = results_.begin(); it != results_.end();) {
    it = it->first.seq_id == seq_id ? results_.erase(it) : std::next(it);
  }
}

void AsyncSelector::drain() {
  std::unique_lock<std::mutex> lk(mu_);
  cv_idle_.wait(lk, [&] {
    if (!pending_.empty()) return false;
    return std::none_of(running_.begin(), running_.end(), [](char r) { return r != 0; });
  });
}

AsyncStats AsyncSelector::stats() const {
  std::lock_guard<std::mutex> lk(mu_);
  return stats_;
}

}  // namespace gsa::sparse
