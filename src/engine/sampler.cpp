// Sampler: penalties, then greedy or temperature -> top-k -> softmax -> top-p / min-p -> draw.
#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <unordered_set>

#include "engine/sampling_knobs.h"

namespace gsa::engine {

Status SamplingParams::validate() const {
  GSA_RETURN_IF_ERROR(sparse::check_ranges(sampling_knobs(), *this));
  for (const auto& s : stop)
    if (s.empty()) return invalid_argument("stop strings must not be empty");
  return Status::ok();
}

Sampler::Sampler(const SamplingParams& p, uint64_t stream)
    : p_(p), rng_(p.seed * 0x9E3779B97F4A7C15ull + stream) {}

int32_t Sampler::sample(float* logits, int32_t n, const std::vector<int32_t>& history) {
  if (p_.repetition_penalty != 1.0f) {
    std::unordered_set<int32_t> seen(history.begin(), history.end());
    for (int32_t t : seen) {
      if (t < 0 || t >= n) continue;
      float& v = logits[t];
      v = v > 0 ? v / p_.repetition_penalty : v * p_.repetition_penalty;
    }
  }
  if (p_.temperature <= 0.0f) {
    // Greedy; ties go to the lowest id.
    return int32_t(std::max_element(logits, logits + n) - logits);
  }
  cand_.resize(size_t(n));
  for (int32_t i = 0; i < n; ++i) cand_[size_t(i)] = {logits[i] / p_.temperature, i};
  auto by_logit = [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  size_t k = size_t(n);
  if (p_.top_k > 0 && size_t(p_.top_k) < k) {
    k = size_t(p_.top_k);
    std::partial_sort(cand_.begin(), cand_.begin() + long(k), cand_.end(), by_logit);
  } else {
    std::sort(cand_.begin(), cand_.end(), by_logit);
  }
  cand_.resize(k);
  const float mx = cand_[0].first;
  double sum = 0;
  for (auto& c : cand_) {
    c.first = std::exp(c.first - mx);
    sum += c.first;
  }
  for (auto& c : cand_) c.first = float(c.first / sum);
  // min-p: keep tokens with probability >= min_p * p_max.
  if (p_.min_p > 0.0f) {
    const float thr = p_.min_p * cand_[0].first;
    size_t keep = 1;
    while (keep < cand_.size() && cand_[keep].first >= thr) ++keep;
    cand_.resize(keep);
  }
  // top-p: smallest prefix whose mass reaches top_p.
  if (p_.top_p < 1.0f) {
    double acc = 0;
    size_t keep = 0;
    while (keep < cand_.size()) {
      acc += cand_[keep].first;
      ++keep;
      if (acc >= p_.top_p) break;
    }
    cand_.resize(keep);
  }
  double total = 0;
  for (auto& c : cand_) total += c.first;
  std::uniform_real_distribution<double> u(0.0, total);
  double r = u(rng_), acc = 0;
  for (auto& c : cand_) {
    acc += c.first;
    if (r < acc) return c.second;
  }
  return cand_.back().second;
}

}  // namespace gsa::engine
