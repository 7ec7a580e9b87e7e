// Engine: the facade a caller drives (submit with add_request, step, cancel; the events of each
// step are the output stream). It owns the backend, model, tokenizer, KV cache and (optionally)
// the GSA planner; the Scheduler (scheduler.h) decides what each step runs, the batch builder
// (batch.h) turns that into a forward, and the OutputProcessor (output.h) turns sampled tokens
// into text and finish events. One thread drives it. Requests are validated at add_request; a
// request that does not fit the KV cache now waits, and an error confined to one request
// finishes that request, not the process.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "core/thread_pool.h"
#include "engine/host_select.h"
#include "engine/sampler.h"
#include "gguf/gguf.h"
#include "kv/kv_cache.h"
#include "model/model.h"
#include "sparse/plan.h"
#include "sparse/selector.h"
#include "sparse/sparse_config.h"
#include "tokenizer/tokenizer.h"

namespace gsa::engine {

class PlanHook;
class Scheduler;
class OutputProcessor;
class StoreTier;
struct StepPlan;

struct EngineConfig {
  std::string model_path;       // GGUF file; empty with shape_preset for random weights
  std::string shape_preset;     // hparams_preset name: synthetic weights, no tokenizer
  uint64_t seed = 1;            // of the synthetic weights
  std::string device = "cpu";   // "cpu" or "cuda"
  int threads = 0;              // CPU threads (0: all cores)
  int block_size = 128;         // tokens per KV block
  int64_t kv_tokens = 0;        // KV capacity in tokens (0: 2 x the context limit)
  int max_context = 0;          // tokens per sequence (0: the model's trained context)
  int prefill_chunk = 512;      // tokens per prefill forward
  int max_batch = 16;           // sequences per decode step
  bool prefix_cache = true;     // reuse the KV of full blocks of earlier prompts
  std::string kv_offload = "none";  // "file": full blocks also go to a file store (kv_offload_dir)
  std::string kv_offload_dir;       // the store's directory, kv_offload "file"
  std::string weights = "native";  // native (GGUF formats where the backend takes them), f32, bf16
  bool sparse = false;          // GSA decode
  sparse::SparseConfig sparse_cfg;

  Status validate() const;
};

enum class FinishReason { None, Eos, Length, Stop, Error, Cancelled };
const char* finish_reason_name(FinishReason r);

struct RequestInput {
  std::vector<int32_t> prompt;  // token ids (BOS included if wanted)
  SamplingParams sampling;
  int n = 1;                    // parallel samples sharing the prompt's KV blocks
  // GSA per request (engines built with sparse decode): 0 / -1 keep the engine's settings.
  int32_t sparse_budget_tokens = 0;  // > 0: this request's budget in tokens
  int32_t sparse_min_context = -1;   // >= 0: decode densely below this many tokens (a huge
                                     // value gives exact full attention)
  bool sparse_oracle = false;        // rank blocks by true attention mass (diagnostic upper
                                     // bound of any representation; lag 0 engines only)
  int8_t sparse_rank_by = -1;        // >= 0: a sparse::RankBy value for this request
};

/// Something that happened to one sample of a request during a step.
struct TokenEvent {
  int64_t request_id = 0;
  int sample = 0;
  int32_t token = -1;        // -1 when the event only finishes the sample
  std::string text;          // newly complete text (stop strings held back, never emitted)
  FinishReason finish = FinishReason::None;
  std::string error;         // with FinishReason::Error
};

/// Sees every GSA decision of a decode step (used by the accuracy harness to measure how much
/// of full attention's softmax mass the selected blocks hold). Called after each layer's lists
/// are chosen, before the attention runs; everything passed is valid only during the call.
class AttentionObserver {
 public:
  virtual ~AttentionObserver() = default;
  /// q: [n_seqs, n_heads, head_dim] backend memory (host on the CPU); seqs: the step's
  /// sequences; lists: the layer's block lists (host memory).
  virtual void observe(int layer, const void* q, std::span<const sparse::SeqInput> seqs,
                       const sparse::BlockLists& lists, const kv::KvCache& kv) = 0;
};

struct EngineStats {
  int64_t prefill_tokens = 0;
  int64_t prefix_hit_tokens = 0;  // prompt tokens taken from the prefix cache
  int64_t preemptions = 0;        // samples that gave up their KV blocks to others and resumed
  double prefill_seconds = 0;
  int64_t decode_tokens = 0;
  int64_t decode_steps = 0;
  double decode_seconds = 0;
  double select_seconds = 0;   // time inside GSA selection during decode (host selectors)
  double forward_seconds = 0;  // decode: model forward, logits on the host included
  int64_t host_sampled_tokens = 0;  // decode tokens sampled on the host (greedy: on the backend)
  double sample_seconds = 0;   // decode: sampling on the host (0 when greedy picks on the backend)
  double enqueue_seconds = 0;  // decode: part of forward_seconds the host spent queueing work
  double logits_seconds = 0;   // decode: part of forward_seconds moving logits (or greedy ids) to the host
  // --kv-offload file, since the engine started (reset_stats leaves them): blocks written to
  // the store, blocks prefix matches read back from it, and writes and reads that failed.
  int64_t store_blocks_stored = 0;
  int64_t store_blocks_loaded = 0;
  int64_t store_failures = 0;
  sparse::SelectorStats selector;
  HostSelectStats host_select;  // selector=cpu on the GPU: the pipelined CPU selection
};

class Engine {
 public:
  ~Engine();
  static Result<std::unique_ptr<Engine>> create(const EngineConfig& cfg);

