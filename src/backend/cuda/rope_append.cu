// Launcher of the fused rope + kv append + representation update (rope_append.cuh). Parameters
// were validated by CudaBackend::rope_append, which also decided that this launch may be fused.
#include <type_traits>

#include "backend/cuda/cuda_launch.h"
#include "backend/cuda/rope_append.cuh"

namespace gsa::cuda {
namespace {
using bf16 = __nv_bfloat16;
}  // namespace

cudaError_t rope_append(const backend::RopeAppendParams& p, float theta_scale, cudaStream_t stream) {
  if (p.n_tokens == 0) return cudaSuccess;
  const bool update = p.reps != nullptr && p.n_full > 0;
  const int kind = !update ? kRepNone
                   : p.kind == backend::RepKind::Mean ? kRepMean
                   : p.kind == backend::RepKind::MinMax ? kRepMinMax
                   : p.kind == backend::RepKind::Quant ? kRepQuant
                                                        : kRepHash;
  const int n_full = update ? p.n_full : 0;
  const dim3 grid(unsigned(p.n_tokens + n_full), unsigned(p.n_kv_heads));
  // The hash of a completed block is the longest piece of work of the launch (block_size *
  // head_dim / 32 projections of head_dim terms); give it the thread count rep_update uses.
  const int threads = kind == kRepHash || kind == kRepQuant ? 256 : 128;
  const size_t smem = sizeof(float) * size_t(p.rot_dim);
  auto run = [&](auto* q, auto* cache) {
    using A = std::remove_pointer_t<decltype(q)>;
    using K = std::remove_pointer_t<decltype(cache)>;
    const int64_t dq = int64_t(p.n_heads) * p.head_dim, dk = int64_t(p.n_kv_heads) * p.head_dim;
    A* q_out = p.q_out ? static_cast<A*>(p.q_out) : q;
    rope_append_kernel<A, K><<<grid, threads, smem, stream>>>(
        q, q_out, static_cast<A*>(p.k), static_cast<const A*>(p.v), p.q_stride ? p.q_stride : dq,
        p.k_stride ? p.k_stride : dk, p.v_stride ? p.v_stride : dk, p.pos, p.slot_mapping, cache,
        static_cast<K*>(p.v_cache), p.reps, p.full_blocks, p.hash_w, int(p.n_tokens), n_full,
        p.n_heads, p.n_kv_heads, p.head_dim, p.rot_dim, p.block_size, p.n_blocks, theta_scale,
        p.neox, kind, backend::rep_boxes(p.kind, p.block_size, p.sub_block));
  };
  const bool a16 = p.act_type == DType::BF16, k16 = p.kv_type == DType::BF16;
  if (a16 && k16) run(static_cast<bf16*>(p.q), static_cast<bf16*>(p.k_cache));
  else if (a16) run(static_cast<bf16*>(p.q), static_cast<float*>(p.k_cache));
  else if (k16) run(static_cast<float*>(p.q), static_cast<bf16*>(p.k_cache));
  else run(static_cast<float*>(p.q), static_cast<float*>(p.k_cache));
  return cudaGetLastError();
}

}  // namespace gsa::cuda
