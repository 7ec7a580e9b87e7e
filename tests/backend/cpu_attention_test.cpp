// CPU paged attention against a naive reference that materializes every score in double:
// prefill with the causal rule across blocks, decode over dense and sparse lists (split and
// unsplit), per_kv_head lists, empty lists, ragged last blocks, a grid of GQA ratios, head dims
// and block sizes; bit-exact invariances (per-layer == per-kv-head copies, batch composition);
// and refusal of malformed CSR lists.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "backend/cpu/cpu_kernels.h"
#include "cpu_test_util.h"

namespace gsa::cpu {
namespace {

using backend::AttentionParams;
using test::poisoned;
using test::random_vec;

// One batch: a KV cache plus sequences, each with query rows and one or n_kv_heads block lists.
struct Batch {
  int n_heads = 0, n_kv = 0, hd = 0, bs = 0;
  bool per_kv_head = false;
  int64_t n_blocks = 0;
  std::vector<float> k_cache, v_cache;  // [n_blocks, n_kv, bs, hd]
  std::vector<float> q;                 // [n_tokens, n_heads, hd]
  std::vector<int32_t> q_indptr{0}, q_pos, kv_indptr{0}, kv_indices, kv_last_len;

  int64_t n_tokens() const { return int64_t(q_pos.size()); }
  int n_seqs() const { return int(q_indptr.size()) - 1; }

  // Adds a sequence whose query rows sit at positions `pos`; `lists` holds one list (or n_kv)
  // of physical blocks with the last block's length.
  void add_seq(std::mt19937& rng, const std::vector<int32_t>& pos,
               const std::vector<std::pair<std::vector<int32_t>, int32_t>>& lists) {
    for (int32_t ps : pos) q_pos.push_back(ps);
    q_indptr.push_back(int32_t(q_pos.size()));
    auto qs = random_vec(rng, pos.size() * size_t(n_heads * hd), -2.0f, 2.0f);
    q.insert(q.end(), qs.begin(), qs.end());
    for (const auto& [blocks, last] : lists) {
      kv_indices.insert(kv_indices.end(), blocks.begin(), blocks.end());
      kv_indptr.push_back(int32_t(kv_indices.size()));
      kv_last_len.push_back(last);
    }
  }

