// Engine behaviour on a tiny synthetic model: batching and chunking do not change results,
// parallel samples share prompt blocks, stop strings, per-request failures.
#include "engine/engine.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>

#include <map>

#include "../offload/offload_test_util.h"
#include "tiny_model.h"

namespace gsa::engine {
namespace {

inline std::pair<int64_t, int> key(int64_t r, int s) { return {r, s}; }

struct Output {
  std::vector<int32_t> tokens;
  std::string text;
  FinishReason finish = FinishReason::None;
  std::string error;
};

class EngineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    testing::TinyModelSpec spec;
    path_ = new std::string(testing::write_tiny_model(spec, "engine_tiny"));
  }
  static void TearDownTestSuite() { delete path_; }

  std::unique_ptr<Engine> make(int block_size = 4, int chunk = 512, int64_t kv_tokens = 4096,
                               bool prefix_cache = true) {
    EngineConfig c;
    c.prefix_cache = prefix_cache;
    c.model_path = *path_;
    c.threads = 2;
    c.block_size = block_size;
    c.prefill_chunk = chunk;
    c.kv_tokens = kv_tokens;
    auto e = Engine::create(c);
    EXPECT_TRUE(e.is_ok()) << e.status().to_string();
    return std::move(e).value();
  }

  std::vector<int32_t> prompt(int n, int salt) {
    std::vector<int32_t> p;
    for (int i = 0; i < n; ++i) p.push_back((i * 37 + salt * 11 + 5) % 256);
    return p;
  }

  // Runs every request to completion; outputs indexed by (request id, sample).
  std::map<std::pair<int64_t, int>, Output> run(Engine& e, std::vector<TokenEvent> ev = {}) {
    std::map<std::pair<int64_t, int>, Output> out;
    int guard = 0;
    for (bool first = true; first || (e.has_work() && guard++ < 10000); first = false) {
      if (!first) {
        ev.clear();
        Status st = e.step(&ev);
        EXPECT_TRUE(st.is_ok()) << st.to_string();
        if (!st.is_ok()) break;
      }
      for (auto& x : ev) {
        Output& o = out[key(x.request_id, x.sample)];
        if (x.token >= 0) o.tokens.push_back(x.token);
        o.text += x.text;
        if (x.finish != FinishReason::None) {
          EXPECT_EQ(o.finish, FinishReason::None) << "finished twice";
          o.finish = x.finish;
          o.error = x.error;
        }
      }
    }
    return out;
  }

  RequestInput req(std::vector<int32_t> p, int max_tokens, int n = 1) {
    RequestInput in;
    in.prompt = std::move(p);
    in.sampling.max_tokens = max_tokens;
    in.sampling.ignore_eos = true;
    in.n = n;
    return in;
  }

  // Every block is free or held only by the prefix cache.
  static void expect_all_free(const Engine& e) {
    const auto& pool = e.kv().pool();
    EXPECT_EQ(pool.n_free() + e.kv().prefix_cache().size(), pool.n_blocks());
  }

  static std::string* path_;
};
std::string* EngineTest::path_ = nullptr;

TEST_F(EngineTest, BatchingDoesNotChangeGreedyOutputs) {
  std::vector<std::vector<int32_t>> alone;
  for (int r = 0; r < 3; ++r) {
    auto e = make();
    ASSERT_TRUE(e->add_request(req(prompt(5 + 7 * r, r), 12)).is_ok());
    auto out = run(*e);
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out.begin()->second.finish, FinishReason::Length);
    ASSERT_EQ(out.begin()->second.tokens.size(), 12u);
    alone.push_back(out.begin()->second.tokens);
  }
  auto e = make();
  for (int r = 0; r < 3; ++r) ASSERT_TRUE(e->add_request(req(prompt(5 + 7 * r, r), 12)).is_ok());
  auto out = run(*e);
  for (int r = 0; r < 3; ++r) EXPECT_EQ(out[key(r, 0)].tokens, alone[size_t(r)]) << "request " << r;
  expect_all_free(*e);
}

