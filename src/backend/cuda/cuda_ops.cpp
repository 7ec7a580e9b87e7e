// CudaBackend, part 2: the ops. Each checks its parameter struct (shapes, types, pointers;
// device-resident indices cannot be read here, the kernels bounds-check them against n_blocks),
// refuses what the kernels do not support with Unsupported, and launches on the compute
// stream. Matmuls go to cuBLAS (bf16 in, f32 accumulate), except bf16-weight matmuls of at most
// kSmallGemmMaxM rows, which go to the small-m kernel (gemm_small.cu) when it takes them.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/gemm_tuner.h"
#include "backend/cuda/cuda_launch.h"

namespace gsa::backend {

namespace {

bool act_ok(DType t) { return t == DType::F32 || t == DType::BF16; }

Status check_act(const char* op, DType t) {
  if (!act_ok(t)) return unsupported("cuda {}: activations must be f32 or bf16, got dtype {}", op, int(t));
  return Status::ok();
}

// Largest element count the grid-stride kernels index (int64 everywhere; this only guards
// products of untrusted shapes against overflow).
constexpr int64_t kMaxElems = int64_t(1) << 46;

static_assert(CudaBackend::kSmallGemmMaxM <= cuda::kGemmSmallMaxM, "the small-m kernel takes m <= 32");

bool shape_ok(int64_t a, int64_t b) { return a >= 0 && b >= 0 && (a == 0 || b <= kMaxElems / a); }

// Parameter checks shared by each op and by the fused rope_append (which runs all of them
// before launching anything).
Status check_rope(const RopeParams& p) {
  GSA_RETURN_IF_ERROR(check_act("rope", p.act_type));
  if (p.n_tokens < 0 || p.n_tokens > INT32_MAX || p.n_heads <= 0 || p.head_dim <= 0)
    return invalid_argument("rope: bad shape n_tokens={} n_heads={} head_dim={}", p.n_tokens,
                            p.n_heads, p.head_dim);
  if (p.rot_dim <= 0 || p.rot_dim > p.head_dim || p.rot_dim % 2 != 0)
    return invalid_argument("rope: rot_dim {} must be even and in (0, head_dim={}]", p.rot_dim, p.head_dim);
  if (!(p.theta > 0.0f) || !std::isfinite(p.theta)) return invalid_argument("rope: bad theta {}", p.theta);
  if (p.n_tokens > 0 && (!p.x || !p.pos)) return invalid_argument("rope: null pointer");
  return Status::ok();
}

// Same float expression as the CPU reference, so both start the angle recurrence identically.
float rope_theta_scale(const RopeParams& p) { return std::pow(p.theta, -2.0f / float(p.rot_dim)); }

Status check_kv_append(const KvAppendParams& p) {
  GSA_RETURN_IF_ERROR(check_act("kv_append", p.act_type));
  if (!act_ok(p.kv_type)) return unsupported("cuda kv_append: kv_type must be f32 or bf16");
  if (p.n_tokens < 0 || p.n_kv_heads <= 0 || p.head_dim <= 0 || p.block_size <= 0 || p.n_blocks < 0 ||
      !shape_ok(p.n_tokens, int64_t(p.n_kv_heads) * p.head_dim))
    return invalid_argument("kv_append: bad shape n_tokens={} n_kv_heads={} head_dim={} block_size={} n_blocks={}",
                            p.n_tokens, p.n_kv_heads, p.head_dim, p.block_size, p.n_blocks);
  if (p.n_tokens > 0 && (!p.k || !p.v || !p.k_cache || !p.v_cache || !p.slot_mapping))
    return invalid_argument("kv_append: null pointer");
  return Status::ok();
}

Status check_rep_update(const RepUpdateParams& p) {
  if (!act_ok(p.kv_type)) return unsupported("cuda rep_update: kv_type must be f32 or bf16");
  if (p.n_update < 0 || p.n_kv_heads <= 0 || p.head_dim <= 0 || p.block_size <= 0 || p.n_blocks < 0)
    return invalid_argument("rep_update: bad shape n_update={} n_kv_heads={} head_dim={} block_size={}",
                            p.n_update, p.n_kv_heads, p.head_dim, p.block_size);
  if (p.n_kv_heads > 65535) return unsupported("cuda rep_update: {} kv heads", p.n_kv_heads);
  if (p.kind != RepKind::Mean && p.kind != RepKind::MinMax && p.kind != RepKind::Hash &&
      p.kind != RepKind::Quant)
    return invalid_argument("rep_update: unknown representation kind {}", int(p.kind));
  if (p.kind == RepKind::Quant && p.head_dim % 16 != 0)
    return invalid_argument("rep_update: quant needs head_dim % 16 == 0, got {}", p.head_dim);
  if (p.kind == RepKind::Hash) {
    if (p.head_dim % 32 != 0)
      return invalid_argument("rep_update: hash needs head_dim % 32 == 0, got {}", p.head_dim);
    if (!p.hash_w) return invalid_argument("rep_update: hash needs hash_w");
    if (int64_t(p.block_size) * p.head_dim * 4 > 200 * 1024)
      return unsupported("cuda rep_update: hash of block_size {} x head_dim {} exceeds shared memory",
                         p.block_size, p.head_dim);
  }
  if (p.sub_block < 0 || (p.sub_block > 0 && p.block_size % p.sub_block != 0))
    return invalid_argument("rep_update: sub_block {} does not divide block_size {}", p.sub_block, p.block_size);
  if (p.n_update > 0 && (!p.k_cache || !p.reps || !p.blocks))
    return invalid_argument("rep_update: null k_cache, reps or blocks");
  return Status::ok();
}

// Everything of the small-m kernel's arguments but the tensors: shape, workspaces, tuning.
cuda::GemmSmallArgs small_gemm_args_impl(int64_t m, int64_t n, int64_t k, float* ws, int64_t ws_floats,
                                         int* counters, int64_t n_counters, int sm_count,
                                         int warps_k, int splits) {
  cuda::GemmSmallArgs a;
  a.m = m, a.n = n, a.k = k;
  a.ws = ws;
  a.ws_floats = ws_floats;
  a.counters = counters;
  a.n_counters = n_counters;
  a.sm_count = sm_count;
  a.force_warps_k = warps_k;
  a.force_splits = splits;
  return a;
}

}  // namespace

Status CudaBackend::matmul(const MatmulParams& p) {
  GSA_RETURN_IF_ERROR(check_act("matmul", p.act_type));
  if (p.m < 0 || p.n <= 0 || p.k <= 0 || p.m > INT32_MAX || p.n > INT32_MAX || p.k > INT32_MAX)
    return invalid_argument("matmul: bad shape m={} n={} k={}", p.m, p.n, p.k);
  if (p.m == 0) return Status::ok();
  if (!p.x || !p.w || !p.y) return invalid_argument("matmul: null pointer");
  if (p.w_type != DType::BF16 && p.w_type != DType::F32)
    return unsupported("cuda matmul: weights must be bf16 or f32, got dtype {}", int(p.w_type));
  if (p.w_type == DType::F32 && p.act_type != DType::F32)
    return unsupported("cuda matmul: f32 weights need f32 activations");
  auto* h = static_cast<cublasHandle_t>(cublas_);
  const int m = int(p.m), n = int(p.n), k = int(p.k);
  const float alpha = 1.0f, beta = 0.0f;
  const DType y_type = p.y_f32 ? DType::F32 : p.act_type;
  // Row-major y[m, n] = x[m, k] . w[n, k]^T is column-major y^T[n, m] = w^T' . x^T.
  if (p.w_type == DType::F32) {
    GSA_CUBLAS_RETURN_IF_ERROR(cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, n, m, k, &alpha,
                                           static_cast<const float*>(p.w), k,
                                           static_cast<const float*>(p.x), k, &beta,
                                           static_cast<float*>(p.y), n));
  } else {
    const void* x = p.x;
    if (p.act_type == DType::F32) {
      // f32 activations against bf16 weights: x is rounded to bf16 once, y stays f32.
      GSA_RETURN_IF_ERROR(ensure_convert_ws(size_t(p.m) * size_t(p.k) * 2));
      GSA_CUDA_RETURN_IF_ERROR(cuda::convert(p.x, DType::F32, convert_ws_, DType::BF16, p.m * p.k, stream_));
      x = convert_ws_;
    }
    // Decode-sized m: the weight-streaming kernel, bias fused (cuBLAS below otherwise).
    if (small_gemm_ && p.m <= kSmallGemmMaxM && cuda::gemm_small_supported(x, p.w, p.m, p.n, p.k)) {
      cuda::GemmSmallArgs a = small_gemm_args_impl(p.m, p.n, p.k, gemm_ws_, kGemmWsFloats, gemm_counters_,
                                                    kGemmCounters, sm_count_, small_gemm_warps_k_,
                                                    small_gemm_splits_);
      a.x = x;
      a.w = p.w;
      a.bias = p.bias;
      a.y = p.y;
      a.y_type = y_type;
      GSA_CUDA_RETURN_IF_ERROR(cuda::gemm_small(a, stream_));
      return Status::ok();
    }
    // With a bias and a bf16 output, the product stays f32 until the bias is added, so the
    // output is rounded once (as the CPU computes it), not once before and once after.
    const bool f32_then_bias = p.bias && y_type == DType::BF16;
    if (f32_then_bias) GSA_RETURN_IF_ERROR(grow(&bias_ws_, &bias_ws_floats_, size_t(p.m) * size_t(p.n)));
    void* out = f32_then_bias ? static_cast<void*>(bias_ws_) : p.y;
    const cudaDataType_t ytype = y_type == DType::F32 || f32_then_bias ? CUDA_R_32F : CUDA_R_16BF;
    if (tuner_ && p.m <= kTunedGemmMaxM) {
      GSA_RETURN_IF_ERROR(tuner_->matmul(x, p.w, out, m, n, k, ytype, stream_));
    } else {
      GSA_CUBLAS_RETURN_IF_ERROR(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, n, m, k, &alpha, p.w,
                                            CUDA_R_16BF, k, x, CUDA_R_16BF, k, &beta, out, ytype, n,
                                            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    }
    if (f32_then_bias) {
      GSA_CUDA_RETURN_IF_ERROR(cuda::bias_out(bias_ws_, p.bias, p.y, p.m, p.n, y_type, stream_));
      return Status::ok();
    }
  }
  if (p.bias) GSA_CUDA_RETURN_IF_ERROR(cuda::add_bias(p.y, p.bias, p.m, p.n, y_type, stream_));
  return Status::ok();
}

void CudaBackend::small_gemm_plan(int64_t m, int64_t n, int64_t k, int* warps_k, int* splits) const {
  const cuda::GemmSmallPlan plan = cuda::gemm_small_plan(small_gemm_args_impl(
      m, n, k, gemm_ws_, kGemmWsFloats, gemm_counters_, kGemmCounters, sm_count_, small_gemm_warps_k_,
      small_gemm_splits_));
  *warps_k = plan.warps_k;
  *splits = plan.splits;
}

Status CudaBackend::rmsnorm(const RmsNormParams& p) {
  GSA_RETURN_IF_ERROR(check_act("rmsnorm", p.act_type));
  if (p.n_rows < 0 || p.dim <= 0 || p.n_rows > INT32_MAX || !shape_ok(p.n_rows, p.dim))
    return invalid_argument("rmsnorm: bad shape n_rows={} dim={}", p.n_rows, p.dim);
  if (!(p.eps >= 0.0f) || !std::isfinite(p.eps)) return invalid_argument("rmsnorm: bad eps {}", p.eps);
  if (p.n_rows == 0) return Status::ok();
  if (!p.x || !p.w || !p.y) return invalid_argument("rmsnorm: null pointer");
  GSA_CUDA_RETURN_IF_ERROR(cuda::rmsnorm(p, stream_));
  return Status::ok();
}

Status CudaBackend::add_rmsnorm(const AddRmsNormParams& p) {
  GSA_RETURN_IF_ERROR(check_act("add_rmsnorm", p.act_type));
  if (p.n_rows < 0 || p.dim <= 0 || p.n_rows > INT32_MAX || !shape_ok(p.n_rows, p.dim))
    return invalid_argument("add_rmsnorm: bad shape n_rows={} dim={}", p.n_rows, p.dim);
  if (!(p.eps >= 0.0f) || !std::isfinite(p.eps)) return invalid_argument("add_rmsnorm: bad eps {}", p.eps);
  if (p.n_rows == 0) return Status::ok();
  if (!p.x || !p.y || !p.w || !p.out) return invalid_argument("add_rmsnorm: null pointer");
  GSA_CUDA_RETURN_IF_ERROR(cuda::add_rmsnorm(p, stream_));
  return Status::ok();
}

Status CudaBackend::rope(const RopeParams& p) {
  GSA_RETURN_IF_ERROR(check_rope(p));
  if (p.n_tokens == 0) return Status::ok();
  GSA_CUDA_RETURN_IF_ERROR(cuda::rope(p, rope_theta_scale(p), stream_));
  return Status::ok();
}

Status CudaBackend::kv_append(const KvAppendParams& p) {
  GSA_RETURN_IF_ERROR(check_kv_append(p));
  if (p.n_tokens == 0) return Status::ok();
  GSA_CUDA_RETURN_IF_ERROR(cuda::kv_append(p, stream_));
  return Status::ok();
}

Status CudaBackend::attention(const AttentionParams& p) {
  GSA_RETURN_IF_ERROR(check_act("attention", p.act_type));
  if (p.kv_type != DType::BF16) return unsupported("cuda attention: kv_type must be bf16");
  if (p.n_seqs < 0 || p.n_tokens < 0 || p.n_heads <= 0 || p.n_kv_heads <= 0 || p.block_size <= 0 ||
      p.n_blocks < 0 || p.n_tokens > INT32_MAX)
    return invalid_argument("attention: bad shape n_seqs={} n_tokens={} n_heads={} n_kv_heads={} block_size={}",
                            p.n_seqs, p.n_tokens, p.n_heads, p.n_kv_heads, p.block_size);
  if (p.n_heads % p.n_kv_heads != 0)
    return invalid_argument("attention: n_heads {} is not a multiple of n_kv_heads {}", p.n_heads, p.n_kv_heads);
  if (!cuda::attention_head_dim_supported(p.head_dim))
    return unsupported("cuda attention: head_dim {} (supported: 64, 128)", p.head_dim);
  if (p.block_size % 16 != 0)
    return unsupported("cuda attention: block_size {} must be a multiple of 16", p.block_size);
  if (!std::isfinite(p.scale) || p.scale < 0.0f) return invalid_argument("attention: bad scale {}", p.scale);
  if (p.n_tokens == 0) return Status::ok();
  if (p.n_seqs == 0) return invalid_argument("attention: {} query rows but no sequences", p.n_tokens);
  if (!p.q || !p.k_cache || !p.v_cache || !p.out || !p.q_indptr || !p.q_pos || !p.kv_indptr ||
      !p.kv_indices || !p.kv_last_len)
    return invalid_argument("attention: null pointer");
  const int group = p.n_heads / p.n_kv_heads;
  if (p.n_kv_heads > 65535)
    return unsupported("cuda attention: {} kv heads is too many for one launch", p.n_kv_heads);
  int splits = 1;
  if (p.n_tokens == p.n_seqs) {
    splits = attention_splits(int64_t(p.n_seqs) * ((group + 15) / 16) * p.n_kv_heads);
    if (splits > 1) {
      const size_t rows = size_t(p.n_tokens) * size_t(p.n_heads) * size_t(splits);
      GSA_RETURN_IF_ERROR(ensure_attention_ws(rows * size_t(p.head_dim), rows));
    }
  }
  GSA_CUDA_RETURN_IF_ERROR(cuda::attention(p, splits, attn_ws_o_, attn_ws_lse_, stream_));
  return Status::ok();
}

Status CudaBackend::swiglu(const SwigluParams& p) {
  GSA_RETURN_IF_ERROR(check_act("swiglu", p.act_type));
  if (p.n_rows < 0 || p.dim <= 0 || !shape_ok(p.n_rows, 2 * p.dim))
    return invalid_argument("swiglu: bad shape n_rows={} dim={}", p.n_rows, p.dim);
  if (p.n_rows == 0) return Status::ok();
  if (!p.gate_up || !p.out) return invalid_argument("swiglu: null pointer");
  GSA_CUDA_RETURN_IF_ERROR(cuda::swiglu(p, stream_));
  return Status::ok();
}

Status CudaBackend::add(const AddParams& p) {
  GSA_RETURN_IF_ERROR(check_act("add", p.act_type));
  if (p.n < 0 || p.n > kMaxElems) return invalid_argument("add: bad n {}", p.n);
  if (p.n == 0) return Status::ok();
  if (!p.x || !p.y) return invalid_argument("add: null pointer");
  GSA_CUDA_RETURN_IF_ERROR(cuda::add(p, stream_));
  return Status::ok();
}

Status CudaBackend::embed(const EmbedParams& p) {
  GSA_RETURN_IF_ERROR(check_act("embed", p.act_type));
  if (p.table_type != DType::F32 && p.table_type != DType::BF16 && p.table_type != DType::F16)
    return unsupported("cuda embed: table must be f32, f16 or bf16");
  if (p.n_tokens < 0 || p.n_tokens > INT32_MAX || p.vocab <= 0 || p.dim <= 0 || !shape_ok(p.vocab, p.dim))
    return invalid_argument("embed: bad shape n_tokens={} vocab={} dim={}", p.n_tokens, p.vocab, p.dim);
  if (p.n_tokens == 0) return Status::ok();
  if (!p.ids || !p.table || !p.out) return invalid_argument("embed: null pointer");
  GSA_CUDA_RETURN_IF_ERROR(cuda::embed(p, stream_));
  return Status::ok();
}

Status CudaBackend::argmax(const ArgmaxParams& p) {
  GSA_RETURN_IF_ERROR(check_act("argmax", p.act_type));
  if (p.n_rows < 0 || p.n_rows > INT32_MAX || p.n_cols <= 0 || p.n_cols > INT32_MAX)
    return invalid_argument("argmax: bad shape n_rows={} n_cols={}", p.n_rows, p.n_cols);
  if (p.n_rows == 0) return Status::ok();
  if (!p.x || !p.out) return invalid_argument("argmax: null pointer");
  GSA_CUDA_RETURN_IF_ERROR(cuda::argmax(p, stream_));
  return Status::ok();
}

Status CudaBackend::fill_random(const FillRandomParams& p) {
  if (p.type != DType::F32 && p.type != DType::BF16)
    return unsupported("cuda fill_random: type must be f32 or bf16");
  if (p.n < 0 || p.n > kMaxElems) return invalid_argument("fill_random: bad n {}", p.n);
  if (!std::isfinite(p.scale)) return invalid_argument("fill_random: bad scale {}", p.scale);
  if (p.n == 0) return Status::ok();
  if (!p.dst) return invalid_argument("fill_random: null dst");
  GSA_CUDA_RETURN_IF_ERROR(cuda::fill_random(p, stream_));
  return Status::ok();
}

Status CudaBackend::rep_update(const RepUpdateParams& p) {
  GSA_RETURN_IF_ERROR(check_rep_update(p));
  if (p.n_update == 0) return Status::ok();
  GSA_CUDA_RETURN_IF_ERROR(cuda::rep_update(p, stream_));
  return Status::ok();
}

bool CudaBackend::supports_strided_rope_append(const RopeAppendParams& p) const {
  const int64_t ctas = p.n_tokens + (p.reps && p.n_full > 0 ? p.n_full : 0);
  return p.one_token_per_seq && p.n_tokens > 0 && p.n_kv_heads > 0 && p.n_heads % p.n_kv_heads == 0 &&
         p.n_kv_heads <= 65535 && ctas <= INT32_MAX;
}

Status CudaBackend::copy_2d(void* dst, size_t dst_pitch, const void* src, size_t src_pitch,
                            size_t width, size_t rows) {
  if (rows == 0 || width == 0) return Status::ok();
  if (!dst || !src || width > dst_pitch || width > src_pitch)
    return invalid_argument("copy_2d: bad pitch or null pointer");
  GSA_CUDA_RETURN_IF_ERROR(cudaMemcpy2DAsync(dst, dst_pitch, src, src_pitch, width, rows,
                                             cudaMemcpyDeviceToDevice, stream_));
  return Status::ok();
}

Status CudaBackend::rope_append(const RopeAppendParams& p) {
  // Every check of the four ops first, so both paths accept and refuse the same parameters and
  // an error leaves q, k and the caches untouched.
  const RopeAppendSteps s = split_rope_append(p);
  if (p.strided()) {
    if (!supports_strided_rope_append(p))
      return unsupported("cuda rope_append: strided inputs need one token per sequence and whole GQA groups");
    const int64_t dq = int64_t(p.n_heads) * p.head_dim, dk = int64_t(p.n_kv_heads) * p.head_dim;
    if (!p.q_out || p.q_stride < dq || p.k_stride < dk || p.v_stride < dk)
      return invalid_argument("rope_append: strided inputs need q_out and strides >= the rows ({}, {}, {})",
                              p.q_stride, p.k_stride, p.v_stride);
  }
  GSA_RETURN_IF_ERROR(check_rope(s.rope_q));
  GSA_RETURN_IF_ERROR(check_rope(s.rope_k));
  GSA_RETURN_IF_ERROR(check_kv_append(s.append));
  if (s.update) GSA_RETURN_IF_ERROR(check_rep_update(s.rep));
  // The fused kernel: CTA (t, h) for token t and kv head h, plus one CTA row per listed block.
  const bool fused = supports_strided_rope_append(p);
  if (!fused) {
    GSA_RETURN_IF_ERROR(rope(s.rope_q));
    GSA_RETURN_IF_ERROR(rope(s.rope_k));
    GSA_RETURN_IF_ERROR(kv_append(s.append));
    if (s.update) GSA_RETURN_IF_ERROR(rep_update(s.rep));
    return Status::ok();
  }
  GSA_CUDA_RETURN_IF_ERROR(cuda::rope_append(p, rope_theta_scale(s.rope_q), stream_));
  return Status::ok();
}

Status CudaBackend::block_select(const BlockSelectParams& p) {
  GSA_RETURN_IF_ERROR(check_act("block_select", p.act_type));
  if (p.n_seqs < 0 || p.n_heads <= 0 || p.n_kv_heads <= 0 || p.head_dim <= 0 || p.block_size <= 0 ||
      p.sink_blocks < 0 || p.local_blocks < 0 || p.n_blocks < 0)
    return invalid_argument("block_select: bad shape n_seqs={} n_heads={} n_kv_heads={} head_dim={} block_size={} sink={} local={}",
                            p.n_seqs, p.n_heads, p.n_kv_heads, p.head_dim, p.block_size,
                            p.sink_blocks, p.local_blocks);
  if (p.n_heads % p.n_kv_heads != 0)
    return invalid_argument("block_select: n_heads {} is not a multiple of n_kv_heads {}", p.n_heads, p.n_kv_heads);
  if (p.kind != RepKind::Mean && p.kind != RepKind::MinMax && p.kind != RepKind::Hash &&
      p.kind != RepKind::Quant)
    return invalid_argument("block_select: unknown representation kind {}", int(p.kind));
  if (p.query_mode != QueryMode::GroupMean && p.query_mode != QueryMode::GroupMax)
    return invalid_argument("block_select: unknown query mode {}", int(p.query_mode));
  if (p.sub_block < 0 || (p.sub_block > 0 && p.block_size % p.sub_block != 0))
    return invalid_argument("block_select: sub_block {} does not divide block_size {}", p.sub_block, p.block_size);
  if (p.head_dim > 128 || p.head_dim % 32 != 0)
    return unsupported("cuda block_select: head_dim {} (supported: multiples of 32 up to 128)", p.head_dim);
  const int n_q = p.query_mode == QueryMode::GroupMax ? p.n_heads : p.n_kv_heads;
  if (n_q > 64) return unsupported("cuda block_select: {} scoring queries per sequence (max 64)", n_q);
  if (p.kind == RepKind::Hash && !p.hash_w) return invalid_argument("block_select: hash needs hash_w");
  if (p.n_seqs > 65535) return unsupported("cuda block_select: {} sequences in one call", p.n_seqs);
  if (p.n_seqs == 0) return Status::ok();
  if (!p.q || !p.reps || !p.block_table_indptr || !p.block_table || !p.seq_len || !p.out_indptr ||
      !p.out_indices || !p.out_last_len)
    return invalid_argument("block_select: null pointer");
  const int64_t n_lists = p.per_kv_head ? int64_t(p.n_seqs) * p.n_kv_heads : p.n_seqs;
  GSA_RETURN_IF_ERROR(ensure_select_ws(n_lists));
  static_assert(kSelectSmemBlocks == cuda::kSelectSmemBlocks);
  // About two CTAs per SM in all: the fused kernel's per list, the scoring kernel's per sequence.
  cuda::SelectPlan plan;
  plan.scores = select_ws_;
  plan.tickets = select_tickets_;
  plan.max_blocks = max_select_blocks_;
  plan.fused = select_fused_ && !p.any_oracle && !p.any_mass;
  plan.quant_mma = select_quant_mma_;
  if ((p.any_oracle || p.any_mass) && !p.rank)
    return invalid_argument("block_select: any_oracle / any_mass need the per-sequence ranks");
  if (p.any_mass && p.kind == RepKind::Hash)
    return invalid_argument("block_select: ranking by mass needs representation mean, minmax or quant");
  if (p.any_oracle) {
    if (!p.k_cache) return invalid_argument("block_select: oracle and rerank need k_cache");
    if (p.rerank_factor < 1)
      return invalid_argument("block_select: rerank_factor {} must be >= 1", p.rerank_factor);
    if (p.kv_type != DType::BF16 || p.act_type != DType::BF16)
      return unsupported("cuda block_select: the oracle reads bf16 queries and K cache");
  }
  if (p.any_oracle || p.any_mass) {
    GSA_RETURN_IF_ERROR(grow(&oracle_ws_, &oracle_ws_floats_,
                             size_t(2) * size_t(p.n_seqs) * size_t(p.n_heads) * size_t(max_select_blocks_)));
    plan.oracle_ws = oracle_ws_;
  }
  const int64_t units = plan.fused ? n_lists : p.n_seqs;
  if (plan.fused) {
    // The CTAs the SMs hold at once (one wave), spread evenly over the lists; where that would
    // leave a quarter of those slots empty (80 lists on 132 SMs: one CTA each), the share of
    // one more CTA per SM (a second, partial wave). Measured on the H100 with
    // bench_cuda_attention --select-only (docs/ACCURACY.md, first section).
    const int64_t slots = int64_t(sm_count_) * select_resident_per_sm_;
    int64_t ctas;
    if (select_ctas_per_sm_ > 0) {
      ctas = int64_t(sm_count_) * select_ctas_per_sm_ / units;
    } else {
      ctas = slots / units;
      if (ctas * units * 4 < slots * 3) ctas = (slots + sm_count_) / units;
    }
    plan.ctas = int(std::clamp<int64_t>(ctas, 1, 65535));
  } else {
    plan.ctas = int(std::min<int64_t>((int64_t(sm_count_) * 2 + units - 1) / units, 65535));
  }
  GSA_CUDA_RETURN_IF_ERROR(cuda::block_select(p, plan, stream_));
  return Status::ok();
}

}  // namespace gsa::backend
