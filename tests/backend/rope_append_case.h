// Batches for the rope_append tests (CPU: default vs the four ops by hand; CUDA: fused vs the
// separate kernels vs the CPU): a paged cache already holding random keys, sequences owning a
// few random physical blocks each, and either one decode token per sequence (some completing
// their block, some not) or a prefill chunk per sequence. Host f32, values never zero.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

#include "backend/ops_sparse.h"
#include "core/dtype.h"

namespace gsa::backend::test {

struct RopeAppendShape {
  int n_seqs = 1;
  int n_heads = 8, n_kv_heads = 8, head_dim = 64, block_size = 16, rot_dim = 64;
};

struct RopeAppendBatch {
  RopeAppendShape shape;
  int64_t n_tokens = 0, n_blocks = 0;
  std::vector<float> q, k, v;              // [n_tokens, n_(kv_)heads, head_dim]
  std::vector<float> k_cache, v_cache;     // [n_blocks, n_kv_heads, block_size, head_dim]
  std::vector<float> hash_w;               // [head_dim, head_dim]
  std::vector<int32_t> pos, slots;         // [n_tokens]
  std::vector<int32_t> full_blocks;        // blocks full after this batch
  int n_completing = 0;                    // tokens that write the last slot of their block
  bool has_unwritten_full = false;         // full_blocks lists a block no token writes
};

/// Uniform in [-1, 1), rounded to bf16 when bf16_exact (so bf16 copies hold the same values),
/// never zero.
inline std::vector<float> rope_append_values(std::mt19937& rng, size_t n, bool bf16_exact) {
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) {
    x = dist(rng);
    if (bf16_exact) x = bf16_to_f32(f32_to_bf16(x));
    if (x == 0.0f) x = 0.5f;
  }
  return v;
}

/// decode: one token per sequence; sequence s completes its block iff (s + salt) % 3 != 0 (so a
/// batch of 2+ sequences has both kinds). unwritten_full (decode only): full_blocks also lists an
/// earlier full block of sequence 0, which no token of the batch writes. prefill: each sequence
/// writes a chunk of 1..2*block_size tokens from a position in [0, block_size).
inline RopeAppendBatch make_rope_append_batch(const RopeAppendShape& sh, std::mt19937& rng, bool prefill,
                                              int salt, bool unwritten_full, bool bf16_exact) {
  RopeAppendBatch b;
  b.shape = sh;
  const int bs = sh.block_size;
  const int per_seq = prefill ? 4 : 3;  // blocks in each sequence's table
  b.n_blocks = int64_t(sh.n_seqs) * per_seq + 3;  // spare blocks nobody may touch
  std::vector<int32_t> perm(size_t(b.n_blocks));
  for (size_t i = 0; i < perm.size(); ++i) perm[i] = int32_t(i);
  std::shuffle(perm.begin(), perm.end(), rng);
  auto table = [&](int s, int j) { return perm[size_t(s) * per_seq + size_t(j)]; };
  auto add_token = [&](int s, int p) {
    b.pos.push_back(p);
    b.slots.push_back(table(s, p / bs) * bs + p % bs);
    if ((p + 1) % bs == 0) {
      b.full_blocks.push_back(table(s, p / bs));
      ++b.n_completing;
    }
  };
  for (int s = 0; s < sh.n_seqs; ++s) {
    if (prefill) {
      const int start = std::uniform_int_distribution<int>(0, bs - 1)(rng);
      const int n = std::uniform_int_distribution<int>(1, 2 * bs)(rng);
      for (int p = start; p < start + n; ++p) add_token(s, p);
    } else {
      const bool complete = (s + salt) % 3 != 0 || bs == 1;
      const int j = std::uniform_int_distribution<int>(1, per_seq - 1)(rng);
      const int off = complete ? bs - 1 : std::uniform_int_distribution<int>(0, bs - 2)(rng);
      add_token(s, j * bs + off);
    }
  }
  if (unwritten_full && !prefill) {
    // Block 0 of sequence 0 is full from earlier forwards; list it in the middle.
    const size_t at = b.full_blocks.size() / 2;
    b.full_blocks.insert(b.full_blocks.begin() + std::ptrdiff_t(at), table(0, 0));
    b.has_unwritten_full = true;
  }
  b.n_tokens = int64_t(b.pos.size());
  const size_t hd = size_t(sh.head_dim);
  b.q = rope_append_values(rng, size_t(b.n_tokens) * sh.n_heads * hd, bf16_exact);
  b.k = rope_append_values(rng, size_t(b.n_tokens) * sh.n_kv_heads * hd, bf16_exact);
  b.v = rope_append_values(rng, size_t(b.n_tokens) * sh.n_kv_heads * hd, bf16_exact);
  const size_t cache = size_t(b.n_blocks) * sh.n_kv_heads * size_t(bs) * hd;
  b.k_cache = rope_append_values(rng, cache, bf16_exact);
  b.v_cache = rope_append_values(rng, cache, bf16_exact);
  b.hash_w = rope_append_values(rng, hd * hd, bf16_exact);
  return b;
}

/// The op's parameters over the batch's host arrays (callers swap in device pointers).
inline RopeAppendParams rope_append_params(RopeAppendBatch& b, void* reps, RepKind kind, bool neox) {
  RopeAppendParams p;
  p.q = b.q.data();
  p.k = b.k.data();
  p.v = b.v.data();
  p.pos = b.pos.data();
  p.slot_mapping = b.slots.data();
  p.k_cache = b.k_cache.data();
  p.v_cache = b.v_cache.data();
  p.reps = reps;
  p.full_blocks = b.full_blocks.data();
  p.hash_w = b.hash_w.data();
  p.n_tokens = b.n_tokens;
  p.n_blocks = b.n_blocks;
  p.n_full = int(b.full_blocks.size());
  p.n_heads = b.shape.n_heads;
  p.n_kv_heads = b.shape.n_kv_heads;
  p.head_dim = b.shape.head_dim;
  p.rot_dim = b.shape.rot_dim;
  p.block_size = b.shape.block_size;
  p.theta = 10000.0f;
  p.neox = neox;
  p.kind = kind;
  return p;
}

}  // namespace gsa::backend::test
