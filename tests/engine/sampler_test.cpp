#include "engine/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>

namespace gsa::engine {

TEST(Sampler, GreedyPicksTheArgmaxAndLowestIdOnTies) {
  SamplingParams p;
  Sampler s(p);
  std::vector<float> l = {0.1f, 3.0f, -1.0f, 3.0f};
  EXPECT_EQ(s.sample(l.data(), 4, {}), 1);
}

TEST(Sampler, TopKOneIsGreedy) {
  SamplingParams p;
  p.temperature = 1.5f;
  p.top_k = 1;
  Sampler s(p);
  for (int i = 0; i < 20; ++i) {
    std::vector<float> l = {0.1f, 0.2f, 2.0f, 1.9f};
    EXPECT_EQ(s.sample(l.data(), 4, {}), 2);
  }
}

TEST(Sampler, TopPKeepsTheSmallestNucleus) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_p = 0.5f;
  p.seed = 3;
  Sampler s(p);
  // softmax of {log 0.6, log 0.3, log 0.1}: nucleus at 0.5 is token 0 alone.
  for (int i = 0; i < 50; ++i) {
    std::vector<float> l = {std::log(0.6f), std::log(0.3f), std::log(0.1f)};
    EXPECT_EQ(s.sample(l.data(), 3, {}), 0);
  }
}

TEST(Sampler, MinPDropsUnlikelyTokens) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.min_p = 0.4f;
  p.seed = 5;
  Sampler s(p);
  std::map<int, int> seen;
  for (int i = 0; i < 300; ++i) {
    std::vector<float> l = {std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
    seen[s.sample(l.data(), 4, {})]++;
  }
  EXPECT_GT(seen[0], 0);
  EXPECT_GT(seen[1], 0);
  EXPECT_EQ(seen.count(2), 0u);
  EXPECT_EQ(seen.count(3), 0u);
}

TEST(Sampler, TemperatureSamplingFollowsTheDistributionAndIsSeeded) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.seed = 11;
  Sampler a(p), b(p);
  std::map<int, int> counts;
  for (int i = 0; i < 4000; ++i) {
    std::vector<float> l1 = {std::log(0.7f), std::log(0.2f), std::log(0.1f)};
    std::vector<float> l2 = l1;
    const int x = a.sample(l1.data(), 3, {});
    EXPECT_EQ(x, b.sample(l2.data(), 3, {}));
    counts[x]++;
  }
  EXPECT_NEAR(counts[0] / 4000.0, 0.7, 0.04);
  EXPECT_NEAR(counts[1] / 4000.0, 0.2, 0.04);
  EXPECT_NEAR(counts[2] / 4000.0, 0.1, 0.03);
}

TEST(Sampler, RepetitionPenaltyDemotesSeenTokens) {
  SamplingParams p;
  p.repetition_penalty = 2.0f;
  Sampler s(p);
  std::vector<float> l = {2.0f, 1.5f, -1.0f};
  EXPECT_EQ(s.sample(l.data(), 3, {0}), 1);  // 2.0 / 2 = 1.0 < 1.5
  std::vector<float> l2 = {-0.5f, -0.6f};
  EXPECT_EQ(s.sample(l2.data(), 2, {0}), 1);  // -0.5 * 2 = -1.0 < -0.6
}

TEST(SamplingParams, RejectsBadValues) {
  SamplingParams p;
  p.top_p = 0.0f;
  EXPECT_FALSE(p.validate().is_ok());
  p = {};
  p.temperature = -1;
  EXPECT_FALSE(p.validate().is_ok());
  p = {};
  p.min_p = 1.0f;
  EXPECT_FALSE(p.validate().is_ok());
  p = {};
  p.stop = {""};
  EXPECT_FALSE(p.validate().is_ok());
  p = {};
  p.repetition_penalty = 0;
  EXPECT_FALSE(p.validate().is_ok());
  EXPECT_TRUE(SamplingParams{}.validate().is_ok());
}

}  // namespace gsa::engine
