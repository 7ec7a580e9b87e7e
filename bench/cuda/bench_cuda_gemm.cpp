// Decode GEMMs on the GPU, cuBLAS vs the small-m kernel side by side, at Qwen2.5-7B shapes
// (q/o, k/v, fused gate+up, down, output head) and m = 1..32: median time (CUDA events, L2
// flushed before each run), weight bytes read per second, % of the measured read ceiling and the
// ratio. --sweep also times forced CTA shapes / split counts of the small kernel for tuning.
// A driver with its own main: prints a table and writes JSON lines (--json FILE); never asserts.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_launch.h"
#include "bench_cuda_common.h"

namespace {

using gsa::DType;
using namespace gsa::backend;
using gsa::bench::Ctx;
using gsa::bench::time_us;

void measure_ceiling(Ctx& c) {
  gsa::bench::measure_read_ceiling(c);
  if (c.json) std::fprintf(c.json, "{\"op\":\"ceiling\",\"read_gbps\":%.1f}\n", c.ceiling_gbps);
}

struct Shape {
  const char* name;
  int64_t n, k;
};

double gbps(const Shape& s, double us) { return double(s.n) * double(s.k) * 2 / (us * 1e-6) / 1e9; }

void run_shape(Ctx& c, const Shape& s, const std::vector<int64_t>& ms, bool sweep) {
  const int64_t max_m = *std::max_element(ms.begin(), ms.end());
  void* w = c.be->alloc(size_t(s.n) * size_t(s.k) * 2).value();
  void* x = c.be->alloc(size_t(max_m) * size_t(s.k) * 2).value();
  void* y = c.be->alloc(size_t(max_m) * size_t(s.n) * 2).value();
  CHECK_OK(c.be->fill_random({w, s.n * s.k, 0.05f, 21, DType::BF16}));
  CHECK_OK(c.be->fill_random({x, max_m * s.k, 1.0f, 22, DType::BF16}));
  const double wbytes = double(s.n) * double(s.k) * 2;
  for (int64_t m : ms) {
    // Activations and output bf16, no bias (the small kernel would fuse it; cuBLAS adds a launch).
    const MatmulParams p{x, w, nullptr, y, m, s.n, s.k, DType::BF16, DType::BF16};
    c.be->set_small_gemm(false);
    CHECK_OK(c.be->set_gemm_tuning(false));
    const double cublas_us = time_us(c, [&] { CHECK_OK(c.be->matmul(p)); });
    CHECK_OK(c.be->set_gemm_tuning(true));  // cuBLASLt algorithms timed on the first call
    const double tuned_us = time_us(c, [&] { CHECK_OK(c.be->matmul(p)); });
    const bool lt = c.be->gemm_lt_wins() > 0;
    c.be->set_small_gemm(true);
    c.be->set_small_gemm_shape(0, 0);
    const double small_us = time_us(c, [&] { CHECK_OK(c.be->matmul(p)); });
    int wk = 0, splits = 0;
    c.be->small_gemm_plan(m, s.n, s.k, &wk, &splits);
    std::printf("%-8s n=%-6lld k=%-5lld m=%-2lld  cublas %8.1f us %6.0f GB/s %5.1f%%   small %8.1f us %6.0f GB/s %5.1f%%"
                "   cublas/small %5.2f  (warps_k %d, splits %d)   tuned %8.1f us %6.0f GB/s %5.1f%% (%s)\n",
                s.name, (long long)s.n, (long long)s.k, (long long)m, cublas_us, gbps(s, cublas_us),
                100.0 * gbps(s, cublas_us) / c.ceiling_gbps, small_us, gbps(s, small_us),
                100.0 * gbps(s, small_us) / c.ceiling_gbps, cublas_us / small_us, wk, splits, tuned_us,
                gbps(s, tuned_us), 100.0 * gbps(s, tuned_us) / c.ceiling_gbps, lt ? "cuBLASLt" : "cublasGemmEx");
    if (c.json)
      std::fprintf(c.json,
                   "{\"op\":\"gemm\",\"shape\":\"%s\",\"n\":%lld,\"k\":%lld,\"m\":%lld,\"w_bytes\":%.0f,"
                   "\"cublas_us\":%.2f,\"cublas_gbps\":%.1f,\"small_us\":%.2f,\"small_gbps\":%.1f,"
                   "\"small_pct_ceiling\":%.1f,\"cublas_over_small\":%.3f,\"warps_k\":%d,\"splits\":%d,"
                   "\"tuned_us\":%.2f,\"tuned_gbps\":%.1f,\"tuned_lt\":%s}\n",
                   s.name, (long long)s.n, (long long)s.k, (long long)m, wbytes, cublas_us, gbps(s, cublas_us),
                   small_us, gbps(s, small_us), 100.0 * gbps(s, small_us) / c.ceiling_gbps, cublas_us / small_us,
                   wk, splits, tuned_us, gbps(s, tuned_us), lt ? "true" : "false");
    if (!sweep) continue;
    // Forced plans, for tuning the heuristic: the best one per (shape, m) is printed.
    double best_us = small_us;
    int best_wk = wk, best_s = splits;
    for (int fwk : {1, 2, 4})
      for (int fs : {1, 2, 3, 4, 6, 8, 12, 16, 24}) {
        c.be->set_small_gemm_shape(fwk, fs);
        int pwk = 0, ps = 0;
        c.be->small_gemm_plan(m, s.n, s.k, &pwk, &ps);
        if (ps != fs) continue;  // clamped: same as another point
        const double us = time_us(c, [&] { CHECK_OK(c.be->matmul(p)); });
        if (c.json)
          std::fprintf(c.json,
                       "{\"op\":\"gemm_sweep\",\"shape\":\"%s\",\"n\":%lld,\"k\":%lld,\"m\":%lld,\"warps_k\":%d,"
                       "\"splits\":%d,\"us\":%.2f,\"gbps\":%.1f}\n",
                       s.name, (long long)s.n, (long long)s.k, (long long)m, pwk, ps, us, gbps(s, us));
        if (us < best_us) best_us = us, best_wk = pwk, best_s = ps;
      }
    c.be->set_small_gemm_shape(0, 0);
    std::printf("%-8s %27s sweep best %8.1f us %6.0f GB/s (warps_k %d, splits %d; heuristic %.1f us)\n", s.name, "",
                best_us, gbps(s, best_us), best_wk, best_s, small_us);
  }
  c.be->free(w);
  c.be->free(x);
  c.be->free(y);
}

}  // namespace

