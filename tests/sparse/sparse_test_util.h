// Helpers shared by the sparse tests: a synthetic paged K cache with random block placement,
// brute-force (double precision) block scores straight from the GSA specification, and CSR
// checks of selection invariants.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "backend/ops_sparse.h"

namespace gsa::sparse::test {

inline std::vector<float> random_vec(std::mt19937& rng, size_t n, float lo = -1.0f,
                                     float hi = 1.0f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

/// A batch of sequences over a shared paged cache. Physical ids are a random permutation so
/// logical order and physical order differ.
struct Batch {
  int n_kv_heads = 0, head_dim = 0, block_size = 0, n_phys = 0;
  std::vector<int32_t> seq_len;      // [n_seqs]
  std::vector<int32_t> bt_indptr;    // [n_seqs + 1]
  std::vector<int32_t> block_table;  // [bt_indptr.back()]
  std::vector<float> k_cache;        // [n_phys, n_kv_heads, block_size, head_dim]
  int n_seqs() const { return int(seq_len.size()); }
  const int32_t* table(int s) const { return block_table.data() + bt_indptr[size_t(s)]; }
  int n_blocks(int s) const { return bt_indptr[size_t(s) + 1] - bt_indptr[size_t(s)]; }
};

inline Batch make_batch(std::mt19937& rng, const std::vector<int32_t>& seq_lens, int n_kv_heads,
                        int head_dim, int block_size, int spare_blocks = 3) {
  Batch b;
  b.n_kv_heads = n_kv_heads;
  b.head_dim = head_dim;
  b.block_size = block_size;
  b.seq_len = seq_lens;
  b.bt_indptr.push_back(0);
  for (int32_t len : seq_lens)
    b.bt_indptr.push_back(b.bt_indptr.back() + (len + block_size - 1) / block_size);
  b.n_phys = b.bt_indptr.back() + spare_blocks;
  std::vector<int32_t> perm(size_t(b.n_phys));
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  b.block_table.assign(perm.begin(), perm.begin() + b.bt_indptr.back());
  b.k_cache = random_vec(rng, size_t(b.n_phys) * n_kv_heads * block_size * head_dim);
  return b;
}

/// Key t of (physical block, kv head).
inline const float* key(const Batch& b, int32_t phys, int h, int t) {
  return b.k_cache.data() +
         ((int64_t(phys) * b.n_kv_heads + h) * b.block_size + t) * b.head_dim;
}

/// sign(x . W[:, d]) > 0 in double, and |x . W[:, d]| (to skip near-zero projections).
inline void hash_project(const float* x, const std::vector<float>& w, int hd,
                         std::vector<double>* proj) {
  proj->assign(size_t(hd), 0.0);
  for (int d = 0; d < hd; ++d)
    for (int i = 0; i < hd; ++i) (*proj)[size_t(d)] += double(x[i]) * w[size_t(i) * hd + d];
}

/// Brute-force score of one query vector against kv head h of a physical block, from the keys
/// (not from the kernel's representations): Mean -> q.mean(k); MinMax -> sum_d max(q_d min_d,
/// q_d max_d); Hash -> best count of equal sign bits of q.W and k.W over the block's tokens.
/// With sub_block > 0 (Mean, MinMax), the best score over the block's runs of sub_block tokens.
/// Quant, in double from the keys: the value that token t's 2-bit code stands for in dimension
/// d of (phys, h): the block's range [mn, mx] of d in four equal bins, the centre of the bin the
/// key falls in (the top bin includes mx; all zero-width ranges give mn + 0).
inline double brute_dequant(const Batch& b, int32_t phys, int h, int t, int d) {
  double mn = key(b, phys, h, 0)[d], mx = mn;
  for (int u = 1; u < b.block_size; ++u) {
    mn = std::min(mn, double(key(b, phys, h, u)[d]));
    mx = std::max(mx, double(key(b, phys, h, u)[d]));
  }
  const double r = mx - mn;
  if (r <= 0) return mn;
  const int c = std::min(3, int(std::floor(4.0 * (key(b, phys, h, t)[d] - mn) / r)));
  return mn + (c + 0.5) * r / 4.0;
}

/// Quant: q.k' for token t of (phys, h) in double, as the backends score it (ops_sparse.h):
/// base + s * sum_d a8_d c_d, with a_d = q_d r_d / 4 rounded to 8 bits of max |a_d| over the
/// block's dims.
inline double brute_quant_dot(const Batch& b, const float* q, int32_t phys, int h, int t) {
  const int hd = b.head_dim;
  std::vector<double> mn(static_cast<size_t>(hd)), r(static_cast<size_t>(hd));
  double max_abs = 0.0;
  for (int d = 0; d < hd; ++d) {
    double lo = key(b, phys, h, 0)[d], hi = lo;
    for (int u = 1; u < b.block_size; ++u) {
      lo = std::min(lo, double(key(b, phys, h, u)[d]));
      hi = std::max(hi, double(key(b, phys, h, u)[d]));
    }
    mn[size_t(d)] = lo;
    r[size_t(d)] = hi - lo;
    max_abs = std::max(max_abs, std::fabs(double(q[d]) * r[size_t(d)] / 4.0));
  }
  double base = 0.0, codes = 0.0;
  for (int d = 0; d < hd; ++d) {
    base += double(q[d]) * (mn[size_t(d)] + r[size_t(d)] / 8.0);
    if (max_abs == 0.0) continue;
    const double a8 = std::nearbyint(double(q[d]) * r[size_t(d)] / 4.0 * 127.0 / max_abs);
    const double c = (brute_dequant(b, phys, h, t, d) - mn[size_t(d)]) / (r[size_t(d)] / 4.0) - 0.5;
    codes += a8 * (r[size_t(d)] > 0.0 ? std::nearbyint(c) : 0.0);
  }
  return base + max_abs / 127.0 * codes;
}

inline double brute_score(const Batch& b, backend::RepKind kind, const float* q, int32_t phys,
                          int h, const std::vector<float>& hash_w, int sub_block = 0) {
  const int hd = b.head_dim, bs = b.block_size;
  if (kind == backend::RepKind::Quant) {
    double best = -1e300;
    for (int t = 0; t < bs; ++t) best = std::max(best, brute_quant_dot(b, q, phys, h, t));
    return best;
  }
  const int run = kind != backend::RepKind::Hash && sub_block > 0 ? sub_block : bs;
  if (kind != backend::RepKind::Hash && run < bs) {
    double best = -1e300;
    for (int t0 = 0; t0 < bs; t0 += run) {
      Batch part;  // the run as a block of its own
      part.n_kv_heads = 1;
      part.head_dim = hd;
      part.block_size = run;
      part.k_cache.assign(key(b, phys, h, t0), key(b, phys, h, t0) + size_t(run) * hd);
      best = std::max(best, brute_score(part, kind, q, 0, 0, hash_w));
    }
    return best;
  }
  if (kind == backend::RepKind::Mean) {
    double s = 0.0;
    for (int t = 0; t < bs; ++t)
      for (int d = 0; d < hd; ++d) s += double(q[d]) * key(b, phys, h, t)[d];
    return s / bs;
  }
  if (kind == backend::RepKind::MinMax) {
    double s = 0.0;
    for (int d = 0; d < hd; ++d) {
      double mn = key(b, phys, h, 0)[d], mx = mn;
      for (int t = 1; t < bs; ++t) {
        mn = std::min(mn, double(key(b, phys, h, t)[d]));
        mx = std::max(mx, double(key(b, phys, h, t)[d]));
      }
      s += std::max(q[d] * mn, q[d] * mx);
    }
    return s;
  }
  std::vector<double> qp, kp;
  hash_project(q, hash_w, hd, &qp);
  int best = 0;
  for (int t = 0; t < bs; ++t) {
    hash_project(key(b, phys, h, t), hash_w, hd, &kp);
    int eq = 0;
    for (int d = 0; d < hd; ++d) eq += (qp[size_t(d)] > 0) == (kp[size_t(d)] > 0);
    best = std::max(best, eq);
  }
  return best;
}

/// rank_by mass: log of query q's unnormalized attention-mass estimate in kv head h of block
/// phys, log-sum-exp over the block's runs of sub_block tokens (the block when 0) of
/// score / sqrt(head_dim). Mean and MinMax.
inline double brute_log_mass(const Batch& b, backend::RepKind kind, const float* q, int32_t phys,
                             int h, int sub_block) {
  const int hd = b.head_dim, bs = b.block_size;
  std::vector<double> v;
  if (kind == backend::RepKind::Quant) {  // every token is a run of its own
    for (int t = 0; t < bs; ++t) v.push_back(brute_quant_dot(b, q, phys, h, t) / std::sqrt(double(hd)));
    sub_block = bs;  // skip the runs below
  }
  const int run = sub_block > 0 ? sub_block : bs;
  for (int t0 = 0; kind != backend::RepKind::Quant && t0 < bs; t0 += run) {
    Batch part;  // the run as a block of its own
    part.n_kv_heads = 1;
    part.head_dim = hd;
    part.block_size = run;
    part.k_cache.assign(key(b, phys, h, t0), key(b, phys, h, t0) + size_t(run) * hd);
    v.push_back(brute_score(part, kind, q, 0, 0, {}) / std::sqrt(double(hd)));
  }
  const double mx = *std::max_element(v.begin(), v.end());
  double sum = 0.0;
  for (double x : v) sum += std::exp(x - mx);
  return mx + std::log(sum);
}

/// The logical indices of a list of physical ids, or -1 for an id not in the table.
inline std::vector<int> to_logical(const int32_t* ids, int n_ids, const int32_t* table,
                                   int n_blocks) {
  std::vector<int> out;
  for (int k = 0; k < n_ids; ++k) {
    const int32_t* it = std::find(table, table + n_blocks, ids[k]);
    out.push_back(it == table + n_blocks ? -1 : int(it - table));
  }
  return out;
}

}  // namespace gsa::sparse::test
