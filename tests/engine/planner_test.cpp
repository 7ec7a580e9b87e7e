// The selection interface (sparse/plan.h) on the CPU backend: make_planner's plans carry the
// Selector's lists and sources unchanged, with the step and layer they are for; requests the
// planner cannot honour are refused; stats_since subtracts every counter.
#include "engine/planner.h"

#include <gtest/gtest.h>

#include <random>
#include <vector>

namespace gsa::engine {
namespace {

class PlannerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    pool_ = std::make_unique<ThreadPool>(2);
    b_ = backend::make_cpu_backend(pool_.get());
    h_.n_layers = 2;
    h_.n_heads = 4;
    h_.n_kv_heads = 2;
    h_.head_dim = 16;
    cfg_.block_size = 4;
    cfg_.budget_tokens = 16;  // 4 blocks: sink 1 + local 2 + 1 selected
    cfg_.min_context = 16;
    cfg_.select_every = 2;    // step 0 selects, step 1 reuses
    cfg_.scope = sparse::Scope::PerLayer;  // the checks read one list per sequence (tests set per_kv_head where they mean it)
    kv::KvConfig kc;
    kc.n_layers = h_.n_layers;
    kc.n_kv_heads = h_.n_kv_heads;
    kc.head_dim = h_.head_dim;
    kc.block_size = cfg_.block_size;
    kc.n_blocks = 32;
    kc.rep_bytes = backend::rep_bytes(cfg_.representation, h_.head_dim, cfg_.block_size, 0);
    auto kv = kv::KvCache::create(b_.get(), kc);
    ASSERT_TRUE(kv.is_ok()) << kv.status().to_string();
    kv_ = std::move(kv).value();
    // Random keys in every block, and the representations of all of them (every block is
    // treated as full; the lists only name the blocks of the tables below).
    std::vector<int32_t> all(size_t(kc.n_blocks));
    for (int32_t i = 0; i < kc.n_blocks; ++i) all[size_t(i)] = i;
    for (int l = 0; l < h_.n_layers; ++l) {
      backend::FillRandomParams fp;
      fp.dst = kv_.k(l);
      fp.n = int64_t(kv_.layer_block_bytes() / 4) * kc.n_blocks;
      fp.seed = 11 + uint64_t(l);
      ASSERT_TRUE(b_->fill_random(fp).is_ok());
      backend::RepUpdateParams rp;
      rp.k_cache = kv_.k(l);
      rp.reps = kv_.reps(l);
      rp.blocks = all.data();
      rp.n_update = kc.n_blocks;
      rp.n_blocks = kc.n_blocks;
      rp.n_kv_heads = kc.n_kv_heads;
      rp.head_dim = kc.head_dim;
      rp.block_size = kc.block_size;
      rp.kind = cfg_.representation;
      ASSERT_TRUE(b_->rep_update(rp).is_ok());
    }
    // Two sparse sequences and one below min_context, in scattered blocks.
    tables_ = {{3, 0, 7, 9, 12, 1, 20, 21, 5, 30}, {2, 4, 6, 8, 10, 11, 13, 14}, {15, 16}};
    const int32_t lens[] = {39, 30, 6};
    for (size_t s = 0; s < tables_.size(); ++s)
      seqs_.push_back({int64_t(100 + s), lens[s], tables_[s].data(), int32_t(tables_[s].size())});
    std::mt19937 rng(5);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    q_.resize(seqs_.size() * size_t(h_.n_heads * h_.head_dim));
    for (float& x : q_) x = u(rng);
  }

  std::unique_ptr<sparse::Selector> reference() {
    sparse::SelectorDims d{h_.n_layers, h_.n_heads, h_.n_kv_heads, h_.head_dim};
    auto r = sparse::Selector::create(cfg_, d, pool_.get());
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    return std::move(r).value();
  }

  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<backend::Backend> b_;
  model::HParams h_;
  sparse::SparseConfig cfg_;
  kv::KvCache kv_;
  std::vector<std::vector<int32_t>> tables_;
  std::vector<sparse::SeqInput> seqs_;
  std::vector<float> q_;
};