TEST_F(EngineTest, GreedyOnTheBackendEqualsSamplingTheTopToken) {
  // Greedy requests take their tokens from the backend's argmax (logits stay there); sampling
  // with top_k = 1 goes through the host sampler and must pick the same tokens.
  auto e = make();
  for (int r = 0; r < 3; ++r) ASSERT_TRUE(e->add_request(req(prompt(9 + 5 * r, r + 3), 20)).is_ok());
  auto greedy = run(*e);
  EXPECT_EQ(e->stats().host_sampled_tokens, 0);
  auto h = make();
  for (int r = 0; r < 3; ++r) {
    RequestInput in = req(prompt(9 + 5 * r, r + 3), 20);
    in.sampling.temperature = 1.0f;
    in.sampling.top_k = 1;
    ASSERT_TRUE(h->add_request(std::move(in)).is_ok());
  }
  auto host = run(*h);
  EXPECT_GT(h->stats().host_sampled_tokens, 0);
  for (int r = 0; r < 3; ++r) {
    ASSERT_EQ(greedy[key(r, 0)].tokens.size(), 20u);
    EXPECT_EQ(greedy[key(r, 0)].tokens, host[key(r, 0)].tokens) << "request " << r;
  }
}

TEST_F(EngineTest, PrefillChunkSizeAndBlockSizeDoNotChangeOutputs) {
  std::vector<int32_t> ref;
  for (int chunk : {512, 7, 1}) {
    for (int bs : {4, 16}) {
      auto e = make(bs, chunk);
      ASSERT_TRUE(e->add_request(req(prompt(23, 3), 10)).is_ok());
      auto out = run(*e);
      if (ref.empty()) ref = out[key(0, 0)].tokens;
      EXPECT_EQ(out[key(0, 0)].tokens, ref) << "chunk " << chunk << " block " << bs;
    }
  }
  EXPECT_EQ(ref.size(), 10u);
}

TEST_F(EngineTest, ParallelSamplesShareThePromptAndMatchSeparateRuns) {
  auto e = make(4);
  RequestInput in = req(prompt(18, 1), 8, 3);
  in.sampling.temperature = 0.9f;
  in.sampling.seed = 42;
  ASSERT_TRUE(e->add_request(in).is_ok());
  // After the prefill step the three samples hold the prompt's 5 blocks by reference (the
  // partial last block is copied on first write), not 15 blocks.
  std::vector<TokenEvent> ev;
  ASSERT_TRUE(e->step(&ev).is_ok());
  EXPECT_EQ(e->kv().pool().n_blocks() - e->kv().pool().n_free(), 5);
  auto out = run(*e, ev);
  std::vector<std::vector<int32_t>> got;
  for (int k = 0; k < 3; ++k) {
    EXPECT_EQ(out[key(0, k)].tokens.size(), 8u);
    got.push_back(out[key(0, k)].tokens);
  }
  // Sampled with per-sample streams: not all identical; and the same request again gives the
  // same three outputs (reproducible).
  EXPECT_FALSE(got[0] == got[1] && got[1] == got[2]);
  auto e2 = make(4);
  ASSERT_TRUE(e2->add_request(in).is_ok());
  auto out2 = run(*e2);
  for (int k = 0; k < 3; ++k) EXPECT_EQ(out2[key(0, k)].tokens, got[size_t(k)]);
  expect_all_free(*e);
}

TEST_F(EngineTest, StopStringsEndTheOutputBeforeTheMatch) {
  auto e = make();
  ASSERT_TRUE(e->add_request(req(prompt(9, 2), 24)).is_ok());
  const Output full = run(*e)[key(0, 0)];
  ASSERT_GE(full.text.size(), 6u);
  // Pick a stop string from the middle of the greedy output.
  const size_t cut = full.text.size() / 2;
  const std::string stop = full.text.substr(cut, 2);
  const size_t first = full.text.find(stop);
  auto e2 = make();
  RequestInput in = req(prompt(9, 2), 24);
  in.sampling.stop = {stop};
  ASSERT_TRUE(e2->add_request(in).is_ok());
  const Output got = run(*e2)[key(0, 0)];
  EXPECT_EQ(got.finish, FinishReason::Stop);
  EXPECT_EQ(got.text, full.text.substr(0, first));
}

TEST_F(EngineTest, KvExhaustionFailsOneRequestAndTheOthersFinish) {
  // 12 blocks of 4 tokens. The second request's prompt (44 tokens, 11 blocks) waits until the
  // first finishes, then runs out of blocks while decoding; the third request cannot ever fit.
  auto e = make(4, 512, 48);
  ASSERT_TRUE(e->add_request(req(prompt(10, 1), 6)).is_ok());
  ASSERT_TRUE(e->add_request(req(prompt(44, 2), 8)).is_ok());
  EXPECT_EQ(e->add_request(req(prompt(49, 3), 2)).status().code(), StatusCode::InvalidArgument);
  auto out = run(*e);
  EXPECT_EQ(out[key(0, 0)].finish, FinishReason::Length);
  EXPECT_EQ(out[key(0, 0)].tokens.size(), 6u);
  EXPECT_EQ(out[key(1, 0)].finish, FinishReason::Error);
  EXPECT_NE(out[key(1, 0)].error.find("KV cache is full"), std::string::npos) << out[key(1, 0)].error;
  // The first token comes from the prefill; 4 decode steps fill slots 45..48 of the 12 blocks.
  EXPECT_EQ(out[key(1, 0)].tokens.size(), 5u);
  EXPECT_FALSE(e->has_work());
  expect_all_free(*e);
}

