// The sampling knobs of `gsa generate` (engine::SamplingParams), declared once with the Knob
// table of sparse/knobs.h: flags, their ranges, --help text with defaults and docs/KNOBS.md
// read this table. SamplingParams::validate (engine) checks the same ranges for callers that
// are not the CLI; tests/cli/knobs_test.cpp keeps the two in step.
#pragma once

#include <span>

#include "engine/sampler.h"
#include "sparse/knobs.h"

namespace gsa::cli {

using SamplingKnob = sparse::Knob<engine::SamplingParams>;

/// temperature, top_k, top_p, min_p, repetition_penalty, seed, max_tokens (stop strings and
/// --ignore-eos are not knobs: a list and a switch).
std::span<const SamplingKnob> sampling_knobs();

}  // namespace gsa::cli
