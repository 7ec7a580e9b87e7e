// A decode step's logits against the prefill logits at the same position (same tokens), so that
// a bug specific to the decode path (or the prefill path) fails here whatever the reference:
// for every weight format the backend runs (the native GGUF block formats, f32 and bf16) and
// batch sizes 1..8 (b sequences of different lengths decoded in one step), on tiny synthetic
// llama/qwen2 models and on SmolLM2-135M when its file is present; on the CPU, and on CUDA
// where a device is present. Why not bit-equality: prefill and decode take different kernels
// (see the tolerances below, measured).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>

#include "backend/backend.h"
#include "core/dtype.h"
#include "core/paths.h"
#include "core/quant_blocks.h"
#include "model/model.h"
#include "tiny_model.h"

namespace gsa::model {
namespace {

namespace fs = std::filesystem;

// How a model's matrices are held: GGUF blocks multiplied natively, or converted at load.
struct Format {
  std::string name;
  uint32_t ggml;       // the GGUF type of the file's matrices (tiny models), F32 for conversions
  bool native;         // ModelOptions::native_weights
  DType w_type;        // ModelOptions::w_type for converted matrices
};

const std::vector<Format>& tiny_formats() {
  static const std::vector<Format> f = {
      {"q8_0", ggml_id::Q8_0, true, DType::F32}, {"q4_0", ggml_id::Q4_0, true, DType::F32},
      {"q4_1", ggml_id::Q4_1, true, DType::F32}, {"q5_0", ggml_id::Q5_0, true, DType::F32},
      {"q5_1", ggml_id::Q5_1, true, DType::F32}, {"q4_K", ggml_id::Q4_K, true, DType::F32},
      {"q5_K", ggml_id::Q5_K, true, DType::F32}, {"q6_K", ggml_id::Q6_K, true, DType::F32},
      {"f32", ggml_id::F32, false, DType::F32},  {"bf16", ggml_id::F32, false, DType::BF16},
  };
  return f;
}

void st_f16(uint8_t* p, float v) {
  const uint16_t h = f32_to_f16(v);
  std::memcpy(p, &h, 2);
}

// Offsets of the f16 scale fields of a weight block (the rest of a block is any bytes).
std::vector<int> f16_fields(uint32_t type) {
  switch (type) {
    case ggml_id::Q4_1:
    case ggml_id::Q5_1:
    case ggml_id::Q4_K:
    case ggml_id::Q5_K: return {0, 2};
    case ggml_id::Q6_K: return {208};
    default: return {0};
  }
}

// n_elems of random valid blocks of `type` whose dequantized values have RMS `rms`: random
// quant bytes, f16 scales of either sign (the dequantized values are linear in the scales, so
// one measurement sets their magnitude).
std::vector<uint8_t> random_blocks(uint32_t type, int64_t n_elems, float rms, std::mt19937& rng) {
  const GgmlTypeTraits* t = ggml_type_traits(type);
  const int64_t n_blocks = n_elems / t->block_elems;
  std::vector<uint8_t> w(size_t(n_blocks * t->block_bytes));
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (auto& b : w) b = uint8_t(byte(rng));
  std::vector<float> scales;
  for (int64_t i = 0; i < n_blocks; ++i)
    for (size_t k = 0; k < f16_fields(type).size(); ++k) scales.push_back(u(rng));
  auto set_scales = [&](float c) {
    size_t s = 0;
    for (int64_t i = 0; i < n_blocks; ++i)
      for (int off : f16_fields(type)) st_f16(w.data() + i * t->block_bytes + off, scales[s++] * c);
  };
  set_scales(1.0f);
  std::vector<float> deq(static_cast<size_t>(n_elems));
  ggml_dequantize_blocks(type, w.data(), deq.data(), n_blocks);
  double ss = 0;
  for (float x : deq) ss += double(x) * x;
  set_scales(float(rms / std::sqrt(ss / double(n_elems))));
  return w;
}

// The tiny model of `spec` with every matrix stored as `type` (norms and biases stay F32).
std::vector<uint8_t> tiny_model_as(const testing::TinyModelSpec& spec, uint32_t type) {
  auto f = gguf::GgufFile::from_bytes(testing::make_tiny_model(spec));
  EXPECT_TRUE(f.is_ok()) << f.status().to_string();
  gguf::GgufWriter w;
  for (const auto& [k, v] : f->metadata()) w.set(k, v);
  std::mt19937 rng(uint32_t(spec.seed) * 7919u + type);
  for (const auto& t : f->tensors()) {
    std::vector<float> v(size_t(t.n_elements()));
    EXPECT_TRUE(f->read_tensor_f32(t, v.data()).is_ok());
    if (t.shape.size() != 2) {
      w.add_tensor_f32(t.name, t.shape, v);
      continue;
    }
    const auto gt = gguf::GgmlType(type);
    if (type == ggml_id::F32 || type == ggml_id::Q8_0 || type == ggml_id::Q4_0 || type == ggml_id::Q4_1) {
      EXPECT_TRUE(w.add_tensor_quantized(t.name, t.shape, gt, v).is_ok()) << t.name;
    } else {
      double ss = 0;
      for (float x : v) ss += double(x) * x;
      w.add_tensor(t.name, t.shape, gt,
                   random_blocks(type, t.n_elements(), float(std::sqrt(ss / double(v.size()))), rng));
    }
  }
  return w.finish();
}

// One backend with a model and a KV cache.
struct Rig {
  std::unique_ptr<backend::Backend> be;
  std::unique_ptr<Model> model;
  std::unique_ptr<kv::KvCache> kv;
  std::string device;
};

ThreadPool& pool() {
  static ThreadPool p(0);
  return p;
}

// Builds the rig; empty `device` in the result when the backend is absent.
Rig make_rig(const std::string& device, const gguf::GgufFile& f, const Format& fmt, int block_size,
             int n_blocks) {
  Rig r;
  ModelOptions mo;
  mo.pool = &pool();
  mo.native_weights = fmt.native;
  mo.w_type = fmt.w_type;
  if (device == "cuda") {
    auto cb = backend::make_cuda_backend(0);
    EXPECT_TRUE(cb.is_ok()) << cb.status().to_string();
    if (!cb.is_ok()) return r;
    r.be = std::move(cb).value();
    mo.act_type = DType::BF16;
    mo.w_type = DType::BF16;  // the CUDA backend's converted weights are bf16
  } else {
    r.be = backend::make_cpu_backend(&pool());
  }
  auto m = Model::load(f, r.be.get(), mo);
  EXPECT_TRUE(m.is_ok()) << fmt.name << ": " << m.status().to_string();
  if (!m.is_ok()) return r;
  r.model = std::make_unique<Model>(std::move(m).value());
  const HParams& h = r.model->hparams();
  kv::KvConfig kc{h.n_layers, h.n_kv_heads, h.head_dim, block_size, n_blocks, mo.act_type, 0};
  auto kv = kv::KvCache::create(r.be.get(), kc);
  EXPECT_TRUE(kv.is_ok()) << kv.status().to_string();
  if (!kv.is_ok()) return r;
  r.kv = std::make_unique<kv::KvCache>(std::move(kv).value());
  r.device = device;
  return r;
}

// Appends `toks` of one sequence (already holding table->n_tokens tokens) to `in`, with the
// logits of its last token wanted.
void add_seq(ForwardInput* in, kv::KvCache& kv, kv::BlockTable* table, const std::vector<int32_t>& toks) {
  std::vector<int32_t> slots;
  ASSERT_TRUE(kv.reserve(table, int32_t(toks.size()), &slots).is_ok());
  const int bs = kv.config().block_size;
  const int32_t start = table->n_tokens - int32_t(toks.size());
  if (in->q_indptr.empty()) in->q_indptr.push_back(0), in->kv_indptr.push_back(0);
  for (size_t i = 0; i < toks.size(); ++i) {
    in->tokens.push_back(toks[i]);
    in->pos.push_back(start + int32_t(i));
    in->slots.push_back(slots[i]);
  }
  in->logit_rows.push_back(int32_t(in->tokens.size()) - 1);
  in->q_indptr.push_back(int32_t(in->tokens.size()));
  in->kv_indices.insert(in->kv_indices.end(), table->blocks.begin(), table->blocks.end());
  in->kv_indptr.push_back(int32_t(in->kv_indices.size()));
  in->kv_last_len.push_back(table->n_tokens - (int32_t(table->blocks.size()) - 1) * bs);
}

struct Diff {
  double max_abs = 0;  // max |decode - prefill| over the vocabulary
  double scale = 0;    // max |prefill logit|
};

Diff diff(const float* decode, const float* prefill, int vocab) {
  Diff d;
  for (int v = 0; v < vocab; ++v) {
    d.max_abs = std::max(d.max_abs, std::fabs(double(decode[v]) - prefill[v]));
    d.scale = std::max(d.scale, std::fabs(double(prefill[v])));
  }
  return d;
}

// The logits of the last token of `seq` prefilled alone from an empty table, in forwards of at
// most `chunk` tokens (as the engine's prefill chunks).
std::vector<float> prefill_last(Rig& r, const std::vector<int32_t>& seq, size_t chunk) {
  kv::BlockTable t;
  std::vector<float> logits;
  for (size_t start = 0; start < seq.size(); start += chunk) {
    ForwardInput in;
    const size_t end = std::min(seq.size(), start + chunk);
    add_seq(&in, *r.kv, &t, std::vector<int32_t>(seq.begin() + long(start), seq.begin() + long(end)));
    EXPECT_TRUE(r.model->forward(in, *r.kv, nullptr, {}, &logits).is_ok());
  }
  r.kv->release(&t);
  return logits;
}

// Rows of x up to which the CPU matmul keeps its decode kernels (matmul.cpp kTiledMaxRows):
// prefill chunks of this size run the same matmul code as a decode step.
constexpr size_t kDecodeKernelRows = 64;

struct Diffs {
  std::vector<std::vector<Diff>> whole;    // [b-1][i]: against the prefill of the whole sequence
  std::vector<std::vector<Diff>> chunked;  // [b-1][i]: against prefill in 64-token chunks
};

// Sequences i = 0..7 of lengths lens[i] + 1: the prefill logits of each whole sequence (alone)
// at its last position, against one decode step at that position with sequences 0..b-1 batched,
// after their first lens[i] tokens were prefilled.
Diffs decode_vs_prefill(Rig& r, const std::vector<std::vector<int32_t>>& seqs) {
  const int vocab = r.model->hparams().vocab;
  const size_t n = seqs.size();
  std::vector<std::vector<float>> whole(n), chunked(n);
  for (size_t i = 0; i < n; ++i) {
    chunked[i] = prefill_last(r, seqs[i], kDecodeKernelRows);
    whole[i] = seqs[i].size() <= kDecodeKernelRows ? chunked[i] : prefill_last(r, seqs[i], seqs[i].size());
  }
  // Prefill every prefix in 64-token chunks, so that against `chunked` every product of the
  // prefix and of the decode step went through the same matmul code.
  std::vector<kv::BlockTable> tables(n);
  for (size_t i = 0; i < n; ++i) {
    for (size_t start = 0; start + 1 < seqs[i].size(); start += kDecodeKernelRows) {
      const size_t end = std::min(seqs[i].size() - 1, start + kDecodeKernelRows);
      ForwardInput in;
      add_seq(&in, *r.kv, &tables[i], std::vector<int32_t>(seqs[i].begin() + long(start), seqs[i].begin() + long(end)));
      std::vector<float> unused;
      EXPECT_TRUE(r.model->forward(in, *r.kv, nullptr, {}, &unused).is_ok());
    }
  }
  std::vector<int32_t> slot(n);  // the decode position's KV slot, reserved once per sequence
  {
    ForwardInput all;
    for (size_t i = 0; i < n; ++i) {
      add_seq(&all, *r.kv, &tables[i], {seqs[i].back()});
      slot[i] = all.slots.back();
    }
  }
  Diffs out;
  for (size_t b = 1; b <= n; ++b) {
    // Each decode writes the same K/V into the same slot before its attention reads it, so one
    // set of prefixes serves every batch size.
    ForwardInput in;
    in.q_indptr.push_back(0);
    in.kv_indptr.push_back(0);
    const int bs = r.kv->config().block_size;
    for (size_t i = 0; i < b; ++i) {
      in.tokens.push_back(seqs[i].back());
      in.pos.push_back(int32_t(seqs[i].size()) - 1);
      in.slots.push_back(slot[i]);
      in.logit_rows.push_back(int32_t(i));
      in.q_indptr.push_back(int32_t(i) + 1);
      in.kv_indices.insert(in.kv_indices.end(), tables[i].blocks.begin(), tables[i].blocks.end());
      in.kv_indptr.push_back(int32_t(in.kv_indices.size()));
      in.kv_last_len.push_back(tables[i].n_tokens - (int32_t(tables[i].blocks.size()) - 1) * bs);
    }
    std::vector<float> logits;
    EXPECT_TRUE(r.model->forward(in, *r.kv, nullptr, {}, &logits).is_ok());
    EXPECT_EQ(logits.size(), b * size_t(vocab));
    if (logits.size() != b * size_t(vocab)) break;
    out.whole.emplace_back();
    out.chunked.emplace_back();
    for (size_t i = 0; i < b; ++i) {
      out.whole.back().push_back(diff(logits.data() + i * size_t(vocab), whole[i].data(), vocab));
      out.chunked.back().push_back(diff(logits.data() + i * size_t(vocab), chunked[i].data(), vocab));
    }
  }
  for (auto& t : tables) r.kv->release(&t);
  return out;
}

std::vector<std::vector<int32_t>> make_seqs(const std::vector<int>& lens, int vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> tok(0, vocab - 1);
  std::vector<std::vector<int32_t>> out;
  for (int len : lens) {
    std::vector<int32_t> s;
    for (int i = 0; i <= len; ++i) s.push_back(tok(rng));
    out.push_back(std::move(s));
  }
  return out;
}

// Checks every (batch, sequence) diff against tol * max(1, scale); prints the worst per batch.
void expect_close(const std::string& what, const std::vector<std::vector<Diff>>& diffs,
                  const std::vector<int>& lens, double tol) {
  double worst_rel = 0;
  for (size_t b = 0; b < diffs.size(); ++b) {
    double batch_worst = 0;
    for (size_t i = 0; i < diffs[b].size(); ++i) {
      const Diff& d = diffs[b][i];
      const double rel = d.max_abs / std::max(1.0, d.scale);
      batch_worst = std::max(batch_worst, rel);
      EXPECT_LE(rel, tol) << what << " batch " << b + 1 << " sequence " << i << " (position "
                          << lens[i] << "): max |decode - prefill| " << d.max_abs
                          << " over logits up to " << d.scale;
    }
    worst_rel = std::max(worst_rel, batch_worst);
  }
  std::printf("[ decode=prefill ] %-52s worst max|diff|/max(1,max|logit|) over batches 1..%zu: %.3g "
              "(tolerance %.3g)\n", what.c_str(), diffs.size(), worst_rel, tol);
}

// Tolerances, relative to max(1, max |logit|), from measurement (the printed worst cases):
// - CPU, against prefill in 64-token chunks (prefix and reference): every product runs the
//   decode step's matmul code (up to 64 rows: 8-bit activations for the GGUF formats as in
//   llama.cpp, the tiled f32 kernel otherwise), so only the attention kernels (prefill vs
//   decode) may round differently. Measured 0 to 1.7e-7 for every format on CPUs without
//   AVX-512. With AVX-512 the f32 tiled kernel multiplies 4 rows of x at a time (tile4x4, 16
//   accumulators) and the 1-3 rows left over one at a time (dot4), so the same row sums in another
//   order when its place in the batch differs: SmolLM2 f32 position 1, decode batches 4-8 against
//   a 2-row chunk, measured 3.9e-6. The GGUF formats (integer dot products) stay at 0.
// - CPU, f32/bf16 weights, against a whole-sequence prefill: past 64 rows the prefill may run
//   sgemm (where OpenBLAS has AVX-512 kernels) instead of the tiled kernel: summation order
//   only. Measured <= 1.5e-6.
// - CPU, native GGUF formats, against a whole-sequence prefill: past 64 rows the prefill
//   multiplies dequantized weights by f32 activations (matmul.cpp, faster there) while decode
//   rounds activations to 8 bits first, so those positions compare two roundings of the
//   activations. Measured <= 3.5e-2 (tiny random models), 2.4e-2 (SmolLM2).
// - CUDA: bf16 activations and KV; prefill GEMMs and attention on tensor cores vs decode GEMV and
//   paged decode attention round differently. Measured <= TBD.
double tolerance(const std::string& device, const Format& fmt, bool chunked) {
  if (device == "cuda") return 6e-2;
  if (chunked) return fmt.native ? 2e-6 : 1e-5;
  return fmt.native ? 5e-2 : 2e-5;
}

void expect_close_both(const std::string& what, const Diffs& d, const std::vector<int>& lens,
                       const std::string& device, const Format& fmt) {
  expect_close(what + " vs prefill", d.whole, lens, tolerance(device, fmt, false));
  expect_close(what + " vs 64-chunk prefill", d.chunked, lens, tolerance(device, fmt, true));
}

struct Case {
  std::string device;
  std::string arch;
};

class DecodeVsPrefill : public ::testing::TestWithParam<Case> {};

TEST_P(DecodeVsPrefill, TinyModelEveryFormat) {
  const Case& c = GetParam();
  if (c.device == "cuda" && !backend::cuda_available()) GTEST_SKIP() << "no CUDA device";
  testing::TinyModelSpec spec;
  spec.arch = c.arch;
  spec.tied = c.arch != "qwen2";
  spec.n_layers = 2;
  spec.dim = 256;  // K-quant super-blocks need rows of 256; head_dim 64
  spec.n_heads = 4;
  spec.n_kv_heads = 2;
  spec.ffn_dim = 512;
  spec.seed = 5;
  // Lengths on both sides of the 64-row matmul switch and of 16-token block boundaries.
  const std::vector<int> lens = {1, 15, 16, 40, 63, 64, 100, 161};
  for (const Format& fmt : tiny_formats()) {
    auto f = gguf::GgufFile::from_bytes(tiny_model_as(spec, fmt.ggml));
    ASSERT_TRUE(f.is_ok()) << fmt.name << ": " << f.status().to_string();
    Rig r = make_rig(c.device, *f, fmt, 16, 64);
    if (r.device.empty()) continue;  // the backend does not take this format (reported above)
    const auto seqs = make_seqs(lens, r.model->hparams().vocab, 17);
    expect_close_both(c.device + " " + c.arch + " " + fmt.name, decode_vs_prefill(r, seqs), lens,
                      c.device, fmt);
  }
}

TEST_P(DecodeVsPrefill, SmolLM2) {
  const Case& c = GetParam();
  if (c.arch != "llama") GTEST_SKIP() << "SmolLM2 runs once per device";
  if (c.device == "cuda" && !backend::cuda_available()) GTEST_SKIP() << "no CUDA device";
  const std::string path = model_dir() + "/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!fs::exists(path)) GTEST_SKIP() << path << " absent (scripts/fetch-model smollm2-135m)";
  auto f = gguf::GgufFile::open(path);
  ASSERT_TRUE(f.is_ok()) << f.status().to_string();
  // Short, to keep CI time low (the tiny models cover the longer, block-crossing cases); 65
  // crosses the 64-row switch and a 64-token block.
  const std::vector<int> lens = {1, 3, 6, 10, 17, 33, 64, 65};
  const std::vector<Format> formats = {{"native", ggml_id::Q4_1, true, DType::F32},
                                       {"f32", ggml_id::F32, false, DType::F32},
                                       {"bf16", ggml_id::F32, false, DType::BF16}};
  for (const Format& fmt : formats) {
    if (c.device == "cuda" && fmt.name == "f32") continue;  // converted weights are bf16 there
    Rig r = make_rig(c.device, *f, fmt, 64, 64);
    ASSERT_FALSE(r.device.empty());
    const auto seqs = make_seqs(lens, r.model->hparams().vocab, 23);
    const auto diffs = decode_vs_prefill(r, seqs);
    expect_close_both(c.device + " smollm2-135m " + fmt.name, diffs, lens, c.device, fmt);
  }
}

// The CPU build of this file is labelled `model`; the CUDA build (GSA_DECODE_PREFILL_CUDA) `cuda`.
#ifdef GSA_DECODE_PREFILL_CUDA
constexpr const char* kDevice = "cuda";
#else
constexpr const char* kDevice = "cpu";
#endif
INSTANTIATE_TEST_SUITE_P(Backends, DecodeVsPrefill,
                         ::testing::Values(Case{kDevice, "llama"}, Case{kDevice, "qwen2"}),
                         [](const auto& info) { return info.param.device + "_" + info.param.arch; });

}  // namespace
}  // namespace gsa::model
