// Knob tables: each knob of a parameter struct declared once, with its JSON key, CLI flag,
// type, range, help text, enum names and accessors; the default is read from a
// default-constructed struct. sparse_knobs() is the table of SparseConfig: the JSON parser,
// to_json, validate's range checks, the CLI's GSA flags and docs/KNOBS.md read it. The CLI
// declares its sampling table with the same Knob<T>. Rules between knobs (a budget against the
// block size, lag needs the cpu selector) stay in validate(); this file holds no policy.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "core/status.h"
#include "sparse/sparse_config.h"

namespace gsa::sparse {

enum class KnobType : uint8_t { Bool, Int, Real, Enum, Uint64 };
/// "bool", "int", "real", "enum", "uint64" (the docs' and error messages' words).
const char* knob_type_name(KnobType type);

/// A knob's value: Bool (0 / 1), Int and Enum (the enumerator's value) as int64_t, Real as
/// double, Uint64 as uint64_t.
using KnobValue = std::variant<int64_t, double, uint64_t>;

struct KnobEnumName {
  std::string_view name;
  int64_t value;
};

/// What a knob is, apart from the struct it lives in. Int knobs are stored in an `int` (or
/// narrower) field; their range is [lo, hi] (pow2: a power of two in it, or 0 when lo is 0).
/// Real ranges exclude a bound with lo_open / hi_open. Enum and Bool knobs have no range beyond
/// their names.
struct KnobSpec {
  std::string_view key;  // JSON key and field name
  // The CLI flag as CLI11 declares it ("--budget-tokens", "-n,--n-predict"); empty: none.
  std::string_view flag;
  KnobType type = KnobType::Int;
  double lo = 0, hi = 0;
  bool lo_open = false, hi_open = false;
  bool pow2 = false;
  // The flag is an engine flag too (--block-size), which the CLI binds itself.
  bool engine_flag = false;
  std::string_view help;
  std::string_view why;  // appended to a range error, in parentheses; may be empty
  // Shown instead of the struct's default where the caller picks the value (a random seed).
  std::string_view shown_default;
  std::vector<KnobEnumName> names;