  AttentionParams params(float* out) const {
    AttentionParams p;
    p.q = q.data(), p.k_cache = k_cache.data(), p.v_cache = v_cache.data(), p.out = out;
    p.q_indptr = q_indptr.data(), p.q_pos = q_pos.data();
    p.kv_indptr = kv_indptr.data(), p.kv_indices = kv_indices.data(), p.kv_last_len = kv_last_len.data();
    p.n_seqs = n_seqs(), p.n_tokens = n_tokens(), p.n_blocks = n_blocks;
    p.n_heads = n_heads, p.n_kv_heads = n_kv, p.head_dim = hd, p.block_size = bs;
    p.per_kv_head = per_kv_head;
    return p;
  }
};

Batch make_batch(std::mt19937& rng, int n_heads, int n_kv, int hd, int bs, int64_t n_blocks) {
  Batch b;
  b.n_heads = n_heads, b.n_kv = n_kv, b.hd = hd, b.bs = bs, b.n_blocks = n_blocks;
  b.k_cache = random_vec(rng, size_t(n_blocks * n_kv * bs * hd));
  b.v_cache = random_vec(rng, size_t(n_blocks * n_kv * bs * hd));
  return b;
}

// The op's definition, literally: scores in double over every listed key the causal rule
// admits, softmax, weighted sum.
std::vector<double> reference(const Batch& b) {
  const int g = b.n_heads / b.n_kv;
  const double scale = 1.0 / std::sqrt(double(b.hd));
  std::vector<double> out(size_t(b.n_tokens() * b.n_heads * b.hd), 0.0);
  for (int s = 0; s < b.n_seqs(); ++s) {
    for (int64_t row = b.q_indptr[size_t(s)]; row < b.q_indptr[size_t(s) + 1]; ++row) {
      for (int h = 0; h < b.n_heads; ++h) {
        const int kvh = h / g;
        const size_t list = b.per_kv_head ? size_t(s * b.n_kv + kvh) : size_t(s);
        const float* qv = b.q.data() + (row * b.n_heads + h) * b.hd;
        std::vector<double> sc;
        std::vector<const float*> vs;
        for (int32_t p = b.kv_indptr[list]; p < b.kv_indptr[list + 1]; ++p) {
          const int64_t lp = p - b.kv_indptr[list];
          const int64_t n_keys = p == b.kv_indptr[list + 1] - 1 ? b.kv_last_len[list] : b.bs;
          const int64_t base = (int64_t(b.kv_indices[size_t(p)]) * b.n_kv + kvh) * b.bs * b.hd;
          for (int64_t j = 0; j < n_keys; ++j) {
            if (lp * b.bs + j > b.q_pos[size_t(row)]) continue;
            double d = 0;
            for (int e = 0; e < b.hd; ++e) d += double(qv[e]) * b.k_cache[size_t(base + j * b.hd + e)];
            sc.push_back(d * scale);
            vs.push_back(b.v_cache.data() + base + j * b.hd);
          }
        }
        if (sc.empty()) continue;
        const double mx = *std::max_element(sc.begin(), sc.end());
        double l = 0;
        for (auto& x : sc) l += (x = std::exp(x - mx));
        double* o = out.data() + (row * b.n_heads + h) * b.hd;
        for (size_t i = 0; i < sc.size(); ++i)
          for (int e = 0; e < b.hd; ++e) o[e] += sc[i] / l * vs[i][e];
      }
    }
  }
  return out;
}

std::vector<float> run(const Batch& b, ThreadPool* pool) {
  auto out = poisoned(size_t(b.n_tokens() * b.n_heads * b.hd));
  const Status st = attention(b.params(out.data()), pool);
  EXPECT_TRUE(st.is_ok()) << st.to_string();
  return out;
}

void expect_matches_reference(const Batch& b, ThreadPool* pool, const std::string& what) {
  const auto out = run(b, pool);
  const auto ref = reference(b);
  for (size_t i = 0; i < ref.size(); ++i)
    ASSERT_NEAR(out[i], ref[i], 2e-5) << what << " at " << i << " (row " << i / size_t(b.n_heads * b.hd)
                                      << ", head " << (i / size_t(b.hd)) % size_t(b.n_heads) << ")";
}

// Hands out distinct physical block ids in a shuffled order.
struct BlockIds {
  std::vector<int32_t> ids;
  size_t next = 0;
  BlockIds(std::mt19937& rng, int64_t n) : ids(size_t(n)) {
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng);
  }
  std::vector<int32_t> take(int64_t n) {
    std::vector<int32_t> r(ids.begin() + int64_t(next), ids.begin() + int64_t(next) + n);
    next += size_t(n);
    return r;
  }
};

int64_t blocks_for(int64_t tokens, int bs) { return (tokens + bs - 1) / bs; }
int32_t last_len_for(int64_t tokens, int bs) { return int32_t(tokens - (blocks_for(tokens, bs) - 1) * bs); }

// Several sequences: a fresh prompt, a chunk after a prefix, a one-token prompt; dense lists.
TEST(CpuAttention, PrefillCausalGrid) {
  ThreadPool pool(3);
  std::mt19937 rng(1);
  for (int ratio : {1, 3, 4, 7, 8})
    for (int hd : {64, 128})
      for (int bs : {16, 32, 128}) {
        const int n_kv = ratio >= 7 ? 1 : 2;
        Batch b = make_batch(rng, ratio * n_kv, n_kv, hd, bs, 24);
        BlockIds ids(rng, b.n_blocks);
        auto prompt = [&](int64_t prefix, int64_t rows) {
          std::vector<int32_t> pos(static_cast<size_t>(rows));
          std::iota(pos.begin(), pos.end(), int32_t(prefix));
          const int64_t total = prefix + rows;
          b.add_seq(rng, pos, {{ids.take(blocks_for(total, bs)), last_len_for(total, bs)}});
        };
        prompt(0, bs == 128 ? 150 : 2 * bs + 5);  // several blocks, ragged last
        prompt(bs == 128 ? 100 : bs + 3, 20);     // chunked prefill after a prefix
        prompt(0, 1);
        expect_matches_reference(b, &pool, fmt::format("prefill ratio={} hd={} bs={}", ratio, hd, bs));
      }
}

// Decode rows over dense lists (last_len 1 and bs), sparse lists (sink + local only, a middle
// selection), empty lists, and lists long enough to be split into key chunks.
TEST(CpuAttention, DecodeDenseSparseGrid) {
  ThreadPool pool(3);
  std::mt19937 rng(2);
  for (int ratio : {1, 3, 4, 7, 8})
    for (int hd : {64, 128})
      for (int bs : {16, 32, 128}) {
        const int n_kv = ratio >= 4 ? 1 : 2;
        const int64_t long_blocks = 1024 / bs + 3;  // past the split threshold
        Batch b = make_batch(rng, ratio * n_kv, n_kv, hd, bs, long_blocks + 40);
        BlockIds ids(rng, b.n_blocks);
        auto dense = [&](int64_t tokens) {
          b.add_seq(rng, {int32_t(tokens - 1)}, {{ids.take(blocks_for(tokens, bs)), last_len_for(tokens, bs)}});
        };
        dense(1);                        // one key
        dense(3 * bs + 1);               // last_len 1
        dense(4 * bs);                   // last_len bs
        dense(long_blocks * bs - bs / 2);  // split into chunks
        // Sparse: a 12-block sequence, keep sink + two local (last partial), and a middle pick.
        const int64_t tokens = 11 * bs + 5;
        const auto all = ids.take(12);
        b.add_seq(rng, {int32_t(tokens - 1)}, {{{all[0], all[10], all[11]}, 5}});
        b.add_seq(rng, {int32_t(tokens - 1)}, {{{all[0], all[4], all[7], all[10], all[11]}, 5}});
        b.add_seq(rng, {int32_t(tokens - 1)}, {{{}, 1}});  // empty list: zero output
        expect_matches_reference(b, &pool, fmt::format("decode ratio={} hd={} bs={}", ratio, hd, bs));
      }
}

// One list per kv head, different per head; odd head_dim exercises the non-SIMD-width path.
TEST(CpuAttention, PerKvHeadLists) {
  ThreadPool pool(3);
  std::mt19937 rng(3);
  for (int hd : {64, 40}) {
    const int n_kv = 3, bs = 16;
    Batch b = make_batch(rng, 9, n_kv, hd, bs, 200);
    b.per_kv_head = true;
    BlockIds ids(rng, b.n_blocks);
    const auto seq = ids.take(90);  // 90 blocks, last one holds 7 tokens
    const int32_t q_pos = 89 * bs + 6;
    std::vector<std::pair<std::vector<int32_t>, int32_t>> lists;
    lists.push_back({seq, 7});                                  // head 0: everything (split)
    lists.push_back({{seq[0], seq[50], seq[88], seq[89]}, 7});  // head 1: sparse
    lists.push_back({{}, 1});                                   // head 2: empty
    b.add_seq(rng, {q_pos}, lists);
    lists[2] = {{seq[0], seq[1], seq[2]}, bs};  // a list whose last block is full
    b.add_seq(rng, {q_pos}, lists);
    expect_matches_reference(b, &pool, fmt::format("per_kv_head hd={}", hd));
  }
}

// A per-layer list and per-kv-head copies of it are the same computation: equal bits. So are a
// sequence run alone and inside a batch, and runs on pools of different sizes.
TEST(CpuAttention, BitExactInvariances) {
  ThreadPool pool1(1), pool3(3);
  std::mt19937 rng(4);
  for (int bs : {16, 128}) {
    const int n_kv = 2, hd = 64;
    Batch dense = make_batch(rng, 6, n_kv, hd, bs, 100);
    BlockIds ids(rng, dense.n_blocks);
    const int64_t tokens = 70 * 16 + 9;
    const auto blocks = ids.take(blocks_for(tokens, bs));
    const int32_t last = last_len_for(tokens, bs);
    dense.add_seq(rng, {int32_t(tokens - 1)}, {{blocks, last}});
    Batch full = dense;
    full.per_kv_head = true;
    full.kv_indptr = {0};
    full.kv_indices.clear();
    full.kv_last_len.clear();
    for (int h = 0; h < n_kv; ++h) {
      full.kv_indices.insert(full.kv_indices.end(), blocks.begin(), blocks.end());
      full.kv_indptr.push_back(int32_t(full.kv_indices.size()));
      full.kv_last_len.push_back(last);
    }
    const auto a = run(dense, &pool3);
    const auto c = run(full, &pool3);
    const auto d = run(dense, &pool1);
    EXPECT_EQ(0, std::memcmp(a.data(), c.data(), a.size() * sizeof(float))) << "bs=" << bs;
    EXPECT_EQ(0, std::memcmp(a.data(), d.data(), a.size() * sizeof(float))) << "bs=" << bs;

    Batch batch = dense;  // the same sequence again behind a short one
    batch.add_seq(rng, {int32_t(tokens - 1)}, {{blocks, last}});
    std::copy(dense.q.begin(), dense.q.end(), batch.q.end() - int64_t(dense.q.size()));
    const auto e = run(batch, &pool3);
    EXPECT_EQ(0, std::memcmp(a.data(), e.data() + a.size(), a.size() * sizeof(float))) << "bs=" << bs;
  }
}

// Query vectors that see the same keys are computed in pairs; a row computed alone (other
// pairing) must give the same bits as inside a multi-row prefill tile.
TEST(CpuAttention, PairingDoesNotChangeBits) {
  ThreadPool pool(2);
  std::mt19937 rng(6);
  for (int ratio : {1, 3})
    for (int hd : {64, 128, 40}) {
      const int bs = 16;
      Batch together = make_batch(rng, ratio, 1, hd, bs, 8);
      const std::vector<int32_t> blocks = {5, 2, 7};  // 42 tokens, last block holds 10
      together.add_seq(rng, {38, 39, 40, 41}, {{blocks, 10}});
      Batch alone = together;
      alone.q_indptr = {0, 1, 2, 3, 4};
      alone.kv_indptr = {0};
      alone.kv_indices.clear();
      alone.kv_last_len.clear();
      for (int i = 0; i < 4; ++i) {
        alone.kv_indices.insert(alone.kv_indices.end(), blocks.begin(), blocks.end());
        alone.kv_indptr.push_back(int32_t(alone.kv_indices.size()));
        alone.kv_last_len.push_back(10);
      }
      const auto a = run(together, &pool);
      const auto b = run(alone, &pool);
      EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float))) << "ratio=" << ratio << " hd=" << hd;
      expect_matches_reference(together, &pool, fmt::format("pairing ratio={} hd={}", ratio, hd));
    }
}

