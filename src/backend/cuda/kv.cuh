// Device code of the KV-cache writers: kv_append (tokens into paged slots, converted to the
// cache type) and rep_update (per full block and kv head: mean, min/max box, or per-token sign
// bits of k.W). The summation orders match the CPU reference so Mean and MinMax agree bit for bit.
#pragma once

#include "backend/cuda/common.cuh"

namespace gsa::cuda {

/// One thread per (token, kv head, dim). Slots outside [0, n_blocks * block_size) are skipped
/// (n_blocks <= 0: only negative slots).
template <typename A, typename K>
__global__ void kv_append_kernel(const A* __restrict__ k,             // [n_tokens, n_kv_heads, head_dim]
                                 const A* __restrict__ v,             // [n_tokens, n_kv_heads, head_dim]
                                 K* __restrict__ k_cache,             // [n_blocks, n_kv_heads, block_size, head_dim]
                                 K* __restrict__ v_cache,             // same
                                 const int32_t* __restrict__ slot_mapping,  // [n_tokens]
                                 int64_t n_tokens, int n_kv_heads, int head_dim, int block_size,
                                 int64_t n_blocks) {
  const int64_t row_elems = int64_t(n_kv_heads) * head_dim;
  const int64_t n = n_tokens * row_elems;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = i / row_elems;
    const int64_t rem = i % row_elems;
    const int64_t h = rem / head_dim, d = rem % head_dim;
    const int64_t slot = slot_mapping[t];
    if (slot < 0 || (n_blocks > 0 && slot >= n_blocks * block_size)) continue;
    const int64_t block = slot / block_size, off = slot % block_size;
    const int64_t dst = ((block * n_kv_heads + h) * block_size + off) * head_dim + d;
    store_f32(k_cache, dst, load_f32(k, i));
    store_f32(v_cache, dst, load_f32(v, i));
  }
}

/// Mean or min/max box of one (block, kv head), by all threads of the CTA: one thread per dim,
/// tokens summed in order (the CPU reference's order). kb is read with plain loads, so keys this
/// CTA wrote before a __syncthreads() are seen.
template <typename P>
__device__ __forceinline__ void block_rep_box(const P* kb,  // [block_size, head_dim]
                                              float* rep,   // [head_dim] or [2 * head_dim]
                                              int head_dim, int block_size, bool minmax) {
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
    if (minmax) {
      float mn = load_f32(kb, d), mx = mn;
      for (int t = 1; t < block_size; ++t) {
        const float x = load_f32(kb, int64_t(t) * head_dim + d);
        mn = fminf(mn, x);
        mx = fmaxf(mx, x);
      }
      rep[d] = mn;
      rep[head_dim + d] = mx;
    } else {
      float sum = 0.0f;
      for (int t = 0; t < block_size; ++t) sum = __fadd_rn(sum, load_f32(kb, int64_t(t) * head_dim + d));
      rep[d] = __fmul_rn(sum, 1.0f / float(block_size));
    }
  }
}

/// The representation of one (block, kv head) as `boxes` runs of block_size / boxes tokens, each
/// a mean or min/max box (block_rep_box), stored one after another.
template <typename P>
__device__ __forceinline__ void block_rep_boxes(const P* kb,  // [block_size, head_dim]
                                                float* rep,   // [boxes, head_dim or 2 * head_dim]
                                                int head_dim, int block_size, int boxes, bool minmax) {
  const int tokens = block_size / boxes;
  const int floats = minmax ? 2 * head_dim : head_dim;
  for (int i = 0; i < boxes; ++i)
    block_rep_box(kb + int64_t(i) * tokens * head_dim, rep + int64_t(i) * floats, head_dim, tokens, minmax);
}

/// Quant (ops_sparse.h) of one (block, kv head), by all threads of the CTA (which all call it):
/// the min/max box (block_rep_box), a barrier, then one thread per (token, 16-dim word) writes
/// the token's 2-bit codes with quant_key_code's float operations (no contraction: no FMA in
/// it), so they equal the CPU's for the same keys.
template <typename P>
__device__ __forceinline__ void block_rep_quant(const P* kb,  // [block_size, head_dim]
                                                float* rep,   // [2 * head_dim] box, then codes
                                                int head_dim, int block_size) {
  block_rep_box(kb, rep, head_dim, block_size, true);
  __syncthreads();
  const float* mn = rep;
  const float* mx = rep + head_dim;
  uint32_t* codes = reinterpret_cast<uint32_t*>(rep + 2 * head_dim);
  const int words = head_dim / 16;
  for (int u = threadIdx.x; u < block_size * words; u += blockDim.x) {
    const int t = u / words, w = u % words;
    uint32_t bits = 0;
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      const int d = w * 16 + j;
      const float lo = mn[d], r = __fsub_rn(mx[d], lo);
      int c = 0;
      if (r > 0.0f) {
        const float x = __fmul_rn(__fdiv_rn(__fsub_rn(load_f32(kb, int64_t(t) * head_dim + d), lo), r), 4.0f);
        c = x >= 3.0f ? 3 : x > 0.0f ? int(x) : 0;
      }
      bits |= uint32_t(c) << (2 * j);
    }
    codes[u] = bits;
  }
}

