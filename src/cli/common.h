// Shared pieces of the `gsa` subcommands: engine flags (model, device, threads, KV, GSA knobs),
// checks of flag values, model name resolution, and the one-line error convention (usage
// errors: exit 2, other errors: 1).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "core/status.h"
#include "engine/engine.h"
#include "sparse/knobs.h"

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
  std::string kv_offload = "none";
  std::string kv_offload_dir;
  // GSA. An unset knob keeps the --sparse-config file's value or the SparseConfig default; a
  // given one (any value) goes into the config, where a bad value is a usage error naming it.
  std::string sparse = "none";  // none | gsa
  std::optional<std::string> sparse_config;  // JSON file
  /// The GSA knob flags given (sparse::sparse_knobs()), by JSON key: the value as typed, in
  /// CLI11's canonical form (decimal integers), checked against the knob's range later.
  std::map<std::string, std::string, std::less<>> gsa_knobs;
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
/// Engine::create; with -v, lines on stderr: the model (path and size, or the synthetic shape)
/// before it loads, the load time after, and the attention configuration (describe_attention).
Result<std::unique_ptr<engine::Engine>> create_engine(const EngineFlags& f, const engine::EngineConfig& c);
/// Dense or sparse and why, in one line without the "gsa: " prefix: "dense: full attention
/// (--sparse none)", "sparse: gsa minmax, budget 4096-6144 tokens (0.3 of the context),
/// min_context 8400: prompts below it decode densely".
std::string describe_attention(const engine::EngineConfig& c);

/// A sparse::validate (or sparse config) message with the first mention of each knob's key
/// replaced by its flag, "sparse config: " dropped: what a user of the flags reads.
std::string with_flag_names(std::string message);

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

/// Binds a knob's flag (k.flag) to app: the CLI11 type name (INT, FLOAT, TEXT, UINT), a check of
/// the value's syntax (with check_range also of the knob's range, as CLI11 reports it: "--temp:
/// must be in [0, 100], got -1"), `default_text` and `help`. on_value gets each value given, in
/// canonical form.
CLI::Option* add_knob_flag(CLI::App* app, const sparse::KnobSpec& k, const std::string& default_text,
                           const std::string& help, bool check_range,
                           std::function<void(const std::string&)> on_value);

/// A subcommand and what runs it once the command line is parsed.
struct Command {
  CLI::App* app = nullptr;
  std::function<int()> run;
};

int run_info(CLI::App* app, const std::string& model);
Command add_help(CLI::App& root);      // cmd_help.cpp
Command add_generate(CLI::App& root);  // cmd_generate.cpp
Command add_bench(CLI::App& root);     // cmd_bench.cpp
Command add_eval(CLI::App& root);      // cmd_eval.cpp

}  // namespace gsa::cli
