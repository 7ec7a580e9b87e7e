// SparseConfig validation, JSON round trip, the budget rule, min_context gating and the seeded
// orthogonal Hash matrix. Knob names, types and ranges come from the knob table (knobs.cpp);
// JSON exceptions are caught here and become InvalidArgument.
#include "sparse/sparse_config.h"

#include "sparse/knobs.h"

#include <algorithm>
#include <cmath>

#include <nlohmann/json.hpp>

namespace gsa::sparse {

using backend::QueryMode;
using backend::RepKind;

const char* rep_kind_name(RepKind kind) {
  switch (kind) {
    case RepKind::Mean: return "mean";
    case RepKind::MinMax: return "minmax";
    case RepKind::Hash: return "hash";
    case RepKind::Quant: return "quant";
  }
  return "unknown";
}
const char* query_mode_name(QueryMode mode) {
  switch (mode) {
    case QueryMode::GroupMean: return "group_mean";
    case QueryMode::GroupMax: return "group_max";
  }
  return "unknown";
}
const char* scope_name(Scope scope) {
  switch (scope) {
    case Scope::PerLayer: return "per_layer";
    case Scope::PerKvHead: return "per_kv_head";
  }
  return "unknown";
}
const char* selector_kind_name(SelectorKind kind) {
  switch (kind) {
    case SelectorKind::Device: return "device";
    case SelectorKind::Cpu: return "cpu";
  }
  return "unknown";
}

const char* selection_name(Selection selection) {
  switch (selection) {
    case Selection::Gsa: return "gsa";
    case Selection::Oracle: return "oracle";
  }
  return "unknown";
}

const char* rank_by_name(RankBy rank_by) {
  switch (rank_by) {
    case RankBy::Score: return "score";
    case RankBy::Mass: return "mass";
    case RankBy::Rerank: return "rerank";
  }
  return "unknown";
}

namespace {

// Budget bounds in blocks for the ratio rule (at least 1 block each).
int min_budget(const SparseConfig& c) { return std::max(1, c.budget_min_tokens / c.block_size); }
int max_budget(const SparseConfig& c) { return std::max(1, c.budget_max_tokens / c.block_size); }

}  // namespace

Status validate(const SparseConfig& c) {
  // Each knob's own range comes from the knob table; the rules between knobs follow.
  if (Status st = check_ranges(sparse_knobs(), c); !st.is_ok())
    return invalid_argument("sparse config: {}", st.message());
  if (c.budget_min_tokens < c.block_size)
    return invalid_argument("sparse config: budget_min_tokens {} < block_size {}",
                            c.budget_min_tokens, c.block_size);
  if (c.budget_max_tokens < c.budget_min_tokens)
    return invalid_argument("sparse config: budget_max_tokens {} < budget_min_tokens {}",
                            c.budget_max_tokens, c.budget_min_tokens);
  if (c.budget_tokens % c.block_size != 0)
    return invalid_argument("sparse config: budget_tokens {} is not a multiple of block_size {}",
                            c.budget_tokens, c.block_size);
  // In int64: sink_blocks and local_blocks may each be up to INT32_MAX.
  const int64_t forced = int64_t(c.sink_blocks) + c.local_blocks;
  const int smallest = c.budget_tokens > 0 ? c.budget_tokens / c.block_size : min_budget(c);
  if (smallest < forced)
    return invalid_argument("sparse config: a budget of {} blocks is smaller than sink_blocks + "
                            "local_blocks = {}", smallest, forced);
  if (c.lag > 0 && c.selector != SelectorKind::Cpu)
    return invalid_argument("sparse config: lag {} needs selector \"cpu\" (the asynchronous "
                            "selector)", c.lag);
  if (c.selection == Selection::Oracle && c.lag != 0)
    return invalid_argument("sparse config: selection \"oracle\" runs inline (lag 0), got lag {}",
                            c.lag);
  if (c.sub_block > c.block_size)
    return invalid_argument("sparse config: sub_block {} must be 0 or a power of two <= block_size {}",
                            c.sub_block, c.block_size);
  if (c.sub_block != 0 && (c.representation == RepKind::Hash || c.representation == RepKind::Quant))
    return invalid_argument("sparse config: sub_block needs representation mean or minmax ({} is "
                            "per token already)", rep_kind_name(c.representation));
  if (c.rank_by == RankBy::Rerank && c.lag != 0)
    return invalid_argument("sparse config: rank_by \"rerank\" reads the keys inline (lag 0), got lag {}",
                            c.lag);
  if (c.rank_by == RankBy::Mass && c.representation == RepKind::Hash)
    return invalid_argument("sparse config: rank_by \"mass\" needs representation mean, minmax or quant");
  return Status::ok();
}

int forced_blocks(const SparseConfig& c, int n_blocks) {
  if (n_blocks <= 0) return 0;
  const int sink = std::min(std::max(c.sink_blocks, 0), n_blocks);
  const int local_lo = std::max(n_blocks - std::max(c.local_blocks, 1), sink);
  return sink + (n_blocks - local_lo);
}

backend::BlockSelectParams select_params(const SparseConfig& c, int n_heads, int n_kv_heads, int head_dim) {
  backend::BlockSelectParams p;
  p.n_heads = n_heads;
  p.n_kv_heads = n_kv_heads;
  p.head_dim = head_dim;
  p.block_size = c.block_size;
  p.sink_blocks = c.sink_blocks;
  p.local_blocks = c.local_blocks;
  p.kind = c.representation;
  p.sub_block = c.sub_block;
  p.query_mode = c.query;
  p.per_kv_head = c.scope == Scope::PerKvHead;
  p.rerank_factor = c.rerank_factor;
  return p;
}

int budget_blocks(const SparseConfig& c, int n_blocks) {
  if (n_blocks <= 0) return 0;
  int budget;
  if (c.budget_tokens > 0) {
    budget = c.budget_tokens / c.block_size;
  } else {
    const double raw = std::round(c.budget_ratio * double(n_blocks));
    budget = int(std::clamp(raw, double(min_budget(c)), double(max_budget(c))));
  }
  budget = std::max(budget, forced_blocks(c, n_blocks));
  return std::min(budget, n_blocks);
}

int budget_blocks(const SparseConfig& c, int n_blocks, int32_t budget_tokens_override) {
  if (budget_tokens_override <= 0 || n_blocks <= 0) return budget_blocks(c, n_blocks);
  const int budget = int((int64_t(budget_tokens_override) + c.block_size - 1) / c.block_size);
  return std::min(std::max(budget, forced_blocks(c, n_blocks)), n_blocks);
}

bool sparse_eligible(const SparseConfig& c, int64_t seq_len) {
  return c.enabled && seq_len >= c.min_context;
}

bool sparse_eligible(const SparseConfig& c, int64_t seq_len, int32_t min_context_override) {
  return c.enabled && seq_len >= (min_context_override >= 0 ? min_context_override : c.min_context);
}

std::vector<float> make_hash_matrix(int head_dim, uint64_t seed) {
  if (head_dim <= 0) return {};
  const size_t n = size_t(head_dim);
  std::vector<double> m(n * n);
  // Box-Muller over a splitmix64 stream: the same numbers on every platform, unlike
  // std::normal_distribution.
  uint64_t state = seed;
  auto next_unit = [&state]() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double(z >> 11) + 0.5) * (1.0 / 9007199254740992.0);  // (0, 1)
  };
  for (size_t i = 0; i < m.size(); i += 2) {
    const double r = std::sqrt(-2.0 * std::log(next_unit()));
    const double t = 6.283185307179586 * next_unit();
    m[i] = r * std::cos(t);
    if (i + 1 < m.size()) m[i + 1] = r * std::sin(t);
  }
  // Modified Gram-Schmidt over columns (entry (r, c) at m[r * n + c]), twice for accuracy.
  for (size_t c = 0; c < n; ++c) {
    for (int pass = 0; pass < 2; ++pass) {
      for (size_t prev = 0; prev < c; ++prev) {
        double d = 0.0;
        for (size_t r = 0; r < n; ++r) d += m[r * n + c] * m[r * n + prev];
        for (size_t r = 0; r < n; ++r) m[r * n + c] -= d * m[r * n + prev];
      }
    }
    double norm = 0.0;
    for (size_t r = 0; r < n; ++r) norm += m[r * n + c] * m[r * n + c];
    norm = std::sqrt(norm);
    for (size_t r = 0; r < n; ++r) m[r * n + c] /= norm;
  }
  return std::vector<float>(m.begin(), m.end());
}

