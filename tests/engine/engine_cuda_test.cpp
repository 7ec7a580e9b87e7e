// GSA on the CUDA backend with the CPU selector (selector=cpu): inline host selection picks
// the same blocks as selection on the device, the pipelined selector (lag >= 1) feeds later
// steps, and sequences finishing while their queries are in flight free their blocks safely.
// Skipped where no CUDA device is present.
#include <gtest/gtest.h>

#include <map>

#include "backend/backend.h"
#include "engine/engine.h"
#include "tiny_model.h"

namespace gsa::engine {
namespace {

class EngineCudaTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    testing::TinyModelSpec spec;
    spec.n_layers = 3;
    spec.dim = 256;       // head_dim 64: a shape the CUDA attention kernels take
    spec.n_heads = 4;
    spec.n_kv_heads = 2;
    spec.ffn_dim = 384;
    spec.ctx_len = 4096;
    spec.seed = 7;
    path_ = new std::string(testing::write_tiny_model(spec, "engine_cuda_tiny"));
  }
  static void TearDownTestSuite() { delete path_; }

  void SetUp() override {
    if (!backend::cuda_available()) GTEST_SKIP() << "no CUDA device";
  }

  EngineConfig config(bool sparse) {
    EngineConfig c;
    c.model_path = *path_;
    c.device = "cuda";
    c.threads = 2;
    c.block_size = 16;
    c.kv_tokens = 16384;
    c.max_batch = 4;
    c.sparse = sparse;
    c.sparse_cfg.block_size = 16;
    c.sparse_cfg.budget_tokens = 128;  // 8 of ~40 blocks
    c.sparse_cfg.min_context = 256;
    c.sparse_cfg.cpu_workers = 2;
    return c;
  }

  std::vector<int32_t> prompt(int n, int salt) {
    std::vector<int32_t> p;
    for (int i = 0; i < n; ++i) p.push_back((i * 37 + salt * 11 + (i / 7) * 3 + 5) % 256);
    return p;
  }

  // Runs the prompts (greedy, max_tokens each) to completion; tokens by request id.
  std::map<int64_t, std::vector<int32_t>> run(const EngineConfig& c,
                                              const std::vector<std::vector<int32_t>>& prompts,
                                              const std::vector<int>& max_tokens,
                                              EngineStats* stats = nullptr) {
    std::map<int64_t, std::vector<int32_t>> out;
    auto e = Engine::create(c);
    EXPECT_TRUE(e.is_ok()) << e.status().to_string();
    if (!e.is_ok()) return out;
    for (size_t i = 0; i < prompts.size(); ++i) {
      RequestInput in;
      in.prompt = prompts[i];
      in.sampling.max_tokens = max_tokens[i];
      in.sampling.ignore_eos = true;
      auto id = (*e)->add_request(std::move(in));
      EXPECT_TRUE(id.is_ok()) << id.status().to_string();
    }
    std::vector<TokenEvent> ev;
    for (int guard = 0; (*e)->has_work() && guard < 10000; ++guard) {
      ev.clear();
      Status st = (*e)->step(&ev);
      EXPECT_TRUE(st.is_ok()) << st.to_string();
      if (!st.is_ok()) break;
      for (const auto& x : ev) {
        EXPECT_NE(x.finish, FinishReason::Error) << x.error;
        if (x.token >= 0) out[x.request_id].push_back(x.token);
      }
    }
    if (stats) *stats = (*e)->stats();
    return out;
  }

  using Outputs = std::map<int64_t, std::vector<int32_t>>;
  // The same requests decoded with dev's device selection and with inline host selection (the
  // CPU selector at lag 0, on the mirrored tables): each run's tokens into a/b, stats into sd/sh.
  void run_device_and_host(const EngineConfig& dev, const std::vector<std::vector<int32_t>>& prompts,
                                  const std::vector<int>& max_tokens, Outputs* a, Outputs* b,
                                  EngineStats* sd, EngineStats* sh) {
    EngineConfig host = dev;
    host.sparse_cfg.selector = sparse::SelectorKind::Cpu;
    host.sparse_cfg.lag = 0;
    *a = run(dev, prompts, max_tokens, sd);
    *b = run(host, prompts, max_tokens, sh);
  }

  static std::string* path_;
};
std::string* EngineCudaTest::path_ = nullptr;

