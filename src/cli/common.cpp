// Engine flag parsing and checks, model resolution and the error convention of the gsa command.
#include "cli/common.h"

#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string_view>
#include <type_traits>
#include <utility>

#include "core/paths.h"
#include "model/hparams.h"
#include "sparse/sparse_config.h"

namespace gsa::cli {

namespace {

struct KnownModel {
  const char* name;
  const char* file;
};
// Names that scripts/fetch-model knows, and the file it places in the models directory.
constexpr KnownModel kKnownModels[] = {
    {"smollm2-135m", "SmolLM2-135M-Instruct.Q4_1.gguf"},
    {"qwen2.5-coder-0.5b", "Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf"},
    {"qwen2.5-coder-1.5b", "Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf"},
};
constexpr const char* kDefaultModel = "smollm2-135m";

// SparseConfig fields and the flags that set them: sparse::validate's messages name fields,
// the user typed flags.
constexpr std::pair<const char*, const char*> kKnobFlags[] = {
    {"block_size", "--block-size"},
    {"representation", "--representation"},
    {"query", "--query"},
    {"scope", "--scope"},
    {"sink_blocks", "--sink-blocks"},
    {"local_blocks", "--local-blocks"},
    {"budget_ratio", "--budget-ratio"},
    {"budget_min_tokens", "--budget-min-tokens"},
    {"budget_max_tokens", "--budget-max-tokens"},
    {"budget_tokens", "--budget-tokens"},
    {"min_context", "--min-context"},
    {"select_every", "--select-every"},
    {"lag", "--lag"},
    {"selector", "--selector"},
    {"cpu_workers", "--cpu-workers"},
    {"selection", "--selection"},
    {"dense_layers", "--dense-layers"},
    {"sub_block", "--sub-block"},
    {"rank_by", "--rank-by"},
};

// A sparse::validate message with the first mention of each field replaced by its flag.
std::string with_flag_names(std::string m) {
  constexpr std::string_view kPrefix = "sparse config: ";
  if (m.starts_with(kPrefix)) m.erase(0, kPrefix.size());
  auto word = [](char ch) { return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '-'; };
  for (const auto& [key, flag] : kKnobFlags) {
    const std::string_view k = key;
    for (size_t at = m.find(k); at != std::string::npos; at = m.find(k, at + 1)) {
      if ((at == 0 || !word(m[at - 1])) && (at + k.size() == m.size() || !word(m[at + k.size()]))) {
        m.replace(at, k.size(), flag);
        break;
      }
    }
  }
  return m;
}

// Every name the enum's name function knows (it answers "unknown" for the other values), so the
// flags accept what the --sparse-config parser accepts.
template <typename E>
std::vector<std::string> enum_names(const char* (*name)(E)) {
  std::vector<std::string> names;
  for (int i = 0; i < 256; ++i)
    if (std::string_view n = name(E(i)); n != "unknown") names.emplace_back(n);
  return names;
}

template <typename E>
Status set_enum(const std::optional<std::string>& v, const char* flag, const char* (*name)(E), E* out) {
  if (!v) return Status::ok();
  for (int i = 0; i < 256; ++i) {
    if (*v == name(E(i)) && *v != "unknown") {
      *out = E(i);
      return Status::ok();
    }
  }
  std::string known;
  for (const std::string& n : enum_names(name)) known += (known.empty() ? "" : ", ") + n;
  return invalid_argument("{}: '{}' is not one of {}", flag, *v, known);
}

// The first GSA flag given, or nullptr.
const char* first_gsa_flag(const EngineFlags& f) {
  const std::pair<const char*, bool> given[] = {
      {"--sparse-config", f.sparse_config.has_value()},
      {"--representation", f.representation.has_value()},
      {"--query", f.query.has_value()},
      {"--scope", f.scope.has_value()},
      {"--selector", f.selector.has_value()},
      {"--selection", f.selection.has_value()},
      {"--rank-by", f.rank_by.has_value()},
      {"--dense-layers", f.dense_layers.has_value()},
      {"--sub-block", f.sub_block.has_value()},
      {"--sink-blocks", f.sink_blocks.has_value()},
      {"--local-blocks", f.local_blocks.has_value()},
      {"--budget-ratio", f.budget_ratio.has_value()},
      {"--budget-min-tokens", f.budget_min_tokens.has_value()},
      {"--budget-max-tokens", f.budget_max_tokens.has_value()},
      {"--budget-tokens", f.budget_tokens.has_value()},
      {"--min-context", f.min_context.has_value()},
      {"--select-every", f.select_every.has_value()},
      {"--lag", f.lag.has_value()},
      {"--cpu-workers", f.cpu_workers.has_value()},
  };
  for (const auto& [flag, set] : given)
    if (set) return flag;
  return nullptr;
}

// s as a decimal integer (an optional sign, digits); *too_big when it is one outside int64.
std::optional<int64_t> parse_decimal(const std::string& s, bool* too_big) {
  *too_big = false;
  const char* b = s.data();
  const char* e = b + s.size();
  if (b != e && *b == '+' && b + 1 != e && std::isdigit(static_cast<unsigned char>(b[1]))) ++b;
  int64_t v = 0;
  const auto [p, ec] = std::from_chars(b, e, v);
  if (b == e || p != e) return std::nullopt;
  if (ec == std::errc::result_out_of_range) {
    *too_big = true;
    return std::nullopt;
  }
  if (ec != std::errc()) return std::nullopt;
  return v;
}

std::string range_text(double lo, double hi, bool lo_open, bool hi_open) {
  return fmt::format("{}{}, {}{}", lo_open ? "(" : "[", lo, hi, hi_open ? ")" : "]");
}

}  // namespace

int fail(const Status& s) {
  std::fprintf(stderr, "gsa: %s\n", s.message().c_str());
  return 1;
}

int usage(const Status& s) {
  std::fprintf(stderr, "gsa: %s (see gsa --help)\n", s.message().c_str());
  return 2;
}

int fail_flags(const Status& s) {
  return s.code() == StatusCode::InvalidArgument ? usage(s) : fail(s);
}

bool flush_stdout() {
  errno = 0;
  const bool flushed = std::fflush(stdout) == 0;
  const int err = errno;
  if (flushed && !std::ferror(stdout)) return true;
  std::fprintf(stderr, "gsa: cannot write to stdout: %s\n", err ? std::strerror(err) : "write error");
  return false;
}

CLI::Validator int_in(int64_t lo, int64_t hi) {
  const bool bounded = hi != INT32_MAX && hi != INT64_MAX && lo != INT32_MIN && lo != INT64_MIN;
  return CLI::Validator(
      [lo, hi](std::string& s) -> std::string {
        bool too_big = false;
        const std::optional<int64_t> v = parse_decimal(s, &too_big);
        if (!v && !too_big) return fmt::format("'{}' is not a whole number", s);
        if (!v || *v < lo || *v > hi) return fmt::format("must be in [{}, {}], got {}", lo, hi, s);
        s = std::to_string(*v);
        return {};
      },
      bounded ? fmt::format("[{}, {}]", lo, hi) : std::string());
}

CLI::Validator power_of_two(int64_t hi) {
  return CLI::Validator(
      [hi](std::string& s) -> std::string {
        bool too_big = false;
        const std::optional<int64_t> v = parse_decimal(s, &too_big);
        if (!v && !too_big) return fmt::format("'{}' is not a whole number", s);
        if (!v || *v < 1 || *v > hi || (*v & (*v - 1)) != 0)
          return fmt::format("must be a power of two in [1, {}], got {}", hi, s);
        s = std::to_string(*v);
        return {};
      },
      std::string());
}

CLI::Validator uint64_value() {
  return CLI::Validator(
      [](std::string& s) -> std::string {
        bool too_big = false;
        if (s.starts_with("-")) {
          if (parse_decimal(s, &too_big) || too_big) return fmt::format("must be in [0, {}], got {}", UINT64_MAX, s);
          return fmt::format("'{}' is not a whole number", s);
        }
        const char* b = s.data() + (s.starts_with("+") ? 1 : 0);
        const char* e = s.data() + s.size();
        uint64_t v = 0;
        const auto [p, ec] = std::from_chars(b, e, v);
        if (b == e || p != e) return fmt::format("'{}' is not a whole number", s);
        if (ec != std::errc()) return fmt::format("must be in [0, {}], got {}", UINT64_MAX, s);
        s = std::to_string(v);
        return {};
      },
      std::string());
}

CLI::Validator real_in(double lo, double hi, bool lo_open, bool hi_open) {
  return CLI::Validator(
      [=](std::string& s) -> std::string {
        char* end = nullptr;
        const double v = s.empty() ? 0.0 : std::strtod(s.c_str(), &end);
        if (s.empty() || end != s.c_str() + s.size() || std::isspace(static_cast<unsigned char>(s[0])))
          return fmt::format("'{}' is not a number", s);
        if (std::isinf(lo) && std::isinf(hi)) return {};  // any number; the config checks it
        const bool above_lo = lo_open ? v > lo : v >= lo;
        const bool below_hi = hi_open ? v < hi : v <= hi;
        if (!(above_lo && below_hi))
          return fmt::format("must be in {}, got {}", range_text(lo, hi, lo_open, hi_open), s);
        return {};
      },
      std::isinf(lo) && std::isinf(hi) ? std::string() : range_text(lo, hi, lo_open, hi_open));
}

CLI::Validator one_of(std::vector<std::string> names) {
  std::string desc = "{";
  for (const std::string& n : names) desc += (desc.size() > 1 ? "," : "") + n;
  desc += "}";
  return CLI::Validator(
      [names](std::string& s) -> std::string {
        for (const std::string& n : names)
          if (s == n) return {};
        std::string known;
        for (const std::string& n : names) known += (known.empty() ? "" : ", ") + n;
        return fmt::format("'{}' is not one of {}", s, known);
      },
      desc);
}

CLI::Validator non_empty() {
  return CLI::Validator([](std::string& s) -> std::string { return s.empty() ? "must not be empty" : ""; },
                        std::string());
}

Result<std::string> resolve_model(const std::string& arg) {
  const std::string name = arg.empty() ? kDefaultModel : arg;
  for (const auto& m : kKnownModels) {
    if (name == m.name) {
      std::string path = model_dir() + "/" + m.file;
      if (!std::filesystem::exists(path))
        return not_found("model '{}' is not at {}; run: scripts/fetch-model {}", name, path, name);
      return path;
    }
  }
  if (!std::filesystem::exists(name))
    return not_found("model file '{}' does not exist (known names: smollm2-135m, "
                     "qwen2.5-coder-0.5b, qwen2.5-coder-1.5b)", name);
  return name;
}

void add_engine_flags(CLI::App* app, EngineFlags* f, bool with_shape, bool with_ctx) {
  const sparse::SparseConfig d;  // the defaults --help shows for unset GSA knobs
  app->add_option("-m,--model", f->model, "GGUF file or model name")->default_str(kDefaultModel);
  if (with_shape)
    app->add_option("--shape", f->shape,
                    "synthetic weights at a known shape instead of a file: smollm2-135m, "
                    "qwen2.5-0.5b, qwen2.5-7b")
        ->check(CLI::Validator(
            [](std::string& s) -> std::string {
              auto hp = model::hparams_preset(s);
              return hp ? std::string() : hp.status().message();
            },
            std::string()));
  app->add_option("--device", f->device, "cpu or cuda")->check(one_of({"cpu", "cuda"}));
  app->add_option("-t,--threads", f->threads, "CPU threads (0: all cores)")->transform(int_in(0, 1024));
  app->add_option("--block-size", f->block_size, "tokens per KV block, a power of two <= 1024")
      ->transform(power_of_two(1024))
      ->default_str("128");
  app->add_option("--kv-tokens", f->kv_tokens, "KV cache capacity in tokens (0: 2 x the context limit)")
      ->transform(int_in(0, INT32_MAX));
  if (with_ctx)
    app->add_option("--ctx", f->max_context, "context limit per sequence (0: the model's trained context)")
        ->transform(int_in(0, INT32_MAX));
  app->add_option("--prefill-chunk", f->prefill_chunk, "tokens per prefill forward")->transform(int_in(1, 65536));
  app->add_option("--max-batch", f->max_batch, "sequences per decode step")->transform(int_in(1, 4096));
  app->add_option("--weights", f->weights,
                  "weight format: native (GGUF types where the backend multiplies them), f32, bf16")
      ->check(one_of({"native", "f32", "bf16"}));
  app->add_flag("--no-prefix-cache", f->no_prefix_cache, "do not reuse KV blocks across prompts");
  app->add_option("--sparse", f->sparse, "decode attention: none (full) or gsa")->check(one_of({"none", "gsa"}));
  app->add_option("--sparse-config", f->sparse_config, "GSA knobs as a JSON file (flags override it)");
  // The GSA knobs: names and numbers are checked against each other once parsed
  // (engine_config), so a message can name every flag involved.
  auto knob = [&](const char* name, auto* value, const std::string& def, const std::string& desc) {
    CLI::Option* o = app->add_option(name, *value, desc)->default_str(def);
    if constexpr (std::is_same_v<std::decay_t<decltype(**value)>, int>) o->transform(int_in(INT32_MIN, INT32_MAX));
    return o;
  };
  knob("--representation", &f->representation, sparse::rep_kind_name(d.representation),
       "block representation: mean, minmax, hash, quant (2-bit keys inside the minmax box)")
      ->check(one_of(enum_names(sparse::rep_kind_name)));
  knob("--query", &f->query, sparse::query_mode_name(d.query), "GQA query: group_mean or group_max")
      ->check(one_of(enum_names(sparse::query_mode_name)));
  knob("--scope", &f->scope, sparse::scope_name(d.scope), "per_layer or per_kv_head")
      ->check(one_of(enum_names(sparse::scope_name)));
  knob("--selector", &f->selector, sparse::selector_kind_name(d.selector),
       "device or cpu (asynchronous CPU selector)")
      ->check(one_of(enum_names(sparse::selector_kind_name)));
  knob("--selection", &f->selection, sparse::selection_name(d.selection),
       "gsa (representation scores) or oracle (true attention mass; diagnostic)")
      ->check(one_of(enum_names(sparse::selection_name)));
  knob("--rank-by", &f->rank_by, sparse::rank_by_name(d.rank_by),
       "rank blocks by their representation score, or by the attention mass it estimates: score or mass")
      ->check(one_of(enum_names(sparse::rank_by_name)));
  knob("--dense-layers", &f->dense_layers, std::to_string(d.dense_layers), "the first N layers decode densely");
  knob("--sub-block", &f->sub_block, std::to_string(d.sub_block),
       "mean/minmax per run of N tokens inside each block; a block scores its best run (0: off)");
  knob("--sink-blocks", &f->sink_blocks, std::to_string(d.sink_blocks), "first blocks always kept");
  knob("--local-blocks", &f->local_blocks, std::to_string(d.local_blocks), "last blocks always kept");
  knob("--budget-ratio", &f->budget_ratio, fmt::format("{}", d.budget_ratio),
       "blocks attended as a ratio of the context")
      ->check(real_in(-HUGE_VAL, HUGE_VAL));
  knob("--budget-min-tokens", &f->budget_min_tokens, std::to_string(d.budget_min_tokens),
       "lower clamp of the ratio budget");
  knob("--budget-max-tokens", &f->budget_max_tokens, std::to_string(d.budget_max_tokens),
       "upper clamp of the ratio budget");
  knob("--budget-tokens", &f->budget_tokens, std::to_string(d.budget_tokens),
       "fixed budget in tokens, overrides the ratio (0: off)");
  knob("--min-context", &f->min_context, std::to_string(d.min_context), "shorter sequences decode densely");
  knob("--select-every", &f->select_every, std::to_string(d.select_every), "recompute the selection every N steps");
  knob("--lag", &f->lag, std::to_string(d.lag), "0: inline selection; >= 1: asynchronous, N steps behind");
  knob("--cpu-workers", &f->cpu_workers, std::to_string(d.cpu_workers), "threads of the asynchronous CPU selector");
  app->add_flag("-v,--verbose", f->verbose, "log progress to stderr");
}

Result<engine::EngineConfig> engine_config(const EngineFlags& f) {
  engine::EngineConfig c;
  if (!f.model.empty() && !f.shape.empty()) return invalid_argument("--model and --shape exclude each other");
  c.device = f.device;
  c.threads = f.threads;
  c.block_size = f.block_size.value_or(128);
  c.kv_tokens = f.kv_tokens;
  c.max_context = f.max_context;
  c.prefill_chunk = f.prefill_chunk;
  c.max_batch = f.max_batch;
  c.weights = f.weights;
  c.prefix_cache = !f.no_prefix_cache;
  c.sparse = f.sparse == "gsa";
  if (!c.sparse) {
    if (const char* flag = first_gsa_flag(f)) return invalid_argument("{} needs --sparse gsa", flag);
  } else {
    // The file's knobs, then the flags': fields set one by one, never through JSON text.
    sparse::SparseConfig& s = c.sparse_cfg;
    if (f.sparse_config) {
      const std::string& path = *f.sparse_config;
      if (std::filesystem::is_directory(path))
        return not_found("--sparse-config: '{}' is a directory, not a file", path);
      std::ifstream in(path, std::ios::binary);
      if (!in) return not_found("cannot read sparse config '{}'", path);
      std::stringstream ss;
      ss << in.rdbuf();
      auto parsed = sparse::parse_sparse_config_json(ss.str());
      if (!parsed) {
        std::string m = parsed.status().message();
        if (m.starts_with("sparse config: ")) m.erase(0, std::strlen("sparse config: "));
        return invalid_argument("--sparse-config {}: {}", path, m);
      }
      s = *parsed;
    }
    if (f.block_size) s.block_size = *f.block_size;
    GSA_RETURN_IF_ERROR(set_enum(f.representation, "--representation", sparse::rep_kind_name, &s.representation));
    GSA_RETURN_IF_ERROR(set_enum(f.query, "--query", sparse::query_mode_name, &s.query));
    GSA_RETURN_IF_ERROR(set_enum(f.scope, "--scope", sparse::scope_name, &s.scope));
    GSA_RETURN_IF_ERROR(set_enum(f.selector, "--selector", sparse::selector_kind_name, &s.selector));
    GSA_RETURN_IF_ERROR(set_enum(f.selection, "--selection", sparse::selection_name, &s.selection));
    GSA_RETURN_IF_ERROR(set_enum(f.rank_by, "--rank-by", sparse::rank_by_name, &s.rank_by));
    s.dense_layers = f.dense_layers.value_or(s.dense_layers);
    s.sub_block = f.sub_block.value_or(s.sub_block);
    s.sink_blocks = f.sink_blocks.value_or(s.sink_blocks);
    s.local_blocks = f.local_blocks.value_or(s.local_blocks);
    s.budget_ratio = f.budget_ratio.value_or(s.budget_ratio);
    s.budget_min_tokens = f.budget_min_tokens.value_or(s.budget_min_tokens);
    s.budget_max_tokens = f.budget_max_tokens.value_or(s.budget_max_tokens);
    s.budget_tokens = f.budget_tokens.value_or(s.budget_tokens);
    s.min_context = f.min_context.value_or(s.min_context);
    s.select_every = f.select_every.value_or(s.select_every);
    s.lag = f.lag.value_or(s.lag);
    s.cpu_workers = f.cpu_workers.value_or(s.cpu_workers);
    const std::string from_file =
        f.sparse_config ? fmt::format(" (flags over --sparse-config {})", *f.sparse_config) : "";
    // sparse::validate adds the two in an int; no budget (an int of blocks) holds a larger sum.
    if (s.sink_blocks >= 0 && s.local_blocks >= 0 && int64_t(s.sink_blocks) + s.local_blocks > INT32_MAX)
      return invalid_argument("--sink-blocks {} + --local-blocks {} = {} blocks: more than any budget{}",
                              s.sink_blocks, s.local_blocks, int64_t(s.sink_blocks) + s.local_blocks, from_file);
    if (Status st = sparse::validate(s); !st.is_ok())
      return invalid_argument("{}{}", with_flag_names(st.message()), from_file);
    c.block_size = s.block_size;
  }
  // EngineConfig::validate also wants a model; set_model adds it, a placeholder stands in here.
  engine::EngineConfig probe = c;
  probe.model_path = "model.gguf";
  if (Status st = probe.validate(); !st.is_ok()) return invalid_argument("{}", st.message());
  return c;
}

Status set_model(const EngineFlags& f, engine::EngineConfig* c) {
  if (!f.shape.empty()) {
    c->shape_preset = f.shape;
    return Status::ok();
  }
  GSA_ASSIGN_OR_RETURN(c->model_path, resolve_model(f.model));
  return Status::ok();
}

void warn_context(const EngineFlags& f, const engine::Engine& e) {
  const int trained = e.hparams().ctx_len;
  if (f.max_context > trained)
    std::fprintf(stderr, "gsa: warning: --ctx %d is above the model's trained context of %d tokens; "
                 "output past it may degrade\n", f.max_context, trained);
}

}  // namespace gsa::cli
