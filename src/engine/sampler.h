// Token sampling from logits: greedy, temperature, top-k, top-p, min-p, repetition penalty,
// seeded per sequence so a request's output is reproducible whatever it is batched with.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "core/status.h"

namespace gsa::engine {

struct SamplingParams {
  float temperature = 0.0f;         // 0 = greedy
  int top_k = 0;                    // 0 = off
  float top_p = 1.0f;               // 1 = off
  float min_p = 0.0f;               // 0 = off
  float repetition_penalty = 1.0f;  // 1 = off; applied to tokens of prompt and output
  uint64_t seed = 0;
  int max_tokens = 128;
  std::vector<std::string> stop;    // stop strings (matched on the decoded text)
  bool ignore_eos = false;

  /// InvalidArgument naming the bad field.
  Status validate() const;
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& p, uint64_t stream = 0);
  /// Picks a token from logits [n_vocab]; `history` holds the tokens seen so far (for the
  /// repetition penalty). logits is modified in place.
  int32_t sample(float* logits, int32_t n_vocab, const std::vector<int32_t>& history);

 private:
  SamplingParams p_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> cand_;
};

}  // namespace gsa::engine
