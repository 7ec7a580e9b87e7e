// ggml block formats shared by the GGUF reader and the CPU backend: type ids and block layouts,
// per-block dequantization to f32, and quantization of f32 rows to the 8-bit activation formats
// llama.cpp multiplies quantized weights with (Q8_0, Q8_1, Q8_K). Raw bytes in, no file or tensor
// types; callers check sizes (every function here trusts its preconditions).
#pragma once

#include <cstdint>

namespace gsa {

/// ggml type ids, as GGUF files store them (the subset this header names).
namespace ggml_id {
constexpr uint32_t F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9;
constexpr uint32_t Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15;
constexpr uint32_t IQ4_NL = 20, IQ4_XS = 23, BF16 = 30;
}  // namespace ggml_id

/// Elements per block of the legacy formats (Q4_0 ... Q8_1, IQ4_NL) and per K-quant super-block.
constexpr int kGgmlQK = 32;
constexpr int kGgmlQKK = 256;

/// Byte sizes of the blocks the dot-product kernels read (ggml-common.h layouts).
constexpr int64_t kGgmlQ8_0Bytes = 2 + 32;            // { f16 d; i8 qs[32]; }
constexpr int64_t kGgmlQ8_1Bytes = 2 + 2 + 32;        // { f16 d; f16 s; i8 qs[32]; }
constexpr int64_t kGgmlQ8_KBytes = 4 + 256 + 2 * 16;  // { f32 d; i8 qs[256]; i16 bsums[16]; }

/// Name and block layout of one ggml type. Plain element types have block_elems = 1.
struct GgmlTypeTraits {
  uint32_t id;
  const char* name;     // "q4_K", "f32", ...
  int64_t block_elems;  // elements per block
  int64_t block_bytes;  // bytes per block
  bool dequant;         // gguf can convert it to f32
};

/// Traits of type id `type`, or null for ids outside the table (unknown types).
const GgmlTypeTraits* ggml_type_traits(uint32_t type);

/// Converts one block of `type` (block_elems elements) at `block` to f32 at `out`.
using GgmlBlockDequantFn = void (*)(const uint8_t* block, float* out);

/// The block decoder of a block-quantized type (Q4_0 ... Q8_K, IQ4_NL, IQ4_XS); null for plain
/// element types and for block types without a decoder.
GgmlBlockDequantFn ggml_block_dequant_fn(uint32_t type);

/// Dequantizes n_blocks consecutive blocks of `type` (must have a decoder) to f32.
/// src: [n_blocks * block_bytes] bytes; dst: [n_blocks * block_elems] floats.
void ggml_dequantize_blocks(uint32_t type, const uint8_t* src, float* dst, int64_t n_blocks);

/// The activation format llama.cpp quantizes rows to before a dot product with weights of
/// `type`: Q8_0 for Q4_0/Q5_0/Q8_0, Q8_1 for Q4_1/Q5_1, Q8_K for Q4_K/Q5_K/Q6_K; 0 (F32) for
/// types without an integer dot product here.
uint32_t ggml_vec_dot_type(uint32_t type);

/// The 6-bit scale and min of group j (0..7) of a Q4_K / Q5_K super-block, from its 12 packed
/// scale bytes q.
inline void ggml_scale_min_k4(int j, const uint8_t* q, int* sc, int* mn) {
  if (j < 4) {
    *sc = q[j] & 63;
    *mn = q[j + 4] & 63;
  } else {
    *sc = (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4);
    *mn = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

/// Quantizes k floats (k a multiple of 32, finite) to k/32 Q8_0 blocks at y:
/// d = max|x| / 127 (stored as f16), q = round(x / d).
void ggml_quantize_row_q8_0(const float* x, uint8_t* y, int64_t k);
/// As Q8_0, plus s = d * sum(q) (f16) in each block.
void ggml_quantize_row_q8_1(const float* x, uint8_t* y, int64_t k);
/// Quantizes k floats (k a multiple of 256, finite) to k/256 Q8_K blocks: d = -max/127 where
/// max is the value of largest magnitude (f32), q = min(127, round-half-even(x / d)), and the
/// sums of q over each 16 elements.
void ggml_quantize_row_q8_k(const float* x, uint8_t* y, int64_t k);

}  // namespace gsa
