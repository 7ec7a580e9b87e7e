// GemmTuner: decode-sized bf16 GEMMs through cuBLASLt with an algorithm chosen by timing. For
// each (m, n, k, output type) met for the first time it times cuBLASLt's candidate algorithms
// (split-k ones included; reductions in f32 only) against cublasGemmEx's default, each run on a
// flushed L2, and keeps the fastest for every later call. Tuning synchronizes the stream once
// per new shape (a warm-up cost); later calls launch without any host wait.
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <memory>
#include <tuple>

#include "core/status.h"

namespace gsa::backend {

class GemmTuner {
 public:
  /// ws: cuBLASLt workspace of ws_bytes (device memory, borrowed); flush: >= 2x the L2 size
  /// of scratch for flushing between timed runs (borrowed).
  static Result<std::unique_ptr<GemmTuner>> create(cublasHandle_t blas, void* ws, size_t ws_bytes,
                                                   void* flush, size_t flush_bytes);
  ~GemmTuner();
  GemmTuner(const GemmTuner&) = delete;
  GemmTuner& operator=(const GemmTuner&) = delete;

  /// Column-major y^T[n, m] = w^T[n, k] . x^T[k, m] (row-major y = x . w^T), w and x bf16, y
  /// `ytype` (CUDA_R_16BF or CUDA_R_32F), f32 accumulation, on `stream`.
  Status matmul(const void* x, const void* w, void* y, int m, int n, int k, cudaDataType_t ytype,
                cudaStream_t stream);

  /// Shapes tuned so far, and how many chose a cuBLASLt algorithm over cublasGemmEx.
  int tuned() const { return int(plans_.size()); }
  int lt_wins() const;

 private:
  struct Plan {
    bool use_lt = false;
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
    size_t ws = 0;
    float lt_us = 0, default_us = 0;
  };
  using Key = std::tuple<int, int, int, int>;

  GemmTuner() = default;
  Status tune(Plan* plan, const void* x, const void* w, void* y, int m, int n, int k,
              cudaDataType_t ytype, cudaStream_t stream);
  Status run_default(const void* x, const void* w, void* y, int m, int n, int k,
                     cudaDataType_t ytype, cudaStream_t stream);

  cublasHandle_t blas_ = nullptr;
  cublasLtHandle_t lt_ = nullptr;
  void* ws_ = nullptr;
  size_t ws_bytes_ = 0;
  void* flush_ = nullptr;
  size_t flush_bytes_ = 0;
  cudaEvent_t ev0_ = nullptr, ev1_ = nullptr;
  std::map<Key, Plan> plans_;
};

}  // namespace gsa::backend
