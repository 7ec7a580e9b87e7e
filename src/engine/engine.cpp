// Engine: request admission, chunked prefill, batched decode with optional GSA selection,
// sampling, stop handling and per-request failure.
#include "engine/engine.h"

#include <algorithm>

#include "core/log.h"
#include "core/timer.h"
#include "engine/planner.h"

namespace gsa::engine {

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::None: return "none";
    case FinishReason::Eos: return "stop";
    case FinishReason::Length: return "length";
    case FinishReason::Stop: return "stop";
    case FinishReason::Error: return "error";
  }
  return "?";
}

Status EngineConfig::validate() const {
  if (model_path.empty() == shape_preset.empty())
    return invalid_argument("give exactly one of a model file or a shape preset");
  if (device != "cpu" && device != "cuda")
    return invalid_argument("device must be 'cpu' or 'cuda', got '{}'", device);
  if (threads < 0 || threads > 1024) return invalid_argument("threads must be in [0, 1024], got {}", threads);
  if (block_size < 1 || block_size > 1024 || (block_size & (block_size - 1)) != 0)
    return invalid_argument("block size must be a power of two in [1, 1024], got {}", block_size);
  if (kv_tokens < 0) return invalid_argument("KV capacity must be >= 0 tokens, got {}", kv_tokens);
  if (max_context < 0) return invalid_argument("context limit must be >= 0, got {}", max_context);
  if (prefill_chunk < 1 || prefill_chunk > 65536)
    return invalid_argument("prefill chunk must be in [1, 65536], got {}", prefill_chunk);
  if (weights != "native" && weights != "f32" && weights != "bf16")
    return invalid_argument("weights must be native, f32 or bf16, got '{}'", weights);
  if (max_batch < 1 || max_batch > 4096)
    return invalid_argument("max batch must be in [1, 4096], got {}", max_batch);
  if (sparse) {
    GSA_RETURN_IF_ERROR(sparse::validate(sparse_cfg));
    if (sparse_cfg.block_size != block_size)
      return invalid_argument("sparse block size {} differs from the KV block size {}",
                              sparse_cfg.block_size, block_size);
  }
  return Status::ok();
}

struct Engine::Seq {
  int64_t id = 0;
  Request* req = nullptr;
  int sample = 0;
  kv::BlockTable table;
  std::vector<int32_t> tokens;  // prompt + generated
  int32_t n_generated = 0;
  int32_t last_token = -1;      // sampled, not yet in the KV cache
  std::unique_ptr<Sampler> sampler;
  std::unique_ptr<tokenizer::StreamDecoder> decoder;
  std::string held;             // decoded text not yet emitted (may start a stop string)
  bool finished = false;
};

struct Engine::Request {
  int64_t id = 0;
  RequestInput in;
  int32_t n_prefilled = 0;
  kv::BlockTable table;         // the prompt's blocks until the samples fork
  int live_samples = 0;
};

Engine::~Engine() {
  if (planner_) planner_->drain();
  for (auto& s : running_)
    if (s->table.blocks.size()) kv_.release(&s->table);
  for (auto& r : prefilling_)
    if (r->table.blocks.size()) kv_.release(&r->table);
}

