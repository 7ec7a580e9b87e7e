// Dequantization throughput of every supported ggml format (Google Benchmark): one 4096 x 1024
// tensor of random blocks per type, serial and through a thread pool, reported as output floats
// per second and source bytes per second. Loading a model dequantizes hundreds of MB this way.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "core/thread_pool.h"
#include "gguf/gguf.h"

namespace {

using gsa::gguf::GgmlType;

constexpr int64_t kCols = 4096, kRows = 1024;

// Random block bytes with every f16/f32 field replaced by a finite scale, so the loops see the
// same data distribution as real weights (no NaN/inf slow paths).
std::vector<uint8_t> random_blocks(GgmlType t, int64_t n) {
  int64_t be = 0, bb = 0;
  gsa::gguf::ggml_type_layout(t, &be, &bb);
  std::vector<uint8_t> data(size_t(n / be * bb));
  std::mt19937 rng(42);
  for (auto& b : data) b = uint8_t(rng());
  if (be == 1) {  // plain types: fill with finite values
    std::vector<float> v(static_cast<size_t>(n));
    for (auto& x : v) x = float(int(rng() % 2001) - 1000) * 1e-3f;
    for (int64_t i = 0; i < n; ++i) {
      if (t == GgmlType::F16) {
        const uint16_t h = gsa::f32_to_f16(v[size_t(i)]);
        std::memcpy(&data[size_t(i) * 2], &h, 2);
      } else if (t == GgmlType::BF16) {
        const uint16_t h = gsa::f32_to_bf16(v[size_t(i)]);
        std::memcpy(&data[size_t(i) * 2], &h, 2);
      } else if (t == GgmlType::F32) {
        std::memcpy(&data[size_t(i) * 4], &v[size_t(i)], 4);
      }
    }
    return data;
  }
  const uint16_t d = gsa::f32_to_f16(0.01f);
  for (size_t b = 0; b < data.size(); b += size_t(bb)) {
    // Scale fields sit at the block start for most formats and at the end for Q2_K/Q3_K/Q6_K.
    std::memcpy(&data[b], &d, 2);
    if (bb >= 4) std::memcpy(&data[b + 2], &d, 2);
    std::memcpy(&data[b + size_t(bb) - 2], &d, 2);
    std::memcpy(&data[b + size_t(bb) - 4], &d, 2);
  }
  if (t == GgmlType::Q8_K) {
    const float f = 0.01f;
    for (size_t b = 0; b < data.size(); b += size_t(bb)) std::memcpy(&data[b], &f, 4);
  }
  return data;
}

void BM_Dequant(benchmark::State& state, GgmlType t, int threads) {
  const int64_t n = kCols * kRows;
  std::vector<uint8_t> src = random_blocks(t, n);
  gsa::gguf::GgufWriter w;
  w.add_tensor("t", {kCols, kRows}, t, src);
  gsa::Result<gsa::gguf::GgufFile> f = gsa::gguf::GgufFile::from_bytes(w.finish());
  if (!f.is_ok()) {
    state.SkipWithError(f.status().to_string().c_str());
    return;
  }
  std::vector<float> dst(static_cast<size_t>(n));
  gsa::ThreadPool pool(threads);
  const gsa::gguf::TensorInfo& info = f->tensors()[0];
  for (auto _ : state) {
    gsa::Status st = f->read_tensor_f32(info, dst.data(), pool.n_threads() > 1 ? &pool : nullptr);
    if (!st.is_ok()) {
      state.SkipWithError(st.to_string().c_str());
      return;
    }
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * n);
  state.SetBytesProcessed(state.iterations() * int64_t(info.n_bytes));
  state.SetLabel(gsa::gguf::ggml_type_name(t));
}

// Every tensor of the default model to f32, as a CPU backend does at load (skipped if absent).
void BM_DequantModel(benchmark::State& state, std::string path) {
  gsa::Result<gsa::gguf::GgufFile> f = gsa::gguf::GgufFile::open(path);
  if (!f.is_ok()) {
    state.SkipWithError(f.status().to_string().c_str());
    return;
  }
  int64_t max_elems = 0, total_elems = 0;
  uint64_t total_bytes = 0;
  for (const auto& t : f->tensors()) {
    max_elems = std::max(max_elems, t.n_elements());
    total_elems += t.n_elements();
    total_bytes += t.n_bytes;
  }
  std::vector<float> dst(static_cast<size_t>(max_elems));
  gsa::ThreadPool pool(0);
  for (auto _ : state) {
    for (const auto& t : f->tensors()) {
      gsa::Status st = f->read_tensor_f32(t, dst.data(), &pool);
      if (!st.is_ok()) {
        state.SkipWithError(st.to_string().c_str());
        return;
      }
    }
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * total_elems);
  state.SetBytesProcessed(state.iterations() * int64_t(total_bytes));
}

// Mapping and parsing the default model's header, metadata (150K values) and tensor index.
void BM_OpenModel(benchmark::State& state, std::string path) {
  for (auto _ : state) {
    gsa::Result<gsa::gguf::GgufFile> f = gsa::gguf::GgufFile::open(path);
    if (!f.is_ok()) {
      state.SkipWithError(f.status().to_string().c_str());
      return;
    }
    benchmark::DoNotOptimize(f->tensors().data());
  }
}

void register_all() {
  const GgmlType types[] = {GgmlType::F32,  GgmlType::F16,  GgmlType::BF16, GgmlType::Q8_0,
                            GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1,
                            GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K,
                            GgmlType::Q6_K, GgmlType::Q8_K, GgmlType::IQ4_NL, GgmlType::IQ4_XS};
  for (int threads : {1, 0}) {
    for (GgmlType t : types) {
      const std::string name = std::string("dequant/") + gsa::gguf::ggml_type_name(t) +
                               (threads == 1 ? "/serial" : "/pool");
      benchmark::RegisterBenchmark(name.c_str(), BM_Dequant, t, threads)
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
    }
  }
  const char* dir = std::getenv("GSA_MODEL_DIR");
  const char* home = std::getenv("HOME");
  const std::string path = (dir ? std::string(dir) : std::string(home ? home : "") + "/.cache/gsa/models") +
                           "/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (std::filesystem::exists(path)) {
    benchmark::RegisterBenchmark("open/model/SmolLM2-135M-Q4_1", BM_OpenModel, path)
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark("dequant/model/SmolLM2-135M-Q4_1", BM_DequantModel, path)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  }
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
