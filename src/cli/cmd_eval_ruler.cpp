// `gsa eval ruler`: runs the RULER-style cases written by eval/ruler/gen_ruler.py. For each case
// and context it sizes the case's haystack (PG essays, King James Bible, or the case's literal
// text) with the model's tokenizer so the chat prompt is about that many tokens, inserts the
// case's sentences at their depths (sentence boundaries), and decodes greedily once per variant
// (full, gsa, gsa@B, oracle, oracle@B) back to back, so later variants reuse the prompt's KV
// from the prefix cache. Scores follow RULER (share of expected strings in the output); one
// JSON line per (case, context, variant). It does not aggregate: eval/ruler/report.py does.
#include "cli/cmd_eval_ruler.h"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <variant>

#include <nlohmann/json.hpp>

#include "cli/eval_common.h"
#include "core/log.h"
#include "core/paths.h"
#include "core/timer.h"
#include "sparse/knobs.h"

namespace gsa::cli {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

const std::set<std::string> kTasks = {"niah_number",     "niah_word",       "niah_uuid",
                                      "niah_multikey",   "niah_multivalue", "niah_multiquery",
                                      "vt",              "cwe",             "two_hop"};

struct RulerFlags {
  EngineFlags engine;
  std::string cases;
  std::string data_dir;
  std::vector<int> contexts = {4096, 8192};
  std::vector<std::string> tasks;
  int limit = 0;
  int max_new = 0;  // > 0: caps each case's n_predict (quick smoke runs)
  std::vector<std::string> variants = {"full", "gsa"};
  bool mass = false;
  std::string label;
  std::string out;
};

struct Insert {
  double depth = 0;  // 0 = start of the haystack, 1 = end
  std::string text;
};

struct Case {
  std::string id, task, haystack, literal;
  std::vector<Insert> inserts;
  std::string question;
  std::vector<std::string> answers;
  bool metric_all = true;  // all: share of answers found; any: 1 if one is found
  int n_predict = 32;
};

struct Variant {
  std::string name;
  bool full = false;
  bool oracle = false;
  int8_t rank_by = -1;  // >= 0: sparse::RankBy for this variant (score, mass)
  int budget = 0;  // tokens; 0 keeps the engine's budget
};

Result<Variant> parse_variant(const std::string& s) {
  Variant v{s};
  const size_t at = s.find('@');
  const std::string base = s.substr(0, at);
  if (base == "full" && at == std::string::npos) {
    v.full = true;
    return v;
  }
  if (base != "gsa" && base != "oracle" && base != "score" && base != "mass" && base != "rerank")
    return invalid_argument("unknown variant '{}' (known: full, gsa, score, mass, rerank, oracle, "
                            "each but full with @B for a budget of B tokens)", s);
  v.oracle = base == "oracle";
  // score, mass and rerank are the rank_by knob's names; @B is a sparse_budget_tokens override, in the
  // budget_tokens knob's range (0 would mean "the engine's budget": not a budget to name).
  const sparse::KnobSpec& rank_by = *sparse::find_sparse_knob("rank_by");
  if (base != "gsa" && base != "oracle") {
    auto value = sparse::parse_value(rank_by, base);
    if (!value) return internal_error("variant '{}': {}", s, value.status().message());
    v.rank_by = int8_t(std::get<int64_t>(*value));
  }
  if (at != std::string::npos) {
    const sparse::KnobSpec& budget = *sparse::find_sparse_knob("budget_tokens");
    auto n = sparse::parse_value(budget, s.substr(at + 1));
    if (!n || std::get<int64_t>(*n) <= 0 || !sparse::in_range(budget, *n))
      return invalid_argument("variant '{}': budget must be a positive token count", s);
    v.budget = int(std::get<int64_t>(*n));
  }
  return v;
}

// One cases line; `where` names the file and line for error messages.
Result<Case> parse_case(const std::string& line, const std::string& where) {
  json j = json::parse(line, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return invalid_argument("{}: not a JSON object", where);
  auto str = [&](const char* k, std::string* out, bool required) -> Status {
    if (!j.contains(k)) return required ? invalid_argument("{}: missing \"{}\"", where, k) : Status{};
    if (!j[k].is_string()) return invalid_argument("{}: \"{}\" must be a string", where, k);
    *out = j[k].get<std::string>();
    return {};
  };
  Case c;
  GSA_RETURN_IF_ERROR(str("id", &c.id, true));
  GSA_RETURN_IF_ERROR(str("task", &c.task, true));
  GSA_RETURN_IF_ERROR(str("haystack", &c.haystack, true));
  GSA_RETURN_IF_ERROR(str("literal", &c.literal, c.haystack == "literal"));
  GSA_RETURN_IF_ERROR(str("question", &c.question, true));
  if (!kTasks.count(c.task)) return invalid_argument("{}: unknown task '{}'", where, c.task);
  if (c.haystack != "pg_essays" && c.haystack != "kjv" && c.haystack != "literal")
    return invalid_argument("{}: unknown haystack '{}' (pg_essays, kjv, literal)", where, c.haystack);
  if (j.contains("inserts")) {
    if (!j["inserts"].is_array()) return invalid_argument("{}: \"inserts\" must be an array", where);
    for (const json& x : j["inserts"]) {
      if (!x.is_object() || !x.contains("depth") || !x["depth"].is_number() || !x.contains("text") ||
          !x["text"].is_string())
        return invalid_argument("{}: each insert needs a numeric \"depth\" and a string \"text\"", where);
      const double d = x["depth"].get<double>();
      if (!(d >= 0.0 && d <= 1.0)) return invalid_argument("{}: insert depth {} outside [0, 1]", where, d);
      c.inserts.push_back({d, x["text"].get<std::string>()});
    }
  }
  if (!j.contains("answers") || !j["answers"].is_array() || j["answers"].empty())
    return invalid_argument("{}: \"answers\" must be a non-empty array of strings", where);
  for (const json& a : j["answers"]) {
    if (!a.is_string() || a.get<std::string>().empty())
      return invalid_argument("{}: \"answers\" must be a non-empty array of strings", where);
    c.answers.push_back(a.get<std::string>());
  }
  std::string metric = "all";
  GSA_RETURN_IF_ERROR(str("metric", &metric, false));
  if (metric != "all" && metric != "any")
    return invalid_argument("{}: metric '{}' is not all or any", where, metric);
  c.metric_all = metric == "all";
  if (j.contains("n_predict")) {
    if (!j["n_predict"].is_number_integer() || j["n_predict"].get<int64_t>() < 1 ||
        j["n_predict"].get<int64_t>() > 4096)
      return invalid_argument("{}: \"n_predict\" must be an integer in [1, 4096]", where);
    c.n_predict = j["n_predict"].get<int>();
  }
  return c;
}

Result<std::vector<Case>> read_cases(const RulerFlags& f) {
  std::ifstream in(f.cases, std::ios::binary);
  if (!fs::is_regular_file(f.cases) || !in)
    return not_found("cases file '{}' does not exist; write one with eval/ruler/gen_ruler.py", f.cases);
  std::vector<Case> cases;
  std::map<std::string, int> per_task;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    GSA_ASSIGN_OR_RETURN(Case c, parse_case(line, fmt::format("{} line {}", f.cases, n)));
    if (!f.tasks.empty() && std::find(f.tasks.begin(), f.tasks.end(), c.task) == f.tasks.end()) continue;
    if (f.limit > 0 && per_task[c.task] >= f.limit) continue;
    per_task[c.task]++;
    cases.push_back(std::move(c));
  }
  if (cases.empty()) return invalid_argument("no cases selected from '{}'", f.cases);
  return cases;
}

// The haystack's text: its directory's .txt files in name order, read up to max_chars.
Result<std::string> read_text_dir(const std::string& dir, size_t max_chars) {
  if (!fs::is_directory(dir))
    return not_found("haystack directory '{}' does not exist; run scripts/fetch-data", dir);
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".txt") files.push_back(e.path());
  if (files.empty()) return not_found("no .txt files in '{}'; run scripts/fetch-data", dir);
  std::sort(files.begin(), files.end());
  std::string text;
  for (const auto& p : files) {
    if (text.size() >= max_chars) break;
    std::ifstream in(p, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    text += ss.str();
    text += "\n\n";
  }
  if (text.size() > max_chars) text.resize(max_chars);
  return text;
}

std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

double score(const Case& c, const std::string& answer) {
  const std::string a = lower(answer);
  int found = 0;
  for (const std::string& e : c.answers) found += a.find(lower(e)) != std::string::npos;
  if (!c.metric_all) return found > 0 ? 1.0 : 0.0;
  return double(found) / double(c.answers.size());
}

// The text with each insert placed at the sentence boundary (". " or ".\n") at or after its
// depth; inserts at one boundary keep their order.
std::string insert_at_depths(const std::string& hay, const std::vector<Insert>& inserts) {
  std::vector<std::pair<size_t, size_t>> at;  // (position, insert index)
  for (size_t i = 0; i < inserts.size(); ++i) {
    const double d = inserts[i].depth;
    size_t pos = 0;
    if (d >= 1.0) {
      pos = hay.size();
    } else if (d > 0.0) {
      const size_t from = size_t(double(hay.size()) * d);
      size_t best = std::string::npos;
      for (const char* b : {". ", ".\n"}) best = std::min(best, hay.find(b, from));
      pos = best == std::string::npos ? hay.size() : best + 2;
    }
    at.emplace_back(pos, i);
  }
  std::stable_sort(at.begin(), at.end());
  std::string out;
  size_t prev = 0;
  for (const auto& [pos, i] : at) {
    out.append(hay, prev, pos - prev);
    if (!out.empty() && !std::isspace(static_cast<unsigned char>(out.back()))) out += ' ';
    out += inserts[i].text;
    if (pos < hay.size()) out += ' ';
    prev = pos;
  }
  out.append(hay, prev, std::string::npos);
  return out;
}

class PromptBuilder {
 public:
  PromptBuilder(const tokenizer::Tokenizer& tok, std::string data_dir, size_t max_chars)
      : tok_(tok), data_dir_(std::move(data_dir)), max_chars_(max_chars) {}

