// Tokenizer throughput: encoding a ~100K-token text (cold word cache and warm), decoding, and
// streaming decode, with the default model's vocabulary when it is present (GSA_MODEL_DIR or
// ~/.cache/gsa/models). Reports tokens/s; never asserts.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <random>
#include <string>

#include "gguf/gguf.h"
#include "tokenizer/tokenizer.h"

namespace {

namespace tk = gsa::tokenizer;

std::string default_model_path() {
  const char* dir = std::getenv("GSA_MODEL_DIR");
  const char* home = std::getenv("HOME");
  const std::filesystem::path base =
      dir ? std::filesystem::path(dir)
          : std::filesystem::path(home ? home : "/root") / ".cache/gsa/models";
  return (base / "SmolLM2-135M-Instruct.Q4_1.gguf").string();
}

const tk::Tokenizer* default_tokenizer() {
  static const std::unique_ptr<tk::Tokenizer> tok = []() -> std::unique_ptr<tk::Tokenizer> {
    auto file = gsa::gguf::GgufFile::open(default_model_path());
    if (!file.is_ok()) return nullptr;
    auto t = tk::Tokenizer::from_gguf(*file);
    if (!t.is_ok()) return nullptr;
    return std::make_unique<tk::Tokenizer>(std::move(t).value());
  }();
  return tok.get();
}

// Pseudo-English with code, numbers and some CJK, from a fixed seed: about 100K tokens.
const std::string& sample_text() {
  static const std::string text = [] {
    const char* words[] = {"the",    "model",  "reads",   "every",  "block", "of",  "its",
                           "cache",  "when",   "context", "grows",  "long",  "and", "sparse",
                           "attention", "selects", "a",   "budget", "instead", "résumé",
                           "注意力",  "キャッシュ", "for",  "(int i = 0; i < n; ++i)", "x += 1;",
                           "2024",   "3.14159", "\n",     "\n\n    ", "don't", "they're"};
    std::mt19937 rng(7);
    std::string s;
    while (s.size() < 450000) {
      s += words[rng() % (sizeof(words) / sizeof(words[0]))];
      s += rng() % 9 == 0 ? ", " : " ";
      if (rng() % 50 == 0) s += std::to_string(rng());
    }
    return s;
  }();
  return text;
}

void BM_EncodeWarm(benchmark::State& state) {
  const tk::Tokenizer* tok = default_tokenizer();
  if (!tok) return state.SkipWithError("default model not found");
  size_t n = 0;
  for (auto _ : state) {
    auto ids = tok->encode(sample_text(), false, false);
    n = ids->size();
    benchmark::DoNotOptimize(ids->data());
  }
  state.counters["tokens"] = static_cast<double>(n);
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(n) * state.iterations(),
                                                  benchmark::Counter::kIsRate);
}

void BM_EncodeCold(benchmark::State& state) {
  // A fresh tokenizer per iteration: nothing cached from earlier runs.
  auto file = gsa::gguf::GgufFile::open(default_model_path());
  if (!file.is_ok()) return state.SkipWithError("default model not found");
  auto data = tk::Tokenizer::read_gguf(*file);
  size_t n = 0;
  for (auto _ : state) {
    state.PauseTiming();
    auto tok = tk::Tokenizer::from_data(*data);
    state.ResumeTiming();
    auto ids = tok->encode(sample_text(), false, false);
    n = ids->size();
    benchmark::DoNotOptimize(ids->data());
  }
  state.counters["tokens"] = static_cast<double>(n);
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(n) * state.iterations(),
                                                  benchmark::Counter::kIsRate);
}

void BM_Decode(benchmark::State& state) {
  const tk::Tokenizer* tok = default_tokenizer();
  if (!tok) return state.SkipWithError("default model not found");
  const auto ids = *tok->encode(sample_text(), false, false);
  for (auto _ : state) benchmark::DoNotOptimize(tok->decode(ids, false).size());
  state.counters["tokens/s"] = benchmark::Counter(
      static_cast<double>(ids.size()) * state.iterations(), benchmark::Counter::kIsRate);
}

void BM_StreamDecode(benchmark::State& state) {
  const tk::Tokenizer* tok = default_tokenizer();
  if (!tok) return state.SkipWithError("default model not found");
  const auto ids = *tok->encode(sample_text(), false, false);
  for (auto _ : state) {
    tk::StreamDecoder sd(*tok);
    size_t bytes = 0;
    for (int32_t id : ids) bytes += sd.push(id).size();
    benchmark::DoNotOptimize(bytes);
  }
  state.counters["tokens/s"] = benchmark::Counter(
      static_cast<double>(ids.size()) * state.iterations(), benchmark::Counter::kIsRate);
}

void BM_LoadFromGguf(benchmark::State& state) {
  auto file = gsa::gguf::GgufFile::open(default_model_path());
  if (!file.is_ok()) return state.SkipWithError("default model not found");
  for (auto _ : state) benchmark::DoNotOptimize(tk::Tokenizer::from_gguf(*file).is_ok());
}

BENCHMARK(BM_EncodeWarm)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_EncodeCold)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Decode)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_StreamDecode)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_LoadFromGguf)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
