// CPU reference of the block representation update (ops_sparse.h RepUpdateParams): per listed
// full block and kv head, the mean, the per-dimension min/max box, the per-token sign bits
// of k.W, or the box with every token's 2-bit codes inside it. A pure function of the block's
// keys; it does not decide which blocks are full.
#include <algorithm>
#include <cstring>
#include <vector>

#include "backend/cpu/cpu_kernels.h"

namespace gsa::cpu {
namespace {

using backend::RepKind;
using backend::RepUpdateParams;

constexpr int kMaxHeadDim = 1024;
constexpr int kMaxBlockSize = 4096;

Status check_params(const RepUpdateParams& p) {
  if (p.kv_type != DType::F32) return unsupported("rep_update: cpu supports kv_type f32 only");
  if (p.n_update < 0) return invalid_argument("rep_update: n_update {} < 0", p.n_update);
  if (p.n_kv_heads <= 0 || p.head_dim <= 0 || p.block_size <= 0)
    return invalid_argument("rep_update: n_kv_heads {}, head_dim {}, block_size {} must be > 0",
                            p.n_kv_heads, p.head_dim, p.block_size);
  if (p.head_dim > kMaxHeadDim || p.block_size > kMaxBlockSize)
    return invalid_argument("rep_update: head_dim {} (max {}) or block_size {} (max {}) too large",
                            p.head_dim, kMaxHeadDim, p.block_size, kMaxBlockSize);
  if (p.kind != RepKind::Mean && p.kind != RepKind::MinMax && p.kind != RepKind::Hash &&
      p.kind != RepKind::Quant)
    return invalid_argument("rep_update: unknown representation kind {}", int(p.kind));
  if (p.kind == RepKind::Quant && p.head_dim % 16 != 0)
    return invalid_argument("rep_update: quant needs head_dim % 16 == 0, got {}", p.head_dim);
  if (p.kind == RepKind::Hash) {
    if (p.head_dim % 32 != 0)
      return invalid_argument("rep_update: hash needs head_dim % 32 == 0, got {}", p.head_dim);
    if (!p.hash_w) return invalid_argument("rep_update: hash needs hash_w");
  }
  if (p.sub_block < 0 || (p.sub_block > 0 && p.block_size % p.sub_block != 0))
    return invalid_argument("rep_update: sub_block {} does not divide block_size {}", p.sub_block,
                            p.block_size);
  if (p.n_update == 0) return Status::ok();
  if (!p.k_cache || !p.reps || !p.blocks)
    return invalid_argument("rep_update: null k_cache, reps or blocks");
  for (int i = 0; i < p.n_update; ++i) {
    const int32_t b = p.blocks[i];
    if (b < 0 || (p.n_blocks > 0 && b >= p.n_blocks))
      return invalid_argument("rep_update: blocks[{}] = {} outside [0, {})", i, b,
                              p.n_blocks > 0 ? p.n_blocks : int64_t(INT32_MAX));
  }
  return Status::ok();
}

// rep[d] = mean over tokens of k[t, d]; summed token by token so the inner loop over d
// vectorizes.
void block_mean(const float* k, int block_size, int head_dim, float* rep) {
  std::fill(rep, rep + head_dim, 0.0f);
  for (int t = 0; t < block_size; ++t) {
    const float* kt = k + int64_t(t) * head_dim;
    for (int d = 0; d < head_dim; ++d) rep[d] += kt[d];
  }
  const float inv = 1.0f / float(block_size);
  for (int d = 0; d < head_dim; ++d) rep[d] *= inv;
}

// rep[0, head_dim) = per-dimension min, rep[head_dim, 2 head_dim) = max.
void block_minmax(const float* k, int block_size, int head_dim, float* rep) {
  float* mn = rep;
  float* mx = rep + head_dim;
  std::memcpy(mn, k, sizeof(float) * head_dim);
  std::memcpy(mx, k, sizeof(float) * head_dim);
  for (int t = 1; t < block_size; ++t) {
    const float* kt = k + int64_t(t) * head_dim;
    for (int d = 0; d < head_dim; ++d) {
      mn[d] = std::min(mn[d], kt[d]);
      mx[d] = std::max(mx[d], kt[d]);
    }
  }
}

// The MinMax box of the block, then every token's 2-bit codes inside it (ops_sparse.h Quant).
void block_quant(const float* k, int block_size, int head_dim, uint8_t* rep) {
  float* mn = reinterpret_cast<float*>(rep);
  float* mx = mn + head_dim;
  block_minmax(k, block_size, head_dim, mn);
  uint32_t* codes = reinterpret_cast<uint32_t*>(mx + head_dim);
  const int words = head_dim / 16;
  for (int t = 0; t < block_size; ++t) {
    const float* kt = k + int64_t(t) * head_dim;
    uint32_t* out = codes + int64_t(t) * words;
    for (int w = 0; w < words; ++w) {
      uint32_t bits = 0;
      for (int j = 0; j < 16; ++j) {
        const int d = w * 16 + j;
        bits |= uint32_t(backend::quant_key_code(kt[d], mn[d], mx[d])) << (2 * j);
      }
      out[w] = bits;
    }
  }
}

// Bits of token t: bit d (word d / 32, bit d % 32) = (k_t . W[:, d]) > 0, W row-major
// [head_dim, head_dim]. proj is scratch [head_dim].
void block_hash(const float* __restrict k, int block_size, int head_dim,
                const float* __restrict w, float* __restrict proj, uint32_t* __restrict rep) {
  const int words = head_dim / 32;
  for (int t = 0; t < block_size; ++t) {
    const float* kt = k + int64_t(t) * head_dim;
    std::fill(proj, proj + head_dim, 0.0f);
    for (int i = 0; i < head_dim; ++i) {
      const float ki = kt[i];
      const float* wi = w + int64_t(i) * head_dim;
      for (int d = 0; d < head_dim; ++d) proj[d] += ki * wi[d];
    }
    uint32_t* out = rep + int64_t(t) * words;
    for (int wd = 0; wd < words; ++wd) {
      uint32_t bits = 0;
      for (int j = 0; j < 32; ++j) bits |= uint32_t(proj[wd * 32 + j] > 0.0f) << j;
      out[wd] = bits;
    }
  }
}

}  // namespace

Status rep_update(const RepUpdateParams& p, ThreadPool* pool) {
  GSA_RETURN_IF_ERROR(check_params(p));
  if (p.n_update == 0) return Status::ok();
  const int64_t rep_size = backend::rep_bytes(p.kind, p.head_dim, p.block_size, p.sub_block);
  const int boxes = backend::rep_boxes(p.kind, p.block_size, p.sub_block);
  const int box_tokens = p.block_size / boxes;
  const int box_floats = p.kind == RepKind::MinMax ? 2 * p.head_dim : p.head_dim;
  const int64_t head_elems = int64_t(p.block_size) * p.head_dim;
  const auto* k_cache = static_cast<const float*>(p.k_cache);
  auto* reps = static_cast<uint8_t*>(p.reps);
  const int64_t n_items = int64_t(p.n_update) * p.n_kv_heads;

  auto work = [&](int64_t begin, int64_t end, int) {
    std::vector<float> proj(p.kind == RepKind::Hash ? p.head_dim : 0);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = p.blocks[item / p.n_kv_heads];
      const int64_t h = item % p.n_kv_heads;
      const float* k = k_cache + (b * p.n_kv_heads + h) * head_elems;
      uint8_t* rep = reps + (b * p.n_kv_heads + h) * rep_size;
      switch (p.kind) {
        case RepKind::Mean:
          for (int i = 0; i < boxes; ++i)
            block_mean(k + int64_t(i) * box_tokens * p.head_dim, box_tokens, p.head_dim,
                       reinterpret_cast<float*>(rep) + int64_t(i) * box_floats);
          break;
        case RepKind::MinMax:
          for (int i = 0; i < boxes; ++i)
            block_minmax(k + int64_t(i) * box_tokens * p.head_dim, box_tokens, p.head_dim,
                         reinterpret_cast<float*>(rep) + int64_t(i) * box_floats);
          break;
        case RepKind::Hash:
          block_hash(k, p.block_size, p.head_dim, p.hash_w, proj.data(),
                     reinterpret_cast<uint32_t*>(rep));
          break;
        case RepKind::Quant:
          block_quant(k, p.block_size, p.head_dim, rep);
          break;
      }
    }
  };
  if (pool && n_items > 1) {
    pool->parallel_for(n_items, work);
  } else {
    work(0, n_items, 0);
  }
  return Status::ok();
}

}  // namespace gsa::cpu
