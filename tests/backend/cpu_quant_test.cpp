// CPU matmul on GGUF block-quantized weights (matmul_quant.cpp) and embed of quantized tables.
// For every type: random valid blocks against a double-precision loop over the dequantized
// weights and the activations after the same Q8 quantization (tight), and against the plain f32
// product (bounded by the activation rounding; tight past 64 rows, where f32 activations are
// multiplied); SIMD and scalar kernels; bad parameters.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/cpu_kernels.h"
#include "core/dtype.h"
#include "core/quant_blocks.h"
#include "cpu_test_util.h"

namespace gsa::cpu {
namespace {

using backend::EmbedParams;
using backend::MatmulParams;
using test::poisoned;
using test::random_vec;

constexpr uint32_t kTypes[] = {ggml_id::Q8_0, ggml_id::Q4_0, ggml_id::Q4_1, ggml_id::Q5_0,
                               ggml_id::Q5_1, ggml_id::Q4_K, ggml_id::Q5_K, ggml_id::Q6_K};

float ld_f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}
void st_f16(uint8_t* p, float v) {
  const uint16_t h = f32_to_f16(v);
  std::memcpy(p, &h, 2);
}

// Offsets of the f16 scale fields of each weight block (the rest of a block is any bytes).
std::vector<int> f16_fields(uint32_t type) {
  switch (type) {
    case ggml_id::Q4_1:
    case ggml_id::Q5_1:
    case ggml_id::Q4_K:
    case ggml_id::Q5_K: return {0, 2};
    case ggml_id::Q6_K: return {208};
    default: return {0};
  }
}

// n rows of k elements of random valid blocks: random quant bytes, scales of either sign around
// 1/64 (so |w| stays O(1) for every format).
std::vector<uint8_t> random_blocks(uint32_t type, int64_t n, int64_t k, std::mt19937& rng) {
  const GgmlTypeTraits* t = ggml_type_traits(type);
  const int64_t n_blocks = n * k / t->block_elems;
  std::vector<uint8_t> w(size_t(n_blocks * t->block_bytes));
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> scale(-1.0f, 1.0f);
  for (auto& b : w) b = uint8_t(byte(rng));
  for (int64_t i = 0; i < n_blocks; ++i)
    for (int off : f16_fields(type)) st_f16(w.data() + i * t->block_bytes + off, scale(rng) / 64.0f);
  return w;
}

// The scale d of an activation block: f32 in Q8_K, f16 in Q8_0 / Q8_1.
double act_scale(uint32_t x_type, const uint8_t* block) {
  if (x_type != ggml_id::Q8_K) return ld_f16(block);
  float d;
  std::memcpy(&d, block, 4);
  return d;
}

std::vector<float> dequantize_all(uint32_t type, const uint8_t* src, int64_t n_elems) {
  std::vector<float> out(static_cast<size_t>(n_elems));
  ggml_dequantize_blocks(type, src, out.data(), n_elems / ggml_type_traits(type)->block_elems);
  return out;
}

std::vector<uint8_t> quantize_acts(uint32_t x_type, const float* x, int64_t m, int64_t k) {
  const GgmlTypeTraits* t = ggml_type_traits(x_type);
  const int64_t row_bytes = k / t->block_elems * t->block_bytes;
  std::vector<uint8_t> out(size_t(m * row_bytes));
  for (int64_t i = 0; i < m; ++i) {
    uint8_t* dst = out.data() + i * row_bytes;
    if (x_type == ggml_id::Q8_0) ggml_quantize_row_q8_0(x + i * k, dst, k);
    else if (x_type == ggml_id::Q8_1) ggml_quantize_row_q8_1(x + i * k, dst, k);
    else ggml_quantize_row_q8_k(x + i * k, dst, k);
  }
  return out;
}

struct Case {
  uint32_t type;
  int64_t m, n, k;
  bool bias;
};

std::string describe(const Case& c) {
  return std::string(ggml_type_traits(c.type)->name) + " m=" + std::to_string(c.m) +
         " n=" + std::to_string(c.n) + " k=" + std::to_string(c.k);
}

// Runs the case through matmul (or matmul_ggml with scalar kernels) and checks every output.
void check_case(const Case& c, ThreadPool* pool, bool scalar, uint32_t seed) {
  SCOPED_TRACE(describe(c) + (scalar ? " scalar" : " simd"));
  std::mt19937 rng(seed);
  const auto w = random_blocks(c.type, c.n, c.k, rng);
  const auto x = random_vec(rng, size_t(c.m * c.k));
  const auto bias = random_vec(rng, size_t(c.n));
  auto y = poisoned(size_t(c.m * c.n));
  MatmulParams p;
  p.x = x.data(), p.w = w.data(), p.bias = c.bias ? bias.data() : nullptr, p.y = y.data();
  p.m = c.m, p.n = c.n, p.k = c.k;
  p.w_type = DType::Ggml;
  p.w_ggml = c.type;
  const Status s = scalar ? matmul_ggml(p, pool, true) : matmul(p, pool);
  ASSERT_TRUE(s.is_ok()) << s.message();

  // Past 64 rows matmul dequantizes weight panels and multiplies f32 activations (prefill path).
  const bool f32_acts = !scalar && c.m > 64;
  const uint32_t xt = ggml_vec_dot_type(c.type);
  const GgmlTypeTraits* xtr = ggml_type_traits(xt);
  const GgmlTypeTraits* wtr = ggml_type_traits(c.type);
  const auto wf = dequantize_all(c.type, w.data(), c.n * c.k);
  const auto xq = quantize_acts(xt, x.data(), c.m, c.k);
  const auto xf = dequantize_all(xt, xq.data(), c.m * c.k);
  const int64_t be = xtr->block_elems, nb = c.k / be;
  const bool q8_1 = xt == ggml_id::Q8_1;
  for (int64_t i = 0; i < c.m; ++i) {
    const uint8_t* xrow = xq.data() + i * nb * xtr->block_bytes;
    for (int64_t j = 0; j < c.n; ++j) {
      const double b = c.bias ? bias[size_t(j)] : 0.0;
      // ref: the quantized product; plain: with f32 activations; bound: what the activation
      // rounding (|xq - x| <= 0.6 d; the sum s of Q8_1 to f16) can move plain away from ref.
      double ref = b, plain = b, mag = std::abs(b), bound = 0;
      for (int64_t blk = 0; blk < nb; ++blk) {
        const uint8_t* xb = xrow + blk * xtr->block_bytes;
        const double dx = act_scale(xt, xb);
        // Q8_1 pairs with weights w = d*q + m: the m part meets the block's stored sum s.
        const double m_w =
            q8_1 ? double(ld_f16(w.data() + (j * c.k + blk * be) / wtr->block_elems * wtr->block_bytes + 2))
                 : 0.0;
        for (int64_t e = blk * be; e < (blk + 1) * be; ++e) {
          const double wv = wf[size_t(j * c.k + e)];
          ref += (wv - m_w) * xf[size_t(i * c.k + e)];
          plain += wv * x[size_t(i * c.k + e)];
          mag += std::abs(wv * xf[size_t(i * c.k + e)]);
          bound += std::abs(wv - m_w) * 0.6 * std::abs(dx);
        }
        if (q8_1) {
          const double sx = ld_f16(xb + 2);
          ref += m_w * sx;
          mag += std::abs(m_w * sx);
          bound += std::abs(m_w) * (std::abs(sx) * 1e-3 + double(be) * 0.6 * std::abs(dx));
        }
      }
      const double got = y[size_t(i * c.n + j)];
      if (f32_acts) {
        ASSERT_NEAR(got, plain, 1e-6 + 1e-5 * mag) << "f32 product at (" << i << ", " << j << ")";
        continue;
      }
      ASSERT_NEAR(got, ref, 1e-6 + 1e-5 * mag) << "at (" << i << ", " << j << ")";
      ASSERT_NEAR(got, plain, 1e-6 + 1e-5 * mag + bound) << "f32 product at (" << i << ", " << j << ")";
    }
  }
}

TEST(CpuQuantMatmul, EveryTypeMatchesDoubleLoops) {
  ThreadPool pool(3);
  uint32_t seed = 1;
  for (uint32_t type : kTypes) {
    const bool kq = ggml_type_traits(type)->block_elems == 256;
    const int64_t ks[] = {kq ? 256 : 32, kq ? 768 : 96, kq ? 1280 : 576};
    for (int64_t m : {1, 3, 64, 130}) {
      for (int64_t k : ks) {
        const int64_t n = m >= 64 ? 37 : 70;  // never a multiple of the 16-row task
        for (bool scalar : {false, true}) {
          if (scalar && m > 3) continue;  // the scalar loops are slow; their row handling is shared
          check_case({type, m, n, k, (m + k) % 2 == 1}, &pool, scalar, seed++);
          if (::testing::Test::HasFatalFailure()) return;
        }
      }
    }
  }
}

TEST(CpuQuantMatmul, LargeShapesAcrossTasksAndPasses) {
  ThreadPool pool(2);
  // Integer path: m past one pass of activations (256 KiB of Q8_1 at k = 4096 is 56 rows), n past
  // many tasks. Panel path: several panels per thread slice.
  check_case({ggml_id::Q4_1, 63, 301, 4096, true}, &pool, false, 99);
  check_case({ggml_id::Q6_K, 61, 129, 4864, false}, &pool, false, 100);
  check_case({ggml_id::Q4_K, 67, 700, 1024, true}, &pool, false, 101);
}

TEST(CpuQuantMatmul, SimdEqualsScalarClosely) {
  ThreadPool pool(1);
  std::mt19937 rng(7);
  for (uint32_t type : kTypes) {
    const int64_t k = 512, n = 9, m = 5;
    const auto w = random_blocks(type, n, k, rng);
    const auto x = random_vec(rng, size_t(m * k));
    auto y1 = poisoned(size_t(m * n)), y2 = poisoned(size_t(m * n));
    MatmulParams p;
    p.x = x.data(), p.w = w.data(), p.m = m, p.n = n, p.k = k;
    p.w_type = DType::Ggml, p.w_ggml = type;
    p.y = y1.data();
    ASSERT_TRUE(matmul_ggml(p, &pool, false).is_ok());
    p.y = y2.data();
    ASSERT_TRUE(matmul_ggml(p, &pool, true).is_ok());
    for (size_t i = 0; i < y1.size(); ++i)
      EXPECT_NEAR(y1[i], y2[i], 1e-5 * (1 + std::abs(y2[i]))) << ggml_type_traits(type)->name;
  }
}

TEST(CpuQuantMatmul, RealQuantizedWeightsFollowTheF32Product) {
  // Weights quantized from floats by gsa's own Q8_0 quantizer: the product stays within the
  // rounding of weights and activations of the f32 one.
  ThreadPool pool(2);
  std::mt19937 rng(3);
  const int64_t m = 4, n = 33, k = 320;
  const auto wf = random_vec(rng, size_t(n * k));
  const auto x = random_vec(rng, size_t(m * k));
  std::vector<uint8_t> w(size_t(n * k / 32 * kGgmlQ8_0Bytes));
  ggml_quantize_row_q8_0(wf.data(), w.data(), n * k);
  auto y = poisoned(size_t(m * n));
  MatmulParams p;
  p.x = x.data(), p.w = w.data(), p.y = y.data(), p.m = m, p.n = n, p.k = k;
  p.w_type = DType::Ggml, p.w_ggml = ggml_id::Q8_0;
  ASSERT_TRUE(matmul(p, &pool).is_ok());
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double ref = 0, mag = 0;
      for (int64_t e = 0; e < k; ++e) {
        ref += double(x[size_t(i * k + e)]) * wf[size_t(j * k + e)];
        mag += std::abs(double(x[size_t(i * k + e)]) * wf[size_t(j * k + e)]);
      }
      EXPECT_NEAR(y[size_t(i * n + j)], ref, 0.02 * mag);
    }
  }
}

