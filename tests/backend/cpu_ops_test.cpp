// CPU elementwise-style kernels against direct formulas: rmsnorm, rope (both layouts, in
// double), kv_append, swiglu, add, embed, fill_random; and each op's refusal of bad params.
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

using namespace backend;
using test::poisoned;
using test::random_vec;

TEST(CpuRmsNorm, MatchesFormulaAndInPlace) {
  ThreadPool pool(3);
  std::mt19937 rng(7);
  for (int64_t dim : {1, 15, 64, 576, 1000}) {
    const int64_t rows = 37;
    const auto x = random_vec(rng, size_t(rows * dim), -3.0f, 3.0f);
    const auto w = random_vec(rng, size_t(dim));
    auto y = poisoned(x.size());
    RmsNormParams p;
    p.x = x.data(), p.w = w.data(), p.y = y.data();
    p.n_rows = rows, p.dim = dim, p.eps = 1e-5f;
    ASSERT_TRUE(rmsnorm(p, &pool).is_ok());
    for (int64_t r = 0; r < rows; ++r) {
      double ss = 0;
      for (int64_t i = 0; i < dim; ++i) ss += double(x[size_t(r * dim + i)]) * x[size_t(r * dim + i)];
      const double inv = 1.0 / std::sqrt(ss / double(dim) + 1e-5);
      for (int64_t i = 0; i < dim; ++i) {
        const double ref = x[size_t(r * dim + i)] * inv * w[size_t(i)];
        ASSERT_NEAR(y[size_t(r * dim + i)], ref, 1e-5 * (1.0 + std::abs(ref)));
      }
    }
    auto z = x;  // in place gives the same bits
    p.x = z.data(), p.y = z.data();
    ASSERT_TRUE(rmsnorm(p, &pool).is_ok());
    EXPECT_EQ(0, std::memcmp(z.data(), y.data(), z.size() * sizeof(float)));
  }
}

TEST(CpuRmsNorm, RejectsBadParams) {
  ThreadPool pool(1);
  std::vector<float> x(4), w(4);
  RmsNormParams p;
  p.x = x.data(), p.w = w.data(), p.y = x.data(), p.n_rows = 1, p.dim = 4;
  ASSERT_TRUE(rmsnorm(p, &pool).is_ok());
  RmsNormParams q = p;
  q.dim = 0;
  EXPECT_EQ(rmsnorm(q, &pool).code(), StatusCode::InvalidArgument);
  q = p;
  q.w = nullptr;
  EXPECT_EQ(rmsnorm(q, &pool).code(), StatusCode::InvalidArgument);
  q = p;
  q.eps = NAN;
  EXPECT_EQ(rmsnorm(q, &pool).code(), StatusCode::InvalidArgument);
  q = p;
  q.act_type = DType::BF16;
  EXPECT_EQ(rmsnorm(q, &pool).code(), StatusCode::Unsupported);
}

// Rope against angle = pos * theta^(-2i/rot_dim) in double. The kernel follows llama.cpp's float
// recurrence, whose angle error grows with pos * i * 2^-24; the tolerance says so.
void check_rope(bool neox, int head_dim, int rot_dim, float theta, int max_pos, ThreadPool* pool) {
  std::mt19937 rng(uint32_t(head_dim * 131 + rot_dim + (neox ? 1 : 0)));
  const int n_heads = 3;
  std::vector<int32_t> pos = {0, 1, 2, 17, max_pos / 3, max_pos};
  const int64_t n_tokens = int64_t(pos.size());
  const auto x0 = random_vec(rng, size_t(n_tokens * n_heads * head_dim));
  auto x = x0;
  RopeParams p;
  p.x = x.data(), p.pos = pos.data(), p.n_tokens = n_tokens;
  p.n_heads = n_heads, p.head_dim = head_dim, p.rot_dim = rot_dim, p.theta = theta, p.neox = neox;
  ASSERT_TRUE(rope(p, pool).is_ok());
  const int half = rot_dim / 2;
  for (int64_t t = 0; t < n_tokens; ++t) {
    for (int h = 0; h < n_heads; ++h) {
      const float* a = x0.data() + (t * n_heads + h) * head_dim;
      const float* b = x.data() + (t * n_heads + h) * head_dim;
      for (int i = 0; i < half; ++i) {
        const double angle = double(pos[size_t(t)]) * std::pow(double(theta), -2.0 * i / rot_dim);
        const int i0 = neox ? i : 2 * i, i1 = neox ? i + half : 2 * i + 1;
        const double r0 = a[i0] * std::cos(angle) - a[i1] * std::sin(angle);
        const double r1 = a[i0] * std::sin(angle) + a[i1] * std::cos(angle);
        const double tol = 2e-6 + 2.0 * std::abs(angle) * (i + 2) * 6e-8;
        ASSERT_NEAR(b[i0], r0, tol) << "t=" << t << " i=" << i << " neox=" << neox;
        ASSERT_NEAR(b[i1], r1, tol) << "t=" << t << " i=" << i << " neox=" << neox;
      }
      for (int d = rot_dim; d < head_dim; ++d) ASSERT_EQ(a[d], b[d]);  // past rot_dim: untouched
    }
  }
}