Result<std::unique_ptr<Engine>> Engine::create(const EngineConfig& cfg) {
  GSA_RETURN_IF_ERROR(cfg.validate());
  std::unique_ptr<Engine> e(new Engine());
  e->cfg_ = cfg;
  e->pool_ = std::make_unique<ThreadPool>(cfg.threads);
  model::ModelOptions mo;
  if (cfg.device == "cuda") {
    GSA_ASSIGN_OR_RETURN(e->backend_, backend::make_cuda_backend(0));
    mo.w_type = DType::BF16;
    mo.act_type = DType::BF16;
  } else {
    e->backend_ = backend::make_cpu_backend(e->pool_.get());
    if (cfg.weights == "bf16") mo.w_type = DType::BF16;
  }
  mo.native_weights = cfg.weights == "native";
  mo.pool = e->pool_.get();
  if (!cfg.model_path.empty()) {
    auto f = gguf::GgufFile::open(cfg.model_path);
    if (!f) return f.status();
    e->file_ = std::make_unique<gguf::GgufFile>(std::move(f).value());
    GSA_ASSIGN_OR_RETURN(auto tok, tokenizer::Tokenizer::from_gguf(*e->file_));
    e->tok_ = std::make_unique<tokenizer::Tokenizer>(std::move(tok));
    GSA_ASSIGN_OR_RETURN(auto m, model::Model::load(*e->file_, e->backend_.get(), mo));
    e->model_ = std::make_unique<model::Model>(std::move(m));
  } else {
    GSA_ASSIGN_OR_RETURN(auto hp, model::hparams_preset(cfg.shape_preset));
    GSA_ASSIGN_OR_RETURN(auto m, model::Model::random(hp, e->backend_.get(), mo, cfg.seed));
    e->model_ = std::make_unique<model::Model>(std::move(m));
  }
  const model::HParams& h = e->model_->hparams();
  if (e->tok_ && e->tok_->n_vocab() > h.vocab)
    return invalid_argument("tokenizer has {} tokens but the model's vocabulary is {}",
                            e->tok_->n_vocab(), h.vocab);
  e->max_context_ = cfg.max_context > 0 ? cfg.max_context : h.ctx_len;
  int64_t kv_tokens = cfg.kv_tokens > 0 ? cfg.kv_tokens : int64_t(e->max_context_) * 2;
  kv::KvConfig kc;
  kc.n_layers = h.n_layers;
  kc.n_kv_heads = h.n_kv_heads;
  kc.head_dim = h.head_dim;
  kc.block_size = cfg.block_size;
  kc.n_blocks = int32_t(std::min<int64_t>((kv_tokens + cfg.block_size - 1) / cfg.block_size, INT32_MAX / 2));
  kc.kv_type = mo.act_type;
  kc.prefix_cache = cfg.prefix_cache;
  if (cfg.sparse)
    kc.rep_bytes = backend::rep_bytes(cfg.sparse_cfg.representation, h.head_dim, cfg.block_size,
                                      cfg.sparse_cfg.sub_block);
  GSA_ASSIGN_OR_RETURN(e->kv_, kv::KvCache::create(e->backend_.get(), kc));
  if (cfg.sparse) {
    GSA_ASSIGN_OR_RETURN(e->planner_, make_planner(cfg.sparse_cfg, e->backend_.get(), &e->kv_, h,
                                                   e->pool_.get(), cfg.max_batch));
    e->hook_ = std::make_unique<PlanHook>(e->planner_.get(), &e->kv_);
  }
  return e;
}

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
  auto r = std::make_unique<Request>();
  r->id = next_request_++;
  r->in = std::move(in);
  r->live_samples = r->in.n;
  std::vector<int32_t> full;
  uint64_t z = uint64_t(r->id) * 7919 + 17;
  auto next_token = [&] {
    z = z * 6364136223846793005ull + 1442695040888963407ull;
    return int32_t((z >> 33) % uint64_t(std::min(h.vocab, 32000)));
  };
  std::vector<std::unique_ptr<Seq>> made;
  for (int k = 0; k < r->in.n; ++k) {
    auto s = std::make_unique<Seq>();
    s->id = next_seq_++;
    s->req = r.get();
    s->sample = k;
    std::vector<int32_t> slots;
    Status st = kv_.reserve(&s->table, ctx, &slots);
    if (!st.is_ok()) {
      for (auto& m : made) kv_.release(&m->table);
      return st.with_context("synthetic context");
    }
    for (int32_t i = 0; i < ctx; ++i) s->tokens.push_back(next_token());
    s->last_token = next_token();
    s->tokens.push_back(s->last_token);
    s->sampler = std::make_unique<Sampler>(r->in.sampling, uint64_t(k));
    if (tok_) s->decoder = std::make_unique<tokenizer::StreamDecoder>(*tok_);
    for (int32_t b = 0; b < ctx / kc.block_size; ++b) full.push_back(s->table.blocks[size_t(b)]);
    made.push_back(std::move(s));
  }
  if (kv_.reps(0) && !full.empty()) {
    auto d = backend_->alloc(full.size() * 4);
    if (!d) return d.status();
    Status st = backend_->upload(*d, full.data(), full.size() * 4);
    backend::RepUpdateParams rp = rep_params();
    rp.blocks = static_cast<const int32_t*>(*d);
    rp.n_update = int(full.size());
    rp.n_kv_heads = h.n_kv_heads;
    rp.head_dim = h.head_dim;
    rp.block_size = kc.block_size;
    rp.kv_type = kc.kv_type;
    for (int l = 0; l < kc.n_layers && st.is_ok(); ++l) {
      rp.k_cache = kv_.k(l);
      rp.reps = kv_.reps(l);
      st = backend_->rep_update(rp);
    }
    if (st.is_ok() && planner_) st = planner_->reps_written(full);
    if (st.is_ok()) st = backend_->synchronize();
    backend_->free(*d);
    GSA_RETURN_IF_ERROR(st);
  }
  for (auto& s : made) running_.push_back(std::move(s));
  const int64_t id = r->id;
  done_requests_.push_back(std::move(r));
  return id;
}