TEST_F(EngineTest, RequestsThatDoNotFitTogetherArePreemptedAndResumeWithTheSameTokens) {
  // 20 blocks of 4 tokens; four requests of 24-token prompts and 20 new tokens each need 11
  // blocks at the end, 44 together. They are admitted as their prompts fit, and when decoding
  // runs out of blocks the most recently started one gives its blocks up and resumes later.
  // Every request finishes with the tokens it has when run alone.
  std::vector<std::vector<int32_t>> alone;
  for (int i = 0; i < 4; ++i) {
    auto e = make(4);
    ASSERT_TRUE(e->add_request(req(prompt(24, 20 + i), 20)).is_ok());
    alone.push_back(run(*e)[key(0, 0)].tokens);
    ASSERT_EQ(alone.back().size(), 20u);
  }
  for (bool prefix_cache : {true, false}) {
    auto e = make(4, 8, 80, prefix_cache);
    for (int i = 0; i < 4; ++i) ASSERT_TRUE(e->add_request(req(prompt(24, 20 + i), 20)).is_ok());
    auto out = run(*e);
    for (int i = 0; i < 4; ++i) {
      EXPECT_EQ(out[key(i, 0)].finish, FinishReason::Length) << i << ": " << out[key(i, 0)].error;
      EXPECT_EQ(out[key(i, 0)].tokens, alone[size_t(i)]) << "request " << i;
    }
    EXPECT_GT(e->stats().preemptions, 0);
    EXPECT_FALSE(e->has_work());
    expect_all_free(*e);
  }
}

TEST_F(EngineTest, LongPromptsWaitForTheCacheInsteadOfFailing) {
  // 16 blocks of 4 tokens and prompts of 40 tokens (10 blocks, 11 with the first decoded
  // token): the two cannot be in the cache together, so the second is not admitted (though the
  // 48-token chunk has room for it) until the first has finished; both give their lone tokens.
  std::vector<std::vector<int32_t>> alone;
  for (int i = 0; i < 2; ++i) {
    auto e = make(4);
    ASSERT_TRUE(e->add_request(req(prompt(40, 30 + i), 4)).is_ok());
    alone.push_back(run(*e)[key(0, 0)].tokens);
  }
  auto e = make(4, 48, 64);
  ASSERT_TRUE(e->add_request(req(prompt(40, 30), 4)).is_ok());
  ASSERT_TRUE(e->add_request(req(prompt(40, 31), 4)).is_ok());
  std::vector<TokenEvent> ev;
  ASSERT_TRUE(e->step(&ev).is_ok());
  EXPECT_EQ(e->stats().prefill_tokens, 40);  // the first prompt only
  auto out = run(*e, ev);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(out[key(i, 0)].finish, FinishReason::Length) << out[key(i, 0)].error;
    EXPECT_EQ(out[key(i, 0)].tokens, alone[size_t(i)]);
  }
  EXPECT_EQ(e->stats().preemptions, 0);
  expect_all_free(*e);
}

TEST_F(EngineTest, CancelEndsQueuedAndRunningRequestsAndFreesTheirBlocks) {
  auto e = make(4, 512, 4096);
  const int64_t a = e->add_request(req(prompt(20, 40), 30)).value();
  const int64_t b = e->add_request(req(prompt(20, 41), 30, 2)).value();
  std::vector<TokenEvent> ev;
  ASSERT_TRUE(e->step(&ev).is_ok());  // both prompts prefill in one step
  ASSERT_TRUE(e->step(&ev).is_ok());  // one decode step
  ASSERT_TRUE(e->cancel(b).is_ok());
  EXPECT_EQ(e->cancel(b).code(), StatusCode::NotFound);  // already cancelled
  const int64_t c = e->add_request(req(prompt(20, 42), 5)).value();
  ASSERT_TRUE(e->cancel(c).is_ok());  // still queued
  auto out = run(*e, ev);
  EXPECT_EQ(out[key(a, 0)].finish, FinishReason::Length);
  EXPECT_EQ(out[key(a, 0)].tokens.size(), 30u);
  for (int k = 0; k < 2; ++k) {
    EXPECT_EQ(out[key(b, k)].finish, FinishReason::Cancelled);
    EXPECT_EQ(out[key(b, k)].tokens.size(), 2u);  // prefill's token and one decode step's
  }
  EXPECT_EQ(out[key(c, 0)].finish, FinishReason::Cancelled);
  EXPECT_TRUE(out[key(c, 0)].tokens.empty());
  EXPECT_EQ(e->cancel(a).code(), StatusCode::NotFound);  // finished
  EXPECT_EQ(e->cancel(99).code(), StatusCode::NotFound);
  EXPECT_STREQ(finish_reason_name(FinishReason::Cancelled), "cancelled");
  EXPECT_FALSE(e->has_work());
  expect_all_free(*e);
}

