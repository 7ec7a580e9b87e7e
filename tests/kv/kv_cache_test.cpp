#include "kv/kv_cache.h"

#include <gtest/gtest.h>

#include <cstring>
#include <set>

namespace gsa::kv {

class KvCacheTest : public ::testing::Test {
 protected:
  KvCache make(int32_t n_blocks, int block_size = 4) {
    KvConfig c;
    c.n_layers = 2;
    c.n_kv_heads = 2;
    c.head_dim = 8;
    c.block_size = block_size;
    c.n_blocks = n_blocks;
    auto kv = KvCache::create(backend_.get(), c);
    EXPECT_TRUE(kv.is_ok()) << kv.status().to_string();
    return std::move(kv).value();
  }
  ThreadPool pool_{1};
  std::unique_ptr<backend::Backend> backend_ = backend::make_cpu_backend(&pool_);
};

TEST_F(KvCacheTest, ReserveMapsTokensToSlotsInOrder) {
  KvCache kv = make(8);
  BlockTable t;
  std::vector<int32_t> slots;
  ASSERT_TRUE(kv.reserve(&t, 6, &slots).is_ok());
  EXPECT_EQ(t.n_tokens, 6);
  ASSERT_EQ(t.blocks.size(), 2u);
  ASSERT_EQ(slots.size(), 6u);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(slots[size_t(i)], t.blocks[size_t(i / 4)] * 4 + i % 4);
  slots.clear();
  ASSERT_TRUE(kv.reserve(&t, 3, &slots).is_ok());
  EXPECT_EQ(t.blocks.size(), 3u);
  EXPECT_EQ(slots[0], t.blocks[1] * 4 + 2);
  EXPECT_EQ(slots[2], t.blocks[2] * 4 + 0);
  EXPECT_EQ(kv.pool().n_free(), 5);
  kv.release(&t);
  EXPECT_EQ(kv.pool().n_free(), 8);
  EXPECT_TRUE(t.blocks.empty());
}

TEST_F(KvCacheTest, ExhaustionIsAnErrorAndLeavesTheTableUnchanged) {
  KvCache kv = make(3);
  BlockTable a, b;
  std::vector<int32_t> slots;
  ASSERT_TRUE(kv.reserve(&a, 9, &slots).is_ok());  // 3 blocks
  slots.clear();
  Status s = kv.reserve(&b, 1, &slots);
  EXPECT_EQ(s.code(), StatusCode::OutOfMemory);
  EXPECT_TRUE(b.blocks.empty());
  EXPECT_EQ(b.n_tokens, 0);
  EXPECT_TRUE(slots.empty());
  s = kv.reserve(&a, 4, &slots);  // would need a 4th block
  EXPECT_EQ(s.code(), StatusCode::OutOfMemory);
  EXPECT_EQ(a.n_tokens, 9);
  EXPECT_EQ(a.blocks.size(), 3u);
  EXPECT_EQ(kv.pool().n_free(), 0);
}

TEST_F(KvCacheTest, ForkSharesBlocksAndCopiesThePartialBlockOnWrite) {
  KvCache kv = make(8);
  BlockTable a;
  std::vector<int32_t> slots;
  ASSERT_TRUE(kv.reserve(&a, 6, &slots).is_ok());
  // Fill the K/V of every written slot with a recognizable value.
  const uint64_t block_bytes = kv.layer_block_bytes();
  for (int l = 0; l < 2; ++l)
    for (int32_t b : a.blocks) {
      std::memset(static_cast<uint8_t*>(kv.k(l)) + uint64_t(b) * block_bytes, 0x11 + b, block_bytes);
      std::memset(static_cast<uint8_t*>(kv.v(l)) + uint64_t(b) * block_bytes, 0x51 + b, block_bytes);
    }
  BlockTable f = kv.fork(a);
  EXPECT_EQ(f.blocks, a.blocks);
  EXPECT_EQ(kv.pool().ref_count(a.blocks[0]), 2);
  const int32_t shared_last = a.blocks[1];

  slots.clear();
  ASSERT_TRUE(kv.reserve(&f, 1, &slots).is_ok());
  EXPECT_EQ(f.blocks[0], a.blocks[0]);        // full block stays shared
  EXPECT_NE(f.blocks[1], shared_last);        // partial block copied
  EXPECT_EQ(a.blocks[1], shared_last);
  EXPECT_EQ(kv.pool().ref_count(shared_last), 1);
  EXPECT_EQ(slots[0], f.blocks[1] * 4 + 2);
  for (int l = 0; l < 2; ++l) {
    const uint8_t* src = static_cast<uint8_t*>(kv.k(l)) + uint64_t(shared_last) * block_bytes;
    const uint8_t* dst = static_cast<uint8_t*>(kv.k(l)) + uint64_t(f.blocks[1]) * block_bytes;
    EXPECT_EQ(std::memcmp(src, dst, block_bytes), 0);
    src = static_cast<uint8_t*>(kv.v(l)) + uint64_t(shared_last) * block_bytes;
    dst = static_cast<uint8_t*>(kv.v(l)) + uint64_t(f.blocks[1]) * block_bytes;
    EXPECT_EQ(std::memcmp(src, dst, block_bytes), 0);
  }
  // The original now owns its partial block alone and writes in place.
  slots.clear();
  ASSERT_TRUE(kv.reserve(&a, 1, &slots).is_ok());
  EXPECT_EQ(a.blocks[1], shared_last);
  kv.release(&a);
  EXPECT_EQ(kv.pool().ref_count(f.blocks[0]), 1);
  kv.release(&f);
  EXPECT_EQ(kv.pool().n_free(), 8);
}

TEST_F(KvCacheTest, ForkAtABlockBoundaryNeedsNoCopy) {
  KvCache kv = make(8);
  BlockTable a;
  std::vector<int32_t> slots;
  ASSERT_TRUE(kv.reserve(&a, 8, &slots).is_ok());
  BlockTable f = kv.fork(a);
  const int32_t free_before = kv.pool().n_free();
  slots.clear();
  ASSERT_TRUE(kv.reserve(&f, 1, &slots).is_ok());
  EXPECT_EQ(kv.pool().n_free(), free_before - 1);
  EXPECT_EQ(f.blocks[1], a.blocks[1]);
  kv.release(&a);
  kv.release(&f);
  EXPECT_EQ(kv.pool().n_free(), 8);
}

TEST_F(KvCacheTest, BadConfigIsAnError) {
  KvConfig c;
  c.n_layers = 1;
  c.n_kv_heads = 0;
  EXPECT_EQ(KvCache::create(backend_.get(), c).status().code(), StatusCode::InvalidArgument);
}

TEST(BlockPool, GenerationsChangeOnReuse) {
  BlockPool p(2);
  auto a = p.allocate();
  ASSERT_TRUE(a.is_ok());
  const uint32_t g = p.generation(*a);
  p.release(*a);
  auto b = p.allocate();
  ASSERT_TRUE(b.is_ok());
  EXPECT_EQ(*b, *a);
  EXPECT_NE(p.generation(*b), g);
  std::set<int32_t> ids{*b, *p.allocate()};
  EXPECT_EQ(ids.size(), 2u);
  EXPECT_EQ(p.allocate().status().code(), StatusCode::OutOfMemory);
}

}  // namespace gsa::kv
