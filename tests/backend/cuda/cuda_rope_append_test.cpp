// CUDA rope_append: the fused kernel (decode batches, one_token_per_seq) against the same call
// through the separate kernels (bit for bit: q, k, both caches, representations) and against the
// CPU backend (within f32 / bf16 tolerance, element by element); the fallback path (prefill,
// n_heads not a multiple of n_kv_heads, an empty batch) against the CPU. Representations of
// blocks not listed in full_blocks must keep their poison bytes.
#include <algorithm>
#include <cstring>
#include <set>
#include <string>

#include "../rope_append_case.h"
#include "cuda_test_util.h"

namespace gsa::backend::cuda_test {
namespace {

using test::make_rope_append_batch;
using test::rope_append_params;
using test::RopeAppendBatch;
using test::RopeAppendShape;

/// Element by element |got - ref| <= atol + rtol |ref|; a NaN fails.
::testing::AssertionResult all_near(const std::vector<float>& got, const std::vector<float>& ref,
                                    double atol, double rtol) {
  if (got.size() != ref.size())
    return ::testing::AssertionFailure() << "size " << got.size() << " vs " << ref.size();
  for (size_t i = 0; i < got.size(); ++i) {
    const double d = std::fabs(double(got[i]) - double(ref[i]));
    if (!(d <= atol + rtol * std::fabs(double(ref[i]))))
      return ::testing::AssertionFailure() << "element " << i << ": " << got[i] << " vs " << ref[i];
  }
  return ::testing::AssertionSuccess();
}

/// What one run leaves: raw bytes (for the bit-exact comparison) and floats (against the CPU).
struct RunResult {
  std::vector<uint8_t> q_raw, k_raw, kc_raw, vc_raw, reps;
  std::vector<float> q, k, kc, vc;
};

size_t reps_size(const RopeAppendBatch& b, RepKind kind) {
  return size_t(b.n_blocks) * size_t(b.shape.n_kv_heads) *
         size_t(rep_bytes(kind, b.shape.head_dim, b.shape.block_size));
}

class CudaRopeAppendTest : public CudaTest {
 protected:
  /// The batch through gpu()->rope_append with activations `at` and cache `kt`; the
  /// representation table starts as 0xFF bytes.
  RunResult run_gpu(const RopeAppendBatch& b, RepKind kind, bool neox, DType at, DType kt,
                    bool one_token_per_seq, int64_t n_tokens_override = -1) {
    auto dq = upload_act(gpu(), b.q, at), dk = upload_act(gpu(), b.k, at), dv = upload_act(gpu(), b.v, at);
    auto dkc = upload_act(gpu(), b.k_cache, kt), dvc = upload_act(gpu(), b.v_cache, kt);
    auto dpos = upload(gpu(), b.pos), dslots = upload(gpu(), b.slots);
    auto dfull = upload(gpu(), b.full_blocks), dw = upload(gpu(), b.hash_w);
    const size_t rs = reps_size(b, kind);
    Buf dreps(gpu(), rs);
    poison(gpu(), dreps);
    RopeAppendBatch host = b;  // only for the shape fields of the params
    RopeAppendParams p = rope_append_params(host, dreps.get(), kind, neox);
    p.q = dq->get();
    p.k = dk->get();
    p.v = dv->get();
    p.pos = dpos->as<int32_t>();
    p.slot_mapping = dslots->as<int32_t>();
    p.k_cache = dkc->get();
    p.v_cache = dvc->get();
    p.full_blocks = dfull->as<int32_t>();
    p.hash_w = dw->as<float>();
    p.act_type = at;
    p.kv_type = kt;
    p.one_token_per_seq = one_token_per_seq;
    if (n_tokens_override >= 0) p.n_tokens = n_tokens_override;
    auto st = gpu()->rope_append(p);
    EXPECT_TRUE(st.is_ok()) << st.to_string();
    EXPECT_TRUE(gpu()->synchronize().is_ok());
    RunResult r;
    r.q_raw = download<uint8_t>(gpu(), *dq, b.q.size() * dtype_size(at));
    r.k_raw = download<uint8_t>(gpu(), *dk, b.k.size() * dtype_size(at));
    r.kc_raw = download<uint8_t>(gpu(), *dkc, b.k_cache.size() * dtype_size(kt));
    r.vc_raw = download<uint8_t>(gpu(), *dvc, b.v_cache.size() * dtype_size(kt));
    r.reps = download<uint8_t>(gpu(), dreps, rs);
    r.q = download_act(gpu(), *dq, b.q.size(), at);
    r.k = download_act(gpu(), *dk, b.k.size(), at);
    r.kc = download_act(gpu(), *dkc, b.k_cache.size(), kt);
    r.vc = download_act(gpu(), *dvc, b.v_cache.size(), kt);
    return r;
  }

