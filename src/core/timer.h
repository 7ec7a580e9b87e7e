// Wall-clock timing and process memory readings for the CLI's speed lines and benchmarks.
#pragma once

#include <chrono>
#include <cstdint>

namespace gsa {

class Timer {
 public:
  Timer() : start_(std::chrono::steady_clock::now()) {}
  void reset() { start_ = std::chrono::steady_clock::now(); }
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  std::chrono::steady_clock::time_point start_;
};

/// Peak resident set size of this process in bytes (VmHWM), 0 where unknown.
uint64_t peak_rss_bytes();
/// Current resident set size in bytes (VmRSS), 0 where unknown.
uint64_t current_rss_bytes();

}  // namespace gsa