TEST(CpuRope, BothLayoutsMatchDoubleFormula) {
  ThreadPool pool(3);
  for (bool neox : {false, true}) {
    check_rope(neox, 64, 64, 10000.0f, 8191, &pool);
    check_rope(neox, 128, 128, 1000000.0f, 32767, &pool);
    check_rope(neox, 64, 32, 10000.0f, 4000, &pool);
    check_rope(neox, 6, 4, 500.0f, 100, &pool);
  }
}

TEST(CpuRope, LayoutsDiffer) {
  ThreadPool pool(1);
  std::vector<float> a = {1, 2, 3, 4}, b = a;
  const int32_t pos = 5;
  RopeParams p;
  p.x = a.data(), p.pos = &pos, p.n_tokens = 1, p.n_heads = 1, p.head_dim = 4, p.rot_dim = 4;
  ASSERT_TRUE(rope(p, &pool).is_ok());
  p.x = b.data(), p.neox = true;
  ASSERT_TRUE(rope(p, &pool).is_ok());
  EXPECT_NE(a, b);
}

TEST(CpuRope, RejectsBadParams) {
  ThreadPool pool(1);
  std::vector<float> x(8);
  const int32_t pos = 0;
  RopeParams p;
  p.x = x.data(), p.pos = &pos, p.n_tokens = 1, p.n_heads = 1, p.head_dim = 8, p.rot_dim = 8;
  ASSERT_TRUE(rope(p, &pool).is_ok());
  for (int rot : {0, 3, 10}) {
    RopeParams q = p;
    q.rot_dim = rot;
    EXPECT_EQ(rope(q, &pool).code(), StatusCode::InvalidArgument) << rot;
  }
  RopeParams q = p;
  q.theta = -1.0f;
  EXPECT_EQ(rope(q, &pool).code(), StatusCode::InvalidArgument);
  q = p;
  q.pos = nullptr;
  EXPECT_EQ(rope(q, &pool).code(), StatusCode::InvalidArgument);
  q = p;
  q.n_tokens = int64_t(1) << 40, q.n_heads = 1 << 20;  // element count past int64
  EXPECT_EQ(rope(q, &pool).code(), StatusCode::InvalidArgument);
}

