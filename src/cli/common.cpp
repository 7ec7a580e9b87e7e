// Engine flag parsing and model resolution for the gsa command.
#include "cli/common.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/paths.h"
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

}  // namespace

int fail(const Status& s) {
  std::fprintf(stderr, "gsa: %s\n", s.message().c_str());
  return 1;
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
  app->add_option("-m,--model", f->model, "GGUF file or model name (default: smollm2-135m)");
  if (with_shape)
    app->add_option("--shape", f->shape,
                    "synthetic weights at a known shape instead of a file: smollm2-135m, "
                    "qwen2.5-0.5b, qwen2.5-7b");
  app->add_option("--device", f->device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  app->add_option("-t,--threads", f->threads, "CPU threads (0: all cores)")->check(CLI::Range(0, 1024));
  app->add_option("--block-size", f->block_size, "tokens per KV block (default 128)");
  app->add_option("--kv-tokens", f->kv_tokens, "KV cache capacity in tokens (default: 2 x context)");
  if (with_ctx)
    app->add_option("--ctx", f->max_context, "context limit per sequence (default: the model's)");
  app->add_option("--prefill-chunk", f->prefill_chunk, "tokens per prefill forward");
  app->add_option("--max-batch", f->max_batch, "sequences per decode step");
  app->add_option("--weights", f->weights,
                  "weight format: native (GGUF types where the backend multiplies them), f32, bf16")
      ->check(CLI::IsMember({"native", "f32", "bf16"}));
  app->add_flag("--no-prefix-cache", f->no_prefix_cache, "do not reuse KV blocks across prompts");
  app->add_option("--sparse", f->sparse, "decode attention: none (full) or gsa")
      ->check(CLI::IsMember({"none", "gsa"}));
  app->add_option("--sparse-config", f->sparse_config, "GSA knobs as a JSON file (flags override it)");
  app->add_option("--representation", f->representation, "block representation: mean, minmax, hash, quant (2-bit keys inside the minmax box)");
  app->add_option("--query", f->query, "GQA query: group_mean or group_max");
  app->add_option("--scope", f->scope, "per_layer or per_kv_head");
  app->add_option("--selector", f->selector, "device or cpu (asynchronous CPU selector)");
  app->add_option("--selection", f->selection,
                  "gsa (representation scores) or oracle (true attention mass; diagnostic)");
  app->add_option("--rank-by", f->rank_by,
                  "rank blocks by their representation score, or by the attention mass it "
                  "estimates: score or mass");
  app->add_option("--dense-layers", f->dense_layers, "the first N layers decode densely");
  app->add_option("--sub-block", f->sub_block,
                  "mean/minmax per run of N tokens inside each block; a block scores its best run");
  app->add_option("--sink-blocks", f->sink_blocks, "first blocks always kept");
  app->add_option("--local-blocks", f->local_blocks, "last blocks always kept");
  app->add_option("--budget-ratio", f->budget_ratio, "blocks attended as a ratio of the context");
  app->add_option("--budget-min-tokens", f->budget_min_tokens, "lower clamp of the ratio budget");
  app->add_option("--budget-max-tokens", f->budget_max_tokens, "upper clamp of the ratio budget");
  app->add_option("--budget-tokens", f->budget_tokens, "fixed budget in tokens (overrides the ratio)");
  app->add_option("--min-context", f->min_context, "shorter sequences decode densely");
  app->add_option("--select-every", f->select_every, "recompute the selection every N steps");
  app->add_option("--lag", f->lag, "0: inline selection; >= 1: asynchronous, N steps behind");
  app->add_option("--cpu-workers", f->cpu_workers, "threads of the asynchronous CPU selector");
  app->add_flag("-v,--verbose", f->verbose, "log progress to stderr");
}

Result<engine::EngineConfig> engine_config(const EngineFlags& f) {
  engine::EngineConfig c;
  if (f.shape.empty()) {
    GSA_ASSIGN_OR_RETURN(c.model_path, resolve_model(f.model));
  } else {
    if (!f.model.empty()) return invalid_argument("--model and --shape exclude each other");
    c.shape_preset = f.shape;
  }
  c.device = f.device;
  c.threads = f.threads;
  c.kv_tokens = f.kv_tokens;
  c.max_context = f.max_context;
  c.prefill_chunk = f.prefill_chunk;
  c.max_batch = f.max_batch;
  c.weights = f.weights;
  c.prefix_cache = !f.no_prefix_cache;
  c.sparse = f.sparse == "gsa";
  sparse::SparseConfig& s = c.sparse_cfg;
  const bool any_knob = !f.sparse_config.empty() || !f.representation.empty() || !f.query.empty() ||
                        !f.scope.empty() || !f.selector.empty() || !f.selection.empty() || !f.rank_by.empty() || f.dense_layers != EngineFlags::kUnset || f.sub_block != EngineFlags::kUnset || f.sink_blocks != EngineFlags::kUnset ||
                        f.local_blocks != EngineFlags::kUnset || f.budget_tokens != EngineFlags::kUnset || f.min_context != EngineFlags::kUnset ||
                        f.select_every != EngineFlags::kUnset || f.lag != EngineFlags::kUnset || f.budget_ratio != -HUGE_VAL ||
                        f.budget_min_tokens != EngineFlags::kUnset || f.budget_max_tokens != EngineFlags::kUnset || f.cpu_workers != EngineFlags::kUnset;
  if (any_knob && !c.sparse) return invalid_argument("GSA options need --sparse gsa");
  if (!f.sparse_config.empty()) {
    std::ifstream in(f.sparse_config);
    if (!in) return not_found("cannot read sparse config '{}'", f.sparse_config);
    std::stringstream ss;
    ss << in.rdbuf();
    auto parsed = sparse::parse_sparse_config_json(ss.str());
    if (!parsed) return parsed.status().with_context(f.sparse_config);
    s = *parsed;
  }
  // Flags override the file; enum names go through the JSON parser so both accept the same.
  std::string json = "{";
  auto put = [&](const char* key, const std::string& v) {
    if (json.size() > 1) json += ",";
    json += "\"" + std::string(key) + "\":" + v;
  };
  auto num = [&](const char* key, double v, bool set) {
    if (set) put(key, fmt::format("{}", v));
  };
  auto str = [&](const char* key, const std::string& v) {
    if (!v.empty()) put(key, "\"" + v + "\"");
  };
  str("representation", f.representation);
  str("query", f.query);
  str("scope", f.scope);
  str("selector", f.selector);
  str("selection", f.selection);
  str("rank_by", f.rank_by);
  num("dense_layers", f.dense_layers, f.dense_layers != EngineFlags::kUnset);
  num("sub_block", f.sub_block, f.sub_block != EngineFlags::kUnset);
  num("sink_blocks", f.sink_blocks, f.sink_blocks != EngineFlags::kUnset);
  num("local_blocks", f.local_blocks, f.local_blocks != EngineFlags::kUnset);
  num("budget_tokens", f.budget_tokens, f.budget_tokens != EngineFlags::kUnset);
  num("budget_min_tokens", f.budget_min_tokens, f.budget_min_tokens != EngineFlags::kUnset);
  num("budget_max_tokens", f.budget_max_tokens, f.budget_max_tokens != EngineFlags::kUnset);
  num("budget_ratio", f.budget_ratio, f.budget_ratio != -HUGE_VAL);
  num("min_context", f.min_context, f.min_context != EngineFlags::kUnset);
  num("select_every", f.select_every, f.select_every != EngineFlags::kUnset);
  num("lag", f.lag, f.lag != EngineFlags::kUnset);
  num("cpu_workers", f.cpu_workers, f.cpu_workers != EngineFlags::kUnset);
  if (f.block_size != 0) num("block_size", f.block_size, true);
  json += "}";
  if (c.sparse && json.size() > 2) {
    // Merge: the file's values, then the flags'.
    std::string merged = sparse::to_json(s);
    merged.pop_back();
    merged += "," + json.substr(1);
    auto parsed = sparse::parse_sparse_config_json(merged);
    if (!parsed) return parsed.status();
    s = *parsed;
  }
  c.block_size = c.sparse ? s.block_size : (f.block_size != 0 ? f.block_size : 128);
  GSA_RETURN_IF_ERROR(c.validate());
  return c;
}

}  // namespace gsa::cli
