// Shared fixture of the CUDA backend tests: a CPU backend (the f32 reference) and a CUDA backend
// side by side, bf16-exact random inputs (so both backends see identical values), device buffers
// poisoned with NaN before each run, and the relative-error measure of METHOD.md.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "backend/backend.h"
#include "core/dtype.h"
#include "core/thread_pool.h"

#ifdef GSA_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#endif

namespace gsa::backend::cuda_test {

/// Random floats in [lo, hi) rounded to bf16, so f32 (CPU) and bf16 (CUDA) inputs are equal.
inline std::vector<float> random_bf16_exact(std::mt19937& rng, size_t n, float lo = -1.0f,
                                            float hi = 1.0f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = bf16_to_f32(f32_to_bf16(dist(rng)));
  return v;
}

inline std::vector<uint16_t> to_bf16(const std::vector<float>& v) {
  std::vector<uint16_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = f32_to_bf16(v[i]);
  return out;
}

inline std::vector<float> from_bf16(const std::vector<uint16_t>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = bf16_to_f32(v[i]);
  return out;
}

/// ||a - b|| / ||b||; infinity when a holds a NaN or sizes differ.
inline double rel_error(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return INFINITY;
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) || std::isnan(b[i])) return INFINITY;
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return den == 0 ? std::sqrt(num) : std::sqrt(num / den);
}

/// One allocation on a backend, freed with the object.
class Buf {
 public:
  Buf(Backend* b, size_t bytes) : b_(b), bytes_(bytes) {
    auto r = b->alloc(bytes);
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    if (r.is_ok()) p_ = r.value();
  }
  ~Buf() {
    if (p_) b_->free(p_);
  }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  void* get() const { return p_; }
  template <typename T>
  T* as() const { return static_cast<T*>(p_); }
  size_t bytes() const { return bytes_; }

 private:
  Backend* b_;
  void* p_ = nullptr;
  size_t bytes_;
};

template <typename T>
std::unique_ptr<Buf> upload(Backend* b, const std::vector<T>& v) {
  auto buf = std::make_unique<Buf>(b, std::max<size_t>(1, v.size() * sizeof(T)));
  if (!v.empty()) {
    EXPECT_TRUE(b->upload(buf->get(), v.data(), v.size() * sizeof(T)).is_ok());
  }
  return buf;
}

template <typename T>
std::vector<T> download(Backend* b, const Buf& buf, size_t n) {
  std::vector<T> v(n);
  if (n) {
    EXPECT_TRUE(b->download(v.data(), buf.get(), n * sizeof(T)).is_ok());
  }
  return v;
}

/// Fills a device buffer with NaN (0xFF bytes: a NaN in f32 and bf16, -1 in int32).
inline void poison(Backend* b, const Buf& buf) {
  std::vector<uint8_t> junk(buf.bytes(), 0xFF);
  EXPECT_TRUE(b->upload(buf.get(), junk.data(), junk.size()).is_ok());
}

/// Activations on the CUDA side: bf16 or f32 copies of the same (bf16-exact) values.
inline std::unique_ptr<Buf> upload_act(Backend* b, const std::vector<float>& v, DType t) {
  if (t == DType::BF16) return upload(b, to_bf16(v));
  return upload(b, v);
}
inline std::vector<float> download_act(Backend* b, const Buf& buf, size_t n, DType t) {
  if (t == DType::BF16) return from_bf16(download<uint16_t>(b, buf, n));
  return download<float>(b, buf, n);
}

class CudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
#ifdef GSA_HAVE_CUDA
    auto r = CudaBackend::create(0);
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
    cuda_ = std::move(r).value();
#endif
    cpu_ = make_cpu_backend(&pool_);
    // Fresh inputs every run; the seed is printed so a failure can be replayed.
    seed_ = std::random_device{}();
    rng_.seed(seed_);
    std::printf("seed %u\n", seed_);
  }
  Backend* gpu() const { return cuda_.get(); }
  Backend* cpu() const { return cpu_.get(); }

  ThreadPool pool_{2};
  std::mt19937 rng_;
  unsigned seed_ = 0;
#ifdef GSA_HAVE_CUDA
  std::unique_ptr<CudaBackend> cuda_;
#else
  std::unique_ptr<Backend> cuda_;
#endif
  std::unique_ptr<Backend> cpu_;
};

}  // namespace gsa::backend::cuda_test
