// SparseConfig: defaults, the budget clamp rule, min_context gating, validation and JSON errors
// (each naming its knob), the JSON round trip, and the seeded orthogonal Hash matrix.
#include <gtest/gtest.h>

#include <cmath>

#include "sparse/sparse_config.h"

namespace gsa::sparse {
namespace {

TEST(SparseConfig, DefaultsFollowTheSpecification) {
  SparseConfig c;
  EXPECT_TRUE(validate(c).is_ok());
  EXPECT_EQ(c.block_size, 128);
  EXPECT_EQ(c.representation, backend::RepKind::Quant);
  EXPECT_EQ(c.query, backend::QueryMode::GroupMean);
  EXPECT_EQ(c.scope, Scope::PerKvHead);
  EXPECT_EQ(c.sink_blocks, 1);
  EXPECT_EQ(c.local_blocks, 2);
  EXPECT_DOUBLE_EQ(c.budget_ratio, 0.3);
  EXPECT_EQ(c.min_context, 8400);
  EXPECT_EQ(c.select_every, 1);
  EXPECT_EQ(c.lag, 0);
  EXPECT_EQ(c.selector, SelectorKind::Device);
}

TEST(SparseConfig, BudgetClampsTheRatioAtBlock128) {
  SparseConfig c;
  EXPECT_EQ(budget_blocks(c, 66), 32);    // 19.8 -> at least 32 blocks (4096 tokens)
  EXPECT_EQ(budget_blocks(c, 150), 45);   // 0.3 * 150
  EXPECT_EQ(budget_blocks(c, 1000), 48);  // at most 48 blocks (6144 tokens)
  EXPECT_EQ(budget_blocks(c, 20), 20);    // never more than the sequence has
  EXPECT_EQ(budget_blocks(c, 0), 0);
}

TEST(SparseConfig, BudgetScalesWithBlockSize) {
  SparseConfig c;
  c.block_size = 16;  // the same token budget: [256, 384] blocks
  EXPECT_EQ(budget_blocks(c, 600), 256);
  EXPECT_EQ(budget_blocks(c, 1000), 300);
  EXPECT_EQ(budget_blocks(c, 5000), 384);
  c.block_size = 32;
  c.budget_tokens = 2048;
  ASSERT_TRUE(validate(c).is_ok());
  EXPECT_EQ(budget_blocks(c, 1000), 64);
  EXPECT_EQ(budget_blocks(c, 10), 10);
}

TEST(SparseConfig, ForcedBlocksCountInsideTheBudget) {
  SparseConfig c;
  c.block_size = 16;
  c.sink_blocks = 2;
  c.local_blocks = 3;
  c.budget_tokens = 5 * 16;
  ASSERT_TRUE(validate(c).is_ok());
  EXPECT_EQ(forced_blocks(c, 100), 5);
  EXPECT_EQ(budget_blocks(c, 100), 5);
  EXPECT_EQ(forced_blocks(c, 4), 4);  // overlapping sink and local ranges
  EXPECT_EQ(budget_blocks(c, 4), 4);
  EXPECT_EQ(forced_blocks(c, 1), 1);
}

TEST(SparseConfig, MinContextGating) {
  SparseConfig c;
  EXPECT_FALSE(sparse_eligible(c, 8399));
  EXPECT_TRUE(sparse_eligible(c, 8400));
  c.enabled = false;
  EXPECT_FALSE(sparse_eligible(c, 100000));
  c.enabled = true;
  c.min_context = 0;
  EXPECT_TRUE(sparse_eligible(c, 1));
}

void expect_invalid(const SparseConfig& c, const std::string& word) {
  Status st = validate(c);
  EXPECT_EQ(st.code(), StatusCode::InvalidArgument) << word;
  EXPECT_NE(st.message().find(word), std::string::npos) << st.message();
}

TEST(SparseConfig, ValidationNamesTheKnob) {
  SparseConfig c;
  c.block_size = 96;
  expect_invalid(c, "block_size");
  c = {};
  c.block_size = 0;
  expect_invalid(c, "block_size");
  c = {};
  c.budget_tokens = -128;
  expect_invalid(c, "budget_tokens");
  c = {};
  c.budget_tokens = 1000;  // not a multiple of 128
  expect_invalid(c, "budget_tokens");
  c = {};
  c.budget_tokens = 128;  // one block < 3 forced
  expect_invalid(c, "sink_blocks + local_blocks");
  c = {};
  c.budget_ratio = 0.0;
  expect_invalid(c, "budget_ratio");
  c = {};
  c.budget_max_tokens = 1024;
  expect_invalid(c, "budget_max_tokens");
  c = {};
  c.lag = -1;
  expect_invalid(c, "lag");
  c = {};
  c.lag = 1;  // needs the cpu selector
  expect_invalid(c, "selector");
  c = {};
  c.select_every = 0;
  expect_invalid(c, "select_every");
  c = {};
  c.local_blocks = 0;
  expect_invalid(c, "local_blocks");
  c = {};
  c.sink_blocks = -1;
  expect_invalid(c, "sink_blocks");
  c = {};
  c.representation = static_cast<backend::RepKind>(9);
  expect_invalid(c, "representation");
  c = {};
  c.cpu_workers = 0;
  expect_invalid(c, "cpu_workers");
  c = {};
  c.min_context = -5;
  expect_invalid(c, "min_context");
  c = {};
  c.dense_layers = -1;
  expect_invalid(c, "dense_layers");
  c = {};
  c.sub_block = 48;  // not a power of two
  expect_invalid(c, "sub_block");
  c = {};
  c.sub_block = 256;  // larger than the block
  expect_invalid(c, "sub_block");
  c = {};
  c.sub_block = 32;
  c.representation = backend::RepKind::Hash;
  expect_invalid(c, "sub_block");
  c = {};
  c.sub_block = 32;
  c.representation = backend::RepKind::Quant;  // per token already
  expect_invalid(c, "sub_block");
  c = {};
  c.rank_by = RankBy::Mass;
  c.representation = backend::RepKind::Hash;
  expect_invalid(c, "rank_by");
  c = {};
  c.selection = Selection::Oracle;
  c.selector = SelectorKind::Cpu;
  c.lag = 1;  // the oracle runs inline
  expect_invalid(c, "oracle");
  c = {};
  c.rank_by = RankBy::Rerank;
  c.selector = SelectorKind::Cpu;
  c.lag = 1;  // rerank reads the keys inline
  expect_invalid(c, "rerank");
  c.lag = 0;
  EXPECT_TRUE(validate(c).is_ok());
}

TEST(SparseConfig, ParsesJson) {
  auto r = parse_sparse_config_json(R"({"block_size": 32, "representation": "minmax",
      "query": "group_max", "scope": "per_layer", "sink_blocks": 2, "local_blocks": 3,
      "budget_tokens": 1024, "min_context": 100, "select_every": 3, "lag": 2,
      "selector": "cpu", "cpu_workers": 4, "hash_seed": 18446744073709551615})");
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->block_size, 32);
  EXPECT_EQ(r->representation, backend::RepKind::MinMax);
  EXPECT_EQ(r->query, backend::QueryMode::GroupMax);
  EXPECT_EQ(r->scope, Scope::PerLayer);
  EXPECT_EQ(r->sink_blocks, 2);
  EXPECT_EQ(r->local_blocks, 3);
  EXPECT_EQ(r->budget_tokens, 1024);
  EXPECT_EQ(r->min_context, 100);
  EXPECT_EQ(r->select_every, 3);
  EXPECT_EQ(r->lag, 2);
  EXPECT_EQ(r->selector, SelectorKind::Cpu);
  EXPECT_EQ(r->cpu_workers, 4);
  EXPECT_EQ(r->hash_seed, 18446744073709551615ull);
  EXPECT_EQ(r->budget_ratio, 0.3);  // untouched default
}

