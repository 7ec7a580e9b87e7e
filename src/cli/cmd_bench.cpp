// `gsa bench`: prefill and decode speed at a given context and batch. One prompt of --ctx
// random token ids is prefilled once and shared (by KV block reference) by --batch sequences,
// each of which then decodes --gen tokens; or (--random-kv) each sequence starts with its own
// --ctx tokens of random K/V. With --compare, full attention and GSA run side by side in one
// process. The first --warmup decode steps of each run (module loading, GEMM heuristics) are
// not timed. Each row gives the bytes a step must read and, on the CPU, the bound they imply at
// the host read bandwidth measured in the same run.
#include <cstdio>
#include <algorithm>
#include <climits>
#include <random>

#include <nlohmann/json.hpp>

#include "cli/common.h"
#include "core/log.h"
#include "core/timer.h"

namespace gsa::cli {

namespace {

struct BenchFlags {
  EngineFlags engine;
  int ctx = 512;
  int batch = 1;
  int gen = 32;
  int warmup = 2;  // decode steps run before the timed ones
  bool json = false;
  bool random_kv = false;
  bool compare = false;
  bool distinct = false;
  uint64_t seed = 7;
};

// Best of three multithreaded sums over a 1 GiB buffer: the host memory read bandwidth that
// bounds a CPU decode step, measured in the same process as the step.
double measure_host_read_gbs(int threads) {
  const size_t n = (size_t(1) << 30) / sizeof(float);
  std::vector<float> buf(n, 1.0f);
  ThreadPool pool(threads);
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    std::vector<double> part(size_t(pool.n_threads()) * 8, 0.0);
    Timer t;
    pool.parallel_for(int64_t(n / 4096), [&](int64_t b, int64_t e, int tid) {
      float acc[16] = {};
      for (int64_t i = b * 4096; i < e * 4096; i += 16)
        for (int j = 0; j < 16; ++j) acc[j] += buf[size_t(i + j)];
      double sum = 0;
      for (float a : acc) sum += a;
      part[size_t(tid) * 8] += sum;
    }, 16);
    const double s = t.seconds();
    double total = 0;
    for (double v : part) total += v;
    if (total > 0) best = std::max(best, double(n * sizeof(float)) / s / 1e9);
  }
  return best;
}

struct Row {
  std::string attn;
  double prefill_tps = 0, decode_tps = 0, step_ms = 0, select_ms = 0, attended = 1, step_bytes = 0;
  double forward_ms = 0, sample_ms = 0, logits_ms = 0, enqueue_ms = 0;
  sparse::SelectorStats sel;
  engine::HostSelectStats host;
  int64_t steps = 0;
};

// Runs one request (prefilled prompt or synthetic random context) to the end.
Result<Row> run_one(engine::Engine& e, const BenchFlags& b, bool full, std::mt19937& rng) {
  const model::HParams& h = e.hparams();
  engine::RequestInput in;
  in.sampling.max_tokens = b.gen + b.warmup;
  in.sampling.ignore_eos = true;
  in.n = b.batch;
  if (full && e.config().sparse) in.sparse_min_context = INT32_MAX;
  e.reset_stats();
  if (b.random_kv) {
    GSA_RETURN_IF_ERROR(e.add_synthetic_request(b.ctx, std::move(in)).status());
  } else {
    std::uniform_int_distribution<int32_t> tok(0, std::min(h.vocab, 32000) - 1);
    const int n_requests = b.distinct ? b.batch : 1;
    if (b.distinct) in.n = 1;
    for (int r = 0; r < n_requests; ++r) {
      engine::RequestInput one = in;
      for (int i = 0; i < b.ctx; ++i) one.prompt.push_back(tok(rng));
      GSA_RETURN_IF_ERROR(e.add_request(std::move(one)).status());
    }
  }
  std::vector<engine::TokenEvent> events;
  engine::EngineStats prefill;  // kept across the reset after the warm-up steps
  bool warm = b.warmup == 0;
  while (e.has_work()) {
    events.clear();
    GSA_RETURN_IF_ERROR(e.step(&events));
    for (const auto& ev : events)
      if (ev.finish == engine::FinishReason::Error) return internal_error("{}", ev.error);
    if (!warm && e.stats().decode_steps >= b.warmup) {
      prefill = e.stats();
      e.reset_stats();
      warm = true;
    }
  }
  engine::EngineStats s = e.stats();
  s.prefill_tokens += prefill.prefill_tokens;
  s.prefill_seconds += prefill.prefill_seconds;
  Row r;
  r.attn = (e.config().sparse && !full) ? "gsa" : "full";
  r.prefill_tps = s.prefill_seconds > 0 ? double(s.prefill_tokens) / s.prefill_seconds : 0;
  r.decode_tps = double(s.decode_tokens) / s.decode_seconds;
  r.step_ms = 1e3 * s.decode_seconds / double(s.decode_steps);
  r.select_ms = 1e3 * s.select_seconds / double(std::max<int64_t>(1, s.decode_steps));
  r.forward_ms = 1e3 * s.forward_seconds / double(std::max<int64_t>(1, s.decode_steps));
  r.sample_ms = 1e3 * s.sample_seconds / double(std::max<int64_t>(1, s.decode_steps));
  r.logits_ms = 1e3 * s.logits_seconds / double(std::max<int64_t>(1, s.decode_steps));
  r.enqueue_ms = 1e3 * s.enqueue_seconds / double(std::max<int64_t>(1, s.decode_steps));
  r.sel = s.selector;
  r.host = s.host_select;
  r.steps = s.decode_steps;
  r.attended = s.selector.blocks_total ? double(s.selector.blocks_attended) / double(s.selector.blocks_total) : 1.0;
  // Bytes one decode step must read: the weights once, plus the KV each sequence attends.
  const double kv_token_bytes = 2.0 * h.n_layers * h.kv_dim() * double(dtype_size(e.kv().config().kv_type));
  const double ctx_mid = b.ctx + b.warmup + b.gen / 2.0;
  r.step_bytes = double(e.weight_bytes()) + b.batch * ctx_mid * kv_token_bytes * r.attended;
  return r;
}

int run(BenchFlags b) {
  if (b.engine.verbose) set_log_level(LogLevel::Info);
  if (b.compare && b.engine.sparse != "gsa") return usage(invalid_argument("--compare needs --sparse gsa"));
  const int64_t context = int64_t(b.ctx) + b.gen + b.warmup + 1;
  if (context > INT32_MAX)
    return usage(invalid_argument("--ctx {} + --gen {} + --warmup {} is more than {} tokens", b.ctx, b.gen,
                                  b.warmup, INT32_MAX - 1));
  b.engine.max_context = int(context);
  b.engine.max_batch = std::max(b.engine.max_batch, b.batch);
  auto cfg = engine_config(b.engine);
  if (!cfg) return fail_flags(cfg.status());
  if (Status st = set_model(b.engine, &*cfg); !st.is_ok()) return fail(st);
  if (cfg->kv_tokens == 0) {
    const int64_t per_seq = b.gen + b.warmup + 2 * int64_t(cfg->block_size);
    cfg->kv_tokens = (b.random_kv || b.distinct) ? int64_t(b.batch) * (b.ctx + per_seq)
                                 : int64_t(b.ctx) + int64_t(b.batch) * per_seq + cfg->block_size;
  }
  Timer load_timer;
  auto eng = create_engine(b.engine, *cfg);
  if (!eng) return fail(eng.status());
  engine::Engine& e = **eng;
  const double load_s = load_timer.seconds();

  std::mt19937 rng(uint32_t(b.seed));
  std::vector<Row> rows;
  std::vector<bool> fulls = b.compare ? std::vector<bool>{true, false} : std::vector<bool>{!cfg->sparse};
  for (bool full : fulls) {
    std::mt19937 r = rng;  // the same prompt for both (the second reuses it via the prefix cache)
    auto row = run_one(e, b, full, r);
    if (!row) return fail(row.status());
    rows.push_back(*row);
  }
  const std::string model = cfg->model_path.empty() ? cfg->shape_preset : cfg->model_path;
  const std::string model_name = model.substr(model.find_last_of('/') + 1);
  // Peak RSS of the runs, read before the bandwidth probe allocates its 1 GiB buffer.
  const double rss_mb = double(peak_rss_bytes()) / (1 << 20);
  const double read_gbs = cfg->device == "cpu" ? measure_host_read_gbs(cfg->threads) : 0.0;
  for (const Row& r : rows) {
    const double bound_ms = read_gbs > 0 ? r.step_bytes / (read_gbs * 1e9) * 1e3 : 0;
    if (b.json) {
      nlohmann::json j = {{"model", model_name}, {"device", cfg->device}, {"attn", r.attn},
                          {"ctx", b.ctx}, {"batch", b.batch}, {"gen", b.gen}, {"warmup_steps", b.warmup},
                          {"threads", cfg->threads}, {"sparse", r.attn == "gsa"},
                          {"block_size", cfg->block_size}, {"random_kv", b.random_kv},
                          {"load_s", load_s}, {"prefill_tok_s", r.prefill_tps},
                          {"decode_tok_s", r.decode_tps}, {"step_ms", r.step_ms},
                          {"select_ms_per_step", r.select_ms}, {"attended_fraction", r.attended},
                          {"forward_ms", r.forward_ms}, {"sample_ms", r.sample_ms}, {"logits_ms", r.logits_ms},
                          {"enqueue_ms", r.enqueue_ms},
                          {"step_bytes", r.step_bytes}, {"read_gb_s", read_gbs},
                          {"bound_ms", bound_ms}, {"peak_rss_mb", rss_mb}};
      if (cfg->sparse) {
        const sparse::SparseConfig& sc = cfg->sparse_cfg;
        const double steps = double(std::max<int64_t>(1, r.steps));
        j["selector"] = sparse::selector_kind_name(sc.selector);
        j["lag"] = sc.lag;
        j["lists"] = {{"dense", r.sel.lists_dense}, {"selected", r.sel.lists_selected},
                      {"reused", r.sel.lists_reused}, {"async", r.sel.lists_async},
                      {"stale", r.sel.lists_stale}};
        if (cfg->device == "cuda" && sc.selector == sparse::SelectorKind::Cpu)
          j["host_select"] = {{"plan_ms_per_step", 1e3 * r.host.plan_seconds / steps},
                              {"wait_ms_per_step", 1e3 * r.host.wait_seconds / steps},
                              {"pump_ms_per_step", 1e3 * r.host.pump_seconds / steps},
                              {"layers_submitted", r.host.layers_submitted},
                              {"layers_dropped", r.host.layers_dropped},
                              {"mirrored_rows", r.host.mirrored_rows}};
      }
      std::printf("%s\n", j.dump().c_str());
    } else {
      if (&r == &rows.front()) {
        std::printf("| model | device | attn | ctx | batch | prefill tok/s | decode tok/s | step ms | select ms | attended | MB/step | bound ms | step/bound | peak RSS MiB |\n");
        std::printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
      }
      std::printf("| %s | %s | %s | %d | %d | %s | %.1f | %.2f | %.3f | %.1f%% | %.1f | %s | %s | %.0f |\n",
                  model_name.c_str(), cfg->device.c_str(), r.attn.c_str(), b.ctx, b.batch,
                  r.prefill_tps > 0 ? fmt::format("{:.1f}", r.prefill_tps).c_str() : "-", r.decode_tps,
                  r.step_ms, r.select_ms, 100 * r.attended, r.step_bytes / 1e6,
                  bound_ms > 0 ? fmt::format("{:.2f}", bound_ms).c_str() : "-",
                  bound_ms > 0 ? fmt::format("{:.2f}", r.step_ms / bound_ms).c_str() : "-", rss_mb);
    }
  }
  if (rows.size() == 2 && !b.json)
    std::printf("\nGSA / full decode throughput: %.2fx (read bandwidth %s)\n",
                rows[1].decode_tps / rows[0].decode_tps,
                read_gbs > 0 ? fmt::format("{:.1f} GB/s measured", read_gbs).c_str() : "not measured here");
  return 0;
}

}  // namespace

