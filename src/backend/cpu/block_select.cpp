// CPU reference of GSA block selection (ops_sparse.h BlockSelectParams): score every full,
// non-forced block of each list against the decode query, keep the top ones by partial
// selection (nth_element; ties towards the lower logical index), add the forced sink/local
// blocks and write the list sorted by logical index. Budgets and gating are the host's (sparse/).
// Sequences ranked by Mass use the attention mass the scores estimate; Oracle sequences the true
// softmax mass of the query (diagnostic).
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/quant_score.h"
#include "backend/cpu/score_clones.h"

namespace gsa::cpu {
namespace {

using backend::BlockSelectParams;
using backend::QueryMode;
using backend::Rank;
using backend::RepKind;

constexpr int kMaxHeadDim = kMaxScoreHeadDim;
constexpr int kMaxBlockSize = 4096;
constexpr int kMaxWords64 = kMaxHeadDim / 64;
constexpr int kMaxBoxes = kMaxBlockSize;  // sub-blocks per block (sub_block >= 1)

// Dot product with 8 independent accumulators, so the compiler keeps one SIMD register of
// partial sums (a single running sum would serialize on the add latency and not vectorize).
GSA_SCORE_CLONES float dot(const float* a, const float* b, int n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
  float tail = 0.0f;
  for (; i < n; ++i) tail += a[i] * b[i];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail;
}

// sum_d max(q_d * mn_d, q_d * mx_d): the largest q.k over the box [mn, mx].
GSA_SCORE_CLONES float box_bound(const float* q, const float* mn, const float* mx, int n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j)
      acc[j] += std::max(q[i + j] * mn[i + j], q[i + j] * mx[i + j]);
  float tail = 0.0f;
  for (; i < n; ++i) tail += std::max(q[i] * mn[i], q[i] * mx[i]);
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail;
}

// Best Hamming similarity (equal bits) between qbits and any token of a Hash representation.
// Bits are compared 64 at a time when head_dim allows (every head_dim that is a multiple of
// 64); the loop over tokens then maps onto vector popcounts where the CPU has them.
inline float hash_best(const uint32_t* qbits, const uint32_t* rep, int block_size, int words) {
  int best_diff = words * 32;
  if (words % 2 == 0 && words <= 2 * kMaxWords64) {
    const int w64 = words / 2;
    uint64_t q[kMaxWords64];
    std::memcpy(q, qbits, size_t(words) * 4);
    for (int t = 0; t < block_size; ++t) {
      const uint32_t* kt = rep + int64_t(t) * words;
      int diff = 0;
      for (int w = 0; w < w64; ++w) {
        uint64_t k;
        std::memcpy(&k, kt + 2 * w, 8);
        diff += std::popcount(q[w] ^ k);
      }
      best_diff = std::min(best_diff, diff);
    }
    return float(words * 32 - best_diff);
  }
  for (int t = 0; t < block_size; ++t) {
    const uint32_t* kt = rep + int64_t(t) * words;
    int diff = 0;
    for (int w = 0; w < words; ++w) diff += std::popcount(qbits[w] ^ kt[w]);
    best_diff = std::min(best_diff, diff);
  }
  return float(words * 32 - best_diff);
}

// exp(x) for x <= 0 (clamped at -87, where it is about 1.6e-38): 2^(x log2 e) split into 2^n,
// built from the exponent bits, and 2^f, f in [-0.5, 0.5), by a degree-6 polynomial.
// Branch-free, so a loop of it vectorizes (std::exp does not). Measured within 1.4e-6 relative
// of double-precision exp over [-87, 0] (the rounding of x log2 e grows with |x|).
inline float exp_nonpos(float x) {
  x = std::max(x, -87.0f);
  const float t = x * 1.44269504088896341f;
  const float n = std::floor(t + 0.5f);
  const float f = t - n;
  float p = 1.5403530e-4f;
  p = p * f + 1.3333558e-3f;
  p = p * f + 9.6181291e-3f;
  p = p * f + 5.5504109e-2f;
  p = p * f + 2.4022651e-1f;
  p = p * f + 6.9314718e-1f;
  p = p * f + 1.0f;
  const int32_t bits = (int32_t(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, 4);
  return p * scale;
}

// log of sum_t exp(v_t) over n values (n >= 1, none NaN).
GSA_SCORE_CLONES float log_sum_exp(const float* __restrict v, int n) {
  float mx = v[0];
  for (int t = 1; t < n; ++t) mx = std::max(mx, v[t]);
  if (!(mx > -std::numeric_limits<float>::infinity())) return mx;
  float sum = 0.0f;  // terms in (0, 1], at least one of them 1
  for (int t = 0; t < n; ++t) sum += exp_nonpos(v[t] - mx);
  return mx + std::log(sum);
}

bool is_forced(int64_t j, int64_t n, const BlockSelectParams& p, bool partial) {
  return j < p.sink_blocks || j >= n - p.local_blocks || (partial && j == n - 1);
}

int64_t forced_count(int64_t n, const BlockSelectParams& p, bool partial) {
  const int64_t sink = std::min<int64_t>(p.sink_blocks, n);
  const int64_t local_lo = std::max<int64_t>(n - p.local_blocks, sink);
  int64_t count = sink + (n - local_lo);
  if (partial && p.local_blocks == 0 && n - 1 >= sink) count += 1;
  return count;
}

Status check_params(const BlockSelectParams& p, bool* needs_scores) {
  *needs_scores = false;
  if (p.act_type != DType::F32) return unsupported("block_select: cpu supports act_type f32 only");
  if (p.n_seqs < 0) return invalid_argument("block_select: n_seqs {} < 0", p.n_seqs);
  if (p.n_heads <= 0 || p.n_kv_heads <= 0 || p.head_dim <= 0 || p.block_size <= 0)
    return invalid_argument(
        "block_select: n_heads {}, n_kv_heads {}, head_dim {}, block_size {} must be > 0",
        p.n_heads, p.n_kv_heads, p.head_dim, p.block_size);
  if (p.n_heads % p.n_kv_heads != 0)
    return invalid_argument("block_select: n_heads {} not a multiple of n_kv_heads {}", p.n_heads,
                            p.n_kv_heads);
  if (p.head_dim > kMaxHeadDim || p.block_size > kMaxBlockSize)
    return invalid_argument("block_select: head_dim {} (max {}) or block_size {} (max {})",
                            p.head_dim, kMaxHeadDim, p.block_size, kMaxBlockSize);
  if (p.sink_blocks < 0 || p.local_blocks < 0)
    return invalid_argument("block_select: sink_blocks {} and local_blocks {} must be >= 0",
                            p.sink_blocks, p.local_blocks);
  if (p.kind != RepKind::Mean && p.kind != RepKind::MinMax && p.kind != RepKind::Hash &&
      p.kind != RepKind::Quant)
    return invalid_argument("block_select: unknown representation kind {}", int(p.kind));
  if (p.kind == RepKind::Quant && p.head_dim % 16 != 0)
    return invalid_argument("block_select: quant needs head_dim % 16 == 0, got {}", p.head_dim);
  if (p.query_mode != QueryMode::GroupMean && p.query_mode != QueryMode::GroupMax)
    return invalid_argument("block_select: unknown query mode {}", int(p.query_mode));
  if (p.sub_block < 0 || (p.sub_block > 0 && p.block_size % p.sub_block != 0))
    return invalid_argument("block_select: sub_block {} does not divide block_size {}",
                            p.sub_block, p.block_size);
  if (p.kind == RepKind::Hash) {
    if (p.head_dim % 32 != 0)
      return invalid_argument("block_select: hash needs head_dim % 32 == 0, got {}", p.head_dim);
    if (!p.hash_w) return invalid_argument("block_select: hash needs hash_w");
  }
  if (p.n_seqs == 0) return Status::ok();
  if (!p.block_table_indptr || !p.seq_len || !p.out_indptr || !p.out_last_len)
    return invalid_argument("block_select: null block_table_indptr, seq_len, out_indptr or "
                            "out_last_len");
  const int lists_per_seq = p.per_kv_head ? p.n_kv_heads : 1;
  if (p.block_table_indptr[0] != 0 || p.out_indptr[0] != 0)
    return invalid_argument("block_select: block_table_indptr[0] {} and out_indptr[0] {} must be 0",
                            p.block_table_indptr[0], p.out_indptr[0]);
  if (p.block_table_indptr[p.n_seqs] > 0 && !p.block_table)
    return invalid_argument("block_select: null block_table");
  if (p.out_indptr[int64_t(p.n_seqs) * lists_per_seq] > 0 && !p.out_indices)
    return invalid_argument("block_select: null out_indices");
  for (int s = 0; s < p.n_seqs; ++s) {
    const int64_t b0 = p.block_table_indptr[s], b1 = p.block_table_indptr[s + 1];
    if (b1 < b0) return invalid_argument("block_select: block_table_indptr decreases at {}", s);
    const int64_t n = b1 - b0;
    const int64_t len = p.seq_len[s];
    if (len < 0 || len > n * p.block_size || (n > 0 && len <= (n - 1) * p.block_size))
      return invalid_argument("block_select: sequence {} has {} tokens but {} blocks of {}", s,
                              len, n, p.block_size);
    const bool partial = len % p.block_size != 0;
    const int64_t forced = forced_count(n, p, partial);
    for (int h = 0; h < lists_per_seq; ++h) {
      const int64_t i = int64_t(s) * lists_per_seq + h;
      const int64_t size = int64_t(p.out_indptr[i + 1]) - p.out_indptr[i];
      if (size < forced || size > n)
        return invalid_argument("block_select: list {} has size {}, expected {}..{} (forced..blocks)",
                                i, size, forced, n);
      if (size < n) *needs_scores = true;
    }
    for (int64_t j = b0; j < b1; ++j) {
      const int32_t b = p.block_table[j];
      if (b < 0 || (p.n_blocks > 0 && b >= p.n_blocks))
        return invalid_argument("block_select: sequence {} block {} has physical id {} outside "
                                "[0, {})", s, j - b0, b,
                                p.n_blocks > 0 ? p.n_blocks : int64_t(INT32_MAX));
    }
  }
  if (*needs_scores && (!p.q || !p.reps))
    return invalid_argument("block_select: null q or reps");
  bool oracle = false;
  for (int s = 0; p.rank && s < p.n_seqs; ++s) {
    const Rank r = Rank(p.rank[s]);
    if (r != Rank::Score && r != Rank::Mass && r != Rank::Oracle && r != Rank::Rerank)
      return invalid_argument("block_select: sequence {} has unknown rank {}", s, int(p.rank[s]));
    if (r == Rank::Mass && p.kind == RepKind::Hash)
      return invalid_argument("block_select: ranking by mass needs representation mean, minmax "
                              "or quant");
    oracle |= r == Rank::Oracle || r == Rank::Rerank;
  }
  if (oracle && p.rerank_factor < 1)
    return invalid_argument("block_select: rerank_factor {} must be >= 1", p.rerank_factor);
  if (oracle && *needs_scores) {
    if (!p.k_cache) return invalid_argument("block_select: oracle and rerank need k_cache");
    if (p.kv_type != DType::F32)
      return unsupported("block_select: cpu oracle and rerank read an f32 K cache only");
  }
  return Status::ok();
}

struct Candidate {
  float score;
  int32_t logical;
};

// Higher score first, then lower logical index: a strict total order, so the result does not
// depend on the order nth_element visits elements.
inline bool better(const Candidate& a, const Candidate& b) {
  if (a.score != b.score) return a.score > b.score;
  return a.logical < b.logical;
}

// Per-thread scratch, reused across the lists a thread handles.
struct Scratch {
  int prepared_seq = -1;         // sequence whose queries are in `queries`
  std::vector<float> queries;    // [n_q, head_dim] scoring queries (group means or heads)
  std::vector<uint32_t> qbits;   // [n_q, head_dim / 32] Hash only
  std::vector<float> proj;       // [head_dim]
  std::vector<Candidate> cands;  // [n_blocks]
  std::vector<uint8_t> keep;     // [n_blocks]
  std::vector<uint8_t> kept;     // [n_blocks] Rerank: candidates and forced blocks
  std::vector<float> logits;     // [seq_len] oracle: one head's scaled q.k
  std::vector<float> mass;       // [n_blocks] Mass / Oracle: the list's mass per block
  std::vector<double> dmass;     // [n_blocks] Mass accumulator
  std::vector<float> qa, qt;     // Quant: [head_dim] a, [block_size] token scores
  std::vector<uint32_t> qx;      // Quant: [block_size] one code word per token
};

class Selector {
 public:
  explicit Selector(const BlockSelectParams& p)
      : p_(p), group_(p.n_heads / p.n_kv_heads), words_(p.head_dim / 32),
        rep_bytes_(backend::rep_bytes(p.kind, p.head_dim, p.block_size, p.sub_block)),
        boxes_(backend::rep_boxes(p.kind, p.block_size, p.sub_block)),
        lists_per_seq_(p.per_kv_head ? p.n_kv_heads : 1) {}

  int64_t n_lists() const { return int64_t(p_.n_seqs) * lists_per_seq_; }

  void run_list(int64_t list, Scratch& sc) const {
    const int s = int(list / lists_per_seq_);
    const int head = p_.per_kv_head ? int(list % lists_per_seq_) : -1;
    const int32_t* table = p_.block_table + p_.block_table_indptr[s];
    const int64_t n = int64_t(p_.block_table_indptr[s + 1]) - p_.block_table_indptr[s];
    const int64_t len = p_.seq_len[s];
    const bool partial = len % p_.block_size != 0;
    int32_t* out = p_.out_indices + p_.out_indptr[list];
    const int64_t size = int64_t(p_.out_indptr[list + 1]) - p_.out_indptr[list];
    const int64_t last_len = n > 0 ? len - (n - 1) * p_.block_size : 0;
    if (size == n) {  // every block: no scoring, so "budget covers all" is exactly dense
      std::copy(table, table + n, out);
      p_.out_last_len[list] = int32_t(last_len);
      return;
    }
    const Rank rank = p_.rank ? Rank(p_.rank[s]) : Rank::Score;
    const bool by_mass = rank != Rank::Score;
    if (rank == Rank::Oracle) {
      oracle_mass(s, head, table, n, len, nullptr, sc);
    } else if (rank == Rank::Rerank) {
      rerank_mass(s, head, table, n, len, size, sc);
    } else {
      prepare_queries(s, sc);
      if (rank == Rank::Mass) estimated_mass(head, table, n, len, sc);
    }
    collect_candidates(table, n, partial, head, by_mass ? sc.mass.data() : nullptr, sc);
    const int64_t k = size - forced_count(n, p_, partial);
    sc.keep.assign(size_t(n), 0);
    if (k > 0 && k < int64_t(sc.cands.size()))
      std::nth_element(sc.cands.begin(), sc.cands.begin() + k, sc.cands.end(), better);
    for (int64_t c = 0; c < k; ++c) sc.keep[size_t(sc.cands[size_t(c)].logical)] = 1;
    int64_t w = 0;
    int64_t last = -1;
    for (int64_t j = 0; j < n; ++j) {
      if (sc.keep[size_t(j)] || is_forced(j, n, p_, partial)) {
        out[w++] = table[j];
        last = j;
      }
    }
    GSA_ASSERT(w == size, "block_select: list size mismatch");
    p_.out_last_len[list] = last == n - 1 ? int32_t(last_len) : int32_t(size > 0 ? p_.block_size : 0);
  }

 private:
  // Rerank: the rerank_factor * (size - forced) best non-forced blocks by score (the top-k's
  // order) and the forced blocks are kept in sc.keep; sc.mass is then the oracle's mass over the
  // tokens of the kept blocks only (0 elsewhere).
  void rerank_mass(int s, int head, const int32_t* table, int64_t n, int64_t len, int64_t size,
                   Scratch& sc) const {
    const bool partial = len % p_.block_size != 0;
    prepare_queries(s, sc);
    collect_candidates(table, n, partial, head, nullptr, sc);
    const int64_t k = std::min<int64_t>(int64_t(p_.rerank_factor) * (size - forced_count(n, p_, partial)),
                                        int64_t(sc.cands.size()));
    if (k > 0 && k < int64_t(sc.cands.size()))
      std::nth_element(sc.cands.begin(), sc.cands.begin() + k, sc.cands.end(), better);
    sc.kept.resize(size_t(n));
    for (int64_t j = 0; j < n; ++j) sc.kept[size_t(j)] = is_forced(j, n, p_, partial);
    for (int64_t c = 0; c < k; ++c) sc.kept[size_t(sc.cands[size_t(c)].logical)] = 1;
    oracle_mass(s, head, table, n, len, sc.kept.data(), sc);
  }

  // sc.cands = every non-forced block with its score: mass[j] when mass is given, else the
  // representation score; NaN ranks as -inf.
  void collect_candidates(const int32_t* table, int64_t n, bool partial, int head, const float* mass,
                          Scratch& sc) const {
    sc.cands.clear();
    for (int64_t j = 0; j < n; ++j) {
      if (is_forced(j, n, p_, partial)) continue;
      float score = mass ? mass[j] : score_block(table[j], head, sc);
      if (std::isnan(score)) score = -std::numeric_limits<float>::infinity();
      sc.cands.push_back({score, int32_t(j)});
    }
  }

  // Oracle: sc.mass[j] = sum over the list's query heads of the softmax mass (over all len
  // tokens of the sequence, or those of the blocks with only[j] != 0; scale 1/sqrt(head_dim))
  // that falls in logical block j. Heads of kv head `head` for a per_kv_head list, every head
  // otherwise. Accumulated in double.
  void oracle_mass(int s, int head, const int32_t* table, int64_t n, int64_t len, const uint8_t* only,
                   Scratch& sc) const {
    const int hd = p_.head_dim, bs = p_.block_size;
    const float* q = static_cast<const float*>(p_.q) + int64_t(s) * p_.n_heads * hd;
    const float* K = static_cast<const float*>(p_.k_cache);
    const float scale = 1.0f / std::sqrt(float(hd));
    const int h0 = head >= 0 ? head * group_ : 0;
    const int h1 = head >= 0 ? h0 + group_ : p_.n_heads;
    std::vector<double> mass(size_t(n), 0.0);
    sc.logits.resize(size_t(len));
    for (int hh = h0; hh < h1; ++hh) {
      const int kh = hh / group_;
      const float* qh = q + int64_t(hh) * hd;
      float mx = -std::numeric_limits<float>::infinity();
      for (int64_t t = 0; t < len; ++t) {
        if (only && !only[t / bs]) continue;
        const float* k = K + ((int64_t(table[t / bs]) * p_.n_kv_heads + kh) * bs + t % bs) * hd;
        sc.logits[size_t(t)] = dot(qh, k, hd) * scale;
        mx = std::max(mx, sc.logits[size_t(t)]);
      }
      double z = 0.0;
      for (int64_t t = 0; t < len; ++t)
        if (!only || only[t / bs]) z += std::exp(double(sc.logits[size_t(t)] - mx));
      for (int64_t t = 0; t < len; ++t)
        if (!only || only[t / bs]) mass[size_t(t / bs)] += std::exp(double(sc.logits[size_t(t)] - mx)) / z;
    }
    sc.mass.resize(size_t(n));
    for (int64_t j = 0; j < n; ++j) sc.mass[size_t(j)] = float(mass[size_t(j)]);
  }

  // Rank::Mass: sc.mass[j] = sum over the list's scoring queries of the softmax, over the
  // sequence's full blocks, of scale * (the block's score; log-sum-exp over sub-blocks).
  // Kv head `head` for a per_kv_head list, every kv head otherwise. Accumulated in double.
  void estimated_mass(int head, const int32_t* table, int64_t n, int64_t len, Scratch& sc) const {
    const float scale = 1.0f / std::sqrt(float(p_.head_dim));
    const int per_kv = p_.query_mode == QueryMode::GroupMax ? group_ : 1;
    const int kh0 = head >= 0 ? head : 0, kh1 = head >= 0 ? head + 1 : p_.n_kv_heads;
    const int64_t full = std::min<int64_t>(n, len / p_.block_size);
    sc.dmass.assign(size_t(n), 0.0);
    sc.logits.resize(size_t(full));
    for (int kh = kh0; kh < kh1; ++kh) {
      for (int g = 0; g < per_kv; ++g) {
        const int i = kh * per_kv + g;
        float mx = -std::numeric_limits<float>::infinity();
        for (int64_t j = 0; j < full; ++j) {
          float v = log_mass(table[j], kh, i, scale, sc);
          if (std::isnan(v)) v = -std::numeric_limits<float>::infinity();
          sc.logits[size_t(j)] = v;
          mx = std::max(mx, v);
        }
        if (mx == -std::numeric_limits<float>::infinity()) continue;
        double z = 0.0;
        for (int64_t j = 0; j < full; ++j) z += std::exp(double(sc.logits[size_t(j)] - mx));
        for (int64_t j = 0; j < full; ++j)
          sc.dmass[size_t(j)] += std::exp(double(sc.logits[size_t(j)] - mx)) / z;
      }
    }
    sc.mass.resize(size_t(n));
    for (int64_t j = 0; j < n; ++j) sc.mass[size_t(j)] = float(sc.dmass[size_t(j)]);
  }

  // log of query i's estimated mass in kv head h of physical block b, before normalization:
  // log-sum-exp over the block's sub-blocks of scale * score (scale * score with one box).
  float log_mass(int32_t b, int h, int i, float scale, Scratch& sc) const {
    if (p_.kind == RepKind::Quant) {
      quant_scores(b, h, i, sc);
      for (int t = 0; t < p_.block_size; ++t) {
        const float v = scale * sc.qt[size_t(t)];
        sc.qt[size_t(t)] = v != v ? -std::numeric_limits<float>::infinity() : v;
      }
      return log_sum_exp(sc.qt.data(), p_.block_size);
    }
    const float* box = reinterpret_cast<const float*>(static_cast<const uint8_t*>(p_.reps) +
                                                      (int64_t(b) * p_.n_kv_heads + h) * rep_bytes_);
    const float* qi = sc.queries.data() + int64_t(i) * p_.head_dim;
    const int hd = p_.head_dim;
    float v[kMaxBoxes];
    float mx = -std::numeric_limits<float>::infinity();
    for (int k = 0; k < boxes_; ++k) {
      v[k] = scale * (p_.kind == RepKind::Mean
                          ? dot(qi, box + int64_t(k) * hd, hd)
                          : box_bound(qi, box + int64_t(k) * 2 * hd, box + int64_t(k) * 2 * hd + hd, hd));
      mx = std::max(mx, v[k]);
    }
    if (boxes_ == 1 || !(mx > -std::numeric_limits<float>::infinity())) return boxes_ == 1 ? v[0] : mx;
    double sum = 0.0;
    for (int k = 0; k < boxes_; ++k) sum += std::exp(double(v[k] - mx));
    return mx + float(std::log(sum));
  }

  // Quant: sc.qt[t] = q.k' of query i for every token of kv head h of physical block b.
  void quant_scores(int32_t b, int h, int i, Scratch& sc) const {
    const uint8_t* rep = static_cast<const uint8_t*>(p_.reps) + (int64_t(b) * p_.n_kv_heads + h) * rep_bytes_;
    sc.qa.resize(size_t(p_.head_dim));
    sc.qx.resize(size_t(p_.block_size));
    sc.qt.resize(size_t(p_.block_size));
    quant_token_scores(sc.queries.data() + int64_t(i) * p_.head_dim, rep, p_.block_size, p_.head_dim,
                       sc.qa.data(), sc.qx.data(), sc.qt.data());
  }

  // Scoring queries of sequence s: GroupMean -> n_kv_heads group means; GroupMax -> the n_heads
  // query heads. Hash also gets each query's sign bits of q.W.
  void prepare_queries(int s, Scratch& sc) const {
    if (sc.prepared_seq == s) return;
    sc.prepared_seq = s;
    const int hd = p_.head_dim;
    const float* q = static_cast<const float*>(p_.q) + int64_t(s) * p_.n_heads * hd;
    const bool mean = p_.query_mode == QueryMode::GroupMean;
    const int n_q = mean ? p_.n_kv_heads : p_.n_heads;
    sc.queries.resize(size_t(n_q) * hd);
    if (mean) {
      const float inv = 1.0f / float(group_);
      for (int h = 0; h < p_.n_kv_heads; ++h) {
        float* dst = sc.queries.data() + int64_t(h) * hd;
        std::fill(dst, dst + hd, 0.0f);
        for (int g = 0; g < group_; ++g) {
          const float* src = q + int64_t(h * group_ + g) * hd;
          for (int d = 0; d < hd; ++d) dst[d] += src[d];
        }
        for (int d = 0; d < hd; ++d) dst[d] *= inv;
      }
    } else {
      std::copy(q, q + int64_t(n_q) * hd, sc.queries.begin());
    }
    if (p_.kind != RepKind::Hash) return;
    sc.qbits.resize(size_t(n_q) * words_);
    sc.proj.resize(size_t(hd));
    for (int i = 0; i < n_q; ++i) {
      const float* qi = sc.queries.data() + int64_t(i) * hd;
      std::fill(sc.proj.begin(), sc.proj.end(), 0.0f);
      for (int r = 0; r < hd; ++r) {
        const float* wr = p_.hash_w + int64_t(r) * hd;
        for (int d = 0; d < hd; ++d) sc.proj[size_t(d)] += qi[r] * wr[d];
      }
      for (int w = 0; w < words_; ++w) {
        uint32_t bits = 0;
        for (int j = 0; j < 32; ++j) bits |= uint32_t(sc.proj[size_t(w * 32 + j)] > 0.0f) << j;
        sc.qbits[size_t(i) * words_ + w] = bits;
      }
    }
  }

  // Score of query i (an index into sc.queries) against kv head h of physical block b.
  float score_one(int32_t b, int h, int i, Scratch& sc) const {
    const uint8_t* rep = static_cast<const uint8_t*>(p_.reps) +
                         (int64_t(b) * p_.n_kv_heads + h) * rep_bytes_;
    const float* qi = sc.queries.data() + int64_t(i) * p_.head_dim;
    const float* box = reinterpret_cast<const float*>(rep);
    float best = -std::numeric_limits<float>::infinity();
    switch (p_.kind) {
      case RepKind::Mean:
        for (int i = 0; i < boxes_; ++i)
          best = std::max(best, dot(qi, box + int64_t(i) * p_.head_dim, p_.head_dim));
        return best;
      case RepKind::MinMax:
        for (int i = 0; i < boxes_; ++i) {
          const float* mn = box + int64_t(i) * 2 * p_.head_dim;
          best = std::max(best, box_bound(qi, mn, mn + p_.head_dim, p_.head_dim));
        }
        return best;
      case RepKind::Hash:
        return hash_best(sc.qbits.data() + int64_t(i) * words_,
                         reinterpret_cast<const uint32_t*>(rep), p_.block_size, words_);
      case RepKind::Quant:
        quant_scores(b, h, i, sc);
        return max_in_order(sc.qt.data(), p_.block_size);
    }
    return 0.0f;
  }

  // Score of kv head h (GroupMean: its group query; GroupMax: max over its query heads).
  float score_head(int32_t b, int h, Scratch& sc) const {
    if (p_.query_mode == QueryMode::GroupMean) return score_one(b, h, h, sc);
    float best = -std::numeric_limits<float>::infinity();
    for (int g = 0; g < group_; ++g) {
      const float v = score_one(b, h, h * group_ + g, sc);
      best = std::isnan(v) ? best : std::max(best, v);
    }
    return best;
  }

  // head >= 0: that kv head's score (per_kv_head); head < 0: the sum over kv heads.
  float score_block(int32_t b, int head, Scratch& sc) const {
    if (head >= 0) return score_head(b, head, sc);
    float sum = 0.0f;
    for (int h = 0; h < p_.n_kv_heads; ++h) sum += score_head(b, h, sc);
    return sum;
  }

  const BlockSelectParams& p_;
  const int group_, words_;
  const int64_t rep_bytes_;
  const int boxes_;
  const int lists_per_seq_;
};

}  // namespace

Status block_select(const BlockSelectParams& p, ThreadPool* pool) {
  bool needs_scores = false;
  GSA_RETURN_IF_ERROR(check_params(p, &needs_scores));
  if (p.n_seqs == 0) return Status::ok();
  const Selector sel(p);
  auto work = [&](int64_t begin, int64_t end, int) {
    Scratch sc;
    for (int64_t list = begin; list < end; ++list) sel.run_list(list, sc);
  };
  if (pool && sel.n_lists() > 1 && needs_scores) {
    pool->parallel_for(sel.n_lists(), work);
  } else {
    work(0, sel.n_lists(), 0);
  }
  return Status::ok();
}

}  // namespace gsa::cpu