TEST_F(EngineCudaTest, InlineHostSelectionMatchesDeviceSelection) {
  const std::vector<std::vector<int32_t>> prompts = {prompt(600, 1), prompt(650, 2), prompt(700, 3)};
  const std::vector<int> max_tokens = {24, 24, 24};
  EngineConfig dev = config(true);
  EngineConfig host = config(true);
  host.sparse_cfg.selector = sparse::SelectorKind::Cpu;
  host.sparse_cfg.lag = 0;
  EngineStats sd, sh;
  const auto a = run(dev, prompts, max_tokens, &sd);
  const auto b = run(host, prompts, max_tokens, &sh);
  ASSERT_EQ(a.size(), 3u);
  EXPECT_EQ(a, b);
  // Sparse for real: every list of every step selected from that step's query, a minority of
  // the blocks attended.
  EXPECT_GT(sh.selector.lists_selected, 0);
  EXPECT_EQ(sh.selector.lists_dense, 0);
  EXPECT_LT(double(sh.selector.blocks_attended), 0.5 * double(sh.selector.blocks_total));
  EXPECT_EQ(sh.selector.blocks_attended, sd.selector.blocks_attended);
  EXPECT_GT(sh.host_select.mirrored_rows, 0);
}

TEST_F(EngineCudaTest, SubBlockRepresentationsSameListsOnDeviceAndHost) {
  // Sub-block minmax (runs of 4 tokens in 16-token blocks), written by the fused decode write and
  // by prefill: device selection and inline host selection (on the mirrored tables) agree.
  const std::vector<std::vector<int32_t>> prompts = {prompt(600, 8), prompt(650, 9)};
  const std::vector<int> max_tokens = {20, 20};
  EngineConfig dev = config(true);
  dev.sparse_cfg.representation = backend::RepKind::MinMax;  // sub-blocks: mean or minmax only
  dev.sparse_cfg.sub_block = 4;
  Outputs a, b;
  EngineStats sd, sh;
  run_device_and_host(dev, prompts, max_tokens, &a, &b, &sd, &sh);
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a, b);
  EXPECT_EQ(sh.selector.blocks_attended, sd.selector.blocks_attended);
  EXPECT_LT(double(sh.selector.blocks_attended), 0.5 * double(sh.selector.blocks_total));
}

TEST_F(EngineCudaTest, RankByMassSameListsOnDeviceAndHost) {
  // Ranking by estimated mass, per_layer with group-max queries and sub-blocks: the device
  // selection (f32, __expf) and the inline host selection (double) on the mirrored tables give
  // the same tokens and attend the same number of blocks.
  const std::vector<std::vector<int32_t>> prompts = {prompt(600, 10), prompt(650, 11)};
  const std::vector<int> max_tokens = {20, 20};
  EngineConfig dev = config(true);
  dev.sparse_cfg.rank_by = sparse::RankBy::Mass;
  dev.sparse_cfg.query = backend::QueryMode::GroupMax;
  dev.sparse_cfg.representation = backend::RepKind::MinMax;  // sub-blocks: mean or minmax only
  dev.sparse_cfg.sub_block = 4;
  Outputs a, b;
  EngineStats sd, sh;
  run_device_and_host(dev, prompts, max_tokens, &a, &b, &sd, &sh);
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a, b);
  EXPECT_EQ(sh.selector.blocks_attended, sd.selector.blocks_attended);
  EXPECT_LT(double(sh.selector.blocks_attended), 0.5 * double(sh.selector.blocks_total));
}