TEST_F(PlannerTest, CpuPlansAreTheSelectorsLists) {
  for (auto scope : {sparse::Scope::PerLayer, sparse::Scope::PerKvHead}) {
    cfg_.scope = scope;
    auto p = make_planner(cfg_, b_.get(), &kv_, h_, pool_.get(), 8);
    ASSERT_TRUE(p.is_ok()) << p.status().to_string();
    sparse::Planner& planner = **p;
    auto ref = reference();
    EXPECT_TRUE(planner.hash_matrix().empty());
    for (int step = 0; step < 3; ++step) {
      ASSERT_TRUE(planner.begin_step(seqs_, {}).is_ok());
      ASSERT_TRUE(ref->begin_step(seqs_).is_ok());
      for (int l = 0; l < h_.n_layers; ++l) {
        auto plan = planner.plan_layer(l, q_.data());
        ASSERT_TRUE(plan.is_ok()) << plan.status().to_string();
        auto want = ref->select_layer(l, q_.data(), kv_.reps(l), nullptr, kv_.k(l));
        ASSERT_TRUE(want.is_ok());
        EXPECT_EQ(plan->step, step);
        EXPECT_EQ(plan->layer, l);
        EXPECT_TRUE(plan->host);
        ASSERT_EQ(plan->n_lists, want->n_lists);
        EXPECT_EQ(plan->per_kv_head, want->per_kv_head);
        const int n = want->n_lists;
        EXPECT_EQ(std::vector<int32_t>(plan->indptr, plan->indptr + n + 1),
                  std::vector<int32_t>(want->indptr, want->indptr + n + 1));
        EXPECT_EQ(std::vector<int32_t>(plan->indices, plan->indices + want->indptr[n]),
                  std::vector<int32_t>(want->indices, want->indices + want->indptr[n]));
        EXPECT_EQ(std::vector<int32_t>(plan->last_len, plan->last_len + n),
                  std::vector<int32_t>(want->last_len, want->last_len + n));
        ASSERT_EQ(plan->source.size(), seqs_.size());
        for (int s = 0; s < int(seqs_.size()); ++s)
          EXPECT_EQ(plan->source[size_t(s)], ref->source(s, l)) << "step " << step << " seq " << s;
        // Below min_context: every block. Sparse: selected on even steps, reused on odd ones.
        EXPECT_EQ(plan->source[2], sparse::ListSource::Dense);
        EXPECT_EQ(plan->source[0], step % 2 ? sparse::ListSource::Reused : sparse::ListSource::Selected);
        EXPECT_LT(plan->indptr[1] - plan->indptr[0], int32_t(tables_[0].size()));
      }
    }
    const sparse::PlannerStats st = planner.stats();
    const sparse::SelectorStats want = ref->stats();
    EXPECT_EQ(st.lists.steps, 3);
    EXPECT_EQ(st.lists.lists_selected, want.lists_selected);
    EXPECT_EQ(st.lists.lists_reused, want.lists_reused);
    EXPECT_EQ(st.lists.lists_dense, want.lists_dense);
    EXPECT_EQ(st.lists.blocks_attended, want.blocks_attended);
    EXPECT_EQ(st.lists.blocks_total, want.blocks_total);
    EXPECT_EQ(st.host.mirrored_rows, 0);
    EXPECT_TRUE(planner.reps_written(tables_[0]).is_ok());
    sparse::SeqInput oracle;
    oracle.oracle = true;
    EXPECT_TRUE(planner.check_request(oracle).is_ok());  // lag 0: the oracle runs inline
    for (const auto& s : seqs_) planner.release(s.seq_id);
    planner.drain();
  }
}

TEST_F(PlannerTest, LaggedCpuPlannerStartsDenseAndRefusesTheOracle) {
  cfg_.selector = sparse::SelectorKind::Cpu;
  cfg_.lag = 1;
  cfg_.select_every = 1;
  auto p = make_planner(cfg_, b_.get(), &kv_, h_, pool_.get(), 8);
  ASSERT_TRUE(p.is_ok()) << p.status().to_string();
  sparse::Planner& planner = **p;
  sparse::SeqInput oracle;
  oracle.oracle = true;
  EXPECT_EQ(planner.check_request(oracle).code(), StatusCode::InvalidArgument);
  EXPECT_TRUE(planner.check_request(sparse::SeqInput{}).is_ok());
  // The first step has no finished selection: every list holds every block.
  ASSERT_TRUE(planner.begin_step(seqs_, {}).is_ok());
  for (int l = 0; l < h_.n_layers; ++l) {
    auto plan = planner.plan_layer(l, q_.data());
    ASSERT_TRUE(plan.is_ok()) << plan.status().to_string();
    EXPECT_EQ(plan->step, 0);
    for (size_t s = 0; s < seqs_.size(); ++s) {
      EXPECT_EQ(plan->source[s], sparse::ListSource::Dense);
      EXPECT_EQ(plan->indptr[s + 1] - plan->indptr[s], int32_t(tables_[s].size()));
    }
  }
  // Released sequences have no job left that reads their blocks.
  for (const auto& s : seqs_) planner.release(s.seq_id);
  planner.drain();
  const sparse::PlannerStats st = planner.stats();
  EXPECT_EQ(st.lists.steps, 1);
  EXPECT_EQ(st.lists.blocks_attended, st.lists.blocks_total);
}

TEST_F(PlannerTest, BadConfigsAreRefusedByTheFactory) {
  cfg_.representation = backend::RepKind::Hash;  // needs head_dim % 32 == 0
  auto p = make_planner(cfg_, b_.get(), &kv_, h_, pool_.get(), 8);
  ASSERT_FALSE(p.is_ok());
  EXPECT_NE(p.status().message().find("head_dim % 32"), std::string::npos) << p.status().message();
}

TEST(PlannerStats, StatsSinceSubtractsEveryCounter) {
  sparse::PlannerStats base, now;
  base.lists = {1, 2, 3, 4, 5, 6, 7, 8};
  now.lists = {11, 22, 33, 44, 55, 66, 77, 88};
  base.select_seconds = 0.5;
  now.select_seconds = 2.0;
  base.host = {1, 2, 3, 4, 5, 6};
  now.host = {2, 4, 6, 8, 10, 12};
  const sparse::PlannerStats d = sparse::stats_since(now, base);
  EXPECT_EQ(d.lists.steps, 10);
  EXPECT_EQ(d.lists.lists_dense, 20);
  EXPECT_EQ(d.lists.lists_selected, 30);
  EXPECT_EQ(d.lists.lists_reused, 40);
  EXPECT_EQ(d.lists.lists_async, 50);
  EXPECT_EQ(d.lists.lists_stale, 60);
  EXPECT_EQ(d.lists.blocks_attended, 70);
  EXPECT_EQ(d.lists.blocks_total, 80);
  EXPECT_DOUBLE_EQ(d.select_seconds, 1.5);
  EXPECT_DOUBLE_EQ(d.host.plan_seconds, 1);
  EXPECT_DOUBLE_EQ(d.host.wait_seconds, 2);
  EXPECT_DOUBLE_EQ(d.host.pump_seconds, 3);
  EXPECT_EQ(d.host.layers_submitted, 4);
  EXPECT_EQ(d.host.layers_dropped, 5);
  EXPECT_EQ(d.host.mirrored_rows, 6);
}

}  // namespace
}  // namespace gsa::engine
