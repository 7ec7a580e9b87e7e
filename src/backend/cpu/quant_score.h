// CPU scoring of Quant block representations (ops_sparse.h), for block selection.
#pragma once

#include <cstdint>

namespace gsa::cpu {

/// Largest head_dim the CPU selection scores (checked by block_select).
inline constexpr int kMaxScoreHeadDim = 1024;

/// q.k' of query q (head_dim floats) for every token of one (block, kv head) Quant
/// representation rep, into out [block_size]: base + s * sum_d a8_d c_d as ops_sparse.h defines
/// it, the integer sum exact and the final product rounded before the add (as on CUDA).
/// head_dim % 16 == 0 and <= kMaxScoreHeadDim. a [head_dim] and x [block_size] are scratch.
void quant_token_scores(const float* q, const uint8_t* rep, int block_size, int head_dim, float* a,
                        uint32_t* x, float* out);

/// The result of best = std::max(best, v[t]) over t = 0..n-1 in order from -inf, bit for bit
/// (NaN skipped as std::max skips it; the sign of a zero maximum from the first zero).
float max_in_order(const float* v, int n);

}  // namespace gsa::cpu
