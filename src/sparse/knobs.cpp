// The SparseConfig knob table (one entry per GSA knob), the per-request overrides that share
// its ranges, and their check. Help texts here are what `gsa generate --help` and
// docs/KNOBS.md show.
#include "sparse/knobs.h"

#include <fmt/format.h>

#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdlib>

namespace gsa::sparse {

const char* knob_type_name(KnobType type) {
  switch (type) {
    case KnobType::Bool: return "bool";
    case KnobType::Int: return "int";
    case KnobType::Real: return "real";
    case KnobType::Enum: return "enum";
    case KnobType::Uint64: return "uint64";
  }
  return "unknown";
}

namespace {

std::string bound_text(double v) {
  if (std::trunc(v) == v && std::fabs(v) < 1e15) return std::to_string(int64_t(v));
  return fmt::format("{}", v);
}

}  // namespace

std::string format_value(const KnobSpec& k, const KnobValue& v) {
  switch (k.type) {
    case KnobType::Bool: return std::get<int64_t>(v) ? "true" : "false";
    case KnobType::Int: return std::to_string(std::get<int64_t>(v));
    case KnobType::Real: return fmt::format("{}", std::get<double>(v));
    case KnobType::Uint64: return std::to_string(std::get<uint64_t>(v));
    case KnobType::Enum:
      for (const KnobEnumName& n : k.names)
        if (n.value == std::get<int64_t>(v)) return std::string(n.name);
      return std::to_string(std::get<int64_t>(v));
  }
  return {};
}

std::string names_text(const KnobSpec& k, std::string_view sep) {
  std::string s;
  for (const KnobEnumName& n : k.names) {
    if (!s.empty()) s += sep;
    s += n.name;
  }
  return s;
}

std::string range_text(const KnobSpec& k) {
  switch (k.type) {
    case KnobType::Bool: return "true, false";
    case KnobType::Enum: return names_text(k);
    case KnobType::Uint64: return "[0, 2^64 - 1]";
    case KnobType::Int:
      if (k.pow2 && k.lo == 0) return "0 or a power of two <= " + bound_text(k.hi);
      if (k.pow2)
        return fmt::format("a power of two in [{}, {}]", bound_text(k.lo), bound_text(k.hi));
      if (k.hi == double(INT32_MAX)) return ">= " + bound_text(k.lo);
      return fmt::format("[{}, {}]", bound_text(k.lo), bound_text(k.hi));
    case KnobType::Real:
      return fmt::format("{}{}, {}{}", k.lo_open ? "(" : "[", bound_text(k.lo), bound_text(k.hi),
                         k.hi_open ? ")" : "]");
  }
  return {};
}

bool in_range(const KnobSpec& k, const KnobValue& v) {
  switch (k.type) {
    case KnobType::Bool: return std::get<int64_t>(v) == 0 || std::get<int64_t>(v) == 1;
    case KnobType::Uint64: return true;
    case KnobType::Enum:
      for (const KnobEnumName& n : k.names)
        if (n.value == std::get<int64_t>(v)) return true;
      return false;
    case KnobType::Int: {
      const int64_t x = std::get<int64_t>(v);
      if (x < int64_t(k.lo) || x > int64_t(k.hi)) return false;
      if (!k.pow2 || (x == 0 && k.lo == 0)) return true;
      return x > 0 && (x & (x - 1)) == 0;
    }
    case KnobType::Real: {
      const double x = std::get<double>(v);  // NaN is outside every range
      return (k.lo_open ? x > k.lo : x >= k.lo) && (k.hi_open ? x < k.hi : x <= k.hi);
    }
  }
  return false;
}

Status check_value(const KnobSpec& k, const KnobValue& v, std::string_view name) {
  if (in_range(k, v)) return Status::ok();
  const std::string why = k.why.empty() ? "" : fmt::format(" ({})", k.why);
  if (k.type == KnobType::Enum)
    return invalid_argument("unknown {} {}{}", name, std::get<int64_t>(v), why);
  const std::string value = format_value(k, v);
  if (k.type == KnobType::Int && !k.pow2 && k.hi == double(INT32_MAX))
    return invalid_argument("{} {} < {}{}", name, value, bound_text(k.lo), why);
  if (k.pow2) return invalid_argument("{} {} must be {}{}", name, value, range_text(k), why);
  return invalid_argument("{} {} outside {}{}", name, value, range_text(k), why);
}

Result<KnobValue> parse_value(const KnobSpec& k, std::string_view text) {
  const char* b = text.data();
  const char* e = b + text.size();
  switch (k.type) {
    case KnobType::Bool:
      if (text == "true" || text == "1") return KnobValue(int64_t(1));
      if (text == "false" || text == "0") return KnobValue(int64_t(0));
      return invalid_argument("'{}' is not true or false", text);
    case KnobType::Int: {
      if (b != e && *b == '+') ++b;
      int64_t v = 0;
      const auto [p, ec] = std::from_chars(b, e, v);
      if (b == e || p != e) return invalid_argument("'{}' is not a whole number", text);
      if (ec != std::errc() || v < INT32_MIN || v > INT32_MAX)
        return invalid_argument("'{}' is out of range", text);
      return KnobValue(v);
    }
    case KnobType::Uint64: {
      if (b != e && *b == '+') ++b;
      uint64_t v = 0;
      const auto [p, ec] = std::from_chars(b, e, v);
      if (b == e || p != e) return invalid_argument("'{}' is not a whole number", text);
      if (ec != std::errc()) return invalid_argument("'{}' is out of range", text);
      return KnobValue(v);
    }
    case KnobType::Real: {
      const std::string s(text);
      char* end = nullptr;
      const double v = s.empty() ? 0.0 : std::strtod(s.c_str(), &end);
      if (s.empty() || end != s.c_str() + s.size() ||
          std::isspace(static_cast<unsigned char>(s[0])))
        return invalid_argument("'{}' is not a number", text);
      return KnobValue(v);
    }
    case KnobType::Enum:
      for (const KnobEnumName& n : k.names)
        if (n.name == text) return KnobValue(n.value);
      return invalid_argument("'{}' is not one of {}", text, names_text(k));
  }
  return internal_error("knob '{}': unknown type", k.key);
}

namespace {

using C = SparseConfig;
constexpr double kIntMax = INT32_MAX;

// A copy of k with a note appended to its range errors.
Knob<C> with_why(Knob<C> k, std::string_view why) {
  k.why = why;
  return k;
}

Knob<C> pow2(Knob<C> k) {
  k.pow2 = true;
  return k;
}

Knob<C> engine_flag(Knob<C> k) {
  k.engine_flag = true;
  return k;
}

std::vector<Knob<C>> make_sparse_knobs() {
  return {
      bool_knob<C>("enabled", "", &C::enabled,
                   "false: every sequence decodes densely (JSON only; --sparse gsa turns GSA on)"),
      engine_flag(pow2(int_knob<C>("block_size", "--block-size", &C::block_size, 1, 4096,
                                   "tokens per KV block and selection granularity"))),
      enum_knob<C>("representation", "--representation", &C::representation, rep_kind_name,
                   "block representation: mean key, minmax box, hash bits, or quant (2-bit keys "
                   "inside the minmax box)"),
      enum_knob<C>("query", "--query", &C::query, query_mode_name,
                   "GQA query: the group's mean query, or the max over its heads' scores"),
      enum_knob<C>("scope", "--scope", &C::scope, scope_name,
                   "one block set per layer (scores summed over kv heads) or per kv head"),
      int_knob<C>("sink_blocks", "--sink-blocks", &C::sink_blocks, 0, kIntMax,
                  "first blocks always kept"),
      with_why(int_knob<C>("local_blocks", "--local-blocks", &C::local_blocks, 1, kIntMax,
                           "last blocks always kept, the partial last block among them"),
               "the last block is always kept"),
      real_knob<C>(
          "budget_ratio", "--budget-ratio", &C::budget_ratio, 0, 1, true, false,
          "blocks attended as a ratio of the context's blocks, clamped by budget_min_tokens and "
          "budget_max_tokens"),
      int_knob<C>("budget_min_tokens", "--budget-min-tokens", &C::budget_min_tokens, 1, kIntMax,
                  "lower clamp of the ratio budget, in tokens (at least block_size)"),
      int_knob<C>("budget_max_tokens", "--budget-max-tokens", &C::budget_max_tokens, 1, kIntMax,
                  "upper clamp of the ratio budget, in tokens"),
      int_knob<C>("budget_tokens", "--budget-tokens", &C::budget_tokens, 0, kIntMax,
                  "fixed budget in tokens, a multiple of block_size; overrides the ratio (0: off)"),
      int_knob<C>("min_context", "--min-context", &C::min_context, 0, kIntMax,
                  "sequences shorter than this decode densely (exact full attention)"),
      int_knob<C>("select_every", "--select-every", &C::select_every, 1, kIntMax,
                  "recompute the selection every N decode steps"),
      int_knob<C>("lag", "--lag", &C::lag, 0, kIntMax,
                  "0: select inline from this step's query; N >= 1: asynchronously, N steps behind "
                  "(selector cpu)"),
      enum_knob<C>("selector", "--selector", &C::selector, selector_kind_name,
                   "where selections run: on the model's device, or the asynchronous CPU selector"),
      int_knob<C>("cpu_workers", "--cpu-workers", &C::cpu_workers, 1, 64,
                  "threads of the asynchronous CPU selector"),
      enum_knob<C>("selection", "--selection", &C::selection, selection_name,
                   "gsa (representation scores) or oracle (true attention mass; diagnostic)"),
      int_knob<C>("dense_layers", "--dense-layers", &C::dense_layers, 0, 4096,
                  "the first N layers always decode densely"),
      pow2(int_knob<C>("sub_block", "--sub-block", &C::sub_block, 0, 4096,
                       "mean/minmax per run of N tokens inside each block, at most block_size; a "
                       "block scores its best run (0: off)")),
      enum_knob<C>("rank_by", "--rank-by", &C::rank_by, rank_by_name,
                   "rank blocks by their representation score, by the attention mass it "
                   "estimates (mass: not with hash), or rerank: the best blocks by score "
                   "re-ranked by their true attention mass from the keys (lag 0)"),
      int_knob<C>("rerank_factor", "--rerank-factor", &C::rerank_factor, 1, 64,
                  "rank_by rerank: candidates per free slot of a list, the best by score"),
      uint64_knob<C>("hash_seed", "", &C::hash_seed,
                     "seed of the hash representation's projection "
                     "matrix (JSON only)"),
  };
}

constexpr OverrideField kOverrides[] = {
    {"sparse_budget_tokens", "budget_tokens", "0",
     "this request's budget in tokens, rounded up to whole blocks"},
    {"sparse_min_context", "min_context", "-1",
     "this request decodes densely below this many tokens (INT32_MAX: exact full attention)"},
    {"sparse_rank_by", "rank_by", "-1", "this request's rank_by, as the enum's value"},
    {"sparse_oracle", "selection", "false",
     "rank this request's blocks as selection oracle does "
     "(lag 0 engines only)"},
};

// Keep in step with validate() (sparse_config.cpp).
constexpr std::string_view kRules[] = {
    "`budget_min_tokens` >= `block_size`, and `budget_max_tokens` >= `budget_min_tokens`",
    "`budget_tokens` is a multiple of `block_size`",
    "the smallest budget (`budget_tokens`, else `budget_min_tokens`, in blocks) holds "
    "`sink_blocks` + `local_blocks`",
    "`lag` > 0 needs `selector` cpu; `selection` oracle and `rank_by` rerank need `lag` 0",
    "`sub_block` <= `block_size`, and only with `representation` mean or minmax",
    "`rank_by` mass needs `representation` mean, minmax or quant",
};

}  // namespace

std::span<const std::string_view> sparse_rules() { return kRules; }

std::span<const Knob<SparseConfig>> sparse_knobs() {
  static const std::vector<Knob<SparseConfig>> table = make_sparse_knobs();
  return table;
}

const Knob<SparseConfig>* find_sparse_knob(std::string_view key) {
  return find_knob(sparse_knobs(), key);
}

std::span<const OverrideField> request_overrides() { return kOverrides; }

Status check_request_overrides(const SparseConfig& cfg, int32_t budget_tokens, int32_t min_context,
                               int8_t rank_by) {
  // The override's own "keep" value is allowed beside the knob's range.
  if (budget_tokens != 0)
    GSA_RETURN_IF_ERROR(check_value(*find_sparse_knob("budget_tokens"), int64_t(budget_tokens),
                                    "sparse_budget_tokens"));
  if (min_context != -1)
    GSA_RETURN_IF_ERROR(
        check_value(*find_sparse_knob("min_context"), int64_t(min_context), "sparse_min_context"));
  if (rank_by != -1) {
    GSA_RETURN_IF_ERROR(
        check_value(*find_sparse_knob("rank_by"), int64_t(rank_by), "sparse_rank_by"));
    if (RankBy(rank_by) == RankBy::Rerank && cfg.lag != 0)
      return invalid_argument("sparse_rank_by rerank reads the keys inline: it needs an engine "
                              "with lag 0, not lag {}", cfg.lag);
    if (RankBy(rank_by) == RankBy::Mass && cfg.representation == backend::RepKind::Hash)
      return invalid_argument(
          "sparse_rank_by mass needs representation mean, minmax or quant, not hash");
  }
  return Status::ok();
}

}  // namespace gsa::sparse
