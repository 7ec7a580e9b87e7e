// Shared pieces of the `gsa` subcommands: engine flags (model, device, threads, KV, GSA knobs),
// model name resolution, and the one-line error convention (usage: exit 2, other errors: 1).
#pragma once

#include <climits>
#include <cmath>
#include <functional>
#include <string>

#include <CLI/CLI.hpp>

#include "core/status.h"
#include "engine/engine.h"

namespace gsa::cli {

/// Flags that build an EngineConfig; bound to a CLI11 subcommand by add_engine_flags.
struct EngineFlags {
  std::string model;
  std::string shape;
  std::string device = "cpu";
  int threads = 0;
  int block_size = 0;           // 0: 128, or the sparse config's
  int64_t kv_tokens = 0;
  int max_context = 0;
  int prefill_chunk = 512;
  int max_batch = 16;
  std::string weights = "native";
  bool no_prefix_cache = false;
  // GSA
  std::string sparse = "none";  // none | gsa
  std::string sparse_config;    // JSON file
  std::string representation, query, scope, selector, selection, rank_by;
  // kUnset marks a knob not given on the command line (any given value, even a negative one,
  // goes to the config parser, which rejects it with a message naming the knob).
  static constexpr int kUnset = INT_MIN;
  int sink_blocks = kUnset, local_blocks = kUnset, budget_tokens = kUnset, min_context = kUnset;
  int select_every = kUnset, lag = kUnset, budget_min_tokens = kUnset, budget_max_tokens = kUnset;
  int cpu_workers = kUnset, dense_layers = kUnset, sub_block = kUnset;
  double budget_ratio = -HUGE_VAL;
  bool verbose = false;
};

void add_engine_flags(CLI::App* app, EngineFlags* f, bool with_shape, bool with_ctx = true);
/// Builds and validates the config; InvalidArgument naming the flag on bad values.
Result<engine::EngineConfig> engine_config(const EngineFlags& f);

/// A path, or a known model name ("smollm2-135m", ...) resolved inside model_dir(); empty
/// means the default model. NotFound names the fetch command to run.
Result<std::string> resolve_model(const std::string& name_or_path);

/// Prints "gsa: <message>" to stderr and returns the exit code for the status (1).
int fail(const Status& s);

/// A subcommand and what runs it once the command line is parsed.
struct Command {
  CLI::App* app = nullptr;
  std::function<int()> run;
};

int run_info(CLI::App* app, const std::string& model);
Command add_generate(CLI::App& root);  // cmd_generate.cpp
Command add_bench(CLI::App& root);     // cmd_bench.cpp
Command add_eval(CLI::App& root);      // cmd_eval.cpp

}  // namespace gsa::cli