TEST(CpuQuantMatmul, RefusesBadParams) {
  ThreadPool pool(1);
  std::vector<uint8_t> w(4096);
  std::vector<float> x(512), y(64);
  MatmulParams p;
  p.x = x.data(), p.w = w.data(), p.y = y.data(), p.m = 1, p.n = 2, p.k = 256;
  p.w_type = DType::Ggml, p.w_ggml = ggml_id::Q4_K;
  ASSERT_TRUE(matmul(p, &pool).is_ok());
  MatmulParams q = p;
  q.k = 96;  // a multiple of 32, not of 256
  EXPECT_EQ(matmul(q, &pool).code(), StatusCode::InvalidArgument);
  q = p, q.w_ggml = ggml_id::Q4_0, q.k = 48;
  EXPECT_EQ(matmul(q, &pool).code(), StatusCode::InvalidArgument);
  q = p, q.w_ggml = ggml_id::Q2_K;
  EXPECT_EQ(matmul(q, &pool).code(), StatusCode::Unsupported);
  q = p, q.w_ggml = 99;
  EXPECT_EQ(matmul(q, &pool).code(), StatusCode::Unsupported);
  q = p, q.w_ggml = ggml_id::F32;
  EXPECT_EQ(matmul(q, &pool).code(), StatusCode::Unsupported);
  q = p, q.act_type = DType::BF16;
  EXPECT_EQ(matmul(q, &pool).code(), StatusCode::Unsupported);
  q = p, q.x = nullptr;
  EXPECT_EQ(matmul(q, &pool).code(), StatusCode::InvalidArgument);
  q = p, q.y = nullptr;
  EXPECT_EQ(matmul(q, &pool).code(), StatusCode::InvalidArgument);
  q = p, q.m = -1;
  EXPECT_EQ(matmul(q, &pool).code(), StatusCode::InvalidArgument);
  q = p, q.n = int64_t(1) << 62;
  EXPECT_EQ(matmul(q, &pool).code(), StatusCode::InvalidArgument);
  q = p, q.m = 0;
  EXPECT_TRUE(matmul(q, &pool).is_ok());
}

