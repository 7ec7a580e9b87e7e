// Engine: construction, the request API, and the two kinds of step (prefill, decode) that run
// what the scheduler planned.
#include "engine/engine.h"

#include <algorithm>

#include "core/log.h"
#include "core/timer.h"
#include "engine/batch.h"
#include "engine/output.h"
#include "engine/planner.h"
#include "engine/scheduler.h"
#include "engine/store_tier.h"
#include "sparse/knobs.h"

namespace gsa::engine {

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::None: return "none";
    case FinishReason::Eos: return "stop";
    case FinishReason::Length: return "length";
    case FinishReason::Stop: return "stop";
    case FinishReason::Error: return "error";
    case FinishReason::Cancelled: return "cancelled";
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
  if (kv_offload != "none" && kv_offload != "file")
    return invalid_argument("--kv-offload must be none or file, got '{}' (host: not built yet)", kv_offload);
  if (kv_offload == "file") {
    if (kv_offload_dir.empty()) return invalid_argument("--kv-offload file needs --kv-offload-dir");
    if (!prefix_cache) return invalid_argument("--kv-offload file stores the prefix cache's blocks: not with --no-prefix-cache");
    if (model_path.empty()) return invalid_argument("--kv-offload file needs a model file (not a --shape preset)");
  } else if (!kv_offload_dir.empty()) {
    return invalid_argument("--kv-offload-dir needs --kv-offload file");
  }
  if (sparse) {
    GSA_RETURN_IF_ERROR(sparse::validate(sparse_cfg));
    if (sparse_cfg.block_size != block_size)
      return invalid_argument("sparse block size {} differs from the KV block size {}",
                              sparse_cfg.block_size, block_size);
  }
  return Status::ok();
}

Engine::~Engine() {
  if (planner_) planner_->drain();
  sched_.reset();  // its samples' blocks go back before the KV cache does
  if (hash_w_) backend_->free(hash_w_);
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
    // rep_update runs on the backend, so the Hash projection matrix it reads must live there
    // (on CUDA a host pointer would be read by the kernels).
    const std::vector<float>& w = e->planner_->hash_matrix();
    if (!w.empty()) {
      GSA_ASSIGN_OR_RETURN(e->hash_w_, e->backend_->alloc(w.size() * sizeof(float)));
      GSA_RETURN_IF_ERROR(e->backend_->upload(e->hash_w_, w.data(), w.size() * sizeof(float)));
    }
  }
  e->sched_ = std::make_unique<Scheduler>(&e->kv_, e->planner_.get(), cfg.max_batch, cfg.prefill_chunk);
  if (cfg.kv_offload == "file") {
    GSA_ASSIGN_OR_RETURN(const uint64_t id, model_fingerprint(cfg.model_path, kc));
    Engine* self = e.get();
    GSA_ASSIGN_OR_RETURN(e->store_, StoreTier::open(cfg.kv_offload_dir, &e->kv_, e->backend_.get(), id,
                                                    [self](std::span<const int32_t> b) { return self->update_reps(b); }));
    StoreTier* tier = e->store_.get();
    e->kv_.set_index_hook([tier](uint64_t hash, int32_t block) { tier->write_through(hash, block); });
    e->sched_->set_store(tier);
  }
  e->output_ = std::make_unique<OutputProcessor>(e->tok_.get(), e->max_context_);
  return e;
}

void Engine::reset_stats() {
  stats_ = {};
  if (planner_) planner_base_ = planner_->stats();
}

void Engine::set_attention_observer(AttentionObserver* obs) {
  if (hook_) hook_->set_observer(obs);
}

Status Engine::update_reps(std::span<const int32_t> blocks) {
  if (!kv_.reps(0) || blocks.empty()) return Status::ok();
  GSA_ASSIGN_OR_RETURN(void* d, backend_->alloc(blocks.size() * 4));
  Status st = backend_->upload(d, blocks.data(), blocks.size() * 4);
  const kv::KvConfig& kc = kv_.config();
  backend::RepUpdateParams rp = rep_params();
  rp.blocks = static_cast<const int32_t*>(d);
  rp.n_update = int(blocks.size());
  rp.n_kv_heads = kc.n_kv_heads;
  rp.head_dim = kc.head_dim;
  rp.block_size = kc.block_size;
  rp.kv_type = kc.kv_type;
  for (int l = 0; l < kc.n_layers && st.is_ok(); ++l) {
    rp.k_cache = kv_.k(l);
    rp.reps = kv_.reps(l);
    st = backend_->rep_update(rp);
  }
  if (st.is_ok() && planner_) st = planner_->reps_written(blocks);
  if (st.is_ok()) st = backend_->synchronize();
  backend_->free(d);
  return st;
}

