// Engine::add_synthetic_request: benchmark sequences with random K/V and no prefill, so
// `gsa bench` measures decode at any context without a prompt.
#include "engine/engine.h"
#include "engine/output.h"
#include "engine/scheduler.h"

namespace gsa::engine {

Result<int64_t> Engine::add_synthetic_request(int32_t ctx, RequestInput in) {
  const model::HParams& h = model_->hparams();
  if (ctx < 1 || ctx >= max_context_)
    return invalid_argument("synthetic context {} outside [1, {})", ctx, max_context_);
  if (in.n < 1 || in.n > cfg_.max_batch)
    return invalid_argument("n must be in [1, {}], got {}", cfg_.max_batch, in.n);
  GSA_RETURN_IF_ERROR(in.sampling.validate());
  const kv::KvConfig& kc = kv_.config();
  if (!kv_randomized_) {
    // Random K/V over the whole cache, once: the sequences read distinct, non-zero blocks.
    const int64_t elems = int64_t(kv_.layer_block_bytes() / dtype_size(kc.kv_type)) * kc.n_blocks;
    for (int l = 0; l < kc.n_layers; ++l) {
      for (void* p : {kv_.k(l), kv_.v(l)}) {
        backend::FillRandomParams fp;
        fp.dst = p;
        fp.n = elems;
        fp.seed = 1000 + uint64_t(l) * 2 + (p == kv_.v(l));
        fp.type = kc.kv_type;
        GSA_RETURN_IF_ERROR(backend_->fill_random(fp));
      }
    }
    kv_randomized_ = true;
  }
  Request* r = sched_->add_started(std::move(in));
  std::vector<int32_t> full;
  uint64_t z = uint64_t(r->id) * 7919 + 17;
  auto next_token = [&] {
    z = z * 6364136223846793005ull + 1442695040888963407ull;
    return int32_t((z >> 33) % uint64_t(std::min(h.vocab, 32000)));
  };
  std::vector<std::unique_ptr<Seq>> made;
  for (int k = 0; k < r->in.n; ++k) {
    auto s = std::make_unique<Seq>();
    s->id = sched_->next_seq_id();
    s->req = r;
    s->sample = k;
    std::vector<int32_t> slots;
    Status st = kv_.reserve(&s->table, ctx, &slots);
    if (!st.is_ok()) {
      for (auto& m : made) kv_.release(&m->table);
      sched_->forget(r->id);
      return st.with_context("synthetic context");
    }
    for (int32_t i = 0; i < ctx; ++i) s->tokens.push_back(next_token());
    s->last_token = next_token();
    s->tokens.push_back(s->last_token);
    output_->attach(*s);
    for (int32_t b = 0; b < ctx / kc.block_size; ++b) full.push_back(s->table.blocks[size_t(b)]);
    made.push_back(std::move(s));
  }
  const Status st = update_reps(full);
  if (!st.is_ok()) {
    for (auto& m : made) kv_.release(&m->table);
    sched_->forget(r->id);
    return st;
  }
  for (auto& s : made) sched_->add_running(std::move(s));
  return r->id;
}

}  // namespace gsa::engine