int main(int argc, char** argv) {
  Ctx c;
  bool sweep = false, quick = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--json") && i + 1 < argc) c.json = std::fopen(argv[++i], "w");
    else if (!std::strcmp(argv[i], "--reps") && i + 1 < argc) c.reps = std::max(20, std::atoi(argv[++i]));
    else if (!std::strcmp(argv[i], "--sweep")) sweep = true;
    else if (!std::strcmp(argv[i], "--quick")) quick = true;
    else {
      std::fprintf(stderr, "usage: %s [--json FILE] [--reps N>=20] [--sweep] [--quick]\n", argv[0]);
      return 2;
    }
  }
  auto be = gsa::bench::open_backend(c);
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs, L2 %d MB; bf16 x, W and y, no bias; median of %d runs, L2 flushed\n", prop.name,
              prop.multiProcessorCount, prop.l2CacheSize >> 20, c.reps);
  c.flush = be->alloc(c.flush_bytes).value();
  measure_ceiling(c);
  // Qwen2.5-7B: hidden 3584, 28 q heads / 4 kv heads of 128, FFN 18944, vocab 152064.
  const std::vector<Shape> shapes = {{"q_o", 3584, 3584},
                                     {"qkv", 4608, 3584},
                                     {"k_v", 512, 3584},
                                     {"gate_up", 37888, 3584},
                                     {"down", 3584, 18944},
                                     {"head", 152064, 3584}};
  const std::vector<int64_t> ms = quick ? std::vector<int64_t>{1, 32} : std::vector<int64_t>{1, 5, 10, 20, 32};
  for (const Shape& s : shapes) run_shape(c, s, ms, sweep);
  CHECK_OK(be->synchronize());
  if (c.json) std::fclose(c.json);
  return 0;
}
