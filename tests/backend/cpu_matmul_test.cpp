// CPU matmul against a double-precision loop: f32 and bf16 weights, GEMV (few rows) and sgemm
// (many rows) paths, shapes that are not multiples of the SIMD width, bias, k = 0, bad params.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "backend/cpu/cpu_kernels.h"
#include "cpu_test_util.h"

namespace gsa::cpu {
namespace {

using backend::MatmulParams;
using test::poisoned;
using test::random_vec;

struct MatmulCase {
  int64_t m, n, k;
  bool bias;
  DType w_type;
};

void check_matmul(const MatmulCase& c, ThreadPool* pool, uint32_t seed) {
  std::mt19937 rng(seed);
  const auto x = random_vec(rng, size_t(c.m * c.k));
  const auto wf = random_vec(rng, size_t(c.n * c.k));
  const auto bias = random_vec(rng, size_t(c.n));
  std::vector<uint16_t> wb(wf.size());
  std::vector<float> w_used(wf.size());  // the weights as the kernel sees them
  for (size_t i = 0; i < wf.size(); ++i) {
    wb[i] = f32_to_bf16(wf[i]);
    w_used[i] = c.w_type == DType::BF16 ? bf16_to_f32(wb[i]) : wf[i];
  }
  auto y = poisoned(size_t(c.m * c.n));
  MatmulParams p;
  p.x = x.data();
  p.w = c.w_type == DType::BF16 ? static_cast<const void*>(wb.data()) : wf.data();
  p.bias = c.bias ? bias.data() : nullptr;
  p.y = y.data();
  p.m = c.m, p.n = c.n, p.k = c.k;
  p.w_type = c.w_type;
  ASSERT_TRUE(matmul(p, pool).is_ok());
  for (int64_t i = 0; i < c.m; ++i) {
    for (int64_t j = 0; j < c.n; ++j) {
      double ref = c.bias ? bias[size_t(j)] : 0.0, mag = std::abs(ref);
      for (int64_t d = 0; d < c.k; ++d) {
        const double t = double(x[size_t(i * c.k + d)]) * w_used[size_t(j * c.k + d)];
        ref += t;
        mag += std::abs(t);
      }
      ASSERT_NEAR(y[size_t(i * c.n + j)], ref, 1e-5 + 4e-6 * mag)
          << "m=" << c.m << " n=" << c.n << " k=" << c.k << " at (" << i << ", " << j << ")";
    }
  }
}

TEST(CpuMatmul, MatchesDoubleLoopsOverShapes) {
  ThreadPool pool(3);
  uint32_t seed = 1;
  for (DType wt : {DType::F32, DType::BF16})
    for (int64_t m : {1, 2, 4, 5, 17, 64})
      for (auto nk : {std::pair<int64_t, int64_t>{1, 1}, {7, 33}, {64, 64}, {130, 257}, {576, 96}})
        for (bool bias : {false, true}) check_matmul({m, nk.first, nk.second, bias, wt}, &pool, seed++);
}

TEST(CpuMatmul, LargeSlicesSingleAndMultiThreaded) {
  ThreadPool one(1), three(3);
  check_matmul({1, 1000, 576, true, DType::F32}, &three, 11);
  check_matmul({33, 1000, 200, true, DType::F32}, &three, 12);
  check_matmul({33, 1000, 200, false, DType::BF16}, &three, 13);
  check_matmul({9, 300, 100, true, DType::F32}, &one, 14);
  // Past the tiled kernel's row limit: sgemm when OpenBLAS has AVX-512 kernels (CTest runs this
  // binary a second time with OPENBLAS_CORETYPE=SkylakeX), the tiled kernel otherwise.
  check_matmul({100, 130, 70, true, DType::F32}, &three, 15);
  check_matmul({300, 70, 600, false, DType::F32}, &three, 16);
  check_matmul({129, 200, 33, true, DType::BF16}, &three, 17);
}

TEST(CpuMatmul, ZeroK) {
  ThreadPool pool(2);
  const std::vector<float> bias = {1.0f, -2.0f, 3.0f};
  auto y = poisoned(6);
  MatmulParams p;
  p.y = y.data();
  p.m = 2, p.n = 3, p.k = 0;
  ASSERT_TRUE(matmul(p, &pool).is_ok());
  for (float v : y) EXPECT_EQ(v, 0.0f);
  p.bias = bias.data();
  ASSERT_TRUE(matmul(p, &pool).is_ok());
  for (int j = 0; j < 3; ++j) EXPECT_EQ(y[size_t(3 + j)], bias[size_t(j)]);
}

TEST(CpuMatmul, RejectsBadParams) {
  ThreadPool pool(1);
  std::vector<float> x(8), w(8), y(8);
  MatmulParams p;
  p.x = x.data(), p.w = w.data(), p.y = y.data();
  p.m = 2, p.n = 2, p.k = 2;
  ASSERT_TRUE(matmul(p, &pool).is_ok());
  MatmulParams q = p;
  q.m = -1;
  EXPECT_EQ(matmul(q, &pool).code(), StatusCode::InvalidArgument);
  q = p;
  q.x = nullptr;
  EXPECT_EQ(matmul(q, &pool).code(), StatusCode::InvalidArgument);
  q = p;
  q.act_type = DType::BF16;
  EXPECT_EQ(matmul(q, &pool).code(), StatusCode::Unsupported);
  q = p;
  q.w_type = DType::F16;
  EXPECT_EQ(matmul(q, &pool).code(), StatusCode::Unsupported);
  q = p;
  q.k = int64_t(1) << 40;
  EXPECT_EQ(matmul(q, &pool).code(), StatusCode::InvalidArgument);
}

}  // namespace
}  // namespace gsa::cpu