TEST_F(EngineCudaTest, OracleAndDenseLayersOnTheDevice) {
  // Oracle selection on the GPU with a budget covering every block equals full attention; with
  // the small budget it runs sparse, and dense_layers raises the attended share.
  const std::vector<std::vector<int32_t>> prompts = {prompt(600, 6), prompt(640, 7)};
  const std::vector<int> max_tokens = {16, 16};
  EngineConfig oracle = config(true);
  oracle.sparse_cfg.selection = sparse::Selection::Oracle;
  EngineConfig wide = oracle;
  wide.sparse_cfg.budget_tokens = 4096;
  EXPECT_EQ(run(wide, prompts, max_tokens), run(config(false), prompts, max_tokens));
  EngineStats so, sd;
  const auto a = run(oracle, prompts, max_tokens, &so);
  ASSERT_EQ(a.size(), 2u);
  EXPECT_LT(double(so.selector.blocks_attended), 0.5 * double(so.selector.blocks_total));
  EngineConfig dense1 = oracle;
  dense1.sparse_cfg.dense_layers = 1;
  run(dense1, prompts, max_tokens, &sd);
  EXPECT_GT(sd.selector.blocks_attended, so.selector.blocks_attended);
  // rank_by rerank with every block a candidate re-ranks them all by the same true masses.
  EngineConfig rerank = config(true);
  rerank.sparse_cfg.rank_by = sparse::RankBy::Rerank;
  rerank.sparse_cfg.rerank_factor = 64;
  EXPECT_EQ(run(rerank, prompts, max_tokens), a);
  rerank.sparse_cfg.rerank_factor = 2;
  EngineStats sr;
  EXPECT_EQ(run(rerank, prompts, max_tokens, &sr).size(), 2u);
  EXPECT_EQ(sr.selector.blocks_attended, so.selector.blocks_attended);
}

TEST_F(EngineCudaTest, HashRepresentationIsWrittenAndScoredOnTheDevice) {
  // The Hash representation's projection matrix must be in device memory for the rep writes of
  // prefill and decode: the device selection and the inline host selection (on the mirrored
  // tables) pick the same lists, and a budget over every block gives full attention's tokens.
  const std::vector<std::vector<int32_t>> prompts = {prompt(600, 12), prompt(660, 13)};
  const std::vector<int> max_tokens = {20, 20};
  EngineConfig dev = config(true);
  dev.sparse_cfg.representation = backend::RepKind::Hash;
  Outputs a, b;
  EngineStats sd, sh;
  run_device_and_host(dev, prompts, max_tokens, &a, &b, &sd, &sh);
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a, b);
  EXPECT_EQ(sh.selector.blocks_attended, sd.selector.blocks_attended);
  EXPECT_LT(double(sd.selector.blocks_attended), 0.5 * double(sd.selector.blocks_total));
  EngineConfig wide = dev;
  wide.sparse_cfg.budget_tokens = 4096;
  EXPECT_EQ(run(wide, prompts, max_tokens), run(config(false), prompts, max_tokens));
}

TEST_F(EngineCudaTest, PipelinedSelectionWithAFullBudgetEqualsFullAttention) {
  // A budget above every context: each asynchronous list holds every block, so the pipeline's
  // lists (results of earlier steps extended with the blocks added since) must give exactly
  // full attention's tokens.
  const std::vector<std::vector<int32_t>> prompts = {prompt(500, 4), prompt(530, 5)};
  const std::vector<int> max_tokens = {40, 40};
  EngineConfig host = config(true);
  host.sparse_cfg.selector = sparse::SelectorKind::Cpu;
  host.sparse_cfg.lag = 1;
  host.sparse_cfg.budget_tokens = 4096;
  EngineStats sh;
  const auto full = run(config(false), prompts, max_tokens);
  const auto pipe = run(host, prompts, max_tokens, &sh);
  ASSERT_EQ(full.size(), 2u);
  EXPECT_EQ(full, pipe);
  EXPECT_GT(sh.selector.lists_async + sh.selector.lists_stale, 0);
  EXPECT_GT(sh.host_select.layers_submitted, 0);
}

TEST_F(EngineCudaTest, PipelinedSelectionSurvivesSequencesFinishingMidFlight) {
  // Five requests through a batch of 4 with a KV cache that forces block reuse: sequences end
  // while their queries are in flight, their blocks go to the next request.
  std::vector<std::vector<int32_t>> prompts;
  std::vector<int> max_tokens;
  for (int i = 0; i < 5; ++i) {
    prompts.push_back(prompt(400 + 60 * i, 10 + i));
    max_tokens.push_back(8 + 9 * i);
  }
  EngineConfig host = config(true);
  host.sparse_cfg.selector = sparse::SelectorKind::Cpu;
  host.sparse_cfg.lag = 2;
  host.kv_tokens = 2400;
  host.prefix_cache = false;
  EngineStats sh;
  const auto out = run(host, prompts, max_tokens, &sh);
  ASSERT_EQ(out.size(), 5u);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(int(out.at(i).size()), max_tokens[size_t(i)]);
  EXPECT_GT(sh.selector.lists_async, 0);
  EXPECT_GT(sh.host_select.layers_submitted, 0);
}

}  // namespace
}  // namespace gsa::engine