Command add_bench(CLI::App& root) {
  auto b = std::make_shared<BenchFlags>();
  CLI::App* app = root.add_subcommand("bench", "measure prefill and decode speed");
  add_engine_flags(app, &b->engine, true, false);
  app->add_option("--ctx", b->ctx, "prompt tokens (shared by the batch)")->transform(int_in(1, INT32_MAX));
  app->add_option("--batch", b->batch, "sequences decoding together")->transform(int_in(1, 4096));
  app->add_option("--gen", b->gen, "tokens generated per sequence (timed)")->transform(int_in(2, INT32_MAX));
  app->add_option("--warmup", b->warmup, "decode steps before the timed ones")->transform(int_in(0, 1000));
  app->add_option("--seed", b->seed, "seed of the random prompt")->transform(uint64_value());
  app->add_flag("--json", b->json, "print one JSON line per run");
  app->add_flag("--random-kv", b->random_kv,
                "no prefill: each sequence starts with --ctx tokens of random K/V in its own blocks");
  app->add_flag("--distinct", b->distinct,
                "each sequence gets its own prompt (prefilled together) instead of sharing one");
  app->add_flag("--compare", b->compare, "with --sparse gsa: full attention and GSA side by side");
  return {app, [b] { return run(*b); }};
}

}  // namespace gsa::cli