TEST_F(EngineTest, PrefixCacheReusesPromptBlocksWithTheSameOutput) {
  auto e = make(4);
  const std::vector<int32_t> p = prompt(30, 4);
  ASSERT_TRUE(e->add_request(req(p, 8)).is_ok());
  const auto first = run(*e)[key(0, 0)].tokens;
  EXPECT_EQ(e->stats().prefix_hit_tokens, 0);
  // The same prompt again: its 7 full blocks (28 tokens) come from the cache, 2 are computed.
  const int64_t prefilled = e->stats().prefill_tokens;
  ASSERT_TRUE(e->add_request(req(p, 8)).is_ok());
  const auto second = run(*e)[key(1, 0)].tokens;
  EXPECT_EQ(e->stats().prefix_hit_tokens, 28);
  EXPECT_EQ(e->stats().prefill_tokens - prefilled, 2);
  EXPECT_EQ(first, second);
  // A prompt that shares only the first 2 blocks.
  std::vector<int32_t> q = p;
  q[9] = (q[9] + 1) % 256;
  ASSERT_TRUE(e->add_request(req(q, 4)).is_ok());
  run(*e);
  EXPECT_EQ(e->stats().prefix_hit_tokens, 28 + 8);
  expect_all_free(*e);
  // Without the cache nothing is reused.
  auto off = make(4, 512, 4096, false);
  ASSERT_TRUE(off->add_request(req(p, 8)).is_ok());
  run(*off);
  ASSERT_TRUE(off->add_request(req(p, 8)).is_ok());
  EXPECT_EQ(run(*off)[key(1, 0)].tokens, first);
  EXPECT_EQ(off->stats().prefix_hit_tokens, 0);
  EXPECT_EQ(off->kv().pool().n_free(), off->kv().pool().n_blocks());
}

TEST_F(EngineTest, CachedBlocksAreEvictedWhenTheCacheRunsDry) {
  auto e = make(4, 512, 48);  // 12 blocks
  ASSERT_TRUE(e->add_request(req(prompt(30, 5), 4)).is_ok());
  run(*e);
  EXPECT_GT(e->kv().prefix_cache().size(), 0);
  ASSERT_TRUE(e->add_request(req(prompt(40, 6), 4)).is_ok());
  auto out = run(*e);
  EXPECT_EQ(out[key(1, 0)].finish, FinishReason::Length);
  expect_all_free(*e);
}

TEST_F(EngineTest, BadRequestsAreRejectedUpFront) {
  auto e = make();
  EXPECT_EQ(e->add_request(req({}, 4)).status().code(), StatusCode::InvalidArgument);
  EXPECT_EQ(e->add_request(req({1, 2, 100000}, 4)).status().code(), StatusCode::InvalidArgument);
  EXPECT_EQ(e->add_request(req({1, -3}, 4)).status().code(), StatusCode::InvalidArgument);
  EXPECT_EQ(e->add_request(req(prompt(600, 0), 4)).status().code(), StatusCode::InvalidArgument);
  RequestInput in = req(prompt(4, 0), 4);
  in.sampling.top_p = 2.0f;
  EXPECT_EQ(e->add_request(in).status().code(), StatusCode::InvalidArgument);
  in = req(prompt(4, 0), 4, 0);
  EXPECT_EQ(e->add_request(in).status().code(), StatusCode::InvalidArgument);
  EXPECT_FALSE(e->has_work());
}

TEST_F(EngineTest, ZeroMaxTokensFinishesAtOnce) {
  auto e = make();
  ASSERT_TRUE(e->add_request(req(prompt(6, 0), 0)).is_ok());
  auto out = run(*e);
  EXPECT_EQ(out[key(0, 0)].finish, FinishReason::Length);
  EXPECT_TRUE(out[key(0, 0)].tokens.empty());
}

