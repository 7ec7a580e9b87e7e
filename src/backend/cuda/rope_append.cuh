// Device code of the fused decode KV write (ops_sparse.h RopeAppendParams): RoPE of q and k, the
// k/v write into the paged cache and, for a block that this write completes, its representation,
// in one launch. It reuses the rope and rep helpers of elementwise.cuh and kv.cuh, so its results
// are bit-identical to the four separate kernels. It assumes that no two tokens of the launch
// write to one block; the launcher's caller guarantees that.
#pragma once

#include "backend/cuda/common.cuh"
#include "backend/cuda/elementwise.cuh"
#include "backend/cuda/kv.cuh"

namespace gsa::cuda {

/// Representation kinds as the kernel sees them (RepKind, plus "no update").
enum RopeAppendRep : int { kRepNone = -1, kRepMean = 0, kRepMinMax = 1, kRepHash = 2, kRepQuant = 3 };

/// The representation of (block b, kv head h) by all threads of the CTA, as rep_update computes it.
template <typename K>
__device__ __forceinline__ void rope_append_rep(const K* k_cache,  // [n_blocks, n_kv_heads, block_size, head_dim]
                                                void* reps,        // [n_blocks, n_kv_heads, rep_bytes]
                                                const float* __restrict__ hash_w,  // [head_dim, head_dim]
                                                int64_t b, int64_t h, int n_kv_heads, int head_dim,
                                                int block_size, int kind, int boxes) {
  const K* kb = k_cache + (b * n_kv_heads + h) * int64_t(block_size) * head_dim;
  if (kind == kRepHash) {
    const int64_t words = int64_t(block_size) * (head_dim / 32);
    block_rep_hash(kb, hash_w, static_cast<uint32_t*>(reps) + (b * n_kv_heads + h) * words, head_dim,
                   block_size);
  } else if (kind == kRepQuant) {
    const int64_t rep_floats = 2 * int64_t(head_dim) + int64_t(block_size) * head_dim / 16;
    block_rep_quant(kb, static_cast<float*>(reps) + (b * n_kv_heads + h) * rep_floats, head_dim, block_size);
  } else {
    const bool minmax = kind == kRepMinMax;
    const int64_t rep_floats = boxes * (minmax ? 2 * head_dim : head_dim);
    block_rep_boxes(kb, static_cast<float*>(reps) + (b * n_kv_heads + h) * rep_floats, head_dim,
                    block_size, boxes, minmax);
  }
}

/// grid (n_tokens + n_full, n_kv_heads) (n_full = 0 when kind == kRepNone), blockDim any.
/// CTA (t < n_tokens, h): ropes the n_heads / n_kv_heads query heads of group h and kv head h of
/// token t, writes k and v to the token's slot (skipped when the slot is outside
/// [0, n_blocks * block_size), as kv_append does) and, when the slot's block is listed in
/// full_blocks, computes that block's representation for head h after a CTA barrier (the other
/// keys of the block were written by earlier launches).
/// CTA (n_tokens + i, h): block full_blocks[i] when no token of this launch writes to it (and it
/// is not listed earlier): its representation from the cache alone.
/// k_cache carries no __restrict__: the representation reads back keys this CTA just wrote.
/// q, k, v rows are q_stride, k_stride, v_stride elements apart; the rotated queries go to q_out
/// ([n_tokens, n_heads, head_dim], which may be q itself when q is contiguous).
template <typename A, typename K>
__global__ void rope_append_kernel(const A* q,                                // [n_tokens, q_stride]
                                   A* q_out,                                  // [n_tokens, n_heads, head_dim]
                                   A* k,                                      // [n_tokens, k_stride]
                                   const A* __restrict__ v,                   // [n_tokens, v_stride]
                                   int64_t q_stride, int64_t k_stride, int64_t v_stride,
                                   const int32_t* __restrict__ pos,           // [n_tokens]
                                   const int32_t* __restrict__ slot_mapping,  // [n_tokens]
                                   K* k_cache,                                // [n_blocks, n_kv_heads, block_size, head_dim]
                                   K* __restrict__ v_cache,                   // same
                                   void* reps,                                // [n_blocks, n_kv_heads, rep_bytes]
                                   const int32_t* __restrict__ full_blocks,   // [n_full]
                                   const float* __restrict__ hash_w,          // [head_dim, head_dim]
                                   int n_tokens, int n_full, int n_heads, int n_kv_heads, int head_dim,
                                   int rot_dim, int block_size, int64_t n_blocks, float theta_scale,
                                   bool neox, int kind, int boxes) {
  extern __shared__ float sm_cs[];  // [rot_dim / 2, 2] (cos, sin)
  const int64_t h = blockIdx.y;
  const int64_t n_slots = n_blocks > 0 ? n_blocks * block_size : INT64_MAX;

  if (int(blockIdx.x) >= n_tokens) {
    const int i = int(blockIdx.x) - n_tokens;
    const int64_t b = full_blocks[i];
    if (b < 0 || (n_blocks > 0 && b >= n_blocks)) return;
    bool covered = false;  // listed earlier, or written (and so updated) by a token CTA
    for (int j = threadIdx.x; j < i; j += blockDim.x) covered |= full_blocks[j] == b;
    for (int t = threadIdx.x; t < n_tokens; t += blockDim.x) {
      const int64_t s = slot_mapping[t];
      covered |= s >= 0 && s < n_slots && s / block_size == b;
    }
    if (__syncthreads_or(covered)) return;
    rope_append_rep(k_cache, reps, hash_w, b, h, n_kv_heads, head_dim, block_size, kind, boxes);
    return;
  }

  const int64_t t = blockIdx.x;
  const int half = rot_dim / 2;
  const int stride = neox ? half : 1;  // distance between the two members of a pair
  rope_cos_sin(sm_cs, pos[t], half, theta_scale);

  // Query heads [h * group, (h + 1) * group) of token t (copied to q_out first when apart).
  const int group = n_heads / n_kv_heads;
  A* qg = q_out + (t * n_heads + h * group) * head_dim;
  const A* qs = q + t * q_stride + h * group * head_dim;
  if (qs != qg) {
    for (int d = threadIdx.x; d < group * head_dim; d += blockDim.x) qg[d] = qs[d];
    __syncthreads();
  }
  for (int idx = threadIdx.x; idx < group * half; idx += blockDim.x) {
    const int g = idx / half, i = idx % half;
    rope_pair(qg + int64_t(g) * head_dim + (neox ? i : 2 * i), stride, sm_cs[2 * i], sm_cs[2 * i + 1]);
  }

  // Key head h: rotated in place, then copied (as stored, i.e. rounded to A) with v to the slot.
  const int64_t slot = slot_mapping[t];
  const bool write = slot >= 0 && slot < n_slots;
  const int64_t b = write ? slot / block_size : -1;
  A* kt = k + t * k_stride + h * head_dim;
  const A* vt = v + t * v_stride + h * head_dim;
  const int64_t dst = write ? ((b * n_kv_heads + h) * block_size + slot % block_size) * head_dim : 0;
  K* kc = k_cache + dst;
  K* vc = v_cache + dst;
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    const int e = neox ? i : 2 * i;
    rope_pair(kt + e, stride, sm_cs[2 * i], sm_cs[2 * i + 1]);
    if (write) {
      store_f32(kc, e, load_f32(kt, e));
      store_f32(kc, e + stride, load_f32(kt, e + stride));
    }
  }
  if (!write) return;
  for (int d = rot_dim + threadIdx.x; d < head_dim; d += blockDim.x) store_f32(kc, d, load_f32(kt, d));
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) store_f32(vc, d, load_f32(vt, d));
  if (kind == kRepNone) return;

  // __syncthreads_or is also the barrier that makes this CTA's key writes visible to all of it.
  bool listed = false;
  for (int j = threadIdx.x; j < n_full; j += blockDim.x) listed |= full_blocks[j] == b;
  if (!__syncthreads_or(listed)) return;
  rope_append_rep(k_cache, reps, hash_w, b, h, n_kv_heads, head_dim, block_size, kind, boxes);
}

}  // namespace gsa::cuda