TEST(CpuKvAppend, WritesSlotsAndLeavesOthers) {
  ThreadPool pool(3);
  std::mt19937 rng(3);
  const int n_kv = 3, hd = 64, bs = 16;
  const int64_t n_blocks = 5, n_tokens = 40;
  std::vector<int32_t> slots(static_cast<size_t>(n_blocks * bs));
  std::iota(slots.begin(), slots.end(), 0);
  std::shuffle(slots.begin(), slots.end(), rng);
  slots.resize(size_t(n_tokens));
  const auto k = random_vec(rng, size_t(n_tokens * n_kv * hd));
  const auto v = random_vec(rng, size_t(n_tokens * n_kv * hd));
  const size_t cache_n = size_t(n_blocks * n_kv * bs * hd);
  std::vector<float> kc(cache_n, 9.0f), vc(cache_n, 9.0f);
  KvAppendParams p;
  p.k = k.data(), p.v = v.data(), p.k_cache = kc.data(), p.v_cache = vc.data();
  p.slot_mapping = slots.data(), p.n_tokens = n_tokens, p.n_blocks = n_blocks;
  p.n_kv_heads = n_kv, p.head_dim = hd, p.block_size = bs;
  ASSERT_TRUE(kv_append(p, &pool).is_ok());
  std::vector<float> ek(cache_n, 9.0f), ev(cache_n, 9.0f);
  for (int64_t t = 0; t < n_tokens; ++t)
    for (int h = 0; h < n_kv; ++h)
      for (int d = 0; d < hd; ++d) {
        const int64_t blk = slots[size_t(t)] / bs, off = slots[size_t(t)] % bs;
        ek[size_t(((blk * n_kv + h) * bs + off) * hd + d)] = k[size_t((t * n_kv + h) * hd + d)];
        ev[size_t(((blk * n_kv + h) * bs + off) * hd + d)] = v[size_t((t * n_kv + h) * hd + d)];
      }
  EXPECT_EQ(kc, ek);
  EXPECT_EQ(vc, ev);

  KvAppendParams q = p;
  std::vector<int32_t> bad = slots;
  bad[7] = int32_t(n_blocks * bs);
  q.slot_mapping = bad.data();
  EXPECT_EQ(kv_append(q, &pool).code(), StatusCode::InvalidArgument);
  bad[7] = -1;
  EXPECT_EQ(kv_append(q, &pool).code(), StatusCode::InvalidArgument);
  q = p;
  q.kv_type = DType::BF16;
  EXPECT_EQ(kv_append(q, &pool).code(), StatusCode::Unsupported);
  q = p;
  q.block_size = 0;
  EXPECT_EQ(kv_append(q, &pool).code(), StatusCode::InvalidArgument);
  q = p;
  q.n_blocks = int64_t(1) << 60;  // n_blocks * n_kv_heads * block_size * head_dim past int64
  EXPECT_EQ(kv_append(q, &pool).code(), StatusCode::InvalidArgument);
}

TEST(CpuElementwise, SwigluAndAdd) {
  ThreadPool pool(3);
  std::mt19937 rng(5);
  for (int64_t dim : {1, 13, 1536}) {
    const int64_t rows = 70;
    const auto gu = random_vec(rng, size_t(rows * 2 * dim), -6.0f, 6.0f);
    auto out = poisoned(size_t(rows * dim));
    SwigluParams p;
    p.gate_up = gu.data(), p.out = out.data(), p.n_rows = rows, p.dim = dim;
    ASSERT_TRUE(swiglu(p, &pool).is_ok());
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t i = 0; i < dim; ++i) {
        const double g = gu[size_t(r * 2 * dim + i)], u = gu[size_t(r * 2 * dim + dim + i)];
        const double ref = g / (1.0 + std::exp(-g)) * u;
        ASSERT_NEAR(out[size_t(r * dim + i)], ref, 1e-6 * (1.0 + std::abs(ref)));
      }
  }
  const int64_t n = 100003;
  const auto x = random_vec(rng, size_t(n));
  auto y = random_vec(rng, size_t(n));
  const auto y0 = y;
  AddParams a;
  a.x = x.data(), a.y = y.data(), a.n = n;
  ASSERT_TRUE(add(a, &pool).is_ok());
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(y[size_t(i)], y0[size_t(i)] + x[size_t(i)]);
  a.n = -1;
  EXPECT_EQ(add(a, &pool).code(), StatusCode::InvalidArgument);
  SwigluParams s;
  s.n_rows = 1, s.dim = 4;
  EXPECT_EQ(swiglu(s, &pool).code(), StatusCode::InvalidArgument);
}