namespace {

using nlohmann::json;

// One JSON value into the knob with that key; the JSON type must match the knob's.
Status apply_key(const std::string& key, const json& v, SparseConfig* c) {
  const Knob<SparseConfig>* k = find_sparse_knob(key);
  if (!k) return invalid_argument("sparse config: unknown key \"{}\"", key);
  switch (k->type) {
    case KnobType::Bool:
      if (!v.is_boolean()) return invalid_argument("sparse config: \"{}\" must be a boolean", key);
      k->set(*c, int64_t(v.get<bool>() ? 1 : 0));
      return Status::ok();
    case KnobType::Int: {
      if (!v.is_number_integer()) return invalid_argument("sparse config: \"{}\" must be an integer", key);
      const int64_t x = v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT64_MAX)
                            ? INT64_MAX
                            : v.get<int64_t>();
      // The field is an int: wider values never reach it (validate checks the knob's range).
      if (x < INT32_MIN || x > INT32_MAX)
        return invalid_argument("sparse config: \"{}\" = {} out of range", key, x);
      k->set(*c, x);
      return Status::ok();
    }
    case KnobType::Real:
      if (!v.is_number()) return invalid_argument("sparse config: \"{}\" must be a number", key);
      k->set(*c, v.get<double>());
      return Status::ok();
    case KnobType::Uint64:
      if (!v.is_number_unsigned())
        return invalid_argument("sparse config: \"{}\" must be a non-negative integer", key);
      k->set(*c, v.get<uint64_t>());
      return Status::ok();
    case KnobType::Enum: {
      if (!v.is_string()) return invalid_argument("sparse config: \"{}\" must be a string", key);
      const std::string s = v.get<std::string>();
      auto value = parse_value(*k, s);
      if (!value)
        return invalid_argument("sparse config: \"{}\" = \"{}\" is not one of {}", key, s, names_text(*k));
      k->set(*c, *value);
      return Status::ok();
    }
  }
  return internal_error("sparse config: knob \"{}\" has no JSON type", key);
}

}  // namespace

