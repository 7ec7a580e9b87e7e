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
cudaError_t add_rmsnorm(const backend::AddRmsNormParams& p, cudaStream_t stream);
cudaError_t embed(const backend::EmbedParams& p, cudaStream_t stream);
cudaError_t argmax(const backend::ArgmaxParams& p, cudaStream_t stream);
cudaError_t fill_random(const backend::FillRandomParams& p, cudaStream_t stream);
/// y[m, n] += bias[n] (after the cuBLAS product).
/// y = x + bias with one rounding (x: a GEMM's f32 output).
cudaError_t bias_out(const float* x, const float* bias, void* y, int64_t m, int64_t n, DType y_type,
                     cudaStream_t stream);
cudaError_t add_bias(void* y, const float* bias, int64_t m, int64_t n, DType act_type,
                     cudaStream_t stream);
/// Converts n elements between f32 and bf16 (for f32 activations against bf16 weights).
cudaError_t convert(const void* src, DType src_type, void* dst, DType dst_type, int64_t n,
                    cudaStream_t stream);

/// Small-m GEMM (decode): y[m, n] = x[m, k] . w[n, k]^T (+ bias[n]), x and w bf16, f32
/// accumulation, y bf16 or f32. Reads W once per launch for any m <= kGemmSmallMaxM.
constexpr int64_t kGemmSmallMaxM = 32;
struct GemmSmallArgs {
  const void* x = nullptr;      // [m, k] bf16, 16-byte aligned
  const void* w = nullptr;      // [n, k] bf16, 16-byte aligned
  const float* bias = nullptr;  // [n] or null
  void* y = nullptr;            // [m, n] y_type (bf16 or f32)
  int64_t m = 0, n = 0, k = 0;
  DType y_type = DType::BF16;
  float* ws = nullptr;          // [ws_floats] split-k partials
  int64_t ws_floats = 0;
  int* counters = nullptr;      // [n_counters] zero before the first launch; every launch leaves them zero
  int64_t n_counters = 0;
  int sm_count = 132;
  int force_warps_k = 0;        // tuning: 1, 2 or 4 warps of a CTA along k (0: heuristic)
  int force_splits = 0;         // tuning: CTAs along k (0: heuristic; clamped to what fits)
};
/// How a launch is cut: CTAs of warps_r x warps_k warps over 32 warps_r rows, k in splits parts.
struct GemmSmallPlan {
  int warps_r = 4, warps_k = 1, splits = 1;
  int64_t row_ctas = 0, chunks_per_split = 0;
};
/// True when the kernel takes this problem: 1 <= m <= kGemmSmallMaxM, k % 8 == 0, x and w
/// 16-byte aligned, n and k below 2^30. Otherwise gemm_small returns cudaErrorInvalidValue.
bool gemm_small_supported(const void* x, const void* w, int64_t m, int64_t n, int64_t k);
GemmSmallPlan gemm_small_plan(const GemmSmallArgs& a);
cudaError_t gemm_small(const GemmSmallArgs& a, cudaStream_t stream);

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

/// Lists of at most this many blocks are selected from shared memory by the fused path (the
/// scores take 8 KB next to the staged queries' 33 KB: the 48 KB of static shared memory).
constexpr int kSelectSmemBlocks = 2048;

/// Workspace and plan of one block_select call. Scores go to scores [n_lists, max_blocks]
/// (blocks past max_blocks count as unscored). fused: one launch of `ctas` CTAs per list;
/// tickets [n_lists] must be zero before the call and are zero again after it. Otherwise the
/// two-kernel path with `ctas` scoring CTAs per sequence (tickets unused).
struct SelectPlan {
  float* scores = nullptr;     // [n_lists, max_blocks]
  float* oracle_ws = nullptr;  // [2, n_seqs, n_heads, max_blocks] when p.any_oracle
  uint32_t* tickets = nullptr; // [n_lists]
  int max_blocks = 0;
  int ctas = 1;
  bool fused = true;
  bool quant_mma = true;       // Quant GroupMax scores on the tensor cores
};
cudaError_t block_select(const backend::BlockSelectParams& p, const SelectPlan& plan,
                         cudaStream_t stream);
/// CTAs of the fused selection kernel one SM holds at once (its registers and shared memory).
int select_fused_resident_per_sm();

}  // namespace gsa::cuda
