// The CPU kernels, one function per op, each in its own file under cpu/. They are the reference
// every other backend is tested against ("exposed for tests"). Each checks its parameters and
// returns InvalidArgument / Unsupported rather than reading out of bounds.
#pragma once

#include "backend/ops.h"
#include "backend/ops_sparse.h"
#include "core/status.h"
#include "core/thread_pool.h"

namespace gsa::cpu {

Status matmul(const backend::MatmulParams& p, ThreadPool* pool);       // matmul.cpp (BLAS)
/// matmul with w_type == DType::Ggml (matmul_quant.cpp): weights in their GGUF block format,
/// activations quantized to the type's 8-bit vec_dot format. force_scalar picks the portable
/// kernels even where SIMD ones exist (for tests).
Status matmul_ggml(const backend::MatmulParams& p, ThreadPool* pool, bool force_scalar = false);
/// The parameter checks of matmul_ggml (type, k a multiple of the block size, shapes, pointers).
Status matmul_ggml_validate(const backend::MatmulParams& p);
/// True when matmul_ggml has kernels for ggml type id `ggml_type`.
bool matmul_ggml_supported(uint32_t ggml_type);
Status rmsnorm(const backend::RmsNormParams& p, ThreadPool* pool);     // norm.cpp
Status rope(const backend::RopeParams& p, ThreadPool* pool);           // rope.cpp
Status kv_append(const backend::KvAppendParams& p, ThreadPool* pool);  // kv_append.cpp
Status attention(const backend::AttentionParams& p, ThreadPool* pool); // attention.cpp
Status swiglu(const backend::SwigluParams& p, ThreadPool* pool);       // elementwise.cpp
Status add(const backend::AddParams& p, ThreadPool* pool);             // elementwise.cpp
Status embed(const backend::EmbedParams& p, ThreadPool* pool);         // elementwise.cpp
Status argmax(const backend::ArgmaxParams& p, ThreadPool* pool);       // elementwise.cpp
Status fill_random(const backend::FillRandomParams& p, ThreadPool* pool);  // elementwise.cpp
Status rep_update(const backend::RepUpdateParams& p, ThreadPool* pool);     // rep_update.cpp
Status block_select(const backend::BlockSelectParams& p, ThreadPool* pool); // block_select.cpp

}  // namespace gsa::cpu
