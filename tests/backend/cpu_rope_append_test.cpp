// Backend::rope_append's default (what the CPU backend runs) against rope(q), rope(k), kv_append
// and rep_update called by hand on copies of the same batch: decode and prefill batches, every
// representation kind, both pair layouts, no representation table, and error propagation.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "backend/backend.h"
#include "rope_append_case.h"

namespace gsa::backend {
namespace {

using test::make_rope_append_batch;
using test::rope_append_params;
using test::RopeAppendBatch;
using test::RopeAppendShape;

template <typename T>
bool same_bytes(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

TEST(CpuRopeAppend, DefaultEqualsTheFourOps) {
  ThreadPool pool(2);
  auto cpu = make_cpu_backend(&pool);
  std::mt19937 rng(11);
  const RopeAppendShape shapes[] = {{5, 28, 4, 64, 16, 64}, {3, 8, 8, 128, 32, 64}};
  int salt = 0;
  for (const RopeAppendShape& sh : shapes) {
    for (bool prefill : {false, true}) {
      for (RepKind kind : {RepKind::Mean, RepKind::MinMax, RepKind::Hash}) {
        for (bool neox : {false, true}) {
          for (bool with_reps : {true, false}) {
            const RopeAppendBatch b0 =
                make_rope_append_batch(sh, rng, prefill, ++salt, /*unwritten_full=*/!prefill, false);
            ASSERT_GT(b0.n_completing, 0);
            const size_t rep_size =
                size_t(b0.n_blocks) * sh.n_kv_heads * size_t(rep_bytes(kind, sh.head_dim, sh.block_size));
            // Fused call.
            RopeAppendBatch got = b0;
            std::vector<uint8_t> got_reps(rep_size, 0xFF);
            RopeAppendParams p = rope_append_params(got, with_reps ? got_reps.data() : nullptr, kind, neox);
            p.one_token_per_seq = !prefill;
            ASSERT_TRUE(cpu->rope_append(p).is_ok());
            // The four ops by hand.
            RopeAppendBatch ref = b0;
            std::vector<uint8_t> ref_reps(rep_size, 0xFF);
            RopeParams rq{ref.q.data(), ref.pos.data(), ref.n_tokens, sh.n_heads, sh.head_dim,
                          sh.rot_dim, 10000.0f, neox, DType::F32};
            RopeParams rk = rq;
            rk.x = ref.k.data();
            rk.n_heads = sh.n_kv_heads;
            ASSERT_TRUE(cpu->rope(rq).is_ok());
            ASSERT_TRUE(cpu->rope(rk).is_ok());
            ASSERT_TRUE(cpu->kv_append({ref.k.data(), ref.v.data(), ref.k_cache.data(), ref.v_cache.data(),
                                        ref.slots.data(), ref.n_tokens, ref.n_blocks, sh.n_kv_heads,
                                        sh.head_dim, sh.block_size, DType::F32, DType::F32})
                            .is_ok());
            if (with_reps) {
              RepUpdateParams up;
              up.k_cache = ref.k_cache.data();
              up.reps = ref_reps.data();
              up.blocks = ref.full_blocks.data();
              up.n_update = int(ref.full_blocks.size());
              up.n_blocks = ref.n_blocks;
              up.n_kv_heads = sh.n_kv_heads;
              up.head_dim = sh.head_dim;
              up.block_size = sh.block_size;
              up.kind = kind;
              up.hash_w = ref.hash_w.data();
              ASSERT_TRUE(cpu->rep_update(up).is_ok());
            }
            const std::string what = "prefill " + std::to_string(prefill) + " kind " +
                                     std::to_string(int(kind)) + " neox " + std::to_string(neox) +
                                     " reps " + std::to_string(with_reps);
            EXPECT_TRUE(same_bytes(got.q, ref.q)) << what;
            EXPECT_TRUE(same_bytes(got.k, ref.k)) << what;
            EXPECT_TRUE(same_bytes(got.k_cache, ref.k_cache)) << what;
            EXPECT_TRUE(same_bytes(got.v_cache, ref.v_cache)) << what;
            EXPECT_TRUE(same_bytes(got_reps, ref_reps)) << what;
            // The op did run: q rotated, the cache written, representations computed.
            EXPECT_FALSE(same_bytes(got.q, b0.q)) << what;
            EXPECT_FALSE(same_bytes(got.k_cache, b0.k_cache)) << what;
            EXPECT_EQ(same_bytes(got_reps, std::vector<uint8_t>(rep_size, 0xFF)), !with_reps) << what;
          }
        }
      }
    }
  }
}

TEST(CpuRopeAppend, EmptyBatchStillUpdatesListedBlocks) {
  ThreadPool pool(1);
  auto cpu = make_cpu_backend(&pool);
  std::mt19937 rng(3);
  RopeAppendBatch b = make_rope_append_batch({1, 4, 2, 32, 8, 32}, rng, false, 1, true, false);
  const size_t rep_size = size_t(b.n_blocks) * 2 * 32 * 4;
  std::vector<uint8_t> reps(rep_size, 0xFF);
  RopeAppendParams p = rope_append_params(b, reps.data(), RepKind::Mean, false);
  p.n_tokens = 0;
  ASSERT_TRUE(cpu->rope_append(p).is_ok());
  EXPECT_FALSE(same_bytes(reps, std::vector<uint8_t>(rep_size, 0xFF)));
}

TEST(CpuRopeAppend, ErrorsOfTheOpsPropagate) {
  ThreadPool pool(1);
  auto cpu = make_cpu_backend(&pool);
  std::mt19937 rng(5);
  RopeAppendBatch b = make_rope_append_batch({2, 4, 2, 32, 8, 32}, rng, false, 0, false, false);
  std::vector<uint8_t> reps(size_t(b.n_blocks) * 2 * 8 * 32 / 8, 0);
  RopeAppendParams p = rope_append_params(b, reps.data(), RepKind::Hash, false);
  p.rot_dim = 33;
  EXPECT_EQ(cpu->rope_append(p).code(), StatusCode::InvalidArgument);
  p.rot_dim = 32;
  p.hash_w = nullptr;  // rep_update refuses a hash without W
  EXPECT_EQ(cpu->rope_append(p).code(), StatusCode::InvalidArgument);
  p.hash_w = b.hash_w.data();
  p.slot_mapping = nullptr;
  EXPECT_EQ(cpu->rope_append(p).code(), StatusCode::InvalidArgument);
}

}  // namespace
}  // namespace gsa::backend
