// Quantized CPU matmul (weights in their GGUF block formats) next to the f32-weight matmul, at
// SmolLM2-135M and Qwen2.5-0.5B projection shapes, m = 1 (decode), 8 and 512 (prefill chunk).
// Reports time, weight bytes/s (bytes_per_second: the bytes of w as stored) and GFLOP/s.
// Prints Google Benchmark tables; asserts nothing. GSA_BENCH_THREADS sets the pool size.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "backend/cpu/cpu_kernels.h"
#include "core/buffer.h"
#include "core/dtype.h"
#include "core/quant_blocks.h"
#include "bench_pool.h"
#include "core/thread_pool.h"

namespace {

using namespace gsa;
using namespace gsa::backend;

using gsa::bench::pool;

// Random valid blocks: random quant bytes, f16 scale fields set to small finite values.
std::vector<uint8_t> random_weights(uint32_t type, int64_t n, int64_t k) {
  const GgmlTypeTraits* t = ggml_type_traits(type);
  const int64_t n_blocks = n * k / t->block_elems;
  std::vector<uint8_t> w(size_t(n_blocks * t->block_bytes));
  std::mt19937 rng(uint32_t(type * 1000003 + n * 31 + k));
  for (auto& b : w) b = uint8_t(rng());
  std::vector<int> fields = {0};
  if (type == ggml_id::Q4_1 || type == ggml_id::Q5_1 || type == ggml_id::Q4_K || type == ggml_id::Q5_K)
    fields = {0, 2};
  if (type == ggml_id::Q6_K) fields = {208};
  for (int64_t i = 0; i < n_blocks; ++i) {
    for (int off : fields) {
      const uint16_t h = f32_to_f16(float(int(rng() % 200) - 100) / 6400.0f);
      std::memcpy(w.data() + i * t->block_bytes + off, &h, 2);
    }
  }
  return w;
}

// Args: n, k, m, ggml type id (0: f32 weights through the f32 path).
void BM_QuantMatmul(benchmark::State& state) {
  const int64_t n = state.range(0), k = state.range(1), m = state.range(2);
  const uint32_t type = uint32_t(state.range(3));
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> x(size_t(m * k)), y(size_t(m * n));
  for (auto& v : x) v = dist(rng);
  std::vector<uint8_t> wq;
  std::vector<float> wf;
  MatmulParams p;
  p.x = x.data(), p.y = y.data(), p.m = m, p.n = n, p.k = k;
  int64_t w_bytes = 0;
  if (type == ggml_id::F32) {
    wf.resize(size_t(n * k));
    for (auto& v : wf) v = dist(rng) * 0.05f;
    p.w = wf.data();
    w_bytes = n * k * 4;
  } else {
    wq = random_weights(type, n, k);
    p.w = wq.data(), p.w_type = DType::Ggml, p.w_ggml = type;
    w_bytes = int64_t(wq.size());
  }
  if (!gsa::cpu::matmul(p, &pool()).is_ok()) {
    state.SkipWithError("matmul refused the case");
    return;
  }
  for (auto _ : state) {
    if (!gsa::cpu::matmul(p, &pool()).is_ok()) std::abort();
    benchmark::DoNotOptimize(y.data());
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * w_bytes);
  state.counters["GFLOPS"] = benchmark::Counter(double(2 * m * n * k) * double(state.iterations()) * 1e-9,
                                                benchmark::Counter::kIsRate);
  state.SetLabel(type == ggml_id::F32 ? "f32" : ggml_type_traits(type)->name);
}

struct Shape {
  int64_t n, k;
  std::vector<uint32_t> types;  // native types of the model at this shape
};

void quant_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"n", "k", "m", "type"});
  const std::vector<Shape> shapes = {
      // SmolLM2-135M (Q4_1 projections, Q8_0 output): qkv, o, gate+up, down, output
      {960, 576, {ggml_id::Q4_1}},
      {576, 576, {ggml_id::Q4_1}},
      {3072, 576, {ggml_id::Q4_1}},
      {576, 1536, {ggml_id::Q4_1}},
      {49152, 576, {ggml_id::Q8_0}},
      // Qwen2.5-0.5B (Q5_0 / Q8_0 where k = 896, Q4_K / Q6_K for down): qkv, gate+up, down
      {1152, 896, {ggml_id::Q5_0, ggml_id::Q8_0}},
      {9728, 896, {ggml_id::Q5_0, ggml_id::Q8_0}},
      {896, 4864, {ggml_id::Q4_K, ggml_id::Q6_K}},
  };
  for (const Shape& s : shapes) {
    for (int64_t m : {1, 8, 512}) {
      if (m == 512 && s.n == 49152) continue;  // logits are computed for the last rows only
      b->Args({s.n, s.k, m, int64_t(ggml_id::F32)});
      for (uint32_t t : s.types) b->Args({s.n, s.k, m, int64_t(t)});
    }
  }
}

BENCHMARK(BM_QuantMatmul)->Apply(quant_args)->Unit(benchmark::kMicrosecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
