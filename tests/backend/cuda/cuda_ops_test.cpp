// CUDA vs CPU for the non-attention ops: rmsnorm, rope, swiglu, add, embed, fill_random, matmul
// (cuBLAS), kv_append and rep_update, plus memory errors and the pinned / side-stream copies.
// Inputs are fresh, bf16-exact random values; CUDA outputs are poisoned before each run.
#include <cstring>

#include "cuda_test_util.h"

namespace gsa::backend::cuda_test {
namespace {

constexpr double kBf16Tol = 1e-2;  // bf16 outputs (METHOD.md: 1e-3..1e-2)
constexpr double kF32Tol = 1e-5;

double tol(DType t) { return t == DType::BF16 ? kBf16Tol : kF32Tol; }

class CudaOpsTest : public CudaTest, public ::testing::WithParamInterface<DType> {};

TEST_P(CudaOpsTest, RmsNorm) {
  const DType t = GetParam();
  for (int64_t dim : {64, 576, 3584}) {
    const int64_t rows = 7;
    auto x = random_bf16_exact(rng_, rows * dim, -2, 2);
    auto w = random_bf16_exact(rng_, dim, 0.5f, 1.5f);
    std::vector<float> ref(x.size());
    ASSERT_TRUE(cpu()->rmsnorm({x.data(), w.data(), ref.data(), rows, dim, 1e-6f, DType::F32}).is_ok());
    auto dx = upload_act(gpu(), x, t);
    auto dw = upload(gpu(), w);
    Buf dy(gpu(), x.size() * dtype_size(t));
    poison(gpu(), dy);
    ASSERT_TRUE(gpu()->rmsnorm({dx->get(), dw->as<float>(), dy.get(), rows, dim, 1e-6f, t}).is_ok());
    EXPECT_LT(rel_error(download_act(gpu(), dy, x.size(), t), ref), tol(t)) << "dim " << dim;
    // In place.
    ASSERT_TRUE(gpu()->rmsnorm({dx->get(), dw->as<float>(), dx->get(), rows, dim, 1e-6f, t}).is_ok());
    EXPECT_LT(rel_error(download_act(gpu(), *dx, x.size(), t), ref), tol(t)) << "in place, dim " << dim;
  }
}

TEST_P(CudaOpsTest, AddRmsNormEqualsAddThenRmsNorm) {
  const DType t = GetParam();
  for (int64_t dim : {64, 576, 3584}) {
    const int64_t rows = 9;
    auto x = random_bf16_exact(rng_, rows * dim, -2, 2);
    auto y = random_bf16_exact(rng_, rows * dim, -2, 2);
    auto w = random_bf16_exact(rng_, dim, 0.5f, 1.5f);
    // CPU reference: add, then rmsnorm.
    std::vector<float> ry = y, rout(y.size());
    ASSERT_TRUE(cpu()->add({x.data(), ry.data(), rows * dim, DType::F32}).is_ok());
    ASSERT_TRUE(cpu()->rmsnorm({ry.data(), w.data(), rout.data(), rows, dim, 1e-6f, DType::F32}).is_ok());
    auto dx = upload_act(gpu(), x, t), dw = upload(gpu(), w);
    // The two separate kernels on the GPU, then the fused one on the same inputs: same bytes.
    auto dy1 = upload_act(gpu(), y, t), dy2 = upload_act(gpu(), y, t);
    Buf out1(gpu(), y.size() * dtype_size(t)), out2(gpu(), y.size() * dtype_size(t));
    poison(gpu(), out1);
    poison(gpu(), out2);
    ASSERT_TRUE(gpu()->add({dx->get(), dy1->get(), rows * dim, t}).is_ok());
    ASSERT_TRUE(gpu()->rmsnorm({dy1->get(), dw->as<float>(), out1.get(), rows, dim, 1e-6f, t}).is_ok());
    ASSERT_TRUE(gpu()->add_rmsnorm({dx->get(), dy2->get(), dw->as<float>(), out2.get(), rows, dim, 1e-6f, t}).is_ok());
    const size_t bytes = y.size() * dtype_size(t);
    EXPECT_TRUE(download<uint8_t>(gpu(), *dy1, bytes) == download<uint8_t>(gpu(), *dy2, bytes)) << "residual, dim " << dim;
    EXPECT_TRUE(download<uint8_t>(gpu(), out1, bytes) == download<uint8_t>(gpu(), out2, bytes)) << "norm, dim " << dim;
    EXPECT_LT(rel_error(download_act(gpu(), *dy2, y.size(), t), ry), tol(t)) << "residual vs cpu, dim " << dim;
    EXPECT_LT(rel_error(download_act(gpu(), out2, y.size(), t), rout), tol(t)) << "norm vs cpu, dim " << dim;
  }
}

TEST_P(CudaOpsTest, Rope) {
  const DType t = GetParam();
  for (bool neox : {false, true}) {
    for (int rot : {64, 32}) {
      const int64_t n_tok = 5;
      const int heads = 3, hd = 64;
      auto x = random_bf16_exact(rng_, n_tok * heads * hd);
      std::vector<int32_t> pos(n_tok);
      std::uniform_int_distribution<int32_t> pd(0, 20000);
      for (auto& p : pos) p = pd(rng_);
      auto ref = x;
      ASSERT_TRUE(cpu()->rope({ref.data(), pos.data(), n_tok, heads, hd, rot, 10000.0f, neox, DType::F32}).is_ok());
      auto dx = upload_act(gpu(), x, t);
      auto dpos = upload(gpu(), pos);
      ASSERT_TRUE(gpu()->rope({dx->get(), dpos->as<int32_t>(), n_tok, heads, hd, rot, 10000.0f, neox, t}).is_ok());
      EXPECT_LT(rel_error(download_act(gpu(), *dx, x.size(), t), ref), t == DType::BF16 ? kBf16Tol : 1e-4)
          << "neox " << neox << " rot " << rot;
    }
  }
}

TEST_P(CudaOpsTest, SwigluAddEmbed) {
  const DType t = GetParam();
  const int64_t rows = 9, dim = 1000;
  auto gu = random_bf16_exact(rng_, rows * 2 * dim, -4, 4);
  std::vector<float> ref(rows * dim);
  ASSERT_TRUE(cpu()->swiglu({gu.data(), ref.data(), rows, dim, DType::F32}).is_ok());
  auto dgu = upload_act(gpu(), gu, t);
  Buf dout(gpu(), ref.size() * dtype_size(t));
  poison(gpu(), dout);
  ASSERT_TRUE(gpu()->swiglu({dgu->get(), dout.get(), rows, dim, t}).is_ok());
  EXPECT_LT(rel_error(download_act(gpu(), dout, ref.size(), t), ref), tol(t));

  auto x = random_bf16_exact(rng_, 12345);
  auto y = random_bf16_exact(rng_, 12345);
  auto sum = y;
  ASSERT_TRUE(cpu()->add({x.data(), sum.data(), int64_t(x.size()), DType::F32}).is_ok());
  auto dx = upload_act(gpu(), x, t);
  auto dy = upload_act(gpu(), y, t);
  ASSERT_TRUE(gpu()->add({dx->get(), dy->get(), int64_t(x.size()), t}).is_ok());
  EXPECT_LT(rel_error(download_act(gpu(), *dy, y.size(), t), sum), tol(t));

  const int64_t vocab = 300, edim = 96, n_tok = 11;
  auto table = random_bf16_exact(rng_, vocab * edim);
  std::vector<int32_t> ids(n_tok);
  std::uniform_int_distribution<int32_t> idd(0, vocab - 1);
  for (auto& id : ids) id = idd(rng_);
  std::vector<float> eref(n_tok * edim);
  ASSERT_TRUE(cpu()->embed({ids.data(), table.data(), eref.data(), n_tok, vocab, edim, DType::F32, DType::F32}).is_ok());
  auto dids = upload(gpu(), ids);
  for (DType tt : {DType::F32, DType::BF16}) {
    auto dtable = tt == DType::BF16 ? upload(gpu(), to_bf16(table)) : upload(gpu(), table);
    Buf dem(gpu(), eref.size() * dtype_size(t));
    poison(gpu(), dem);
    ASSERT_TRUE(gpu()->embed({dids->as<int32_t>(), dtable->get(), dem.get(), n_tok, vocab, edim, tt, t}).is_ok());
    EXPECT_EQ(rel_error(download_act(gpu(), dem, eref.size(), t), eref), 0.0) << "table " << int(tt);
  }
}

TEST_P(CudaOpsTest, FillRandomMatchesCpu) {
  const DType t = GetParam();
  const int64_t n = 100003;
  const uint64_t seed = rng_();
  std::vector<float> ref(n);
  ASSERT_TRUE(cpu()->fill_random({ref.data(), n, 0.5f, seed, DType::F32}).is_ok());
  Buf d(gpu(), n * dtype_size(t));
  poison(gpu(), d);
  ASSERT_TRUE(gpu()->fill_random({d.get(), n, 0.5f, seed, t}).is_ok());
  auto got = download_act(gpu(), d, n, t);
  int64_t zeros = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float want = t == DType::BF16 ? bf16_to_f32(f32_to_bf16(ref[i])) : ref[i];
    ASSERT_EQ(got[i], want) << "at " << i;
    zeros += got[i] == 0.0f;
  }
  EXPECT_LT(zeros, n / 1000);
}

TEST_P(CudaOpsTest, ArgmaxMatchesCpuWithTiesAndNan) {
  const DType t = GetParam();
  for (int64_t cols : {1, 7, 1000, 152064}) {
    const int64_t rows = 9;
    auto x = random_bf16_exact(rng_, rows * cols, -4, 4);
    if (cols > 7) {
      // Row 1: a tie (the lower column wins); row 2: NaN before the maximum; row 3: all equal.
      x[size_t(cols) + 3] = 9.0f;
      x[size_t(cols) + cols - 2] = 9.0f;
      x[size_t(2 * cols)] = std::nanf("");
      x[size_t(2 * cols) + cols / 2] = 8.0f;
      for (int64_t c = 0; c < cols; ++c) x[size_t(3 * cols + c)] = 0.5f;
    }
    std::vector<int32_t> ref(rows);
    ASSERT_TRUE(cpu()->argmax({x.data(), ref.data(), rows, cols, DType::F32}).is_ok());
    if (cols > 7) {
      EXPECT_EQ(ref[1], 3);
      EXPECT_EQ(ref[2], cols / 2);
      EXPECT_EQ(ref[3], 0);
    }
    auto dx = upload_act(gpu(), x, t);
    Buf dout(gpu(), rows * 4);
    poison(gpu(), dout);
    ASSERT_TRUE(gpu()->argmax({dx->get(), dout.as<int32_t>(), rows, cols, t}).is_ok());
    EXPECT_EQ(download<int32_t>(gpu(), dout, rows), ref) << "cols " << cols;
  }
}

TEST_P(CudaOpsTest, Matmul) {
  const DType t = GetParam();
  for (DType wt : {DType::BF16, DType::F32}) {
    if (wt == DType::F32 && t != DType::F32) continue;
    for (int64_t m : {1, 5, 64}) {
      const int64_t n = 384, k = 576;
      auto x = random_bf16_exact(rng_, m * k);
      auto w = random_bf16_exact(rng_, n * k);
      auto bias = random_bf16_exact(rng_, n);
      std::vector<float> ref(m * n);
      ASSERT_TRUE(cpu()->matmul({x.data(), w.data(), bias.data(), ref.data(), m, n, k, DType::F32, DType::F32}).is_ok());
      auto dx = upload_act(gpu(), x, t);
      auto dw = upload_act(gpu(), w, wt);
      auto db = upload(gpu(), bias);
      Buf dy(gpu(), ref.size() * dtype_size(t));
      poison(gpu(), dy);
      ASSERT_TRUE(gpu()->matmul({dx->get(), dw->get(), db->as<float>(), dy.get(), m, n, k, t, wt}).is_ok());
      EXPECT_LT(rel_error(download_act(gpu(), dy, ref.size(), t), ref), t == DType::F32 && wt == DType::F32 ? 1e-4 : kBf16Tol)
          << "m " << m << " w " << int(wt);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Types, CudaOpsTest, ::testing::Values(DType::BF16, DType::F32),
                         [](const auto& info) { return info.param == DType::BF16 ? "bf16" : "f32"; });

TEST_F(CudaTest, MatmulBf16ActivationsToF32Output) {
  // The output head: bf16 x and w, f32 y (no bf16 rounding of the logits), both GEMM paths.
  for (bool small : {false, true}) {
    cuda_->set_small_gemm(small);
    for (int64_t m : {1, 20, 40}) {
      const int64_t n = 1000, k = 576;
      auto x = random_bf16_exact(rng_, m * k);
      auto w = random_bf16_exact(rng_, n * k);
      auto bias = random_bf16_exact(rng_, n);
      std::vector<float> ref(m * n);
      ASSERT_TRUE(cpu()->matmul({x.data(), w.data(), bias.data(), ref.data(), m, n, k, DType::F32, DType::F32}).is_ok());
      auto dx = upload_act(gpu(), x, DType::BF16);
      auto dw = upload_act(gpu(), w, DType::BF16);
      auto db = upload(gpu(), bias);
      Buf dy(gpu(), ref.size() * 4);
      poison(gpu(), dy);
      MatmulParams p{dx->get(), dw->get(), db->as<float>(), dy.get(), m, n, k, DType::BF16, DType::BF16};
      p.y_f32 = true;
      ASSERT_TRUE(gpu()->matmul(p).is_ok());
      // f32 accumulation of bf16-exact inputs: far inside one bf16 rounding of the output.
      EXPECT_LT(rel_error(download<float>(gpu(), dy, ref.size()), ref), 1e-5) << "m " << m << " small " << small;
    }
  }
  cuda_->set_small_gemm(false);
}

TEST_F(CudaTest, MatmulRefusesBf16ActivationsWithF32Weights) {
  Buf x(gpu(), 64), w(gpu(), 64), y(gpu(), 64);
  auto st = gpu()->matmul({x.get(), w.get(), nullptr, y.get(), 1, 4, 4, DType::BF16, DType::F32});
  EXPECT_EQ(st.code(), StatusCode::Unsupported);
}

TEST_F(CudaTest, KvAppendBf16Cache) {
  const int n_kv = 3, hd = 64, bs = 16, n_blocks = 6;
  const int64_t n_tok = 20;
  auto k = random_bf16_exact(rng_, n_tok * n_kv * hd);
  auto v = random_bf16_exact(rng_, n_tok * n_kv * hd);
  std::vector<int32_t> slots(n_tok);
  std::vector<int32_t> perm(n_blocks * bs);
  for (size_t i = 0; i < perm.size(); ++i) perm[i] = int32_t(i);
  std::shuffle(perm.begin(), perm.end(), rng_);
  for (int64_t i = 0; i < n_tok; ++i) slots[i] = perm[i];
  const size_t cache_elems = size_t(n_blocks) * n_kv * bs * hd;
  auto kc = random_bf16_exact(rng_, cache_elems), vc = random_bf16_exact(rng_, cache_elems);
  auto dkc = upload(gpu(), to_bf16(kc)), dvc = upload(gpu(), to_bf16(vc));
  ASSERT_TRUE(cpu()->kv_append({k.data(), v.data(), kc.data(), vc.data(), slots.data(), n_tok, n_blocks,
                                n_kv, hd, bs, DType::F32, DType::F32}).is_ok());
  auto dk = upload(gpu(), to_bf16(k)), dv = upload(gpu(), to_bf16(v));
  auto ds = upload(gpu(), slots);
  ASSERT_TRUE(gpu()->kv_append({dk->get(), dv->get(), dkc->get(), dvc->get(), ds->as<int32_t>(), n_tok,
                                n_blocks, n_kv, hd, bs, DType::BF16, DType::BF16}).is_ok());
  EXPECT_EQ(rel_error(from_bf16(download<uint16_t>(gpu(), *dkc, cache_elems)), kc), 0.0);
  EXPECT_EQ(rel_error(from_bf16(download<uint16_t>(gpu(), *dvc, cache_elems)), vc), 0.0);
}

TEST_F(CudaTest, RepUpdateMatchesCpu) {
  for (RepKind kind : {RepKind::Mean, RepKind::MinMax, RepKind::Hash, RepKind::Quant}) {
    for (int hd_sub : {64, 128, 64 + 8, 128 + 16}) {  // head_dim, plus a sub-block of 8 or 16 tokens
      const int hd = hd_sub & ~31, sub = hd_sub & 31;
      if (sub && (kind == RepKind::Hash || kind == RepKind::Quant)) continue;
      const int n_kv = 2, bs = 32, n_blocks = 7;
      const size_t cache_elems = size_t(n_blocks) * n_kv * bs * hd;
      auto kc = random_bf16_exact(rng_, cache_elems, -2, 2);
      std::vector<int32_t> blocks = {5, 0, 3};
      auto w = random_bf16_exact(rng_, size_t(hd) * hd);
      const int64_t rb = rep_bytes(kind, hd, bs, sub);
      const size_t rep_total = size_t(n_blocks) * n_kv * rb;
      std::vector<uint8_t> ref(rep_total, 0);
      RepUpdateParams p;
      p.sub_block = sub;
      p.k_cache = kc.data();
      p.reps = ref.data();
      p.blocks = blocks.data();
      p.n_update = int(blocks.size());
      p.n_blocks = n_blocks;
      p.n_kv_heads = n_kv;
      p.head_dim = hd;
      p.block_size = bs;
      p.kind = kind;
      p.hash_w = w.data();
      ASSERT_TRUE(cpu()->rep_update(p).is_ok());
      auto dkc = upload(gpu(), to_bf16(kc));
      auto dblocks = upload(gpu(), blocks);
      auto dw = upload(gpu(), w);
      Buf dreps(gpu(), rep_total);
      std::vector<uint8_t> zeros(rep_total, 0);
      ASSERT_TRUE(gpu()->upload(dreps.get(), zeros.data(), rep_total).is_ok());
      p.k_cache = dkc->get();
      p.reps = dreps.get();
      p.blocks = dblocks->as<int32_t>();
      p.hash_w = dw->as<float>();
      p.kv_type = DType::BF16;
      ASSERT_TRUE(gpu()->rep_update(p).is_ok());
      auto got = download<uint8_t>(gpu(), dreps, rep_total);
      if (kind == RepKind::Quant) {
        // The same bf16 keys and the same float operations: the box and every code equal.
        EXPECT_EQ(got, ref) << "quant hd " << hd;
      } else if (kind == RepKind::Hash) {
        // Sign bits of near-zero projections may differ with the summation order.
        int64_t diff = 0;
        for (size_t i = 0; i < rep_total; ++i) diff += __builtin_popcount(unsigned(got[i] ^ ref[i]));
        EXPECT_LT(double(diff) / double(rep_total * 8), 0.002) << "hd " << hd;
        int64_t set = 0;
        for (size_t i = 0; i < rep_total; ++i) set += __builtin_popcount(unsigned(got[i]));
        EXPECT_GT(set, 0);
      } else {
        std::vector<float> a(rep_total / 4), b(rep_total / 4);
        std::memcpy(a.data(), got.data(), rep_total);
        std::memcpy(b.data(), ref.data(), rep_total);
        EXPECT_LT(rel_error(a, b), 1e-6) << "kind " << int(kind) << " hd " << hd;
      }
    }
  }
}

TEST_F(CudaTest, AllocationFailureIsOutOfMemory) {
  auto r = gpu()->alloc(size_t(1) << 50);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::OutOfMemory);
  // The backend keeps working.
  Buf b(gpu(), 1024);
  std::vector<float> x(256, 1.5f);
  ASSERT_TRUE(gpu()->upload(b.get(), x.data(), 1024).is_ok());
  EXPECT_EQ(download<float>(gpu(), b, 256)[255], 1.5f);
  EXPECT_TRUE(gpu()->synchronize().is_ok());
}

TEST_F(CudaTest, RefusesBadShapes) {
  AttentionParams p;
  p.n_seqs = 1;
  p.n_tokens = 1;
  p.n_heads = 4;
  p.n_kv_heads = 4;
  p.head_dim = 96;
  p.block_size = 16;
  p.act_type = p.kv_type = DType::BF16;
  EXPECT_EQ(gpu()->attention(p).code(), StatusCode::Unsupported);
  p.head_dim = 64;
  p.n_kv_heads = 3;
  EXPECT_EQ(gpu()->attention(p).code(), StatusCode::InvalidArgument);
  EXPECT_EQ(gpu()->rmsnorm({nullptr, nullptr, nullptr, 2, -1, 1e-5f, DType::F32}).code(),
            StatusCode::InvalidArgument);
  EXPECT_EQ(gpu()->add({nullptr, nullptr, 4, DType::F16}).code(), StatusCode::Unsupported);
}

#ifdef GSA_HAVE_CUDA
TEST_F(CudaTest, SideStreamCopiesRoundTrip) {
  const size_t n = 4096;
  auto x = random_bf16_exact(rng_, n);
  auto dx = upload(gpu(), x);
  auto host = cuda_->alloc_pinned(n * 4);
  ASSERT_TRUE(host.is_ok());
  auto ev = cuda_->create_event();
  ASSERT_TRUE(ev.is_ok());
  // The copy follows work queued before it: scale x by 2 through add(x, x).
  ASSERT_TRUE(gpu()->add({dx->get(), dx->get(), int64_t(n), DType::F32}).is_ok());
  ASSERT_TRUE(cuda_->copy_to_host_async(host.value(), dx->get(), n * 4, ev.value()).is_ok());
  ASSERT_TRUE(cuda_->event_synchronize(ev.value()).is_ok());
  auto done = cuda_->event_done(ev.value());
  ASSERT_TRUE(done.is_ok());
  EXPECT_TRUE(done.value());
  const float* h = static_cast<const float*>(host.value());
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(h[i], 2 * x[i]);
  // Back to the device on the side stream; the compute stream waits on the event.
  static_cast<float*>(host.value())[7] = 42.0f;
  Buf dy(gpu(), n * 4);
  poison(gpu(), dy);
  ASSERT_TRUE(cuda_->copy_to_device_async(dy.get(), host.value(), n * 4, ev.value()).is_ok());
  ASSERT_TRUE(cuda_->wait_event(ev.value()).is_ok());
  auto y = download<float>(gpu(), dy, n);
  EXPECT_EQ(y[7], 42.0f);
  EXPECT_EQ(y[8], 2 * x[8]);
  cuda_->destroy_event(ev.value());
  cuda_->free_pinned(host.value());
}
#endif

}  // namespace
}  // namespace gsa::backend::cuda_test
