// Batch builder: the model::ForwardInput of one step from what the scheduler picked, and the
// per-sequence inputs of the GSA planner for a decode step.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/request.h"
#include "model/model.h"
#include "sparse/plan.h"

namespace gsa::engine {

/// One prefill job's share of a prefill step: tokens [start, start + n) of job->tokens(), whose
/// KV slots the scheduler reserved.
struct PrefillChunk {
  PrefillJob* job = nullptr;
  int32_t start = 0;
  int32_t n = 0;
  std::vector<int32_t> slots;
  bool completes = false;  // the job's last tokens
};

/// Prefill forward input: every chunk's tokens, positions and slots, each job's whole block
/// list, the blocks that fill, and one logits row per completing new request (a resumed
/// sample already has its next token).
model::ForwardInput build_prefill_input(const std::vector<PrefillChunk>& chunks, int block_size);

/// Decode forward input: one token per sequence (its last sampled one at slot slots[i]), its
/// whole block list and one logits row each. With `sel` non-null, also the planner's inputs.
model::ForwardInput build_decode_input(const std::vector<Seq*>& seqs, const std::vector<int32_t>& slots,
                                       int block_size, std::vector<sparse::SeqInput>* sel);

}  // namespace gsa::engine
