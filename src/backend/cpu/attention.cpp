// CPU paged attention (ops.h AttentionParams): prefill and decode, dense and sparse block lists,
// one code path. Work items are (sequence, kv head, query-row tile, key chunk); each item keeps
// an online softmax over its listed blocks for all query heads of its kv head, so every K/V
// block is streamed from memory once per group. Short query spans (decode) split long lists into
// fixed-size key chunks merged afterwards (flash-decoding); the split depends only on the list
// length, never on the thread count, so equal lists give bit-equal outputs.
#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/attention_simd.h"
#include "backend/cpu/cpu_check.h"
#include "backend/cpu/cpu_kernels.h"

namespace gsa::cpu {
namespace {

using backend::AttentionParams;

constexpr int kRowTile = 16;            // query rows per prefill work item
constexpr int kSplitMaxRows = 4;        // sequences with at most this many rows split their keys
constexpr int64_t kSplitTokens = 1024;  // keys per split chunk, rounded down to whole blocks

struct Item {
  int32_t seq = 0, kv_head = 0;
  int64_t row_begin = 0, row_end = 0;  // token rows of q / out
  int64_t pos_begin = 0, pos_end = 0;  // positions in the block list
  int64_t partial = -1;                // partial-result slot, or -1: write out directly
};

struct Merge {
  int32_t seq = 0, kv_head = 0;
  int64_t first_partial = 0, n_partials = 0;
};

struct Ctx {
  const float* q;        // [n_tokens, n_heads, head_dim]
  const float* k_cache;  // [n_blocks, n_kv_heads, block_size, head_dim]
  const float* v_cache;  // [n_blocks, n_kv_heads, block_size, head_dim]
  float* out;            // [n_tokens, n_heads, head_dim]
  int group;             // query heads per kv head
  float scale;
  int64_t partial_stride;  // floats per partial slot: kSplitMaxRows * group * (head_dim + 2)
};

// A query vector of an item (index r = row * group + head in the item) and the number of keys
// of the current block it sees.
struct Vec {
  int64_t r;
  const float* q;  // [head_dim]
  int64_t limit;
};

// Per-thread state of one item: R = rows * group query vectors.
struct Scratch {
  std::vector<float> m, l;  // [R] running max and denominator
  std::vector<float> acc;   // [R, head_dim] unnormalized output
  std::vector<float> s;     // [2, block_size] scores, then probabilities, of one block
  std::vector<Vec> vecs;    // [<= R] the vectors that see keys of the current block
};

int64_t list_of(const AttentionParams& p, int seq, int kv_head) {
  return p.per_kv_head ? int64_t(seq) * p.n_kv_heads + kv_head : seq;
}

Status validate(const AttentionParams& p) {
  if (p.act_type != DType::F32 || p.kv_type != DType::F32)
    return unsupported("cpu attention: q/out and the KV cache must be f32");
  if (p.n_seqs < 0 || p.n_tokens < 0 || p.n_heads <= 0 || p.n_kv_heads <= 0 || p.head_dim <= 0 ||
      p.block_size <= 0 || p.n_blocks < 0)
    return invalid_argument(
        "attention: bad shape n_seqs={} n_tokens={} n_heads={} n_kv_heads={} head_dim={} "
        "block_size={} n_blocks={}",
        p.n_seqs, p.n_tokens, p.n_heads, p.n_kv_heads, p.head_dim, p.block_size, p.n_blocks);
  if (p.n_heads % p.n_kv_heads != 0)
    return invalid_argument("attention: n_heads {} is not a multiple of n_kv_heads {}", p.n_heads,
                            p.n_kv_heads);
  if (!std::isfinite(p.scale)) return invalid_argument("attention: bad scale {}", p.scale);
  // Block ids are int32, so without n_blocks a cache may hold up to 2^31 blocks.
  const int64_t max_blocks = p.n_blocks > 0 ? p.n_blocks : int64_t(1) << 31;
  if (!product_fits({max_blocks, p.n_kv_heads, p.block_size, p.head_dim}) ||
      !product_fits({p.n_tokens, p.n_heads, p.head_dim}))
    return invalid_argument("attention: shape too large (n_blocks={} n_tokens={} n_heads={} head_dim={} block_size={})",
                            p.n_blocks, p.n_tokens, p.n_heads, p.head_dim, p.block_size);
  if (p.n_seqs == 0) {
    if (p.n_tokens != 0) return invalid_argument("attention: {} tokens but no sequences", p.n_tokens);
    return Status::ok();
  }
  if (!p.q_indptr || !p.kv_indptr || !p.kv_last_len)
    return invalid_argument("attention: null indptr or last_len");
  if (p.n_tokens > 0 && (!p.q || !p.out || !p.q_pos)) return invalid_argument("attention: null q, out or q_pos");
  if (p.q_indptr[0] != 0) return invalid_argument("attention: q_indptr[0] = {}, expected 0", p.q_indptr[0]);
  for (int s = 0; s < p.n_seqs; ++s)
    if (p.q_indptr[s + 1] < p.q_indptr[s])
      return invalid_argument("attention: q_indptr decreases at sequence {}", s);
  if (p.q_indptr[p.n_seqs] != p.n_tokens)
    return invalid_argument("attention: q_indptr[n_seqs] = {}, expected n_tokens = {}",
                            p.q_indptr[p.n_seqs], p.n_tokens);
  for (int64_t t = 0; t < p.n_tokens; ++t)
    if (p.q_pos[t] < 0) return invalid_argument("attention: q_pos[{}] = {} is negative", t, p.q_pos[t]);
  const int64_t n_lists = p.per_kv_head ? int64_t(p.n_seqs) * p.n_kv_heads : p.n_seqs;
  if (p.kv_indptr[0] != 0) return invalid_argument("attention: kv_indptr[0] = {}, expected 0", p.kv_indptr[0]);
  for (int64_t i = 0; i < n_lists; ++i) {
    const int64_t len = int64_t(p.kv_indptr[i + 1]) - p.kv_indptr[i];
    if (len < 0) return invalid_argument("attention: kv_indptr decreases at list {}", i);
    if (len > 0 && (p.kv_last_len[i] < 1 || p.kv_last_len[i] > p.block_size))
      return invalid_argument("attention: kv_last_len[{}] = {} outside [1, {}]", i, p.kv_last_len[i],
                              p.block_size);
  }
  const int64_t n_indices = p.kv_indptr[n_lists];
  if (n_indices > 0 && (!p.kv_indices || !p.k_cache || !p.v_cache))
    return invalid_argument("attention: null kv_indices or cache");
  for (int64_t i = 0; i < n_indices; ++i) {
    const int64_t b = p.kv_indices[i];
    if (b < -1 || (p.n_blocks > 0 && b >= p.n_blocks))
      return invalid_argument("attention: kv_indices[{}] = {} outside [0, {}) (or -1: skipped)", i, b,
                              p.n_blocks > 0 ? p.n_blocks : INT32_MAX);
  }
  return Status::ok();
}

// Runs one item: online softmax over the item's blocks for rows x group query heads. With
// `partial` set, writes (m, l, acc) there for the merge; otherwise the normalized output.
void run_item(const AttentionParams& p, const Ctx& c, const Item& it, Scratch& sc, float* partial) {
  const int g = c.group;
  const int64_t hd = p.head_dim, bs = p.block_size, nkv = p.n_kv_heads;
  const int64_t n_rows = it.row_end - it.row_begin;
  const int64_t R = n_rows * g;
  sc.m.assign(size_t(R), -INFINITY);
  sc.l.assign(size_t(R), 0.0f);
  sc.acc.assign(size_t(R * hd), 0.0f);
  sc.s.resize(size_t(2 * bs));

  const int64_t list = list_of(p, it.seq, it.kv_head);
  const int64_t list_start = p.kv_indptr[list];
  const int64_t list_len = p.kv_indptr[list + 1] - list_start;
  // No row of the tile sees a key past its largest position.
  int64_t max_pos = 0;
  for (int64_t row = it.row_begin; row < it.row_end; ++row) max_pos = std::max<int64_t>(max_pos, p.q_pos[row]);
  const int64_t pos_end = std::min(it.pos_end, max_pos / bs + 1);

  for (int64_t pos = it.pos_begin; pos < pos_end; ++pos) {
    const int64_t blk = p.kv_indices[list_start + pos];
    if (blk < 0) continue;  // a slot no selection filled: no keys
    const int64_t n_keys = pos == list_len - 1 ? p.kv_last_len[list] : bs;
    const float* kb = c.k_cache + (blk * nkv + it.kv_head) * bs * hd;  // [block_size, head_dim]
    const float* vb = c.v_cache + (blk * nkv + it.kv_head) * bs * hd;  // [block_size, head_dim]
    // The next listed block, prefetched while the first query vector reads this one.
    const float* pf_k = nullptr;
    const float* pf_v = nullptr;
    if (pos + 1 < pos_end && p.kv_indices[list_start + pos + 1] >= 0) {
      const int64_t next = (int64_t(p.kv_indices[list_start + pos + 1]) * nkv + it.kv_head) * bs * hd;
      pf_k = c.k_cache + next;
      pf_v = c.v_cache + next;
    }
    // The query vectors that see keys of this block, with how many they see.
    sc.vecs.clear();
    for (int64_t rr = 0; rr < n_rows; ++rr) {
      const int64_t row = it.row_begin + rr;
      const int64_t limit = std::min<int64_t>(n_keys, int64_t(p.q_pos[row]) - pos * bs + 1);
      if (limit <= 0) continue;
      for (int gi = 0; gi < g; ++gi)
        sc.vecs.push_back({rr * g + gi, c.q + (row * p.n_heads + int64_t(it.kv_head) * g + gi) * hd, limit});
    }
    // Online-softmax update of vector r from its scores s; returns the accumulator's rescale.
    auto update = [&](int64_t r, float* s, int64_t limit) {
      const float m_new = std::max(sc.m[size_t(r)], simd::max(s, limit));
      const float corr = std::exp(sc.m[size_t(r)] - m_new);  // 0 on the first block
      const float sum = simd::exp_shift_sum(s, limit, m_new);
      sc.l[size_t(r)] = sc.l[size_t(r)] * corr + sum;
      sc.m[size_t(r)] = m_new;
      return corr;
    };
    // Vectors with equal limits go in pairs that share K and V loads; the pair kernels are
    // bit-equal to the single ones, so pairing never changes a result.
    float* s0 = sc.s.data();
    float* s1 = sc.s.data() + bs;
    for (size_t i = 0; i < sc.vecs.size();) {
      const Vec& a = sc.vecs[i];
      const float* pk = i == 0 ? pf_k : nullptr;
      const float* pv = i == 0 ? pf_v : nullptr;
      if (i + 1 < sc.vecs.size() && sc.vecs[i + 1].limit == a.limit) {
        const Vec& b = sc.vecs[i + 1];
        simd::scores2(a.q, b.q, kb, a.limit, hd, c.scale, s0, s1, pk);
        const float ca = update(a.r, s0, a.limit), cb = update(b.r, s1, b.limit);
        simd::rescale_accumulate2(s0, s1, vb, a.limit, hd, ca, cb, sc.acc.data() + a.r * hd,
                                  sc.acc.data() + b.r * hd, pv);
        i += 2;
      } else {
        simd::scores(a.q, kb, a.limit, hd, c.scale, s0, pk);
        const float ca = update(a.r, s0, a.limit);
        simd::rescale_accumulate(s0, vb, a.limit, hd, ca, sc.acc.data() + a.r * hd, pv);
        i += 1;
      }
    }
  }

  if (partial) {
    // [R] m, [R] l, [R, head_dim] acc
    std::copy(sc.m.begin(), sc.m.end(), partial);
    std::copy(sc.l.begin(), sc.l.end(), partial + R);
    std::copy(sc.acc.begin(), sc.acc.end(), partial + 2 * R);
    return;
  }
  for (int64_t rr = 0; rr < n_rows; ++rr) {
    const int64_t row = it.row_begin + rr;
    for (int gi = 0; gi < g; ++gi) {
      const int64_t r = rr * g + gi;
      float* o = c.out + (row * p.n_heads + int64_t(it.kv_head) * g + gi) * hd;
      const float l = sc.l[size_t(r)];
      const float inv = l > 0.0f ? 1.0f / l : 0.0f;
      const float* a = sc.acc.data() + r * hd;
      for (int64_t d = 0; d < hd; ++d) o[d] = a[d] * inv;
    }
  }
}

// Merges the key-chunk partials of one (sequence, kv head) into the output, in chunk order.
void run_merge(const AttentionParams& p, const Ctx& c, const Merge& mg, const float* partials) {
  const int g = c.group;
  const int64_t hd = p.head_dim;
  const int64_t row_begin = p.q_indptr[mg.seq], n_rows = p.q_indptr[mg.seq + 1] - row_begin;
  const int64_t R = n_rows * g;
  for (int64_t r = 0; r < R; ++r) {
    float m = -INFINITY;
    for (int64_t i = 0; i < mg.n_partials; ++i)
      m = std::max(m, partials[(mg.first_partial + i) * c.partial_stride + r]);
    const int64_t row = row_begin + r / g;
    float* o = c.out + (row * p.n_heads + int64_t(mg.kv_head) * g + r % g) * hd;
    std::fill(o, o + hd, 0.0f);
    float l = 0.0f;
    if (m != -INFINITY) {
      for (int64_t i = 0; i < mg.n_partials; ++i) {
        const float* part = partials + (mg.first_partial + i) * c.partial_stride;
        if (part[r] == -INFINITY) continue;
        const float w = std::exp(part[r] - m);
        l += part[R + r] * w;
        simd::axpy(w, part + 2 * R + r * hd, o, hd);
      }
    }
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    for (int64_t d = 0; d < hd; ++d) o[d] *= inv;
  }
}

}  // namespace

Status attention(const AttentionParams& p, ThreadPool* pool) {
  GSA_RETURN_IF_ERROR(validate(p));
  if (p.n_tokens == 0) return Status::ok();
  Ctx c{};
  c.q = static_cast<const float*>(p.q);
  c.k_cache = static_cast<const float*>(p.k_cache);
  c.v_cache = static_cast<const float*>(p.v_cache);
  c.out = static_cast<float*>(p.out);
  c.group = p.n_heads / p.n_kv_heads;
  c.scale = p.scale != 0.0f ? p.scale : 1.0f / std::sqrt(float(p.head_dim));
  c.partial_stride = int64_t(kSplitMaxRows) * c.group * (p.head_dim + 2);

  const int64_t chunk_blocks = std::max<int64_t>(1, kSplitTokens / p.block_size);
  std::vector<Item> items;
  std::vector<Merge> merges;
  int64_t n_partials = 0;
  for (int s = 0; s < p.n_seqs; ++s) {
    const int64_t row_begin = p.q_indptr[s], row_end = p.q_indptr[s + 1];
    if (row_end == row_begin) continue;
    for (int h = 0; h < p.n_kv_heads; ++h) {
      const int64_t list = list_of(p, s, h);
      const int64_t len = int64_t(p.kv_indptr[list + 1]) - p.kv_indptr[list];
      if (row_end - row_begin <= kSplitMaxRows && len > chunk_blocks) {
        const int64_t n_chunks = (len + chunk_blocks - 1) / chunk_blocks;
        merges.push_back({s, h, n_partials, n_chunks});
        for (int64_t i = 0; i < n_chunks; ++i)
          items.push_back({s, h, row_begin, row_end, i * chunk_blocks,
                           std::min(len, (i + 1) * chunk_blocks), n_partials + i});
        n_partials += n_chunks;
        continue;
      }
      for (int64_t r = row_begin; r < row_end; r += kRowTile)
        items.push_back({s, h, r, std::min(row_end, r + kRowTile), 0, len, -1});
    }
  }

  std::vector<float> partials(size_t(n_partials * c.partial_stride));
  pool->parallel_for(int64_t(items.size()), [&](int64_t b, int64_t e, int) {
    thread_local Scratch sc;
    for (int64_t i = b; i < e; ++i) {
      const Item& it = items[size_t(i)];
      run_item(p, c, it, sc, it.partial >= 0 ? partials.data() + it.partial * c.partial_stride : nullptr);
    }
  });
  pool->parallel_for(int64_t(merges.size()), [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) run_merge(p, c, merges[size_t(i)], partials.data());
  });
  return Status::ok();
}

}  // namespace gsa::cpu
