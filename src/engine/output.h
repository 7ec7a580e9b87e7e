// OutputProcessor: turns sampled tokens into what a caller sees. It detokenizes incrementally,
// holds back text that may begin a stop string, and decides when a sample is finished (end of
// generation, stop string, max_tokens, context limit); every outcome becomes a TokenEvent.
#pragma once

#include <string>
#include <vector>

#include "engine/request.h"

namespace gsa::engine {

class OutputProcessor {
 public:
  /// tok: null for synthetic-weight models (no text); max_context: tokens per sequence.
  OutputProcessor(const tokenizer::Tokenizer* tok, int max_context) : tok_(tok), max_context_(max_context) {}

  /// Gives a new sample its sampler and detokenizer.
  void attach(Seq& s) const;
  /// Appends `token` to the sample (or finishes it at an end-of-generation token) and emits
  /// its newly complete text.
  void accept(Seq& s, int32_t token, std::vector<TokenEvent>* events) const;
  /// Finishes the sample once: the held text is flushed unless a stop string, an error or a
  /// cancellation ended it.
  void finish(Seq& s, FinishReason r, std::vector<TokenEvent>* events, std::string error = {}) const;

 private:
  const tokenizer::Tokenizer* tok_;
  int max_context_;
};

}  // namespace gsa::engine