TEST(SparseConfig, JsonRoundTrip) {
  SparseConfig c;
  c.block_size = 64;
  c.representation = backend::RepKind::Hash;
  c.budget_ratio = 0.25;
  c.enabled = false;
  c.hash_seed = 12345;
  c.selection = Selection::Oracle;
  c.dense_layers = 3;
  c.representation = backend::RepKind::MinMax;
  c.sub_block = 16;
  c.rank_by = RankBy::Mass;
  auto r = parse_sparse_config_json(to_json(c));
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(to_json(*r), to_json(c));
  EXPECT_EQ(r->representation, backend::RepKind::MinMax);
  EXPECT_FALSE(r->enabled);
  EXPECT_EQ(r->sub_block, 16);
  EXPECT_EQ(r->selection, Selection::Oracle);
  EXPECT_EQ(r->dense_layers, 3);
  EXPECT_EQ(r->rank_by, RankBy::Mass);
}

TEST(SparseConfig, QuantRepresentationParsesAndRanksByMass) {
  auto r = parse_sparse_config_json(R"({"representation": "quant", "rank_by": "mass"})");
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->representation, backend::RepKind::Quant);
  EXPECT_EQ(r->rank_by, RankBy::Mass);
  EXPECT_EQ(std::string(rep_kind_name(r->representation)), "quant");
  EXPECT_EQ(to_json(*parse_sparse_config_json(to_json(*r))), to_json(*r));
  // 128-token pages, head_dim 128: the box and 2-bit codes are 5 KiB, 7.8% of the page's bf16 K/V.
  EXPECT_EQ(backend::rep_bytes(backend::RepKind::Quant, 128, 128), 128 * 8 + 128 * 128 / 4);
}

