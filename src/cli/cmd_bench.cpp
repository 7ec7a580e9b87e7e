// `gsa bench`: prefill and decode speed at a given context and batch. One prompt of --ctx
// random token ids is prefilled once and shared (by KV block reference) by --batch sequences,
// each of which then decodes --gen tokens. Prints a table row or one JSON line.
#include <cstdio>
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
  bool json = false;
  uint64_t seed = 7;
};

int run(BenchFlags b) {
  if (b.engine.verbose) set_log_level(LogLevel::Info);
  if (b.ctx < 1 || b.batch < 1 || b.gen < 2)
    return fail(invalid_argument("need --ctx >= 1, --batch >= 1, --gen >= 2"));
  b.engine.max_context = b.ctx + b.gen + 1;
  b.engine.max_batch = std::max(b.engine.max_batch, b.batch);
  auto cfg = engine_config(b.engine);
  if (!cfg) return fail(cfg.status());
  if (cfg->kv_tokens == 0)
    cfg->kv_tokens = int64_t(b.ctx) + int64_t(b.batch) * (b.gen + 2 * cfg->block_size);
  Timer load_timer;
  auto eng = engine::Engine::create(*cfg);
  if (!eng) return fail(eng.status());
  engine::Engine& e = **eng;
  const double load_s = load_timer.seconds();
  const model::HParams& h = e.hparams();

  std::mt19937 rng(uint32_t(b.seed));
  std::uniform_int_distribution<int32_t> tok(0, std::min(h.vocab, 32000) - 1);
  engine::RequestInput in;
  for (int i = 0; i < b.ctx; ++i) in.prompt.push_back(tok(rng));
  in.sampling.max_tokens = b.gen;
  in.sampling.ignore_eos = true;
  in.n = b.batch;
  auto id = e.add_request(std::move(in));
  if (!id) return fail(id.status());
  std::vector<engine::TokenEvent> events;
  while (e.has_work()) {
    events.clear();
    Status st = e.step(&events);
    if (!st.is_ok()) return fail(st);
    for (const auto& ev : events)
      if (ev.finish == engine::FinishReason::Error) return fail(internal_error("{}", ev.error));
  }
  const engine::EngineStats& s = e.stats();
  const double prefill_tps = double(s.prefill_tokens) / s.prefill_seconds;
  const double decode_tps = double(s.decode_tokens) / s.decode_seconds;
  const double step_ms = 1e3 * s.decode_seconds / double(s.decode_steps);
  const double select_ms = 1e3 * s.select_seconds / double(std::max<int64_t>(1, s.decode_steps));
  const double attended = s.selector.blocks_total
                              ? double(s.selector.blocks_attended) / double(s.selector.blocks_total)
                              : 1.0;
  // Bytes one decode step must read: the weights once, plus the KV each sequence attends.
  const double kv_token_bytes = 2.0 * h.n_layers * h.kv_dim() * double(dtype_size(e.kv().config().kv_type));
  const double ctx_mid = b.ctx + b.gen / 2.0;
  const double step_bytes = double(e.weight_bytes()) + b.batch * ctx_mid * kv_token_bytes * attended;
  const double rss_mb = double(peak_rss_bytes()) / (1 << 20);
  const std::string model = cfg->model_path.empty() ? cfg->shape_preset : cfg->model_path;
  if (b.json) {
    nlohmann::json j = {{"model", model.substr(model.find_last_of('/') + 1)},
                        {"device", cfg->device},
                        {"ctx", b.ctx},
                        {"batch", b.batch},
                        {"gen", b.gen},
                        {"threads", cfg->threads},
                        {"sparse", cfg->sparse},
                        {"block_size", cfg->block_size},
                        {"load_s", load_s},
                        {"prefill_tok_s", prefill_tps},
                        {"decode_tok_s", decode_tps},
                        {"step_ms", step_ms},
                        {"select_ms_per_step", select_ms},
                        {"attended_fraction", attended},
                        {"step_bytes", step_bytes},
                        {"peak_rss_mb", rss_mb}};
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("| model | device | attn | ctx | batch | prefill tok/s | decode tok/s | step ms | select ms | attended | MB/step | peak RSS MiB |\n");
    std::printf("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    std::printf("| %s | %s | %s | %d | %d | %.1f | %.1f | %.2f | %.3f | %.1f%% | %.1f | %.0f |\n",
                model.substr(model.find_last_of('/') + 1).c_str(), cfg->device.c_str(),
                cfg->sparse ? "gsa" : "full", b.ctx, b.batch, prefill_tps, decode_tps, step_ms,
                select_ms, 100 * attended, step_bytes / 1e6, rss_mb);
  }
  return 0;
}

}  // namespace

Command add_bench(CLI::App& root) {
  auto b = std::make_shared<BenchFlags>();
  CLI::App* app = root.add_subcommand("bench", "measure prefill and decode speed");
  add_engine_flags(app, &b->engine, true, false);
  app->add_option("--ctx", b->ctx, "prompt tokens (shared by the batch)");
  app->add_option("--batch", b->batch, "sequences decoding together");
  app->add_option("--gen", b->gen, "tokens generated per sequence");
  app->add_option("--seed", b->seed, "seed of the random prompt");
  app->add_flag("--json", b->json, "print one JSON line");
  return {app, [b] { return run(*b); }};
}

}  // namespace gsa::cli
