// The engine's per-request state, shared by the scheduler (which owns it), the batch builder
// and the output processor. Internal to src/engine.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "engine/sampler.h"
#include "kv/kv_cache.h"
#include "tokenizer/tokenizer.h"

namespace gsa::engine {

struct Request;

/// One sample of a request: its KV blocks, its tokens and its output state.
struct Seq {
  int64_t id = 0;               // unique per life in the running set (new after a preemption)
  Request* req = nullptr;
  int sample = 0;
  kv::BlockTable table;
  std::vector<int32_t> tokens;  // prompt + generated; the last one is not yet in the KV cache
  int32_t n_generated = 0;
  int32_t last_token = -1;      // sampled, not yet in the KV cache
  std::unique_ptr<Sampler> sampler;
  std::unique_ptr<tokenizer::StreamDecoder> decoder;
  std::string held;             // decoded text not yet emitted (may start a stop string)
  bool finished = false;
  bool preempted = false;       // its blocks were given up; it waits to be prefilled again
};

struct Request {
  int64_t id = 0;
  RequestInput in;
  int live_samples = 0;         // samples not yet finished (and reaped)
  bool started = false;         // its prompt is in the KV cache and its samples exist
  bool cancelled = false;
};

/// Tokens being written into the KV cache by prefill: a new request's prompt, or the tokens of
/// a preempted sample, whose KV is rebuilt (from the prefix cache where it is still there).
struct PrefillJob {
  Request* req = nullptr;       // the request (also set for a resumed sample)
  Seq* resume = nullptr;        // set: a preempted sample, which decodes again when done
  kv::BlockTable table;
  int32_t n_done = 0;           // tokens already in the KV cache
  bool admitted = false;        // its blocks are counted in the scheduler's commitment
  int32_t committed = 0;        // blocks promised to it and not yet reserved

  std::span<const int32_t> tokens() const {
    if (resume) return std::span<const int32_t>(resume->tokens).first(resume->tokens.size() - 1);
    return req->in.prompt;
  }
  int32_t n_total() const { return int32_t(tokens().size()); }
};

}  // namespace gsa::engine
