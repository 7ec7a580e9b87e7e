// `gsa eval niah`: needle-in-a-haystack retrieval on real text (the Paul Graham essays fetched
// by scripts/fetch-data). For each context length and needle depth it builds a chat prompt of
// about that many tokens with the needle sentence inserted at that depth (at a sentence
// boundary), decodes greedily, and checks that the answer contains the needle's key. With
// --mass it also measures, for every GSA decision, the fraction of full attention's softmax
// mass that falls inside the selected blocks, per layer. One JSON line per case.
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cli/cmd_eval_ruler.h"
#include "cli/common.h"
#include "cli/eval_common.h"
#include "core/log.h"
#include "core/paths.h"
#include "core/timer.h"
#include "sparse/knobs.h"

namespace gsa::cli {

namespace {

namespace fs = std::filesystem;

struct EvalFlags {
  EngineFlags engine;
  std::string haystack_dir;
  std::vector<int> contexts = {1024, 2048, 4096, 7680};
  std::vector<int> depths = {0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100};
  std::string needle = "The secret passphrase for the vault is 'purple-otter-42'.";
  std::string question = "What is the secret passphrase for the vault? Answer briefly.";
  std::string answer = "purple-otter-42";
  int n_predict = 24;
  bool mass = false;
  std::vector<int> budgets;  // with --sparse gsa: per-request budgets in tokens, 0 = full attention
  std::string label;
  std::string out;
};

Result<std::string> read_haystack(const std::string& dir) {
  if (!fs::is_directory(dir))
    return not_found("haystack directory '{}' does not exist; run scripts/fetch-data", dir);
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".txt") files.push_back(e.path());
  if (files.empty()) return not_found("no .txt files in '{}'; run scripts/fetch-data", dir);
  std::sort(files.begin(), files.end());
  std::string text;
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    text += ss.str();
    text += "\n\n";
  }
  return text;
}

std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

int run(EvalFlags f) {
  if (f.engine.verbose) set_log_level(LogLevel::Info);
  if (f.haystack_dir.empty()) f.haystack_dir = cache_dir() + "/data/pg_essays";
  if (!f.budgets.empty() && f.engine.sparse != "gsa") return usage(invalid_argument("--budgets needs --sparse gsa"));
  if (f.engine.device != "cpu" && f.mass) return usage(invalid_argument("--mass needs --device cpu"));
  auto cfg = engine_config(f.engine);
  if (!cfg) return fail_flags(cfg.status());
  auto hay = read_haystack(f.haystack_dir);
  if (!hay) return fail(hay.status());
  if (Status st = set_model(f.engine, &*cfg); !st.is_ok()) return fail(st);
  auto eng = create_engine(f.engine, *cfg);
  if (!eng) return fail(eng.status());
  engine::Engine& e = **eng;
  if (!e.tokenizer()) return fail(invalid_argument("eval needs a model with a tokenizer"));
  warn_context(f.engine, e);
  const tokenizer::Tokenizer& tok = *e.tokenizer();
  const int ctx_limit = e.hparams().ctx_len;
  MassObserver mass(e.hparams(), cfg->block_size);
  if (f.mass && cfg->sparse) e.set_attention_observer(&mass);

  auto hay_ids = tok.encode(*hay, false, false);
  if (!hay_ids) return fail(hay_ids.status());
  std::FILE* out = stdout;
  if (!f.out.empty()) {
    out = std::fopen(f.out.c_str(), "a");
    if (!out) return fail(io_error("cannot write '{}'", f.out));
  }
  int passed = 0, total = 0;
  for (int ctx : f.contexts) {
    if (int64_t(ctx) + f.n_predict > ctx_limit) {
      std::fprintf(stderr, "gsa: skipping context %d (model context %d)\n", ctx, ctx_limit);
      continue;
    }
    for (int depth : f.depths) {
      // Size the haystack so the whole chat prompt is about ctx tokens.
      auto wrap = [&](const std::string& body) -> Result<std::vector<int32_t>> {
        std::vector<tokenizer::ChatMessage> msgs = {{"user", body + "\n\n" + f.question}};
        GSA_ASSIGN_OR_RETURN(std::string text, tok.apply_chat_template(msgs, true));
        return tok.encode(text, true, true);
      };
      auto overhead = wrap(f.needle);
      if (!overhead) return fail(overhead.status());
      const size_t n_hay = size_t(std::max<int64_t>(0, int64_t(ctx) - int64_t(overhead->size()) - 2));
      if (n_hay > hay_ids->size()) return fail(invalid_argument("haystack too short for {} tokens", ctx));
      std::vector<int32_t> hay_part(hay_ids->begin(), hay_ids->begin() + long(n_hay));
      std::string hay_text = tok.decode(hay_part, true);
      // Insert at the sentence boundary nearest to the depth.
      size_t at = size_t(double(hay_text.size()) * depth / 100.0);
      if (depth >= 100) {
        at = hay_text.size();
      } else if (depth > 0) {
        const size_t dot = hay_text.find(". ", at);
        at = dot == std::string::npos ? hay_text.size() : dot + 2;
      }
      const std::string body = hay_text.substr(0, at) + (at ? " " : "") + f.needle + " " + hay_text.substr(at);
      auto ids = wrap(body);
      if (!ids) return fail(ids.status());
      const size_t n_prompt = ids->size();
      // One request per budget; after the first, the prompt's full blocks come from the
      // prefix cache, so each budget costs a decode, not a prefill.
      std::vector<int> budgets = f.budgets;
      if (budgets.empty()) budgets.push_back(-1);
      for (int budget : budgets) {
      engine::RequestInput in;
      in.prompt = *ids;
      in.sampling.max_tokens = f.n_predict;
      if (budget == 0) in.sparse_min_context = INT32_MAX;
      if (budget > 0) in.sparse_budget_tokens = budget;
      e.reset_stats();
      mass.reset();
      Timer t;
      auto run = run_to_completion(e, std::move(in));
      if (!run) return fail(run.status());
      const std::string& answer = *run;
      const bool pass = lower(answer).find(lower(f.answer)) != std::string::npos;
      passed += pass;
      ++total;
      const auto& s = e.stats();
      nlohmann::json j = {{"label", f.label},
                          {"context", ctx},
                          {"prompt_tokens", n_prompt},
                          {"depth", depth},
                          {"pass", pass},
                          {"answer", answer},
                          {"sparse", cfg->sparse},
                          {"block_size", cfg->block_size},
                          {"seconds", t.seconds()},
                          {"prefix_hit_tokens", s.prefix_hit_tokens},
                          {"prefill_tok_s", s.prefill_seconds > 0 ? double(s.prefill_tokens) / s.prefill_seconds : 0.0},
                          {"decode_tok_s", s.decode_seconds > 0 ? double(s.decode_tokens) / s.decode_seconds : 0.0},
                          {"budget_tokens", budget < 0 ? (cfg->sparse ? cfg->sparse_cfg.budget_tokens : 0) : budget}};
      if (cfg->sparse) {
        const double attended = attended_fraction(s);
        j["attended_fraction"] = attended;
        // A sparse budget that left every block attended (prompt below min_context, or a budget
        // covering the whole context) was not applied: say so instead of reporting it as GSA.
        const bool applied = budget == 0 || attended < 1.0;
        j["applied"] = applied;
        if (!applied)
          std::fprintf(stderr, "gsa eval: ctx %d budget %d was not applied (every block attended; "
                       "min_context %d)\n", ctx, budget, cfg->sparse_cfg.min_context);
        j["config"] = nlohmann::json::parse(sparse::to_json(cfg->sparse_cfg));
        if (f.mass) j["mass_per_layer"] = mass.per_layer();
      }
      std::fprintf(out, "%s\n", j.dump().c_str());
      if (out == stdout ? !flush_stdout() : std::fflush(out) != 0)
        return out == stdout ? 1 : fail(io_error("cannot write '{}': {}", f.out, std::strerror(errno)));
      std::fprintf(stderr, "gsa eval: ctx %d depth %3d budget %5d %s (%.1f s)\n", ctx, depth, budget,
                   pass ? "pass" : "FAIL", t.seconds());
      }
    }
  }
  if (out != stdout && std::fclose(out) != 0)
    return fail(io_error("cannot write '{}': {}", f.out, std::strerror(errno)));
  std::fprintf(stderr, "gsa eval: %d of %d passed\n", passed, total);
  return 0;
}

}  // namespace