// Entries of -1 (blocks a selection dropped) are skipped: a decode row attends the other
// blocks exactly as a list without them, per layer and per kv head.
TEST(CpuAttention, SkipsMinusOneEntries) {
  ThreadPool pool(2);
  std::mt19937 rng(6);
  for (bool per_kv_head : {false, true}) {
    Batch with = make_batch(rng, 8, 2, 64, 16, 16);
    with.per_kv_head = per_kv_head;
    Batch without = with;
    const int32_t pos = 11 * 16 + 4;
    const std::vector<std::pair<std::vector<int32_t>, int32_t>> a = {{{3, -1, 7, -1, 9, 12}, 5}, {{3, -1, -1, 8, 12}, 5}};
    const std::vector<std::pair<std::vector<int32_t>, int32_t>> b = {{{3, 7, 9, 12}, 5}, {{3, 8, 12}, 5}};
    std::mt19937 r1(7), r2(7);  // the same queries
    with.add_seq(r1, {pos}, per_kv_head ? a : decltype(a){a[0]});
    without.add_seq(r2, {pos}, per_kv_head ? b : decltype(b){b[0]});
    auto o1 = poisoned(size_t(8 * 64)), o2 = poisoned(size_t(8 * 64));
    ASSERT_TRUE(attention(with.params(o1.data()), &pool).is_ok());
    ASSERT_TRUE(attention(without.params(o2.data()), &pool).is_ok());
    EXPECT_EQ(o1, o2) << "per_kv_head " << per_kv_head;
  }
}