/// Per-token sign bits of k.W for one (block, kv head), by all threads of the CTA: one thread per
/// (token, 32-bit word) projects onto 32 columns of W, i in order, without FMA contraction.
template <typename P>
__device__ __forceinline__ void block_rep_hash(const P* kb,                  // [block_size, head_dim]
                                               const float* __restrict__ w,  // [head_dim, head_dim]
                                               uint32_t* rep,  // [block_size * head_dim / 32]
                                               int head_dim, int block_size) {
  const int words = head_dim / 32;
  for (int u = threadIdx.x; u < block_size * words; u += blockDim.x) {
    const int t = u / words, wd = u % words;
    const P* kt = kb + int64_t(t) * head_dim;
    float proj[32];
#pragma unroll
    for (int j = 0; j < 32; ++j) proj[j] = 0.0f;
    for (int i = 0; i < head_dim; ++i) {
      const float ki = load_f32(kt, i);
      const float* wi = w + int64_t(i) * head_dim + wd * 32;
#pragma unroll
      for (int j = 0; j < 32; ++j) proj[j] = __fadd_rn(proj[j], __fmul_rn(ki, wi[j]));
    }
    uint32_t bits = 0;
#pragma unroll
    for (int j = 0; j < 32; ++j) bits |= uint32_t(proj[j] > 0.0f) << j;
    rep[u] = bits;
  }
}

/// grid (n_update, n_kv_heads); Quant: block_rep_quant.
template <typename K>
__global__ void rep_update_quant_kernel(const K* __restrict__ k_cache,       // [n_blocks, n_kv_heads, block_size, head_dim]
                                        float* reps,  // [n_blocks, n_kv_heads, rep_bytes / 4]; the box is read back
                                        const int32_t* __restrict__ blocks,  // [n_update]
                                        int n_kv_heads, int head_dim, int block_size, int64_t n_blocks) {
  const int64_t b = blocks[blockIdx.x];
  if (b < 0 || (n_blocks > 0 && b >= n_blocks)) return;  // uniform over the CTA
  const int64_t h = blockIdx.y;
  const K* kb = k_cache + (b * n_kv_heads + h) * int64_t(block_size) * head_dim;
  const int64_t rep_floats = 2 * int64_t(head_dim) + int64_t(block_size) * head_dim / 16;
  block_rep_quant(kb, reps + (b * n_kv_heads + h) * rep_floats, head_dim, block_size);
}

/// grid (n_update, n_kv_heads); Mean / MinMax: one thread per dim, tokens in order.
template <typename K>
__global__ void rep_update_box_kernel(const K* __restrict__ k_cache,       // [n_blocks, n_kv_heads, block_size, head_dim]
                                      float* __restrict__ reps,            // [n_blocks, n_kv_heads, rep_floats]
                                      const int32_t* __restrict__ blocks,  // [n_update]
                                      int n_kv_heads, int head_dim, int block_size, int64_t n_blocks,
                                      bool minmax, int boxes) {
  const int64_t b = blocks[blockIdx.x];
  if (b < 0 || (n_blocks > 0 && b >= n_blocks)) return;
  const int64_t h = blockIdx.y;
  const K* kb = k_cache + (b * n_kv_heads + h) * int64_t(block_size) * head_dim;
  const int rep_floats = boxes * (minmax ? 2 * head_dim : head_dim);
  block_rep_boxes(kb, reps + (b * n_kv_heads + h) * rep_floats, head_dim, block_size, boxes, minmax);
}

/// grid (n_update, n_kv_heads); the block's keys are staged in shared memory as f32
/// [block_size, head_dim], then hashed by block_rep_hash.
template <typename K>
__global__ void rep_update_hash_kernel(const K* __restrict__ k_cache,       // [n_blocks, n_kv_heads, block_size, head_dim]
                                       uint32_t* __restrict__ reps,         // [n_blocks, n_kv_heads, block_size * head_dim / 32]
                                       const int32_t* __restrict__ blocks,  // [n_update]
                                       const float* __restrict__ w,         // [head_dim, head_dim]
                                       int n_kv_heads, int head_dim, int block_size, int64_t n_blocks) {
  extern __shared__ float sm_k[];  // [block_size, head_dim]
  const int64_t b = blocks[blockIdx.x];
  if (b < 0 || (n_blocks > 0 && b >= n_blocks)) return;
  const int64_t h = blockIdx.y;
  const int64_t elems = int64_t(block_size) * head_dim;
  const K* kb = k_cache + (b * n_kv_heads + h) * elems;
  for (int64_t i = threadIdx.x; i < elems; i += blockDim.x) sm_k[i] = load_f32(kb, i);
  __syncthreads();
  const int words = head_dim / 32;
  block_rep_hash(static_cast<const float*>(sm_k), w, reps + (b * n_kv_heads + h) * int64_t(block_size) * words,
                 head_dim, block_size);
}

}  // namespace gsa::cuda
