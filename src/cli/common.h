// Shared pieces of the `gsa` subcommands: engine flags (model, device, threads, KV, GSA knobs),
// checks of flag values, model name resolution, and the one-line error convention (usage
// errors: exit 2, other errors: 1).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

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
  std::optional<int> block_size;  // unset: 128, or the sparse config's
  int64_t kv_tokens = 0;
  int max_context = 0;
  int prefill_chunk = 512;
  int max_batch = 16;
  std::string weights = "native";
  bool no_prefix_cache = false;
  // GSA. An unset knob keeps the --sparse-config file's value or the SparseConfig default; a
  // given one (any value) goes into the config, where a bad value is a usage error naming it.
  std::string sparse = "none";  // none | gsa
  std::optional<std::string> sparse_config;  // JSON file
  std::optional<std::string> representation, query, scope, selector, selection, rank_by;
  std::optional<int> sink_blocks, local_blocks, budget_tokens, min_context, select_every, lag;
  std::optional<int> budget_min_tokens, budget_max_tokens, cpu_workers, dense_layers, sub_block;
  std::optional<double> budget_ratio;
  bool verbose = false;
};

void add_engine_flags(CLI::App* app, EngineFlags* f, bool with_shape, bool with_ctx = true);

/// The EngineConfig the flags describe, without its model (set_model adds it): every value and
/// combination the engine would reject later is checked here. InvalidArgument is a usage error
/// naming the flag as typed (fail_flags: exit 2); NotFound: --sparse-config cannot be read.
Result<engine::EngineConfig> engine_config(const EngineFlags& f);
/// Sets the model of a config from engine_config: the --shape preset, or -m resolved by
/// resolve_model (NotFound names the fetch command).
Status set_model(const EngineFlags& f, engine::EngineConfig* c);
/// One line on stderr when --ctx is above the model's trained context.
void warn_context(const EngineFlags& f, const engine::Engine& e);

/// A path, or a known model name ("smollm2-135m", ...) resolved inside model_dir(); empty
/// means the default model. NotFound names the fetch command to run.
Result<std::string> resolve_model(const std::string& name_or_path);

/// Prints "gsa: <message>" to stderr and returns the exit code for the status (1).
int fail(const Status& s);
/// A usage error (a bad flag value or combination): prints "gsa: <message> (see gsa --help)"
/// to stderr and returns 2.
int usage(const Status& s);
/// usage() for InvalidArgument (engine_config's flag errors), fail() for the rest.
int fail_flags(const Status& s);

/// Flushes stdout; on a write error (a full disk, a closed descriptor) prints "gsa: cannot
/// write to stdout: <reason>" and returns false.
bool flush_stdout();

// CLI11 checks for numeric options, added with ->transform() so the value is rewritten in the
// canonical form CLI11 then converts (CLI11 alone reads "010" as octal and saturates "-1" and
// huge values of unsigned options). Their messages follow CLI11's "<flag>: " prefix.

/// A decimal integer in [lo, hi].
CLI::Validator int_in(int64_t lo, int64_t hi);
/// A power of two in [1, hi].
CLI::Validator power_of_two(int64_t hi);
/// A decimal integer in [0, 2^64 - 1].
CLI::Validator uint64_value();
/// A number in [lo, hi]; lo_open / hi_open exclude the bound. NaN is outside every range.
CLI::Validator real_in(double lo, double hi, bool lo_open = false, bool hi_open = false);
/// One of the names (the message lists them).
CLI::Validator one_of(std::vector<std::string> names);
/// A non-empty string.
CLI::Validator non_empty();

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
