// The GSA end-to-end invariant with the CPU attention op: sparse decode with a budget covering
// every block is bit-identical to dense decode (every representation, both scopes), and a real
// sparse budget attends exactly the selected blocks (checked against a double-precision
// softmax over those blocks' keys).
#include <gtest/gtest.h>

#include <cstring>

#include "backend/cpu/cpu_kernels.h"
#include "sparse/selector.h"
#include "sparse_test_util.h"

namespace gsa::sparse::test {
namespace {

constexpr int kHeads = 6, kKv = 2, kHd = 32, kBs = 16;

struct Decode {
  Batch batch;
  std::vector<float> v_cache, q, reps;
  std::vector<int32_t> q_indptr, q_pos;
};

Decode make_decode(uint32_t seed, backend::RepKind kind, const std::vector<float>& hash_w) {
  std::mt19937 rng(seed);
  Decode d;
  d.batch = make_batch(rng, {16 * 30 + 7, 16 * 25, 16 * 41 + 1}, kKv, kHd, kBs);
  d.v_cache = random_vec(rng, d.batch.k_cache.size());
  d.q = random_vec(rng, size_t(d.batch.n_seqs()) * kHeads * kHd, -2.0f, 2.0f);
  for (int s = 0; s <= d.batch.n_seqs(); ++s) d.q_indptr.push_back(s);
  for (int s = 0; s < d.batch.n_seqs(); ++s) d.q_pos.push_back(d.batch.seq_len[size_t(s)] - 1);
  const int64_t rb = backend::rep_bytes(kind, kHd, kBs);
  d.reps.assign(size_t(d.batch.n_phys * kKv * rb / 4), 0.0f);
  std::vector<int32_t> all(size_t(d.batch.n_phys));
  std::iota(all.begin(), all.end(), 0);
  backend::RepUpdateParams u;
  u.k_cache = d.batch.k_cache.data();
  u.reps = d.reps.data();
  u.blocks = all.data();
  u.n_update = d.batch.n_phys;
  u.n_kv_heads = kKv;
  u.head_dim = kHd;
  u.block_size = kBs;
  u.kind = kind;
  u.hash_w = hash_w.empty() ? nullptr : hash_w.data();
  EXPECT_TRUE(cpu::rep_update(u, nullptr).is_ok());
  return d;
}

std::vector<SeqInput> inputs(const Batch& b) {
  std::vector<SeqInput> v;
  for (int s = 0; s < b.n_seqs(); ++s) v.push_back({s, b.seq_len[size_t(s)], b.table(s), b.n_blocks(s)});
  return v;
}

std::vector<float> attend(const Decode& d, const int32_t* indptr, const int32_t* indices,
                          const int32_t* last_len, bool per_kv_head, ThreadPool* pool) {
  std::vector<float> out(d.q.size(), std::numeric_limits<float>::quiet_NaN());
  backend::AttentionParams p;
  p.q = d.q.data();
  p.k_cache = d.batch.k_cache.data();
  p.v_cache = d.v_cache.data();
  p.out = out.data();
  p.q_indptr = d.q_indptr.data();
  p.q_pos = d.q_pos.data();
  p.kv_indptr = indptr;
  p.kv_indices = indices;
  p.kv_last_len = last_len;
  p.n_seqs = d.batch.n_seqs();
  p.n_tokens = d.batch.n_seqs();
  p.n_blocks = d.batch.n_phys;
  p.n_heads = kHeads;
  p.n_kv_heads = kKv;
  p.head_dim = kHd;
  p.block_size = kBs;
  p.per_kv_head = per_kv_head;
  Status st = cpu::attention(p, pool);
  EXPECT_TRUE(st.is_ok()) << st.to_string();
  return out;
}

std::vector<float> dense_attend(const Decode& d, ThreadPool* pool) {
  std::vector<int32_t> last_len;
  for (int s = 0; s < d.batch.n_seqs(); ++s)
    last_len.push_back(d.batch.seq_len[size_t(s)] - (d.batch.n_blocks(s) - 1) * kBs);
  return attend(d, d.batch.bt_indptr.data(), d.batch.block_table.data(), last_len.data(), false,
                pool);
}

struct Variant {
  backend::RepKind kind;
  Scope scope;
};

class SparseEqualsDense : public ::testing::TestWithParam<Variant> {};

TEST_P(SparseEqualsDense, BudgetCoveringEveryBlockIsBitIdentical) {
  SparseConfig c;
  c.block_size = kBs;
  c.representation = GetParam().kind;
  c.scope = GetParam().scope;
  c.min_context = 0;
  c.budget_tokens = kBs * 4096;  // more blocks than any sequence has
  ThreadPool pool(2);
  auto sel = Selector::create(c, {1, kHeads, kKv, kHd}, &pool);
  ASSERT_TRUE(sel.is_ok()) << sel.status().to_string();
  Decode d = make_decode(21, c.representation, (*sel)->hash_matrix());
  std::vector<SeqInput> in = inputs(d.batch);
  ASSERT_TRUE((*sel)->begin_step(in).is_ok());
  auto bl = (*sel)->select_layer(0, d.q.data(), d.reps.data());
  ASSERT_TRUE(bl.is_ok()) << bl.status().to_string();
  for (int s = 0; s < d.batch.n_seqs(); ++s) EXPECT_EQ((*sel)->source(s, 0), ListSource::Selected);
  std::vector<float> sparse = attend(d, bl->indptr, bl->indices, bl->last_len, bl->per_kv_head, &pool);
  std::vector<float> dense = dense_attend(d, &pool);
  ASSERT_EQ(sparse.size(), dense.size());
  EXPECT_EQ(0, std::memcmp(sparse.data(), dense.data(), dense.size() * sizeof(float)));
}

INSTANTIATE_TEST_SUITE_P(All, SparseEqualsDense,
                         ::testing::Values(Variant{backend::RepKind::Mean, Scope::PerLayer},
                                           Variant{backend::RepKind::MinMax, Scope::PerLayer},
                                           Variant{backend::RepKind::Hash, Scope::PerLayer},
                                           Variant{backend::RepKind::Mean, Scope::PerKvHead}));

TEST(SparseAttention, AttendsExactlyTheSelectedBlocks) {
  for (Scope scope : {Scope::PerLayer, Scope::PerKvHead}) {
    SparseConfig c;
    c.block_size = kBs;
    c.scope = scope;
    c.min_context = 0;
    c.budget_tokens = 7 * kBs;
    auto sel = Selector::create(c, {1, kHeads, kKv, kHd}, nullptr);
    ASSERT_TRUE(sel.is_ok());
    Decode d = make_decode(22, c.representation, {});
    std::vector<SeqInput> in = inputs(d.batch);
    ASSERT_TRUE((*sel)->begin_step(in).is_ok());
    auto bl = (*sel)->select_layer(0, d.q.data(), d.reps.data());
    ASSERT_TRUE(bl.is_ok());
    ThreadPool pool(2);
    std::vector<float> out = attend(d, bl->indptr, bl->indices, bl->last_len, bl->per_kv_head, &pool);
    const int group = kHeads / kKv;
    const double scale = 1.0 / std::sqrt(double(kHd));
    for (int s = 0; s < d.batch.n_seqs(); ++s) {
      const int n = d.batch.n_blocks(s);
      for (int h = 0; h < kHeads; ++h) {
        const int kvh = h / group;
        const int list = bl->per_kv_head ? s * kKv + kvh : s;
        std::vector<int> lg = to_logical(bl->indices + bl->indptr[list],
                                         bl->indptr[list + 1] - bl->indptr[list], d.batch.table(s), n);
        ASSERT_EQ(lg.size(), 7u);
        const float* q = d.q.data() + (size_t(s) * kHeads + h) * kHd;
        std::vector<double> logits, acc(kHd, 0.0);
        std::vector<const float*> values;
        for (int j : lg) {
          const int32_t phys = d.batch.table(s)[j];
          const int tokens = j == n - 1 ? d.batch.seq_len[size_t(s)] - (n - 1) * kBs : kBs;
          for (int t = 0; t < tokens; ++t) {
            double dot = 0;
            for (int e = 0; e < kHd; ++e) dot += double(q[e]) * key(d.batch, phys, kvh, t)[e];
            logits.push_back(dot * scale);
            values.push_back(d.v_cache.data() + ((int64_t(phys) * kKv + kvh) * kBs + t) * kHd);
          }
        }
        const double mx = *std::max_element(logits.begin(), logits.end());
        double denom = 0;
        for (size_t i = 0; i < logits.size(); ++i) {
          const double p = std::exp(logits[i] - mx);
          denom += p;
          for (int e = 0; e < kHd; ++e) acc[size_t(e)] += p * values[i][e];
        }
        const float* o = out.data() + (size_t(s) * kHeads + h) * kHd;
        for (int e = 0; e < kHd; ++e) EXPECT_NEAR(o[e], acc[size_t(e)] / denom, 2e-5);
      }
    }
  }
}

}  // namespace
}  // namespace gsa::sparse::test
