// cpu::rep_update against brute force: Mean, the MinMax box and its upper-bound property, Hash
// bits against a direct double-precision sign computation; purity and parameter errors.
#include <gtest/gtest.h>

#include <cstring>

#include "backend/cpu/cpu_kernels.h"
#include "sparse/sparse_config.h"
#include "sparse_test_util.h"

namespace gsa::sparse::test {
namespace {

using backend::RepKind;
using backend::RepUpdateParams;

struct Reps {
  std::vector<uint8_t> bytes;
  int64_t per_head = 0;
};

Reps run_update(const Batch& b, RepKind kind, const std::vector<int32_t>& blocks,
                const std::vector<float>* hash_w, ThreadPool* pool, uint8_t poison = 0xAB) {
  Reps r;
  r.per_head = backend::rep_bytes(kind, b.head_dim, b.block_size);
  r.bytes.assign(size_t(b.n_phys) * b.n_kv_heads * r.per_head, poison);
  RepUpdateParams p;
  p.k_cache = b.k_cache.data();
  p.reps = r.bytes.data();
  p.blocks = blocks.data();
  p.n_update = int(blocks.size());
  p.n_blocks = b.n_phys;
  p.n_kv_heads = b.n_kv_heads;
  p.head_dim = b.head_dim;
  p.block_size = b.block_size;
  p.kind = kind;
  p.hash_w = hash_w ? hash_w->data() : nullptr;
  Status st = cpu::rep_update(p, pool);
  EXPECT_TRUE(st.is_ok()) << st.to_string();
  return r;
}

const uint8_t* rep_of(const Reps& r, const Batch& b, int32_t phys, int h) {
  return r.bytes.data() + (int64_t(phys) * b.n_kv_heads + h) * r.per_head;
}

// mn and mx are the min and max of dimension d over the keys of (phys, h).
void expect_box(const Batch& b, int32_t phys, int h, int d, float mn, float mx) {
  float emn = key(b, phys, h, 0)[d], emx = emn;
  for (int t = 1; t < b.block_size; ++t) {
    emn = std::min(emn, key(b, phys, h, t)[d]);
    emx = std::max(emx, key(b, phys, h, t)[d]);
  }
  EXPECT_EQ(mn, emn) << "block " << phys << " head " << h << " dim " << d;
  EXPECT_EQ(mx, emx) << "block " << phys << " head " << h << " dim " << d;
}

TEST(RepUpdate, MeanMatchesBruteForce) {
  std::mt19937 rng(11);
  Batch b = make_batch(rng, {70}, 3, 40, 16);
  std::vector<int32_t> blocks(b.block_table.begin(), b.block_table.begin() + 4);
  ThreadPool pool(2);
  Reps r = run_update(b, RepKind::Mean, blocks, nullptr, &pool);
  for (int32_t phys : blocks)
    for (int h = 0; h < b.n_kv_heads; ++h) {
      const float* rep = reinterpret_cast<const float*>(rep_of(r, b, phys, h));
      for (int d = 0; d < b.head_dim; ++d) {
        double sum = 0;
        for (int t = 0; t < b.block_size; ++t) sum += key(b, phys, h, t)[d];
        EXPECT_NEAR(rep[d], sum / b.block_size, 1e-5) << "block " << phys << " head " << h;
      }
    }
}

TEST(RepUpdate, MinMaxIsTheBoxAndBoundsEveryKey) {
  std::mt19937 rng(12);
  Batch b = make_batch(rng, {64}, 2, 32, 16);
  std::vector<int32_t> blocks(b.block_table.begin(), b.block_table.end());
  Reps r = run_update(b, RepKind::MinMax, blocks, nullptr, nullptr);
  for (int32_t phys : blocks)
    for (int h = 0; h < b.n_kv_heads; ++h) {
      const float* mn = reinterpret_cast<const float*>(rep_of(r, b, phys, h));
      const float* mx = mn + b.head_dim;
      for (int d = 0; d < b.head_dim; ++d) {
        expect_box(b, phys, h, d, mn[d], mx[d]);
      }
      // The box score of any query bounds q.k of every key of the block.
      for (int trial = 0; trial < 8; ++trial) {
        std::vector<float> q = random_vec(rng, size_t(b.head_dim), -2.0f, 2.0f);
        double bound = 0;
        for (int d = 0; d < b.head_dim; ++d)
          bound += std::max(double(q[size_t(d)]) * mn[d], double(q[size_t(d)]) * mx[d]);
        for (int t = 0; t < b.block_size; ++t) {
          double dot = 0;
          for (int d = 0; d < b.head_dim; ++d) dot += double(q[size_t(d)]) * key(b, phys, h, t)[d];
          EXPECT_GE(bound, dot - 1e-9);
        }
      }
    }
}

TEST(RepUpdate, QuantIsTheBoxAndTwoBitCodesOfEveryKey) {
  std::mt19937 rng(16);
  Batch b = make_batch(rng, {64}, 2, 32, 16);
  // A dimension whose keys are all equal (zero-width range) codes as 0.
  for (int32_t phys : b.block_table)
    for (int t = 0; t < b.block_size; ++t) b.k_cache[((size_t(phys) * 2 + 1) * 16 + t) * 32 + 7] = 0.25f;
  std::vector<int32_t> blocks(b.block_table.begin(), b.block_table.end());
  ThreadPool pool(2);
  Reps r = run_update(b, RepKind::Quant, blocks, nullptr, &pool);
  ASSERT_EQ(r.per_head, 32 * 8 + 16 * 32 / 4);
  for (int32_t phys : blocks)
    for (int h = 0; h < b.n_kv_heads; ++h) {
      const float* mn = reinterpret_cast<const float*>(rep_of(r, b, phys, h));
      const float* mx = mn + b.head_dim;
      const uint32_t* codes = reinterpret_cast<const uint32_t*>(mx + b.head_dim);
      for (int d = 0; d < b.head_dim; ++d) {
        expect_box(b, phys, h, d, mn[d], mx[d]);
        for (int t = 0; t < b.block_size; ++t) {
          const int c = int(codes[t * (b.head_dim / 16) + d / 16] >> (2 * (d % 16)) & 3u);
          const double k = key(b, phys, h, t)[d];
          const double v = mn[d] + (c + 0.5) * (double(mx[d]) - mn[d]) / 4;
          EXPECT_NEAR(v, brute_dequant(b, phys, h, t, d), 1e-6) << "t " << t << " d " << d;
          EXPECT_LE(std::abs(v - k), (double(mx[d]) - mn[d]) / 8 + 1e-6);  // inside its bin
          if (h == 1 && d == 7) {
            EXPECT_EQ(c, 0);
          }
        }
      }
    }
}

TEST(RepUpdate, HashBitsMatchDirectSigns) {
  std::mt19937 rng(13);
  const int hd = 64;
  Batch b = make_batch(rng, {48}, 2, hd, 16);
  std::vector<float> w = make_hash_matrix(hd, 99);
  std::vector<int32_t> blocks(b.block_table.begin(), b.block_table.end());
  ThreadPool pool(2);
  Reps r = run_update(b, RepKind::Hash, blocks, &w, &pool);
  std::vector<double> proj;
  int checked = 0;
  for (int32_t phys : blocks)
    for (int h = 0; h < b.n_kv_heads; ++h) {
      const uint32_t* bits = reinterpret_cast<const uint32_t*>(rep_of(r, b, phys, h));
      for (int t = 0; t < b.block_size; ++t) {
        hash_project(key(b, phys, h, t), w, hd, &proj);
        for (int d = 0; d < hd; ++d) {
          if (std::fabs(proj[size_t(d)]) < 1e-4) continue;  // sign decided by rounding
          const bool bit = (bits[t * (hd / 32) + d / 32] >> (d % 32)) & 1u;
          EXPECT_EQ(bit, proj[size_t(d)] > 0) << "token " << t << " dim " << d;
          ++checked;
        }
      }
    }
  EXPECT_GT(checked, 48 * 2 * 60);
}

TEST(RepUpdate, PureFunctionOfTheBlockKeysAndOnlyListedBlocksWritten) {
  std::mt19937 rng(14);
  Batch b = make_batch(rng, {64}, 2, 32, 16, 2);
  // Copy the keys of block_table[0] into a spare block: equal keys give equal bytes.
  const int32_t src = b.block_table[0];
  const int32_t dst = b.n_phys - 1;
  const int64_t elems = int64_t(b.n_kv_heads) * b.block_size * b.head_dim;
  std::memcpy(b.k_cache.data() + dst * elems, b.k_cache.data() + src * elems, elems * 4);
  std::vector<float> w = make_hash_matrix(32, 5);
  for (RepKind kind : {RepKind::Mean, RepKind::MinMax, RepKind::Hash, RepKind::Quant}) {
    Reps r = run_update(b, kind, {src, dst}, &w, nullptr);
    for (int h = 0; h < b.n_kv_heads; ++h)
      EXPECT_EQ(0, std::memcmp(rep_of(r, b, src, h), rep_of(r, b, dst, h), size_t(r.per_head)));
    const int32_t untouched = b.block_table[1];
    for (int64_t i = 0; i < r.per_head * b.n_kv_heads; ++i)
      ASSERT_EQ(rep_of(r, b, untouched, 0)[i], 0xAB);
  }
}

TEST(RepUpdate, RejectsBadParameters) {
  std::mt19937 rng(15);
  Batch b = make_batch(rng, {32}, 1, 32, 16);
  std::vector<uint8_t> reps(size_t(b.n_phys) * 32 * 8);
  std::vector<int32_t> blocks = {0};
  RepUpdateParams p;
  p.k_cache = b.k_cache.data();
  p.reps = reps.data();
  p.blocks = blocks.data();
  p.n_update = 1;
  p.n_blocks = b.n_phys;
  p.n_kv_heads = 1;
  p.head_dim = 32;
  p.block_size = 16;
  EXPECT_TRUE(cpu::rep_update(p, nullptr).is_ok());
  auto code = [&](RepUpdateParams q) { return cpu::rep_update(q, nullptr).code(); };
  RepUpdateParams q = p;
  q.kv_type = DType::BF16;
  EXPECT_EQ(code(q), StatusCode::Unsupported);
  q = p;
  blocks[0] = b.n_phys;
  EXPECT_EQ(code(q), StatusCode::InvalidArgument);
  blocks[0] = -1;
  EXPECT_EQ(code(q), StatusCode::InvalidArgument);
  blocks[0] = 0;
  q.kind = RepKind::Hash;  // no matrix
  EXPECT_EQ(code(q), StatusCode::InvalidArgument);
  q = p;
  q.head_dim = 0;
  EXPECT_EQ(code(q), StatusCode::InvalidArgument);
  q = p;
  q.reps = nullptr;
  EXPECT_EQ(code(q), StatusCode::InvalidArgument);
  q = p;
  q.kind = static_cast<RepKind>(7);
  EXPECT_EQ(code(q), StatusCode::InvalidArgument);
  std::vector<float> w = make_hash_matrix(48, 1);
  q = p;
  q.kind = RepKind::Hash;
  q.head_dim = 48;
  q.hash_w = w.data();
  EXPECT_EQ(code(q), StatusCode::InvalidArgument);  // head_dim % 32 != 0
}

}  // namespace
}  // namespace gsa::sparse::test