  /// The token ids of the case's chat prompt at about ctx tokens.
  Result<std::vector<int32_t>> build(const Case& c, int ctx) {
    std::string joined;
    for (const Insert& i : c.inserts) joined += (joined.empty() ? "" : " ") + i.text;
    GSA_ASSIGN_OR_RETURN(std::vector<int32_t> overhead, wrap(c, joined));
    const size_t n_hay = size_t(std::max<int64_t>(0, int64_t(ctx) - int64_t(overhead.size()) - 2));
    const std::vector<int32_t>* ids = nullptr;
    if (c.haystack == "literal") {
      if (literal_id_ != c.id) {
        GSA_ASSIGN_OR_RETURN(literal_ids_, tok_.encode(c.literal, false, false));
        literal_id_ = c.id;
      }
      ids = &literal_ids_;
    } else {
      auto it = hay_ids_.find(c.haystack);
      if (it == hay_ids_.end()) {
        GSA_ASSIGN_OR_RETURN(std::string text, read_text_dir(data_dir_ + "/" + c.haystack, max_chars_));
        GSA_ASSIGN_OR_RETURN(std::vector<int32_t> t, tok_.encode(text, false, false));
        it = hay_ids_.emplace(c.haystack, std::move(t)).first;
      }
      ids = &it->second;
    }
    if (n_hay > ids->size())
      return invalid_argument("case '{}': haystack '{}' holds {} tokens, {} needed for context {}", c.id,
                              c.haystack, ids->size(), n_hay, ctx);
    std::string hay = tok_.decode(std::vector<int32_t>(ids->begin(), ids->begin() + long(n_hay)), true);
    if (c.haystack == "literal") {
      const size_t nl = hay.rfind('\n');  // whole lines only
      if (nl != std::string::npos) hay.resize(nl);
    }
    return wrap(c, insert_at_depths(hay, c.inserts));
  }

