// The small-m GEMM (gemm_small.cu, dispatched by CudaBackend::matmul for bf16 weights and
// m <= kSmallGemmMaxM) against a double-precision host reference, element by element: every m
// tile count, odd and small n, k = 8 and k = 18944, k not a multiple of 32, with and without
// bias, y bf16 and f32; forced CTA shapes and split counts; determinism; the cuBLAS path for
// larger m or unsupported problems, and agreement of the two paths. Inputs are bf16-exact and
// never zero; outputs are poisoned before each run.
#include <cstring>
#include <string>

#include "backend/cuda/cuda_launch.h"
#include "cuda_test_util.h"

namespace gsa::backend::cuda_test {
namespace {

// f32 accumulation error bound, relative to sum_k |x w| of the element (the f32 sum's error is
// far below this for random signs; a dropped or doubled 8-element group of k is far above it).
constexpr double kAccRel = 2e-5;
// Rounding to bf16: half an ulp, relative (8 significant bits).
constexpr double kBf16HalfUlp = 1.0 / 256;

/// bf16-exact values with magnitude in [1/16, 1) and a random sign: never zero.
std::vector<float> nonzero_bf16(std::mt19937& rng, size_t n) {
  std::uniform_real_distribution<float> mag(1.0f / 16, 1.0f);
  std::bernoulli_distribution neg(0.5);
  std::vector<float> v(n);
  for (auto& x : v) x = bf16_to_f32(f32_to_bf16(neg(rng) ? -mag(rng) : mag(rng)));
  return v;
}

struct Problem {
  int64_t m = 0, n = 0, k = 0;
  std::vector<float> x;       // [m, k]
  std::vector<float> w;       // [n, k]
  std::vector<float> bias;    // [n]
  std::vector<double> ref;    // [m, n] x . w^T, no bias
  std::vector<double> absum;  // [m, n] sum_k |x w|
};

Problem make_problem(std::mt19937& rng, int64_t m, const std::vector<float>& w, int64_t n, int64_t k) {
  Problem p;
  p.m = m, p.n = n, p.k = k;
  p.x = nonzero_bf16(rng, size_t(m * k));
  p.w = w;
  p.bias = nonzero_bf16(rng, size_t(n));
  p.ref.assign(size_t(m * n), 0.0);
  p.absum.assign(size_t(m * n), 0.0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      const float* xr = p.x.data() + i * k;
      const float* wr = p.w.data() + j * k;
      double s = 0, a = 0;
      for (int64_t kk = 0; kk < k; ++kk) {
        const double prod = double(xr[kk]) * double(wr[kk]);
        s += prod;
        a += std::fabs(prod);
      }
      p.ref[i * n + j] = s;
      p.absum[i * n + j] = a;
    }
  return p;
}

/// Elements of got outside the tolerance (NaN included); the first few are reported. slack
/// widens the accumulation bound (cuBLAS may reduce split-k partials in lower precision).
int64_t check(const std::vector<float>& got, const Problem& p, bool bias, DType yt, double slack,
              const std::string& what) {
  if (got.size() != p.ref.size()) {
    ADD_FAILURE() << what << ": size " << got.size() << ", want " << p.ref.size();
    return int64_t(p.ref.size());
  }
  int64_t bad = 0;
  for (int64_t i = 0; i < p.m; ++i)
    for (int64_t j = 0; j < p.n; ++j) {
      const size_t e = size_t(i * p.n + j);
      const double want = p.ref[e] + (bias ? double(p.bias[size_t(j)]) : 0.0);
      const double acc = slack * kAccRel * p.absum[e] + 1e-6 * std::fabs(want);
      const double tol = acc + (yt == DType::BF16 ? 1.01 * kBf16HalfUlp * (std::fabs(want) + acc) : 0.0);
      if (!(std::fabs(double(got[e]) - want) <= tol)) {
        if (++bad <= 5)
          ADD_FAILURE() << what << ": y[" << i << ", " << j << "] = " << got[e] << ", want " << want
                        << " (tol " << tol << ")";
      }
    }
  return bad;
}

std::string name(const Problem& p, DType yt, bool bias) {
  return "m=" + std::to_string(p.m) + " n=" + std::to_string(p.n) + " k=" + std::to_string(p.k) +
         (yt == DType::BF16 ? " y=bf16" : " y=f32") + (bias ? " bias" : "");
}

class CudaGemmTest : public CudaTest {
 protected:
  /// y = x . w^T (+ bias) on the GPU with act_type yt (x uploaded as yt, w as bf16).
  std::vector<float> run(const Problem& p, const Buf& dw, DType yt, bool bias) {
    auto dx = upload_act(gpu(), p.x, yt);
    auto db = upload(gpu(), p.bias);
    Buf dy(gpu(), size_t(p.m * p.n) * dtype_size(yt));
    poison(gpu(), dy);
    const Status st = gpu()->matmul({dx->get(), dw.get(), bias ? db->as<float>() : nullptr, dy.get(), p.m,
                                     p.n, p.k, yt, DType::BF16});
    EXPECT_TRUE(st.is_ok()) << st.to_string();
    return download_act(gpu(), dy, size_t(p.m * p.n), yt);
  }
};

TEST_F(CudaGemmTest, SmallKernelMatchesReference) {
  cuda_->set_small_gemm(true);
  const std::vector<std::pair<int64_t, int64_t>> shapes = {
      {1000, 576}, {64, 3584}, {512, 3584}, {37, 8},    {1000, 8},
      {200, 18944}, {96, 40},  {130, 1352}, {4000, 256}};
  for (auto [n, k] : shapes) {
    const auto w = nonzero_bf16(rng_, size_t(n * k));
    auto dw = upload(gpu(), to_bf16(w));
    for (int64_t m : {1, 2, 3, 5, 8, 13, 20, 32}) {
      const Problem p = make_problem(rng_, m, w, n, k);
      for (DType yt : {DType::BF16, DType::F32})
        for (bool bias : {false, true})
          EXPECT_EQ(check(run(p, *dw, yt, bias), p, bias, yt, 1.0, name(p, yt, bias)), 0);
    }
  }
}

TEST_F(CudaGemmTest, ForcedShapesAndSplits) {
  cuda_->set_small_gemm(true);
  for (auto [n, k] : std::vector<std::pair<int64_t, int64_t>>{{1000, 1352}, {64, 200}, {33, 3584}}) {
    const auto w = nonzero_bf16(rng_, size_t(n * k));
    auto dw = upload(gpu(), to_bf16(w));
    for (int64_t m : {3, 17, 32}) {
      const Problem p = make_problem(rng_, m, w, n, k);
      for (int wk : {1, 2, 4})
        for (int splits : {1, 2, 3, 7, 40}) {
          cuda_->set_small_gemm_shape(wk, splits);
          const bool bias = splits % 2 == 1;
          const DType yt = wk == 2 ? DType::F32 : DType::BF16;
          EXPECT_EQ(check(run(p, *dw, yt, bias), p, bias, yt, 1.0,
                          name(p, yt, bias) + " warps_k=" + std::to_string(wk) + " splits=" + std::to_string(splits)),
                    0);
        }
    }
  }
  cuda_->set_small_gemm_shape(0, 0);
}

TEST_F(CudaGemmTest, SplitKIsDeterministic) {
  cuda_->set_small_gemm(true);
  const int64_t n = 512, k = 3584, m = 20;
  const auto w = nonzero_bf16(rng_, size_t(n * k));
  auto dw = upload(gpu(), to_bf16(w));
  const Problem p = make_problem(rng_, m, w, n, k);
  cuda::GemmSmallArgs a;
  a.m = m, a.n = n, a.k = k, a.sm_count = cuda_->sm_count();
  a.ws = reinterpret_cast<float*>(16), a.ws_floats = int64_t(1) << 21;
  a.counters = reinterpret_cast<int*>(16), a.n_counters = 16384;
  const cuda::GemmSmallPlan plan = cuda::gemm_small_plan(a);
  EXPECT_GT(plan.splits, 1) << "n = 512 should split k across CTAs";
  std::vector<float> first;
  for (int rep = 0; rep < 3; ++rep) {
    auto got = run(p, *dw, DType::F32, true);
    EXPECT_EQ(check(got, p, true, DType::F32, 1.0, name(p, DType::F32, true)), 0);
    if (rep == 0) {
      first = got;
    } else {
      EXPECT_EQ(std::memcmp(first.data(), got.data(), first.size() * sizeof(float)), 0) << "run " << rep;
    }
  }
}

TEST_F(CudaGemmTest, CublasPathAndAgreement) {
  const int64_t n = 1000, k = 1352;
  const auto w = nonzero_bf16(rng_, size_t(n * k));
  auto dw = upload(gpu(), to_bf16(w));
  // Past kSmallGemmMaxM: cuBLAS.
  for (int64_t m : {CudaBackend::kSmallGemmMaxM + 1, int64_t(64)}) {
    const Problem p = make_problem(rng_, m, w, n, k);
    for (DType yt : {DType::BF16, DType::F32})
      EXPECT_EQ(check(run(p, *dw, yt, true), p, true, yt, 10.0, "cublas " + name(p, yt, true)), 0);
  }
  // The same problems through both paths.
  for (int64_t m : {1, 7, 32}) {
    const Problem p = make_problem(rng_, m, w, n, k);
    for (DType yt : {DType::BF16, DType::F32}) {
      cuda_->set_small_gemm(false);
      const auto ref_cublas = run(p, *dw, yt, true);
      cuda_->set_small_gemm(true);
      const auto small = run(p, *dw, yt, true);
      EXPECT_EQ(check(ref_cublas, p, true, yt, 10.0, "cublas " + name(p, yt, true)), 0);
      EXPECT_EQ(check(small, p, true, yt, 1.0, "small " + name(p, yt, true)), 0);
      const double tol = yt == DType::BF16 ? 1e-2 : 1e-4;
      EXPECT_LT(rel_error(small, ref_cublas), tol) << name(p, yt, true);
    }
  }
}

TEST_F(CudaGemmTest, TunedAlgorithmsMatchReference) {
  // Decode-sized GEMMs go through the tuner (cuBLASLt candidates timed on first use, split-k
  // with f32 reductions included): whatever it picks must compute the same product.
  cuda_->set_small_gemm(false);
  ASSERT_TRUE(cuda_->set_gemm_tuning(true).is_ok());
  for (auto [n, k] : std::vector<std::pair<int64_t, int64_t>>{{3584, 3584}, {512, 3584}, {1000, 18944}, {4608, 576}}) {
    const auto w = nonzero_bf16(rng_, size_t(n * k));
    auto dw = upload(gpu(), to_bf16(w));
    for (int64_t m : {1, 5, 20, 64}) {
      const Problem p = make_problem(rng_, m, w, n, k);
      for (DType yt : {DType::BF16, DType::F32}) {
        const std::string what = "tuned " + name(p, yt, true);
        EXPECT_EQ(check(run(p, *dw, yt, true), p, true, yt, 10.0, what), 0);
        EXPECT_EQ(check(run(p, *dw, yt, true), p, true, yt, 10.0, what + " (second call)"), 0);
      }
    }
  }
  EXPECT_GT(cuda_->gemm_shapes_tuned(), 0);
  std::printf("tuned %d shapes, cuBLASLt chosen for %d\n", cuda_->gemm_shapes_tuned(), cuda_->gemm_lt_wins());
}

TEST_F(CudaGemmTest, UnsupportedProblemsFallBackToCublas) {
  cuda_->set_small_gemm(true);
  // k not a multiple of 8.
  {
    const int64_t n = 100, k = 12, m = 4;
    const auto w = nonzero_bf16(rng_, size_t(n * k));
    auto dw = upload(gpu(), to_bf16(w));
    const Problem p = make_problem(rng_, m, w, n, k);
    EXPECT_EQ(check(run(p, *dw, DType::BF16, true), p, true, DType::BF16, 10.0, name(p, DType::BF16, true)), 0);
  }
  // x not 16-byte aligned (one bf16 element into its buffer).
  {
    const int64_t n = 300, k = 64, m = 5;
    const auto w = nonzero_bf16(rng_, size_t(n * k));
    auto dw = upload(gpu(), to_bf16(w));
    const Problem p = make_problem(rng_, m, w, n, k);
    std::vector<uint16_t> xs(size_t(m * k) + 1, 0);
    const auto xb = to_bf16(p.x);
    std::copy(xb.begin(), xb.end(), xs.begin() + 1);
    auto dx = upload(gpu(), xs);
    Buf dy(gpu(), size_t(m * n) * 2);
    poison(gpu(), dy);
    ASSERT_TRUE(gpu()->matmul({dx->as<uint16_t>() + 1, dw->get(), nullptr, dy.get(), m, n, k, DType::BF16,
                               DType::BF16}).is_ok());
    EXPECT_EQ(check(download_act(gpu(), dy, size_t(m * n), DType::BF16), p, false, DType::BF16, 10.0,
                    "misaligned x " + name(p, DType::BF16, false)),
              0);
  }
}

// Host side only (runs without a GPU): what the launcher refuses and the plan's invariants.
TEST(GemmSmallPlan, RefusesAndPlansSanely) {
  alignas(16) static uint16_t buf[64];
  EXPECT_TRUE(cuda::gemm_small_supported(buf, buf, 1, 1, 8));
  EXPECT_TRUE(cuda::gemm_small_supported(buf, buf, 32, 152064, 18944));
  EXPECT_FALSE(cuda::gemm_small_supported(buf, buf, 0, 64, 64));
  EXPECT_FALSE(cuda::gemm_small_supported(buf, buf, 33, 64, 64));
  EXPECT_FALSE(cuda::gemm_small_supported(buf, buf, 4, 64, 12));
  EXPECT_FALSE(cuda::gemm_small_supported(buf + 1, buf, 4, 64, 64));
  EXPECT_FALSE(cuda::gemm_small_supported(buf, buf + 4, 4, 64, 64));
  EXPECT_FALSE(cuda::gemm_small_supported(nullptr, buf, 4, 64, 64));
  cuda::GemmSmallArgs bad;
  bad.x = buf, bad.w = buf, bad.y = buf, bad.m = 4, bad.n = 64, bad.k = 12;
  EXPECT_EQ(cuda::gemm_small(bad, nullptr), cudaErrorInvalidValue);

  for (int64_t m : {1, 9, 17, 32})
    for (int64_t n : {1, 37, 64, 512, 1000, 3584, 37888, 152064})
      for (int64_t k : {8, 40, 3584, 18944})
        for (int force_wk : {0, 1, 2, 4})
          for (int force_s : {0, 1, 5, 100000}) {
            cuda::GemmSmallArgs a;
            a.m = m, a.n = n, a.k = k, a.sm_count = 132;
            a.ws = reinterpret_cast<float*>(16), a.ws_floats = int64_t(2) << 20;
            a.counters = reinterpret_cast<int*>(16), a.n_counters = 16384;
            a.force_warps_k = force_wk, a.force_splits = force_s;
            const auto p = cuda::gemm_small_plan(a);
            const int64_t chunks = (k + 31) / 32;
            SCOPED_TRACE("m=" + std::to_string(m) + " n=" + std::to_string(n) + " k=" + std::to_string(k) +
                         " wk=" + std::to_string(force_wk) + " s=" + std::to_string(force_s));
            ASSERT_EQ(p.warps_r * p.warps_k, 4);
            if (force_wk) {
              EXPECT_EQ(p.warps_k, force_wk);
            }
            EXPECT_EQ(p.row_ctas, (n + 32 * p.warps_r - 1) / (32 * p.warps_r));
            ASSERT_GE(p.splits, 1);
            ASSERT_GE(p.chunks_per_split, 1);
            EXPECT_GE(p.splits * p.chunks_per_split, chunks);        // k covered
            EXPECT_LT((p.splits - 1) * p.chunks_per_split, chunks);  // no empty split
            EXPECT_LE(p.splits, 65535);
            if (p.splits > 1) {
              EXPECT_LE(p.splits * m * n, a.ws_floats);
              EXPECT_LE(p.row_ctas, a.n_counters);
            }
          }
}

}  // namespace
}  // namespace gsa::backend::cuda_test
