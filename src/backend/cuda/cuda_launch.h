// Host-side declarations of the CUDA launchers (the .cu files). They take the ops.h parameter
// structs, already validated by CudaBackend (cuda_backend.cpp), plus the stream and any
// workspace, and return the launch's cudaError_t. Plain C++: no fmt or Status here, so nvcc
// compiles the .cu files without the core headers' dependencies.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "backend/ops.h"
#include "backend/ops_sparse.h"

namespace gsa::cuda {

cudaError_t rmsnorm(const backend::RmsNormParams& p, cudaStream_t stream);
cudaError_t rope(const backend::RopeParams& p, float theta_scale, cudaStream_t stream);
cudaError_t swiglu(const backend::SwigluParams& p, cudaStream_t stream);
cudaError_t add(const backend::AddParams& p, cudaStream_t stream);
cudaError_t embed(const backend::EmbedParams& p, cudaStream_t stream);
cudaError_t argmax(const backend::ArgmaxParams& p, cudaStream_t stream);
cudaError_t fill_random(const backend::FillRandomParams& p, cudaStream_t stream);
/// y[m, n] += bias[n] (after the cuBLAS product).
cudaError_t add_bias(void* y, const float* bias, int64_t m, int64_t n, DType act_type,
                     cudaStream_t stream);
/// Converts n elements between f32 and bf16 (for f32 activations against bf16 weights).
cudaError_t convert(const void* src, DType src_type, void* dst, DType dst_type, int64_t n,
                    cudaStream_t stream);

cudaError_t kv_append(const backend::KvAppendParams& p, cudaStream_t stream);
cudaError_t rep_update(const backend::RepUpdateParams& p, cudaStream_t stream);
/// The fused rope(q), rope(k), kv_append, rep_update(full_blocks) for a call in which no two
/// tokens write to one block (RopeAppendParams::one_token_per_seq); needs n_tokens > 0,
/// n_heads % n_kv_heads == 0, n_kv_heads <= 65535 and n_tokens + n_full <= INT32_MAX.
cudaError_t rope_append(const backend::RopeAppendParams& p, float theta_scale, cudaStream_t stream);

/// True when the launcher has a kernel for this head_dim (64 or 128).
bool attention_head_dim_supported(int head_dim);
/// Decode mode (n_tokens == n_seqs) may split each key range into n_splits parts; ws_o
/// [n_tokens * n_heads * n_splits * head_dim] and ws_lse [n_tokens * n_heads * n_splits] floats
/// must then be provided. Prefill mode ignores n_splits.
cudaError_t attention(const backend::AttentionParams& p, int n_splits, float* ws_o, float* ws_lse,
                      cudaStream_t stream);

/// Scores of every (sequence, block) go to ws_scores [n_lists, max_blocks] (blocks past
/// max_blocks count as unscored); score_ctas_per_seq CTAs score each sequence.
cudaError_t block_select(const backend::BlockSelectParams& p, float* ws_scores, int max_blocks,
                         int score_ctas_per_seq, cudaStream_t stream);

}  // namespace gsa::cuda