// GSA through the engine on the CPU: a prompt of ~40 blocks of 4 tokens, a budget of 8 blocks.
std::unique_ptr<Engine> make_sparse(const std::string& path, int dense_layers = 0, int lag = 0,
                                    const std::function<void(EngineConfig&)>& tweak = {}) {
  EngineConfig c;
  c.model_path = path;
  c.threads = 2;
  c.block_size = 4;
  c.kv_tokens = 4096;
  c.sparse = true;
  c.sparse_cfg.block_size = 4;
  c.sparse_cfg.budget_tokens = 32;
  c.sparse_cfg.min_context = 64;
  c.sparse_cfg.dense_layers = dense_layers;
  // The suite's tiny model has head_dim 8, below the default quant's 16.
  c.sparse_cfg.representation = backend::RepKind::MinMax;
  if (lag > 0) {
    c.sparse_cfg.selector = sparse::SelectorKind::Cpu;
    c.sparse_cfg.lag = lag;
  }
  if (tweak) tweak(c);
  auto e = Engine::create(c);
  EXPECT_TRUE(e.is_ok()) << e.status().to_string();
  return std::move(e).value();
}

TEST_F(EngineTest, OracleRequestsDecodeSparselyBesideRepresentationRequests) {
  auto e = make_sparse(*path_);
  RequestInput oracle = req(prompt(160, 1), 8);
  oracle.sparse_oracle = true;
  ASSERT_TRUE(e->add_request(req(prompt(160, 1), 8)).is_ok());
  ASSERT_TRUE(e->add_request(std::move(oracle)).is_ok());
  auto out = run(*e);
  ASSERT_EQ(out.size(), 2u);
  for (const auto& [k, o] : out) {
    EXPECT_EQ(o.finish, FinishReason::Length) << o.error;
    EXPECT_EQ(o.tokens.size(), 8u);
  }
  const auto& st = e->stats().selector;
  EXPECT_GT(st.lists_selected, 0);
  EXPECT_LT(double(st.blocks_attended), 0.5 * double(st.blocks_total));
  // The oracle runs inline: an engine with an asynchronous selector refuses it up front.
  auto lagged = make_sparse(*path_, 0, 1);
  RequestInput bad = req(prompt(160, 1), 8);
  bad.sparse_oracle = true;
  EXPECT_EQ(lagged->add_request(std::move(bad)).status().code(), StatusCode::InvalidArgument);
}

TEST_F(EngineTest, RerankOverEveryBlockDecodesAsTheOracle) {
  // rank_by rerank with a factor covering every block re-ranks all of them by their true mass:
  // the oracle's tokens. The rerank reads keys inline, so a lagged engine refuses it.
  auto oracle_engine = make_sparse(*path_);
  RequestInput oracle = req(prompt(170, 4), 10);
  oracle.sparse_oracle = true;
  ASSERT_TRUE(oracle_engine->add_request(std::move(oracle)).is_ok());
  const auto want = run(*oracle_engine);
  EngineConfig c = oracle_engine->config();
  c.sparse_cfg.rerank_factor = 64;
  auto e = Engine::create(c);
  ASSERT_TRUE(e.is_ok()) << e.status().to_string();
  RequestInput rerank = req(prompt(170, 4), 10);
  rerank.sparse_rank_by = int8_t(sparse::RankBy::Rerank);
  ASSERT_TRUE((*e)->add_request(std::move(rerank)).is_ok());
  const auto got = run(**e);
  ASSERT_EQ(got.size(), 1u);
  ASSERT_EQ(want.size(), 1u);
  EXPECT_EQ(got.begin()->second.tokens, want.begin()->second.tokens);
  EXPECT_GT((*e)->stats().selector.lists_selected, 0);
  auto lagged = make_sparse(*path_, 0, 1);
  RequestInput bad = req(prompt(160, 1), 8);
  bad.sparse_rank_by = int8_t(sparse::RankBy::Rerank);
  EXPECT_EQ(lagged->add_request(std::move(bad)).status().code(), StatusCode::InvalidArgument);
}

