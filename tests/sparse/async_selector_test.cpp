// AsyncSelector: results equal the inline kernel's; coalescing and dropping keep the newest
// query; accounting adds up; cancel() lets the caller free a sequence's representations at
// once (ASan/TSan catch any late read); submit rejects bad input; the destructor is clean with
// work pending. Built again under ThreadSanitizer (label tsan).
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <thread>

#include "backend/cpu/cpu_kernels.h"
#include "sparse/async_selector.h"
#include "sparse_test_util.h"

namespace gsa::sparse::test {
namespace {

constexpr int kHeads = 6, kKv = 2, kHd = 32, kBs = 16, kLayers = 3;

SparseConfig config() {
  SparseConfig c;
  c.block_size = kBs;
  c.budget_tokens = 5 * kBs;
  c.min_context = 0;
  c.selector = SelectorKind::Cpu;
  c.lag = 1;
  c.representation = backend::RepKind::Mean;  // the Seq tables below hold means
  c.scope = Scope::PerLayer;  // the checks below read one list per sequence
  return c;
}

AsyncSelectorOptions options(int workers, int slots) {
  AsyncSelectorOptions o;
  o.n_layers = kLayers;
  o.n_heads = kHeads;
  o.n_kv_heads = kKv;
  o.head_dim = kHd;
  o.n_workers = workers;
  o.queue_slots = slots;
  return o;
}

// One sequence with its own representation table (so a test can free it after cancel()).
struct Seq {
  int64_t id = 0;
  Batch batch;
  std::vector<float> reps;  // [n_phys, kKv, kHd] Mean
  std::vector<float> q;     // [kHeads, kHd]

