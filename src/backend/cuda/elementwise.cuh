// Device code of the row-wise and elementwise ops: RMSNorm, RoPE, SwiGLU, residual add, bias
// add, embedding gather, type conversion and the counter-based random fill. All accumulate in
// f32 and are templated on the element type (float or __nv_bfloat16).
#pragma once

#include "backend/cuda/common.cuh"

namespace gsa::cuda {

/// The sum of v over the CTA (warp sums, then the first warp over them), returned to every
/// thread; sm_part holds 32 floats. Both norm kernels reduce through it, so they agree bit for bit.
__device__ __forceinline__ float block_sum(float v, float* sm_part) {
  v = warp_sum(v);
  if ((threadIdx.x & 31) == 0) sm_part[threadIdx.x >> 5] = v;
  __syncthreads();
  if (threadIdx.x < 32) {
    float w = threadIdx.x < (blockDim.x + 31) / 32 ? sm_part[threadIdx.x] : 0.0f;
    w = warp_sum(w);
    if (threadIdx.x == 0) sm_part[0] = w;
  }
  __syncthreads();
  return sm_part[0];
}

/// One CTA per row: y = x / sqrt(mean(x^2) + eps) * w. In place allowed.
template <typename T>
__global__ void rmsnorm_kernel(const T* x,         // [n_rows, dim]
                               const float* __restrict__ w,  // [dim]
                               T* y,               // [n_rows, dim]
                               int64_t dim, float eps) {
  __shared__ float sm_part[32];
  const T* xr = x + int64_t(blockIdx.x) * dim;
  T* yr = y + int64_t(blockIdx.x) * dim;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    const float v = load_f32(xr, i);
    ss += v * v;
  }
  const float inv = rsqrtf(block_sum(ss, sm_part) / float(dim) + eps);
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) store_f32(yr, i, load_f32(xr, i) * inv * w[i]);
}

/// Fills sm_cs [half, 2] with (cos, sin) of token position `pos`: angle_i = pos * theta_scale^i by
/// repeated float multiplication, as the CPU reference does. Called by every thread of the CTA
/// (it synchronizes the CTA twice).
__device__ __forceinline__ void rope_cos_sin(float* sm_cs, int32_t pos, int half, float theta_scale) {
  if (threadIdx.x == 0) {
    float angle = float(pos);
    for (int i = 0; i < half; ++i) {
      sm_cs[2 * i] = angle;
      angle *= theta_scale;
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    const float angle = sm_cs[2 * i];
    sm_cs[2 * i] = cosf(angle);
    sm_cs[2 * i + 1] = sinf(angle);
  }
  __syncthreads();
}

/// Rotates the pair (a[0], a[stride]) by (c, s). Explicitly rounded operations (no FMA
/// contraction), so rope and the fused rope_append give the same bits, as does the CPU's
/// uncontracted x0 * c - x1 * s.
template <typename T>
__device__ __forceinline__ void rope_pair(T* a, int stride, float c, float s) {
  const float x0 = load_f32(a, 0), x1 = load_f32(a, stride);
  store_f32(a, 0, __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s)));
  store_f32(a, stride, __fadd_rn(__fmul_rn(x0, s), __fmul_rn(x1, c)));
}

/// One CTA per token. Angles follow the CPU reference's float recurrence (angle_i = pos *
/// theta_scale^i by repeated multiplication), computed once per token into shared memory.
template <typename T>
__global__ void rope_kernel(T* x,                          // [n_tokens, n_heads, head_dim]
                            const int32_t* __restrict__ pos,  // [n_tokens]
                            int n_heads, int head_dim, int rot_dim, float theta_scale, bool neox) {
  extern __shared__ float sm_cs[];  // [rot_dim / 2, 2] (cos, sin)
  const int half = rot_dim / 2;
  const int64_t tok = blockIdx.x;
  rope_cos_sin(sm_cs, pos[tok], half, theta_scale);
  const int stride = neox ? half : 1;
  for (int idx = threadIdx.x; idx < n_heads * half; idx += blockDim.x) {
    const int h = idx / half, i = idx % half;
    rope_pair(x + (tok * n_heads + h) * head_dim + (neox ? i : 2 * i), stride, sm_cs[2 * i],
              sm_cs[2 * i + 1]);
  }
}

template <typename T>
__global__ void swiglu_kernel(const T* __restrict__ gate_up,  // [n_rows, 2 * dim]
                              T* __restrict__ out,            // [n_rows, dim]
                              int64_t n_rows, int64_t dim) {
  const int64_t n = n_rows * dim;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / dim, c = i % dim;
    const float gt = load_f32(gate_up, r * 2 * dim + c);
    const float up = load_f32(gate_up, r * 2 * dim + dim + c);
    store_f32(out, i, gt / (1.0f + __expf(-gt)) * up);
  }
}

template <typename T>
__global__ void add_kernel(const T* x,  // [n]
                           T* y,        // [n]
                           int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    store_f32(y, i, load_f32(y, i) + load_f32(x, i));
}

