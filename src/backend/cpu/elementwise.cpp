// CPU elementwise ops: swiglu, residual add, embedding lookup and the synthetic-weight filler.
// f32 activations only; embedding tables may be f32, f16, bf16 or a GGUF block format
// (DType::Ggml: the requested rows are dequantized). Small inputs run inline: waking the pool
// costs more.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "backend/cpu/cpu_check.h"
#include "backend/cpu/cpu_kernels.h"
#include "core/quant_blocks.h"

namespace gsa::cpu {
namespace {

constexpr int64_t kMinChunkElems = 32768;

}  // namespace

using backend::AddParams;
using backend::ArgmaxParams;
using backend::EmbedParams;
using backend::FillRandomParams;
using backend::SwigluParams;

Status swiglu(const SwigluParams& p, ThreadPool* pool) {
  if (p.act_type != DType::F32) return unsupported("cpu swiglu: activations must be f32");
  if (p.n_rows < 0 || p.dim <= 0)
    return invalid_argument("swiglu: bad shape n_rows={} dim={}", p.n_rows, p.dim);
  if (!product_fits({p.n_rows, 2, p.dim}))
    return invalid_argument("swiglu: shape too large (n_rows={} dim={})", p.n_rows, p.dim);
  if (p.n_rows == 0) return Status::ok();
  if (!p.gate_up || !p.out) return invalid_argument("swiglu: null pointer");
  const float* gu = static_cast<const float*>(p.gate_up);
  float* out = static_cast<float*>(p.out);
  const int64_t dim = p.dim;
  pool->parallel_for(p.n_rows, [&](int64_t b, int64_t e, int) {
    for (int64_t r = b; r < e; ++r) {
      const float* g = gu + r * 2 * dim;
      const float* u = g + dim;
      float* o = out + r * dim;
      for (int64_t i = 0; i < dim; ++i) o[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
    }
  }, std::max<int64_t>(1, kMinChunkElems / dim));
  return Status::ok();
}

Status add(const AddParams& p, ThreadPool* pool) {
  if (p.act_type != DType::F32) return unsupported("cpu add: activations must be f32");
  if (p.n < 0) return invalid_argument("add: negative n {}", p.n);
  if (p.n == 0) return Status::ok();
  if (!p.x || !p.y) return invalid_argument("add: null pointer");
  const float* x = static_cast<const float*>(p.x);
  float* y = static_cast<float*>(p.y);
  pool->parallel_for(p.n, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) y[i] += x[i];
  }, kMinChunkElems);
  return Status::ok();
}

