// OutputProcessor: incremental detokenization, stop strings and finish conditions.
#include "engine/output.h"

#include <algorithm>

namespace gsa::engine {

void OutputProcessor::attach(Seq& s) const {
  s.sampler = std::make_unique<Sampler>(s.req->in.sampling, uint64_t(s.sample));
  if (tok_) s.decoder = std::make_unique<tokenizer::StreamDecoder>(*tok_);
}

void OutputProcessor::finish(Seq& s, FinishReason r, std::vector<TokenEvent>* events,
                             std::string error) const {
  if (s.finished) return;
  s.finished = true;
  TokenEvent ev;
  ev.request_id = s.req->id;
  ev.sample = s.sample;
  ev.finish = r;
  ev.error = std::move(error);
  if (r == FinishReason::Eos || r == FinishReason::Length) {
    if (s.decoder) s.held += s.decoder->flush();
    ev.text = std::move(s.held);
  }
  s.held.clear();
  events->push_back(std::move(ev));
}

void OutputProcessor::accept(Seq& s, int32_t token, std::vector<TokenEvent>* events) const {
  const SamplingParams& sp = s.req->in.sampling;
  s.n_generated++;
  if (tok_ && !sp.ignore_eos && tok_->is_eog(token)) {
    finish(s, FinishReason::Eos, events);
    return;
  }
  s.last_token = token;
  s.tokens.push_back(token);
  TokenEvent ev;
  ev.request_id = s.req->id;
  ev.sample = s.sample;
  ev.token = token;
  if (s.decoder) s.held += s.decoder->push(token);
  size_t emit = s.held.size();
  for (const std::string& stop : sp.stop) {
    const size_t at = s.held.find(stop);
    if (at != std::string::npos) {
      ev.text = s.held.substr(0, at);
      s.held.clear();
      events->push_back(std::move(ev));
      finish(s, FinishReason::Stop, events);
      return;
    }
    // Hold back the longest suffix of held that is a proper prefix of stop.
    for (size_t k = std::min(stop.size() - 1, s.held.size()); k > 0; --k) {
      if (s.held.compare(s.held.size() - k, k, stop, 0, k) == 0) {
        emit = std::min(emit, s.held.size() - k);
        break;
      }
    }
  }
  ev.text = s.held.substr(0, emit);
  s.held.erase(0, emit);
  events->push_back(std::move(ev));
  if (s.n_generated >= sp.max_tokens) finish(s, FinishReason::Length, events);
  else if (int64_t(s.tokens.size()) >= max_context_) finish(s, FinishReason::Length, events);
}

}  // namespace gsa::engine