 private:
  Result<std::vector<int32_t>> wrap(const Case& c, const std::string& body) const {
    std::vector<tokenizer::ChatMessage> msgs = {{"user", body + "\n\n" + c.question}};
    GSA_ASSIGN_OR_RETURN(std::string text, tok_.apply_chat_template(msgs, true));
    return tok_.encode(text, true, true);
  }

  const tokenizer::Tokenizer& tok_;
  std::string data_dir_;
  size_t max_chars_;
  std::map<std::string, std::vector<int32_t>> hay_ids_;
  std::string literal_id_;
  std::vector<int32_t> literal_ids_;
};

int run(RulerFlags f, bool variants_given) {
  if (f.engine.verbose) set_log_level(LogLevel::Info);
  if (f.data_dir.empty()) {
    const char* env = std::getenv("GSA_DATA_DIR");
    f.data_dir = env && *env ? env : cache_dir() + "/data";
  }
  std::vector<Variant> variants;
  for (const std::string& s : f.variants) {
    auto v = parse_variant(s);
    if (!v) return usage(v.status().with_context("--variants"));
    variants.push_back(*v);
  }
  if (f.engine.device != "cpu" && f.mass) return usage(invalid_argument("--mass needs --device cpu"));
  auto cfg = engine_config(f.engine);
  if (!cfg) return fail_flags(cfg.status());
  auto cases = read_cases(f);
  if (!cases) return fail(cases.status());
  for (const Variant& v : variants) {
    if (!v.full && !cfg->sparse)
      return usage(invalid_argument("{} {} needs --sparse gsa{}", variants_given ? "--variants" : "the default variant",
                                    v.name, variants_given ? "" : " (or pass --variants full)"));
    // The request overrides a variant sets, checked against the knobs they share before any
    // model loads (mass with --representation hash, say).
    if (!v.full)
      if (Status st = sparse::check_request_overrides(cfg->sparse_cfg, v.budget, -1, v.rank_by); !st.is_ok())
        return usage(invalid_argument("--variants {}: {}", v.name, with_flag_names(st.message())));
  }
  if (Status st = set_model(f.engine, &*cfg); !st.is_ok()) return fail(st);
  auto eng = create_engine(f.engine, *cfg);
  if (!eng) return fail(eng.status());
  engine::Engine& e = **eng;
  if (!e.tokenizer()) return fail(invalid_argument("eval needs a model with a tokenizer"));
  warn_context(f.engine, e);
  const int ctx_limit = e.hparams().ctx_len;
  MassObserver mass(e.hparams(), cfg->block_size);
  if (f.mass && cfg->sparse) e.set_attention_observer(&mass);
  const int max_ctx = *std::max_element(f.contexts.begin(), f.contexts.end());
  PromptBuilder prompts(*e.tokenizer(), f.data_dir, size_t(max_ctx) * 8 + 65536);

  std::FILE* out = stdout;
  if (!f.out.empty()) {
    out = std::fopen(f.out.c_str(), "a");
    if (!out) return fail(io_error("cannot write '{}'", f.out));
  }
  const int min_context = cfg->sparse ? cfg->sparse_cfg.min_context : 0;
  std::set<std::pair<int, std::string>> warned;
  std::map<std::string, std::pair<double, int>> totals;  // variant -> (score sum, count)
  for (int ctx : f.contexts) {
    for (const Case& c : *cases) {
      const int n_predict = f.max_new > 0 ? std::min(f.max_new, c.n_predict) : c.n_predict;
      if (int64_t(ctx) + n_predict > ctx_limit) {
        if (warned.insert({ctx, ""}).second)
          std::fprintf(stderr, "gsa eval: skipping context %d (model context %d)\n", ctx, ctx_limit);
        continue;
      }
      auto ids = prompts.build(c, ctx);
      if (!ids) return fail(ids.status());
      for (const Variant& v : variants) {
        engine::RequestInput in;
        in.prompt = *ids;
        in.sampling.max_tokens = n_predict;
        if (v.full && cfg->sparse) in.sparse_min_context = INT32_MAX;  // exact full attention
        in.sparse_budget_tokens = v.budget;
        in.sparse_oracle = v.oracle;
        in.sparse_rank_by = v.rank_by;
        e.reset_stats();
        mass.reset();
        Timer t;
        auto run = run_to_completion(e, std::move(in));
        if (!run) return fail(run.status());
        const std::string& answer = *run;
        const double sc = score(c, answer);
        const auto& s = e.stats();
        const double attended = attended_fraction(s);
        json j = {{"label", f.label},
                  {"task", c.task},
                  {"id", c.id},
                  {"haystack", c.haystack},
                  {"context", ctx},
                  {"prompt_tokens", ids->size()},
                  {"variant", v.name},
                  {"budget_tokens", v.full ? 0 : (v.budget ? v.budget : cfg->sparse_cfg.budget_tokens)},
                  {"score", sc},
                  {"answer", answer},
                  {"expected", c.answers},
                  {"attended_fraction", attended},
                  {"n_predict", n_predict},
                  {"seconds", t.seconds()},
                  {"prefix_hit_tokens", s.prefix_hit_tokens},
                  {"decode_tok_s", s.decode_seconds > 0 ? double(s.decode_tokens) / s.decode_seconds : 0.0}};
        if (cfg->sparse) j["config"] = json::parse(sparse::to_json(cfg->sparse_cfg));
        if (!v.full)
          j["rank_by"] = v.oracle ? "oracle"
                                  : sparse::rank_by_name(v.rank_by >= 0 ? sparse::RankBy(v.rank_by)
                                                                        : cfg->sparse_cfg.rank_by);
        if (!v.full) {
          // A budget is never applied when the whole decode stays below min_context.
          const bool applied = attended < 1.0 || int64_t(ids->size()) >= min_context;
          j["applied"] = applied;
          if (!applied && warned.insert({ctx, v.name}).second)
            std::fprintf(stderr,
                         "gsa eval: warning: variant %s at context %d decodes densely (prompt %zu < "
                         "min_context %d); pass --min-context\n",
                         v.name.c_str(), ctx, ids->size(), min_context);
        }
        if (f.mass && cfg->sparse && !v.full) j["mass_per_layer"] = mass.per_layer();
        std::fprintf(out, "%s\n", j.dump().c_str());
        if (out == stdout ? !flush_stdout() : std::fflush(out) != 0)
          return out == stdout ? 1 : fail(io_error("cannot write '{}': {}", f.out, std::strerror(errno)));
        std::fprintf(stderr, "gsa eval: ctx %d %-20s %-14s score %.2f (%.1f s)\n", ctx, c.id.c_str(),
                     v.name.c_str(), sc, t.seconds());
        auto& tot = totals[v.name];
        tot.first += sc;
        tot.second++;
      }
    }
  }
  if (out != stdout && std::fclose(out) != 0)
    return fail(io_error("cannot write '{}': {}", f.out, std::strerror(errno)));
  for (const Variant& v : variants) {
    const auto& tot = totals[v.name];
    std::fprintf(stderr, "gsa eval: %-14s mean score %.3f over %d runs\n", v.name.c_str(),
                 tot.second ? tot.first / tot.second : 0.0, tot.second);
  }
  return 0;
}

}  // namespace