void Engine::copy_store_stats() {
  if (!store_) return;
  const StoreTierStats s = store_->stats();
  stats_.store_blocks_stored = s.blocks_stored;
  stats_.store_blocks_loaded = s.blocks_loaded;
  stats_.store_failures = s.store_failures + s.load_failures;
}

backend::RepUpdateParams Engine::rep_params() const {
  backend::RepUpdateParams rp;
  if (planner_) {
    rp.kind = cfg_.sparse_cfg.representation;
    rp.sub_block = cfg_.sparse_cfg.sub_block;
    rp.hash_w = static_cast<const float*>(hash_w_);
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
  if (in.n < 1 || in.n > cfg_.max_batch)
    return invalid_argument("n must be in [1, {}], got {}", cfg_.max_batch, in.n);
  const int64_t blocks = sched_->blocks_needed(in);
  if (blocks > kv_.pool().n_blocks())
    return invalid_argument("the prompt and its first tokens need {} KV blocks; the KV cache holds {} "
                            "(raise --kv-tokens)", blocks, kv_.pool().n_blocks());
  GSA_RETURN_IF_ERROR(in.sampling.validate());
  if ((in.sparse_budget_tokens != 0 || in.sparse_min_context != -1 || in.sparse_oracle ||
       in.sparse_rank_by != -1) && !planner_)
    return invalid_argument("per-request sparse settings need an engine started with --sparse gsa");
  GSA_RETURN_IF_ERROR(sparse::check_request_overrides(cfg_.sparse_cfg, in.sparse_budget_tokens,
                                                      in.sparse_min_context, in.sparse_rank_by));
  if (planner_) {
    sparse::SeqInput overrides;
    overrides.budget_tokens = in.sparse_budget_tokens;
    overrides.min_context = in.sparse_min_context;
    overrides.oracle = in.sparse_oracle;
    overrides.rank_by = in.sparse_rank_by;
    GSA_RETURN_IF_ERROR(planner_->check_request(overrides));
  }
  return sched_->add(std::move(in));
}

bool Engine::has_work() const { return sched_->has_work(); }

Status Engine::cancel(int64_t request_id) { return sched_->cancel(request_id); }

Status Engine::step(std::vector<TokenEvent>* events) {
  const StepPlan plan = sched_->schedule();
  stats_.prefix_hit_tokens += plan.prefix_hit_tokens;
  stats_.preemptions += plan.preempted;
  for (const Ended& e : plan.ended) {
    if (e.seq) {
      output_->finish(*e.seq, e.reason, events, e.error);
      continue;
    }
    for (int k = 0; k < e.n_samples; ++k) {
      TokenEvent ev;
      ev.request_id = e.request_id;
      ev.sample = k;
      ev.finish = e.reason;
      ev.error = e.error;
      events->push_back(std::move(ev));
    }
  }
  Status st = Status::ok();
  if (!plan.prefill.empty()) st = run_prefill(plan, events);
  else if (!plan.decode.empty()) st = run_decode(plan, events);
  sched_->reap();
  copy_store_stats();
  return st;
}

Status Engine::run_prefill(const StepPlan& plan, std::vector<TokenEvent>* events) {
  Timer timer;
  const model::ForwardInput in = build_prefill_input(plan.prefill, cfg_.block_size);
  GSA_RETURN_IF_ERROR(model_->forward(in, kv_, nullptr, rep_params(), &logits_));
  if (planner_) GSA_RETURN_IF_ERROR(planner_->reps_written(in.full_blocks));
  stats_.prefill_tokens += int64_t(in.tokens.size());
  stats_.prefill_seconds += timer.seconds();
  const std::vector<Started> started = sched_->prefill_done(plan);

  const int32_t vocab = model_->hparams().vocab;
  for (size_t c = 0; c < started.size(); ++c) {
    const Request& r = *started[c].req;
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
    for (Seq* s : started[c].samples) {
      output_->attach(*s);
      std::vector<float> lg(row, row + vocab);
      const int32_t t = s->sampler->sample(lg.data(), vocab, s->tokens);
      if (r.in.sampling.max_tokens == 0) output_->finish(*s, FinishReason::Length, events);
      else output_->accept(*s, t, events);
    }
  }
  return Status::ok();
}

Status Engine::run_decode(const StepPlan& plan, std::vector<TokenEvent>* events) {
  Timer timer;
  const std::vector<Seq*>& batch = plan.decode;
  std::vector<sparse::SeqInput> sel_in;
  const model::ForwardInput in =
      build_decode_input(batch, plan.decode_slots, cfg_.block_size, planner_ ? &sel_in : nullptr);
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
  GSA_RETURN_IF_ERROR(model_->forward(in, kv_, planner, rep_params(), &logits_, greedy ? &sampled_ : nullptr));
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
    output_->accept(s, sampled_[i], events);
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
  return Status::ok();
}

}  // namespace gsa::engine
