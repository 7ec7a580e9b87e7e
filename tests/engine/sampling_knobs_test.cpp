// The sampling knob table (src/engine/sampling_knobs.cpp) and SamplingParams::validate, which
// checks it: every value at a bound of a knob's range is taken, the value just past each bound
// is refused with a message naming the knob, and the flags and defaults are the CLI's.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "engine/sampling_knobs.h"

namespace gsa::engine {
namespace {

using sparse::KnobType;
using sparse::KnobValue;

// v past a bound of the knob's range: the bound itself when open, else one step beyond.
KnobValue past(const SamplingKnob& k, bool low) {
  if (k.type == KnobType::Int) return int64_t(low ? k.lo - 1 : k.hi + 1);
  const double b = low ? k.lo : k.hi;
  if (low ? k.lo_open : k.hi_open) return b;
  return std::nextafter(float(b), low ? -INFINITY : INFINITY) * 1.0;
}

TEST(SamplingKnobs, RangesMatchTheEngineCheck) {
  ASSERT_FALSE(sampling_knobs().empty());
  for (const SamplingKnob& k : sampling_knobs()) {
    SCOPED_TRACE(std::string(k.key));
    SamplingParams p;
    EXPECT_TRUE(sparse::in_range(k, k.get(p)));
    if (k.type == KnobType::Uint64) continue;  // any value
    ASSERT_TRUE(k.type == KnobType::Int || k.type == KnobType::Real);
    // Inside: both bounds when closed, a value next to them when open.
    for (bool low : {true, false}) {
      p = {};
      const double b = low ? k.lo : k.hi;
      const bool open = low ? k.lo_open : k.hi_open;
      if (k.type == KnobType::Int)
        k.set(p, int64_t(b));
      else
        k.set(p, open ? double(std::nextafter(float(b), low ? INFINITY : -INFINITY)) : b);
      EXPECT_TRUE(p.validate().is_ok())
          << (low ? "low" : "high") << " bound: " << p.validate().message();
      // Outside: refused, naming the knob.
      p = {};
      k.set(p, past(k, low));
      EXPECT_FALSE(sparse::in_range(k, k.get(p)));
      const Status st = p.validate();
      EXPECT_FALSE(st.is_ok()) << (low ? "below" : "above") << " the range";
      EXPECT_NE(st.message().find(k.key), std::string::npos) << st.message();
    }
  }
}

TEST(SamplingKnobs, FlagsAndDefaults) {
  for (const SamplingKnob& k : sampling_knobs()) {
    EXPECT_TRUE(k.long_flag().starts_with("--")) << k.key;
    EXPECT_FALSE(k.help.empty()) << k.key;
  }
  const SamplingKnob* temp = sparse::find_knob(sampling_knobs(), "temperature");
  const SamplingKnob* n = sparse::find_knob(sampling_knobs(), "max_tokens");
  const SamplingKnob* seed = sparse::find_knob(sampling_knobs(), "seed");
  ASSERT_TRUE(temp && n && seed);
  EXPECT_EQ(temp->flag, "--temp");
  EXPECT_EQ(n->long_flag(), "--n-predict");
  EXPECT_EQ(sparse::default_text(*temp), "0");
  EXPECT_EQ(sparse::default_text(*n), "128");
  EXPECT_EQ(sparse::default_text(*seed), "random");  // chosen per run unless --seed is given
}

}  // namespace
}  // namespace gsa::engine
