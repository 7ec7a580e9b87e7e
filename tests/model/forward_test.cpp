// The forward pass against a naive reference written here from the architecture definitions
// (plain loops over dequantized weights, full causal attention), for llama, qwen2 and qwen3;
// and prefill-vs-decode consistency through the paged KV cache.
#include "model/model.h"

#include <gtest/gtest.h>

#include <cmath>

#include "tiny_model.h"

namespace gsa::model {
namespace {

using Mat = std::vector<float>;

struct Ref {
  const gguf::GgufFile& f;
  HParams h;
  Mat w(const std::string& name) const {
    const gguf::TensorInfo* t = f.find_tensor(name);
    EXPECT_NE(t, nullptr) << name;
    Mat out(size_t(t->n_elements()));
    EXPECT_TRUE(f.read_tensor_f32(*t, out.data()).is_ok());
    return out;
  }
  bool has(const std::string& name) const { return f.find_tensor(name) != nullptr; }
  // y[out] = W[out, in] x[in]
  static Mat mv(const Mat& W, const Mat& x, int out) {
    const int in = int(x.size());
    Mat y(size_t(out), 0.0f);
    for (int o = 0; o < out; ++o) {
      double acc = 0;
      for (int i = 0; i < in; ++i) acc += double(W[size_t(o) * in + i]) * x[size_t(i)];
      y[size_t(o)] = float(acc);
    }
    return y;
  }
  Mat rms(const Mat& x, const Mat& g, size_t off, int n) const {
    double ss = 0;
    for (int i = 0; i < n; ++i) ss += double(x[off + i]) * x[off + i];
    const double r = 1.0 / std::sqrt(ss / n + h.norm_eps);
    Mat y(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) y[size_t(i)] = float(x[off + i] * r * g[size_t(i)]);
    return y;
  }
  void rope(float* v, int pos) const {
    const int rd = h.rot_dim;
    for (int i = 0; i < rd / 2; ++i) {
      const double ang = pos * std::pow(double(h.rope_theta), -2.0 * i / rd);
      const int a = h.rope_neox ? i : 2 * i;
      const int b = h.rope_neox ? i + rd / 2 : 2 * i + 1;
      const double x0 = v[a], x1 = v[b];
      v[a] = float(x0 * std::cos(ang) - x1 * std::sin(ang));
      v[b] = float(x0 * std::sin(ang) + x1 * std::cos(ang));
    }
  }
  // Logits [T, vocab] for a whole prompt.
  Mat run(const std::vector<int32_t>& toks) const {
    const int T = int(toks.size()), D = h.dim, hd = h.head_dim;
    const Mat emb = w("token_embd.weight");
    std::vector<Mat> x(static_cast<size_t>(T));
    for (int t = 0; t < T; ++t)
      x[size_t(t)] = Mat(emb.begin() + long(toks[size_t(t)]) * D, emb.begin() + long(toks[size_t(t)] + 1) * D);
    for (int l = 0; l < h.n_layers; ++l) {
      const std::string p = "blk." + std::to_string(l) + ".";
      const Mat an = w(p + "attn_norm.weight"), wq = w(p + "attn_q.weight"),
                wk = w(p + "attn_k.weight"), wv = w(p + "attn_v.weight"),
                wo = w(p + "attn_output.weight"), fn = w(p + "ffn_norm.weight"),
                wg = w(p + "ffn_gate.weight"), wu = w(p + "ffn_up.weight"),
                wd = w(p + "ffn_down.weight");
      std::vector<Mat> q(static_cast<size_t>(T)), k(static_cast<size_t>(T)), v(static_cast<size_t>(T));
      for (int t = 0; t < T; ++t) {
        const Mat xn = rms(x[size_t(t)], an, 0, D);
        q[size_t(t)] = mv(wq, xn, h.q_dim());
        k[size_t(t)] = mv(wk, xn, h.kv_dim());
        v[size_t(t)] = mv(wv, xn, h.kv_dim());
        if (h.qkv_bias) {
          const Mat bq = w(p + "attn_q.bias"), bk = w(p + "attn_k.bias"), bv = w(p + "attn_v.bias");
          for (int i = 0; i < h.q_dim(); ++i) q[size_t(t)][size_t(i)] += bq[size_t(i)];
          for (int i = 0; i < h.kv_dim(); ++i) k[size_t(t)][size_t(i)] += bk[size_t(i)], v[size_t(t)][size_t(i)] += bv[size_t(i)];
        }
        if (h.qk_norm) {
          const Mat qn = w(p + "attn_q_norm.weight"), kn = w(p + "attn_k_norm.weight");
          for (int hh = 0; hh < h.n_heads; ++hh) {
            Mat y = rms(q[size_t(t)], qn, size_t(hh) * hd, hd);
            std::copy(y.begin(), y.end(), q[size_t(t)].begin() + long(hh) * hd);
          }
          for (int hh = 0; hh < h.n_kv_heads; ++hh) {
            Mat y = rms(k[size_t(t)], kn, size_t(hh) * hd, hd);
            std::copy(y.begin(), y.end(), k[size_t(t)].begin() + long(hh) * hd);
          }
        }
        for (int hh = 0; hh < h.n_heads; ++hh) rope(q[size_t(t)].data() + hh * hd, t);
        for (int hh = 0; hh < h.n_kv_heads; ++hh) rope(k[size_t(t)].data() + hh * hd, t);
      }
      const int group = h.n_heads / h.n_kv_heads;
      for (int t = 0; t < T; ++t) {
        Mat att(static_cast<size_t>(h.q_dim()), 0.0f);
        for (int hh = 0; hh < h.n_heads; ++hh) {
          const int kh = hh / group;
          std::vector<double> s(size_t(t + 1));
          double mx = -1e300;
          for (int j = 0; j <= t; ++j) {
            double d = 0;
            for (int i = 0; i < hd; ++i) d += double(q[size_t(t)][size_t(hh * hd + i)]) * k[size_t(j)][size_t(kh * hd + i)];
            s[size_t(j)] = d / std::sqrt(double(hd));
            mx = std::max(mx, s[size_t(j)]);
          }
          double z = 0;
          for (auto& e : s) z += (e = std::exp(e - mx));
          for (int i = 0; i < hd; ++i) {
            double acc = 0;
            for (int j = 0; j <= t; ++j) acc += s[size_t(j)] * v[size_t(j)][size_t(kh * hd + i)];
            att[size_t(hh * hd + i)] = float(acc / z);
          }
        }
        const Mat o = mv(wo, att, D);
        for (int i = 0; i < D; ++i) x[size_t(t)][size_t(i)] += o[size_t(i)];
        const Mat xn = rms(x[size_t(t)], fn, 0, D);
        const Mat g = mv(wg, xn, h.ffn_dim), u = mv(wu, xn, h.ffn_dim);
        Mat a(static_cast<size_t>(h.ffn_dim));
        for (int i = 0; i < h.ffn_dim; ++i) a[size_t(i)] = float(g[size_t(i)] / (1 + std::exp(-double(g[size_t(i)]))) * u[size_t(i)]);
        const Mat d = mv(wd, a, D);
        for (int i = 0; i < D; ++i) x[size_t(t)][size_t(i)] += d[size_t(i)];
      }
    }
    const Mat on = w("output_norm.weight");
    const Mat out = has("output.weight") ? w("output.weight") : emb;
    Mat logits;
    for (int t = 0; t < T; ++t) {
      const Mat y = mv(out, rms(x[size_t(t)], on, 0, D), h.vocab);
      logits.insert(logits.end(), y.begin(), y.end());
    }
    return logits;
  }
};

class ForwardTest : public ::testing::TestWithParam<std::string> {
 protected:
  ThreadPool pool_{2};
  std::unique_ptr<backend::Backend> be_ = backend::make_cpu_backend(&pool_);
};

// Builds the ForwardInput of `toks` appended to `table` (already holding `table->n_tokens`).
ForwardInput make_input(kv::KvCache& kv, kv::BlockTable* table, const std::vector<int32_t>& toks,
                        bool all_logits) {
  ForwardInput in;
  std::vector<int32_t> slots;
  EXPECT_TRUE(kv.reserve(table, int32_t(toks.size()), &slots).is_ok());
  const int bs = kv.config().block_size;
  const int32_t start = table->n_tokens - int32_t(toks.size());
  in.tokens = toks;
  for (size_t i = 0; i < toks.size(); ++i) in.pos.push_back(start + int32_t(i));
  in.slots = slots;
  in.q_indptr = {0, int32_t(toks.size())};
  in.kv_indptr = {0, int32_t(table->blocks.size())};
  in.kv_indices = table->blocks;
  in.kv_last_len = {table->n_tokens - (int32_t(table->blocks.size()) - 1) * bs};
  for (size_t i = 0; i < toks.size(); ++i)
    if (all_logits || i + 1 == toks.size()) in.logit_rows.push_back(int32_t(i));
  return in;
}

TEST_P(ForwardTest, MatchesNaiveReferenceAndDecodeMatchesPrefill) {
  testing::TinyModelSpec spec;
  spec.arch = GetParam();
  spec.tied = spec.arch != "qwen2";
  auto f = gguf::GgufFile::from_bytes(testing::make_tiny_model(spec));
  ASSERT_TRUE(f.is_ok()) << f.status().to_string();
  auto m = Model::load(*f, be_.get(), {});
  ASSERT_TRUE(m.is_ok()) << m.status().to_string();
  const HParams& h = m->hparams();
  EXPECT_EQ(h.rope_neox, spec.arch != "llama");

  const std::vector<int32_t> toks = {5, 77, 200, 13, 64, 65, 250, 3, 9, 120, 33};
  const Mat ref = Ref{*f, h}.run(toks);

  kv::KvConfig kc{h.n_layers, h.n_kv_heads, h.head_dim, 4, 16, DType::F32, 0};
  auto kv = kv::KvCache::create(be_.get(), kc);
  ASSERT_TRUE(kv.is_ok());
  kv::BlockTable table;
  std::vector<float> logits;
  ForwardInput in = make_input(*kv, &table, toks, true);
  ASSERT_TRUE(m->forward(in, *kv, nullptr, {}, &logits).is_ok());
  ASSERT_EQ(logits.size(), ref.size());
  double max_diff = 0, max_ref = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    max_diff = std::max(max_diff, double(std::fabs(logits[i] - ref[i])));
    max_ref = std::max(max_ref, double(std::fabs(ref[i])));
  }
  EXPECT_LT(max_diff, 1e-3 * std::max(1.0, max_ref)) << "max |diff| " << max_diff;

