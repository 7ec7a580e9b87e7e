// CUDA paged attention against the CPU reference: decode (dense, sparse, per-kv-head lists,
// long contexts that take the split-K path), prefill (causal, chunked, several sequences),
// GQA ratios 1..8, head_dim 64/128, block sizes 16/32/128, ragged last blocks, empty lists.
// Cache slots past each list's end hold NaN on the device: they must never reach the output.
#include <algorithm>
#include <numeric>

#include "cuda_test_util.h"

namespace gsa::backend::cuda_test {
namespace {

TEST(DecodeSplits, FillTheWaves) {
  // Host-only: the split rule for the e2e shapes on 132 SMs (sequences x 4 kv heads).
  EXPECT_EQ(CudaBackend::decode_splits(80, 132), 3);   // 20 sequences: 240 of 264 slots
  EXPECT_EQ(CudaBackend::decode_splits(40, 132), 3);   // 10 sequences: 120 of 132
  EXPECT_EQ(CudaBackend::decode_splits(20, 132), 6);   // 5 sequences
  EXPECT_EQ(CudaBackend::decode_splits(4, 132), 30);   // batch 1
  EXPECT_EQ(CudaBackend::decode_splits(128, 132), 1);
  EXPECT_EQ(CudaBackend::decode_splits(0, 132), 1);
  for (int64_t items = 1; items <= 3000; ++items) {
    const int s = CudaBackend::decode_splits(items, 132);
    ASSERT_GE(s, 1);
    ASSERT_LE(s, 256);
    const int64_t ctas = items * s, waves = (ctas + 131) / 132;
    if (items <= 2000) {
      EXPECT_GE(double(ctas) / double(waves * 132), 0.9) << items;
    }
    if (s > 1) {  // no smaller count reaches 90%
      const int64_t c1 = items * (s - 1), w1 = (c1 + 131) / 132;
      EXPECT_LT(double(c1) / double(w1 * 132), 0.9) << items;
    }
  }
}

struct AttnCase {
  std::vector<int> q_rows;  // query rows per sequence (1 = decode)
  std::vector<int> kv_len;  // tokens in the cache per sequence
  int n_heads = 4, n_kv_heads = 4, head_dim = 64, block_size = 16;
  bool per_kv_head = false;
  bool sparse = false;      // random block subsets (decode rows only)
  DType act = DType::BF16;
};

class CudaAttentionTest : public CudaTest {
 protected:
  // Builds the paged cache and lists for `c`, runs both backends, returns the relative error.
  double run_case(const AttnCase& c) {
    const int n_seqs = int(c.q_rows.size());
    const int bs = c.block_size, hd = c.head_dim, nkv = c.n_kv_heads;
    std::vector<int> seq_blocks(n_seqs);
    int total_blocks = 0;
    for (int s = 0; s < n_seqs; ++s) total_blocks += seq_blocks[s] = (c.kv_len[s] + bs - 1) / bs;
    const int pool_blocks = total_blocks + 3;
    std::vector<int32_t> perm(pool_blocks);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng_);
    const size_t cache_elems = size_t(pool_blocks) * nkv * bs * hd;
    auto kc = random_bf16_exact(rng_, cache_elems, -2, 2);
    auto vc = random_bf16_exact(rng_, cache_elems);
    auto kc16 = to_bf16(kc), vc16 = to_bf16(vc);

    // Block tables, then the lists (dense: the table; sparse: a sorted subset with the last).
    std::vector<std::vector<int32_t>> tables(n_seqs);
    int next = 0;
    for (int s = 0; s < n_seqs; ++s)
      for (int b = 0; b < seq_blocks[s]; ++b) tables[s].push_back(perm[next++]);
    const int lists_per_seq = c.per_kv_head ? nkv : 1;
    std::vector<int32_t> kv_indptr = {0}, kv_indices, kv_last_len;
    for (int s = 0; s < n_seqs; ++s) {
      const int nb = seq_blocks[s];
      const int last_len = nb > 0 ? c.kv_len[s] - (nb - 1) * bs : 1;
      for (int h = 0; h < lists_per_seq; ++h) {
        std::vector<int> logical;
        for (int b = 0; b < nb; ++b)
          if (!c.sparse || b == nb - 1 || b == 0 || std::bernoulli_distribution(0.4)(rng_)) logical.push_back(b);
        for (int b : logical) kv_indices.push_back(tables[s][b]);
        kv_indptr.push_back(int32_t(kv_indices.size()));
        const bool ends_at_last = !logical.empty() && logical.back() == nb - 1;
        kv_last_len.push_back(ends_at_last ? last_len : bs);
      }
      // Device copy: slots past the sequence's last token are NaN.
      if (nb > 0) {
        const int32_t phys = tables[s][nb - 1];
        for (int h = 0; h < nkv; ++h)
          for (int j = last_len; j < bs; ++j)
            for (int d = 0; d < hd; ++d) {
              const size_t i = ((size_t(phys) * nkv + h) * bs + j) * hd + d;
              kc16[i] = vc16[i] = 0x7FC0;
            }
      }
    }
    std::vector<int32_t> q_indptr = {0}, q_pos;
    for (int s = 0; s < n_seqs; ++s) {
      for (int r = 0; r < c.q_rows[s]; ++r) q_pos.push_back(std::max(0, c.kv_len[s] - c.q_rows[s] + r));
      q_indptr.push_back(int32_t(q_pos.size()));
    }
    const int64_t n_tok = int64_t(q_pos.size());
    auto q = random_bf16_exact(rng_, n_tok * c.n_heads * hd, -2, 2);