void Engine::reset_stats() {
  stats_ = {};
  if (planner_) planner_base_ = planner_->stats();
}

void Engine::set_attention_observer(AttentionObserver* obs) {
  if (hook_) hook_->set_observer(obs);
}

backend::RepUpdateParams Engine::rep_params() const {
  backend::RepUpdateParams rp;
  if (planner_) {
    rp.kind = cfg_.sparse_cfg.representation;
    rp.sub_block = cfg_.sparse_cfg.sub_block;
    if (!planner_->hash_matrix().empty()) rp.hash_w = planner_->hash_matrix().data();
  }
  return rp;
}

Result<int64_t> Engine::add_request(RequestInput in) {
  const model::HParams& h = model_->hparams();
  if (in.prompt.empty()) return invalid_argument("the prompt is empty");
  if (int64_t(in.prompt.size()) >= max_context_)
    return invalid_argument("the prompt has {} tokens; the context limit is {}", in.prompt.size(),
                            max_context_);
  for (int32_t t : in.prompt)
    if (t < 0 || t >= h.vocab) return invalid_argument("token id {} outside [0, {})", t, h.vocab);
  const int64_t blocks = (int64_t(in.prompt.size()) + cfg_.block_size - 1) / cfg_.block_size;
  if (blocks > kv_.pool().n_blocks())
    return invalid_argument("the prompt needs {} KV blocks; the KV cache holds {} (raise --kv-tokens)",
                            blocks, kv_.pool().n_blocks());
  if (in.n < 1 || in.n > cfg_.max_batch)
    return invalid_argument("n must be in [1, {}], got {}", cfg_.max_batch, in.n);
  GSA_RETURN_IF_ERROR(in.sampling.validate());
  if (in.sparse_budget_tokens < 0)
    return invalid_argument("sparse budget must be >= 0 tokens, got {}", in.sparse_budget_tokens);
  if ((in.sparse_budget_tokens > 0 || in.sparse_min_context >= 0 || in.sparse_oracle ||
       in.sparse_rank_by >= 0) && !planner_)
    return invalid_argument("per-request sparse settings need an engine started with --sparse gsa");
  if (in.sparse_rank_by > int8_t(sparse::RankBy::Mass))
    return invalid_argument("unknown sparse rank_by {}", int(in.sparse_rank_by));
  if (in.sparse_rank_by == int8_t(sparse::RankBy::Mass) &&
      cfg_.sparse_cfg.representation == backend::RepKind::Hash)
    return invalid_argument("ranking by mass needs representation mean, minmax or quant, not hash");
  if (planner_) {
    sparse::SeqInput overrides;
    overrides.budget_tokens = in.sparse_budget_tokens;
    overrides.min_context = in.sparse_min_context;
    overrides.oracle = in.sparse_oracle;
    overrides.rank_by = in.sparse_rank_by;
    GSA_RETURN_IF_ERROR(planner_->check_request(overrides));
  }
  auto r = std::make_unique<Request>();
  r->id = next_request_++;
  r->in = std::move(in);
  const int64_t id = r->id;
  prefilling_.push_back(std::move(r));
  return id;
}

bool Engine::has_work() const { return !prefilling_.empty() || !running_.empty(); }