TEST(CpuAttention, RejectsMalformedLists) {
  ThreadPool pool(1);
  std::mt19937 rng(5);
  Batch b = make_batch(rng, 4, 2, 16, 16, 4);
  b.add_seq(rng, {20}, {{{2, 1}, 5}});
  auto out = poisoned(size_t(4 * 16));
  ASSERT_TRUE(attention(b.params(out.data()), &pool).is_ok());
  auto expect_invalid = [&](auto mutate, StatusCode code = StatusCode::InvalidArgument) {
    Batch c = b;
    mutate(c);
    EXPECT_EQ(attention(c.params(out.data()), &pool).code(), code);
  };
  expect_invalid([](Batch& c) { c.kv_last_len[0] = 0; });
  expect_invalid([](Batch& c) { c.kv_last_len[0] = 17; });
  expect_invalid([](Batch& c) { c.kv_indices[1] = 4; });
  expect_invalid([](Batch& c) { c.kv_indices[1] = -2; });  // -1 is a skipped entry
  expect_invalid([](Batch& c) { c.kv_indptr[1] = -1; });
  expect_invalid([](Batch& c) { c.kv_indptr[0] = 1; });
  expect_invalid([](Batch& c) { c.q_pos[0] = -3; });
  expect_invalid([](Batch& c) { c.q_indptr[1] = 2; });
  expect_invalid([](Batch& c) { c.n_kv = 3; });
  expect_invalid([](Batch& c) { c.bs = 0; });
  expect_invalid([](Batch& c) { c.bs = 1 << 30, c.hd = 1 << 30; });  // offsets would overflow
  Batch c = b;
  AttentionParams p = c.params(out.data());
  p.kv_type = DType::BF16;
  EXPECT_EQ(attention(p, &pool).code(), StatusCode::Unsupported);
  p = c.params(out.data());
  p.scale = NAN;
  EXPECT_EQ(attention(p, &pool).code(), StatusCode::InvalidArgument);
  p = c.params(out.data());
  p.kv_indices = nullptr;
  EXPECT_EQ(attention(p, &pool).code(), StatusCode::InvalidArgument);
}

}  // namespace
}  // namespace gsa::cpu
