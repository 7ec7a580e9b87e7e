// Launcher of paged attention: picks decode mode (one query row per sequence: the cp.async
// pipelined kernel of attention_decode.cuh, split-K over the key range with a combine step) or
// prefill mode (attention.cuh: 16-row tiles over all query rows, causal skipping of later keys) and the head_dim / activation-type instantiation. Parameters are
// validated by CudaBackend before this is called.
#include <cmath>

#include "backend/cuda/attention_decode.cuh"
#include "backend/cuda/cuda_launch.h"

namespace gsa::cuda {
namespace {

template <int D, typename QT>
cudaError_t launch(AttnArgs args, int64_t n_tokens, bool decode, cudaStream_t stream) {
  const int n_kv = args.n_kv_heads;
  if (decode) {
    const bool rows8 = args.group <= 8;
    args.tiles_per_seq = (args.group + (rows8 ? 7 : 15)) / (rows8 ? 8 : 16);
    const dim3 grid(unsigned(args.n_seqs * args.tiles_per_seq), args.n_splits, n_kv);
    const size_t smem = attention_decode_smem(D);
    // Raised once per instantiation (not a stream operation, so graph capture is unaffected).
    static const cudaError_t attr8 =
        cudaFuncSetAttribute(attention_decode_kernel<D, QT, 8>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
    static const cudaError_t attr16 =
        cudaFuncSetAttribute(attention_decode_kernel<D, QT, 16>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
    if (attr8 != cudaSuccess) return attr8;
    if (attr16 != cudaSuccess) return attr16;
    if (rows8)
      attention_decode_kernel<D, QT, 8><<<grid, kDecThreads, smem, stream>>>(args);
    else
      attention_decode_kernel<D, QT, 16><<<grid, kDecThreads, smem, stream>>>(args);
  } else {
    // Upper bound of sum over sequences of ceil(rows * group / 16).
    const int64_t tiles = (n_tokens * args.group + 15) / 16 + args.n_seqs;
    const dim3 grid(unsigned(tiles), 1, n_kv);
    attention_kernel<D, QT, false, 16, 2><<<grid, kAttnThreads, 0, stream>>>(args);
  }
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess || !decode || args.n_splits == 1) return err;
  const int64_t rows = n_tokens * args.n_heads;
  attention_combine_kernel<QT><<<unsigned(rows), D, sizeof(float) * args.n_splits, stream>>>(
      args.ws_o, args.ws_lse, static_cast<QT*>(args.out), args.n_splits, D);
  return cudaGetLastError();
}

}  // namespace

bool attention_head_dim_supported(int head_dim) { return head_dim == 64 || head_dim == 128; }

cudaError_t attention(const backend::AttentionParams& p, int n_splits, float* ws_o, float* ws_lse,
                      cudaStream_t stream) {
  if (p.n_tokens == 0 || p.n_seqs == 0) return cudaSuccess;
  AttnArgs a{};
  a.q = p.q;
  a.k_cache = static_cast<const __nv_bfloat16*>(p.k_cache);
  a.v_cache = static_cast<const __nv_bfloat16*>(p.v_cache);
  a.out = p.out;
  a.q_indptr = p.q_indptr;
  a.q_pos = p.q_pos;
  a.kv_indptr = p.kv_indptr;
  a.kv_indices = p.kv_indices;
  a.kv_last_len = p.kv_last_len;
  a.n_blocks = p.n_blocks;
  a.n_seqs = p.n_seqs;
  a.n_heads = p.n_heads;
  a.n_kv_heads = p.n_kv_heads;
  a.group = p.n_heads / p.n_kv_heads;
  a.block_size = p.block_size;
  a.per_kv_head = p.per_kv_head;
  const float scale = p.scale != 0.0f ? p.scale : 1.0f / std::sqrt(float(p.head_dim));
  a.scale_log2 = scale * kLog2e;
  const bool decode = p.n_tokens == p.n_seqs;
  a.n_splits = decode ? (n_splits < 1 ? 1 : n_splits) : 1;
  a.ws_o = ws_o;
  a.ws_lse = ws_lse;
  const bool bf16 = p.act_type == DType::BF16;
  if (p.head_dim == 64)
    return bf16 ? launch<64, __nv_bfloat16>(a, p.n_tokens, decode, stream)
                : launch<64, float>(a, p.n_tokens, decode, stream);
  return bf16 ? launch<128, __nv_bfloat16>(a, p.n_tokens, decode, stream)
              : launch<128, float>(a, p.n_tokens, decode, stream);
}

}  // namespace gsa::cuda
