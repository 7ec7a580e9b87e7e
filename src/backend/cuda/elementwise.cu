// Launchers of the row-wise and elementwise ops (elementwise.cuh): grid sizes and the element
// type instantiation. Parameters were validated by CudaBackend.
#include <algorithm>

#include "backend/cuda/cuda_launch.h"
#include "backend/cuda/elementwise.cuh"

namespace gsa::cuda {
namespace {

using bf16 = __nv_bfloat16;

// Grid for a grid-stride loop over n elements: enough CTAs to fill the chip, no more.
unsigned stride_grid(int64_t n, int threads = 256) {
  const int64_t blocks = (n + threads - 1) / threads;
  return unsigned(std::clamp<int64_t>(blocks, 1, 132 * 16));
}

int row_threads(int64_t dim) {
  if (dim >= 1024) return 512;
  if (dim >= 256) return 256;
  return 128;
}

}  // namespace

cudaError_t rmsnorm(const backend::RmsNormParams& p, cudaStream_t stream) {
  if (p.n_rows == 0) return cudaSuccess;
  const int threads = row_threads(p.dim);
  if (p.act_type == DType::BF16)
    rmsnorm_kernel<<<unsigned(p.n_rows), threads, 0, stream>>>(
        static_cast<const bf16*>(p.x), p.w, static_cast<bf16*>(p.y), p.dim, p.eps);
  else
    rmsnorm_kernel<<<unsigned(p.n_rows), threads, 0, stream>>>(
        static_cast<const float*>(p.x), p.w, static_cast<float*>(p.y), p.dim, p.eps);
  return cudaGetLastError();
}

cudaError_t rope(const backend::RopeParams& p, float theta_scale, cudaStream_t stream) {
  if (p.n_tokens == 0) return cudaSuccess;
  const size_t smem = sizeof(float) * size_t(p.rot_dim);
  const int threads = 128;
  if (p.act_type == DType::BF16)
    rope_kernel<<<unsigned(p.n_tokens), threads, smem, stream>>>(
        static_cast<bf16*>(p.x), p.pos, p.n_heads, p.head_dim, p.rot_dim, theta_scale, p.neox);
  else
    rope_kernel<<<unsigned(p.n_tokens), threads, smem, stream>>>(
        static_cast<float*>(p.x), p.pos, p.n_heads, p.head_dim, p.rot_dim, theta_scale, p.neox);
  return cudaGetLastError();
}

cudaError_t swiglu(const backend::SwigluParams& p, cudaStream_t stream) {
  const int64_t n = p.n_rows * p.dim;
  if (n == 0) return cudaSuccess;
  if (p.act_type == DType::BF16)
    swiglu_kernel<<<stride_grid(n), 256, 0, stream>>>(static_cast<const bf16*>(p.gate_up),
                                                      static_cast<bf16*>(p.out), p.n_rows, p.dim);
  else
    swiglu_kernel<<<stride_grid(n), 256, 0, stream>>>(static_cast<const float*>(p.gate_up),
                                                      static_cast<float*>(p.out), p.n_rows, p.dim);
  return cudaGetLastError();
}

cudaError_t add_rmsnorm(const backend::AddRmsNormParams& p, cudaStream_t stream) {
  if (p.n_rows == 0) return cudaSuccess;
  const int threads = row_threads(p.dim);
  if (p.act_type == DType::BF16)
    add_rmsnorm_kernel<<<unsigned(p.n_rows), threads, 0, stream>>>(
        static_cast<const bf16*>(p.x), static_cast<bf16*>(p.y), p.w, static_cast<bf16*>(p.out), p.dim, p.eps);
  else
    add_rmsnorm_kernel<<<unsigned(p.n_rows), threads, 0, stream>>>(
        static_cast<const float*>(p.x), static_cast<float*>(p.y), p.w, static_cast<float*>(p.out), p.dim, p.eps);
  return cudaGetLastError();
}

cudaError_t add(const backend::AddParams& p, cudaStream_t stream) {
  if (p.n == 0) return cudaSuccess;
  if (p.act_type == DType::BF16)
    add_kernel<<<stride_grid(p.n), 256, 0, stream>>>(static_cast<const bf16*>(p.x),
                                                     static_cast<bf16*>(p.y), p.n);
  else
    add_kernel<<<stride_grid(p.n), 256, 0, stream>>>(static_cast<const float*>(p.x),
                                                     static_cast<float*>(p.y), p.n);
  return cudaGetLastError();
}

cudaError_t add_bias(void* y, const float* bias, int64_t m, int64_t n, DType act_type,
                     cudaStream_t stream) {
  if (m * n == 0) return cudaSuccess;
  if (act_type == DType::BF16)
    add_bias_kernel<<<stride_grid(m * n), 256, 0, stream>>>(static_cast<bf16*>(y), bias, m, n);
  else
    add_bias_kernel<<<stride_grid(m * n), 256, 0, stream>>>(static_cast<float*>(y), bias, m, n);
  return cudaGetLastError();
}

cudaError_t bias_out(const float* x, const float* bias, void* y, int64_t m, int64_t n, DType y_type,
                     cudaStream_t stream) {
  if (m * n == 0) return cudaSuccess;
  if (y_type == DType::BF16)
    bias_out_kernel<<<stride_grid(m * n), 256, 0, stream>>>(x, bias, static_cast<bf16*>(y), m, n);
  else
    bias_out_kernel<<<stride_grid(m * n), 256, 0, stream>>>(x, bias, static_cast<float*>(y), m, n);
  return cudaGetLastError();
}

cudaError_t convert(const void* src, DType src_type, void* dst, DType dst_type, int64_t n,
                    cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const unsigned grid = stride_grid(n);
  if (src_type == DType::F32 && dst_type == DType::BF16)
    convert_kernel<<<grid, 256, 0, stream>>>(static_cast<const float*>(src), static_cast<bf16*>(dst), n);
  else if (src_type == DType::BF16 && dst_type == DType::F32)
    convert_kernel<<<grid, 256, 0, stream>>>(static_cast<const bf16*>(src), static_cast<float*>(dst), n);
  else
    return cudaErrorInvalidValue;
  return cudaGetLastError();
}

cudaError_t embed(const backend::EmbedParams& p, cudaStream_t stream) {
  if (p.n_tokens == 0) return cudaSuccess;
  const unsigned grid = unsigned(p.n_tokens);
  const int threads = row_threads(p.dim);
  auto run = [&](auto* out) {
    using T = std::remove_pointer_t<decltype(out)>;
    switch (p.table_type) {
      case DType::BF16:
        embed_kernel<<<grid, threads, 0, stream>>>(p.ids, static_cast<const bf16*>(p.table), out, p.vocab, p.dim);
        break;
      case DType::F16:
        embed_kernel<<<grid, threads, 0, stream>>>(p.ids, static_cast<const __half*>(p.table), out, p.vocab, p.dim);
        break;
      default:
        embed_kernel<<<grid, threads, 0, stream>>>(p.ids, static_cast<const float*>(p.table), out, p.vocab, p.dim);
        break;
    }
    (void)sizeof(T);
  };
  if (p.act_type == DType::BF16)
    run(static_cast<bf16*>(p.out));
  else
    run(static_cast<float*>(p.out));
  return cudaGetLastError();
}

cudaError_t argmax(const backend::ArgmaxParams& p, cudaStream_t stream) {
  const unsigned grid = unsigned(p.n_rows);
  if (p.act_type == DType::BF16)
    argmax_kernel<<<grid, 1024, 0, stream>>>(static_cast<const bf16*>(p.x), p.out, p.n_cols);
  else
    argmax_kernel<<<grid, 1024, 0, stream>>>(static_cast<const float*>(p.x), p.out, p.n_cols);
  return cudaGetLastError();
}

cudaError_t fill_random(const backend::FillRandomParams& p, cudaStream_t stream) {
  if (p.n == 0) return cudaSuccess;
  if (p.type == DType::BF16)
    fill_random_kernel<<<stride_grid(p.n), 256, 0, stream>>>(static_cast<bf16*>(p.dst), p.n, p.scale, p.seed);
  else
    fill_random_kernel<<<stride_grid(p.n), 256, 0, stream>>>(static_cast<float*>(p.dst), p.n, p.scale, p.seed);
  return cudaGetLastError();
}

}  // namespace gsa::cuda