  // Token-by-token decode through a second cache reproduces every position's logits.
  auto kv2 = kv::KvCache::create(be_.get(), kc);
  ASSERT_TRUE(kv2.is_ok());
  kv::BlockTable t2;
  for (size_t i = 0; i < toks.size(); ++i) {
    std::vector<float> step;
    ForwardInput one = make_input(*kv2, &t2, {toks[i]}, true);
    ASSERT_TRUE(m->forward(one, *kv2, nullptr, {}, &step).is_ok());
    for (int v = 0; v < h.vocab; ++v)
      ASSERT_NEAR(step[size_t(v)], logits[i * size_t(h.vocab) + size_t(v)], 1e-4) << "pos " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Archs, ForwardTest, ::testing::Values("llama", "qwen2", "qwen3"));

TEST(ModelLoad, MissingOrMisshapenTensorsAreNamed) {
  ThreadPool pool(1);
  auto be = backend::make_cpu_backend(&pool);
  testing::TinyModelSpec spec;
  auto bytes = testing::make_tiny_model(spec);
  auto f = gguf::GgufFile::from_bytes(bytes);
  ASSERT_TRUE(f.is_ok());
  // Rebuild the file without blk.1.ffn_up.weight.
  gguf::GgufWriter w;
  for (const auto& [k, v] : f->metadata()) w.set(k, v);
  for (const auto& t : f->tensors()) {
    if (t.name == "blk.1.ffn_up.weight") continue;
    std::vector<uint8_t> data(f->tensor_data(t), f->tensor_data(t) + t.n_bytes);
    std::vector<int64_t> shape = t.shape;
    if (t.name == "blk.0.attn_k.weight") shape = {shape[1], shape[0]};
    w.add_tensor(t.name, shape, t.type, data);
  }
  auto g = gguf::GgufFile::from_bytes(w.finish());
  ASSERT_TRUE(g.is_ok()) << g.status().to_string();
  auto m = Model::load(*g, be.get(), {});
  ASSERT_FALSE(m.is_ok());
  EXPECT_NE(m.status().message().find("blk.0.attn_k.weight"), std::string::npos) << m.status().message();
}

TEST(ModelLoad, UnsupportedArchitectureIsRefused) {
  ThreadPool pool(1);
  auto be = backend::make_cpu_backend(&pool);
  gguf::GgufWriter w;
  w.set_string("general.architecture", "mamba");
  auto f = gguf::GgufFile::from_bytes(w.finish());
  ASSERT_TRUE(f.is_ok());
  auto m = Model::load(*f, be.get(), {});
  ASSERT_FALSE(m.is_ok());
  EXPECT_EQ(m.status().code(), StatusCode::Unsupported);
  EXPECT_NE(m.status().message().find("mamba"), std::string::npos);
}

}  // namespace
}  // namespace gsa::model
