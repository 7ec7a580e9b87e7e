// Selector: min_context gating (dense lists), inline selection equal to the kernel's, reuse
// with select_every (extended by new blocks, the local/partial block always present, nothing
// past the end), per_kv_head layout, the lag >= 1 path through the asynchronous selector
// (Dense until a result exists, then Async, Stale when older than t - lag), and input errors.
#include <gtest/gtest.h>

#include <thread>

#include "backend/cpu/cpu_kernels.h"
#include "sparse/selector.h"
#include "sparse_test_util.h"

namespace gsa::sparse::test {
namespace {

constexpr int kHeads = 4, kKv = 2, kHd = 32, kBs = 16, kLayers = 2;

// A sequence growing one token per step in a cache with room to grow; reps for every block.
struct World {
  Batch batch;                       // capacity: seq_len grows inside the allocated blocks
  std::vector<std::vector<uint8_t>> reps;  // [layer] -> [n_phys, kKv, rep_bytes]
  std::vector<float> q;              // [n_seqs, kHeads, kHd]
  std::mt19937 rng;

  World(uint32_t seed, std::vector<int32_t> capacity_tokens, backend::RepKind kind,
        const std::vector<float>& hash_w)
      : rng(seed) {
    batch = make_batch(rng, capacity_tokens, kKv, kHd, kBs);
    std::vector<int32_t> all(size_t(batch.n_phys));
    std::iota(all.begin(), all.end(), 0);
    for (int l = 0; l < kLayers; ++l) {
      reps.emplace_back(size_t(batch.n_phys) * kKv * backend::rep_bytes(kind, kHd, kBs));
      std::vector<float> k = random_vec(rng, batch.k_cache.size());
      backend::RepUpdateParams u;
      u.k_cache = k.data();
      u.reps = reps.back().data();
      u.blocks = all.data();
      u.n_update = batch.n_phys;
      u.n_kv_heads = kKv;
      u.head_dim = kHd;
      u.block_size = kBs;
      u.kind = kind;
      u.hash_w = hash_w.empty() ? nullptr : hash_w.data();
      EXPECT_TRUE(cpu::rep_update(u, nullptr).is_ok());
    }
    new_queries();
  }
  void new_queries() { q = random_vec(rng, size_t(batch.n_seqs()) * kHeads * kHd); }
  std::vector<SeqInput> inputs(const std::vector<int32_t>& lens) const {
    std::vector<SeqInput> v;
    for (int s = 0; s < batch.n_seqs(); ++s)
      v.push_back({100 + s, lens[size_t(s)], batch.table(s), (lens[size_t(s)] + kBs - 1) / kBs});
    return v;
  }
};

SparseConfig small_config() {
  SparseConfig c;
  c.block_size = kBs;
  c.budget_tokens = 6 * kBs;
  c.min_context = 20 * kBs;
  c.scope = Scope::PerLayer;  // the checks below read one list per sequence
  return c;
}

std::vector<int> list_logical(const BlockLists& bl, int i, const SeqInput& in) {
  return to_logical(bl.indices + bl.indptr[i], bl.indptr[i + 1] - bl.indptr[i], in.block_table,
                    in.n_blocks);
}

// The kernel's own selection for one sequence, as logical indices.
std::vector<int> direct_select(const SparseConfig& c, const World& w, int s, int layer,
                               const SeqInput& in) {
  const int size = budget_blocks(c, in.n_blocks);
  std::vector<int32_t> bt_indptr = {0, in.n_blocks}, out_indptr = {0, size};
  std::vector<int32_t> out(static_cast<size_t>(size));
  int32_t last_len = 0;
  backend::BlockSelectParams p;
  p.q = w.q.data() + size_t(s) * kHeads * kHd;
  p.reps = w.reps[size_t(layer)].data();
  p.block_table_indptr = bt_indptr.data();
  p.block_table = in.block_table;
  p.seq_len = &in.seq_len;
  p.out_indptr = out_indptr.data();
  p.out_indices = out.data();
  p.out_last_len = &last_len;
  p.n_seqs = 1;
  p.n_heads = kHeads;
  p.n_kv_heads = kKv;
  p.head_dim = kHd;
  p.block_size = kBs;
  p.sink_blocks = c.sink_blocks;
  p.local_blocks = c.local_blocks;
  p.kind = c.representation;
  EXPECT_TRUE(cpu::block_select(p, nullptr).is_ok());
  return to_logical(out.data(), size, in.block_table, in.n_blocks);
}

TEST(Selector, ShortSequencesDecodeDenselyLongOnesSparsely) {
  SparseConfig c = small_config();
  World w(1, {19 * kBs, 30 * kBs}, c.representation, {});
  ThreadPool pool(2);
  auto sel = Selector::create(c, {kLayers, kHeads, kKv, kHd}, &pool);
  ASSERT_TRUE(sel.is_ok()) << sel.status().to_string();
  std::vector<SeqInput> in = w.inputs({19 * kBs - 3, 30 * kBs - 5});
  ASSERT_TRUE((*sel)->begin_step(in).is_ok());
  EXPECT_FALSE((*sel)->is_sparse(0));
  EXPECT_TRUE((*sel)->is_sparse(1));
  for (int layer = 0; layer < kLayers; ++layer) {
    auto bl = (*sel)->select_layer(layer, w.q.data(), w.reps[size_t(layer)].data());
    ASSERT_TRUE(bl.is_ok()) << bl.status().to_string();
    ASSERT_EQ(bl->n_lists, 2);
    EXPECT_EQ((*sel)->source(0, layer), ListSource::Dense);
    EXPECT_EQ((*sel)->source(1, layer), ListSource::Selected);
    std::vector<int> dense = list_logical(*bl, 0, in[0]);
    ASSERT_EQ(int(dense.size()), 19);
    for (int j = 0; j < 19; ++j) EXPECT_EQ(dense[size_t(j)], j);
    EXPECT_EQ(bl->last_len[0], kBs - 3);
    EXPECT_EQ(list_logical(*bl, 1, in[1]), direct_select(c, w, 1, layer, in[1]));
    EXPECT_EQ(bl->last_len[1], kBs - 5);
  }
  EXPECT_EQ((*sel)->stats().lists_dense, 2);
  EXPECT_EQ((*sel)->stats().lists_selected, 2);
}

TEST(Selector, SelectEveryReusesAndExtendsTheSelection) {
  SparseConfig c = small_config();
  c.select_every = 3;
  World w(2, {40 * kBs}, c.representation, {});
  auto sel = Selector::create(c, {kLayers, kHeads, kKv, kHd}, nullptr);
  ASSERT_TRUE(sel.is_ok());
  int32_t len = 25 * kBs - 1;  // the next token fills block 24, the one after opens block 25
  std::vector<int> first;
  for (int step = 0; step < 7; ++step, ++len) {
    std::vector<SeqInput> in = w.inputs({len});
    ASSERT_TRUE((*sel)->begin_step(in).is_ok());
    auto bl = (*sel)->select_layer(0, w.q.data(), w.reps[0].data());
    ASSERT_TRUE(bl.is_ok());
    std::vector<int> lg = list_logical(*bl, 0, in[0]);
    const int n = in[0].n_blocks;
    ASSERT_TRUE(std::is_sorted(lg.begin(), lg.end()));
    ASSERT_LT(lg.back(), n);
    EXPECT_EQ(lg.back(), n - 1) << "the last (partial) block is always attended";
    EXPECT_EQ(bl->last_len[0], len - (n - 1) * kBs);
    if (step % 3 == 0) {
      EXPECT_EQ((*sel)->source(0, 0), ListSource::Selected);
      EXPECT_EQ(lg, direct_select(c, w, 0, 0, in[0]));
      first = lg;
    } else {
      EXPECT_EQ((*sel)->source(0, 0), ListSource::Reused);
      std::vector<int> expect = first;
      const int first_n = first.back() + 1;
      for (int j = first_n; j < n; ++j) expect.push_back(j);
      EXPECT_EQ(lg, expect) << "step " << step;
    }
    w.new_queries();
  }
  // Step 2 crossed into block 25: the reused list grew by exactly that block.
  EXPECT_EQ((*sel)->stats().lists_reused, 4);
}

TEST(Selector, PerKvHeadGivesOneListPerHead) {
  SparseConfig c = small_config();
  c.scope = Scope::PerKvHead;
  World w(3, {24 * kBs, 10 * kBs}, c.representation, {});
  auto sel = Selector::create(c, {kLayers, kHeads, kKv, kHd}, nullptr);
  ASSERT_TRUE(sel.is_ok());
  std::vector<SeqInput> in = w.inputs({24 * kBs, 10 * kBs});
  ASSERT_TRUE((*sel)->begin_step(in).is_ok());
  auto bl = (*sel)->select_layer(1, w.q.data(), w.reps[1].data());
  ASSERT_TRUE(bl.is_ok());
  EXPECT_TRUE(bl->per_kv_head);
  ASSERT_EQ(bl->n_lists, 4);
  EXPECT_EQ(bl->indptr[1] - bl->indptr[0], 6);
  EXPECT_EQ(bl->indptr[2] - bl->indptr[1], 6);
  EXPECT_EQ(bl->indptr[3] - bl->indptr[2], 10);  // dense, one copy per kv head
  EXPECT_EQ(bl->indptr[4] - bl->indptr[3], 10);
  EXPECT_EQ(bl->last_len[0], kBs);
}

TEST(Selector, HashRepresentationEndToEnd) {
  SparseConfig c = small_config();
  c.representation = backend::RepKind::Hash;
  auto sel = Selector::create(c, {kLayers, kHeads, kKv, kHd}, nullptr);
  ASSERT_TRUE(sel.is_ok());
  ASSERT_EQ((*sel)->hash_matrix().size(), size_t(kHd) * kHd);
  World w(4, {30 * kBs}, c.representation, (*sel)->hash_matrix());
  std::vector<SeqInput> in = w.inputs({30 * kBs - 2});
  ASSERT_TRUE((*sel)->begin_step(in).is_ok());
  auto bl = (*sel)->select_layer(0, w.q.data(), w.reps[0].data());
  ASSERT_TRUE(bl.is_ok());
  EXPECT_EQ(bl->indptr[1], 6);
}

TEST(Selector, LagUsesTheNewestFinishedResult) {
  SparseConfig c = small_config();
  c.selector = SelectorKind::Cpu;
  c.lag = 1;
  c.select_every = 3;
  World w(5, {40 * kBs}, c.representation, {});
  auto sel = Selector::create(c, {kLayers, kHeads, kKv, kHd}, nullptr);
  ASSERT_TRUE(sel.is_ok()) << sel.status().to_string();
  int32_t len = 30 * kBs - 2;
  std::vector<int> step0;
  const ListSource expect[] = {ListSource::Dense, ListSource::Async, ListSource::Stale,
                               ListSource::Stale, ListSource::Async};
  for (int step = 0; step < 5; ++step, ++len) {
    std::vector<SeqInput> in = w.inputs({len});
    ASSERT_TRUE((*sel)->begin_step(in).is_ok());
    for (int layer = 0; layer < kLayers; ++layer) {
      auto bl = (*sel)->select_layer(layer, w.q.data(), w.reps[size_t(layer)].data());
      ASSERT_TRUE(bl.is_ok()) << bl.status().to_string();
      EXPECT_EQ((*sel)->source(0, layer), expect[step]) << "step " << step;
      std::vector<int> lg = list_logical(*bl, 0, in[0]);
      EXPECT_EQ(lg.back(), in[0].n_blocks - 1);
      if (step == 0) {
        EXPECT_EQ(int(lg.size()), in[0].n_blocks);  // nothing finished yet: dense
        if (layer == 0) step0 = direct_select(c, w, 0, 0, in[0]);
      } else if (step < 3 && layer == 0) {
        std::vector<int> expect_list = step0;
        for (int j = step0.back() + 1; j < in[0].n_blocks; ++j) expect_list.push_back(j);
        EXPECT_EQ(lg, expect_list);  // the step-0 query's selection, extended
      }
    }
    (*sel)->drain();  // makes the test deterministic: every submitted job has finished
    w.new_queries();
  }
  (*sel)->release(100);
}

TEST(Selector, DeferredJobsSubmittedFromAnotherThreadGiveTheSameLists) {
  // The GPU path: lists are made before the queries reach the host, and the jobs are submitted
  // later by another thread. Two sequences, two layers: the lists of the step after must equal
  // the kernel's selection for the deferred queries, extended with the blocks added since.
  SparseConfig c = small_config();
  c.selector = SelectorKind::Cpu;
  c.lag = 1;
  World w(9, {40 * kBs, 36 * kBs}, c.representation, {});
  auto sel = Selector::create(c, {kLayers, kHeads, kKv, kHd}, nullptr);
  ASSERT_TRUE(sel.is_ok()) << sel.status().to_string();
  std::vector<int32_t> lens = {30 * kBs - 1, 28 * kBs + 3};
  std::vector<SeqInput> in = w.inputs(lens);
  ASSERT_TRUE((*sel)->begin_step(in).is_ok());
  std::vector<DeferredJobs> jobs(kLayers);
  std::vector<std::vector<int>> expect(size_t(kLayers) * 2);
  for (int layer = 0; layer < kLayers; ++layer) {
    auto bl = (*sel)->select_layer(layer, nullptr, nullptr, &jobs[size_t(layer)]);
    ASSERT_TRUE(bl.is_ok()) << bl.status().to_string();
    EXPECT_EQ((*sel)->source(0, layer), ListSource::Dense);
    ASSERT_EQ(jobs[size_t(layer)].rows.size(), 2u);
    for (int s = 0; s < 2; ++s) expect[size_t(layer) * 2 + s] = direct_select(c, w, s, layer, in[size_t(s)]);
  }
  // Deferred jobs keep their own copies of the block tables.
  std::vector<float> q = w.q;
  std::thread pump([&] {
    for (int layer = 0; layer < kLayers; ++layer)
      EXPECT_TRUE((*sel)->submit_deferred(jobs[size_t(layer)], q.data(), w.reps[size_t(layer)].data()).is_ok());
  });
  pump.join();
  (*sel)->drain();
  for (int& n : lens) n += 1;
  in = w.inputs(lens);
  ASSERT_TRUE((*sel)->begin_step(in).is_ok());
  for (int layer = 0; layer < kLayers; ++layer) {
    auto bl = (*sel)->select_layer(layer, w.q.data(), w.reps[size_t(layer)].data());
    ASSERT_TRUE(bl.is_ok());
    for (int s = 0; s < 2; ++s) {
      EXPECT_EQ((*sel)->source(s, layer), ListSource::Async);
      std::vector<int> want = expect[size_t(layer) * 2 + s];
      for (int j = want.back() + 1; j < in[size_t(s)].n_blocks; ++j) want.push_back(j);
      EXPECT_EQ(list_logical(*bl, s, in[size_t(s)]), want) << "layer " << layer << " seq " << s;
    }
  }
  (*sel)->drain();
  // Deferral needs lag >= 1.
  SparseConfig c0 = small_config();
  auto sel0 = Selector::create(c0, {kLayers, kHeads, kKv, kHd}, nullptr);
  ASSERT_TRUE(sel0.is_ok());
  ASSERT_TRUE((*sel0)->begin_step(in).is_ok());
  DeferredJobs d;
  EXPECT_FALSE((*sel0)->select_layer(0, nullptr, nullptr, &d).is_ok());
}

TEST(Selector, ReleaseForgetsTheSequence) {
  SparseConfig c = small_config();
  c.select_every = 4;
  World w(6, {30 * kBs}, c.representation, {});
  auto sel = Selector::create(c, {kLayers, kHeads, kKv, kHd}, nullptr);
  ASSERT_TRUE(sel.is_ok());
  std::vector<SeqInput> in = w.inputs({25 * kBs});
  for (int step = 0; step < 2; ++step) {
    ASSERT_TRUE((*sel)->begin_step(in).is_ok());
    ASSERT_TRUE((*sel)->select_layer(0, w.q.data(), w.reps[0].data()).is_ok());
  }
  EXPECT_EQ((*sel)->source(0, 0), ListSource::Reused);
  (*sel)->release(100);
  ASSERT_TRUE((*sel)->begin_step(in).is_ok());
  ASSERT_TRUE((*sel)->select_layer(0, w.q.data(), w.reps[0].data()).is_ok());
  EXPECT_EQ((*sel)->source(0, 0), ListSource::Selected);
}

TEST(Selector, RejectsBadInput) {
  SparseConfig c = small_config();
  EXPECT_FALSE(Selector::create(c, {0, kHeads, kKv, kHd}, nullptr).is_ok());
  EXPECT_FALSE(Selector::create(c, {kLayers, 3, kKv, kHd}, nullptr).is_ok());
  SparseConfig bad = c;
  bad.select_every = 0;
  EXPECT_FALSE(Selector::create(bad, {kLayers, kHeads, kKv, kHd}, nullptr).is_ok());
  bad = c;
  bad.representation = backend::RepKind::Hash;
  EXPECT_FALSE(Selector::create(bad, {kLayers, kHeads, kKv, 48}, nullptr).is_ok());

  World w(7, {30 * kBs}, c.representation, {});
  auto sel = Selector::create(c, {kLayers, kHeads, kKv, kHd}, nullptr);
  ASSERT_TRUE(sel.is_ok());
  EXPECT_FALSE((*sel)->select_layer(0, w.q.data(), w.reps[0].data()).is_ok());  // no step yet
  std::vector<SeqInput> in = w.inputs({25 * kBs});
  std::vector<SeqInput> wrong = in;
  wrong[0].n_blocks = 24;
  EXPECT_EQ((*sel)->begin_step(wrong).code(), StatusCode::InvalidArgument);
  std::vector<SeqInput> twice = {in[0], in[0]};
  EXPECT_EQ((*sel)->begin_step(twice).code(), StatusCode::InvalidArgument);
  ASSERT_TRUE((*sel)->begin_step(in).is_ok());
  EXPECT_FALSE((*sel)->select_layer(kLayers, w.q.data(), w.reps[0].data()).is_ok());
  EXPECT_FALSE((*sel)->select_layer(0, nullptr, w.reps[0].data()).is_ok());
  ASSERT_TRUE((*sel)->select_layer(0, w.q.data(), w.reps[0].data()).is_ok());
  EXPECT_FALSE((*sel)->select_layer(0, w.q.data(), w.reps[0].data()).is_ok());  // twice
}

}  // namespace
}  // namespace gsa::sparse::test