Status Engine::step(std::vector<TokenEvent>* events) {
  // Prefill first while there is room in the decode batch, so new requests join quickly; when
  // the KV cache cannot take a prompt yet, decode the running sequences (they free blocks).
  if (!prefilling_.empty() && int(running_.size()) < cfg_.max_batch) {
    bool progressed = false;
    GSA_RETURN_IF_ERROR(prefill_step(events, &progressed));
    if (progressed || running_.empty()) return Status::ok();
  }
  if (!running_.empty()) return decode_step(events);
  if (!prefilling_.empty()) {
    bool progressed = false;
    return prefill_step(events, &progressed);
  }
  return Status::ok();
}

void Engine::finish(Seq& s, FinishReason r, std::vector<TokenEvent>* events, std::string error) {
  if (s.finished) return;
  s.finished = true;
  TokenEvent ev;
  ev.request_id = s.req->id;
  ev.sample = s.sample;
  ev.finish = r;
  ev.error = std::move(error);
  if (r != FinishReason::Stop && r != FinishReason::Error) {
    if (s.decoder) s.held += s.decoder->flush();
    ev.text = std::move(s.held);
  }
  s.held.clear();
  events->push_back(std::move(ev));
}

// Emits the decoded text of `token`, holding back any tail that may begin a stop string.
void Engine::accept_token(Seq& s, int32_t token, std::vector<TokenEvent>* events) {
  const SamplingParams& sp = s.req->in.sampling;
  s.n_generated++;
  if (tok_ && !sp.ignore_eos && tok_->is_eog(token)) {
    finish(s, FinishReason::Eos, events);
    return;
  }
  s.last_token = token;
  s.tokens.push_back(token);
  TokenEvent ev;
  ev.request_id = s.req->id;
  ev.sample = s.sample;
  ev.token = token;
  if (s.decoder) s.held += s.decoder->push(token);
  size_t emit = s.held.size();
  for (const std::string& stop : sp.stop) {
    const size_t at = s.held.find(stop);
    if (at != std::string::npos) {
      ev.text = s.held.substr(0, at);
      s.held.clear();
      events->push_back(std::move(ev));
      finish(s, FinishReason::Stop, events);
      return;
    }
    // Longest suffix of held that is a proper prefix of stop.
    for (size_t k = std::min(stop.size() - 1, s.held.size()); k > 0; --k) {
      if (s.held.compare(s.held.size() - k, k, stop, 0, k) == 0) {
        emit = std::min(emit, s.held.size() - k);
        break;
      }
    }
  }
  ev.text = s.held.substr(0, emit);
  s.held.erase(0, emit);
  events->push_back(std::move(ev));
  if (s.n_generated >= sp.max_tokens) finish(s, FinishReason::Length, events);
  else if (int64_t(s.tokens.size()) >= max_context_) finish(s, FinishReason::Length, events);
}

