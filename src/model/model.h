// Model: weights in backend memory and the transformer forward pass, written once against the
// Backend ops for every supported architecture. It receives block tables and attention lists
// as read-only inputs from the engine; it never manages the KV cache.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "gguf/gguf.h"
#include "kv/kv_cache.h"
#include "model/hparams.h"

namespace gsa::model {

/// Attention lists for one layer in backend memory (see AttentionParams).
struct AttentionLists {
  const int32_t* indptr = nullptr;    // [n_lists + 1]
  const int32_t* indices = nullptr;   // [indptr[n_lists]]
  const int32_t* last_len = nullptr;  // [n_lists]
  bool per_kv_head = false;
};

/// Per-layer hook that replaces the dense lists by a sparse selection (GSA). Called after the
/// layer's q is computed (post-RoPE) and its K/V appended and representations updated.
class LayerPlanner {
 public:
  virtual ~LayerPlanner() = default;
  /// q: backend memory [n_tokens, n_heads, head_dim]. Writes the lists to use for this layer.
  virtual Status plan_layer(int layer, const void* q, AttentionLists* lists) = 0;
};

/// One forward over a batch of sequences (host arrays; the model uploads them).
struct ForwardInput {
  std::vector<int32_t> tokens;       // [n_tokens]
  std::vector<int32_t> pos;          // [n_tokens] absolute positions
  std::vector<int32_t> slots;        // [n_tokens] KV slot = block * block_size + offset
  std::vector<int32_t> q_indptr;     // [n_seqs + 1] rows of each sequence
  std::vector<int32_t> kv_indptr;    // [n_seqs + 1] dense block lists (every block, in order)
  std::vector<int32_t> kv_indices;   // physical block ids
  std::vector<int32_t> kv_last_len;  // [n_seqs] tokens in each sequence's last block
  std::vector<int32_t> full_blocks;  // blocks that become full in this forward (representations)
  std::vector<int32_t> logit_rows;   // rows whose logits are wanted, in output order
};

struct ModelOptions {
  DType w_type = DType::F32;    // weight type on the backend (matrices not kept native)
  bool native_weights = true;   // keep GGUF-format matrices where the backend multiplies them
  ThreadPool* pool = nullptr;   // parallel dequantization at load (borrowed, may be null)
  DType act_type = DType::F32;  // activation type on the backend
};

class Model {
 public:
  ~Model();
  Model(Model&&) noexcept;
  Model& operator=(Model&&) noexcept;
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  /// Loads and converts every weight of `f` onto `backend` (borrowed, must outlive the model).
  static Result<Model> load(const gguf::GgufFile& f, backend::Backend* backend, ModelOptions opt);
  /// Random weights (uniform, never zero) at the shape of hp; for benchmarks and tests.
  static Result<Model> random(const HParams& hp, backend::Backend* backend, ModelOptions opt,
                              uint64_t seed);

  const HParams& hparams() const { return hp_; }
  const ModelOptions& options() const { return opt_; }
  backend::Backend* backend() const { return backend_; }
  uint64_t weight_bytes() const { return weight_bytes_; }
  /// Seconds the last forward spent bringing logits to the host (after the device finished).
  double last_logits_seconds() const { return last_logits_seconds_; }
  /// Seconds the last forward's host thread took to queue its work (up to the wait for the
  /// device): close to the forward's time when the host, not the device, is the bottleneck.
  double last_enqueue_seconds() const { return last_enqueue_seconds_; }

  /// Runs the layers over in.tokens, appends their K/V to `kv`, and writes the logits of
  /// in.logit_rows to `logits` ([logit_rows.size(), vocab], host). `planner` may be null (dense).
  /// `rep` describes the representation table of kv (ignored when kv has none).
  /// With `greedy`, the logits stay on the backend and greedy[i] gets the argmax of row i
  /// (ties to the lowest id) instead; `logits` is then untouched.
  Status forward(const ForwardInput& in, kv::KvCache& kv, LayerPlanner* planner,
                 const backend::RepUpdateParams& rep, std::vector<float>* logits,
                 std::vector<int32_t>* greedy = nullptr);

 private:
  Model() = default;
  struct Weights;
  struct Scratch;
  Status alloc_weights(bool matrices);
  Status ensure_scratch(int64_t n_tokens, int64_t n_logits, int64_t n_meta);

  HParams hp_;
  ModelOptions opt_;
  backend::Backend* backend_ = nullptr;
  std::unique_ptr<Weights> w_;
  std::unique_ptr<Scratch> s_;
  uint64_t weight_bytes_ = 0;
  double last_logits_seconds_ = 0;
  double last_enqueue_seconds_ = 0;
};

}  // namespace gsa::model
