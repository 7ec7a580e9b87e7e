// Scheduler: admission by KV blocks, chunked prefill across requests, decode batches with
// preemption by recompute, cancellation and the release of finished samples.
#include "engine/scheduler.h"

#include <algorithm>

#include "engine/store_tier.h"

namespace gsa::engine {

Scheduler::Scheduler(kv::KvCache* kv, sparse::Planner* planner, int max_batch, int prefill_chunk)
    : kv_(kv),
      planner_(planner),
      max_batch_(max_batch),
      prefill_chunk_(prefill_chunk),
      block_size_(kv->config().block_size) {}

Scheduler::~Scheduler() {
  for (auto& s : running_) kv_->release(&s->table);
  for (auto& j : waiting_) kv_->release(&j->table);
}

int Scheduler::blocks_for(int64_t tokens) const {
  return int((tokens + block_size_ - 1) / block_size_);
}

int64_t Scheduler::blocks_needed(const RequestInput& in) const {
  return blocks_for(int64_t(in.prompt.size())) + in.n;
}

int64_t Scheduler::add(RequestInput in) {
  auto r = std::make_unique<Request>();
  r->id = next_request_++;
  r->in = std::move(in);
  auto j = std::make_unique<PrefillJob>();
  j->req = r.get();
  waiting_.push_back(std::move(j));
  const int64_t id = r->id;
  requests_.emplace(id, std::move(r));
  return id;
}

Request* Scheduler::add_started(RequestInput in) {
  auto r = std::make_unique<Request>();
  r->id = next_request_++;
  r->in = std::move(in);
  r->started = true;
  r->live_samples = r->in.n;
  Request* p = r.get();
  requests_.emplace(p->id, std::move(r));
  return p;
}

void Scheduler::add_running(std::unique_ptr<Seq> s) { running_.push_back(std::move(s)); }

Status Scheduler::cancel(int64_t id) {
  auto it = requests_.find(id);
  if (it == requests_.end() || it->second->cancelled)
    return not_found("no queued or running request {}", id);
  it->second->cancelled = true;
  return Status::ok();
}

void Scheduler::drop_job(PrefillJob* j) {
  kv_->release(&j->table);
  if (j->admitted) committed_ -= j->committed;
  waiting_.erase(std::find_if(waiting_.begin(), waiting_.end(),
                              [j](const auto& p) { return p.get() == j; }));
}

// A resumed sample goes back to the running set so that reap() frees it once it is finished.
static void unpark(std::vector<std::unique_ptr<Seq>>& parked, std::vector<std::unique_ptr<Seq>>& running,
                   Seq* s) {
  auto it = std::find_if(parked.begin(), parked.end(), [s](const auto& p) { return p.get() == s; });
  running.push_back(std::move(*it));
  parked.erase(it);
}

// Ends a job's request or resumed sample with `reason` and drops the job.
void Scheduler::end_job(PrefillJob* j, FinishReason reason, std::string error, StepPlan* plan) {
  if (j->resume) {
    Seq* s = j->resume;
    s->preempted = false;
    plan->ended.push_back({s, 0, 0, reason, std::move(error)});
    unpark(parked_, running_, s);
    drop_job(j);
  } else {
    plan->ended.push_back({nullptr, j->req->id, j->req->in.n, reason, std::move(error)});
    const int64_t id = j->req->id;
    drop_job(j);
    requests_.erase(id);
  }
}

void Scheduler::end_cancelled(StepPlan* plan) {
  std::vector<PrefillJob*> gone;
  for (auto& j : waiting_)
    if (j->req->cancelled) gone.push_back(j.get());
  for (PrefillJob* j : gone) end_job(j, FinishReason::Cancelled, {}, plan);
  for (auto& s : running_)
    if (s->req->cancelled && !s->finished && !s->preempted)
      plan->ended.push_back({s.get(), 0, 0, FinishReason::Cancelled, {}});
}

StepPlan Scheduler::schedule() {
  StepPlan plan;
  end_cancelled(&plan);
  // Prefill first while the decode batch has room, so new requests join quickly; decode when
  // no prompt can take KV now (finishing samples free blocks).
  const auto live = [](const auto& s) { return !s->finished && !s->req->cancelled; };
  const int64_t n_live = std::count_if(running_.begin(), running_.end(), live);
  if (!waiting_.empty() && n_live < max_batch_) {
    schedule_prefill(&plan);
    if (!plan.prefill.empty() || n_live == 0) return plan;
  }
  if (n_live > 0) schedule_decode(&plan);
  return plan;
}

// Admits a waiting job when its blocks fit beside those promised to others. `alone`: nothing
// else holds or waits for blocks, so the job is admitted whatever the count says (add_request
// checked that it fits an empty cache).
bool Scheduler::admit(PrefillJob& j, bool alone, StepPlan* plan) {
  int32_t matched = 0;
  if (j.table.blocks.empty()) {
    matched = kv_->match_prefix(j.tokens(), &j.table);
    if (store_) matched = store_->extend(j.tokens(), &j.table);
  }
  const int64_t need = blocks_for(j.n_total()) - int64_t(j.table.blocks.size()) +
                       (j.resume ? 1 : j.req->in.n);
  if (!alone && need > int64_t(kv_->n_available()) - committed_) {
    kv_->release(&j.table);  // the matched blocks stay cached, free to evict meanwhile
    return false;
  }
  j.n_done = matched;
  if (!j.resume) plan->prefix_hit_tokens += matched;
  j.admitted = true;
  j.committed = int32_t(need);
  committed_ += need;
  return true;
}

void Scheduler::schedule_prefill(StepPlan* plan) {
  int budget = prefill_chunk_;
  std::pair<PrefillJob*, std::string> failed{nullptr, {}};
  bool admitting = true;  // first come, first served: none is admitted past one that waits
  for (auto& jp : waiting_) {
    if (budget <= 0) break;
    PrefillJob& j = *jp;
    if (!j.admitted) {
      if (!admitting) continue;
      const bool alone = running_.empty() && committed_ == 0 && plan->prefill.empty() &&
                         std::none_of(waiting_.begin(), waiting_.end(), [](const auto& w) { return w->admitted; });
      if (!admit(j, alone, plan)) {
        admitting = false;
        continue;
      }
    }
    const int32_t n = std::min<int32_t>(budget, j.n_total() - j.n_done);
    std::vector<int32_t> slots;
    const size_t before = j.table.blocks.size();
    Status st = kv_->reserve(&j.table, n, &slots);
    if (!st.is_ok()) {
      // Nothing else would free blocks for it: it fails. Otherwise it waits.
      if (plan->prefill.empty() && running_.empty()) failed = {&j, st.message()};
      break;
    }
    const int32_t grown = int32_t(j.table.blocks.size() - before);
    const int32_t taken = std::min(grown, j.committed);
    j.committed -= taken;
    committed_ -= taken;
    plan->prefill.push_back({&j, j.n_done, n, std::move(slots), j.n_done + n == j.n_total()});
    j.n_done += n;
    budget -= n;
  }
  if (failed.first) end_job(failed.first, FinishReason::Error, failed.second, plan);
}

void Scheduler::preempt(Seq& s) {
  // Before the blocks go: no selection work of the sample may still read them.
  if (planner_) planner_->release(s.id);
  kv_->release(&s.table);
  s.preempted = true;
  auto j = std::make_unique<PrefillJob>();
  j->req = s.req;
  j->resume = &s;
  waiting_.push_front(std::move(j));
}

void Scheduler::schedule_decode(StepPlan* plan) {
  std::vector<Seq*> cand;
  for (auto& s : running_)
    if (!s->finished && !s->req->cancelled) cand.push_back(s.get());
  size_t end = cand.size();
  for (size_t i = 0; i < end && int(plan->decode.size()) < max_batch_; ++i) {
    Seq& s = *cand[i];
    for (;;) {
      std::vector<int32_t> slots;
      Status st = kv_->reserve(&s.table, 1, &slots);
      if (st.is_ok()) {
        plan->decode.push_back(&s);
        plan->decode_slots.push_back(slots[0]);
        break;
      }
      if (end > i + 1) {  // the most recently started sample gives up its blocks
        preempt(*cand[--end]);
        plan->preempted++;
        continue;
      }
      const bool others_hold_blocks =
          !plan->decode.empty() ||
          std::any_of(waiting_.begin(), waiting_.end(), [](const auto& w) { return w->admitted; });
      if (others_hold_blocks && blocks_for(s.table.n_tokens + 1) + 1 <= kv_->pool().n_blocks()) {
        preempt(s);
        plan->preempted++;
      } else {
        plan->ended.push_back({&s, 0, 0, FinishReason::Error,
                               st.message() + " (the sequence needs more KV than the cache holds; raise --kv-tokens)"});
      }
      break;
    }
  }
  for (auto it = running_.begin(); it != running_.end();) {
    if ((*it)->preempted) {
      parked_.push_back(std::move(*it));
      it = running_.erase(it);
    } else {
      ++it;
    }
  }
}

std::vector<Started> Scheduler::prefill_done(const StepPlan& plan) {
  std::vector<Started> started;
  for (const PrefillChunk& c : plan.prefill) {
    PrefillJob& j = *c.job;
    kv_->index_full_blocks(&j.table, j.tokens());
    if (!c.completes) continue;
    if (j.resume) {
      Seq* s = j.resume;
      s->table = std::move(j.table);
      s->preempted = false;
      s->id = next_seq_++;  // a fresh identity for the planner
      unpark(parked_, running_, s);
    } else {
      Request& r = *j.req;
      r.started = true;
      r.live_samples = r.in.n;
      Started st{&r, {}};
      for (int k = 0; k < r.in.n; ++k) {
        auto s = std::make_unique<Seq>();
        s->id = next_seq_++;
        s->req = &r;
        s->sample = k;
        s->table = k + 1 < r.in.n ? kv_->fork(j.table) : std::move(j.table);
        s->tokens = r.in.prompt;
        st.samples.push_back(s.get());
        running_.push_back(std::move(s));
      }
      started.push_back(std::move(st));
    }
    drop_job(&j);
  }
  return started;
}

void Scheduler::reap() {
  for (auto& sp : running_) {
    if (!sp->finished) continue;
    // Before the blocks go: no selection work of the sample may still read them.
    if (planner_) planner_->release(sp->id);
    kv_->release(&sp->table);
    sp->req->live_samples--;
  }
  running_.erase(std::remove_if(running_.begin(), running_.end(), [](const auto& s) { return s->finished; }),
                 running_.end());
  for (auto it = requests_.begin(); it != requests_.end();) {
    if (it->second->started && it->second->live_samples <= 0) it = requests_.erase(it);
    else ++it;
  }
}

}  // namespace gsa::engine