namespace gsa::sparse::test {
namespace {

TEST(Selector, DenseLayersAttendEveryBlock) {
  SparseConfig c = small_config();
  c.dense_layers = 1;
  World w(41, {30 * kBs}, c.representation, {});
  auto sel = Selector::create(c, {kLayers, kHeads, kKv, kHd}, nullptr);
  ASSERT_TRUE(sel.is_ok()) << sel.status().to_string();
  std::vector<SeqInput> in = w.inputs({30 * kBs - 3});
  ASSERT_TRUE((*sel)->begin_step(in).is_ok());
  auto l0 = (*sel)->select_layer(0, w.q.data(), w.reps[0].data());
  ASSERT_TRUE(l0.is_ok());
  EXPECT_EQ(l0->indptr[1], in[0].n_blocks);
  EXPECT_EQ((*sel)->source(0, 0), ListSource::Dense);
  auto l1 = (*sel)->select_layer(1, w.q.data(), w.reps[1].data());
  ASSERT_TRUE(l1.is_ok());
  EXPECT_EQ(l1->indptr[1], budget_blocks(c, in[0].n_blocks));
  EXPECT_EQ((*sel)->source(0, 1), ListSource::Selected);
}

TEST(Selector, OracleSequencesRankByAttentionMassFromTheKCache) {
  SparseConfig c = small_config();
  World w(42, {30 * kBs, 30 * kBs}, c.representation, {});
  auto sel = Selector::create(c, {kLayers, kHeads, kKv, kHd}, nullptr);
  ASSERT_TRUE(sel.is_ok());
  std::vector<SeqInput> in = w.inputs({30 * kBs - 3, 28 * kBs});
  in[1].oracle = true;
  ASSERT_TRUE((*sel)->begin_step(in).is_ok());
  // The oracle reads keys: without a K cache the layer is refused.
  EXPECT_EQ((*sel)->select_layer(0, w.q.data(), w.reps[0].data()).status().code(),
            StatusCode::InvalidArgument);
  ASSERT_TRUE((*sel)->begin_step(in).is_ok());
  auto bl = (*sel)->select_layer(0, w.q.data(), w.reps[0].data(), nullptr, w.batch.k_cache.data());
  ASSERT_TRUE(bl.is_ok()) << bl.status().to_string();
  EXPECT_EQ(list_logical(*bl, 0, in[0]), direct_select(c, w, 0, 0, in[0]));
  // Sequence 1 equals the kernel's oracle selection on the same keys.
  const int size = budget_blocks(c, in[1].n_blocks);
  std::vector<int32_t> bt_indptr = {0, in[1].n_blocks}, out_indptr = {0, size};
  std::vector<int32_t> out(static_cast<size_t>(size));
  int32_t last_len = 0;
  const uint8_t flag = uint8_t(backend::Rank::Oracle);
  backend::BlockSelectParams p;
  p.q = w.q.data() + size_t(kHeads) * kHd;
  p.reps = w.reps[0].data();
  p.block_table_indptr = bt_indptr.data();
  p.block_table = in[1].block_table;
  p.seq_len = &in[1].seq_len;
  p.out_indptr = out_indptr.data();
  p.out_indices = out.data();
  p.out_last_len = &last_len;
  p.n_seqs = 1;
  p.n_heads = kHeads;
  p.n_kv_heads = kKv;
  p.head_dim = kHd;
  p.block_size = kBs;
  p.kind = c.representation;
  p.rank = &flag;
  p.any_oracle = true;
  p.k_cache = w.batch.k_cache.data();
  ASSERT_TRUE(cpu::block_select(p, nullptr).is_ok());
  EXPECT_EQ(list_logical(*bl, 1, in[1]), to_logical(out.data(), size, in[1].block_table, in[1].n_blocks));
  EXPECT_NE(list_logical(*bl, 1, in[1]), direct_select(c, w, 1, 0, in[1]))
      << "oracle and representation agree on every block of this case; pick another seed";
}

}  // namespace
}  // namespace gsa::sparse::test