TEST(CpuElementwise, EmbedAllTableTypes) {
  ThreadPool pool(3);
  std::mt19937 rng(9);
  const int64_t vocab = 50, dim = 24;
  const auto table = random_vec(rng, size_t(vocab * dim));
  std::vector<uint16_t> t16(table.size()), tb16(table.size());
  for (size_t i = 0; i < table.size(); ++i) {
    t16[i] = f32_to_f16(table[i]);
    tb16[i] = f32_to_bf16(table[i]);
  }
  const std::vector<int32_t> ids = {0, 49, 7, 7, 23};
  for (DType tt : {DType::F32, DType::F16, DType::BF16}) {
    auto out = poisoned(ids.size() * dim);
    EmbedParams p;
    p.ids = ids.data(), p.n_tokens = int64_t(ids.size()), p.vocab = vocab, p.dim = dim;
    p.table = tt == DType::F32 ? static_cast<const void*>(table.data())
                               : tt == DType::F16 ? static_cast<const void*>(t16.data()) : tb16.data();
    p.table_type = tt;
    p.out = out.data();
    ASSERT_TRUE(embed(p, &pool).is_ok());
    for (size_t t = 0; t < ids.size(); ++t)
      for (int64_t d = 0; d < dim; ++d) {
        const size_t src = size_t(ids[t] * dim + d);
        const float ref = tt == DType::F32 ? table[src] : tt == DType::F16 ? f16_to_f32(t16[src]) : bf16_to_f32(tb16[src]);
        ASSERT_EQ(out[t * dim + size_t(d)], ref);
      }
    std::vector<int32_t> bad = ids;
    bad[2] = int32_t(vocab);
    p.ids = bad.data();
    EXPECT_EQ(embed(p, &pool).code(), StatusCode::InvalidArgument);
    bad[2] = -1;
    EXPECT_EQ(embed(p, &pool).code(), StatusCode::InvalidArgument);
  }
}

TEST(CpuElementwise, FillRandomMatchesSharedGenerator) {
  ThreadPool pool(3);
  const int64_t n = 70001;
  auto d = poisoned(size_t(n));
  FillRandomParams p;
  p.dst = d.data(), p.n = n, p.scale = 0.5f, p.seed = 42;
  ASSERT_TRUE(fill_random(p, &pool).is_ok());
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_EQ(d[size_t(i)], fill_random_value(42, uint64_t(i)) * 0.5f);
    ASSERT_LE(std::abs(d[size_t(i)]), 0.5f);
    sum += std::abs(d[size_t(i)]);
  }
  EXPECT_NEAR(sum / double(n), 0.25, 0.01);  // uniform on [-0.5, 0.5): mean |x| = 0.25
  std::vector<float> other(static_cast<size_t>(n));
  p.dst = other.data(), p.seed = 43;
  ASSERT_TRUE(fill_random(p, &pool).is_ok());
  EXPECT_NE(d, other);
  p.type = DType::I32;
  EXPECT_EQ(fill_random(p, &pool).code(), StatusCode::Unsupported);
}

TEST(CpuElementwise, ArgmaxTiesGoLowNanNeverWins) {
  const int64_t cols = 50;
  std::vector<float> x(4 * cols);
  for (int64_t i = 0; i < int64_t(x.size()); ++i) x[size_t(i)] = float((i * 37) % 41) - 20.0f;
  x[3] = 99.0f; x[40] = 99.0f;                      // row 0: tie -> 3
  x[cols] = std::nanf(""); x[cols + 10] = 98.0f;     // row 1: NaN first -> 10
  for (int64_t c = 0; c < cols; ++c) x[size_t(2 * cols + c)] = 1.0f;  // row 2: all equal -> 0
  x[size_t(4 * cols - 1)] = 97.0f;                   // row 3: last column
  std::vector<int32_t> out(4, -7);
  ASSERT_TRUE(argmax({x.data(), out.data(), 4, cols, DType::F32}, nullptr).is_ok());
  EXPECT_EQ(out, (std::vector<int32_t>{3, 10, 0, int32_t(cols - 1)}));
  EXPECT_FALSE(argmax({x.data(), out.data(), 4, 0, DType::F32}, nullptr).is_ok());
  EXPECT_FALSE(argmax({nullptr, out.data(), 4, cols, DType::F32}, nullptr).is_ok());
}

}  // namespace
}  // namespace gsa::cpu