  Seq(int64_t seq_id, int32_t len, uint32_t seed) : id(seq_id) {
    std::mt19937 rng(seed);
    batch = make_batch(rng, {len}, kKv, kHd, kBs);
    reps.assign(size_t(batch.n_phys) * kKv * kHd, 0.0f);
    std::vector<int32_t> all(size_t(batch.n_phys));
    std::iota(all.begin(), all.end(), 0);
    backend::RepUpdateParams u;
    u.k_cache = batch.k_cache.data();
    u.reps = reps.data();
    u.blocks = all.data();
    u.n_update = batch.n_phys;
    u.n_kv_heads = kKv;
    u.head_dim = kHd;
    u.block_size = kBs;
    EXPECT_TRUE(cpu::rep_update(u, nullptr).is_ok());
    q = random_vec(rng, size_t(kHeads) * kHd);
  }
  AsyncJobInput input() const {
    return {id, batch.seq_len[0], batch.table(0), batch.n_blocks(0), q.data()};
  }
  std::vector<int> expected(const SparseConfig& c, bool per_kv_head) const {
    const int n = batch.n_blocks(0), size = budget_blocks(c, n), lists = per_kv_head ? kKv : 1;
    std::vector<int32_t> bt = {0, n}, out_indptr;
    std::vector<int32_t> out(static_cast<size_t>(size) * lists), last(static_cast<size_t>(lists));
    for (int l = 0; l <= lists; ++l) out_indptr.push_back(l * size);
    backend::BlockSelectParams p;
    p.q = q.data();
    p.reps = reps.data();
    p.block_table_indptr = bt.data();
    p.block_table = batch.table(0);
    p.seq_len = batch.seq_len.data();
    p.out_indptr = out_indptr.data();
    p.out_indices = out.data();
    p.out_last_len = last.data();
    p.n_seqs = 1;
    p.n_heads = kHeads;
    p.n_kv_heads = kKv;
    p.head_dim = kHd;
    p.block_size = kBs;
    p.sink_blocks = c.sink_blocks;
    p.local_blocks = c.local_blocks;
    p.per_kv_head = per_kv_head;
    EXPECT_TRUE(cpu::block_select(p, nullptr).is_ok());
    return to_logical(out.data(), int(out.size()), batch.table(0), n);
  }
};

std::vector<int> as_vector(const AsyncResult& r) { return {r.logical.begin(), r.logical.end()}; }

TEST(AsyncSelector, ResultsEqualTheInlineKernel) {
  for (bool per_kv_head : {false, true}) {
    SparseConfig c = config();
    c.scope = per_kv_head ? Scope::PerKvHead : Scope::PerLayer;
    auto sel = AsyncSelector::create(c, options(2, 64), {});
    ASSERT_TRUE(sel.is_ok()) << sel.status().to_string();
    std::vector<std::unique_ptr<Seq>> seqs;
    for (int i = 0; i < 4; ++i) seqs.push_back(std::make_unique<Seq>(i, 16 * (20 + 7 * i) + i, 40 + i));
    for (int layer = 0; layer < kLayers; ++layer)
      for (const auto& s : seqs) {
        AsyncJobInput in = s->input();
        ASSERT_TRUE((*sel)->submit(5, layer, {&in, 1}, s->reps.data()).is_ok());
      }
    (*sel)->drain();
    for (int layer = 0; layer < kLayers; ++layer)
      for (const auto& s : seqs) {
        AsyncResult r;
        ASSERT_TRUE((*sel)->latest(s->id, layer, &r));
        EXPECT_EQ(r.step, 5);
        EXPECT_EQ(r.n_blocks, s->batch.n_blocks(0));
        EXPECT_EQ(r.list_size, 5);
        EXPECT_EQ(as_vector(r), s->expected(c, per_kv_head));
      }
    AsyncResult none;
    EXPECT_FALSE((*sel)->latest(99, 0, &none));
    const AsyncStats st = (*sel)->stats();
    EXPECT_EQ(st.submitted, 4 * kLayers);
    EXPECT_EQ(st.completed, 4 * kLayers);
    EXPECT_EQ(st.failed, 0);
  }
}

// Many steps submitted faster than one worker can finish them. With a ring of at least one
// slot per (sequence, layer) plus one per worker, newer queries only replace pending ones
// (coalescing) and every key ends with the newest step's selection. With a tiny ring the
// oldest pending jobs are dropped; the accounting still adds up and the last job survives.
TEST(AsyncSelector, KeepsTheNewestQueryUnderPressure) {
  SparseConfig c = config();
  std::vector<std::unique_ptr<Seq>> seqs;
  for (int i = 0; i < 3; ++i) seqs.push_back(std::make_unique<Seq>(i, 16 * 60 + 3, 70 + i));
  for (int slots : {3 * kLayers + 1, 2}) {
    auto sel = AsyncSelector::create(c, options(1, slots), {});
    ASSERT_TRUE(sel.is_ok());
    const int steps = 40;
    std::vector<AsyncJobInput> batch;
    for (int step = 0; step < steps; ++step) {
      for (int layer = 0; layer < kLayers; ++layer) {
        batch.clear();
        for (const auto& s : seqs) batch.push_back(s->input());
        ASSERT_TRUE((*sel)->submit(step, layer, batch, seqs[0]->reps.data()).is_ok());
        AsyncResult r;  // reads race with the workers' publishing: must be consistent
        if ((*sel)->latest(1, layer, &r)) {
          EXPECT_EQ(int(r.logical.size()), r.list_size);
          EXPECT_LE(r.step, step);
        }
      }
    }
    (*sel)->drain();
    const AsyncStats st = (*sel)->stats();
    EXPECT_EQ(st.submitted, steps * kLayers * 3);
    EXPECT_EQ(st.submitted, st.completed + st.coalesced + st.dropped + st.cancelled + st.failed);
    AsyncResult r;
    if (slots > 2) {
      EXPECT_EQ(st.dropped, 0);
      for (int layer = 0; layer < kLayers; ++layer)
        for (int i = 0; i < 3; ++i) {
          ASSERT_TRUE((*sel)->latest(i, layer, &r));
          EXPECT_EQ(r.step, steps - 1);
        }
    } else {
      ASSERT_TRUE((*sel)->latest(2, kLayers - 1, &r));
      EXPECT_EQ(r.step, steps - 1);
    }
  }
}

// cancel() returns only when no job of the sequence is pending or running, so the caller may
// free its representations right away: a worker still reading them would be a use after free
// (ASan) or a race (TSan).
TEST(AsyncSelector, CancelLetsTheCallerFreeBlocks) {
  SparseConfig c = config();
  auto sel = AsyncSelector::create(c, options(3, 32), {});
  ASSERT_TRUE(sel.is_ok());
  for (int round = 0; round < 20; ++round) {
    auto victim = std::make_unique<Seq>(1000 + round, 16 * 80 + 1, 300 + round);
    Seq keeper(7, 16 * 40, 500 + round);
    for (int layer = 0; layer < kLayers; ++layer) {
      AsyncJobInput a = victim->input(), b = keeper.input();
      ASSERT_TRUE((*sel)->submit(round, layer, {&a, 1}, victim->reps.data()).is_ok());
      ASSERT_TRUE((*sel)->submit(round, layer, {&b, 1}, keeper.reps.data()).is_ok());
    }
    (*sel)->cancel(victim->id);
    std::fill(victim->reps.begin(), victim->reps.end(), -1.0f);  // write after cancel
    victim.reset();                                              // and free
    AsyncResult r;
    EXPECT_FALSE((*sel)->latest(1000 + round, 0, &r));
    (*sel)->drain();  // keeper's jobs finish before keeper's reps go away
    EXPECT_TRUE((*sel)->latest(7, 0, &r));
  }
  const AsyncStats st = (*sel)->stats();
  EXPECT_EQ(st.submitted, st.completed + st.coalesced + st.dropped + st.cancelled + st.failed);
}

// Lookups from another thread while the submitting thread works (an engine may read results
// from its scheduler thread).
TEST(AsyncSelector, ConcurrentLookupsAndSubmits) {
  SparseConfig c = config();
  auto sel = AsyncSelector::create(c, options(2, 16), {});
  ASSERT_TRUE(sel.is_ok());
  Seq s(3, 16 * 50 + 9, 900);
  std::atomic<bool> done{false};
  std::thread reader([&] {
    AsyncResult r;
    int64_t last_step = -1;
    while (!done.load()) {
      if ((*sel)->latest(3, 1, &r)) {
        EXPECT_GE(r.step, last_step);  // published results never go back in time
        last_step = r.step;
      }
    }
  });
  for (int step = 0; step < 200; ++step) {
    AsyncJobInput in = s.input();
    ASSERT_TRUE((*sel)->submit(step, 1, {&in, 1}, s.reps.data()).is_ok());
  }
  (*sel)->drain();
  done = true;
  reader.join();
  AsyncResult r;
  ASSERT_TRUE((*sel)->latest(3, 1, &r));
  EXPECT_EQ(r.step, 199);
  EXPECT_EQ(as_vector(r), s.expected(c, false));
}

TEST(AsyncSelector, DestructorWithPendingWorkIsClean) {
  SparseConfig c = config();
  Seq s(1, 16 * 200, 1234);
  for (int i = 0; i < 5; ++i) {
    auto sel = AsyncSelector::create(c, options(2, 128), {});
    ASSERT_TRUE(sel.is_ok());
    for (int step = 0; step < 40; ++step) {
      AsyncJobInput in = s.input();
      ASSERT_TRUE((*sel)->submit(step, step % kLayers, {&in, 1}, s.reps.data()).is_ok());
    }
  }  // destroyed with jobs pending and running; s outlives it
}

TEST(AsyncSelector, RejectsBadInput) {
  SparseConfig c = config();
  EXPECT_FALSE(AsyncSelector::create(c, options(0, 8), {}).is_ok());
  EXPECT_FALSE(AsyncSelector::create(c, options(2, 0), {}).is_ok());
  AsyncSelectorOptions o = options(1, 8);
  o.n_heads = 5;
  EXPECT_FALSE(AsyncSelector::create(c, o, {}).is_ok());
  SparseConfig hash = c;
  hash.representation = backend::RepKind::Hash;
  EXPECT_FALSE(AsyncSelector::create(hash, options(1, 8), {}).is_ok());  // no matrix

  auto sel = AsyncSelector::create(c, options(1, 8), {});
  ASSERT_TRUE(sel.is_ok());
  Seq s(1, 16 * 30 + 4, 77);
  AsyncJobInput good = s.input();
  AsyncJobInput bad = good;
  bad.seq_len = 16 * 40;  // more tokens than its blocks hold
  AsyncJobInput both[2] = {good, bad};
  EXPECT_EQ((*sel)->submit(0, 0, both, s.reps.data()).code(), StatusCode::InvalidArgument);
  std::vector<int32_t> table(good.block_table, good.block_table + good.n_blocks);
  table[2] = -3;
  bad = good;
  bad.block_table = table.data();
  EXPECT_EQ((*sel)->submit(0, 0, {&bad, 1}, s.reps.data()).code(), StatusCode::InvalidArgument);
  bad = good;
  bad.q = nullptr;
  EXPECT_EQ((*sel)->submit(0, 0, {&bad, 1}, s.reps.data()).code(), StatusCode::InvalidArgument);
  EXPECT_EQ((*sel)->submit(0, kLayers, {&good, 1}, s.reps.data()).code(),
            StatusCode::InvalidArgument);
  EXPECT_EQ((*sel)->submit(0, 0, {&good, 1}, nullptr).code(), StatusCode::InvalidArgument);
  EXPECT_EQ((*sel)->stats().submitted, 0);  // nothing queued by a rejected submit
}

}  // namespace
}  // namespace gsa::sparse::test