Status Engine::prefill_step(std::vector<TokenEvent>* events, bool* progressed) {
  Timer timer;
  model::ForwardInput in;
  in.q_indptr.push_back(0);
  in.kv_indptr.push_back(0);
  std::vector<Request*> batch, completing;
  int budget = cfg_.prefill_chunk;
  for (auto& rp : prefilling_) {
    if (budget <= 0) break;
    Request& r = *rp;
    const int32_t n_prompt = int32_t(r.in.prompt.size());
    if (r.n_prefilled == 0 && r.table.blocks.empty()) {
      r.n_prefilled = kv_.match_prefix(r.in.prompt, &r.table);
      stats_.prefix_hit_tokens += r.n_prefilled;
    }
    const int32_t n = std::min<int32_t>(budget, n_prompt - r.n_prefilled);
    std::vector<int32_t> slots;
    Status st = kv_.reserve(&r.table, n, &slots);
    if (!st.is_ok()) {
      if (batch.empty() && running_.empty()) {
        // Nothing else will free blocks: fail this request.
        TokenEvent ev;
        ev.request_id = r.id;
        ev.finish = FinishReason::Error;
        ev.error = st.message();
        events->push_back(std::move(ev));
        kv_.release(&r.table);
        r.n_prefilled = -1;
      }
      break;
    }
    budget -= n;
    batch.push_back(&r);
    for (int32_t i = 0; i < n; ++i) {
      const int32_t p = r.n_prefilled + i;
      in.tokens.push_back(r.in.prompt[size_t(p)]);
      in.pos.push_back(p);
      in.slots.push_back(slots[size_t(i)]);
      if ((p + 1) % cfg_.block_size == 0) in.full_blocks.push_back(r.table.blocks[size_t(p / cfg_.block_size)]);
    }
    in.q_indptr.push_back(int32_t(in.tokens.size()));
    for (int32_t b : r.table.blocks) in.kv_indices.push_back(b);
    in.kv_indptr.push_back(int32_t(in.kv_indices.size()));
    in.kv_last_len.push_back(r.table.n_tokens - (int32_t(r.table.blocks.size()) - 1) * cfg_.block_size);
    r.n_prefilled += n;
    if (r.n_prefilled == n_prompt) {
      completing.push_back(&r);
      in.logit_rows.push_back(int32_t(in.tokens.size()) - 1);
    }
  }
  // Drop requests that failed above.
  prefilling_.erase(std::remove_if(prefilling_.begin(), prefilling_.end(),
                                   [](const auto& r) { return r->n_prefilled < 0; }),
                    prefilling_.end());
  if (batch.empty()) return Status::ok();
  *progressed = true;

  Status st = model_->forward(in, kv_, nullptr, rep_params(), &logits_);
  if (!st.is_ok()) return st;
  if (planner_) GSA_RETURN_IF_ERROR(planner_->reps_written(in.full_blocks));
  stats_.prefill_tokens += int64_t(in.tokens.size());
  stats_.prefill_seconds += timer.seconds();
  for (Request* r : batch) kv_.index_full_blocks(&r->table, r->in.prompt);

  const int32_t vocab = model_->hparams().vocab;
  for (size_t c = 0; c < completing.size(); ++c) {
    Request& r = *completing[c];
    const int64_t longest = int64_t(r.in.prompt.size()) + r.in.sampling.max_tokens;
    if (planner_ && !dense_notice_ && r.in.sparse_min_context != INT32_MAX &&
        !sparse::sparse_eligible(cfg_.sparse_cfg, longest, r.in.sparse_min_context)) {
      // Once per engine: GSA was asked for, but this request is too short to use it.
      dense_notice_ = true;
      log_warn("GSA: a sequence of at most {} tokens is below min_context {}, so it decodes with "
               "full attention (--min-context sets the threshold)", longest,
               r.in.sparse_min_context >= 0 ? r.in.sparse_min_context : cfg_.sparse_cfg.min_context);
    }
    const float* row = logits_.data() + c * size_t(vocab);
    r.live_samples = r.in.n;
    for (int k = 0; k < r.in.n; ++k) {
      auto s = std::make_unique<Seq>();
      s->id = next_seq_++;
      s->req = &r;
      s->sample = k;
      s->table = k + 1 < r.in.n ? kv_.fork(r.table) : std::move(r.table);
      s->tokens = r.in.prompt;
      s->sampler = std::make_unique<Sampler>(r.in.sampling, uint64_t(k));
      if (tok_) s->decoder = std::make_unique<tokenizer::StreamDecoder>(*tok_);
      std::vector<float> lg(row, row + vocab);
      const int32_t t = s->sampler->sample(lg.data(), vocab, s->tokens);
      if (r.in.sampling.max_tokens == 0) finish(*s, FinishReason::Length, events);
      else accept_token(*s, t, events);
      running_.push_back(std::move(s));
    }
  }
  // Requests whose prompt is done move to running (their Request object is kept alive by the
  // samples through `owned_requests`).
  for (auto it = prefilling_.begin(); it != prefilling_.end();) {
    if ((*it)->n_prefilled == int32_t((*it)->in.prompt.size())) {
      done_requests_.push_back(std::move(*it));
      it = prefilling_.erase(it);
    } else {
      ++it;
    }
  }
  reap();
  return Status::ok();
}