Command add_eval(CLI::App& root) {
  auto f = std::make_shared<EvalFlags>();
  CLI::App* ev = root.add_subcommand("eval", "accuracy harness");
  ev->require_subcommand(0, 1);
  CLI::App* app = ev->add_subcommand("niah", "needle-in-a-haystack retrieval on real text");
  add_engine_flags(app, &f->engine, false);
  app->add_option("--haystack", f->haystack_dir, "directory of .txt files")
      ->default_str("~/.cache/gsa/data/pg_essays");
  app->add_option("--contexts", f->contexts, "prompt lengths in tokens")
      ->delimiter(',')
      ->transform(int_in(256, INT32_MAX));
  app->add_option("--depths", f->depths, "needle depths in percent")->delimiter(',')->transform(int_in(0, 100));
  app->add_option("--needle", f->needle, "the needle sentence");
  app->add_option("--question", f->question, "the question");
  app->add_option("--answer", f->answer, "text the answer must contain");
  app->add_option("-n,--n-predict", f->n_predict, "tokens to generate")->transform(int_in(0, 1 << 24));
  // A budget is a per-request sparse_budget_tokens: the range of the budget_tokens knob.
  const sparse::KnobSpec& budget_knob = *sparse::find_sparse_knob("budget_tokens");
  app->add_option("--budgets", f->budgets,
                  "with --sparse gsa: run each prompt at these budgets in tokens (0: full attention)")
      ->delimiter(',')
      ->transform(int_in(int64_t(budget_knob.lo), int64_t(budget_knob.hi)))
      ->default_str("");
  app->add_flag("--mass", f->mass, "measure the softmax mass inside the selected blocks, per layer");
  app->add_option("--label", f->label, "label written into each result line");
  app->add_option("-o,--out", f->out, "append results (JSON lines) to this file (default: stdout)");
  Command ruler = add_eval_ruler(*ev);
  return {ev, [f, ev, app, ruler] {
            if (app->parsed()) return run(*f);
            if (ruler.app->parsed()) return ruler.run();
            std::fputs(ev->help("gsa").c_str(), stdout);  // `gsa eval` alone: its help
            return 0;
          }};
}

}  // namespace gsa::cli