/// One CTA per row: y += x, then out = y / sqrt(mean(y^2) + eps) * w from the stored (rounded)
/// y, with rmsnorm_kernel's summation order (block_sum), so the result equals add_kernel then
/// rmsnorm_kernel.
/// Each thread reads back only the elements it wrote.
template <typename T>
__global__ void add_rmsnorm_kernel(const T* x, T* y, const float* __restrict__ w, T* out, int64_t dim,
                                   float eps) {
  __shared__ float sm_part[32];
  const T* xr = x + int64_t(blockIdx.x) * dim;
  T* yr = y + int64_t(blockIdx.x) * dim;
  T* outr = out + int64_t(blockIdx.x) * dim;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    store_f32(yr, i, load_f32(yr, i) + load_f32(xr, i));
    const float v = load_f32(yr, i);
    ss += v * v;
  }
  const float inv = rsqrtf(block_sum(ss, sm_part) / float(dim) + eps);
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) store_f32(outr, i, load_f32(yr, i) * inv * w[i]);
}

template <typename T>
__global__ void add_bias_kernel(T* y,                           // [m, n]
                                const float* __restrict__ bias,  // [n]
                                int64_t m, int64_t n) {
  const int64_t total = m * n;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x)
    store_f32(y, i, load_f32(y, i) + bias[i % n]);
}

/// y = x + bias (x f32, y bf16 or f32): a GEMM's f32 output, rounded once with its bias.
template <typename T>
__global__ void bias_out_kernel(const float* __restrict__ x,     // [m, n]
                                const float* __restrict__ bias,  // [n]
                                T* __restrict__ y,               // [m, n]
                                int64_t m, int64_t n) {
  const int64_t total = m * n;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x)
    store_f32(y, i, x[i] + bias[i % n]);
}

template <typename S, typename D>
__global__ void convert_kernel(const S* __restrict__ src, D* __restrict__ dst, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    store_f32(dst, i, load_f32(src, i));
}

/// One CTA per token; ids outside [0, vocab) give a zero row (the host validates ids it owns).
template <typename TT, typename T>
__global__ void embed_kernel(const int32_t* __restrict__ ids,  // [n_tokens]
                             const TT* __restrict__ table,      // [vocab, dim]
                             T* __restrict__ out,               // [n_tokens, dim]
                             int64_t vocab, int64_t dim) {
  const int64_t tok = blockIdx.x;
  const int64_t id = ids[tok];
  const bool ok = id >= 0 && id < vocab;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x)
    store_f32(out, tok * dim + i, ok ? load_f32(table, id * dim + i) : 0.0f);
}

/// (value, column) pairs ordered for argmax: larger value first, then lower column; NaN loses.
__device__ __forceinline__ bool argmax_better(float v, int64_t c, float bv, int64_t bc) {
  if (v != v) return false;
  if (bc < 0 || bv != bv) return true;
  return v > bv || (v == bv && c < bc);
}

/// One CTA (1024 threads) per row: strided scan, then warp and block reductions.
template <typename T>
__global__ void argmax_kernel(const T* __restrict__ x, int32_t* __restrict__ out, int64_t n_cols) {
  __shared__ float sm_v[32];
  __shared__ int64_t sm_c[32];
  const T* row = x + int64_t(blockIdx.x) * n_cols;
  float bv = 0.0f;
  int64_t bc = -1;
  for (int64_t c = threadIdx.x; c < n_cols; c += blockDim.x) {
    const float v = load_f32(row, c);
    if (argmax_better(v, c, bv, bc)) { bv = v; bc = c; }
  }
  for (int off = 16; off > 0; off >>= 1) {
    const float ov = __shfl_down_sync(0xffffffffu, bv, off);
    const int64_t oc = __shfl_down_sync(0xffffffffu, bc, off);
    if (oc >= 0 && argmax_better(ov, oc, bv, bc)) { bv = ov; bc = oc; }
  }
  if ((threadIdx.x & 31) == 0) { sm_v[threadIdx.x >> 5] = bv; sm_c[threadIdx.x >> 5] = bc; }
  __syncthreads();
  if (threadIdx.x < 32) {
    const bool has = threadIdx.x < (blockDim.x + 31) / 32;
    bv = has ? sm_v[threadIdx.x] : 0.0f;
    bc = has ? sm_c[threadIdx.x] : -1;
    for (int off = 16; off > 0; off >>= 1) {
      const float ov = __shfl_down_sync(0xffffffffu, bv, off);
      const int64_t oc = __shfl_down_sync(0xffffffffu, bc, off);
      if (oc >= 0 && argmax_better(ov, oc, bv, bc)) { bv = ov; bc = oc; }
    }
    if (threadIdx.x == 0) out[blockIdx.x] = int32_t(bc < 0 ? 0 : bc);
  }
}

/// Same generator as backend::fill_random_value (ops.h), bit for bit.
__device__ __forceinline__ float fill_random_value_dev(uint64_t seed, uint64_t i) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ull + i + 1;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return float(int64_t(z >> 40) - (int64_t(1) << 23)) * (1.0f / float(1 << 23));
}

template <typename T>
__global__ void fill_random_kernel(T* __restrict__ dst,  // [n]
                                   int64_t n, float scale, uint64_t seed) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    store_f32(dst, i, fill_random_value_dev(seed, uint64_t(i)) * scale);
}

}  // namespace gsa::cuda
