// The whole forward pass on the CUDA backend (bf16 weights, activations and KV) against the CPU
// backend (f32) for llama, qwen2 (q|k|v bias) and qwen3 (q/k norms): a prefill with every
// position's logits, then a batched decode step of two sequences (the fused q|k|v GEMM, the
// strided RoPE/KV write, the residual add + RMSNorm, f32 logits) and its greedy tokens picked on
// the device. Skipped where no CUDA device is present.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "backend/backend.h"
#include "model/model.h"
#include "tiny_model.h"

namespace gsa::model {
namespace {

double rel_error(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return INFINITY;
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

struct Side {
  std::unique_ptr<backend::Backend> be;
  std::unique_ptr<Model> model;
  std::unique_ptr<kv::KvCache> kv;
};

// Appends `toks` of one sequence to its table; one logits row per token when all_logits.
void add_seq(ForwardInput* in, kv::KvCache& kv, kv::BlockTable* table,
             const std::vector<int32_t>& toks, bool all_logits) {
  std::vector<int32_t> slots;
  ASSERT_TRUE(kv.reserve(table, int32_t(toks.size()), &slots).is_ok());
  const int bs = kv.config().block_size;
  const int32_t start = table->n_tokens - int32_t(toks.size());
  if (in->q_indptr.empty()) in->q_indptr.push_back(0), in->kv_indptr.push_back(0);
  const int32_t row0 = int32_t(in->tokens.size());
  for (size_t i = 0; i < toks.size(); ++i) {
    in->tokens.push_back(toks[i]);
    in->pos.push_back(start + int32_t(i));
    in->slots.push_back(slots[i]);
    if (all_logits || i + 1 == toks.size()) in->logit_rows.push_back(row0 + int32_t(i));
  }
  in->q_indptr.push_back(int32_t(in->tokens.size()));
  in->kv_indices.insert(in->kv_indices.end(), table->blocks.begin(), table->blocks.end());
  in->kv_indptr.push_back(int32_t(in->kv_indices.size()));
  in->kv_last_len.push_back(table->n_tokens - (int32_t(table->blocks.size()) - 1) * bs);
}

class CudaForwardTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (!backend::cuda_available()) GTEST_SKIP() << "no CUDA device";
  }
  ThreadPool pool_{2};
};

TEST_P(CudaForwardTest, PrefillAndBatchedDecodeMatchTheCpu) {
  testing::TinyModelSpec spec;
  spec.arch = GetParam();
  spec.tied = spec.arch != "qwen2";
  spec.n_layers = 3;
  spec.dim = 256;  // head_dim 64
  spec.n_heads = 4;
  spec.n_kv_heads = 2;
  spec.ffn_dim = 384;
  spec.seed = 11;
  auto f = gguf::GgufFile::from_bytes(testing::make_tiny_model(spec));
  ASSERT_TRUE(f.is_ok()) << f.status().to_string();

  Side cpu, gpu;
  cpu.be = backend::make_cpu_backend(&pool_);
  auto cb = backend::make_cuda_backend(0);
  ASSERT_TRUE(cb.is_ok()) << cb.status().to_string();
  gpu.be = std::move(cb).value();
  ModelOptions co;
  co.pool = &pool_;
  ModelOptions go = co;
  go.w_type = DType::BF16;
  go.act_type = DType::BF16;
  for (Side* s : {&cpu, &gpu}) {
    const bool is_gpu = s == &gpu;
    auto m = Model::load(*f, s->be.get(), is_gpu ? go : co);
    ASSERT_TRUE(m.is_ok()) << m.status().to_string();
    s->model = std::make_unique<Model>(std::move(m).value());
    const HParams& h = s->model->hparams();
    kv::KvConfig kc{h.n_layers, h.n_kv_heads, h.head_dim, 16, 32, is_gpu ? DType::BF16 : DType::F32, 0};
    auto kv = kv::KvCache::create(s->be.get(), kc);
    ASSERT_TRUE(kv.is_ok()) << kv.status().to_string();
    s->kv = std::make_unique<kv::KvCache>(std::move(kv).value());
  }
  const int vocab = cpu.model->hparams().vocab;
  std::vector<int32_t> a, b;
  for (int i = 0; i < 37; ++i) a.push_back((i * 53 + 7) % 256);
  for (int i = 0; i < 22; ++i) b.push_back((i * 29 + 101) % 256);

  // Prefill both prompts in one forward (every position's logits), then one decode step of both.
  std::vector<float> lc, lg;
  kv::BlockTable ta_c, tb_c, ta_g, tb_g;
  {
    ForwardInput ic, ig;
    add_seq(&ic, *cpu.kv, &ta_c, a, true);
    add_seq(&ic, *cpu.kv, &tb_c, b, true);
    add_seq(&ig, *gpu.kv, &ta_g, a, true);
    add_seq(&ig, *gpu.kv, &tb_g, b, true);
    ASSERT_TRUE(cpu.model->forward(ic, *cpu.kv, nullptr, {}, &lc).is_ok());
    ASSERT_TRUE(gpu.model->forward(ig, *gpu.kv, nullptr, {}, &lg).is_ok());
    ASSERT_EQ(lc.size(), size_t(a.size() + b.size()) * size_t(vocab));
    EXPECT_LT(rel_error(lg, lc), 5e-2) << "prefill logits";
  }
  const std::vector<int32_t> next = {17, 230};
  ForwardInput dc, dg;
  add_seq(&dc, *cpu.kv, &ta_c, {next[0]}, false);
  add_seq(&dc, *cpu.kv, &tb_c, {next[1]}, false);
  add_seq(&dg, *gpu.kv, &ta_g, {next[0]}, false);
  add_seq(&dg, *gpu.kv, &tb_g, {next[1]}, false);
  std::vector<float> dlc, dlg;
  ASSERT_TRUE(cpu.model->forward(dc, *cpu.kv, nullptr, {}, &dlc).is_ok());
  ASSERT_TRUE(gpu.model->forward(dg, *gpu.kv, nullptr, {}, &dlg).is_ok());
  EXPECT_LT(rel_error(dlg, dlc), 5e-2) << "decode logits";

  // One more decode step with the greedy tokens picked on the device: they must be the CPU's
  // argmax wherever the CPU's top-2 margin is clear of bf16 noise.
  ForwardInput dg2, dc2;
  add_seq(&dg2, *gpu.kv, &ta_g, {5}, false);
  add_seq(&dg2, *gpu.kv, &tb_g, {6}, false);
  add_seq(&dc2, *cpu.kv, &ta_c, {5}, false);
  add_seq(&dc2, *cpu.kv, &tb_c, {6}, false);
  std::vector<float> unused, cpu_logits;
  std::vector<int32_t> greedy;
  ASSERT_TRUE(gpu.model->forward(dg2, *gpu.kv, nullptr, {}, &unused, &greedy).is_ok());
  ASSERT_TRUE(cpu.model->forward(dc2, *cpu.kv, nullptr, {}, &cpu_logits).is_ok());
  ASSERT_EQ(greedy.size(), 2u);
  for (int s = 0; s < 2; ++s) {
    const float* row = cpu_logits.data() + size_t(s) * size_t(vocab);
    std::vector<float> sorted(row, row + vocab);
    std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<float>());
    const int32_t want = int32_t(std::max_element(row, row + vocab) - row);
    if (sorted[0] - sorted[1] > 0.05f * std::max(1.0f, std::fabs(sorted[0]))) {
      EXPECT_EQ(greedy[size_t(s)], want) << "sequence " << s;
    }
    EXPECT_GE(greedy[size_t(s)], 0);
    EXPECT_LT(greedy[size_t(s)], vocab);
  }
}

INSTANTIATE_TEST_SUITE_P(Archs, CudaForwardTest, ::testing::Values("llama", "qwen2", "qwen3"));

}  // namespace
}  // namespace gsa::model