Result<SparseConfig> parse_sparse_config_json(std::string_view text) {
  json doc;
  try {
    doc = json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    return invalid_argument("sparse config: invalid JSON: {}", e.what());
  }
  if (!doc.is_object()) return invalid_argument("sparse config: expected a JSON object");
  SparseConfig cfg;
  try {
    for (const auto& [key, value] : doc.items()) GSA_RETURN_IF_ERROR(apply_key(key, value, &cfg));
  } catch (const json::exception& e) {
    return invalid_argument("sparse config: {}", e.what());
  }
  GSA_RETURN_IF_ERROR(validate(cfg));
  return cfg;
}

std::string to_json(const SparseConfig& c) {
  json j = json::object();
  for (const Knob<SparseConfig>& k : sparse_knobs()) {
    const KnobValue v = k.get(c);
    switch (k.type) {
      case KnobType::Bool: j[std::string(k.key)] = std::get<int64_t>(v) != 0; break;
      case KnobType::Int: j[std::string(k.key)] = std::get<int64_t>(v); break;
      case KnobType::Real: j[std::string(k.key)] = std::get<double>(v); break;
      case KnobType::Uint64: j[std::string(k.key)] = std::get<uint64_t>(v); break;
      case KnobType::Enum: j[std::string(k.key)] = format_value(k, v); break;
    }
  }
  return j.dump();
}

}  // namespace gsa::sparse
