// cpu::block_select: top-k against brute-force scores for every representation, query mode
// and scope; the selection invariants (deterministic, sorted, forced blocks, exact size, no
// index past the end, a budget covering every block selects every block); parameter errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <set>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/quant_score.h"
#include "sparse/sparse_config.h"
#include "sparse_test_util.h"

namespace gsa::sparse::test {
namespace {

using backend::BlockSelectParams;
using backend::QueryMode;
using backend::RepKind;

struct Case {
  Batch batch;
  int n_heads = 0;
  RepKind kind = RepKind::Mean;
  QueryMode mode = QueryMode::GroupMean;
  bool per_kv_head = false;
  int sink = 1, local = 2;
  std::vector<float> q;        // [n_seqs, n_heads, head_dim]
  std::vector<float> hash_w;   // [head_dim, head_dim]
  std::vector<uint8_t> reps;   // [n_phys, n_kv_heads, rep_bytes]
  std::vector<int32_t> sizes;  // per sequence
  std::vector<uint8_t> oracle; // per sequence, or empty: no oracle sequence
  int sub_block = 0;
  bool mass = false;           // rank_by mass
  int rerank = 0;              // > 0: every sequence ranks by Rerank with this factor

  int lists_per_seq() const { return per_kv_head ? batch.n_kv_heads : 1; }
};

// (Re)computes every block's representation from the case's keys.
void update_reps(Case& c) {
  const Batch& b = c.batch;
  c.reps.assign(size_t(b.n_phys) * b.n_kv_heads * backend::rep_bytes(c.kind, b.head_dim, b.block_size, c.sub_block), 0);
  std::vector<int32_t> all(size_t(b.n_phys));
  std::iota(all.begin(), all.end(), 0);
  backend::RepUpdateParams u;
  u.k_cache = b.k_cache.data();
  u.reps = c.reps.data();
  u.blocks = all.data();
  u.n_update = b.n_phys;
  u.n_kv_heads = b.n_kv_heads;
  u.head_dim = b.head_dim;
  u.block_size = b.block_size;
  u.kind = c.kind;
  u.sub_block = c.sub_block;
  u.hash_w = c.hash_w.data();
  EXPECT_TRUE(cpu::rep_update(u, nullptr).is_ok());
}

Case make_case(uint32_t seed, std::vector<int32_t> lens, int n_heads, int n_kv, int hd, int bs,
               RepKind kind, QueryMode mode, bool per_kv_head, std::vector<int32_t> sizes,
               int sub_block = 0) {
  std::mt19937 rng(seed);
  Case c;
  c.batch = make_batch(rng, lens, n_kv, hd, bs);
  c.n_heads = n_heads;
  c.kind = kind;
  c.mode = mode;
  c.per_kv_head = per_kv_head;
  c.q = random_vec(rng, lens.size() * size_t(n_heads) * hd);
  c.hash_w = make_hash_matrix(hd, seed);
  c.sizes = std::move(sizes);
  c.sub_block = sub_block;
  update_reps(c);
  return c;
}

struct Output {
  std::vector<int32_t> indptr, indices, last_len;
  std::vector<uint8_t> rank;
  Status status;
};

Output run(const Case& c, ThreadPool* pool) {
  Output o;
  o.indptr.push_back(0);
  for (int s = 0; s < c.batch.n_seqs(); ++s)
    for (int l = 0; l < c.lists_per_seq(); ++l) o.indptr.push_back(o.indptr.back() + c.sizes[size_t(s)]);
  o.indices.assign(size_t(o.indptr.back()), -7);
  o.last_len.assign(o.indptr.size() - 1, -7);
  BlockSelectParams p;
  p.q = c.q.data();
  p.reps = c.reps.data();
  p.block_table_indptr = c.batch.bt_indptr.data();
  p.block_table = c.batch.block_table.data();
  p.seq_len = c.batch.seq_len.data();
  p.out_indptr = o.indptr.data();
  p.out_indices = o.indices.data();
  p.out_last_len = o.last_len.data();
  p.n_seqs = c.batch.n_seqs();
  p.n_blocks = c.batch.n_phys;
  p.n_heads = c.n_heads;
  p.n_kv_heads = c.batch.n_kv_heads;
  p.head_dim = c.batch.head_dim;
  p.block_size = c.batch.block_size;
  p.sink_blocks = c.sink;
  p.local_blocks = c.local;
  p.kind = c.kind;
  p.query_mode = c.mode;
  p.per_kv_head = c.per_kv_head;
  p.hash_w = c.hash_w.empty() ? nullptr : c.hash_w.data();
  p.sub_block = c.sub_block;
  if (!c.oracle.empty() || c.mass || c.rerank > 0) {
    for (int s = 0; s < c.batch.n_seqs(); ++s)
      o.rank.push_back(uint8_t(!c.oracle.empty() && c.oracle[size_t(s)] ? backend::Rank::Oracle
                               : c.rerank > 0                            ? backend::Rank::Rerank
                               : c.mass                                  ? backend::Rank::Mass
                                                                         : backend::Rank::Score));
    p.rank = o.rank.data();
    p.any_mass = c.mass;
    p.any_oracle = !c.oracle.empty() || c.rerank > 0;
    p.rerank_factor = std::max(c.rerank, 1);
    p.k_cache = c.batch.k_cache.data();
    p.kv_type = DType::F32;
  }
  o.status = cpu::block_select(p, pool);
  return o;
}

// Brute-force oracle score: the softmax mass of logical block j summed over the list's query
// heads (all heads for head < 0), each head's softmax over every token of the sequence.
double brute_oracle(const Case& c, int s, int head, int j) {
  const Batch& b = c.batch;
  const int group = c.n_heads / b.n_kv_heads, hd = b.head_dim, len = b.seq_len[size_t(s)];
  const int h0 = head >= 0 ? head * group : 0, h1 = head >= 0 ? h0 + group : c.n_heads;
  double total = 0;
  for (int hh = h0; hh < h1; ++hh) {
    const float* q = c.q.data() + (size_t(s) * c.n_heads + hh) * hd;
    std::vector<double> x(static_cast<size_t>(len));
    double mx = -1e300;
    for (int t = 0; t < len; ++t) {
      const float* k = key(b, b.table(s)[t / b.block_size], hh / group, t % b.block_size);
      double d = 0;
      for (int i = 0; i < hd; ++i) d += double(q[i]) * k[i];
      x[size_t(t)] = d / std::sqrt(double(hd));
      mx = std::max(mx, x[size_t(t)]);
    }
    double z = 0, in = 0;
    for (int t = 0; t < len; ++t) {
      const double e = std::exp(x[size_t(t)] - mx);
      z += e;
      if (t / b.block_size == j) in += e;
    }
    total += in / z;
  }
  return total;
}

// Brute-force estimated mass (rank_by mass) of logical block j: per scoring query of the list
// (kv-head group means, or every query head with GroupMax), the softmax over the sequence's full
// blocks of brute_log_mass, summed.
double brute_mass(const Case& c, int s, int head, int j) {
  const Batch& b = c.batch;
  const int group = c.n_heads / b.n_kv_heads, hd = b.head_dim;
  const int full = b.seq_len[size_t(s)] / b.block_size;
  if (j >= full) return 0.0;
  const float* q = c.q.data() + size_t(s) * c.n_heads * hd;
  double total = 0;
  for (int h = head >= 0 ? head : 0; h < (head >= 0 ? head + 1 : b.n_kv_heads); ++h) {
    std::vector<std::vector<float>> queries;
    if (c.mode == QueryMode::GroupMean) {
      std::vector<float> mean(size_t(hd), 0.0f);
      for (int g = 0; g < group; ++g)
        for (int d = 0; d < hd; ++d) mean[size_t(d)] += q[(h * group + g) * hd + d] / group;
      queries.push_back(mean);
    } else {
      for (int g = 0; g < group; ++g) queries.emplace_back(q + (h * group + g) * hd, q + (h * group + g + 1) * hd);
    }
    for (const auto& qi : queries) {
      std::vector<double> x(static_cast<size_t>(full));
      for (int k = 0; k < full; ++k)
        x[size_t(k)] = brute_log_mass(b, c.kind, qi.data(), b.table(s)[k], h, c.sub_block);
      const double mx = *std::max_element(x.begin(), x.end());
      double z = 0;
      for (double v : x) z += std::exp(v - mx);
      total += std::exp(x[size_t(j)] - mx) / z;
    }
  }
  return total;
}

// Brute-force score of (sequence s, list head or -1 for the sum, logical block j).
double brute(const Case& c, int s, int head, int j) {
  if (!c.oracle.empty() && c.oracle[size_t(s)]) return brute_oracle(c, s, head, j);
  if (c.mass) return brute_mass(c, s, head, j);
  const Batch& b = c.batch;
  const int group = c.n_heads / b.n_kv_heads, hd = b.head_dim;
  const float* q = c.q.data() + size_t(s) * c.n_heads * hd;
  auto head_score = [&](int h) {
    if (c.mode == QueryMode::GroupMean) {
      std::vector<float> mean(size_t(hd), 0.0f);
      for (int g = 0; g < group; ++g)
        for (int d = 0; d < hd; ++d) mean[size_t(d)] += q[(h * group + g) * hd + d] / group;
      return brute_score(b, c.kind, mean.data(), b.table(s)[j], h, c.hash_w, c.sub_block);
    }
    double best = -1e300;
    for (int g = 0; g < group; ++g)
      best = std::max(best, brute_score(b, c.kind, q + (h * group + g) * hd, b.table(s)[j], h,
                                        c.hash_w, c.sub_block));
    return best;
  };
  if (head >= 0) return head_score(head);
  double sum = 0;
  for (int h = 0; h < b.n_kv_heads; ++h) sum += head_score(h);
  return sum;
}

// Checks every invariant of one run, and that the chosen blocks are a top-k of brute-force
// scores (up to `tol` for float rounding).
void check(const Case& c, const Output& o, double tol) {
  ASSERT_TRUE(o.status.is_ok()) << o.status.to_string();
  const Batch& b = c.batch;
  for (int s = 0; s < b.n_seqs(); ++s) {
    const int n = b.n_blocks(s);
    for (int l = 0; l < c.lists_per_seq(); ++l) {
      const int i = s * c.lists_per_seq() + l;
      const int size = o.indptr[size_t(i) + 1] - o.indptr[size_t(i)];
      std::vector<int> lg = to_logical(o.indices.data() + o.indptr[size_t(i)], size, b.table(s), n);
      ASSERT_EQ(int(lg.size()), c.sizes[size_t(s)]);
      for (size_t k = 0; k < lg.size(); ++k) {
        ASSERT_GE(lg[k], 0) << "id not in the sequence's table";
        ASSERT_LT(lg[k], n);
        if (k > 0) {
          ASSERT_LT(lg[k - 1], lg[k]) << "not sorted by logical index";
        }
      }
      std::set<int> chosen(lg.begin(), lg.end());
      std::set<int> forced;
      for (int j = 0; j < std::min(c.sink, n); ++j) forced.insert(j);
      for (int j = std::max(0, n - c.local); j < n; ++j) forced.insert(j);
      for (int j : forced) ASSERT_TRUE(chosen.count(j)) << "forced block " << j << " missing";
      const int expect_last = lg.back() == n - 1 ? b.seq_len[size_t(s)] - (n - 1) * b.block_size
                                                 : b.block_size;
      EXPECT_EQ(o.last_len[size_t(i)], expect_last);
      double min_in = 1e300, max_out = -1e300;
      for (int j = 0; j < n; ++j) {
        if (forced.count(j)) continue;
        const double v = brute(c, s, c.per_kv_head ? l : -1, j);
        if (chosen.count(j)) {
          min_in = std::min(min_in, v);
        } else {
          max_out = std::max(max_out, v);
        }
      }
      EXPECT_GE(min_in, max_out - tol) << "a better block was left out (seq " << s << ")";
    }
  }
}

struct Variant {
  RepKind kind;
  QueryMode mode;
  bool per_kv_head;
};

class BlockSelectVariants : public ::testing::TestWithParam<Variant> {};

TEST_P(BlockSelectVariants, TopKOfBruteForceScoresAndInvariants) {
  const Variant v = GetParam();
  // GQA ratios 1, 3 and 4; ragged last blocks; a sequence of exactly full blocks.
  const int shapes[3][2] = {{2, 2}, {9, 3}, {8, 2}};
  ThreadPool pool(3);
  for (int si = 0; si < 3; ++si) {
    Case c = make_case(100 + si, {16 * 20 + 5, 16 * 12, 16 * 31 + 15}, shapes[si][0],
                       shapes[si][1], 64, 16, v.kind, v.mode, v.per_kv_head, {8, 5, 12});
    const double tol = v.kind == RepKind::Hash ? 0.0 : 1e-4;
    Output a = run(c, &pool);
    check(c, a, tol);
    Output serial = run(c, nullptr);
    EXPECT_EQ(a.indices, serial.indices) << "depends on threading";
    EXPECT_EQ(a.last_len, serial.last_len);
    Output again = run(c, &pool);
    EXPECT_EQ(a.indices, again.indices) << "not deterministic";
  }
}

TEST(BlockSelectSubBlocks, TopKOfTheBestRunOfEachBlock) {
  // Mean and MinMax kept per run of 4 (and 8) tokens of 16-token blocks: a block scores its best
  // run; every query mode and scope against brute force from the keys.
  ThreadPool pool(3);
  for (RepKind kind : {RepKind::Mean, RepKind::MinMax})
    for (int sub : {4, 8})
      for (bool per_kv_head : {false, true})
        for (QueryMode mode : {QueryMode::GroupMean, QueryMode::GroupMax}) {
          Case c = make_case(400 + sub, {16 * 20 + 5, 16 * 31 + 15}, 8, 2, 32, 16, kind, mode,
                             per_kv_head, {8, 12}, sub);
          Output a = run(c, &pool);
          check(c, a, 1e-4);
          EXPECT_EQ(a.indices, run(c, nullptr).indices);
        }
  // A sub-block that does not divide the block is refused.
  Case c = make_case(420, {16 * 10}, 2, 1, 32, 16, RepKind::MinMax, QueryMode::GroupMean, false, {5}, 4);
  c.sub_block = 6;
  EXPECT_EQ(run(c, nullptr).status.code(), StatusCode::InvalidArgument);
}

TEST(BlockSelectMass, TopKOfEstimatedMassForEveryKindModeScopeAndSubBlock) {
  ThreadPool pool(3);
  for (RepKind kind : {RepKind::Mean, RepKind::MinMax, RepKind::Quant})
    for (int sub : {0, 4})
      for (bool per_kv_head : {false, true})
        for (QueryMode mode : {QueryMode::GroupMean, QueryMode::GroupMax}) {
          if (kind == RepKind::Quant && sub != 0) continue;  // per token already
          Case c = make_case(500 + sub, {16 * 20 + 5, 16 * 12, 16 * 31 + 15}, 8, 2, 32, 16, kind,
                             mode, per_kv_head, {8, 5, 12}, sub);
          c.mass = true;
          Output a = run(c, &pool);
          check(c, a, 1e-6);
          EXPECT_EQ(a.indices, run(c, nullptr).indices) << "depends on threading";
        }
  // With an oracle sequence in the same call, the oracle ranks its own sequence.
  Case c = make_case(520, {16 * 20 + 5, 16 * 31 + 15}, 8, 2, 32, 16, RepKind::MinMax,
                     QueryMode::GroupMax, false, {8, 12});
  c.mass = true;
  c.oracle = {0, 1};
  check(c, run(c, &pool), 1e-6);
  // Hash has no mass estimate.
  Case h = make_case(521, {16 * 10}, 2, 1, 32, 16, RepKind::Hash, QueryMode::GroupMean, false, {5});
  h.mass = true;
  EXPECT_EQ(run(h, nullptr).status.code(), StatusCode::InvalidArgument);
}

TEST(BlockSelectMass, AHeadsSharpMatchIsNotDrownedByAnotherHeadsLargeScores) {
  // Two kv heads, one list (per_layer). Kv head 1 has one block (9) whose keys match its query
  // exactly; kv head 0's query is 200x larger, so its raw scores vary far more than head 1's
  // and decide the summed score. Ranking by estimated mass keeps head 1's block next to head
  // 0's best (two free slots): each head contributes at most one unit of mass.
  Case c = make_case(530, {16 * 24 + 3}, 2, 2, 32, 16, RepKind::Mean, QueryMode::GroupMean,
                     false, {5});
  for (int d = 0; d < 32; ++d) c.q[size_t(d)] *= 200.0f;
  const int32_t phys = c.batch.table(0)[9];
  for (int t = 0; t < 16; ++t)
    for (int d = 0; d < 32; ++d)
      c.batch.k_cache[((size_t(phys) * 2 + 1) * 16 + t) * 32 + d] = 3.0f * c.q[32 + size_t(d)];
  update_reps(c);  // from the edited keys
  auto has = [&](const Output& o) { return std::find(o.indices.begin(), o.indices.end(), phys) != o.indices.end(); };
  Output by_score = run(c, nullptr);
  ASSERT_TRUE(by_score.status.is_ok());
  c.mass = true;
  Output by_mass = run(c, nullptr);
  ASSERT_TRUE(by_mass.status.is_ok());
  EXPECT_TRUE(has(by_mass));
  EXPECT_FALSE(has(by_score)) << "the case no longer separates the two rankings";
}

// The Quant token scores, straightforwardly: factors rounded as ops_sparse.h says, then per
// token a float sum over dimensions (exact: integers below 2^24), then s * sum rounded and
// added to base.
std::vector<float> quant_reference(const float* q, const uint8_t* rep, int bs, int hd) {
  const float* mn = reinterpret_cast<const float*>(rep);
  const float* mx = mn + hd;
  const uint32_t* codes = reinterpret_cast<const uint32_t*>(mx + hd);
  std::vector<float> a(size_t(hd), 0.0f), out(size_t(bs), 0.0f);
  float base = 0.0f, max_abs = 0.0f;
  for (int d = 0; d < hd; ++d) {
    const float step = (mx[d] - mn[d]) * 0.25f;
    a[size_t(d)] = q[d] * step;
    max_abs = std::max(max_abs, std::fabs(a[size_t(d)]));
    base += q[d] * (mn[d] + 0.5f * step);
  }
  const float inv = backend::quant_query_inv(max_abs);
  for (auto& v : a) v = std::clamp(std::nearbyint(v * inv), -127.0f, 127.0f);
  const float s = backend::quant_query_scale(max_abs);
  for (int t = 0; t < bs; ++t) {
    float sum = 0.0f;
    for (int d = 0; d < hd; ++d)
      sum += a[size_t(d)] * float((codes[int64_t(t) * (hd / 16) + d / 16] >> (2 * (d % 16))) & 3u);
    volatile float prod = s * sum;  // rounded on its own: no FMA, as on CUDA
    out[size_t(t)] = base + prod;
  }
  return out;
}

// Every backend path (integer SIMD, scalar tail, float fallback) gives the reference's floats
// bit for bit, at the extremes too: factors +-127 on every dimension against all-3 codes.
TEST(BlockSelectQuant, TokenScoresMatchTheScalarReferenceBitForBit) {
  std::mt19937 rng(91);
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  int checked = 0;
  for (int hd : {16, 32, 48, 64, 128, 256, 1024})
    for (int bs : {8, 16, 24, 32, 128})
      for (int variant = 0; variant < 6; ++variant) {
        const int words = hd / 16;
        std::vector<uint8_t> rep(size_t(backend::rep_bytes(RepKind::Quant, hd, bs)));
        ASSERT_EQ(rep.size(), size_t(hd) * 8 + size_t(bs) * words * 4);
        std::vector<float> box(static_cast<size_t>(2 * hd)), q(static_cast<size_t>(hd));
        std::vector<uint32_t> codes(size_t(bs) * words);
        for (int d = 0; d < hd; ++d) {
          float lo = u(rng), hi = u(rng);
          if (lo > hi) std::swap(lo, hi);
          if (variant == 1 && d % 5 == 0) hi = lo;  // zero range
          if (variant >= 3) lo = -1.0f, hi = 1.0f;  // equal ranges: |a8| = 127 where |q| is max
          box[size_t(d)] = lo;
          box[size_t(hd + d)] = hi;
          q[size_t(d)] = u(rng);
          if (variant >= 3) q[size_t(d)] = (rng() & 1) ? 1.5f : -1.5f;
        }
        if (variant == 2) std::fill(q.begin(), q.end(), 0.0f);  // s = 0
        if (variant == 5) q[size_t(hd / 2)] = std::numeric_limits<float>::quiet_NaN();
        for (auto& w : codes) w = variant == 3 ? 0xFFFFFFFFu : uint32_t(rng());
        if (variant == 4)  // every other token all 3s, the rest all 0s
          for (int t = 0; t < bs; ++t)
            for (int w = 0; w < words; ++w) codes[size_t(t) * words + w] = t % 2 ? 0xFFFFFFFFu : 0u;
        std::memcpy(rep.data(), box.data(), box.size() * 4);
        std::memcpy(rep.data() + box.size() * 4, codes.data(), codes.size() * 4);
        const std::vector<float> want = quant_reference(q.data(), rep.data(), bs, hd);
        std::vector<float> got(size_t(bs), -1.0f);
        std::vector<float> a(static_cast<size_t>(hd));
        std::vector<uint32_t> x(static_cast<size_t>(bs));
        cpu::quant_token_scores(q.data(), rep.data(), bs, hd, a.data(), x.data(), got.data());
        for (int t = 0; t < bs; ++t) {
          const float w = want[size_t(t)], g = got[size_t(t)];
          if (w != w) {
            EXPECT_NE(g, g) << "hd " << hd << " bs " << bs << " variant " << variant << " t " << t;
          } else {
            EXPECT_EQ(std::bit_cast<uint32_t>(w), std::bit_cast<uint32_t>(g))
                << "hd " << hd << " bs " << bs << " variant " << variant << " t " << t << ": "
                << w << " vs " << g;
          }
          ++checked;
        }
      }
  EXPECT_GT(checked, 0);
}

TEST(BlockSelectQuant, FindsOneMatchingTokenAmongWideBoxes) {
  // One token of block 9 points along the group's queries; the other blocks' keys are spread
  // 1.5x wider, so their boxes bound q.k above block 9's. The 2-bit token codes keep the one
  // matching token's score, and ranking by their mass picks block 9 with one free slot.
  Case c = make_case(540, {16 * 14 + 3}, 4, 1, 32, 16, RepKind::Quant, QueryMode::GroupMean,
                     false, {4});
  const int32_t phys = c.batch.table(0)[9];
  for (int j = 0; j < c.batch.n_blocks(0); ++j)
    if (j != 9)
      for (int i = 0; i < 16 * 32; ++i) c.batch.k_cache[size_t(c.batch.table(0)[j]) * 16 * 32 + i] *= 1.5f;
  std::vector<float> dir(32, 0.0f);
  double norm = 0;
  for (int d = 0; d < 32; ++d) {
    for (int g = 0; g < 4; ++g) dir[size_t(d)] += c.q[size_t(g) * 32 + d];
    norm += double(dir[size_t(d)]) * dir[size_t(d)];
  }
  for (int d = 0; d < 32; ++d)
    c.batch.k_cache[(size_t(phys) * 16 + 5) * 32 + d] = float(4.0 * dir[size_t(d)] / std::sqrt(norm));
  update_reps(c);
  auto has = [&](const Output& o) { return std::find(o.indices.begin(), o.indices.end(), phys) != o.indices.end(); };
  c.mass = true;
  Output o = run(c, nullptr);
  ASSERT_TRUE(o.status.is_ok()) << o.status.to_string();
  EXPECT_TRUE(has(o));
  check(c, o, 1e-6);
  c.mass = false;  // the best token's score finds it too
  EXPECT_TRUE(has(run(c, nullptr)));
  c.kind = RepKind::MinMax;
  update_reps(c);
  EXPECT_FALSE(has(run(c, nullptr))) << "the case no longer separates quant from the box";
}

TEST(BlockSelectOracle, TopKOfTrueAttentionMassPerSequence) {
  // Sequences 0 and 2 rank by attention mass, sequence 1 by its representation, in one call.
  ThreadPool pool(3);
  for (bool per_kv_head : {false, true}) {
    Case c = make_case(300 + per_kv_head, {16 * 20 + 5, 16 * 12, 16 * 31 + 15}, 8, 2, 32, 16,
                       RepKind::MinMax, QueryMode::GroupMean, per_kv_head, {8, 5, 12});
    c.oracle = {1, 0, 1};
    Output a = run(c, &pool);
    check(c, a, 1e-6);
    EXPECT_EQ(a.indices, run(c, nullptr).indices) << "depends on threading";
  }
}

TEST(BlockSelectOracle, FindsAPlantedBlockAndNeedsKeys) {
  // Keys of block 9 of the sequence point along its query: the oracle must pick it even with
  // one free slot.
  Case c = make_case(310, {16 * 14 + 3}, 4, 1, 32, 16, RepKind::Mean, QueryMode::GroupMean,
                     false, {4});
  const int32_t phys = c.batch.table(0)[9];
  for (int t = 0; t < 16; ++t)
    for (int d = 0; d < 32; ++d)
      c.batch.k_cache[(size_t(phys) * 16 + t) * 32 + d] = 4.0f * (c.q[size_t(d)] + c.q[32 + size_t(d)]);
  c.oracle = {1};
  Output o = run(c, nullptr);
  ASSERT_TRUE(o.status.is_ok()) << o.status.to_string();
  EXPECT_NE(std::find(o.indices.begin(), o.indices.end(), phys), o.indices.end());
  // Without a K cache the oracle is refused, not guessed.
  BlockSelectParams p;
  std::vector<int32_t> out(4), last(1);
  p.q = c.q.data();
  p.reps = c.reps.data();
  p.block_table_indptr = c.batch.bt_indptr.data();
  p.block_table = c.batch.block_table.data();
  p.seq_len = c.batch.seq_len.data();
  p.out_indptr = o.indptr.data();
  p.out_indices = out.data();
  p.out_last_len = last.data();
  p.n_seqs = 1;
  p.n_heads = 4;
  p.n_kv_heads = 1;
  p.head_dim = 32;
  p.block_size = 16;
  const uint8_t rank = uint8_t(backend::Rank::Oracle);
  p.rank = &rank;
  p.any_oracle = true;
  EXPECT_EQ(cpu::block_select(p, nullptr).code(), StatusCode::InvalidArgument);
}

TEST(BlockSelectRerank, EveryBlockACandidateIsTheOracleOneCandidatePerSlotIsTheScore) {
  // With a factor covering every block the candidates are all blocks, so the masses are the
  // oracle's; with factor 1 the candidates are the score's top-k, which the rerank keeps.
  ThreadPool pool(2);
  for (bool per_kv_head : {false, true})
    for (RepKind kind : {RepKind::MinMax, RepKind::Quant}) {
      Case c = make_case(320 + per_kv_head, {16 * 20 + 5, 16 * 12, 16 * 31 + 15}, 8, 2, 32, 16, kind,
                         QueryMode::GroupMax, per_kv_head, {8, 5, 12});
      const Output score = run(c, &pool);
      c.oracle = {1, 1, 1};
      const Output oracle = run(c, &pool);
      c.oracle.clear();
      c.rerank = 64;
      const Output all = run(c, &pool);
      ASSERT_TRUE(all.status.is_ok()) << all.status.to_string();
      EXPECT_EQ(all.indices, oracle.indices);
      EXPECT_EQ(all.last_len, oracle.last_len);
      EXPECT_EQ(all.indices, run(c, nullptr).indices) << "depends on threading";
      c.rerank = 1;
      const Output one = run(c, &pool);
      ASSERT_TRUE(one.status.is_ok()) << one.status.to_string();
      EXPECT_EQ(one.indices, score.indices);
      EXPECT_NE(score.indices, oracle.indices) << "the case no longer separates score and oracle";
    }
}

TEST(BlockSelectRerank, FindsTheBlockTheMeanHidesWhenItIsACandidate) {
  // Block 9 has one key along the query and the others against it: its mean key scores low,
  // its true mass is the largest. Mean ranking misses it with one free slot; rerank finds it once
  // the candidates reach it, and never picks a block outside the candidates.
  Case c = make_case(330, {16 * 14 + 3}, 4, 1, 32, 16, RepKind::Mean, QueryMode::GroupMean,
                     false, {4});
  const int32_t phys = c.batch.table(0)[9];
  for (int t = 0; t < 16; ++t)
    for (int d = 0; d < 32; ++d) {
      const float along = c.q[size_t(d)] + c.q[32 + size_t(d)] + c.q[64 + size_t(d)] + c.q[96 + size_t(d)];
      c.batch.k_cache[(size_t(phys) * 16 + t) * 32 + d] = t == 0 ? 3.0f * along : -0.3f * along;
    }
  update_reps(c);
  auto picks = [&](const Output& o) {
    return std::find(o.indices.begin(), o.indices.end(), phys) != o.indices.end();
  };
  EXPECT_FALSE(picks(run(c, nullptr))) << "mean finds it: the case tests nothing";
  c.rerank = 64;
  const Output o = run(c, nullptr);
  ASSERT_TRUE(o.status.is_ok()) << o.status.to_string();
  EXPECT_TRUE(picks(o));
  c.rerank = 1;
  EXPECT_FALSE(picks(run(c, nullptr)));
}

INSTANTIATE_TEST_SUITE_P(
    All, BlockSelectVariants,
    ::testing::Values(Variant{RepKind::Mean, QueryMode::GroupMean, false},
                      Variant{RepKind::Mean, QueryMode::GroupMax, false},
                      Variant{RepKind::Mean, QueryMode::GroupMean, true},
                      Variant{RepKind::MinMax, QueryMode::GroupMean, false},
                      Variant{RepKind::MinMax, QueryMode::GroupMax, true},
                      Variant{RepKind::Hash, QueryMode::GroupMean, false},
                      Variant{RepKind::Hash, QueryMode::GroupMax, true},
                      Variant{RepKind::Quant, QueryMode::GroupMean, false},
                      Variant{RepKind::Quant, QueryMode::GroupMax, true}));

TEST(BlockSelect, BudgetCoveringEveryBlockSelectsEveryBlock) {
  Case c = make_case(7, {16 * 9 + 3, 16 * 4}, 4, 2, 32, 16, RepKind::Mean, QueryMode::GroupMean,
                     false, {10, 4});
  c.q.assign(c.q.size(), std::numeric_limits<float>::quiet_NaN());  // never read
  Output o = run(c, nullptr);
  ASSERT_TRUE(o.status.is_ok()) << o.status.to_string();
  EXPECT_EQ(o.indices, c.batch.block_table);
  EXPECT_EQ(o.last_len, (std::vector<int32_t>{3, 16}));
}

TEST(BlockSelect, TiesGoToTheLowerLogicalIndex) {
  Case c = make_case(8, {16 * 12 + 1}, 2, 1, 32, 16, RepKind::Mean, QueryMode::GroupMean, false,
                     {6});
  c.q.assign(c.q.size(), 0.0f);  // every score is 0
  Output o = run(c, nullptr);
  ASSERT_TRUE(o.status.is_ok());
  EXPECT_EQ(to_logical(o.indices.data(), 6, c.batch.table(0), 13),
            (std::vector<int>{0, 1, 2, 3, 11, 12}));
}

TEST(BlockSelect, NanQueriesStillGiveAValidList) {
  Case c = make_case(9, {16 * 10 + 7}, 4, 2, 32, 16, RepKind::MinMax, QueryMode::GroupMax, false,
                     {5});
  c.q[3] = std::numeric_limits<float>::quiet_NaN();
  c.q[40] = std::numeric_limits<float>::infinity();
  Output o = run(c, nullptr);
  ASSERT_TRUE(o.status.is_ok());
  std::vector<int> lg = to_logical(o.indices.data(), 5, c.batch.table(0), 11);
  EXPECT_TRUE(std::is_sorted(lg.begin(), lg.end()));
  EXPECT_EQ(lg.front(), 0);
  EXPECT_EQ(lg.back(), 10);
}

// Query heads 0 and 1 share kv head 0: group mean = e1, so mean scoring prefers the block whose
// mean key is 2 e1; the max over heads prefers the block whose mean key is e0 (head 0 gives 10).
TEST(BlockSelect, GroupMeanAndGroupMaxDiffer) {
  const int hd = 32, bs = 16;
  Case c = make_case(10, {bs * 6}, 2, 1, hd, bs, RepKind::Mean, QueryMode::GroupMean, false, {4});
  std::fill(c.reps.begin(), c.reps.end(), 0);
  float* reps = reinterpret_cast<float*>(c.reps.data());
  const int32_t block_a = c.batch.table(0)[2], block_b = c.batch.table(0)[3];
  reps[block_a * hd + 0] = 1.0f;
  reps[block_b * hd + 1] = 2.0f;
  std::fill(c.q.begin(), c.q.end(), 0.0f);
  c.q[0] = 10.0f;
  c.q[1] = 1.0f;
  c.q[hd + 0] = -10.0f;
  c.q[hd + 1] = 1.0f;
  Output mean = run(c, nullptr);
  c.mode = QueryMode::GroupMax;
  Output max = run(c, nullptr);
  ASSERT_TRUE(mean.status.is_ok() && max.status.is_ok());
  EXPECT_EQ(to_logical(mean.indices.data(), 4, c.batch.table(0), 6), (std::vector<int>{0, 3, 4, 5}));
  EXPECT_EQ(to_logical(max.indices.data(), 4, c.batch.table(0), 6), (std::vector<int>{0, 2, 4, 5}));
}

// Kv head 0 favours logical block 2, kv head 1 favours block 3: per_kv_head gives each head its
// own block; per_layer sums and picks the block with the larger total.
TEST(BlockSelect, PerKvHeadListsFollowTheirOwnHead) {
  const int hd = 32, bs = 16;
  Case c = make_case(11, {bs * 7}, 2, 2, hd, bs, RepKind::Mean, QueryMode::GroupMean, true, {4});
  std::fill(c.reps.begin(), c.reps.end(), 0);
  float* reps = reinterpret_cast<float*>(c.reps.data());
  auto rep = [&](int logical, int h) { return reps + (c.batch.table(0)[logical] * 2 + h) * hd; };
  rep(2, 0)[0] = 5.0f;
  rep(3, 1)[0] = 3.0f;
  rep(3, 0)[0] = 1.0f;
  std::fill(c.q.begin(), c.q.end(), 0.0f);
  c.q[0] = 1.0f;       // query head 0 -> kv head 0
  c.q[hd] = 1.0f;      // query head 1 -> kv head 1
  Output per_head = run(c, nullptr);
  ASSERT_TRUE(per_head.status.is_ok());
  ASSERT_EQ(per_head.indptr, (std::vector<int32_t>{0, 4, 8}));
  EXPECT_EQ(to_logical(per_head.indices.data(), 4, c.batch.table(0), 7),
            (std::vector<int>{0, 2, 5, 6}));
  EXPECT_EQ(to_logical(per_head.indices.data() + 4, 4, c.batch.table(0), 7),
            (std::vector<int>{0, 3, 5, 6}));
  c.per_kv_head = false;
  Output per_layer = run(c, nullptr);
  ASSERT_TRUE(per_layer.status.is_ok());
  EXPECT_EQ(to_logical(per_layer.indices.data(), 4, c.batch.table(0), 7),
            (std::vector<int>{0, 2, 5, 6}));  // 5 > 3 + 1
}

TEST(BlockSelect, RejectsBadParameters) {
  Case base = make_case(12, {16 * 10 + 2}, 4, 2, 32, 16, RepKind::Mean, QueryMode::GroupMean,
                        false, {5});
  EXPECT_TRUE(run(base, nullptr).status.is_ok());
  auto code = [](const Case& c) { return run(c, nullptr).status.code(); };
  Case c = base;
  c.sizes = {2};  // fewer than the 3 forced blocks
  EXPECT_EQ(code(c), StatusCode::InvalidArgument);
  c.sizes = {12};  // more than the 11 blocks
  EXPECT_EQ(code(c), StatusCode::InvalidArgument);
  c = base;
  c.batch.seq_len[0] = 16 * 10;  // 10 tokens' worth of blocks but 11 blocks listed
  EXPECT_EQ(code(c), StatusCode::InvalidArgument);
  c = base;
  c.batch.block_table[3] = c.batch.n_phys;  // past the rep table
  EXPECT_EQ(code(c), StatusCode::InvalidArgument);
  c = base;
  c.n_heads = 3;  // not a multiple of n_kv_heads
  EXPECT_EQ(code(c), StatusCode::InvalidArgument);
  c = base;
  c.sink = -1;
  EXPECT_EQ(code(c), StatusCode::InvalidArgument);
  c = base;
  c.kind = RepKind::Hash;
  c.hash_w.clear();
  EXPECT_EQ(code(c), StatusCode::InvalidArgument);

  // Unsupported dtype, null q when scoring is needed.
  Output o;
  o.indptr = {0, 5};
  o.indices.resize(5);
  o.last_len.resize(1);
  BlockSelectParams p;
  p.q = nullptr;
  p.reps = base.reps.data();
  p.block_table_indptr = base.batch.bt_indptr.data();
  p.block_table = base.batch.block_table.data();
  p.seq_len = base.batch.seq_len.data();
  p.out_indptr = o.indptr.data();
  p.out_indices = o.indices.data();
  p.out_last_len = o.last_len.data();
  p.n_seqs = 1;
  p.n_heads = 4;
  p.n_kv_heads = 2;
  p.head_dim = 32;
  p.block_size = 16;
  EXPECT_EQ(cpu::block_select(p, nullptr).code(), StatusCode::InvalidArgument);
  p.q = base.q.data();
  p.act_type = DType::BF16;
  EXPECT_EQ(cpu::block_select(p, nullptr).code(), StatusCode::Unsupported);
}

}  // namespace
}  // namespace gsa::sparse::test