    AttentionParams p;
    p.n_seqs = n_seqs;
    p.n_tokens = n_tok;
    p.n_blocks = pool_blocks;
    p.n_heads = c.n_heads;
    p.n_kv_heads = nkv;
    p.head_dim = hd;
    p.block_size = bs;
    p.per_kv_head = c.per_kv_head;
    std::vector<float> ref(n_tok * c.n_heads * hd);
    p.q = q.data();
    p.k_cache = kc.data();
    p.v_cache = vc.data();
    p.out = ref.data();
    p.q_indptr = q_indptr.data();
    p.q_pos = q_pos.data();
    p.kv_indptr = kv_indptr.data();
    p.kv_indices = kv_indices.data();
    p.kv_last_len = kv_last_len.data();
    const Status cs = cpu()->attention(p);
    EXPECT_TRUE(cs.is_ok()) << cs.to_string();

    auto dq = upload_act(gpu(), q, c.act);
    auto dk = upload(gpu(), kc16), dv = upload(gpu(), vc16);
    auto dqi = upload(gpu(), q_indptr), dqp = upload(gpu(), q_pos);
    auto dki = upload(gpu(), kv_indptr), dkx = upload(gpu(), kv_indices), dkl = upload(gpu(), kv_last_len);
    Buf dout(gpu(), ref.size() * dtype_size(c.act));
    poison(gpu(), dout);
    p.q = dq->get();
    p.k_cache = dk->get();
    p.v_cache = dv->get();
    p.out = dout.get();
    p.q_indptr = dqi->as<int32_t>();
    p.q_pos = dqp->as<int32_t>();
    p.kv_indptr = dki->as<int32_t>();
    p.kv_indices = dkx->as<int32_t>();
    p.kv_last_len = dkl->as<int32_t>();
    p.act_type = c.act;
    p.kv_type = DType::BF16;
    const Status gs = gpu()->attention(p);
    EXPECT_TRUE(gs.is_ok()) << gs.to_string();
    return rel_error(download_act(gpu(), dout, ref.size(), c.act), ref);
  }
};

constexpr double kTol = 1e-2;

TEST_F(CudaAttentionTest, DecodeDenseGqaGrid) {
  for (int hd : {64, 128})
    for (int ratio : {1, 4, 7, 8, 12})
      for (int bs : {16, 32}) {
        AttnCase c;
        c.head_dim = hd;
        c.n_kv_heads = 2;
        c.n_heads = 2 * ratio;
        c.block_size = bs;
        c.q_rows = {1, 1, 1};
        c.kv_len = {1, 37, 200};
        EXPECT_LT(run_case(c), kTol) << "hd " << hd << " ratio " << ratio << " bs " << bs;
      }
}

TEST_F(CudaAttentionTest, DecodeLongContextSplits) {
  for (int hd : {64, 128}) {
    AttnCase c;
    c.head_dim = hd;
    c.n_heads = 28;
    c.n_kv_heads = 4;
    c.block_size = 128;
    c.q_rows = {1, 1};
    c.kv_len = {5000, 3001};
    EXPECT_LT(run_case(c), kTol) << "hd " << hd;
  }
}

TEST_F(CudaAttentionTest, DecodeSparseAndPerKvHead) {
  for (bool per_head : {false, true}) {
    AttnCase c;
    c.head_dim = 128;
    c.n_heads = 16;
    c.n_kv_heads = 2;
    c.block_size = 32;
    c.sparse = true;
    c.per_kv_head = per_head;
    c.q_rows = {1, 1, 1, 1};
    c.kv_len = {700, 33, 1024, 64};
    EXPECT_LT(run_case(c), kTol) << "per_kv_head " << per_head;
  }
}

TEST_F(CudaAttentionTest, DecodeF32Activations) {
  AttnCase c;
  c.act = DType::F32;
  c.n_heads = 9;
  c.n_kv_heads = 3;
  c.q_rows = {1, 1};
  c.kv_len = {100, 250};
  EXPECT_LT(run_case(c), kTol);
}

TEST_F(CudaAttentionTest, EmptyListGivesZeros) {
  AttnCase c;
  c.q_rows = {1, 1};
  c.kv_len = {0, 40};
  EXPECT_LT(run_case(c), kTol);
}

TEST_F(CudaAttentionTest, PrefillCausal) {
  for (int hd : {64, 128})
    for (int ratio : {1, 7}) {
      AttnCase c;
      c.head_dim = hd;
      c.n_kv_heads = 2;
      c.n_heads = 2 * ratio;
      c.block_size = 32;
      c.q_rows = {45, 1, 70};
      c.kv_len = {45, 9, 70};
      EXPECT_LT(run_case(c), kTol) << "hd " << hd << " ratio " << ratio;
    }
}

TEST_F(CudaAttentionTest, PrefillChunkedAfterCachedPrefix) {
  AttnCase c;
  c.head_dim = 128;
  c.n_heads = 8;
  c.n_kv_heads = 1;
  c.block_size = 128;
  c.q_rows = {100, 33};
  c.kv_len = {612, 33};
  EXPECT_LT(run_case(c), kTol);
}

}  // namespace
}  // namespace gsa::backend::cuda_test
