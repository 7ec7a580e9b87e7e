// Launchers of kv_append and rep_update (kv.cuh). Parameters were validated by CudaBackend;
// the hash kernel's shared-memory limit is raised here once per instantiation.
#include <algorithm>

#include "backend/cuda/cuda_launch.h"
#include "backend/cuda/kv.cuh"

namespace gsa::cuda {
namespace {
using bf16 = __nv_bfloat16;
}  // namespace

cudaError_t kv_append(const backend::KvAppendParams& p, cudaStream_t stream) {
  const int64_t n = p.n_tokens * p.n_kv_heads * p.head_dim;
  if (n == 0) return cudaSuccess;
  const unsigned grid = unsigned(std::clamp<int64_t>((n + 255) / 256, 1, 132 * 16));
  auto run = [&](auto* k, auto* cache) {
    using A = std::remove_const_t<std::remove_pointer_t<decltype(k)>>;
    using K = std::remove_pointer_t<decltype(cache)>;
    kv_append_kernel<A, K><<<grid, 256, 0, stream>>>(
        k, static_cast<const A*>(p.v), cache, static_cast<K*>(p.v_cache), p.slot_mapping,
        p.n_tokens, p.n_kv_heads, p.head_dim, p.block_size, p.n_blocks);
  };
  const bool a16 = p.act_type == DType::BF16, k16 = p.kv_type == DType::BF16;
  if (a16 && k16) run(static_cast<const bf16*>(p.k), static_cast<bf16*>(p.k_cache));
  else if (a16) run(static_cast<const bf16*>(p.k), static_cast<float*>(p.k_cache));
  else if (k16) run(static_cast<const float*>(p.k), static_cast<bf16*>(p.k_cache));
  else run(static_cast<const float*>(p.k), static_cast<float*>(p.k_cache));
  return cudaGetLastError();
}

cudaError_t rep_update(const backend::RepUpdateParams& p, cudaStream_t stream) {
  if (p.n_update == 0) return cudaSuccess;
  const dim3 grid(unsigned(p.n_update), unsigned(p.n_kv_heads));
  const bool k16 = p.kv_type == DType::BF16;
  if (p.kind == backend::RepKind::Quant) {
    if (k16)
      rep_update_quant_kernel<<<grid, 256, 0, stream>>>(static_cast<const bf16*>(p.k_cache),
          static_cast<float*>(p.reps), p.blocks, p.n_kv_heads, p.head_dim, p.block_size, p.n_blocks);
    else
      rep_update_quant_kernel<<<grid, 256, 0, stream>>>(static_cast<const float*>(p.k_cache),
          static_cast<float*>(p.reps), p.blocks, p.n_kv_heads, p.head_dim, p.block_size, p.n_blocks);
    return cudaGetLastError();
  }
  if (p.kind != backend::RepKind::Hash) {
    const bool minmax = p.kind == backend::RepKind::MinMax;
    const int threads = std::min(256, (p.head_dim + 31) / 32 * 32);
    const int boxes = backend::rep_boxes(p.kind, p.block_size, p.sub_block);
    if (k16)
      rep_update_box_kernel<<<grid, threads, 0, stream>>>(static_cast<const bf16*>(p.k_cache),
          static_cast<float*>(p.reps), p.blocks, p.n_kv_heads, p.head_dim, p.block_size, p.n_blocks, minmax, boxes);
    else
      rep_update_box_kernel<<<grid, threads, 0, stream>>>(static_cast<const float*>(p.k_cache),
          static_cast<float*>(p.reps), p.blocks, p.n_kv_heads, p.head_dim, p.block_size, p.n_blocks, minmax, boxes);
    return cudaGetLastError();
  }
  const size_t smem = sizeof(float) * size_t(p.block_size) * size_t(p.head_dim);
  cudaError_t err;
  if (k16) {
    err = cudaFuncSetAttribute(rep_update_hash_kernel<bf16>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
    if (err != cudaSuccess) return err;
    rep_update_hash_kernel<<<grid, 256, smem, stream>>>(static_cast<const bf16*>(p.k_cache),
        static_cast<uint32_t*>(p.reps), p.blocks, p.hash_w, p.n_kv_heads, p.head_dim, p.block_size, p.n_blocks);
  } else {
    err = cudaFuncSetAttribute(rep_update_hash_kernel<float>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
    if (err != cudaSuccess) return err;
    rep_update_hash_kernel<<<grid, 256, smem, stream>>>(static_cast<const float*>(p.k_cache),
        static_cast<uint32_t*>(p.reps), p.blocks, p.hash_w, p.n_kv_heads, p.head_dim, p.block_size, p.n_blocks);
  }
  return cudaGetLastError();
}

}  // namespace gsa::cuda
