// The SparseConfig knob table: it names every field once (to_json writes each key, the JSON
// parser reads each back), its defaults are valid, its ranges are what validate() enforces,
// and per-request overrides share them.
#include "sparse/knobs.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "sparse/sparse_config.h"

namespace gsa::sparse {
namespace {

TEST(Knobs, TableCoversEveryJsonKeyOnce) {
  const auto j = nlohmann::json::parse(to_json(SparseConfig{}));
  std::set<std::string> keys, flags;
  for (const auto& k : sparse_knobs()) {
    EXPECT_TRUE(keys.insert(std::string(k.key)).second) << "duplicate key " << k.key;
    if (!k.flag.empty()) {
      EXPECT_TRUE(flags.insert(std::string(k.flag)).second) << "duplicate flag " << k.flag;
    }
    EXPECT_TRUE(j.contains(std::string(k.key))) << k.key;
    EXPECT_FALSE(k.help.empty()) << k.key;
    EXPECT_TRUE(in_range(k, k.get(SparseConfig{}))) << k.key << " default " << default_text(k);
  }
  EXPECT_EQ(keys.size(), j.size());
  EXPECT_EQ(sparse_knobs().size(), 22u);  // one more knob: a field, a table line, docs/KNOBS.md
}

TEST(Knobs, EachKnobRoundTripsThroughJsonAndText) {
  for (const auto& k : sparse_knobs()) {
    SparseConfig c;
    const KnobValue v = k.get(c);
    auto parsed = parse_value(k, format_value(k, v));
    ASSERT_TRUE(parsed.is_ok()) << k.key << ": " << parsed.status().message();
    EXPECT_EQ(*parsed, v) << k.key;
    k.set(c, *parsed);
    EXPECT_EQ(to_json(c), to_json(SparseConfig{})) << k.key;
  }
}

TEST(Knobs, ValidateRejectsEachIntAndRealKnobOutsideItsRange) {
  for (const auto& k : sparse_knobs()) {
    if (k.type != KnobType::Int && k.type != KnobType::Real) continue;
    SparseConfig c;
    if (k.type == KnobType::Int)
      k.set(c, int64_t(k.lo) - 1);
    else
      k.set(c, k.lo_open ? k.lo : k.lo - 1.0);
    Status st = validate(c);
    EXPECT_EQ(st.code(), StatusCode::InvalidArgument) << k.key;
    EXPECT_NE(st.message().find(std::string(k.key)), std::string::npos) << st.message();
    if (k.hi < double(INT32_MAX)) {
      c = {};
      if (k.type == KnobType::Int)
        k.set(c, int64_t(k.hi) + 1);
      else
        k.set(c, k.hi_open ? k.hi : k.hi + 1.0);
      st = validate(c);
      EXPECT_EQ(st.code(), StatusCode::InvalidArgument) << k.key;
      EXPECT_NE(st.message().find(std::string(k.key)), std::string::npos) << st.message();
    }
  }
}

TEST(Knobs, RangeMessagesAndTexts) {
  const auto* sink = find_sparse_knob("sink_blocks");
  const auto* workers = find_sparse_knob("cpu_workers");
  const auto* ratio = find_sparse_knob("budget_ratio");
  const auto* bs = find_sparse_knob("block_size");
  const auto* sub = find_sparse_knob("sub_block");
  const auto* rep = find_sparse_knob("representation");
  ASSERT_TRUE(sink && workers && ratio && bs && sub && rep);
  EXPECT_EQ(find_sparse_knob("no_such_knob"), nullptr);
  EXPECT_EQ(check_value(*sink, int64_t(-1), "sink_blocks").message(), "sink_blocks -1 < 0");
  EXPECT_EQ(check_value(*workers, int64_t(65), "--cpu-workers").message(),
            "--cpu-workers 65 outside [1, 64]");
  EXPECT_EQ(check_value(*ratio, 0.0, "budget_ratio").message(), "budget_ratio 0 outside (0, 1]");
  EXPECT_EQ(check_value(*bs, int64_t(96), "block_size").message(),
            "block_size 96 must be a power of two in [1, 4096]");
  EXPECT_EQ(check_value(*rep, int64_t(9), "representation").message(), "unknown representation 9");
  EXPECT_TRUE(check_value(*sub, int64_t(0), "sub_block").is_ok());
  EXPECT_TRUE(check_value(*sub, int64_t(32), "sub_block").is_ok());
  EXPECT_FALSE(check_value(*sub, int64_t(48), "sub_block").is_ok());
  EXPECT_FALSE(check_value(*bs, int64_t(0), "block_size").is_ok());
  EXPECT_EQ(range_text(*sub), "0 or a power of two <= 4096");
  EXPECT_EQ(range_text(*rep), "mean, minmax, hash, quant");
  EXPECT_EQ(default_text(*ratio), "0.3");
  EXPECT_EQ(default_text(*rep), "quant");
  EXPECT_EQ(find_sparse_knob("local_blocks")->why, "the last block is always kept");
}

TEST(Knobs, ParseValueNamesWhatItGot) {
  const auto* sink = find_sparse_knob("sink_blocks");
  const auto* ratio = find_sparse_knob("budget_ratio");
  const auto* rep = find_sparse_knob("representation");
  const auto* seed = find_sparse_knob("hash_seed");
  EXPECT_EQ(*parse_value(*sink, "+7"), KnobValue(int64_t(7)));
  EXPECT_EQ(parse_value(*sink, "7x").status().message(), "'7x' is not a whole number");
  EXPECT_EQ(parse_value(*sink, "99999999999").status().message(), "'99999999999' is out of range");
  EXPECT_EQ(parse_value(*ratio, " 0.5").status().message(), "' 0.5' is not a number");
  EXPECT_EQ(*parse_value(*ratio, "0.25"), KnobValue(0.25));
  EXPECT_EQ(parse_value(*rep, "mean\",\"lag\":3").status().message(),
            "'mean\",\"lag\":3' is not one of mean, minmax, hash, quant");
  EXPECT_EQ(*parse_value(*seed, "18446744073709551615"),
            KnobValue(uint64_t(18446744073709551615ull)));
  EXPECT_FALSE(parse_value(*seed, "-1").is_ok());
}

TEST(Knobs, RequestOverridesShareTheKnobRanges) {
  SparseConfig c;
  EXPECT_TRUE(check_request_overrides(c, 0, -1, -1).is_ok());  // every "keep" value
  EXPECT_TRUE(check_request_overrides(c, 1000, 0, int8_t(RankBy::Mass)).is_ok());
  EXPECT_EQ(check_request_overrides(c, -5, -1, -1).message(), "sparse_budget_tokens -5 < 0");
  EXPECT_EQ(check_request_overrides(c, 0, -2, -1).message(), "sparse_min_context -2 < 0");
  EXPECT_EQ(check_request_overrides(c, 0, -1, 7).message(), "unknown sparse_rank_by 7");
  c.representation = backend::RepKind::Hash;
  EXPECT_FALSE(check_request_overrides(c, 0, -1, int8_t(RankBy::Mass)).is_ok());
  for (const OverrideField& o : request_overrides())
    EXPECT_NE(find_sparse_knob(o.knob), nullptr) << o.field;
}

}  // namespace
}  // namespace gsa::sparse