TEST_F(EngineTest, RankByMassPerRequestEqualsTheEngineSetting) {
  // A request asking for rank_by mass on an engine ranking by score gets the tokens of an engine
  // ranking every request by mass, beside a score request in the same batch; with lag 1 too.
  for (int lag : {0, 1}) {
    auto by_score = make_sparse(*path_, 0, lag);
    RequestInput mass = req(prompt(170, 3), 10);
    mass.sparse_rank_by = int8_t(sparse::RankBy::Mass);
    ASSERT_TRUE(by_score->add_request(req(prompt(160, 2), 10)).is_ok());
    ASSERT_TRUE(by_score->add_request(std::move(mass)).is_ok());
    auto mixed = run(*by_score);

    EngineConfig c = by_score->config();
    c.sparse_cfg.rank_by = sparse::RankBy::Mass;
    auto by_mass = Engine::create(c);
    ASSERT_TRUE(by_mass.is_ok()) << by_mass.status().to_string();
    RequestInput score = req(prompt(160, 2), 10);
    score.sparse_rank_by = int8_t(sparse::RankBy::Score);
    ASSERT_TRUE((*by_mass)->add_request(std::move(score)).is_ok());
    ASSERT_TRUE((*by_mass)->add_request(req(prompt(170, 3), 10)).is_ok());
    auto same = run(**by_mass);
    ASSERT_EQ(mixed.size(), 2u);
    ASSERT_EQ(same.size(), 2u);
    if (lag == 0) {
      EXPECT_EQ(mixed[key(0, 0)].tokens, same[key(0, 0)].tokens);
      EXPECT_EQ(mixed[key(1, 0)].tokens, same[key(1, 0)].tokens);
    } else {
      // Which step's results a lagged list uses depends on when the workers finish (the machine's
      // load), so two lag-1 engines need not pick the same blocks: both must finish.
      for (auto* o : {&mixed, &same})
        for (int r = 0; r < 2; ++r) EXPECT_EQ((*o)[key(r, 0)].tokens.size(), 10u);
    }
    if (lag == 0) {
      const auto& st = (*by_mass)->stats().selector;
      EXPECT_LT(double(st.blocks_attended), 0.5 * double(st.blocks_total));
    }
  }
  // An unknown value is refused.
  auto e = make_sparse(*path_);
  RequestInput bad = req(prompt(160, 1), 4);
  bad.sparse_rank_by = 7;
  EXPECT_EQ(e->add_request(std::move(bad)).status().code(), StatusCode::InvalidArgument);
}

TEST_F(EngineTest, QuantDecodesSparselyAndAFullBudgetEqualsFullAttention) {
  // Quant keeps 2-bit codes per key: it needs head_dim % 16 == 0 (16 here; the suite's tiny model
  // has 8, which is refused with one line).
  testing::TinyModelSpec spec;
  spec.dim = 64;
  const std::string path = testing::write_tiny_model(spec, "engine_tiny_hd16");
  auto make_quant = [&](bool sparse, int budget, int lag) {
    return make_sparse(path, 0, lag, [&](EngineConfig& c) {
      c.sparse = sparse;
      c.sparse_cfg.budget_tokens = budget;
      c.sparse_cfg.representation = backend::RepKind::Quant;
      c.sparse_cfg.rank_by = sparse::RankBy::Mass;
    });
  };
  auto dense = make_quant(false, 32, 0);
  ASSERT_TRUE(dense->add_request(req(prompt(170, 4), 10)).is_ok());
  const std::vector<int32_t> ref = run(*dense)[key(0, 0)].tokens;
  ASSERT_EQ(ref.size(), 10u);
  for (int lag : {0, 1}) {
    auto all = make_quant(true, 4096, lag);  // a budget covering every block: full attention
    ASSERT_TRUE(all->add_request(req(prompt(170, 4), 10)).is_ok());
    EXPECT_EQ(run(*all)[key(0, 0)].tokens, ref) << "lag " << lag;
    auto e = make_quant(true, 32, lag);
    ASSERT_TRUE(e->add_request(req(prompt(170, 4), 10)).is_ok());
    auto out = run(*e);
    EXPECT_EQ(out[key(0, 0)].finish, FinishReason::Length) << out[key(0, 0)].error;
    EXPECT_EQ(out[key(0, 0)].tokens.size(), 10u);
    // Inline selection is sparse from the first step; with lag 1 when the workers' results
    // arrive depends on the machine's load (the selector's own tests wait for them).
    if (lag == 0) {
      const auto& st = e->stats().selector;
      EXPECT_GT(st.lists_selected, 0);
      EXPECT_LT(double(st.blocks_attended), 0.5 * double(st.blocks_total));
    }
  }
  EngineConfig bad;
  bad.model_path = *path_;
  bad.threads = 2;
  bad.block_size = 4;
  bad.kv_tokens = 4096;
  bad.sparse = true;
  bad.sparse_cfg.block_size = 4;
  bad.sparse_cfg.budget_tokens = 32;
  bad.sparse_cfg.representation = backend::RepKind::Quant;
  auto refused = Engine::create(bad);
  ASSERT_FALSE(refused.is_ok());
  EXPECT_NE(refused.status().message().find("head_dim % 16"), std::string::npos) << refused.status().message();
}

