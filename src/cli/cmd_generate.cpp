// `gsa generate`: one or several prompts through the engine, streaming tokens as they come,
// then prefill/decode speed and peak memory on stderr. With -v also the model load, the
// attention configuration, the seed of a sampled run and the prefill progress of long prompts.
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <random>
#include <set>
#include <sstream>

#include "cli/common.h"
#include "cli/progress.h"
#include "engine/sampling_knobs.h"
#include "core/log.h"
#include "core/timer.h"

namespace gsa::cli {

namespace {

struct GenerateFlags {
  EngineFlags engine;
  std::vector<std::string> prompts;
  std::string prompt_file;
  std::string batch_file;
  engine::SamplingParams sampling;       // the values of the sampling knobs (sampling_knobs())
  std::set<std::string> sampling_given;  // keys of the sampling knobs given on the command line
  int n_samples = 1;
  bool chat = false;
  std::string system;
  std::string chat_template;
  std::vector<std::string> stop;
  bool ignore_eos = false;
  bool no_stream = false;
};

// A seed for a run without --seed: from the OS's entropy source, or the clock if it has none.
uint64_t random_seed() {
  try {
    std::random_device rd;
    return (uint64_t(rd()) << 32) ^ uint64_t(rd());
  } catch (const std::exception&) {
    return uint64_t(std::chrono::steady_clock::now().time_since_epoch().count()) * 0x9E3779B97F4A7C15ull;
  }
}

// The text of a file, or of stdin for "-"; `flag` names the option in messages.
Result<std::string> read_file(const std::string& path, const char* flag) {
  std::stringstream ss;
  if (path == "-") {
    ss << std::cin.rdbuf();
    if (std::cin.bad() || std::ferror(stdin)) return io_error("{}: cannot read stdin: {}", flag, std::strerror(errno));
    return ss.str();
  }
  if (std::filesystem::is_directory(path)) return not_found("{}: '{}' is a directory, not a file", flag, path);
  std::ifstream in(path, std::ios::binary);
  if (!in) return not_found("{}: cannot read '{}'", flag, path);
  ss << in.rdbuf();
  if (in.bad()) return io_error("{}: cannot read '{}'", flag, path);
  return ss.str();
}

// Combinations of flags that parse but make no sense; InvalidArgument names the flags.
Status check(const GenerateFlags& g) {
  if (!g.system.empty() && !g.chat) return invalid_argument("--system needs --chat");
  if (!g.chat_template.empty() && !g.chat) return invalid_argument("--chat-template needs --chat");
  if (g.n_samples > g.engine.max_batch)
    return invalid_argument("--samples {} is above --max-batch {}", g.n_samples, g.engine.max_batch);
  if (g.prompt_file == "-" && g.batch_file == "-")
    return invalid_argument("-f - and --batch - cannot both read stdin");
  if (g.prompts.empty() && g.prompt_file.empty() && g.batch_file.empty())
    return invalid_argument("give a prompt with -p TEXT, -f FILE (- for stdin) or --batch FILE");
  return Status::ok();
}

int run(const GenerateFlags& g) {
  if (g.engine.verbose) set_log_level(LogLevel::Info);
  if (Status st = check(g); !st.is_ok()) return usage(st);
  auto cfg = engine_config(g.engine);
  if (!cfg) return fail_flags(cfg.status());
  engine::SamplingParams sp = g.sampling;
  sp.stop = g.stop;
  sp.ignore_eos = g.ignore_eos;
  if (Status st = sp.validate(); !st.is_ok()) return usage(st);  // the flags' checks cover it
  if (sp.temperature > 0.0f) {
    // Sampling without --seed: a fresh seed each run, shown so that a run can be repeated.
    const bool given = g.sampling_given.contains("seed");
    if (!given) sp.seed = random_seed();
    if (g.engine.verbose)
      std::fprintf(stderr, "gsa: seed %llu%s\n", (unsigned long long)sp.seed,
                   given ? "" : " (random; --seed repeats this run)");
  }
  std::vector<std::string> texts = g.prompts;
  if (!g.prompt_file.empty()) {
    auto t = read_file(g.prompt_file, "-f");
    if (!t) return fail(t.status());
    texts.push_back(*t);
  }
  if (!g.batch_file.empty()) {
    auto t = read_file(g.batch_file, "--batch");
    if (!t) return fail(t.status());
    std::stringstream ss(*t);
    std::string line;
    size_t n = 0;
    while (std::getline(ss, line)) {
      if (line.empty()) continue;
      texts.push_back(line);
      ++n;
    }
    if (n == 0)
      return fail(invalid_argument("--batch: '{}' has no prompts (one per line; empty lines are skipped)",
                                   g.batch_file == "-" ? "stdin" : g.batch_file));
  }
  if (Status st = set_model(g.engine, &*cfg); !st.is_ok()) return fail(st);
  Timer load_timer;
  auto eng = create_engine(g.engine, *cfg);
  if (!eng) return fail(eng.status());
  engine::Engine& e = **eng;
  const tokenizer::Tokenizer& tok = *e.tokenizer();
  const double load_s = load_timer.seconds();
  warn_context(g.engine, e);

  int64_t prompt_tokens = 0;
  for (const std::string& text : texts) {
    std::string rendered = text;
    if (g.chat) {
      std::vector<tokenizer::ChatMessage> msgs;
      if (!g.system.empty()) msgs.push_back({"system", g.system});
      msgs.push_back({"user", text});
      auto r = tok.apply_chat_template(msgs, true, g.chat_template);
      if (!r) return fail(r.status());
      rendered = *r;
    }
    auto ids = tok.encode(rendered, true, g.chat);
    if (!ids) return fail(ids.status());
    prompt_tokens += int64_t(ids->size());
    engine::RequestInput in;
    in.prompt = std::move(*ids);
    in.sampling = sp;
    in.n = g.n_samples;
    auto id = e.add_request(std::move(in));
    if (!id) return fail(id.status());
  }

  const bool stream = !g.no_stream && texts.size() == 1 && g.n_samples == 1;
  std::vector<std::vector<std::string>> outputs(texts.size(), std::vector<std::string>(size_t(g.n_samples)));
  std::vector<std::vector<std::string>> reasons(texts.size(), std::vector<std::string>(size_t(g.n_samples)));
  std::vector<engine::TokenEvent> events;
  int errors = 0;
  PrefillProgress progress(prompt_tokens, e.stats(), g.engine.verbose);
  while (e.has_work()) {
    events.clear();
    Status st = e.step(&events);
    if (!st.is_ok()) return fail(st);
    progress.update(e.stats());
    for (const auto& ev : events) {
      outputs[size_t(ev.request_id)][size_t(ev.sample)] += ev.text;
      if (stream && !ev.text.empty()) {
        std::fwrite(ev.text.data(), 1, ev.text.size(), stdout);
        if (!flush_stdout()) return 1;  // nobody reads the rest
      }
      if (ev.finish != engine::FinishReason::None) {
        reasons[size_t(ev.request_id)][size_t(ev.sample)] = engine::finish_reason_name(ev.finish);
        if (ev.finish == engine::FinishReason::Error) {
          ++errors;
          std::fprintf(stderr, "gsa: request %lld failed: %s\n", (long long)ev.request_id, ev.error.c_str());
        }
      }
    }
  }
  if (stream) {
    std::printf("\n");
  } else {
    for (size_t r = 0; r < texts.size(); ++r)
      for (size_t k = 0; k < size_t(g.n_samples); ++k) {
        std::printf("=== prompt %zu%s (%s) ===\n", r,
                    g.n_samples > 1 ? fmt::format(" sample {}", k).c_str() : "", reasons[r][k].c_str());
        std::printf("%s\n", outputs[r][k].c_str());
      }
  }
  if (!flush_stdout()) return 1;  // before the stats, so the write error is the one line
  const engine::EngineStats& s = e.stats();
  std::fprintf(stderr,
               "\nload %.2f s | prompt %lld tokens, prefill %.1f tok/s | decode %lld tokens in %lld "
               "steps, %.1f tok/s | peak RSS %.0f MiB\n",
               load_s, (long long)prompt_tokens,
               s.prefill_seconds > 0 ? double(s.prefill_tokens) / s.prefill_seconds : 0.0,
               (long long)s.decode_tokens, (long long)s.decode_steps,
               s.decode_seconds > 0 ? double(s.decode_tokens) / s.decode_seconds : 0.0,
               double(peak_rss_bytes()) / (1 << 20));
  if (cfg->kv_offload == "file")
    std::fprintf(stderr,
                 "kv: %lld prompt tokens reused (%lld blocks read from the store), %lld computed in "
                 "%.2f s; %lld blocks written to the store, %lld store failures\n",
                 (long long)s.prefix_hit_tokens, (long long)s.store_blocks_loaded,
                 (long long)s.prefill_tokens, s.prefill_seconds, (long long)s.store_blocks_stored,
                 (long long)s.store_failures);
  if (cfg->sparse)
    std::fprintf(stderr, "gsa: selection %.3f s, %lld of %lld blocks attended (%.1f%%)\n",
                 s.select_seconds, (long long)s.selector.blocks_attended,
                 (long long)s.selector.blocks_total,
                 s.selector.blocks_total ? 100.0 * double(s.selector.blocks_attended) / double(s.selector.blocks_total) : 0.0);
  return errors ? 1 : 0;
}

}  // namespace

Command add_generate(CLI::App& root) {
  auto g = std::make_shared<GenerateFlags>();
  CLI::App* app = root.add_subcommand("generate", "generate text from one or several prompts");
  add_engine_flags(app, &g->engine, false);
  // One value per -p or --stop: unquoted words after them are an error, not more prompts.
  app->add_option("-p,--prompt", g->prompts, "prompt text (repeat -p for several prompts)")
      ->allow_extra_args(false)
      ->default_str("");
  app->add_option("-f,--file", g->prompt_file, "read the prompt from a file (-: stdin)");
  app->add_option("--batch", g->batch_file, "a file with one prompt per line, run together (-: stdin)");
  // The sampling knobs: CLI11 checks each value against the table's range, naming the flag.
  for (const engine::SamplingKnob& k : engine::sampling_knobs())
    add_knob_flag(app, k, sparse::default_text(k), std::string(k.help), true, [g, &k](const std::string& v) {
      auto value = sparse::parse_value(k, v);
      if (!value) throw CLI::ValidationError(std::string(k.long_flag()), value.status().message());
      k.set(g->sampling, *value);
      g->sampling_given.insert(std::string(k.key));
    });
  app->add_option("--samples", g->n_samples, "parallel samples per prompt (share the prompt's KV)")
      ->transform(int_in(1, 4096));
  app->add_flag("--chat", g->chat, "wrap the prompt in the model's chat template");
  app->add_option("--system", g->system, "system message with --chat");
  app->add_option("--chat-template", g->chat_template,
                  "chat template name with --chat: chatml, smollm, qwen2.5 (default: the model's)");
  app->add_option("--stop", g->stop, "stop string (repeat --stop for several)")
      ->allow_extra_args(false)
      ->check(non_empty())
      ->default_str("");
  app->add_flag("--ignore-eos", g->ignore_eos, "keep generating past end-of-sequence");
  app->add_flag("--no-stream", g->no_stream, "print outputs at the end");
  return {app, [g] { return run(*g); }};
}

}  // namespace gsa::cli
