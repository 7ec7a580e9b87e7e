// The sampling knob table; SamplingParams::validate checks its ranges.
#include "engine/sampling_knobs.h"

#include <vector>

namespace gsa::engine {

namespace {

using P = SamplingParams;
using sparse::int_knob;
using sparse::real_knob;

std::vector<SamplingKnob> make_sampling_knobs() {
  std::vector<SamplingKnob> t = {
      real_knob<P>("temperature", "--temp", &P::temperature, 0, 100, false, false,
                   "temperature (0: greedy)"),
      int_knob<P>("top_k", "--top-k", &P::top_k, 0, INT32_MAX, "top-k (0: off)"),
      real_knob<P>("top_p", "--top-p", &P::top_p, 0, 1, true, false, "top-p (1: off)"),
      real_knob<P>("min_p", "--min-p", &P::min_p, 0, 1, false, true, "min-p (0: off)"),
      real_knob<P>("repetition_penalty", "--repeat-penalty", &P::repetition_penalty, 0, 10, true,
                   false, "repetition penalty on the prompt's and output's tokens (1: off)"),
      sparse::uint64_knob<P>("seed", "--seed", &P::seed,
                             "sampling seed (unset with --temp > 0: a random one, shown by -v)"),
      int_knob<P>("max_tokens", "-n,--n-predict", &P::max_tokens, 0, 1 << 24, "tokens to generate"),
  };
  for (SamplingKnob& k : t)
    if (k.key == "seed") k.shown_default = "random";
  return t;
}

}  // namespace

std::span<const SamplingKnob> sampling_knobs() {
  static const std::vector<SamplingKnob> table = make_sampling_knobs();
  return table;
}

}  // namespace gsa::engine
