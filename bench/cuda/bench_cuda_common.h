// What the CUDA benchmark drivers share: fatal checks (a benchmark stops at the first error,
// it never asserts on numbers), the timing context, median event timing on a flushed L2, and
// the read-bandwidth ceiling every table is measured against.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <vector>

#include "backend/cuda/cuda_backend.h"

namespace gsa::bench {
cudaError_t read_reduce(const void* src, size_t bytes, uint32_t* out_1024, int sm_count, cudaStream_t stream);
}

#define CHECK_OK(expr)                                                                  \
  do {                                                                                  \
    auto st_ = (expr);                                                                  \
    if (!st_.is_ok()) {                                                                 \
      std::fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, st_.to_string().c_str()); \
      std::exit(1);                                                                     \
    }                                                                                   \
  } while (0)
#define CHECK_CUDA(expr)                                                                           \
  do {                                                                                             \
    cudaError_t e_ = (expr);                                                                       \
    if (e_ != cudaSuccess) {                                                                       \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #expr, cudaGetErrorString(e_)); \
      std::exit(1);                                                                                \
    }                                                                                              \
  } while (0)

namespace gsa::bench {

struct Ctx {
  backend::CudaBackend* be = nullptr;
  cudaStream_t stream = nullptr;
  void* flush = nullptr;
  size_t flush_bytes = size_t(256) << 20;
  int reps = 20;
  FILE* json = nullptr;
  double ceiling_gbps = 0;
};

/// Opens device 0 for c (exits with the error's line when there is none).
inline std::unique_ptr<backend::CudaBackend> open_backend(Ctx& c) {
  auto r = backend::CudaBackend::create(0);
  if (!r.is_ok()) {
    std::fprintf(stderr, "%s\n", r.status().to_string().c_str());
    std::exit(1);
  }
  auto be = std::move(r).value();
  c.be = be.get();
  c.stream = reinterpret_cast<cudaStream_t>(be->stream());
  return be;
}

/// Median time in microseconds of fn() over c.reps runs (after 3 untimed ones); L2 flushed
/// (a memset of c.flush_bytes) before each when `flush`.
template <typename Fn>
double time_us(Ctx& c, Fn&& fn, bool flush = true) {
  cudaEvent_t e0, e1;
  CHECK_CUDA(cudaEventCreate(&e0));
  CHECK_CUDA(cudaEventCreate(&e1));
  for (int i = 0; i < 3; ++i) fn();
  std::vector<float> t;
  for (int i = 0; i < c.reps; ++i) {
    if (flush) CHECK_CUDA(cudaMemsetAsync(c.flush, i & 0xff, c.flush_bytes, c.stream));
    CHECK_CUDA(cudaEventRecord(e0, c.stream));
    fn();
    CHECK_CUDA(cudaEventRecord(e1, c.stream));
    CHECK_CUDA(cudaEventSynchronize(e1));
    float ms = 0;
    CHECK_CUDA(cudaEventElapsedTime(&ms, e0, e1));
    t.push_back(ms * 1000.0f);
  }
  CHECK_CUDA(cudaEventDestroy(e0));
  CHECK_CUDA(cudaEventDestroy(e1));
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

/// Sets c.ceiling_gbps from a 4 GiB read-only reduction and prints it; with copy_gbps, also
/// times a 2 x 2 GiB device-to-device copy (read + write counted).
inline void measure_read_ceiling(Ctx& c, double* copy_gbps = nullptr) {
  const size_t bytes = size_t(4) << 30;
  auto buf = c.be->alloc(bytes);
  CHECK_OK(buf.is_ok() ? gsa::Status::ok() : buf.status());
  CHECK_OK(c.be->fill_random({buf.value(), int64_t(bytes / 4), 1.0f, 7, DType::F32}));
  auto out = c.be->alloc(4096);
  CHECK_OK(out.is_ok() ? gsa::Status::ok() : out.status());
  CHECK_CUDA(cudaMemsetAsync(out.value(), 0, 4096, c.stream));
  const double us = time_us(c, [&] {
    CHECK_CUDA(read_reduce(buf.value(), bytes, static_cast<uint32_t*>(out.value()), c.be->sm_count(), c.stream));
  });
  c.ceiling_gbps = double(bytes) / (us * 1e-6) / 1e9;
  std::printf("read ceiling: %.0f GB/s (4 GiB read-only reduction, %.1f us)\n", c.ceiling_gbps, us);
  if (copy_gbps) {
    const size_t half = bytes / 2;
    const double cus = time_us(c, [&] {
      CHECK_CUDA(cudaMemcpyAsync(static_cast<char*>(buf.value()) + half, buf.value(), half,
                                 cudaMemcpyDeviceToDevice, c.stream));
    });
    *copy_gbps = 2.0 * half / (cus * 1e-6) / 1e9;
    std::printf("d2d copy: %.0f GB/s counting read + write (2 x 2 GiB)\n", *copy_gbps);
  }
  c.be->free(out.value());
  c.be->free(buf.value());
}

}  // namespace gsa::bench