  /// The CPU backend's result for the same batch (reps start as 0xFF too).
  RunResult run_cpu(const RopeAppendBatch& b0, RepKind kind, bool neox, int64_t n_tokens_override = -1) {
    RopeAppendBatch b = b0;
    RunResult r;
    r.reps.assign(reps_size(b, kind), 0xFF);
    RopeAppendParams p = rope_append_params(b, r.reps.data(), kind, neox);
    if (n_tokens_override >= 0) p.n_tokens = n_tokens_override;
    auto st = cpu()->rope_append(p);
    EXPECT_TRUE(st.is_ok()) << st.to_string();
    r.q = b.q;
    r.k = b.k;
    r.kc = b.k_cache;
    r.vc = b.v_cache;
    return r;
  }

  /// got (CUDA) against ref (CPU). bf16: some value went through bf16 (activations or cache).
  void expect_matches_cpu(const RunResult& got, const RunResult& ref, const RopeAppendBatch& b,
                          RepKind kind, bool bf16, const std::string& what) {
    // f32: cosf/sinf differ by an ulp or two between the two math libraries; bf16: one rounding.
    const double atol = 1e-5, rtol = bf16 ? 1.0 / 256 : 1e-5;
    EXPECT_TRUE(all_near(got.q, ref.q, atol, rtol)) << what << " q";
    EXPECT_TRUE(all_near(got.k, ref.k, atol, rtol)) << what << " k";
    EXPECT_TRUE(all_near(got.kc, ref.kc, atol, rtol)) << what << " k cache";
    EXPECT_TRUE(all_near(got.vc, ref.vc, atol, rtol)) << what << " v cache";

    const int64_t rb = rep_bytes(kind, b.shape.head_dim, b.shape.block_size);
    ASSERT_EQ(got.reps.size(), ref.reps.size());
    const std::vector<uint8_t> poison_item(size_t(rb), 0xFF);
    int64_t bits = 0, diff_bits = 0, listed_items = 0;
    for (int64_t blk = 0; blk < b.n_blocks; ++blk) {
      const bool listed = std::find(b.full_blocks.begin(), b.full_blocks.end(), int32_t(blk)) != b.full_blocks.end();
      for (int h = 0; h < b.shape.n_kv_heads; ++h) {
        const size_t off = size_t((blk * b.shape.n_kv_heads + h) * rb);
        const uint8_t* g = got.reps.data() + off;
        const uint8_t* r = ref.reps.data() + off;
        if (!listed) {
          EXPECT_EQ(std::memcmp(g, poison_item.data(), size_t(rb)), 0)
              << what << ": representation of unlisted block " << blk << " head " << h << " written";
          continue;
        }
        ++listed_items;
        EXPECT_NE(std::memcmp(g, poison_item.data(), size_t(rb)), 0)
            << what << ": listed block " << blk << " head " << h << " not written";
        if (kind == RepKind::Hash) {
          for (int64_t i = 0; i < rb; ++i) diff_bits += __builtin_popcount(unsigned(g[i] ^ r[i]));
          bits += rb * 8;
        } else if (kind == RepKind::Quant) {
          // The box as floats; the 2-bit codes may differ where a key sits on a bin edge.
          const int hd = b.shape.head_dim;
          std::vector<float> gf(size_t(2 * hd)), rf(size_t(2 * hd));
          std::memcpy(gf.data(), g, gf.size() * 4);
          std::memcpy(rf.data(), r, rf.size() * 4);
          EXPECT_TRUE(all_near(gf, rf, bf16 ? 4e-3 : 1e-5, 0.0)) << what << " box of block " << blk << " head " << h;
          for (int64_t i = 8 * hd; i < rb; ++i)
            for (int j = 0; j < 8; j += 2) diff_bits += ((g[i] >> j) & 3) != ((r[i] >> j) & 3);
          bits += (rb - 8 * hd) * 4;  // codes
        } else {
          std::vector<float> gf(size_t(rb / 4)), rf(size_t(rb / 4));
          std::memcpy(gf.data(), g, size_t(rb));
          std::memcpy(rf.data(), r, size_t(rb));
          // bf16: the new key's elements differ by one bf16 rounding (<= 2^-9 of |k| <= 1).
          EXPECT_TRUE(all_near(gf, rf, bf16 ? 4e-3 : 1e-5, 0.0)) << what << " rep of block " << blk << " head " << h;
        }
      }
    }
    EXPECT_EQ(listed_items, int64_t(std::set<int32_t>(b.full_blocks.begin(), b.full_blocks.end()).size()) *
                                b.shape.n_kv_heads);
    if (kind == RepKind::Hash && bits > 0) {
      // Only the new key's row can differ (sign bits of near-zero projections).
      EXPECT_LT(double(diff_bits) / double(bits), bf16 ? 0.02 : 0.002) << what << " hash bits";
    }
    if (kind == RepKind::Quant && bits > 0) {
      EXPECT_LT(double(diff_bits) / double(bits), bf16 ? 0.02 : 0.002) << what << " quant codes";
    }
  }
};

constexpr DType kTypes[2] = {DType::F32, DType::BF16};

std::string dtype_name(DType t) { return t == DType::BF16 ? "bf16" : "f32"; }

std::string describe(const RopeAppendShape& sh, RepKind kind, bool neox) {
  return "seqs " + std::to_string(sh.n_seqs) + " heads " + std::to_string(sh.n_heads) + "/" +
         std::to_string(sh.n_kv_heads) + " hd " + std::to_string(sh.head_dim) + " bs " +
         std::to_string(sh.block_size) + " rot " + std::to_string(sh.rot_dim) + " kind " +
         std::to_string(int(kind)) + " neox " + std::to_string(neox);
}

TEST_F(CudaRopeAppendTest, FusedDecodeMatchesSeparateKernelsAndCpu) {
  const RopeAppendShape shapes[] = {
      {1, 28, 4, 128, 16, 128}, {5, 8, 8, 64, 32, 64},    {33, 28, 4, 64, 128, 64},
      {33, 8, 8, 128, 16, 64},  {5, 28, 4, 128, 128, 128}, {1, 8, 8, 64, 128, 64},
  };
  int salt = 0, completing = 0, not_completing = 0;
  for (const RopeAppendShape& sh : shapes) {
    for (RepKind kind : {RepKind::Mean, RepKind::MinMax, RepKind::Hash, RepKind::Quant}) {
      for (bool neox : {false, true}) {
        ++salt;
        const RopeAppendBatch b =
            make_rope_append_batch(sh, rng_, false, salt, /*unwritten_full=*/salt % 2 == 0, true);
        completing += b.n_completing;
        not_completing += int(b.n_tokens) - b.n_completing;
        const RunResult ref = run_cpu(b, kind, neox);
        for (DType at : kTypes) {
          for (DType kt : kTypes) {
            const std::string what = describe(sh, kind, neox) + " act " + dtype_name(at) + " kv " + dtype_name(kt);
            const RunResult fused = run_gpu(b, kind, neox, at, kt, true);
            const RunResult split = run_gpu(b, kind, neox, at, kt, false);
            EXPECT_TRUE(fused.q_raw == split.q_raw) << what << ": q differs from rope";
            EXPECT_TRUE(fused.k_raw == split.k_raw) << what << ": k differs from rope";
            EXPECT_TRUE(fused.kc_raw == split.kc_raw) << what << ": k cache differs from kv_append";
            EXPECT_TRUE(fused.vc_raw == split.vc_raw) << what << ": v cache differs from kv_append";
            EXPECT_TRUE(fused.reps == split.reps) << what << ": reps differ from rep_update";
            expect_matches_cpu(fused, ref, b, kind, at == DType::BF16 || kt == DType::BF16, what);
            if (HasFailure()) return;  // one case's report is enough
          }
        }
      }
    }
  }
  EXPECT_GT(completing, 0);
  EXPECT_GT(not_completing, 0);
}

TEST_F(CudaRopeAppendTest, StridedInputsMatchContiguous) {
  // The fused q|k|v projection's rows, read in place (q_out for the rotated queries), give the
  // same bytes as the contiguous call.
  const RopeAppendShape shapes[] = {{5, 28, 4, 128, 128, 128}, {33, 8, 8, 64, 16, 64}};
  int salt = 40;
  for (const RopeAppendShape& sh : shapes) {
    for (RepKind kind : {RepKind::Mean, RepKind::Hash}) {
      for (DType at : kTypes) {
        const RopeAppendBatch b = make_rope_append_batch(sh, rng_, false, ++salt, false, true);
        const std::string what = describe(sh, kind, true) + " act " + dtype_name(at);
        const RunResult want = run_gpu(b, kind, true, at, DType::BF16, true);
        const int64_t T = b.n_tokens, qd = int64_t(sh.n_heads) * sh.head_dim,
                      kd = int64_t(sh.n_kv_heads) * sh.head_dim, row = qd + 2 * kd;
        std::vector<float> qkv(size_t(T * row));
        for (int64_t t = 0; t < T; ++t) {
          std::copy_n(b.q.begin() + t * qd, qd, qkv.begin() + t * row);
          std::copy_n(b.k.begin() + t * kd, kd, qkv.begin() + t * row + qd);
          std::copy_n(b.v.begin() + t * kd, kd, qkv.begin() + t * row + qd + kd);
        }
        auto dqkv = upload_act(gpu(), qkv, at);
        auto dkc = upload_act(gpu(), b.k_cache, DType::BF16), dvc = upload_act(gpu(), b.v_cache, DType::BF16);
        auto dpos = upload(gpu(), b.pos), dslots = upload(gpu(), b.slots);
        auto dfull = upload(gpu(), b.full_blocks), dw = upload(gpu(), b.hash_w);
        Buf dreps(gpu(), reps_size(b, kind));
        poison(gpu(), dreps);
        Buf dqo(gpu(), b.q.size() * dtype_size(at));
        poison(gpu(), dqo);
        RopeAppendBatch host = b;
        RopeAppendParams p = rope_append_params(host, dreps.get(), kind, true);
        const size_t es = dtype_size(at);
        p.q = dqkv->get();
        p.k = static_cast<char*>(dqkv->get()) + qd * es;
        p.v = static_cast<char*>(dqkv->get()) + (qd + kd) * es;
        p.q_out = dqo.get();
        p.q_stride = p.k_stride = p.v_stride = row;
        p.pos = dpos->as<int32_t>();
        p.slot_mapping = dslots->as<int32_t>();
        p.k_cache = dkc->get();
        p.v_cache = dvc->get();
        p.full_blocks = dfull->as<int32_t>();
        p.hash_w = dw->as<float>();
        p.act_type = at;
        p.kv_type = DType::BF16;
        p.one_token_per_seq = true;
        ASSERT_TRUE(gpu()->supports_strided_rope_append(p)) << what;
        auto st = gpu()->rope_append(p);
        ASSERT_TRUE(st.is_ok()) << st.to_string();
        EXPECT_TRUE(download<uint8_t>(gpu(), dqo, b.q.size() * es) == want.q_raw) << what << ": q_out";
        EXPECT_TRUE(download<uint8_t>(gpu(), *dkc, b.k_cache.size() * 2) == want.kc_raw) << what << ": k cache";
        EXPECT_TRUE(download<uint8_t>(gpu(), *dvc, b.v_cache.size() * 2) == want.vc_raw) << what << ": v cache";
        EXPECT_TRUE(download<uint8_t>(gpu(), dreps, reps_size(b, kind)) == want.reps) << what << ": reps";
        // k is rotated in place inside the rows; q and v are untouched there.
        const std::vector<uint8_t> rows = download<uint8_t>(gpu(), *dqkv, qkv.size() * es);
        for (int64_t t = 0; t < T; ++t) {
          EXPECT_EQ(std::memcmp(rows.data() + (t * row + qd) * es, want.k_raw.data() + t * kd * es, kd * es), 0)
              << what << ": k of token " << t;
        }
        const std::vector<float> after = download_act(gpu(), *dqkv, qkv.size(), at);
        for (int64_t t = 0; t < T; ++t) {
          EXPECT_TRUE(std::equal(after.begin() + t * row, after.begin() + t * row + qd, qkv.begin() + t * row))
              << what << ": q input of token " << t << " changed";
        }
        // The separate-kernel path cannot take strided inputs: refused, not misread.
        p.one_token_per_seq = false;
        EXPECT_FALSE(gpu()->supports_strided_rope_append(p));
        EXPECT_EQ(gpu()->rope_append(p).code(), StatusCode::Unsupported);
        EXPECT_EQ(cpu()->rope_append(p).code(), StatusCode::Unsupported);
        if (HasFailure()) return;
      }
    }
  }
}

TEST_F(CudaRopeAppendTest, FallbackMatchesCpu) {
  struct Case {
    RopeAppendShape sh;
    bool prefill, one_token_per_seq;
  };
  const Case cases[] = {
      {{3, 28, 4, 128, 16, 128}, true, false},  // prefill: several tokens per block
      {{4, 8, 8, 64, 32, 32}, true, false},
      {{5, 6, 4, 64, 16, 64}, false, true},     // n_heads % n_kv_heads != 0: no fused kernel
  };
  int salt = 0;
  for (const Case& c : cases) {
    for (RepKind kind : {RepKind::Mean, RepKind::MinMax, RepKind::Hash, RepKind::Quant}) {
      for (bool neox : {false, true}) {
        const RopeAppendBatch b = make_rope_append_batch(c.sh, rng_, c.prefill, ++salt, !c.prefill, true);
        const RunResult ref = run_cpu(b, kind, neox);
        for (DType t : kTypes) {
          const std::string what = describe(c.sh, kind, neox) + " prefill " + std::to_string(c.prefill) +
                                   " type " + dtype_name(t);
          const RunResult got = run_gpu(b, kind, neox, t, t, c.one_token_per_seq);
          expect_matches_cpu(got, ref, b, kind, t == DType::BF16, what);
          if (HasFailure()) return;
        }
      }
    }
  }
  // No tokens, listed blocks: the representations are still computed (rep_update's semantics).
  const RopeAppendBatch b = make_rope_append_batch({2, 8, 8, 64, 16, 64}, rng_, false, 1, true, true);
  const RunResult ref = run_cpu(b, RepKind::Mean, false, 0);
  const RunResult got = run_gpu(b, RepKind::Mean, false, DType::BF16, DType::BF16, true, 0);
  expect_matches_cpu(got, ref, b, RepKind::Mean, true, "empty batch");
}

TEST_F(CudaRopeAppendTest, RefusesWhatTheOpsRefuse) {
  const RopeAppendBatch b = make_rope_append_batch({2, 8, 8, 64, 16, 64}, rng_, false, 1, false, true);
  auto dq = upload_act(gpu(), b.q, DType::BF16);
  const std::vector<uint8_t> before = download<uint8_t>(gpu(), *dq, b.q.size() * 2);
  RopeAppendBatch host = b;
  RopeAppendParams p = rope_append_params(host, nullptr, RepKind::Mean, false);
  p.q = dq->get();
  p.act_type = p.kv_type = DType::BF16;
  p.one_token_per_seq = true;
  p.rot_dim = 63;
  EXPECT_EQ(gpu()->rope_append(p).code(), StatusCode::InvalidArgument);
  p.rot_dim = 64;
  p.kv_type = DType::F16;
  EXPECT_EQ(gpu()->rope_append(p).code(), StatusCode::Unsupported);
  p.kv_type = DType::BF16;
  p.reps = dq->get();
  p.kind = RepKind::Hash;
  p.hash_w = nullptr;
  EXPECT_EQ(gpu()->rope_append(p).code(), StatusCode::InvalidArgument);
  // Refused before anything ran: q is untouched.
  EXPECT_TRUE(download<uint8_t>(gpu(), *dq, b.q.size() * 2) == before);
}

}  // namespace
}  // namespace gsa::backend::cuda_test
