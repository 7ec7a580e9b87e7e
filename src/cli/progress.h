// -v prefill progress for `gsa generate`: read from the engine's counters between steps (tokens
// prefilled plus tokens taken from the prefix cache), so the engine needs no callback. On a
// terminal a bar redrawn in place; otherwise one line per quarter of the prompt tokens.
#pragma once

#include <cstdint>

#include "core/timer.h"
#include "engine/engine.h"

namespace gsa::cli {

class PrefillProgress {
 public:
  /// Prompts of fewer tokens than this are prefilled without a progress report.
  static constexpr int64_t kMinTokens = 2000;

  /// prompt_tokens: the tokens of every prompt added; `at_start`: the engine's stats before the
  /// first step. Reports nothing unless `verbose` and prompt_tokens >= kMinTokens.
  PrefillProgress(int64_t prompt_tokens, const engine::EngineStats& at_start, bool verbose);
  /// After each Engine::step: redraws the bar or prints the next quarter's line; the last
  /// report (100%) ends its line.
  void update(const engine::EngineStats& s);

 private:
  int64_t total_ = 0;
  int64_t base_ = 0;  // prefilled + prefix-hit tokens before the first step
  bool active_ = false;
  bool tty_ = false;
  int reported_ = -1;  // tty: last percent drawn; otherwise last quarter printed
  Timer timer_;
};

}  // namespace gsa::cli
