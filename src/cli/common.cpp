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
#include <utility>

#include "core/paths.h"
#include "core/timer.h"
#include "model/hparams.h"
#include "sparse/knobs.h"
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

// The first GSA flag given (--sparse-config, then the knobs in table order), or nullptr.
const char* first_gsa_flag(const EngineFlags& f) {
  if (f.sparse_config) return "--sparse-config";
  for (const auto& k : sparse::sparse_knobs())  // the table's flags are string literals
    if (!k.flag.empty() && !k.engine_flag && f.gsa_knobs.contains(k.key)) return k.flag.data();
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

std::string with_flag_names(std::string m) {
  constexpr std::string_view kPrefix = "sparse config: ";
  if (m.starts_with(kPrefix)) m.erase(0, kPrefix.size());
  auto word = [](char ch) { return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '-'; };
  for (const auto& knob : sparse::sparse_knobs()) {
    if (knob.flag.empty()) continue;
    const std::string_view k = knob.key;
    for (size_t at = m.find(k); at != std::string::npos; at = m.find(k, at + 1)) {
      if ((at == 0 || !word(m[at - 1])) && (at + k.size() == m.size() || !word(m[at + k.size()]))) {
        m.replace(at, k.size(), knob.long_flag());
        break;
      }
    }
  }
  return m;
}

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

CLI::Option* add_knob_flag(CLI::App* app, const sparse::KnobSpec& k, const std::string& default_text,
                           const std::string& help, bool check_range,
                           std::function<void(const std::string&)> on_value) {
  CLI::Option* o = app->add_option_function<std::string>(std::string(k.flag), std::move(on_value), help);
  o->default_str(default_text);
  switch (k.type) {
    case sparse::KnobType::Int:
      o->type_name("INT");
      if (!check_range) o->transform(int_in(INT32_MIN, INT32_MAX));  // the field's type; the range later
      else if (k.pow2 && k.lo > 0) o->transform(power_of_two(int64_t(k.hi)));
      else o->transform(int_in(int64_t(k.lo), int64_t(k.hi)));
      break;
    case sparse::KnobType::Real:
      o->type_name("FLOAT");
      o->check(check_range ? real_in(k.lo, k.hi, k.lo_open, k.hi_open) : real_in(-HUGE_VAL, HUGE_VAL));
      break;
    case sparse::KnobType::Uint64:
      o->type_name("UINT");
      o->transform(uint64_value());
      break;
    case sparse::KnobType::Enum: {
      o->type_name("TEXT");
      std::vector<std::string> names;
      for (const sparse::KnobEnumName& n : k.names) names.emplace_back(n.name);
      o->check(one_of(std::move(names)));
      break;
    }
    case sparse::KnobType::Bool:
      o->type_name("BOOL");
      o->check(one_of({"true", "false"}));
      break;
  }
  return o;
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
  const auto* block_size = sparse::find_sparse_knob("block_size");
  app->add_option("--block-size", f->block_size,
                  fmt::format("{}, a power of two <= 1024", block_size->help))
      ->transform(power_of_two(1024))
      ->default_str(sparse::default_text(*block_size));
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
  app->add_option("--kv-offload", f->kv_offload,
                  "none, or file: full KV blocks also go to a file store (--kv-offload-dir) that "
                  "later runs reuse instead of recomputing a prompt's prefix")
      ->check(one_of({"none", "file"}));
  app->add_option("--kv-offload-dir", f->kv_offload_dir, "directory of the KV file store (--kv-offload file)");
  app->add_option("--sparse", f->sparse, "decode attention: none (full) or gsa")->check(one_of({"none", "gsa"}));
  app->add_option("--sparse-config", f->sparse_config, "GSA knobs as a JSON file (flags override it)");
  // The GSA knobs of the table. A value is checked against its range and the other knobs once
  // parsed (engine_config), so a message can name every flag involved; enum names and number
  // syntax are checked here.
  for (const auto& k : sparse::sparse_knobs()) {
    if (k.flag.empty() || k.engine_flag) continue;
    const std::string help = k.type == sparse::KnobType::Enum
                                 ? std::string(k.help)  // the names show beside the flag
                                 : fmt::format("{} (valid: {})", k.help, sparse::range_text(k));
    add_knob_flag(app, k, sparse::default_text(k), help, false,
                  [f, key = std::string(k.key)](const std::string& v) { f->gsa_knobs[key] = v; });
  }
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
  c.kv_offload = f.kv_offload;
  c.kv_offload_dir = f.kv_offload_dir;
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
    // The flags given, through the knob table (CLI11 has checked their syntax).
    for (const auto& [key, text] : f.gsa_knobs) {
      const auto* k = sparse::find_sparse_knob(key);
      if (!k) return internal_error("no GSA knob '{}'", key);
      auto v = sparse::parse_value(*k, text);
      if (!v) return invalid_argument("{}: {}", k->long_flag(), v.status().message());
      k->set(s, *v);
    }
    const std::string from_file =
        f.sparse_config ? fmt::format(" (flags over --sparse-config {})", *f.sparse_config) : "";
    // No budget (an int of blocks) holds a larger sum; said here, the message names both flags.
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

std::string describe_attention(const engine::EngineConfig& c) {
  if (!c.sparse) return "dense: full attention (--sparse none)";
  const sparse::SparseConfig& s = c.sparse_cfg;
  if (!s.enabled) return "dense: the sparse config says \"enabled\": false";
  std::string what = s.selection == sparse::Selection::Oracle
                         ? std::string("oracle (true attention mass)")
                         : fmt::format("gsa {}", sparse::rep_kind_name(s.representation));
  std::string budget = s.budget_tokens > 0
                           ? fmt::format("budget {} tokens", s.budget_tokens)
                           : fmt::format("budget {}-{} tokens ({} of the context)", s.budget_min_tokens,
                                         s.budget_max_tokens, s.budget_ratio);
  std::string extra;
  if (s.rank_by != sparse::RankBy::Score) extra += fmt::format(", rank by {}", sparse::rank_by_name(s.rank_by));
  if (s.selector == sparse::SelectorKind::Cpu)
    extra += fmt::format(", cpu selector ({} workers, lag {})", s.cpu_workers, s.lag);
  if (s.select_every > 1) extra += fmt::format(", select every {} steps", s.select_every);
  if (s.dense_layers > 0) extra += fmt::format(", first {} layers dense", s.dense_layers);
  return fmt::format("sparse: {}, {}, {} sink + {} local blocks{}, min_context {}: prompts below it "
                     "decode densely", what, budget, s.sink_blocks, s.local_blocks, extra, s.min_context);
}

Result<std::unique_ptr<engine::Engine>> create_engine(const EngineFlags& f, const engine::EngineConfig& c) {
  if (f.verbose) {
    if (!c.shape_preset.empty()) {
      std::fprintf(stderr, "gsa: model: synthetic weights, shape %s (seed %llu)\n", c.shape_preset.c_str(),
                   (unsigned long long)c.seed);
    } else {
      std::error_code ec;
      const auto bytes = std::filesystem::file_size(c.model_path, ec);
      std::fprintf(stderr, "gsa: loading model %s (%.1f MiB) on %s\n", c.model_path.c_str(),
                   ec ? 0.0 : double(bytes) / (1 << 20), c.device.c_str());
    }
  }
  Timer timer;
  auto e = engine::Engine::create(c);
  if (!e) return e.status();
  if (f.verbose) {
    const model::HParams& h = (*e)->hparams();
    std::fprintf(stderr, "gsa: model loaded in %.2f s: %s, %d layers, %.1f M parameters, %.1f MiB of weights\n",
                 timer.seconds(), model::arch_name(h.arch), h.n_layers, double(h.n_params()) / 1e6,
                 double((*e)->weight_bytes()) / (1 << 20));
    std::fprintf(stderr, "gsa: %s\n", describe_attention(c).c_str());
  }
  return e;
}

}  // namespace gsa::cli
