// SparseConfig: every GSA knob of DESIGN.md section 4 with its default, JSON parsing and
// validation, the budget rule and min_context gating. Pure policy: no kernels, no threads.
// Each knob's key, flag, range and help are declared once, in the table of sparse/knobs.h;
// a new knob is a field here and a line there.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "backend/ops_sparse.h"
#include "core/status.h"

namespace gsa::sparse {

/// per_layer: one block set per (sequence, layer), scores summed over kv heads.
/// per_kv_head: one block set per (sequence, layer, kv head).
enum class Scope : uint8_t { PerLayer, PerKvHead };
/// Where selections are computed: on the backend that runs the model, or by the asynchronous
/// CPU selector (queries copied to host memory, scored on its own worker threads).
enum class SelectorKind : uint8_t { Device, Cpu };
/// How sparse blocks are ranked: by the representation score (GSA), or by the true attention
/// mass of the query (oracle: a dense pass over the keys, for diagnosis only).
enum class Selection : uint8_t { Gsa, Oracle };
/// How GSA ranks blocks from the representation scores: by the scores themselves (summed over
/// kv heads for per_layer), or by the attention mass they estimate (each scoring query's scores
/// turned into a softmax over the sequence's blocks, summed over the list's queries: the
/// quantity the oracle ranks by exactly). Mass needs representation mean, minmax or quant.
/// Rerank: the rerank_factor x (free slots) best blocks by score become candidates, ranked by
/// their true attention mass from the K cache (a softmax over the candidates' and the forced
/// blocks' tokens): it reads the keys of the candidates, so it runs inline (lag 0), on the
/// model's device.
enum class RankBy : uint8_t { Score, Mass, Rerank };

struct SparseConfig {
  bool enabled = true;             // false: every sequence decodes densely
  int block_size = 128;            // tokens per KV page and selection granularity (power of 2)
  backend::RepKind representation = backend::RepKind::Quant;  // keeps answers minmax loses (docs/ACCURACY.md)
  backend::QueryMode query = backend::QueryMode::GroupMean;
  Scope scope = Scope::PerKvHead;  // a list per kv head: keeps answers one shared list loses (docs/ACCURACY.md)
  int sink_blocks = 1;             // first blocks always kept
  int local_blocks = 2;            // last blocks always kept, >= 1 (the partial block among them)
  double budget_ratio = 0.3;       // blocks attended = ratio * n_blocks, clamped below
  int budget_min_tokens = 4096;    // clamp of the ratio budget: 32 blocks at block_size 128
  int budget_max_tokens = 6144;    //                            48 blocks at block_size 128
  int budget_tokens = 0;           // > 0: fixed budget (a multiple of block_size), ratio unused
  int min_context = 8400;          // shorter sequences decode densely (exact full attention)
  int select_every = 1;            // recompute the selection every N decode steps
  int lag = 0;                     // 0: inline from this step's query; >= 1: asynchronous
  SelectorKind selector = SelectorKind::Device;
  int cpu_workers = 2;             // worker threads of the asynchronous CPU selector
  Selection selection = Selection::Gsa;
  int dense_layers = 0;            // layers [0, dense_layers) always decode densely
  int sub_block = 0;               // mean/minmax kept per run of sub_block tokens (0: per block)
  RankBy rank_by = RankBy::Score;
  int rerank_factor = 4;           // rank_by rerank: candidates per free slot of a list
  uint64_t hash_seed = 0x6773612d68617368ull;  // seed of the Hash projection matrix
};

/// Checks every knob; the message names the knob and the offending value.
Status validate(const SparseConfig& cfg);

/// Parses a JSON object whose keys are SparseConfig field names (enums as strings:
/// representation "mean"|"minmax"|"hash"|"quant", query "group_mean"|"group_max", scope
/// "per_layer"|"per_kv_head", selector "device"|"cpu", selection "gsa"|"oracle", rank_by "score"|"mass"|"rerank"). Missing keys keep their defaults;
/// unknown keys, wrong types and invalid values are InvalidArgument naming the key. The result
/// is validated.
Result<SparseConfig> parse_sparse_config_json(std::string_view json);
/// The JSON object parse_sparse_config_json reads back to an equal config.
std::string to_json(const SparseConfig& cfg);

const char* rep_kind_name(backend::RepKind kind);
const char* query_mode_name(backend::QueryMode mode);
const char* scope_name(Scope scope);
const char* selector_kind_name(SelectorKind kind);
const char* selection_name(Selection selection);
const char* rank_by_name(RankBy rank_by);

/// Blocks always kept for a sequence of n_blocks blocks: min(n_blocks, sink + local) (the two
/// ranges may overlap on short sequences).
int forced_blocks(const SparseConfig& cfg, int n_blocks);

/// Blocks attended per step for a sequence of n_blocks blocks, forced blocks included:
/// budget_tokens / block_size when fixed, else round(budget_ratio * n_blocks) clamped to
/// [budget_min_tokens, budget_max_tokens] / block_size; then at least forced_blocks() and at
/// most n_blocks.
int budget_blocks(const SparseConfig& cfg, int n_blocks);

/// budget_blocks with a per-request budget in tokens (> 0: fixed, rounded up to whole blocks;
/// <= 0: the config's own rule).
int budget_blocks(const SparseConfig& cfg, int n_blocks, int32_t budget_tokens_override);

/// block_select parameters with the config's fields and the model's dimensions set (block size,
/// forced blocks, representation, sub-block, query mode, per_kv_head from the scope); the caller
/// sets the buffers, sequence count, hash matrix, ranks and dtypes.
backend::BlockSelectParams select_params(const SparseConfig& cfg, int n_heads, int n_kv_heads, int head_dim);

/// True when a sequence of seq_len tokens decodes sparsely (enabled and seq_len >= min_context).
bool sparse_eligible(const SparseConfig& cfg, int64_t seq_len);
/// The same with a per-request min_context (>= 0 replaces cfg.min_context; < 0 keeps it).
bool sparse_eligible(const SparseConfig& cfg, int64_t seq_len, int32_t min_context_override);

/// A random orthogonal [head_dim, head_dim] matrix (row-major), deterministic for a seed on
/// every platform: Gaussian entries from a counter-based generator, orthonormalized by
/// modified Gram-Schmidt over columns. Column d projects a key onto hash bit d.
std::vector<float> make_hash_matrix(int head_dim, uint64_t seed);

}  // namespace gsa::sparse
