// PrefillProgress: a \r bar on a terminal, one line per 25% elsewhere (logs, pipes, tests).
#include "cli/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <string>

namespace gsa::cli {

PrefillProgress::PrefillProgress(int64_t prompt_tokens, const engine::EngineStats& at_start,
                                 bool verbose)
    : total_(prompt_tokens),
      base_(at_start.prefill_tokens + at_start.prefix_hit_tokens),
      active_(verbose && prompt_tokens >= kMinTokens),
      tty_(isatty(STDERR_FILENO) == 1) {}

void PrefillProgress::update(const engine::EngineStats& s) {
  if (!active_) return;
  // A preempted sample prefills its tokens again; the count may pass the total, never go back.
  const int64_t done = std::min(total_, s.prefill_tokens + s.prefix_hit_tokens - base_);
  const int percent = int(100 * done / total_);
  const bool last = done >= total_;
  if (tty_) {
    if (percent == reported_) return;
    reported_ = percent;
    constexpr int kWidth = 30;
    const int filled = int(kWidth * done / total_);
    std::fprintf(stderr, "\rgsa: prefill [%s%s] %lld/%lld tokens %3d%%%s",
                 std::string(size_t(filled), '#').c_str(),
                 std::string(size_t(kWidth - filled), '.').c_str(), (long long)done,
                 (long long)total_, percent,
                 last ? fmt::format(", {:.1f} s\n", timer_.seconds()).c_str() : "");
  } else {
    const int quarter = percent / 25;
    if (quarter <= reported_ || quarter == 0) return;
    reported_ = quarter;
    std::fprintf(stderr, "gsa: prefill %lld/%lld tokens (%d%%, %.1f s)\n", (long long)done,
                 (long long)total_, percent, timer_.seconds());
  }
  if (last) active_ = false;
}

}  // namespace gsa::cli
