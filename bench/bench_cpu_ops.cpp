// CPU kernel benchmarks: the machine's streaming-read ceiling, matmul at SmolLM2-135M shapes
// (ours next to raw OpenBLAS, f32 and bf16 weights), paged decode attention (dense and sparse
// lists) with KV bytes read, GB/s and % of the read ceiling, and causal prefill attention.
// Prints Google Benchmark tables; asserts nothing. GSA_BENCH_THREADS sets the pool size.
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <vector>

#include "backend/cpu/cpu_kernels.h"
#include "core/buffer.h"
#include "bench_pool.h"
#include "core/thread_pool.h"

namespace {

using namespace gsa;
using namespace gsa::backend;

using gsa::bench::pool;

template <typename T>
AlignedBuffer<T> random_buffer(size_t n, uint64_t seed, float scale = 1.0f) {
  auto b = AlignedBuffer<T>::make(n);
  if (!b.is_ok()) std::abort();
  FillRandomParams f;
  f.dst = b->data(), f.n = int64_t(n), f.scale = scale, f.seed = seed;
  f.type = sizeof(T) == 2 ? DType::BF16 : DType::F32;
  if (!gsa::cpu::fill_random(f, &pool()).is_ok()) std::abort();
  return std::move(b).value();
}

// Streaming sum of n floats split over n_threads threads of the pool.
void stream_sum(const float* buf, int64_t n, int n_threads, float* partial) {
  const int64_t per = n / n_threads / 64 * 64;
  pool().parallel_for(n_threads, [&](int64_t b, int64_t e, int) {
    for (int64_t t = b; t < e; ++t) {
      // GCC/Clang vector extension: 4 independent 64-byte accumulators, no fast-math needed.
      typedef float v16 __attribute__((vector_size(64)));
      const v16* p = reinterpret_cast<const v16*>(buf + t * per);
      v16 a0{}, a1{}, a2{}, a3{};
      for (int64_t i = 0; i < per / 16; i += 4) a0 += p[i], a1 += p[i + 1], a2 += p[i + 2], a3 += p[i + 3];
      const v16 a = (a0 + a1) + (a2 + a3);
      float s = 0;
      for (int j = 0; j < 16; ++j) s += a[j];
      partial[size_t(t) * 16] = s;
    }
  });
}

constexpr int64_t kCeilingFloats = int64_t(1) << 28;  // 1 GiB

// Multithreaded streaming sum over 1 GiB: the read-bandwidth ceiling the kernels are held to.
void BM_MemReadCeiling(benchmark::State& state) {
  auto buf = random_buffer<float>(size_t(kCeilingFloats), 1);
  const int n_threads = int(state.range(0)) > 0 ? int(state.range(0)) : pool().n_threads();
  std::vector<float> partial(size_t(n_threads) * 16);
  for (auto _ : state) {
    stream_sum(buf.data(), kCeilingFloats, n_threads, partial.data());
    benchmark::DoNotOptimize(partial.data());
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * kCeilingFloats * int64_t(sizeof(float)));
  state.counters["threads"] = n_threads;
}

// The ceiling in bytes/s (all pool threads, best of 3 passes), measured once per process for
// the attention benchmarks' "pct_ceiling" counter.
double ceiling_bytes_per_s() {
  static const double v = [] {
    auto buf = random_buffer<float>(size_t(kCeilingFloats), 1);
    std::vector<float> partial(size_t(pool().n_threads()) * 16);
    double best = 0;
    for (int rep = 0; rep < 3; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      stream_sum(buf.data(), kCeilingFloats, pool().n_threads(), partial.data());
      benchmark::DoNotOptimize(partial.data());
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      best = std::max(best, double(kCeilingFloats) * sizeof(float) / s);
    }
    return best;
  }();
  return v;
}
BENCHMARK(BM_MemReadCeiling)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();

// Matmul y[m, n] = x[m, k] . w[n, k]^T. Args: n, k, m, bf16 weights.
void BM_Matmul(benchmark::State& state) {
  const int64_t n = state.range(0), k = state.range(1), m = state.range(2);
  const bool bf16 = state.range(3) != 0;
  auto x = random_buffer<float>(size_t(m * k), 2);
  auto wf = bf16 ? AlignedBuffer<float>() : random_buffer<float>(size_t(n * k), 3, 0.05f);
  auto wb = bf16 ? random_buffer<uint16_t>(size_t(n * k), 3, 0.05f) : AlignedBuffer<uint16_t>();
  auto y = random_buffer<float>(size_t(m * n), 4);
  MatmulParams p;
  p.x = x.data(), p.y = y.data(), p.m = m, p.n = n, p.k = k;
  p.w = bf16 ? static_cast<const void*>(wb.data()) : wf.data();
  p.w_type = bf16 ? DType::BF16 : DType::F32;
  for (auto _ : state) {
    if (!gsa::cpu::matmul(p, &pool()).is_ok()) state.SkipWithError("matmul failed");
    benchmark::ClobberMemory();
  }
  const double w_bytes = double(n * k) * (bf16 ? 2 : 4);
  state.counters["GFLOPS"] = benchmark::Counter(2.0 * double(m * n * k), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["w_GBps"] = benchmark::Counter(w_bytes, benchmark::Counter::kIsIterationInvariantRate,
                                                benchmark::Counter::kIs1000);
}

// Raw OpenBLAS on the same shapes with its own threads (n_threads of our pool): the alternative
// to our GEMV and to our pool-split sgemm.
void BM_OpenBlas(benchmark::State& state) {
  const int64_t n = state.range(0), k = state.range(1), m = state.range(2);
  auto x = random_buffer<float>(size_t(m * k), 2);
  auto w = random_buffer<float>(size_t(n * k), 3, 0.05f);
  auto y = random_buffer<float>(size_t(m * n), 4);
  openblas_set_num_threads(pool().n_threads());
  for (auto _ : state) {
    if (m == 1)
      cblas_sgemv(CblasRowMajor, CblasNoTrans, int(n), int(k), 1.0f, w.data(), int(k), x.data(), 1,
                  0.0f, y.data(), 1);
    else
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(m), int(n), int(k), 1.0f, x.data(),
                  int(k), w.data(), int(k), 0.0f, y.data(), int(n));
    benchmark::ClobberMemory();
  }
  openblas_set_num_threads(1);  // back to what cpu::matmul expects
  state.counters["GFLOPS"] = benchmark::Counter(2.0 * double(m * n * k), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["w_GBps"] = benchmark::Counter(double(n * k) * 4, benchmark::Counter::kIsIterationInvariantRate,
                                                benchmark::Counter::kIs1000);
}

void matmul_args(benchmark::internal::Benchmark* b, bool with_bf16) {
  for (auto nk : {std::pair<int64_t, int64_t>{576, 576}, {1536, 576}, {576, 1536}, {49152, 576}})
    for (int64_t m : {1, 8, 16, 32, 512})
      for (int bf : {0, 1})
        if (bf == 0 || with_bf16) b->Args({nk.first, nk.second, m, bf});
  b->ArgNames({"n", "k", "m", "bf16"})->Unit(benchmark::kMicrosecond)->UseRealTime();
}
BENCHMARK(BM_Matmul)->Apply([](benchmark::internal::Benchmark* b) { matmul_args(b, true); });
BENCHMARK(BM_OpenBlas)->Apply([](benchmark::internal::Benchmark* b) { matmul_args(b, false); });

// Decode attention: batch sequences of ctx tokens, one query row each. Args: ctx, batch,
// n_heads, n_kv_heads, block_size, budget (0 = dense; else tokens attended, sink + middle +
// local blocks as GSA selects them).
void BM_DecodeAttention(benchmark::State& state) {
  const int64_t ctx = state.range(0), batch = state.range(1);
  const int n_heads = int(state.range(2)), n_kv = int(state.range(3)), bs = int(state.range(4));
  const int64_t budget = state.range(5);
  const int hd = 64;
  const int64_t blocks_per_seq = (ctx + bs - 1) / bs;
  const int64_t n_blocks = blocks_per_seq * batch;
  const size_t cache_n = size_t(n_blocks * n_kv * bs * hd);
  auto kc = random_buffer<float>(cache_n, 5);
  auto vc = random_buffer<float>(cache_n, 6);
  auto q = random_buffer<float>(size_t(batch * n_heads * hd), 7);
  auto out = random_buffer<float>(size_t(batch * n_heads * hd), 8);
  std::vector<int32_t> q_indptr(static_cast<size_t>(batch + 1)), q_pos(static_cast<size_t>(batch)),
      kv_indptr{0}, kv_indices,
      kv_last_len;
  const int64_t keep = budget > 0 ? std::min(blocks_per_seq, budget / bs) : blocks_per_seq;
  for (int64_t s = 0; s < batch; ++s) {
    q_indptr[size_t(s + 1)] = int32_t(s + 1);
    q_pos[size_t(s)] = int32_t(ctx - 1);
    // Interleave sequences' blocks in memory, as a shared block pool would.
    auto phys = [&](int64_t b) { return int32_t(b * batch + s); };
    std::vector<int64_t> logical;
    if (keep == blocks_per_seq) {
      logical.resize(size_t(keep));
      std::iota(logical.begin(), logical.end(), 0);
    } else {  // sink, evenly spread middle blocks, two local
      logical.push_back(0);
      const int64_t middle = keep - 3;
      for (int64_t i = 0; i < middle; ++i) logical.push_back(1 + (i * (blocks_per_seq - 3)) / middle);
      logical.push_back(blocks_per_seq - 2);
      logical.push_back(blocks_per_seq - 1);
    }
    for (int64_t b : logical) kv_indices.push_back(phys(b));
    kv_indptr.push_back(int32_t(kv_indices.size()));
    kv_last_len.push_back(int32_t(ctx - (blocks_per_seq - 1) * bs));
  }
  AttentionParams p;
  p.q = q.data(), p.k_cache = kc.data(), p.v_cache = vc.data(), p.out = out.data();
  p.q_indptr = q_indptr.data(), p.q_pos = q_pos.data();
  p.kv_indptr = kv_indptr.data(), p.kv_indices = kv_indices.data(), p.kv_last_len = kv_last_len.data();
  p.n_seqs = int(batch), p.n_tokens = batch, p.n_blocks = n_blocks;
  p.n_heads = n_heads, p.n_kv_heads = n_kv, p.head_dim = hd, p.block_size = bs;
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    if (!gsa::cpu::attention(p, &pool()).is_ok()) state.SkipWithError("attention failed");
    benchmark::ClobberMemory();
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const int64_t tokens_read = keep == blocks_per_seq ? ctx : keep * bs - (bs - kv_last_len[0]);
  const double kv_bytes = double(batch * tokens_read * n_kv * hd) * 4 * 2;
  state.counters["kv_MB"] = kv_bytes / 1e6;
  state.counters["pct_ceiling"] =
      100.0 * kv_bytes * double(state.iterations()) / seconds / ceiling_bytes_per_s();
  state.counters["GBps"] = benchmark::Counter(kv_bytes, benchmark::Counter::kIsIterationInvariantRate,
                                              benchmark::Counter::kIs1000);
}
BENCHMARK(BM_DecodeAttention)
    ->Apply([](benchmark::internal::Benchmark* b) {
      for (int64_t ctx : {2048, 8192, 32768})
        for (int64_t batch : {1, 8})
          for (auto h : {std::pair<int64_t, int64_t>{9, 3}, {14, 2}})
            for (int64_t bs : {16, 128}) b->Args({ctx, batch, h.first, h.second, bs, 0});
      for (int64_t batch : {1, 8}) b->Args({32768, batch, 9, 3, 128, 4096});  // GSA budget
      b->ArgNames({"ctx", "batch", "heads", "kv", "bs", "budget"});
    })
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

// Prefill attention: one prompt of n tokens attending causally to itself. Args: n, n_heads,
// n_kv_heads, block_size. GFLOPS counts the causal half of QK^T and PV.
void BM_PrefillAttention(benchmark::State& state) {
  const int64_t n = state.range(0);
  const int n_heads = int(state.range(1)), n_kv = int(state.range(2)), bs = int(state.range(3));
  const int hd = 64;
  const int64_t n_blocks = (n + bs - 1) / bs;
  const size_t cache_n = size_t(n_blocks * n_kv * bs * hd);
  auto kc = random_buffer<float>(cache_n, 5);
  auto vc = random_buffer<float>(cache_n, 6);
  auto q = random_buffer<float>(size_t(n * n_heads * hd), 7);
  auto out = random_buffer<float>(size_t(n * n_heads * hd), 8);
  std::vector<int32_t> q_indptr = {0, int32_t(n)}, q_pos(static_cast<size_t>(n)),
                       kv_indptr = {0, int32_t(n_blocks)}, kv_indices(static_cast<size_t>(n_blocks)),
                       kv_last_len = {int32_t(n - (n_blocks - 1) * bs)};
  std::iota(q_pos.begin(), q_pos.end(), 0);
  std::iota(kv_indices.begin(), kv_indices.end(), 0);
  AttentionParams p;
  p.q = q.data(), p.k_cache = kc.data(), p.v_cache = vc.data(), p.out = out.data();
  p.q_indptr = q_indptr.data(), p.q_pos = q_pos.data();
  p.kv_indptr = kv_indptr.data(), p.kv_indices = kv_indices.data(), p.kv_last_len = kv_last_len.data();
  p.n_seqs = 1, p.n_tokens = n, p.n_blocks = n_blocks;
  p.n_heads = n_heads, p.n_kv_heads = n_kv, p.head_dim = hd, p.block_size = bs;
  for (auto _ : state) {
    if (!gsa::cpu::attention(p, &pool()).is_ok()) state.SkipWithError("attention failed");
    benchmark::ClobberMemory();
  }
  const double flops = 2.0 * 2.0 * double(n) * double(n + 1) / 2.0 * hd * n_heads;
  state.counters["GFLOPS"] = benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_PrefillAttention)
    ->Args({512, 9, 3, 128})
    ->Args({2048, 9, 3, 128})
    ->Args({2048, 14, 2, 16})
    ->ArgNames({"n", "heads", "kv", "bs"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