Status Engine::decode_step(std::vector<TokenEvent>* events) {
  Timer timer;
  model::ForwardInput in;
  in.q_indptr.push_back(0);
  in.kv_indptr.push_back(0);
  std::vector<Seq*> batch;
  std::vector<sparse::SeqInput> sel_in;
  for (auto& sp : running_) {
    if (int(batch.size()) >= cfg_.max_batch) break;
    Seq& s = *sp;
    if (s.finished) continue;
    std::vector<int32_t> slots;
    Status st = kv_.reserve(&s.table, 1, &slots);
    if (!st.is_ok()) {
      finish(s, FinishReason::Error, events, st.message());
      continue;
    }
    const int32_t p = s.table.n_tokens - 1;
    in.tokens.push_back(s.last_token);
    in.pos.push_back(p);
    in.slots.push_back(slots[0]);
    if ((p + 1) % cfg_.block_size == 0) in.full_blocks.push_back(s.table.blocks[size_t(p / cfg_.block_size)]);
    in.q_indptr.push_back(int32_t(in.tokens.size()));
    for (int32_t b : s.table.blocks) in.kv_indices.push_back(b);
    in.kv_indptr.push_back(int32_t(in.kv_indices.size()));
    in.kv_last_len.push_back(s.table.n_tokens - (int32_t(s.table.blocks.size()) - 1) * cfg_.block_size);
    in.logit_rows.push_back(int32_t(in.tokens.size()) - 1);
    batch.push_back(&s);
    if (planner_)
      sel_in.push_back({s.id, s.table.n_tokens, s.table.blocks.data(), int32_t(s.table.blocks.size()),
                        s.req->in.sparse_budget_tokens, s.req->in.sparse_min_context,
                        s.req->in.sparse_oracle, s.req->in.sparse_rank_by});
  }
  if (batch.empty()) {
    reap();
    return Status::ok();
  }
  model::LayerPlanner* planner = nullptr;
  if (planner_) {
    GSA_RETURN_IF_ERROR(planner_->begin_step(sel_in, in.full_blocks));
    hook_->begin_step(sel_in);
    planner = hook_.get();
  }
  // When every sequence decodes greedily without a repetition penalty, the backend picks the
  // tokens and the logits never leave it.
  const bool greedy = std::all_of(batch.begin(), batch.end(), [](const Seq* s) {
    const SamplingParams& sp = s->req->in.sampling;
    return sp.temperature <= 0.0f && sp.repetition_penalty == 1.0f;
  });
  Timer fwd;
  Status st = model_->forward(in, kv_, planner, rep_params(), &logits_, greedy ? &sampled_ : nullptr);
  if (!st.is_ok()) return st;
  stats_.forward_seconds += fwd.seconds();
  stats_.logits_seconds += model_->last_logits_seconds();
  stats_.enqueue_seconds += model_->last_enqueue_seconds();
  if (!greedy) {
    // Sampling is independent per sequence: spread it over the pool, then accept in order.
    Timer smp;
    const int32_t vocab = model_->hparams().vocab;
    sampled_.resize(batch.size());
    pool_->parallel_for(int64_t(batch.size()), [&](int64_t b0, int64_t e0, int) {
      for (int64_t i = b0; i < e0; ++i) {
        Seq& s = *batch[size_t(i)];
        sampled_[size_t(i)] = s.sampler->sample(logits_.data() + size_t(i) * size_t(vocab), vocab, s.tokens);
      }
    });
    stats_.sample_seconds += smp.seconds();
    stats_.host_sampled_tokens += int64_t(batch.size());
  }
  for (size_t i = 0; i < batch.size(); ++i) {
    Seq& s = *batch[i];
    kv_.index_full_blocks(&s.table, s.tokens);
    accept_token(s, sampled_[i], events);
  }
  stats_.decode_tokens += int64_t(batch.size());
  stats_.decode_steps++;
  stats_.decode_seconds += timer.seconds();
  if (planner_) {
    const sparse::PlannerStats d = sparse::stats_since(planner_->stats(), planner_base_);
    stats_.selector = d.lists;
    stats_.select_seconds = d.select_seconds;
    stats_.host_select = d.host;
  }
  reap();
  return Status::ok();
}

void Engine::reap() {
  for (auto& sp : running_) {
    if (!sp->finished) continue;
    // Before the blocks go: no selection work of the sequence may still read them.
    if (planner_) planner_->release(sp->id);
    kv_.release(&sp->table);
    sp->req->live_samples--;
  }
  running_.erase(std::remove_if(running_.begin(), running_.end(),
                                [](const auto& s) { return s->finished; }),
                 running_.end());
  done_requests_.erase(std::remove_if(done_requests_.begin(), done_requests_.end(),
                                      [](const auto& r) { return r->live_samples <= 0; }),
                       done_requests_.end());
}

}  // namespace gsa::engine