TEST_F(EngineTest, DenseLayersAttendEveryBlock) {
  auto sparse = make_sparse(*path_, 0);
  auto first_dense = make_sparse(*path_, 1);
  for (Engine* e : {sparse.get(), first_dense.get()}) {
    ASSERT_TRUE(e->add_request(req(prompt(160, 2), 6)).is_ok());
    run(*e);
  }
  const auto& a = sparse->stats().selector;
  const auto& b = first_dense->stats().selector;
  EXPECT_EQ(a.blocks_total, b.blocks_total);
  EXPECT_GT(b.blocks_attended, a.blocks_attended);
  EXPECT_GT(b.lists_dense, a.lists_dense);
}

TEST_F(EngineTest, LaggedSelectionNeverFallsBackToForcedBlocksOnly) {
  // With lag 1 the first decode step has no result yet: it attends every block (exact), never
  // the sink and local blocks alone. (When later results arrive depends on the worker threads,
  // so that part is shown by the selector's own tests, which wait for them.)
  auto e = make_sparse(*path_, 0, 1);
  ASSERT_TRUE(e->add_request(req(prompt(160, 3), 2)).is_ok());
  run(*e);
  const auto first = e->stats().selector;
  EXPECT_GT(first.lists_dense, 0);
  EXPECT_EQ(first.blocks_attended, first.blocks_total);
  EXPECT_EQ(first.lists_stale, 0);
  EXPECT_EQ(first.lists_async, 0);
}

TEST_F(EngineTest, PreemptedSparseSequencesResumeWithTheirSelectionState) {
  // GSA decode with the inline and the pipelined (lag 2) CPU selectors in a cache too small for
  // all requests at once: preempted samples leave the planner (release) before their blocks go
  // and come back as new sequences; every request finishes with its full length, selecting
  // again after it resumes. (Not with the tokens it has alone: a resumed sample's KV is
  // recomputed by a dense prefill of its prompt and generated tokens, whose KV the sparse
  // decode had computed, so later tokens may differ where a selection is near a tie. Dense
  // decode resumes bit for bit: RequestsThatDoNotFitTogether... above.)
  for (int lag : {0, 2}) {
    const auto small = [](EngineConfig& c) { c.kv_tokens = 4 * 100; c.prefill_chunk = 64; };
    std::vector<std::vector<int32_t>> alone;
    for (int i = 0; i < 3; ++i) {
      auto e = make_sparse(*path_, 0, lag);
      ASSERT_TRUE(e->add_request(req(prompt(120, 50 + i), 40)).is_ok());
      alone.push_back(run(*e)[key(0, 0)].tokens);
    }
    auto e = make_sparse(*path_, 0, lag, small);
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(e->add_request(req(prompt(120, 50 + i), 40)).is_ok());
    auto out = run(*e);
    for (int i = 0; i < 3; ++i) {
      EXPECT_EQ(out[key(i, 0)].finish, FinishReason::Length) << out[key(i, 0)].error;
      EXPECT_EQ(out[key(i, 0)].tokens.size(), 40u);
      // The first token comes from the prompt's prefill, before any preemption: the lone run's.
      EXPECT_EQ(out[key(i, 0)].tokens.front(), alone[size_t(i)].front()) << "request " << i;
    }
    EXPECT_GT(e->stats().preemptions, 0) << "lag " << lag;
    EXPECT_GT(e->stats().selector.lists_selected + e->stats().selector.lists_async, 0);
    expect_all_free(*e);
  }
}

TEST(EngineConfig, RejectsBadValues) {
  EngineConfig c;
  EXPECT_FALSE(c.validate().is_ok());  // no model
  c.model_path = "x.gguf";
  EXPECT_TRUE(c.validate().is_ok());
  c.block_size = 12;
  EXPECT_FALSE(c.validate().is_ok());
  c.block_size = 16;
  c.device = "tpu";
  EXPECT_FALSE(c.validate().is_ok());
  c.device = "cpu";
  c.prefill_chunk = 0;
  EXPECT_FALSE(c.validate().is_ok());
  c.prefill_chunk = 16;
  c.sparse = true;
  c.sparse_cfg.block_size = 32;
  EXPECT_FALSE(c.validate().is_ok());  // block sizes differ
}

TEST(EngineCreate, MissingOrCorruptModelIsAClearError) {
  EngineConfig c;
  c.model_path = "/nonexistent/model.gguf";
  auto e = Engine::create(c);
  ASSERT_FALSE(e.is_ok());
  EXPECT_NE(e.status().message().find("/nonexistent/model.gguf"), std::string::npos);
}

}  // namespace
}  // namespace gsa::engine