  const EngineConfig& config() const { return cfg_; }
  const model::HParams& hparams() const { return model_->hparams(); }
  /// Null for synthetic-weight models.
  const tokenizer::Tokenizer* tokenizer() const { return tok_.get(); }
  backend::Backend* backend() const { return backend_.get(); }
  const kv::KvCache& kv() const { return kv_; }
  uint64_t weight_bytes() const { return model_->weight_bytes(); }

  /// Queues a request; InvalidArgument for an empty or over-long prompt, bad ids or params.
  Result<int64_t> add_request(RequestInput in);
  /// Benchmarks: n sequences that start decoding at once with `ctx` tokens of context each,
  /// in private blocks whose K/V are random (fill_random over the whole cache; no prefill), and
  /// whose representations are computed. `in.prompt` is ignored; in.n gives the count.
  Result<int64_t> add_synthetic_request(int32_t ctx, RequestInput in);
  /// Runs one prefill chunk or one decode step; appends what happened to `events`. An error
  /// confined to one request finishes that request with FinishReason::Error; a returned error
  /// means the engine itself failed.
  Status step(std::vector<TokenEvent>* events);
  bool has_work() const;
  /// Ends a queued or running request: the next step emits FinishReason::Cancelled for each of
  /// its unfinished samples and frees its blocks. NotFound for an unknown or finished id.
  Status cancel(int64_t request_id);
  const EngineStats& stats() const { return stats_; }
  /// Installs (or with null removes) an observer of GSA decode decisions; borrowed.
  void set_attention_observer(AttentionObserver* obs);
  void reset_stats();

 private:
  Engine() = default;
  Status run_prefill(const StepPlan& plan, std::vector<TokenEvent>* events);
  Status run_decode(const StepPlan& plan, std::vector<TokenEvent>* events);
  backend::RepUpdateParams rep_params() const;
  /// Recomputes the representations of `blocks` in every layer from their K (the sparse
  /// planner's table; nothing without one) and tells the planner.
  Status update_reps(std::span<const int32_t> blocks);
  void copy_store_stats();

  EngineConfig cfg_;
  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<backend::Backend> backend_;
  std::unique_ptr<gguf::GgufFile> file_;
  std::unique_ptr<tokenizer::Tokenizer> tok_;
  std::unique_ptr<model::Model> model_;
  kv::KvCache kv_;
  std::unique_ptr<sparse::Planner> planner_;  // GSA selection (make_planner); null: dense
  std::unique_ptr<PlanHook> hook_;             // planner_ as the model's per-layer hook
  sparse::PlannerStats planner_base_;          // planner_'s counters at the last reset_stats()
  void* hash_w_ = nullptr;  // the Hash projection matrix in backend memory, for rep_update
  bool kv_randomized_ = false;
  bool dense_notice_ = false;  // the "below min_context, decoding densely" line was logged
  int max_context_ = 0;
  std::unique_ptr<Scheduler> sched_;
  std::unique_ptr<OutputProcessor> output_;
  std::unique_ptr<StoreTier> store_;  // --kv-offload file; destroyed first (it borrows kv_)
  std::vector<float> logits_;
  std::vector<int32_t> sampled_;
  EngineStats stats_;
};

}  // namespace gsa::engine
