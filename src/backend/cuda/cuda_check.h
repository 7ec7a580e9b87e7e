// CUDA and cuBLAS error checks for host code: a failed call returns an Internal Status naming
// the call, its file:line and the runtime's message. Host-only (includes core/status.h).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "core/status.h"

#define GSA_CUDA_RETURN_IF_ERROR(expr)                                                      \
  do {                                                                                      \
    const cudaError_t gsa_cuda_err_ = (expr);                                               \
    if (gsa_cuda_err_ != cudaSuccess) {                                                     \
      cudaGetLastError();                                                                   \
      return ::gsa::internal_error("{}:{}: {} failed: {} ({})", __FILE__, __LINE__, #expr, \
                                   cudaGetErrorString(gsa_cuda_err_),                       \
                                   cudaGetErrorName(gsa_cuda_err_));                        \
    }                                                                                       \
  } while (0)

#define GSA_CUBLAS_RETURN_IF_ERROR(expr)                                                    \
  do {                                                                                      \
    const cublasStatus_t gsa_cublas_st_ = (expr);                                           \
    if (gsa_cublas_st_ != CUBLAS_STATUS_SUCCESS) {                                          \
      return ::gsa::internal_error("{}:{}: {} failed: {}", __FILE__, __LINE__, #expr,       \
                                   cublasGetStatusString(gsa_cublas_st_));                  \
    }                                                                                       \
  } while (0)