Status embed(const EmbedParams& p, ThreadPool* pool) {
  if (p.act_type != DType::F32) return unsupported("cpu embed: activations must be f32");
  if (p.table_type != DType::F32 && p.table_type != DType::F16 && p.table_type != DType::BF16 &&
      p.table_type != DType::Ggml)
    return unsupported("cpu embed: table must be f32, f16, bf16 or a ggml block format");
  const GgmlTypeTraits* ggml = nullptr;
  if (p.table_type == DType::Ggml) {
    ggml = ggml_type_traits(p.table_ggml);
    if (!ggml || ggml->block_elems == 1 || !ggml_block_dequant_fn(p.table_ggml))
      return unsupported("cpu embed: no block decoder for ggml type {} ({})", p.table_ggml,
                         ggml ? ggml->name : "unknown");
  }
  if (p.n_tokens < 0 || p.vocab <= 0 || p.dim <= 0)
    return invalid_argument("embed: bad shape n_tokens={} vocab={} dim={}", p.n_tokens, p.vocab, p.dim);
  if (!product_fits({std::max(p.n_tokens, p.vocab), p.dim, 4}))
    return invalid_argument("embed: shape too large (n_tokens={} vocab={} dim={})", p.n_tokens, p.vocab, p.dim);
  if (ggml && p.dim % ggml->block_elems != 0)
    return invalid_argument("embed: dim {} is not a multiple of the {} block size {}", p.dim,
                            ggml->name, ggml->block_elems);
  if (p.n_tokens == 0) return Status::ok();
  if (!p.ids || !p.table || !p.out) return invalid_argument("embed: null pointer");
  for (int64_t t = 0; t < p.n_tokens; ++t)
    if (p.ids[t] < 0 || p.ids[t] >= p.vocab)
      return invalid_argument("embed: token id {} at {} outside [0, {})", p.ids[t], t, p.vocab);
  float* out = static_cast<float*>(p.out);
  const int64_t dim = p.dim;
  pool->parallel_for(p.n_tokens, [&](int64_t b, int64_t e, int) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t row = p.ids[t];
      float* o = out + t * dim;
      if (ggml) {
        const int64_t nb = dim / ggml->block_elems;
        const uint8_t* src = static_cast<const uint8_t*>(p.table) + row * nb * ggml->block_bytes;
        ggml_dequantize_blocks(p.table_ggml, src, o, nb);
      } else if (p.table_type == DType::F32) {
        std::memcpy(o, static_cast<const float*>(p.table) + row * dim, size_t(dim) * sizeof(float));
      } else {
        const uint16_t* src = static_cast<const uint16_t*>(p.table) + row * dim;
        if (p.table_type == DType::F16)
          for (int64_t i = 0; i < dim; ++i) o[i] = f16_to_f32(src[i]);
        else
          for (int64_t i = 0; i < dim; ++i) o[i] = bf16_to_f32(src[i]);
      }
    }
  }, std::max<int64_t>(1, kMinChunkElems / dim));
  return Status::ok();
}

Status fill_random(const FillRandomParams& p, ThreadPool* pool) {
  if (p.type != DType::F32 && p.type != DType::BF16)
    return unsupported("cpu fill_random: type must be f32 or bf16");
  if (p.n < 0) return invalid_argument("fill_random: negative n {}", p.n);
  if (!std::isfinite(p.scale)) return invalid_argument("fill_random: bad scale {}", p.scale);
  if (p.n == 0) return Status::ok();
  if (!p.dst) return invalid_argument("fill_random: null dst");
  pool->parallel_for(p.n, [&](int64_t b, int64_t e, int) {
    if (p.type == DType::F32) {
      float* d = static_cast<float*>(p.dst);
      for (int64_t i = b; i < e; ++i) d[i] = backend::fill_random_value(p.seed, uint64_t(i)) * p.scale;
    } else {
      uint16_t* d = static_cast<uint16_t*>(p.dst);
      for (int64_t i = b; i < e; ++i)
        d[i] = f32_to_bf16(backend::fill_random_value(p.seed, uint64_t(i)) * p.scale);
    }
  }, kMinChunkElems);
  return Status::ok();
}

Status argmax(const ArgmaxParams& p, ThreadPool* pool) {
  if (p.act_type != DType::F32) return unsupported("cpu argmax: activations must be f32");
  if (p.n_rows < 0 || p.n_cols <= 0 || p.n_cols > INT32_MAX)
    return invalid_argument("argmax: bad shape n_rows={} n_cols={}", p.n_rows, p.n_cols);
  if (p.n_rows == 0) return Status::ok();
  if (!p.x || !p.out) return invalid_argument("argmax: null pointer");
  const float* x = static_cast<const float*>(p.x);
  auto rows = [&](int64_t r0, int64_t r1, int) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* row = x + r * p.n_cols;
      int64_t best = -1;
      for (int64_t c = 0; c < p.n_cols; ++c)
        if (row[c] == row[c] && (best < 0 || row[c] > row[best])) best = c;
      p.out[r] = int32_t(best < 0 ? 0 : best);
    }
  };
  if (pool) pool->parallel_for(p.n_rows, rows, 1);
  else rows(0, p.n_rows, 0);
  return Status::ok();
}

}  // namespace gsa::cpu
