// The sampling knobs (engine::SamplingParams), declared once with the Knob table of
// sparse/knobs.h: SamplingParams::validate checks their ranges, and the CLI's flags, their
// --help text with defaults and docs/KNOBS.md read the same table.
#pragma once

#include <span>

#include "engine/sampler.h"
#include "sparse/knobs.h"

namespace gsa::engine {

using SamplingKnob = sparse::Knob<SamplingParams>;

/// temperature, top_k, top_p, min_p, repetition_penalty, seed, max_tokens (stop strings and
/// --ignore-eos are not knobs: a list and a switch).
std::span<const SamplingKnob> sampling_knobs();

}  // namespace gsa::engine