TEST(CpuQuantMatmul, BackendAdvertisesTheKernelTypes) {
  ThreadPool pool(1);
  auto be = backend::make_cpu_backend(&pool);
  for (uint32_t type : kTypes) EXPECT_TRUE(be->supports_ggml_weights(type)) << type;
  for (uint32_t type : {ggml_id::F32, ggml_id::Q2_K, ggml_id::Q8_K, ggml_id::IQ4_XS, 99u})
    EXPECT_FALSE(be->supports_ggml_weights(type)) << type;
}

TEST(CpuQuantEmbed, DequantizesTheRequestedRows) {
  ThreadPool pool(2);
  std::mt19937 rng(11);
  for (uint32_t type : kTypes) {
    const int64_t vocab = 7, dim = 512;
    const auto table = random_blocks(type, vocab, dim, rng);
    const auto all = dequantize_all(type, table.data(), vocab * dim);
    const std::vector<int32_t> ids = {3, 0, 6, 3};
    auto out = poisoned(ids.size() * size_t(dim));
    EmbedParams p;
    p.ids = ids.data(), p.table = table.data(), p.out = out.data();
    p.n_tokens = int64_t(ids.size()), p.vocab = vocab, p.dim = dim;
    p.table_type = DType::Ggml, p.table_ggml = type;
    ASSERT_TRUE(embed(p, &pool).is_ok());
    for (size_t t = 0; t < ids.size(); ++t)
      for (int64_t e = 0; e < dim; ++e)
        ASSERT_EQ(out[t * size_t(dim) + size_t(e)], all[size_t(ids[t] * dim + e)]);
    EmbedParams q = p;
    q.dim = dim - 32 * (ggml_type_traits(type)->block_elems == 256 ? 1 : 0) - 16;
    EXPECT_EQ(embed(q, &pool).code(), StatusCode::InvalidArgument);
    q = p, q.table_ggml = 99;
    EXPECT_EQ(embed(q, &pool).code(), StatusCode::Unsupported);
    q = p, q.table_ggml = ggml_id::F32;
    EXPECT_EQ(embed(q, &pool).code(), StatusCode::Unsupported);
  }
}

}  // namespace
}  // namespace gsa::cpu
