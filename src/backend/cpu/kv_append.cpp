// CPU KV append: copies each token's k and v rows into its paged cache slot (f32 only). It owns
// no block bookkeeping: slot_mapping comes from the kv layer, and is bounds-checked here when
// the caller passes n_blocks.
#include <algorithm>
#include <cstring>

#include "backend/cpu/cpu_check.h"
#include "backend/cpu/cpu_kernels.h"

namespace gsa::cpu {

using backend::KvAppendParams;

Status kv_append(const KvAppendParams& p, ThreadPool* pool) {
  if (p.act_type != DType::F32 || p.kv_type != DType::F32)
    return unsupported("cpu kv_append: k/v and cache must be f32");
  if (p.n_tokens < 0 || p.n_kv_heads <= 0 || p.head_dim <= 0 || p.block_size <= 0 || p.n_blocks < 0)
    return invalid_argument("kv_append: bad shape n_tokens={} n_kv_heads={} head_dim={} block_size={} n_blocks={}",
                            p.n_tokens, p.n_kv_heads, p.head_dim, p.block_size, p.n_blocks);
  const int64_t max_blocks = p.n_blocks > 0 ? p.n_blocks : int64_t(1) << 31;  // slots are int32
  if (!product_fits({max_blocks, p.n_kv_heads, p.block_size, p.head_dim}) ||
      !product_fits({p.n_tokens, p.n_kv_heads, p.head_dim}))
    return invalid_argument("kv_append: shape too large (n_blocks={} n_tokens={} head_dim={} block_size={})",
                            p.n_blocks, p.n_tokens, p.head_dim, p.block_size);
  if (p.n_tokens == 0) return Status::ok();
  if (!p.k || !p.v || !p.k_cache || !p.v_cache || !p.slot_mapping)
    return invalid_argument("kv_append: null pointer");
  for (int64_t t = 0; t < p.n_tokens; ++t) {
    const int64_t slot = p.slot_mapping[t];
    if (slot < 0 || (p.n_blocks > 0 && slot >= p.n_blocks * p.block_size))
      return invalid_argument("kv_append: slot_mapping[{}] = {} outside [0, {})", t, slot,
                              p.n_blocks * p.block_size);
  }
  const float* k = static_cast<const float*>(p.k);
  const float* v = static_cast<const float*>(p.v);
  float* kc = static_cast<float*>(p.k_cache);
  float* vc = static_cast<float*>(p.v_cache);
  const int64_t hd = p.head_dim, bs = p.block_size, nkv = p.n_kv_heads;
  const size_t row_bytes = size_t(hd) * sizeof(float);
  const int64_t min_tokens = std::max<int64_t>(1, 8192 / (nkv * hd));
  pool->parallel_for(p.n_tokens, [&](int64_t b, int64_t e, int) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t slot = p.slot_mapping[t];
      const int64_t block = slot / bs, off = slot % bs;
      for (int64_t h = 0; h < nkv; ++h) {
        const int64_t dst = ((block * nkv + h) * bs + off) * hd;
        const int64_t src = (t * nkv + h) * hd;
        std::memcpy(kc + dst, k + src, row_bytes);
        std::memcpy(vc + dst, v + src, row_bytes);
      }
    }
  }, min_tokens);
  return Status::ok();
}

}  // namespace gsa::cpu
