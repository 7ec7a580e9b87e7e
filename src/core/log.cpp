// Logging sink: one line per call, prefixed with the level, to stderr.
#include "core/log.h"

#include <atomic>
#include <cstdio>

namespace gsa {

static std::atomic<int> g_level{int(LogLevel::Warn)};

void set_log_level(LogLevel level) { g_level = int(level); }
LogLevel log_level() { return LogLevel(g_level.load()); }

void log_line(LogLevel level, const std::string& line) {
  static const char* names[] = {"debug", "info", "warn", "error", ""};
  std::fprintf(stderr, "gsa %s: %s\n", names[int(level)], line.c_str());
}

}  // namespace gsa