namespace gsa::engine {
namespace {

TEST_F(EngineTest, FileStoreLetsANewEngineReuseAPromptsKv) {
  // Engine A writes the full blocks of a 170-token prompt (4-token blocks) through to the store;
  // engine B, a fresh one on the same directory, finds them there: its prefix hit covers the
  // stored blocks, it recomputes only the rest, and it decodes A's tokens (dense and GSA, whose
  // representations of loaded blocks are recomputed). A corrupted block file ends B's match at
  // that block (the rest recomputed, the same tokens); bad flags are refused.
  for (bool sparse : {false, true}) {
    offload::testing::TempDir dir;
    auto with_store = [&](EngineConfig& c) { c.kv_offload = "file", c.kv_offload_dir = dir.path(); };
    auto make_engine = [&](bool store) {
      if (sparse) return make_sparse(*path_, 0, 0, [&](EngineConfig& c) { if (store) with_store(c); });
      EngineConfig c = make(4)->config();
      if (store) with_store(c);
      auto e = Engine::create(c);
      EXPECT_TRUE(e.is_ok()) << e.status().to_string();
      return std::move(e).value();
    };
    auto plain = make_engine(false);
    ASSERT_TRUE(plain->add_request(req(prompt(170, 9), 12)).is_ok());
    const auto want = run(*plain)[key(0, 0)].tokens;
    auto a = make_engine(true);
    ASSERT_TRUE(a->add_request(req(prompt(170, 9), 12)).is_ok());
    EXPECT_EQ(run(*a)[key(0, 0)].tokens, want) << "sparse " << sparse;
    EXPECT_GE(a->stats().store_blocks_stored, 42);  // every full block of the prompt at least
    EXPECT_EQ(a->stats().prefix_hit_tokens, 0);
    auto b = make_engine(true);
    ASSERT_TRUE(b->add_request(req(prompt(170, 9), 12)).is_ok());
    EXPECT_EQ(run(*b)[key(0, 0)].tokens, want) << "sparse " << sparse;
    EXPECT_EQ(b->stats().prefix_hit_tokens, 168);  // 42 blocks; the last token is recomputed
    EXPECT_EQ(b->stats().store_blocks_loaded, 42);
    EXPECT_EQ(b->stats().store_failures, 0);

    // Corrupt the payload of one stored block's file: the match stops before it.
    std::vector<std::filesystem::path> files;
    for (const auto& f : std::filesystem::recursive_directory_iterator(dir.path()))
      if (f.is_regular_file() && f.path().extension() == ".kvb") files.push_back(f.path());
    ASSERT_FALSE(files.empty());
    int corrupted = 0;
    for (const auto& f : files) {
      std::fstream io(f, std::ios::in | std::ios::out | std::ios::binary);
      const auto at = std::streamoff(std::filesystem::file_size(f) - 3);
      io.seekg(at);
      const char was = char(io.get());
      io.seekp(at);
      io.put(char(~was));
      corrupted += io.good();
    }
    auto c = make_engine(true);
    ASSERT_TRUE(c->add_request(req(prompt(170, 9), 12)).is_ok());
    EXPECT_EQ(run(*c)[key(0, 0)].tokens, want) << "sparse " << sparse;
    EXPECT_EQ(c->stats().prefix_hit_tokens, 0) << "every file was corrupted";
    EXPECT_GE(c->stats().store_failures, 1);
    EXPECT_EQ(corrupted, int(files.size()));
    // The unusable first block was dropped and written again by c: the next engine reuses it.
    auto d = make_engine(true);
    ASSERT_TRUE(d->add_request(req(prompt(170, 9), 12)).is_ok());
    EXPECT_EQ(run(*d)[key(0, 0)].tokens, want) << "sparse " << sparse;
    EXPECT_GE(d->stats().prefix_hit_tokens, 4);
  }
  EngineConfig bad = make(4)->config();
  bad.kv_offload = "file";
  EXPECT_EQ(Engine::create(bad).status().code(), StatusCode::InvalidArgument);  // no directory
  bad.kv_offload_dir = "/tmp";
  bad.prefix_cache = false;
  EXPECT_EQ(Engine::create(bad).status().code(), StatusCode::InvalidArgument);
  bad = make(4)->config();
  bad.kv_offload_dir = "/tmp";  // a directory without --kv-offload file
  EXPECT_EQ(Engine::create(bad).status().code(), StatusCode::InvalidArgument);
  bad.kv_offload = "host";
  EXPECT_EQ(Engine::create(bad).status().code(), StatusCode::InvalidArgument);
}

}  // namespace
}  // namespace gsa::engine
