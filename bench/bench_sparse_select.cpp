// GSA selection benchmarks on the CPU: cpu::block_select per representation (Mean, MinMax,
// Hash, Quant) at SmolLM2-135M head shapes over long contexts, cpu::rep_update per block, and the
// forward-side cost of handing a layer's queries to the AsyncSelector (submit; never waits).
// Reports blocks/s and representation bytes read per second; asserts nothing.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <numeric>
#include <random>
#include <vector>

#include "backend/cpu/cpu_kernels.h"
#include "bench_pool.h"
#include "core/thread_pool.h"
#include "sparse/async_selector.h"
#include "sparse/sparse_config.h"

namespace {

using namespace gsa;
using backend::RepKind;

constexpr int kHeads = 9, kKv = 3, kHd = 64, kBs = 128;  // SmolLM2-135M attention

using gsa::bench::pool;

std::vector<float> random_floats(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// A batch of n_seqs sequences of ctx tokens each over one paged cache, reps computed.
struct Setup {
  int n_seqs, n_blocks_seq, n_phys;
  RepKind kind;
  std::vector<float> q, k_cache, hash_w;
  std::vector<uint8_t> reps;
  std::vector<int32_t> bt_indptr, table, seq_len, out_indptr, out, last_len;

  Setup(int seqs, int ctx, RepKind rep_kind)
      : n_seqs(seqs), n_blocks_seq(ctx / kBs), kind(rep_kind) {
    n_phys = n_seqs * n_blocks_seq;
    q = random_floats(size_t(n_seqs) * kHeads * kHd, 1);
    hash_w = sparse::make_hash_matrix(kHd, 3);
    reps.resize(size_t(n_phys) * kKv * backend::rep_bytes(kind, kHd, kBs));
    table.resize(size_t(n_phys));
    std::iota(table.begin(), table.end(), 0);
    std::shuffle(table.begin(), table.end(), std::mt19937(5));
    // Keys are generated one block at a time so the cache never has to exist whole.
    const size_t one_rep = size_t(kKv) * backend::rep_bytes(kind, kHd, kBs);
    std::vector<float> k = random_floats(size_t(kKv) * kBs * kHd, 2);
    for (int b = 0; b < n_phys; ++b) {
      for (size_t i = 0; i < k.size(); i += 97) k[i] = -k[i] + 0.001f * float(b % 17);
      int32_t id = 0;
      backend::RepUpdateParams u;
      u.k_cache = k.data();
      u.reps = reps.data() + size_t(b) * one_rep;  // block b's reps, as block 0 of this view
      u.blocks = &id;
      u.n_update = 1;
      u.n_kv_heads = kKv;
      u.head_dim = kHd;
      u.block_size = kBs;
      u.kind = kind;
      u.hash_w = hash_w.data();
      if (!cpu::rep_update(u, nullptr).is_ok()) std::abort();
    }
    sparse::SparseConfig cfg;
    const int size = sparse::budget_blocks(cfg, n_blocks_seq);
    bt_indptr.push_back(0);
    out_indptr.push_back(0);
    for (int s = 0; s < n_seqs; ++s) {
      bt_indptr.push_back(bt_indptr.back() + n_blocks_seq);
      out_indptr.push_back(out_indptr.back() + size);
      seq_len.push_back(n_blocks_seq * kBs - 5);
    }
    out.resize(size_t(out_indptr.back()));
    last_len.resize(size_t(n_seqs));
  }
  backend::BlockSelectParams params() const {
    backend::BlockSelectParams p;
    p.q = q.data();
    p.reps = reps.data();
    p.block_table_indptr = bt_indptr.data();
    p.block_table = table.data();
    p.seq_len = seq_len.data();
    p.out_indptr = out_indptr.data();
    p.out_indices = const_cast<int32_t*>(out.data());
    p.out_last_len = const_cast<int32_t*>(last_len.data());
    p.n_seqs = n_seqs;
    p.n_heads = kHeads;
    p.n_kv_heads = kKv;
    p.head_dim = kHd;
    p.block_size = kBs;
    p.kind = kind;
    p.hash_w = hash_w.data();
    return p;
  }
};

// Args: n_seqs, context tokens, kind, threaded.
void BM_BlockSelect(benchmark::State& state) {
  const RepKind kind = static_cast<RepKind>(state.range(2));
  Setup s(int(state.range(0)), int(state.range(1)), kind);
  const backend::BlockSelectParams p = s.params();
  ThreadPool* tp = state.range(3) ? &pool() : nullptr;
  for (auto _ : state) {
    if (!cpu::block_select(p, tp).is_ok()) state.SkipWithError("block_select failed");
    benchmark::DoNotOptimize(s.out.data());
  }
  const double blocks = double(s.n_phys) * state.iterations();
  state.counters["blocks/s"] = benchmark::Counter(blocks, benchmark::Counter::kIsRate);
  state.counters["rep_GB/s"] = benchmark::Counter(
      blocks * kKv * double(backend::rep_bytes(kind, kHd, kBs)) / 1e9, benchmark::Counter::kIsRate);
  state.SetLabel(std::string(sparse::rep_kind_name(kind)) + (tp ? " pool" : " 1 thread"));
}

void select_args(benchmark::internal::Benchmark* b) {
  for (int kind = 0; kind < 3; ++kind)
    for (int ctx : {32768, 131072})
      for (int threaded : {0, 1}) b->Args({8, ctx, kind, threaded});
  b->Args({1, 131072, 0, 0});
  const int quant = static_cast<int>(RepKind::Quant);
  for (int threaded : {0, 1}) b->Args({8, 32768, quant, threaded});
  b->Args({1, 32768, quant, 0});
}
BENCHMARK(BM_BlockSelect)->Apply(select_args)->Unit(benchmark::kMicrosecond);

// One block's representation (all kv heads) from its keys; Args: kind.
void BM_RepUpdate(benchmark::State& state) {
  const RepKind kind = static_cast<RepKind>(state.range(0));
  const int n = 64;
  std::vector<float> k = random_floats(size_t(n) * kKv * kBs * kHd, 7);
  std::vector<float> w = sparse::make_hash_matrix(kHd, 1);
  std::vector<uint8_t> reps(size_t(n) * kKv * backend::rep_bytes(kind, kHd, kBs));
  std::vector<int32_t> ids(static_cast<size_t>(n));
  std::iota(ids.begin(), ids.end(), 0);
  backend::RepUpdateParams u;
  u.k_cache = k.data();
  u.reps = reps.data();
  u.blocks = ids.data();
  u.n_update = n;
  u.n_kv_heads = kKv;
  u.head_dim = kHd;
  u.block_size = kBs;
  u.kind = kind;
  u.hash_w = w.data();
  for (auto _ : state) {
    if (!cpu::rep_update(u, nullptr).is_ok()) state.SkipWithError("rep_update failed");
    benchmark::DoNotOptimize(reps.data());
  }
  state.counters["blocks/s"] = benchmark::Counter(double(n) * state.iterations(),
                                                  benchmark::Counter::kIsRate);
  state.counters["key_GB/s"] = benchmark::Counter(
      double(n) * kKv * kBs * kHd * 4 * state.iterations() / 1e9, benchmark::Counter::kIsRate);
  state.SetLabel(sparse::rep_kind_name(kind));
}
BENCHMARK(BM_RepUpdate)->DenseRange(0, 2)->Unit(benchmark::kMicrosecond);

// The forward's cost per layer of handing 8 sequences' queries to the asynchronous selector
// (copies into the ring, never waits). Workers run meanwhile; the ring coalesces.
void BM_AsyncSubmit(benchmark::State& state) {
  Setup s(8, 32768, RepKind::Mean);
  sparse::SparseConfig cfg;
  cfg.selector = sparse::SelectorKind::Cpu;
  cfg.lag = 1;
  sparse::AsyncSelectorOptions opt;
  opt.n_layers = 30;
  opt.n_heads = kHeads;
  opt.n_kv_heads = kKv;
  opt.head_dim = kHd;
  opt.n_workers = 1;
  auto sel = sparse::AsyncSelector::create(cfg, opt, {});
  if (!sel.is_ok()) std::abort();
  std::vector<sparse::AsyncJobInput> jobs;
  for (int i = 0; i < s.n_seqs; ++i)
    jobs.push_back({i, s.seq_len[size_t(i)], s.table.data() + s.bt_indptr[size_t(i)],
                    s.n_blocks_seq, s.q.data() + size_t(i) * kHeads * kHd});
  int64_t step = 0;
  for (auto _ : state) {
    if (!(*sel)->submit(step, int(step % 30), jobs, s.reps.data()).is_ok())
      state.SkipWithError("submit failed");
    ++step;
  }
  (*sel)->drain();
  const sparse::AsyncStats st = (*sel)->stats();
  state.counters["completed"] = double(st.completed);
  state.counters["coalesced"] = double(st.coalesced);
}
BENCHMARK(BM_AsyncSubmit)->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