Command add_eval_ruler(CLI::App& eval) {
  auto f = std::make_shared<RulerFlags>();
  CLI::App* app = eval.add_subcommand("ruler", "RULER-style long-context suite (eval/ruler/gen_ruler.py cases)");
  add_engine_flags(app, &f->engine, false);
  app->add_option("--cases", f->cases, "cases JSONL written by eval/ruler/gen_ruler.py")->required();
  app->add_option("--data-dir", f->data_dir, "fetch-data's directory")->default_str("$GSA_DATA_DIR or ~/.cache/gsa/data");
  app->add_option("--contexts", f->contexts, "prompt lengths in tokens")
      ->delimiter(',')
      ->transform(int_in(256, INT32_MAX));
  app->add_option("--tasks", f->tasks, "only these tasks (default: all)")
      ->delimiter(',')
      ->check(one_of(std::vector<std::string>(kTasks.begin(), kTasks.end())))
      ->default_str("");
  app->add_option("--limit", f->limit, "at most this many cases per task (0: all)")->transform(int_in(0, INT32_MAX));
  app->add_option("--max-new", f->max_new, "cap each case's tokens to generate (0: the case's n_predict)")
      ->transform(int_in(0, INT32_MAX));
  app->add_option("--variants", f->variants,
                  "full, gsa (the engine's ranking), score, mass (ranked by representation "
                  "score or by the attention mass it estimates), oracle; each but full may end in "
                  "@B, a budget of B tokens; all but full need --sparse gsa")
      ->delimiter(',')
      ->check(CLI::Validator(
          [](std::string& s) -> std::string {
            auto v = parse_variant(s);
            return v ? std::string() : v.status().message();
          },
          std::string()));
  app->add_flag("--mass", f->mass, "measure the softmax mass inside the selected blocks, per layer (CPU)");
  app->add_option("--label", f->label, "label written into each result line");
  app->add_option("-o,--out", f->out, "append results (JSON lines) to this file (default: stdout)");
  return {app, [f, app] { return run(*f, app->count("--variants") > 0); }};
}

}  // namespace gsa::cli