void expect_json_error(const char* json, const std::string& word) {
  auto r = parse_sparse_config_json(json);
  ASSERT_FALSE(r.is_ok()) << json;
  EXPECT_EQ(r.status().code(), StatusCode::InvalidArgument);
  EXPECT_NE(r.status().message().find(word), std::string::npos) << r.status().message();
}

TEST(SparseConfig, JsonErrorsNameTheKey) {
  expect_json_error(R"({"block_sise": 16})", "block_sise");
  expect_json_error(R"({"rank_by": "bound"})", "rank_by");
  expect_json_error(R"({"block_size": "16"})", "block_size");
  expect_json_error(R"({"block_size": 16.5})", "block_size");
  expect_json_error(R"({"block_size": 99999999999})", "block_size");
  expect_json_error(R"({"representation": "cosine"})", "representation");
  expect_json_error(R"({"scope": 1})", "scope");
  expect_json_error(R"({"selection": "best"})", "selection");
  expect_json_error(R"({"dense_layers": 1.5})", "dense_layers");
  expect_json_error(R"({"hash_seed": -1})", "hash_seed");
  expect_json_error(R"({"enabled": 1})", "enabled");
  expect_json_error(R"({"budget_ratio": 1.5})", "budget_ratio");
  expect_json_error(R"({"lag": 1})", "selector");
  expect_json_error(R"([1, 2])", "object");
  expect_json_error(R"({"block_size": 16)", "JSON");
  expect_json_error("", "JSON");
}

TEST(HashMatrix, OrthogonalAndDeterministic) {
  for (int hd : {32, 64, 128}) {
    std::vector<float> w = make_hash_matrix(hd, 7);
    ASSERT_EQ(w.size(), size_t(hd) * hd);
    for (int a = 0; a < hd; ++a)
      for (int b = a; b < hd; ++b) {
        double dot = 0;
        for (int r = 0; r < hd; ++r) dot += double(w[size_t(r) * hd + a]) * w[size_t(r) * hd + b];
        ASSERT_NEAR(dot, a == b ? 1.0 : 0.0, 1e-5) << hd << " columns " << a << ", " << b;
      }
    EXPECT_EQ(w, make_hash_matrix(hd, 7));
    EXPECT_NE(w, make_hash_matrix(hd, 8));
  }
  EXPECT_TRUE(make_hash_matrix(0, 1).empty());
}

}  // namespace
}  // namespace gsa::sparse