  /// The long flag ("--n-predict" of "-n,--n-predict"), as CLI11 names it in its messages.
  std::string_view long_flag() const {
    const size_t comma = flag.rfind(',');
    return comma == std::string_view::npos ? flag : flag.substr(comma + 1);
  }
};

/// A knob of struct T: its spec and the accessors of its field.
template <typename T>
struct Knob : KnobSpec {
  std::function<KnobValue(const T&)> get;
  std::function<void(T&, const KnobValue&)> set;
};

// ---- Declaring knobs (the tables use these) ----

namespace detail {
template <typename T>
Knob<T> make_knob(std::string_view key, std::string_view flag, KnobType type, double lo, double hi,
                  std::string_view help) {
  Knob<T> k;
  k.key = key;
  k.flag = flag;
  k.type = type;
  k.lo = lo;
  k.hi = hi;
  k.help = help;
  return k;
}
}  // namespace detail

template <typename T, typename M>
Knob<T> int_knob(std::string_view key, std::string_view flag, M T::*field, double lo, double hi,
                 std::string_view help) {
  Knob<T> k = detail::make_knob<T>(key, flag, KnobType::Int, lo, hi, help);
  k.get = [field](const T& t) { return KnobValue(int64_t(t.*field)); };
  k.set = [field](T& t, const KnobValue& v) { t.*field = M(std::get<int64_t>(v)); };
  return k;
}

template <typename T, typename M>
Knob<T> real_knob(std::string_view key, std::string_view flag, M T::*field, double lo, double hi,
                  bool lo_open, bool hi_open, std::string_view help) {
  Knob<T> k = detail::make_knob<T>(key, flag, KnobType::Real, lo, hi, help);
  k.lo_open = lo_open;
  k.hi_open = hi_open;
  k.get = [field](const T& t) { return KnobValue(double(t.*field)); };
  k.set = [field](T& t, const KnobValue& v) { t.*field = M(std::get<double>(v)); };
  return k;
}

template <typename T>
Knob<T> uint64_knob(std::string_view key, std::string_view flag, uint64_t T::*field,
                    std::string_view help) {
  Knob<T> k = detail::make_knob<T>(key, flag, KnobType::Uint64, 0, 18446744073709551615.0, help);
  k.get = [field](const T& t) { return KnobValue(t.*field); };
  k.set = [field](T& t, const KnobValue& v) { t.*field = std::get<uint64_t>(v); };
  return k;
}

template <typename T>
Knob<T> bool_knob(std::string_view key, std::string_view flag, bool T::*field,
                  std::string_view help) {
  Knob<T> k = detail::make_knob<T>(key, flag, KnobType::Bool, 0, 1, help);
  k.get = [field](const T& t) { return KnobValue(int64_t(t.*field ? 1 : 0)); };
  k.set = [field](T& t, const KnobValue& v) { t.*field = std::get<int64_t>(v) != 0; };
  return k;
}

/// An enum knob; `name` is the enum's name function (it answers "unknown" for values it does
/// not know), so the knob accepts exactly the names that function gives.
template <typename T, typename E>
Knob<T> enum_knob(std::string_view key, std::string_view flag, E T::*field, const char* (*name)(E),
                  std::string_view help) {
  Knob<T> k = detail::make_knob<T>(key, flag, KnobType::Enum, 0, 0, help);
  for (int i = 0; i < 256; ++i)
    if (std::string_view n = name(E(i)); n != "unknown") k.names.push_back({n, i});
  k.get = [field](const T& t) { return KnobValue(int64_t(t.*field)); };
  k.set = [field](T& t, const KnobValue& v) { t.*field = E(std::get<int64_t>(v)); };
  return k;
}

// ---- Reading a table ----

template <typename T>
const Knob<T>* find_knob(std::span<const Knob<T>> table, std::string_view key) {
  for (const Knob<T>& k : table)
    if (k.key == key) return &k;
  return nullptr;
}

/// The value as the docs, --help and JSON enum values write it: a name for Enum, true/false for
/// Bool, the shortest round-trip text for Real.
std::string format_value(const KnobSpec& k, const KnobValue& v);

/// The default: shown_default, else the value of a default-constructed T.
template <typename T>
std::string default_text(const Knob<T>& k) {
  return k.shown_default.empty() ? format_value(k, k.get(T{})) : std::string(k.shown_default);
}

/// The enum's names, comma separated ("mean, minmax, hash, quant").
std::string names_text(const KnobSpec& k, std::string_view sep = ", ");

/// The valid values in words: ">= 0", "[1, 64]", "(0, 1]", "a power of two in [1, 4096]",
/// "0 or a power of two <= 4096", "mean, minmax, hash, quant", "[0, 2^64 - 1]", "true, false".
std::string range_text(const KnobSpec& k);

/// True when v is inside the knob's range (Enum: one of its values).
bool in_range(const KnobSpec& k, const KnobValue& v);

/// InvalidArgument naming the knob by `name` (its key, or a flag) when value v is outside its
/// range: "sink_blocks -1 < 0", "cpu_workers 0 outside [1, 64]", "unknown representation 9",
/// "block_size 96 must be a power of two in [1, 4096]", with " (why)" when the knob has one.
Status check_value(const KnobSpec& k, const KnobValue& v, std::string_view name);

/// check_value for every knob of the table, in table order; the message names the key.
template <typename T>
Status check_ranges(std::span<const Knob<T>> table, const T& t) {
  for (const Knob<T>& k : table) GSA_RETURN_IF_ERROR(check_value(k, k.get(t), k.key));
  return Status::ok();
}

/// Reads text as the knob's type ("12", "0.3", "minmax", "true") into a KnobValue, without the
/// range check (Int: any int32). InvalidArgument ("'x' is not a whole number", "'x' is not one
/// of a, b") names nothing; the caller prefixes the flag or key.
Result<KnobValue> parse_value(const KnobSpec& k, std::string_view text);

// ---- The SparseConfig table ----

/// Every GSA knob, in SparseConfig's field order. Built once; never empty.
std::span<const Knob<SparseConfig>> sparse_knobs();
/// The knob with this JSON key, or null.
const Knob<SparseConfig>* find_sparse_knob(std::string_view key);

/// A per-request GSA override (engine::RequestInput's sparse_* fields) and the SparseConfig
/// knob whose range it shares.
struct OverrideField {
  std::string_view field;  // the RequestInput field
  std::string_view knob;   // the SparseConfig key it overrides
  std::string_view keep;   // the value that keeps the engine's setting
  std::string_view help;
};
std::span<const OverrideField> request_overrides();

/// The rules between knobs that validate() checks after each knob's own range, in words (for
/// docs/KNOBS.md; validate() is the reference).
std::span<const std::string_view> sparse_rules();

/// Checks per-request overrides against the knobs they share with `cfg` (budget_tokens >= 0,
/// min_context -1 or in min_context's range, rank_by -1 or one of rank_by's values, mass not
/// with representation hash). Messages name the RequestInput field.
Status check_request_overrides(const SparseConfig& cfg, int32_t budget_tokens, int32_t min_context,
                               int8_t rank_by);

}  // namespace gsa::sparse
